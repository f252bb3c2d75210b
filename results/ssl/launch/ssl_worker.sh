#!/usr/bin/env bash
# Issue 25's SSL: the robust protocol (results/ssl/PREREGISTRATION.md) on every study run that has its eval record,
# from the frozen worktree runs/ssl-eval (main e993a64). Polls every 10 minutes; rerun to resume. Unpinned, nice 13.
cd "$(dirname "$0")/../.."   # /work/main
SMVI=runs/ssl-eval/.venv/bin/smvi
log=runs/ssl/ssl_worker.log
while true; do
  for run in runs/ssl/*/runs/*/; do
    run=${run%/}
    [ -e "$run/eval.json" ] && [ ! -e "$run/ssl.json" ] || continue
    echo "$(date -u +%FT%TZ) start ssl $run" >> $log
    OMP_NUM_THREADS=1 nice -n 13 $SMVI ssl "$run" --set protocol=robust --no-progress >> $log 2>&1
    echo "$(date -u +%FT%TZ) end ssl $run rc=$?" >> $log
  done
  sleep 600
done
