#!/usr/bin/env bash
# The GPU rows of docs/performance.md in one go, on a machine with a CUDA GPU and torch already installed.
#
#   bash benchmarks/gpu_run.sh OUT_DIR [WHEEL_DIR]
#
# WHEEL_DIR (optional) holds wheels of recbole==1.2.1, colorlog and texttable for an offline machine; they go
# to a private --target folder, never into the system environment. Steps (each logged to OUT_DIR/*.log, and a
# failing step does not stop the others):
#   1. the CUDA-marked tests;
#   2. the benchmark table on the GPU (strict fp32, TF32 off on both sides), at the CPU sizes and at a larger
#      batch where the GPU is not bound by kernel launches;
#   3. ML-100K pretraining on the GPU, fp32 and bf16, 3 seeds each (needs data/external/ml-100k).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: gpu_run.sh OUT_DIR [WHEEL_DIR]}
WHEELS=${2:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if [ -n "$WHEELS" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/bench-site "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/bench-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # peterrec and benchmarks from this checkout
nvidia-smi -L | tee "$OUT/machine.log"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/machine.log"

step() {  # step NAME COMMAND...: log to OUT/NAME.log, print its wall time
    local name=$1 start=$SECONDS
    shift
    "$@" >"$OUT/$name.log" 2>&1
    echo "[$name: exit $?, $((SECONDS - start)) s]"
}

step tests timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/
step bench timeout 200 python3 -m benchmarks.run --device cuda --out "$OUT"
step bench-large-batch timeout 150 python3 -m benchmarks.run --device cuda --only pretrain,finetune --batch 1024 \
    --channels 256,1024 --out "$OUT"

if [ -f data/external/ml-100k/ml-100k.inter ]; then
    for precision in fp32 bf16; do
        for seed in 0 1 2; do
            step "ml100k-$precision-$seed" timeout 90 python3 -m peterrec pretrain -c configs/pretrain/ml100k_autoregressive.yaml \
                --out "$OUT/runs/ml100k-$precision-$seed" --set train.device=cuda --set train.progress=false \
                --set train.precision=$precision --set train.seed=$seed
            python3 - "$OUT/runs/ml100k-$precision-$seed/manifest.json" "$precision" "$seed" <<'PY' | tee -a "$OUT/ml100k.tsv"
import json, sys
m = json.load(open(sys.argv[1]))
keys = ("test/ndcg@10", "test/hr@10", "valid/ndcg@10")
metrics = m.get("metrics", {})
print("\t".join([sys.argv[2], sys.argv[3]] + [f"{k}={metrics.get(k)}" for k in keys]
                + [f"{k}={m.get(k)}" for k in ("train_seconds", "wall_seconds", "tokens_per_s", "epochs_run", "best_epoch")]))
PY
        done
    done
fi
