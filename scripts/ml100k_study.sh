#!/usr/bin/env bash
# The whole MovieLens-100K transfer study of docs/results.md, end to end, on CPU.
# Usage: bash scripts/ml100k_study.sh [OUT] [PART]   (default runs/ml100k-study, all; finished runs are reused)
#   PART: all | profiles (gender, age, occupation: tables, ablations, label efficiency) | coldrec
# Steps: fetch ML-100K (not redistributed) -> build tasks -> pretrain the backbones -> compare all strategies
# on gender, age, occupation (5-fold cross-validation over users) and genre cold start -> profile ablations
# -> insertion variants (cold start) -> label efficiency.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/ml100k-study}
PART=${2:-all}
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

compare() {  # compare TASK BACKBONE ARGS...: every strategy x 3 seeds, two runs at a time
  local task=$1 backbone=$2; shift 2
  step "compare $task $*" peterrec compare -c "configs/finetune/ml100k_$task.yaml" --backbone "$backbone" \
    --seeds 3 --jobs 2 "${Q[@]}" "$@"
}

[ -f data/external/ml-100k/ml-100k.inter ] || ../shared/data/get-movielens.sh ml-100k data/external
step "build tasks" peterrec data movielens --input data/external/ml-100k --out data/external/ml100k-tasks

if [ "$PART" != coldrec ]; then
  pretrain configs/pretrain/ml100k_autoregressive.yaml "$OUT/backbone-all"
  # 1. all seven strategies; the configs run 5-fold cross-validation, so each table rests on all 943 users
  for task in gender age occupation; do
    compare $task "$OUT/backbone-all" --strategies all --out "$OUT/$task" --plot "$OUT/$task.png"
    cp "$OUT/$task/results.md" "$OUT/$task-strategies.md"
  done
  # 2. ablations: each option changed alone (peterrec and fine_all, seed 0, the same 5 folds, at the settings
  #    of then: 49 clicks, no item-table patch), and the item-table patch itself (peterrec, item_rank 0 vs 8)
  step "ablations gender age" python scripts/profile_ablations.py "$OUT" gender age
  step "item rank gender age" python scripts/item_rank_ablation.py "$OUT" gender age
  # where the patches go and the whole history on age (at the settings of then), and the length scale and the
  # balanced stopping score shipped since (peterrec, seed 0)
  step "patches gender age" python scripts/patch_ablation.py "$OUT" gender age
  # the learning rate picked on validation, and 3. label efficiency on gender: both measured at the settings
  # of then as well
  THEN=(--set data.max_len=50 --set strategy.item_rank=0 --set adapter.layers=all)
  for task in gender age; do
    compare $task "$OUT/backbone-all" --strategies peterrec,fine_all --seeds 1 --lr-grid 3e-4,1e-3,3e-3 \
      --out "$OUT/$task-lr-grid" "${THEN[@]}"
  done
  compare gender "$OUT/backbone-all" --strategies peterrec,fine_all,fine_cls --train-fraction 0.1,0.3,1.0 \
    --out "$OUT/gender-then" --plot "$OUT/gender-fractions.png" "${THEN[@]}"
  cp "$OUT/gender-then/results.md" "$OUT/gender-fractions.md"
fi

if [ "$PART" != profiles ]; then
  pretrain configs/pretrain/ml100k_masked.yaml "$OUT/backbone-all-masked"
  pretrain configs/pretrain/ml100k_source_autoregressive.yaml "$OUT/backbone-source"
  compare coldrec "$OUT/backbone-source" --strategies all --out "$OUT/coldrec" --plot "$OUT/coldrec.png"
  cp "$OUT/coldrec/results.md" "$OUT/coldrec-strategies.md"
  # where the patch goes: serial (above), parallel, parallel with the original's skip, one per block
  for variant in "parallel residual" "parallel original" "block_parallel residual"; do
    set -- $variant
    compare coldrec "$OUT/backbone-source" --strategies peterrec --out "$OUT/coldrec-$1-$2" \
      --set adapter.insertion="$1" --set adapter.parallel_form="$2"
  done
  compare coldrec "$OUT/backbone-source" --strategies peterrec,fine_all,fine_cls --train-fraction 0.1,0.3,1.0 \
    --out "$OUT/coldrec" --plot "$OUT/coldrec-fractions.png"
  cp "$OUT/coldrec/results.md" "$OUT/coldrec-fractions.md"
fi
echo "done; wall times per step in $LOG"
