# make demo / make test / make test-fast / make bench: each creates .venv on first use.
# torch==2.13.0 goes in first: on machines with a local CPU wheel (like CI) this
# takes it; an unpinned torch would otherwise pull a multi-GB CUDA build.
# pip installs without compiling bytecode (--no-compile: pip compiles serially, 35 of the
# 70 s a venv took on 2 cores); the suite's venv is then compiled on both cores at once
# (COMPILED, 20 s), while make demo starts at once and Python compiles what it imports.
# The suite runs on every core (pytest-xdist, -n auto: one worker per core, at most MAXWORKERS; tests/conftest.py
# gives each worker and what it starts one OpenMP thread). Before each run the project's own sources are
# compiled too (SOURCES, a fraction of a second when nothing changed): the suite starts hundreds of processes,
# and each would compile what it imports again where PYTHONDONTWRITEBYTECODE is set.
PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
PIP      := $(VENV)/bin/pip
STAMP    := $(VENV)/.installed
COMPILED := $(VENV)/.compiled
TORCH    ?= torch==2.13.0
MAXWORKERS ?= 8
SOURCES  := vaediag train bench tests scripts examples
PYTEST   := $(PY) -m pytest -q -n auto --maxprocesses $(MAXWORKERS) --dist worksteal

.PHONY: venv demo test test-fast bench clean-venv compile-sources

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

compile-sources: $(COMPILED)
	-@$(PY) -m compileall -qq -j 0 $(SOURCES) > /dev/null 2>&1

demo: $(STAMP)
	$(VENV)/bin/vaediag demo

# pytest exits 5 when it collects nothing: that is a failure, not a pass.
test: compile-sources
	@$(PYTEST); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# The edit-run loop: everything not marked slow (nothing that trains, starts processes, builds big corpora
# or renders whole reports beyond the seed's); under a minute on 2 idle cores. make test stays the suite.
test-fast: compile-sources
	@$(PYTEST) -m "not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-fast: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

bench: $(COMPILED)
	$(PY) -m bench

clean-venv:
	rm -rf $(VENV)
