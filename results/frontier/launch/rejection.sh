#!/usr/bin/env bash
# Issue 27's frontier arm: the rejection family at the cpu preset (30 epochs, bf16 training, seed 0), from the frozen
# worktree runs/rej-frozen (main a9d374b: the implicit-gradient threshold; the first start on c77267b diverged and was deleted).
# Rerun to resume (sweeps resume from checkpoints; finished records are kept).
# Per arm: train, evaluate, ssl, pictures (the sweep), then the gap split of each run (smvi gaps RUN, GapConfig's
# defaults: 100 test images, AIS 500 steps, local fits of 3000 steps).
# Since 2026-12-06 09:05 UTC: AIS in fp32 (eval.ais.precision, the gaps' ais.precision), as every other frontier arm
# was evaluated (the default became "auto" = bf16 here after those arms); --overwrite replaced the sweeps' saved
# eval settings (run identities unchanged: nothing retrained; the first run's bf16 eval.json was recomputed).
# Since 2026-12-06 11:05 UTC: two lanes at nice 2, lane A on core 1 (acceptance 0.05, then the gap splits of 0.5 and
# 0.05), lane B on core 0 (acceptance 0.2, then its gap splits); the #25 lanes (nice 15) share what is left.
cd "$(dirname "$0")/../.."   # /work/main
SMVI=runs/rej-frozen/.venv/bin/smvi
log() { echo "$(date -u +%FT%TZ) $*" >> runs/rej/lane.log; }
arm() {  # arm CORE ACCEPTANCE: the sweep, then the gap split of each of its runs
  local core=$1 a=$2
  log "start rejection$a (core $core)"
  nice -n 2 taskset -c "$core" $SMVI sweep runs/frontier/rejection$a --preset cpu --set "run.train.precision='bf16'" \
    --set 'lams=[0, 0.01]' --set "run.model.posterior='rejection'" --set run.model.rejection_acceptance=$a \
    --set 'stages=["train","evaluate","ssl","pictures"]' --set "eval.ais.precision='fp32'" --overwrite \
    --executor process --workers 1 --no-report --no-progress \
    >> runs/rej/lane.log 2>&1
  log "end rejection$a rc=$?"
}
gaps() {  # gaps CORE ACCEPTANCE
  local core=$1 a=$2
  for run in runs/frontier/rejection$a/runs/*/; do
    [ -e "$run/gaps.json" ] && continue
    log "start gaps $run (core $core)"
    nice -n 2 taskset -c "$core" $SMVI gaps "$run" --set "ais.precision='fp32'" --threads 1 --no-progress >> runs/rej/lane.log 2>&1
    log "end gaps $run rc=$?"
  done
}
( arm 1 0.05; gaps 1 0.5; gaps 1 0.05 ) &
( arm 0 0.2; gaps 0 0.2 ) &
wait
