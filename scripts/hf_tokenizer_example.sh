#!/usr/bin/env bash
# Pretraining from raw text with a Hugging Face tokenizer.json instead of a SentencePiece model:
# a Qwen2-style byte-level BPE (4096 tokens, NFC, Qwen2's pre-tokenizer regex) is trained with the
# `tokenizers` library (in the test venv, build/hf_venv) on the embedded corpus, then `gum_train
# prepare` tokenizes the corpus with it, llama_tiny trains for a few steps, `sample` continues a
# prompt and `export` writes a folder with the same tokenizer.json.
#   scripts/hf_tokenizer_example.sh            40 steps
#   EXAMPLE_STEPS=200 scripts/hf_tokenizer_example.sh
# Output: runs/hf_tokenizer_example/ (tokenizer.json, config.json, shards/, checkpoints/, hf/).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
build="${GUM_BUILD_DIR:-$root/build}"
steps="${EXAMPLE_STEPS:-40}"
gum_train="$build/bin/gum_train"
[ -x "$gum_train" ] || "$root/scripts/build.sh"
[ -f data/corpus/c4-train.00000-of-00001.json.gz ] || "$root/scripts/make_corpus.sh"
python=$(bash "$root/tests/reference/setup_hf_venv.sh" "$build/hf_venv")
out=runs/hf_tokenizer_example
mkdir -p "$out"

echo "== training a byte-level BPE tokenizer.json with Hugging Face tokenizers"
"$python" - "$out/tokenizer.json" <<'PY'
import gzip, json, sys
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
qwen2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
         r"|\s+(?!\S)|\s+")
tok = Tokenizer(models.BPE())
tok.normalizer = normalizers.NFC()
tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(qwen2), behavior="isolated"),
                                             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
tok.decoder = decoders.ByteLevel()
tok.post_processor = processors.ByteLevel(trim_offsets=False)
texts = [json.loads(l)["text"] for l in gzip.open("data/corpus/c4-train.00000-of-00001.json.gz", "rt")][:3000]
tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=4096, special_tokens=["<|endoftext|>"],
                                                   initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                   show_progress=False))
tok.save(sys.argv[1])
print(f"{sys.argv[1]}: {tok.get_vocab_size()} tokens")
PY

# llama_tiny with this tokenizer (its <|endoftext|> ends every document) and its own shards.
/usr/bin/python3 - "$out" "$steps" <<'PY'
import json, sys
out, steps = sys.argv[1], int(sys.argv[2])
config = json.load(open("configs/llama_tiny.json"))
config["data"]["tokenizer"] = f"{out}/tokenizer.json"
config["data"]["shard_dir"] = f"{out}/shards"
config["training"]["max_steps"] = steps
config["eval"]["every_steps"] = steps
config["checkpoint"] = {"every_steps": steps, "keep_last": 1}
config["logging"]["run_dir"] = out
json.dump(config, open(f"{out}/config.json", "w"), indent=2)
PY
echo "== prepare (tokenizing the corpus with tokenizer.json)"
"$gum_train" prepare "$out/config.json"
echo "== training llama_tiny for $steps steps"
"$gum_train" "$out/config.json"
echo "== sample"
"$gum_train" sample --checkpoint "$out/checkpoints" --tokenizer "$out/tokenizer.json" --prompt "The meaning of" \
  --max-new-tokens 24
echo "== export"
"$gum_train" export --checkpoint "$out/checkpoints" --out "$out/hf"
ls "$out/hf"
