import pytest
import yaml

from tests.suites import TINY

@pytest.fixture()
def write_suite(tmp_path):
    def write(changes=None, name="suite.yaml", base=None):
        raw = dict(base or TINY)
        for key, value in (changes or {}).items():
            raw[key] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw))
        return path

    return write
