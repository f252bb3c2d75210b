#!/usr/bin/env bash
# Issue 25's mechanism arms that need train.dsm_grad, from the frozen worktree runs/ssl-frozen2 (main 2ca67ce).
# One lane over both cores (one torch thread, below), nice 15. Rerun to resume.
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
SMVI=runs/ssl-frozen2/.venv/bin/smvi
COMMON=(--preset paper --set 'stages=["train"]' --set eval.iwae_full_test_k=0 --overwrite
        --set 'lams=[0.01]' --set run.train.lam=0.01 --set 'seeds=[0,1,2]' --executor process --workers 1 --no-report --no-progress)
for side in encoder decoder; do
  echo "$(date -u +%FT%TZ) start dsm-$side" >> runs/ssl/lane2.log
  nice -n 15 taskset -c 0 $SMVI sweep runs/ssl/dsm-$side "${COMMON[@]}" --set run.train.dsm_grad="'$side'" \
    >> runs/ssl/lane2.log 2>&1 &
  pid=$!; unpin_later $pid; wait $pid
  rc=$?; echo "$(date -u +%FT%TZ) end dsm-$side rc=$rc" >> runs/ssl/lane2.log
done
