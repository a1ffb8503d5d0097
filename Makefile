# Two entry points on a fresh machine: `make demo` and `make test`. Each creates .venv and installs when needed.
PY := .venv/bin/python
SUITE ?= suites/quickstart.yaml

.venv/installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,distributed,ui]"
	touch $@

.PHONY: demo test bench ci-check
demo: .venv/installed
	$(PY) -m bench run $(SUITE)

test: .venv/installed
	$(PY) -m pytest -q

bench: .venv/installed
	mkdir -p results/benchmarks
	$(PY) -m pytest -q benchmarks --benchmark-enable -p no:cacheprovider --benchmark-json results/benchmarks/latest.json

# the regression gate's deterministic parts (gradients, float64 scores, memory); add --perf for speed
ci-check: .venv/installed
	$(PY) -m bench ci-check
