#!/bin/bash
# The device run of a session with a GPU: CUDA correctness checks, throughput on CIFAR-shaped tensors,
# Fashion-MNIST training of sequencer2d_mini28 sized to TRAIN_S seconds, and bench/speed.py on CUDA.
# Needs the Fashion-MNIST IDX files in ./.fmnist (copied from /usr/share/datasets/fashion-mnist). Usage:
#   TRAIN_S=240 bash tools/gpu_session.sh      (writes everything under $OUT)
set -u
export SEQUENCER_DATA=$PWD/.fmnist SEQUENCER_QUIET=1 PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
# The copy sent to the GPU machine has no .git: pass the commit in, e.g. SEQUENCER_GIT_COMMIT=$(git rev-parse HEAD).
export SEQUENCER_GIT_COMMIT=${SEQUENCER_GIT_COMMIT:-unknown}
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
TRAIN_S=${TRAIN_S:-240}
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
echo "== CUDA checks"; timeout 90 python3 tools/gpu_checks.py 2>&1 | tee "$OUT/gpu_checks.txt"
echo "== throughput, CIFAR-shaped"; timeout 90 python3 bench/throughput.py --device cuda --out "$OUT/throughput-cuda.json"
IPS=$(python3 -c "import json; r=json.load(open('$OUT/throughput-cuda.json'))['rows']; print(int([x for x in r if x['model']=='sequencer2d_mini32'][0]['train_img_s']))" 2>/dev/null || echo 3000)
EPOCHS=$(python3 -c "print(max(5, min(200, int($TRAIN_S * $IPS / (60000 + 10000 / 3) / 1.35))))")
echo "== Fashion-MNIST sequencer2d_mini28 on the GPU: $EPOCHS epochs (measured $IPS img/s on the CIFAR shape)"
timeout $((TRAIN_S + 90)) python3 -m sequencer_mini.train --dataset fashion_mnist --model sequencer2d_mini28 \
  --budget gpu --epochs "$EPOCHS" --batch-size 256 --lr 2e-3 --aug light --device cuda --out "$OUT/fmnist"
python3 -c "import json; r=json.load(open('$OUT/fmnist/results.json')); print('best', r['best_test_acc'], 'final', r['final_test_acc'], 'params', r['params'], 'img/s', r['images_per_s'])"
rm -f "$OUT/fmnist/last.pt"
echo "== speed vs timm and nn.LSTM on CUDA"; timeout 120 python3 bench/speed.py --device cuda --out "$OUT/speed-cuda.json"
if [ -f bench/scaling.py ]; then echo "== scaling sweep"; timeout 120 python3 bench/scaling.py --device cuda --out "$OUT/scaling-cuda.json"; fi
echo "total $(( $(date +%s) - T0 )) s"
