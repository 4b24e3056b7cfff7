#!/usr/bin/env bash
# Trains the same small model on the embedded corpus once per optimizer (same seed, same data
# order, same number of tokens, same schedule), evaluates each on the whole validation split,
# and writes into OUT_DIR:
#   results.md, results.json   final val loss/ppl, train loss, tokens/s, optimizer-state bytes
#   loss_curves.png            training loss (and validation loss) against tokens
#   config.json                the resolved base config every run started from
#   command.txt                the exact command, commit, machine and load
#   logs/NAME.log              each run's console output
#
# Usage: scripts/compare_optimizers.sh [OUT_DIR] [options]
#   OUT_DIR                 default bench/results/cpu_compare
#   --steps N               optimizer steps per run (default: the base config's, 200)
#   --optimizers A,B,...    default adamw,muon,galore_adamw,galore_muon,gum,plumage,stiefel
#   --config FILE           base config (default configs/compare_tiny.json)
#   --work-dir DIR          runs and shards go here (default runs/compare_optimizers)
#   --eval-every N          also evaluate every N steps (default 0: only at the end)
#   --eval-tokens N         tokens per evaluation (default 0: the whole validation split)
#   --threads N             CPU threads (default 0: all cores)
#   --binary PATH           gum_train (default $GUM_TRAIN, else build/bin/gum_train)
#   --set KEY=VALUE         override applied to every run, after the per-optimizer settings (repeatable)
#   --commit SHA            the commit the binary was built from, for the record (default: the
#                           checkout's HEAD, flagged when src/ or include/ has uncommitted changes)
#
# Hyperparameters (model llama_tiny: hidden 128, 4 layers, 4 heads / 2 KV heads, MLP 352,
# vocab 4096; 1.79M parameters, of which 1.05M are the embedding and LM head):
# - Every run uses the same schedule (cosine, 10% warmup, floor 0.1x), gradient clipping at 1.0,
#   batch 16 x 128 tokens, seed 1234, weight decay 0.
# - The non-matrix parameters (embedding, LM head, norms) are trained by AdamW at 3e-3 in every
#   run (optimizer.adamw_lr), so the runs differ only in how the 28 transformer matrices are
#   updated. In this tiny model the embedding and head are most of the parameters; giving them
#   GaLore's lr 0.01 would measure the embedding's learning rate, not the matrix optimizer.
# - adamw: lr 3e-3, betas (0.9, 0.95): the tiny preset's tuned value (1e-3..3e-3 is the usual
#   range for models this small).
# - muon: lr 0.02 with the original shape scale sqrt(max(1, m/n)), momentum 0.95, Nesterov
#   (Keller Jordan's defaults for the hidden matrices).
# - galore_adamw, plumage, stiefel: GaLore's lr 0.01 and scale alpha 0.25 (Zhao et al. use them
#   for every size below 7B), rank 32 and update_proj_gap 50. Rank 32 is a quarter of the hidden
#   size, the ratio of the paper's 60M model (rank 128, hidden 512); the gap is scaled down from
#   200 (of 10K steps) so that a 200-step run still refreshes its projectors 4 times.
# - gum: Muon's lr 0.02 and momentum, rank 32, period K = update_proj_gap = 50, gamma = 1 of the
#   4 layers takes a full-rank step each period (q = 1/4, the paper's 2 of 8 layers for 60M).
# - galore_muon: GUM without the full-rank blocks (q = 0), the biased GaLore + Muon baseline the
#   GUM paper compares against; it isolates what the debiasing changes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

out_dir="bench/results/cpu_compare"
steps=""
optimizers="adamw,muon,galore_adamw,galore_muon,gum,plumage,stiefel"
base_config="configs/compare_tiny.json"
work_dir="runs/compare_optimizers"
eval_every=0
eval_tokens=0
threads=0
binary="${GUM_TRAIN:-$root/build/bin/gum_train}"
extra_sets=()
binary_commit=""
original_command="$0 $*"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
need_value() { [[ $# -ge 2 && -n "$2" ]] || { echo "compare_optimizers.sh: $1 needs a value" >&2; exit 2; }; }
positional_seen=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) need_value "$@"; steps="$2"; shift 2 ;;
    --optimizers) need_value "$@"; optimizers="$2"; shift 2 ;;
    --config) need_value "$@"; base_config="$2"; shift 2 ;;
    --work-dir) need_value "$@"; work_dir="$2"; shift 2 ;;
    --eval-every) need_value "$@"; eval_every="$2"; shift 2 ;;
    --eval-tokens) need_value "$@"; eval_tokens="$2"; shift 2 ;;
    --threads) need_value "$@"; threads="$2"; shift 2 ;;
    --binary) need_value "$@"; binary="$2"; shift 2 ;;
    --set) need_value "$@"; extra_sets+=("$2"); shift 2 ;;
    --commit) need_value "$@"; binary_commit="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    -*) echo "compare_optimizers.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *)
      if (( positional_seen )); then echo "compare_optimizers.sh: unexpected argument $1" >&2; exit 2; fi
      out_dir="$1"; positional_seen=1; shift ;;
  esac
done
for number in "$eval_every" "$eval_tokens" "$threads" ${steps:+"$steps"}; do
  [[ "$number" =~ ^[0-9]+$ ]] || { echo "compare_optimizers.sh: '$number' is not a non-negative integer" >&2; exit 2; }
done
[[ -x "$binary" ]] || { echo "compare_optimizers.sh: $binary not found: run scripts/build.sh or pass --binary" >&2; exit 2; }
[[ -f "$base_config" ]] || { echo "compare_optimizers.sh: base config $base_config not found" >&2; exit 2; }
python=/usr/bin/python3   # Debian's, with matplotlib

# The --set lines of one optimizer (see the header for the reasons behind each value).
optimizer_overrides() {
  local low_rank="optimizer.rank=32 optimizer.update_proj_gap=50"
  case "$1" in
    adamw) echo "optimizer.name=adamw optimizer.lr=0.003" ;;
    muon) echo "optimizer.name=muon optimizer.lr=0.02 optimizer.adamw_lr=0.003 optimizer.momentum=0.95" ;;
    galore_adamw|plumage|stiefel)
      echo "optimizer.name=$1 optimizer.lr=0.01 optimizer.scale=0.25 optimizer.adamw_lr=0.003 $low_rank" ;;
    gum) echo "optimizer.name=gum optimizer.lr=0.02 optimizer.adamw_lr=0.003 $low_rank optimizer.full_rank_layers=1" ;;
    galore_muon) echo "optimizer.name=galore_muon optimizer.lr=0.02 optimizer.adamw_lr=0.003 $low_rank" ;;
    *) echo "compare_optimizers.sh: no settings for optimizer '$1'" >&2; return 2 ;;
  esac
}
IFS=',' read -r -a optimizer_list <<< "$optimizers"
for name in "${optimizer_list[@]}"; do optimizer_overrides "$name" > /dev/null; done

# One base config for prepare and every run: the given one with its shards in the work folder,
# so that another prepare of data/shards cannot change the data under a running comparison.
mkdir -p "$work_dir" "$out_dir/logs"
config="$work_dir/config.json"
"$python" - "$base_config" "$config" "$work_dir/shards" <<'EOF'
import json, sys
base, target, shard_dir = sys.argv[1:]
config = json.load(open(base))
config.setdefault("data", {})["shard_dir"] = shard_dir
json.dump(config, open(target, "w"), indent=2)
EOF

echo "== corpus and shards"
scripts/make_corpus.sh
"$binary" prepare "$config" 2>&1 | tail -n 5

common_sets=(--set training.threads="$threads" --set eval.every_steps="$eval_every"
             --set eval.max_tokens="$eval_tokens" --set eval.at_end=true --set checkpoint.at_end=true
             --set checkpoint.every_steps=0)
[[ -n "$steps" ]] && common_sets+=(--set training.max_steps="$steps")

# The commit the binary was built from: given, or the checkout's HEAD with uncommitted source
# changes flagged (a binary built from a busy shared checkout may contain them).
if [[ -n "$binary_commit" ]]; then
  commit="$binary_commit (binary built from it; the scripts ran from checkout $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
else
  commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  if [[ -n "$(git status --porcelain -- src include CMakeLists.txt 2>/dev/null)" ]]; then
    commit="$commit (with uncommitted changes in src/ or include/)"
  fi
fi
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
for name in "${optimizer_list[@]}"; do
  run_dir="$work_dir/runs/$name"
  rm -rf "$run_dir"
  mkdir -p "$run_dir"
  sets=("${common_sets[@]}" --set logging.run_dir="$run_dir")
  for assignment in $(optimizer_overrides "$name"); do sets+=(--set "$assignment"); done
  # The caller's --set lines come last so they can change an optimizer's own settings too.
  for assignment in "${extra_sets[@]}"; do sets+=(--set "$assignment"); done
  printf '%s\n' "${sets[@]}" | grep -v '^--set$' > "$run_dir/overrides.txt"
  echo "== $name: $(tr '\n' ' ' < "$run_dir/overrides.txt")"
  run_start=$SECONDS
  if ! "$binary" "$config" "${sets[@]}" --resume never > "$run_dir/train.log" 2>&1; then
    tail -n 20 "$run_dir/train.log" >&2
    echo "compare_optimizers.sh: the $name run failed; its log: $run_dir/train.log" >&2
    exit 1
  fi
  grep -E "eval  step|done:" "$run_dir/train.log" | tail -n 2
  echo "   $((SECONDS - run_start)) s"
  cp "$run_dir/train.log" "$out_dir/logs/$name.log"
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# Resolved base config and the facts needed to reproduce or judge the numbers.
cp "$config" "$out_dir/config.json"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
machine="$cpu, $(nproc) cores, $(uname -sr)"
steps_used="$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["training"]["max_steps"])' "$config")"
[[ -n "$steps" ]] && steps_used="$steps"
{
  echo "command: $original_command"
  echo "commit: $commit"
  echo "started: $started, finished: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "machine: $machine"
  echo "binary: $binary ($("$binary" --version 2>&1 | head -n 1), built $(date -u -r "$binary" +%Y-%m-%dT%H:%M:%SZ))"
  echo "load average (1, 5, 15 min) before: $load_before, after: $load_after"
} > "$out_dir/command.txt"

COMMAND="$original_command" COMMIT="$commit" STARTED="$started" MACHINE="$machine" \
LOAD="1/5/15-min load average $load_before before the runs, $load_after after (the machine has $(nproc) cores); tokens/s are wall-clock and drop under load" \
STEPS="$steps_used" EVAL_TOKENS="$eval_tokens" "$python" - "$out_dir/meta.json" <<'EOF'
import json, os, sys
meta = {
    "title": "llama_tiny (1.79M parameters) on the embedded corpus, CPU",
    "command": os.environ["COMMAND"],
    "commit": os.environ["COMMIT"],
    "date": os.environ["STARTED"],
    "machine": os.environ["MACHINE"],
    "model": "llama_tiny preset: hidden 128, 4 layers, 4 heads (2 KV), MLP 352, vocab 4096 (SentencePiece on the corpus)",
    "data": "embedded corpus (scripts/make_corpus.sh), batch 16 x 128 tokens, same seed and order for every run; "
            "validation: " + ("the whole validation split" if os.environ["EVAL_TOKENS"] == "0"
                              else f"the first {os.environ['EVAL_TOKENS']} tokens of the validation split"),
    "budget": f"{os.environ['STEPS']} steps, cosine schedule with 10% warmup, gradient clipping 1.0; "
              "non-matrix parameters get AdamW lr 3e-3 in every run",
    "load_note": os.environ["LOAD"],
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
"$python" scripts/plot_compare.py --runs "$work_dir/runs" --out "$out_dir" --order "$optimizers" \
  --meta "$out_dir/meta.json"
rm -f "$out_dir/meta.json"   # its content is in results.json and results.md
echo "== wrote $out_dir/results.md, results.json, loss_curves.png"
