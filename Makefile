# Two entry points on a fresh machine: `make demo` and `make test`. Each creates .venv and installs when needed.
PY := .venv/bin/python
SUITE ?= suites/quickstart.yaml

.venv/installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,distributed,ui]"
	touch $@

# the docs extra, on top of the environment the tests use (reinstalled when pyproject.toml changes, as that one is)
.venv/docs-installed: .venv/installed
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,distributed,ui,docs]"
	touch $@

.PHONY: demo test bench ci-check docs docs-serve
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

# the documentation site into build/site; --strict: a broken link, anchor or API reference fails the build
docs: .venv/docs-installed
	$(PY) -m mkdocs build --strict

docs-serve: .venv/docs-installed
	$(PY) -m mkdocs serve
