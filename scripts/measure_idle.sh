#!/usr/bin/env bash
# Idle-machine measurements (issues 12 and 15): the benchmark's `epochs` section (1 and 2 threads, and two 1-thread
# runs side by side against one 2-thread run) and the quick preset end to end. A long job holding the cores (e.g. the
# paper sweep) is paused with SIGSTOP for the duration and resumed afterwards, also on failure or Ctrl-C.
#   usage: scripts/measure_idle.sh [PATTERN]   (PATTERN: pgrep -f pattern of the processes to pause; default
#          'smvi sweep runs/paper'). Writes benchmarks/results_threads_idle.json and runs/idle_quick.{log,time}.
set -uo pipefail
cd "$(dirname "$0")/.."
PIDS="$(pgrep -f "${1:-smvi sweep runs/paper}" | tr '\n' ' ')"
if [ -n "$PIDS" ]; then
  echo "pausing $PIDS"; kill -STOP $PIDS
  trap 'kill -CONT $PIDS; echo "resumed $PIDS"' EXIT
fi
sleep 75  # let the 1-minute load average fall; the benchmark records it
cat /proc/loadavg
.venv/bin/python benchmarks/run.py --skip threads training ais precision --out benchmarks/results_threads_idle.json
mkdir -p runs; rm -rf runs/idle_quick
/usr/bin/time -v -o runs/idle_quick.time .venv/bin/smvi sweep runs/idle_quick --preset quick > runs/idle_quick.log 2>&1
grep -E "Elapsed|Exit status" runs/idle_quick.time
cat /proc/loadavg
