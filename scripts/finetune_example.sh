#!/usr/bin/env bash
# Fine-tuning end to end on the CPU: the SFT set made from the embedded dictionary
# (scripts/make_sft_data.py -> data/sft), the quickstart's llama_tiny export as the base model
# (made here when missing: the quickstart's corpus, prepare, training and export steps), then
# configs/finetune_tiny_gum.json and configs/finetune_tiny_galore.json, each followed by
# `gum_train sample` on a held-out word. Prints the masked SFT validation loss before and after.
#
#   scripts/finetune_example.sh            200 steps per run (the configs' length)
#   FINETUNE_STEPS=40 scripts/finetune_example.sh   a shorter run
# Output: runs/finetune_tiny_gum/, runs/finetune_tiny_galore/ (metrics.jsonl, checkpoints, sample.txt).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
build="${GUM_BUILD_DIR:-$root/build}"
steps="${FINETUNE_STEPS:-200}"
gum_train="$build/bin/gum_train"
[ -x "$gum_train" ] || "$root/scripts/build.sh"

echo "== SFT data (dict-gcide definitions)"
/usr/bin/python3 "$root/scripts/make_sft_data.py" --out data/sft

base=runs/llama_tiny/hf
if [ ! -f "$base/config.json" ]; then
  if [ ! -f runs/llama_tiny/checkpoints/latest ]; then
    echo "== no base model: pretraining llama_tiny as in scripts/quickstart.sh"
    "$root/scripts/make_corpus.sh"
    "$gum_train" prepare configs/llama_tiny.json
    "$gum_train" configs/llama_tiny.json --resume auto
  fi
  "$gum_train" export --checkpoint runs/llama_tiny/checkpoints --out "$base"
fi

# A word of the validation set: the fine-tuned models never saw its definition. ($(...) drops the
# prompt's final newline, which the training prompts end with: it is put back.)
prompt="$(/usr/bin/python3 -c 'import json; print(json.loads(open("data/sft/gcide_define.valid.jsonl").readline())["prompt"], end="")')"$'\n'

# First and last val_loss of a run's metrics.
val_losses() {
  /usr/bin/python3 - "$1/metrics.jsonl" <<'PY'
import json, sys
evals = [json.loads(line) for line in open(sys.argv[1]) if '"val_loss"' in line]
print("step %d val_loss %.4f -> step %d val_loss %.4f" % (evals[0]["step"], evals[0]["val_loss"], evals[-1]["step"], evals[-1]["val_loss"]))
PY
}

echo "== base model on the prompt"
"$gum_train" sample --hf "$base" --prompt "$prompt" --max-new-tokens 40 | tee runs/llama_tiny/sample_define.txt

summary=""
for name in finetune_tiny_gum finetune_tiny_galore; do
  echo "== fine-tuning: configs/$name.json, $steps steps"
  "$gum_train" "configs/$name.json" --resume never --set "training.max_steps=$steps"
  "$gum_train" sample --checkpoint "runs/$name/checkpoints" --prompt "$prompt" --max-new-tokens 40 |
    tee "runs/$name/sample.txt"
  summary+="$name: $(val_losses "runs/$name")"$'\n'
done
echo
echo "masked SFT validation loss (first -> last evaluation):"
printf "%s" "$summary"
