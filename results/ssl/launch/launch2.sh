#!/usr/bin/env bash
# Issue 25's mechanism arms that need train.dsm_grad, from the frozen worktree runs/ssl-frozen2 (main 2ca67ce).
# One lane, unpinned, nice 15. Rerun to resume.
cd "$(dirname "$0")/../.."   # /work/main
SMVI=runs/ssl-frozen2/.venv/bin/smvi
COMMON=(--preset paper --set 'stages=["train","evaluate"]' --set eval.iwae_full_test_k=0
        --set 'lams=[0.01]' --set run.train.lam=0.01 --set 'seeds=[0,1,2]' --executor process --workers 1 --no-report --no-progress)
for side in encoder decoder; do
  echo "$(date -u +%FT%TZ) start dsm-$side" >> runs/ssl/lane2.log
  nice -n 15 $SMVI sweep runs/ssl/dsm-$side "${COMMON[@]}" --set run.train.dsm_grad="'$side'" >> runs/ssl/lane2.log 2>&1
  rc=$?; echo "$(date -u +%FT%TZ) end dsm-$side rc=$rc" >> runs/ssl/lane2.log
done
