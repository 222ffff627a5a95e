#!/usr/bin/env bash
# The GPU check: run on a machine with CUDA, from the repository root, after `make setup`
# (with a CUDA build of torch: `pip install torch==2.13.0` takes the CPU build, so install
# the CUDA wheel for this machine's driver first).
#
#   bash scripts/gpu_check.sh [OUT_DIR]
#
# 1. the CUDA-only tests (test/test_cuda.py: fp16 by default, offload on deactivate frees
#    GPU memory, restore, detector on CUDA, int8 refused on CUDA);
# 2. `reclip bench` on CUDA in fp16 (random-weight ViT-B/32: no download needed), without and
#    with the detector (random-weight OWLv2 base/16 and OWL-ViT base/32 at their native sizes);
# 3. `reclip bench node` on CUDA with the embedded model, with and without precompute.
# Reports go to OUT_DIR (default: gpu_check_out/); copy the figures into docs/scoring.md.
set -euo pipefail
OUT="${1:-gpu_check_out}"
PY="${PY:-.venv/bin/python}"
RECLIP="${RECLIP:-.venv/bin/reclip}"
mkdir -p "$OUT"
"$PY" - <<'PYEOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f'no CUDA device visible to torch {torch.__version__} (CUDA build: {torch.version.cuda})')
print('CUDA device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)
PYEOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" || true
echo "== CUDA-only tests"
"$PY" -m pytest -q test/test_cuda.py 2>&1 | tee "$OUT/test_cuda.txt"
echo "== bench: ViT-B/32 fp16 on CUDA, with both detector architectures"
"$RECLIP" bench --random-init vit-b-32 --device cuda --precision fp16 \
    --proposals 10 20 40 --repeats 5 --json > "$OUT/bench_fp16.json"
"$RECLIP" bench --random-init vit-b-32 --device cuda --precision fp16 \
    --proposals 20 --repeats 5 --random-detectors --json > "$OUT/bench_fp16_detectors.json"
echo "== node benchmark on CUDA (embedded model)"
"$RECLIP" bench node --commands 30 --json > "$OUT/node.json"
"$RECLIP" bench node --commands 30 --precompute --json > "$OUT/node_precompute.json"
"$RECLIP" bench node --commands 10 --random-detector owlv2-base-16 --json \
    > "$OUT/node_detector_owlv2.json"
echo "done: reports in $OUT/"
