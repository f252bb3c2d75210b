#!/usr/bin/env bash
# Issue 25's stages after training, on every study run (polls every 10 minutes; rerun to resume):
# 0. since 2026-12-06 11:03 UTC, the evaluation of every run that finished its 300 epochs and has no eval.json:
#    `smvi evaluate RUN --n-train 0` (the 200 test images, ELBO 1000 samples, IWAE k=1000, AIS 1000 steps x 4 chains,
#    ais.precision auto = bf16 explicit force here), from the frozen worktree runs/ssl-eval (main e993a64). The
#    training lanes (launch.sh, launch2.sh) no longer evaluate. λ = 0 seed 0 was evaluated before, by the lanes' code
#    (fp32 AIS, test and train splits).
# 1. the robust protocol (results/ssl/PREREGISTRATION.md), `smvi ssl RUN --set protocol=robust`, from runs/ssl-eval,
#    on every run with eval.json and without ssl.json;
# 2. the test-time-refinement control, `smvi ssl-refined RUN` (defaults: 100 local-fit steps of 4 draws, 5 label
#    subsets, 2000 test images), from the frozen worktree runs/ssl-refined-frozen (main 9adfb86), on λ = 0 seeds 0-2.
# Unpinned, nice 13, one thread.
cd "$(dirname "$0")/../.."   # /work/main
SMVI=runs/ssl-eval/.venv/bin/smvi
REFINED=runs/ssl-refined-frozen/.venv/bin/smvi
log=runs/ssl/ssl_worker.log
step() {  # step NAME RUN COMMAND...
  local name=$1 run=$2; shift 2
  echo "$(date -u +%FT%TZ) start $name $run" >> $log
  OMP_NUM_THREADS=1 nice -n 13 "$@" >> $log 2>&1
  echo "$(date -u +%FT%TZ) end $name $run rc=$?" >> $log
}
while true; do
  for run in runs/ssl/*/runs/*/; do
    run=${run%/}
    grep -q '"epoch": 300,' "$run/metrics.jsonl" 2>/dev/null && [ ! -e "$run/eval.json" ] || continue
    step evaluate "$run" $SMVI evaluate "$run" --n-train 0 --set iwae_full_test_k=0 --threads 1 --no-progress
  done
  for run in runs/ssl/*/runs/*/; do
    run=${run%/}
    [ -e "$run/eval.json" ] && [ ! -e "$run/ssl.json" ] || continue
    step ssl "$run" $SMVI ssl "$run" --set protocol=robust --no-progress
  done
  for seed in 0 1 2; do
    run=runs/ssl/lam0/runs/lam0_seed$seed
    [ -e "$run/eval.json" ] && [ ! -e "$run/ssl_refined.json" ] || continue
    step ssl-refined "$run" $REFINED ssl-refined "$run" --no-progress --threads 1
  done
  sleep 600
done
