#!/usr/bin/env bash
# Trains llama_tiny on the embedded corpus once per number format (same seed, data order and
# schedule; AdamW), then writes into OUT_DIR:
#   loss_curves.png   training and validation loss of every run (scripts/plot_metrics.py)
#   results.md        final validation loss of each run and its difference from fp32
#   command.txt       the command, commit and machine
# The runs: fp32; bf16 (mixed: fp32 master weights); bf16_pure with stochastic rounding, with
# Kahan compensation, and with plain rounding to nearest (what happens without either).
#
# Usage: scripts/compare_precision.sh [OUT_DIR] [--steps N] [--binary PATH]
#   OUT_DIR    default docs/precision (the figure docs/precision.md shows)
#   --steps N  optimizer steps per run (default 200, the config's)
# Runs and shards go to runs/compare_precision.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

out_dir="docs/precision"
steps=200
binary="${GUM_TRAIN:-$root/build/bin/gum_train}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    -*) echo "compare_precision.sh: unknown option $1" >&2; exit 2 ;;
    *) out_dir="$1"; shift ;;
  esac
done
python=/usr/bin/python3
work_dir="runs/compare_precision"
mkdir -p "$work_dir" "$out_dir"
config=configs/llama_tiny.json
common=(--set data.shard_dir="$work_dir/shards" --set training.backend=cpu --set training.max_steps="$steps"
        --set eval.every_steps=50 --set eval.max_tokens=65536 --set eval.at_end=true
        --set checkpoint.every_steps=0 --set checkpoint.at_end=false)

scripts/make_corpus.sh
"$binary" prepare "$config" "${common[@]}" 2>&1 | tail -n 1

runs=(fp32 bf16 bf16_pure_stochastic bf16_pure_kahan bf16_pure_nearest)
for name in "${runs[@]}"; do
  case "$name" in
    fp32 | bf16) sets=(--set training.precision="$name") ;;
    bf16_pure_*) sets=(--set training.precision=bf16_pure --set training.weight_rounding="${name#bf16_pure_}") ;;
  esac
  run_dir="$work_dir/runs/$name"
  rm -rf "$run_dir"
  echo "== $name"
  "$binary" "$config" "${common[@]}" "${sets[@]}" --set logging.run_dir="$run_dir" --resume never \
    > "$work_dir/$name.log" 2>&1 || { tail -n 20 "$work_dir/$name.log" >&2; exit 1; }
  grep -E "eval  step" "$work_dir/$name.log" | tail -n 1
done

run_dirs=()
for name in "${runs[@]}"; do run_dirs+=("$work_dir/runs/$name"); done
"$python" scripts/plot_metrics.py "${run_dirs[@]}" -o "$out_dir/loss_curves.png"
"$python" - "${run_dirs[@]}" > "$out_dir/results.md" <<'PY'
import os, sys
sys.path.insert(0, "scripts")
from metrics_jsonl import read_metrics
final = {}
for run in sys.argv[1:]:
    _, evals = read_metrics(os.path.join(run, "metrics.jsonl"), strict=True)
    final[os.path.basename(run)] = (evals[-1]["step"], evals[-1]["val_loss"])
reference = final["fp32"][1]
print("| run | final step | final validation loss | vs fp32 |")
print("|---|---|---|---|")
for name, (step, loss) in final.items():
    print(f"| {name} | {step} | {loss:.4f} | {100 * (loss - reference) / reference:+.2f}% |")
PY
{
  echo "command: $0 $out_dir --steps $steps"
  echo "commit: $(git rev-parse HEAD)$([[ -n "$(git status --porcelain -- src include)" ]] && echo ' (with uncommitted changes)')"
  echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$out_dir/command.txt"
cat "$out_dir/results.md"
