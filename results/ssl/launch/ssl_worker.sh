#!/usr/bin/env bash
# Issue 25's SSL stages on every study run that has its eval record (polls every 10 minutes; rerun to resume):
# 1. the robust protocol (results/ssl/PREREGISTRATION.md), `smvi ssl RUN --set protocol=robust`, from the frozen
#    worktree runs/ssl-eval (main e993a64), on every run without ssl.json;
# 2. the test-time-refinement control, `smvi ssl-refined RUN` (defaults: 100 local-fit steps of 4 draws, 5 label
#    subsets, 2000 test images), from the frozen worktree runs/ssl-refined-frozen (main 9adfb86), on λ = 0 seeds 0-2.
# Unpinned, nice 13.
cd "$(dirname "$0")/../.."   # /work/main
SSL=runs/ssl-eval/.venv/bin/smvi
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
    [ -e "$run/eval.json" ] && [ ! -e "$run/ssl.json" ] || continue
    step ssl "$run" $SSL ssl "$run" --set protocol=robust --no-progress
  done
  for seed in 0 1 2; do
    run=runs/ssl/lam0/runs/lam0_seed$seed
    [ -e "$run/eval.json" ] && [ ! -e "$run/ssl_refined.json" ] || continue
    step ssl-refined "$run" $REFINED ssl-refined "$run" --no-progress --threads 1
  done
  sleep 600
done
