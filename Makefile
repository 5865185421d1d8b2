# Two commands on a fresh machine: `make demo` (the quickstart study end to end) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.autovid-installed

.PHONY: demo test test-fast lint docs bench clean install

install: $(STAMP)

# The venv is (re)built when pyproject.toml changes. Without an NVIDIA GPU we first try the CPU build of
# torch (a few hundred MB instead of a multi-GB CUDA build); where no CPU wheel is reachable, pip picks
# its default build. torch itself is never pinned in pyproject.toml.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install --quiet "torch==2.13.0+cpu" 2>/dev/null || $(PY) -m pip install --quiet torch; \
	fi
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# Each demo is a new experiment (a run name that already exists is refused, never overwritten).
demo: $(STAMP)
	$(VENV)/bin/autovid tune quickstart name=quickstart-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP)
	$(PY) -m pytest -q

# The edit-test loop: everything but the end-to-end tests that start Ray or train networks.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check autovid tests benchmarks tools
	$(VENV)/bin/mypy

# The API reference from the docstrings (pdoc) into docs/api/ (a build product, not committed), then the links of
# README.md and docs/*.md: both fail on a broken reference or link.
docs: $(STAMP)
	$(PY) tools/build_docs.py docs/api
	$(PY) tools/check_links.py

bench: $(STAMP)
	$(PY) benchmarks/loader.py
	$(PY) benchmarks/search_step.py
	$(PY) benchmarks/data_parallel.py

clean:
	rm -rf $(VENV) .autovid_cache autovid_runs mlflow.db docs/api
