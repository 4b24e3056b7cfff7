#!/usr/bin/env python3
"""The perplexity a unigram model reaches on the validation shards: the bar a trained language
model must clear by far. Token frequencies come from the train shards (add-one smoothing over
the tokenizer's vocabulary); prints {"unigram_loss": x, "unigram_perplexity": y, "tokens": n}.

Usage: unigram_baseline.py SHARD_DIR   (reads train_*.bin and valid_*.bin; layout in
include/gum/data/shard.h: a 64-byte header, then little-endian tokens of 2 or 4 bytes)
"""
import glob
import json
import math
import os
import struct
import sys

import numpy as np


def read_shard(path):
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:8] != b"GUMTOKS\0":
            sys.exit(f"{path}: not a gum_train token shard (bad magic)")
        width, count, vocab = struct.unpack_from("<IQQ", header, 12)
        dtype = np.uint16 if width == 2 else np.uint32
        tokens = np.frombuffer(f.read(count * width), dtype=dtype)
        if tokens.size != count:
            sys.exit(f"{path}: truncated ({tokens.size} of {count} tokens)")
        return tokens, vocab


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    shard_dir = sys.argv[1]
    train = sorted(glob.glob(os.path.join(shard_dir, "train_*.bin")))
    valid = sorted(glob.glob(os.path.join(shard_dir, "valid_*.bin")))
    if not train or not valid:
        sys.exit(f"{shard_dir}: needs train_*.bin and valid_*.bin shards (run gum_train prepare)")
    counts = None
    for path in train:
        tokens, vocab = read_shard(path)
        shard_counts = np.bincount(tokens, minlength=vocab).astype(np.float64)
        counts = shard_counts if counts is None else counts + shard_counts
    log_prob = np.log((counts + 1.0) / (counts.sum() + counts.size))
    total, n = 0.0, 0
    for path in valid:
        tokens, _ = read_shard(path)
        total -= float(log_prob[tokens].sum())
        n += tokens.size
    loss = total / n
    print(json.dumps({"unigram_loss": round(loss, 4), "unigram_perplexity": round(math.exp(loss), 2), "tokens": n}))


if __name__ == "__main__":
    main()
