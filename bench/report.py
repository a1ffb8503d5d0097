def build_report(name, uri, options):
    raise NotImplementedError
