"""The reference side of scripts/bench_tokenizer.sh: Hugging Face `tokenizers` encoding every
document of a C4-format corpus one at a time on one thread (RAYON_NUM_THREADS=1), printing the same
JSON line as gum_bench_tokenizer."""
import gzip
import json
import sys
import time

from tokenizers import Tokenizer

tokenizer = Tokenizer.from_file(sys.argv[1])
texts = [json.loads(line)["text"] for line in gzip.open(sys.argv[2], "rt", encoding="utf-8")]
start = time.process_time()  # CPU time: a loaded machine stretches wall time but not this
encoded = [tokenizer.encode(text, add_special_tokens=False).ids for text in texts]
seconds = time.process_time() - start
count = sum(len(text.encode("utf-8")) for text in texts)
tokens, checksum = 0, 0
for ids in encoded:
    tokens += len(ids)
    for i in ids:
        checksum = (checksum * 1000003 + i) & 0xFFFFFFFFFFFFFFFF
print(json.dumps({"implementation": "tokenizers", "documents": len(texts), "bytes": count, "tokens": tokens,
                  "seconds": seconds, "mb_per_s": count / seconds / 1e6, "checksum": str(checksum)}))
