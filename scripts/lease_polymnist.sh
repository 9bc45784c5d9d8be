#!/bin/bash
# The PolyMNIST reproductions (scripts/reproduce_polymnist.py) in one lease of a GPU machine that can be reached only
# by commands of at most 10 minutes, whose files come back only from $OUT, and which is given back 30 s after a
# command ends. Run from the repository root there, in one command, or two back to back:
#
#   bash scripts/lease_polymnist.sh start 5 [reproduce_polymnist.py flags] && bash scripts/lease_polymnist.sh watch 540
#   bash scripts/lease_polymnist.sh watch 200     # only if the first says "still running"
#
# start: prints the machine and its software, then starts reproduce_polymnist.py in a new process session (so
#   it outlives the command) with --train_minutes=MINUTES (its trainings stopped after MINUTES, then evaluated),
#   and an nvidia-smi sampler (every 5 s) beside it.
# watch SECONDS: prints progress every 30 s until the script ends or SECONDS pass, then packs under $OUT (when
#   set): the report, the script's log, and runs.tar.gz (every run's config.json, metrics.jsonl and eval/*.json,
#   the logs, the GPU samples; no checkpoints).
#
# The data travel with the working tree: before the lease, here, copy them into the ignored .data/ and name it
# in the call's carry:  mkdir -p .data/datasets && cp -r ../shared/datasets/{mnist,polymnist_backgrounds} .data/datasets/
# The machine's own Python (JAX with CUDA, flax, optax, orbax, scikit-learn) runs the repository as it is.
set -u
RUNS=${RUNS:-runs/reproduce_polymnist}  # where the runs go, and the report (environment variables, to change them)
REPORT=${REPORT:-docs/REPRODUCTIONS_POLYMNIST.md}
PIDFILE=/tmp/reproduce_polymnist.pid
LOG=$RUNS/lease.log
PYTHON=${PYTHON:-python3}

pack() {
  [ -n "${OUT:-}" ] || return 0
  cp "$LOG" "$OUT/" 2>/dev/null
  cp "$REPORT" "$OUT/" 2>/dev/null
  (cd "$RUNS" && find . \( -name config.json -o -name metrics.jsonl -o -path '*/eval/*.json' -o -path './logs/*' \
    -o -name gpu.csv -o -name machine.txt \) -print0 | tar czf "$OUT/runs.tar.gz" --null -T -)
  ls -l "$OUT"
}

case "${1:-}" in
start)
  minutes=${2:?"start MINUTES: the minutes the trainings may run"}
  shift 2
  mkdir -p "$RUNS"
  nvidia-smi -L 2>/dev/null
  $PYTHON -c "import jax, flax, optax, orbax.checkpoint, sklearn; print(jax.devices(), 'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__)" || exit 1
  export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jax_cache} PYTHONUNBUFFERED=1
  export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several JAX processes share the GPU: each takes what it uses
  setsid nohup nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 >"$RUNS/gpu.csv" 2>&1 </dev/null &
  setsid nohup $PYTHON scripts/reproduce_polymnist.py --data_dir=.data/datasets --runs="$RUNS" --out="$REPORT" \
    --train_minutes="$minutes" "$@" >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  echo "started reproduce_polymnist.py (pid $(cat $PIDFILE)); its log: $LOG"
  ;;
watch)
  seconds=${2:?"watch SECONDS: how long to wait for the script at most"}
  end=$((SECONDS + seconds))
  pid=$(cat "$PIDFILE" 2>/dev/null || echo 0)
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do
    sleep 30
    echo "--- $(date +%T)"
    tail -n 3 "$LOG"
    for log in "$RUNS"/logs/*.log; do [ -f "$log" ] && echo "$(basename "$log"): $(tail -c 300 "$log" | tr '\r' '\n' | tail -n 1)"; done
  done
  kill -0 "$pid" 2>/dev/null && echo "still running after $seconds s" || echo "reproduce_polymnist.py has ended"
  tail -n 40 "$LOG"
  pack
  ;;
*)
  echo "usage: bash scripts/lease_polymnist.sh start MINUTES [flags] | watch SECONDS" >&2
  exit 2
  ;;
esac
