#!/usr/bin/env bash
# The GPU check: one command for a machine with one GPU, under 10 minutes.
#
#   pip install -e . "jax[cuda12]" && experiments/gpu_check.sh
#
# 1. experiments/benchmark.py: img/s, step time, compile time, peak memory and MFU (against the device's dense
#    bf16 datasheet peak, the table in benchmark.py's device_peak_flops) of every method's train step at ViT-B
#    and ViT-L, 224 px, patch 16, bf16, predictor 6 x 384; batches from the embedded data, made before timing.
# 2. experiments/budget.py: a 5-minute LeJEPA run on CIFAR-10 (configs/lejepa_vit.py:cifar10_resnet18, the
#    EB-JEPA views and a ResNet-18) with its linear probe and kNN on the held-out carve, next to raw pixels and
#    random init (needs ../shared/data/cifar10).
# Results: $OUT/benchmark.{json,md} and experiments/results/budget/gpu_lejepa_cifar10_5min.json.
# On a CPU the same script runs as a smoke test with small settings:
#   SIZES=tiny IMAGE=32 PATCH=8 BATCH=8 STEPS=2 BUDGET=0 OUT=/tmp/gpu_check experiments/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-experiments/results/gpu_check}
SIZES=${SIZES:-base,large}
IMAGE=${IMAGE:-224}
PATCH=${PATCH:-16}
BATCH=${BATCH:-32}
STEPS=${STEPS:-10}
MINUTES=${MINUTES:-5}
BUDGET=${BUDGET:-1}   # 0: skip the CIFAR-10 run
WORKDIR=${WORKDIR:-$(mktemp -d)/gpu_lejepa}

python -c "import jax; print('devices:', jax.devices())"
python experiments/benchmark.py --config=configs/ijepa_vit.py --methods=ijepa,lejepa,iwm,vjepa --sizes="$SIZES" \
  --config.data.image_size="$IMAGE" --config.model.patch_size="$PATCH" --config.train.batch_size="$BATCH" \
  --config.model.predictor.width=384 --config.model.predictor.depth=6 --config.dtype=bfloat16 \
  --steps="$STEPS" --output="$OUT/benchmark" --note="gpu_check.sh"
cat "$OUT/benchmark.md"
[ "$BUDGET" = 0 ] && exit 0
python experiments/budget.py --config=configs/lejepa_vit.py:cifar10_resnet18 --name=gpu_lejepa_cifar10_5min \
  --minutes="$MINUTES" --points=1 --workdir="$WORKDIR"
python -c "
import json; r = json.load(open('experiments/results/budget/gpu_lejepa_cifar10_5min.json'))
p = r['points'][-1]; b = r['baselines']
print(f\"LeJEPA CIFAR-10 {p['train_minutes']} min, {p['epochs']} epochs, {p['img_per_s']} img/s: linear {p['linear']:.4f} \"
      f\"(raw pixels {b['raw_pixels']['linear']:.4f}, random init {b['random_init']['linear']:.4f}), kNN {p['knn']:.4f}\")"
