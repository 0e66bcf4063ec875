#!/usr/bin/env bash
# Reproduce chapter 6's recorded CPU runs: the same recipe and budget (`cpu`) for three models of about
# 0.9 M parameters on Fashion-MNIST, each writing results.json (history, params, MACs, accuracy, images/s,
# wall time, provenance), last.pt and best.pt into book/results/fmnist-cpu-<model>/.
#
#   SEQUENTIAL=1 THREADS=2 bash bench/fmnist_trio.sh   # one after the other, each with the whole 2-core CPU (as recorded)
#   bash bench/fmnist_trio.sh                 # the three runs in parallel, one thread each
#   RESUME=1 bash bench/fmnist_trio.sh        # continue interrupted runs from their last.pt
#   LOGS=/some/dir PYTHON=python3 bash bench/fmnist_trio.sh
#
# A run refuses to start over an existing last.pt unless RESUME=1 (then a finished run is a no-op); delete
# the folder to train from scratch. The recorded runs were made one after the other on an otherwise idle
# 2-core CPU; the parallel form's wall times include the contention between the three.
# book/06_training_fmnist.ipynb reads the files and prints their provenance.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
LOGS=${LOGS:-/tmp/trio}
THREADS=${THREADS:-1}
MODELS=(sequencer2d_mini28 small_cnn small_vit)
mkdir -p "$LOGS"

extra=()
if [[ -n "${RESUME:-}" ]]; then
  extra+=(--resume)
fi

run() {
  local model=$1
  "$PYTHON" -m sequencer_mini.train --dataset fashion_mnist --model "$model" --budget cpu --threads "$THREADS" \
    --out "book/results/fmnist-cpu-$model" "${extra[@]}" >"$LOGS/$model.log" 2>&1
}

pids=()
for model in "${MODELS[@]}"; do
  echo "training $model (log: $LOGS/$model.log)"
  if [[ -n "${SEQUENTIAL:-}" ]]; then
    run "$model"
  else
    run "$model" &
    pids+=($!)
  fi
done

status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=1
done
for model in "${MODELS[@]}"; do
  tail -n 1 "$LOGS/$model.log" || true
done
exit $status
