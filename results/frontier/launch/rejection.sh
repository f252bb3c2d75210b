#!/usr/bin/env bash
# Issue 27's frontier arm: the rejection family at the cpu preset (30 epochs, bf16 training, seed 0), from the frozen
# worktree runs/rej-frozen (main a9d374b: the implicit-gradient threshold; the first start on c77267b diverged and was deleted). Core 1, nice 10. Rerun to resume (sweeps resume from checkpoints).
# Pass 1: train, evaluate, ssl, pictures for acceptance 0.5 and 0.05 (then 0.2); pass 2: the gap split of each run
# (smvi gaps RUN, GapConfig's defaults: 100 test images, AIS 500 steps, local fits of 3000 steps).
# Since 2026-12-06 09:05 UTC: AIS in fp32 (eval.ais.precision, the gaps' ais.precision), as every other frontier arm
# was evaluated (the default became "auto" = bf16 here after those arms); --overwrite replaced the sweeps' saved
# eval settings (run identities unchanged: nothing retrained; the first run's bf16 eval.json was recomputed).
# Core 1 at nice 2 (most of it; the #25 lanes at nice 15 share the rest).
cd "$(dirname "$0")/../.."   # /work/main
SMVI=runs/rej-frozen/.venv/bin/smvi
log() { echo "$(date -u +%FT%TZ) $*" >> runs/rej/lane.log; }
for a in 0.5 0.05 0.2; do
  log "start rejection$a"
  nice -n 2 taskset -c 1 $SMVI sweep runs/frontier/rejection$a --preset cpu --set "run.train.precision='bf16'" \
    --set 'lams=[0, 0.01]' --set "run.model.posterior='rejection'" --set run.model.rejection_acceptance=$a \
    --set 'stages=["train","evaluate","ssl","pictures"]' --set "eval.ais.precision='fp32'" --overwrite \
    --executor process --workers 1 --no-report --no-progress \
    >> runs/rej/lane.log 2>&1
  log "end rejection$a rc=$?"
done
for a in 0.5 0.05 0.2; do
  for run in runs/frontier/rejection$a/runs/*/; do
    [ -e "$run/gaps.json" ] && continue
    log "start gaps $run"
    nice -n 2 taskset -c 1 $SMVI gaps "$run" --set "ais.precision='fp32'" --threads 1 --no-progress >> runs/rej/lane.log 2>&1
    log "end gaps $run rc=$?"
  done
done
