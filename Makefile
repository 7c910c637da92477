# make demo / make test / make test-fast / make bench: each creates .venv on first use.
# torch==2.13.0 goes in first: on machines with a local CPU wheel (like CI) this
# takes it; an unpinned torch would otherwise pull a multi-GB CUDA build.
# pip installs without compiling bytecode (--no-compile: pip compiles serially, 35 of the
# 70 s a venv took on 2 cores); the suite's venv is then compiled on both cores at once
# (COMPILED, 20 s), while make demo starts at once and Python compiles what it imports.
PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
PIP      := $(VENV)/bin/pip
STAMP    := $(VENV)/.installed
COMPILED := $(VENV)/.compiled
TORCH    ?= torch==2.13.0

.PHONY: venv demo test test-fast bench clean-venv

venv: $(COMPILED)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet --no-compile "$(TORCH)"
	$(PIP) install --quiet --no-compile -e ".[train,dev]"
	touch $(STAMP)

# Bytecode for everything installed, on every core (-j 0). A few packages ship files that are
# not meant to compile (templates, Python 2 examples), as pip's own compile step ignores them.
$(COMPILED): $(STAMP)
	-$(PY) -m compileall -qq -j 0 $(VENV)/lib > /dev/null 2>&1
	touch $(COMPILED)

demo: $(STAMP)
	$(VENV)/bin/vaediag demo

# pytest exits 5 when it collects nothing: that is a failure, not a pass.
test: $(COMPILED)
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# The edit-run loop: everything not marked slow (nothing that trains, starts processes, builds big corpora
# or renders whole reports beyond the seed's); under a minute on 2 idle cores. make test stays the suite.
test-fast: $(COMPILED)
	@$(PY) -m pytest -q -m "not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-fast: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

bench: $(COMPILED)
	$(PY) -m bench

clean-venv:
	rm -rf $(VENV)
