# make demo: set up .venv and run the whole loop on the built-in model.
# make test: set up .venv and run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast bench install system clean

install: $(STAMP) system

# What the reward sandbox needs from the system: bubblewrap (installed here when we are root with
# apt-get; otherwise the sandbox uses the kernel's namespaces directly, or says what is missing).
system:
	@command -v bwrap >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing bubblewrap (the reward sandbox)"; \
	  apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1; } || \
	  echo "note: could not install bubblewrap; the sandbox will use namespaces directly"; \
	else echo "note: install bubblewrap for the reward sandbox (sudo apt-get install bubblewrap)"; fi; }

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and alone: its CPU wheel; an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP) system
	$(VENV)/bin/tuneloop demo

test: $(STAMP) system
	$(PY) -m pytest

test-fast: $(STAMP) system
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
