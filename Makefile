# make demo / make test / make test-fast / make bench: each creates .venv on first use.
# torch==2.13.0 goes in first: on machines with a local CPU wheel (like CI) this
# takes it; an unpinned torch would otherwise pull a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0

.PHONY: venv demo test test-fast bench fuzz experiment clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[train,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vaediag demo

# pytest exits 5 when it collects nothing: that is a failure, not a pass.
test: $(STAMP)
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# The edit-run loop: everything not marked slow (nothing that trains, starts processes, builds big corpora
# or renders whole reports beyond the seed's); under a minute on 2 idle cores. make test stays the suite.
test-fast: $(STAMP)
	@$(PY) -m pytest -q -m "not slow"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-fast: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

bench: $(STAMP)
	$(PY) -m bench

clean-venv:
	rm -rf $(VENV)
