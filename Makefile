# Two commands on a fresh machine: `make demo` (the quickstart study end to end) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.autovid-installed

.PHONY: demo test test-fast test-load lint docs bench clean install

install: $(STAMP)

# The venv is (re)built when pyproject.toml changes. Without an NVIDIA GPU we first try the CPU build of
# torch (a few hundred MB instead of a multi-GB CUDA build); where no CPU wheel is reachable, pip picks
# its default build. torch itself is never pinned in pyproject.toml. With a CPU torch, TorchCodec (a test
# dependency: the tests cover every decoder backend) is 0.13, the last release whose PyPI wheel for Linux
# does not link CUDA torch (it supports torch >= 2.11); a CUDA torch gets the newest.
# TorchCodec loads FFmpeg's shared libraries from the system, by upstream's design (no wheel bundles them under
# the names it links to). Where none are found, Debian's are installed when this runs as root with apt-get
# (CI, containers); elsewhere install FFmpeg 4 to 8 with the system's package manager, or the TorchCodec
# tests skip and say why.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install --quiet "torch==2.13.0+cpu" 2>/dev/null || $(PY) -m pip install --quiet torch; \
		$(PY) -m pip install --quiet "torchcodec==0.13.*"; \
	fi
	if ! ldconfig -p 2>/dev/null | grep -q 'libavdevice\.so'; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg; } \
				|| echo "note: apt-get could not install FFmpeg; the TorchCodec tests will skip"; \
		else \
			echo "note: no FFmpeg shared libraries found; data.decoder=torchcodec needs them (its tests will skip)"; \
		fi; \
	fi
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# Each demo is a new experiment (a run name that already exists is refused, never overwritten).
demo: $(STAMP)
	$(VENV)/bin/autovid tune quickstart name=quickstart-$$(date +%Y%m%d-%H%M%S)

# Two pytest workers (pytest-xdist), a test file each at a time (a module's Ray and fixtures stay in one worker):
# the Ray tests leave a core idle a third of the time (actor starts, Tune's polling), which the other worker uses.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

# The edit-test loop: everything but the end-to-end tests that start Ray or train networks.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

# The load study: 64 short trials, the driver SIGKILLed a third of the way, resumed; MLflow and the Optuna
# journal must hold every result exactly once. Minutes on an idle machine, so it is not part of `make test`.
test-load: $(STAMP)
	$(PY) -m pytest -q -m load tests/tune/test_load.py

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
