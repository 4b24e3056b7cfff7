#!/usr/bin/python3
"""Makes a small supervised fine-tuning set from Debian's dict-gcide (Webster 1913 + GCIDE):

    {"prompt": "Define: candle\\n", "completion": "A slender, cylindrical body of tallow, ..."}

one line per headword (its first sense, first sentence), written as JSONL to
    OUT_DIR/gcide_define.train.jsonl   and   OUT_DIR/gcide_define.valid.jsonl (1 in 20 words)
Deterministic: the same dictionary gives byte-identical files (words are chosen and split by a CRC
of the word, not by a random generator). Standard library only; run with /usr/bin/python3.

Usage: scripts/make_sft_data.py [--out data/sft] [--count 4000]
"""
import argparse
import gzip
import json
import os
import re
import sys
import zlib

GCIDE_DATA = "/usr/share/dictd/gcide.dict.dz"
GCIDE_INDEX = "/usr/share/dictd/gcide.index"
VALID_EVERY = 20
MAX_DEFINITION_CHARS = 240
BASE64_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def index_number(text):
    """dictd index offsets and lengths are base-64 numbers, most significant digit first."""
    value = 0
    for digit in text:
        value = value * 64 + BASE64_DIGITS.index(digit)
    return value


def first_entries(index_path):
    """headword -> (offset, length) of its first entry, for plain lowercase words."""
    entries = {}
    with open(index_path, encoding="utf-8", errors="replace") as index:
        for line in index:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 3 or not re.fullmatch(r"[a-z]{3,16}", fields[0]):
                continue  # metadata (00-database-*), phrases, proper nouns, numbers
            entries.setdefault(fields[0], (index_number(fields[1]), index_number(fields[2])))
    return entries


def first_definition(entry):
    """The first sentence of the first sense of a GCIDE entry, or None when there is none to take."""
    lines = [l.strip() for l in entry.split("\n")]
    text = " ".join(l for l in lines if l and not re.fullmatch(r"\[[^\]]*\]", l))
    text = re.sub(r"\[([`'^\"~=,.])([A-Za-z])\]", r"\2", text)  # accents: cand["e]re -> candere
    text = re.sub(r"^.*?\\[^\\]*\\", "", text, count=1)  # headword and pronunciation \Can"dle\
    text = re.sub(r"\([^()]*\)", "", text)  # field labels (Zool.) and sound notes
    text = re.sub(r"\[[^\[\]]*\]", "", text)  # etymology [L. candela ...]
    text = re.sub(r"[{}]", "", text)  # cross-reference braces
    numbered = re.search(r"(?:^|\s)1\.\s+(.*)", text)
    if numbered:
        text = numbered.group(1)
    else:
        text = re.sub(r"^[\s,]*(?:(?:[a-z]+\.|&)\s*)+", "", text)  # part of speech: ", v. t."
    text = re.split(r"(?:\s--|\s2\.\s|Syn:|Note:|\[)", text)[0]
    match = re.match(r"(.+?[.;])(?:\s|$)", text)
    if not match:
        return None
    definition = re.sub(r"\s+", " ", match.group(1)).strip().rstrip(";") + "."
    definition = definition.replace("..", ".")
    if not (12 <= len(definition) <= MAX_DEFINITION_CHARS) or not definition[0].isupper():
        return None
    if re.search(r"[\\\"=*]|See |Same as", definition):
        return None  # leftovers of markup, or a pointer instead of a definition
    return definition


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--out", default=os.path.join(root, "data", "sft"))
    parser.add_argument("--count", type=int, default=4000, help="examples to keep (train + valid)")
    args = parser.parse_args()
    if not (os.path.exists(GCIDE_DATA) and os.path.exists(GCIDE_INDEX)):
        sys.exit("make_sft_data: dict-gcide is not installed (scripts/install_deps.sh installs it)")

    data = gzip.open(GCIDE_DATA).read()  # dictzip is gzip with a random-access table
    examples = []
    for word, (offset, length) in first_entries(GCIDE_INDEX).items():
        definition = first_definition(data[offset : offset + length].decode("utf-8", errors="replace"))
        if definition:
            examples.append((zlib.crc32(word.encode()), word, definition))
    # The CRC order mixes the alphabet, so any count samples every letter.
    examples.sort()
    examples = examples[: args.count]

    os.makedirs(args.out, exist_ok=True)
    counts = {"train": 0, "valid": 0}
    files = {split: open(os.path.join(args.out, f"gcide_define.{split}.jsonl"), "w", encoding="utf-8")
             for split in counts}
    for crc, word, definition in examples:
        split = "valid" if (crc >> 8) % VALID_EVERY == 0 else "train"
        line = {"prompt": f"Define: {word}\n", "completion": definition}
        files[split].write(json.dumps(line, ensure_ascii=False) + "\n")
        counts[split] += 1
    for f in files.values():
        f.close()
    print(f"make_sft_data: {counts['train']} train and {counts['valid']} valid examples in {args.out}")


if __name__ == "__main__":
    main()
