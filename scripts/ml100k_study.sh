#!/usr/bin/env bash
# The whole MovieLens-100K transfer study of docs/results.md, end to end, on CPU.
# Usage: bash scripts/ml100k_study.sh [OUT]   (default runs/ml100k-study; finished runs are reused)
# Steps: fetch ML-100K (not redistributed) -> build tasks -> pretrain 3 backbones -> compare all strategies
# on gender, age, occupation and genre cold start -> insertion variants -> label efficiency.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/ml100k-study}
mkdir -p "$OUT"
LOG="$OUT/timings.tsv"
Q=(--set train.progress=false)

step() {  # step NAME COMMAND...: run it and append its wall time to $LOG
  local name=$1; shift
  local start=$SECONDS
  echo "== $name: $*"
  "$@"
  printf '%s\t%s\n' "$name" "$((SECONDS - start))" >> "$LOG"
}

pretrain() {  # pretrain CONFIG DIR (skipped when DIR is already a finished run)
  [ -f "$2/manifest.json" ] || step "pretrain $(basename "$2")" peterrec pretrain -c "$1" --out "$2" "${Q[@]}"
}

[ -f data/external/ml-100k/ml-100k.inter ] || ../shared/data/get-movielens.sh ml-100k data/external
step "build tasks" peterrec data movielens --input data/external/ml-100k --out data/external/ml100k-tasks

pretrain configs/pretrain/ml100k_autoregressive.yaml "$OUT/backbone-all"
pretrain configs/pretrain/ml100k_masked.yaml "$OUT/backbone-all-masked"
pretrain configs/pretrain/ml100k_source_autoregressive.yaml "$OUT/backbone-source"

backbone_of() { [ "$1" = coldrec ] && echo "$OUT/backbone-source" || echo "$OUT/backbone-all"; }

# 1. all seven strategies, 3 seeds, simple baselines as rows
for task in gender age occupation coldrec; do
  step "compare $task" peterrec compare -c "configs/finetune/ml100k_$task.yaml" --backbone "$(backbone_of $task)" \
    --strategies all --seeds 3 --out "$OUT/$task" --plot "$OUT/$task.png" "${Q[@]}"
  cp "$OUT/$task/results.md" "$OUT/$task-strategies.md"
done

# 2. where the patch goes: serial (above), parallel, parallel with the original's skip, one per block
for task in gender coldrec; do
  for variant in "parallel residual" "parallel original" "block_parallel residual"; do
    set -- $variant
    step "insertion $task $1-$2" peterrec compare -c "configs/finetune/ml100k_$task.yaml" \
      --backbone "$(backbone_of $task)" --strategies peterrec --seeds 3 --out "$OUT/$task-$1-$2" "${Q[@]}" \
      --set adapter.insertion="$1" --set adapter.parallel_form="$2"
  done
done

# 3. label efficiency: fewer training users (the fraction-1.0 runs of step 1 are reused)
for task in gender coldrec; do
  step "fractions $task" peterrec compare -c "configs/finetune/ml100k_$task.yaml" --backbone "$(backbone_of $task)" \
    --strategies peterrec,fine_all,fine_cls --seeds 3 --train-fraction 0.1,0.3,1.0 --out "$OUT/$task" \
    --plot "$OUT/$task-fractions.png" "${Q[@]}"
  cp "$OUT/$task/results.md" "$OUT/$task-fractions.md"
done
echo "done; wall times per step in $LOG"
