"""The consumers of results: report, run summary, tuning, regression gate, verification. May import every layer
below (core, spec, store, run), algorithms/ and datasets/; only the CLI (bench.__main__) imports them."""
