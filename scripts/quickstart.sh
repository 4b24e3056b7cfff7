#!/usr/bin/env bash
# The whole path on one CPU machine in a few minutes: dependencies, build, the embedded C4-format
# corpus, a tokenizer and token shards, the perplexity of the untrained llama_tiny, training on
# the CPU, and the perplexity after. Output: runs/llama_tiny/ (metrics.jsonl, checkpoints,
# loss.png). Re-running continues from the newest checkpoint; pass --fresh to start over.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
build="${GUM_BUILD_DIR:-$root/build}"
config=configs/llama_tiny.json
resume=auto
[ "${1:-}" = "--fresh" ] && resume=never

"$root/scripts/install_deps.sh"
"$root/scripts/build.sh"
"$root/scripts/make_corpus.sh"
gum_train="$build/bin/gum_train"

echo "== tokenizer and shards"
"$gum_train" prepare "$config"

# The last line of `gum_train eval` is {"tokens": N, "loss": x, "perplexity": y}.
perplexity_of() { tail -n 1 | /usr/bin/python3 -c 'import json, sys; print("%.2f" % json.load(sys.stdin)["perplexity"])'; }
eval_tokens=32768

run_dir=runs/llama_tiny
mkdir -p "$run_dir"
echo "== untrained model"
"$gum_train" eval "$config" --max-tokens "$eval_tokens" | tee "$run_dir/eval_before.txt"
before=$(perplexity_of < "$run_dir/eval_before.txt")

echo "== training llama_tiny on the CPU"
"$gum_train" "$config" --resume "$resume"

echo "== trained model"
"$gum_train" eval "$config" --checkpoint "$run_dir/checkpoints" --max-tokens "$eval_tokens" |
  tee "$run_dir/eval_after.txt"
after=$(perplexity_of < "$run_dir/eval_after.txt")

echo "== Hugging Face export and a sample from the trained model"
"$gum_train" export --checkpoint "$run_dir/checkpoints" --out "$run_dir/hf"
"$gum_train" sample --checkpoint "$run_dir/checkpoints" --prompt "The meaning of" --max-new-tokens 32 \
  --temperature 0.8 --top-p 0.9 --seed 7 | tee "$run_dir/sample.txt"

if ! /usr/bin/python3 "$root/scripts/plot_metrics.py" "$run_dir" -o "$run_dir/loss.png"; then
  echo "warning: the loss plot could not be drawn (python3-matplotlib missing?)" >&2
fi
# The bar to clear: the perplexity of token frequencies alone (a unigram model).
unigram=$(/usr/bin/python3 "$root/scripts/unigram_baseline.py" data/shards |
  /usr/bin/python3 -c 'import json, sys; print("%.2f" % json.load(sys.stdin)["unigram_perplexity"])')
echo
echo "validation perplexity ($eval_tokens tokens): before training $before, after training $after (unigram baseline $unigram)"
echo "metrics: $run_dir/metrics.jsonl  plot: $run_dir/loss.png  checkpoints: $run_dir/checkpoints  Hugging Face folder: $run_dir/hf"
