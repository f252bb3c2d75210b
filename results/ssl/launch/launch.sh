#!/usr/bin/env bash
# Issue 25's training, from the frozen worktree runs/ssl-frozen (main cb1441b).
# Rerun this script to resume (sweeps skip finished work and resume from checkpoints).
# Each arm is a sweep dir runs/ssl/<arm>; stages train + evaluate (the paper preset's evaluation, no whole-test IWAE).
# Since session 2026-12-06c: three lanes over both cores (one torch thread each, below), nice 15 (the #27 rejection arm holds core 1 at nice 2; when it
# ends, the lanes spread over both cores by themselves). Arm order: the primary arms first, lam0.003/0.03 last.
# Since 2026-12-06 11:03 UTC the lanes only train (stages=["train"], --overwrite replaced the saved stages; no run's
# identity changed): runs/ssl/ssl_worker.sh evaluates each finished run (test split only, AIS auto = bf16) and scores it.
cd "$(dirname "$0")/../.."   # /work/main
# One torch thread per run: the sweep gives each run usable_cores() // workers threads, counted from its CPU affinity
# when it starts, so it starts pinned to core 0 (one thread) and is then let run on both cores (the scheduler spreads
# the lanes; the thread count stays one). Unpinned from the start, each run took two threads, and six processes of
# two threads on two cores made an epoch ~20x slower (2026-12-06 08:20-10:20 UTC).
unpin_later() {  # unpin_later PID: after the sweep has counted its cores, let it and its workers use both
  ( sleep 30; for p in "$1" $(pgrep -P "$1"); do taskset -a -p -c 0,1 "$p"; done ) > /dev/null 2>&1 &
}
SMVI=runs/ssl-frozen/.venv/bin/smvi
COMMON=(--preset paper --set 'stages=["train"]' --set eval.iwae_full_test_k=0 --overwrite
        --executor process --workers 1 --no-report --no-progress)
TEN='seeds=[0,1,2,3,4,5,6,7,8,9]'
THREE='seeds=[0,1,2]'
lane() {  # lane LOGNAME ARM|SETS...
  local log=runs/ssl/$1.log; shift
  for spec in "$@"; do
    local arm=${spec%%|*} sets=${spec#*|}
    echo "$(date -u +%FT%TZ) start $arm" >> $log
    eval "nice -n 15 taskset -c 0 $SMVI sweep runs/ssl/$arm \"\${COMMON[@]}\" $sets >> $log 2>&1 &"
    local pid=$!; unpin_later $pid; wait $pid
    rc=$?; echo "$(date -u +%FT%TZ) end $arm rc=$rc" >> $log
  done
}
lane lane0 "lam0|--set 'lams=[0]' --set '$TEN'" \
           "lam0.003|--set 'lams=[0.003]' --set '$THREE'" &
lane lane1 "lam0.01|--set 'lams=[0.01]' --set '$TEN'" \
           "lam0.03|--set 'lams=[0.03]' --set '$THREE'" &
lane lane3 "iwae5|--set 'lams=[0]' --set '$THREE' --set run.train.objective='iwae' --set run.train.iwae_k=5" \
           "beta0.5|--set 'lams=[0]' --set '$THREE' --set run.train.objective='beta' --set run.train.beta=0.5" &
wait
