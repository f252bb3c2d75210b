#!/usr/bin/env bash
# Issue 27, lane C (added 2026-12-06 14:05 UTC): once lane B (core 0) has finished its last gap split
# (rejection0.2 lam0_seed0), the gap splits of the acceptance-0.05 runs on core 0, in the order opposite to lane A's,
# so the two lanes meet in the middle. A run that the other lane holds is refused by the run lock (rc != 0, nothing
# written) and one that has gaps.json is skipped.
cd "$(dirname "$0")/../.."   # /work/main
SMVI=runs/rej-frozen/.venv/bin/smvi
log() { echo "$(date -u +%FT%TZ) $*" >> runs/rej/lane.log; }
until grep -q "end gaps runs/frontier/rejection0.2/runs/lam0_seed0/" runs/rej/lane.log; do sleep 60; done
for run in runs/frontier/rejection0.05/runs/lam0_seed0/ runs/frontier/rejection0.05/runs/lam0.01_seed0/; do
  [ -e "$run/gaps.json" ] && continue
  log "start gaps $run (core 0, lane C)"
  nice -n 2 taskset -c 0 $SMVI gaps "$run" --set "ais.precision='fp32'" --threads 1 --no-progress >> runs/rej/lane.log 2>&1
  log "end gaps $run rc=$? (lane C)"
done
