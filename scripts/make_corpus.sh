#!/usr/bin/env bash
# Builds the embedded English corpus from text that Debian packages install, written in C4's
# format (gzip JSONL with text, timestamp, url) so the quickstart runs the real C4 path:
#   data/corpus/c4-train.00000-of-00001.json.gz
#   data/corpus/c4-validation.00000-of-00001.json.gz
# Sources: fortunes (/usr/share/games/fortunes), dict-gcide (Webster 1913 + GCIDE entries,
# /usr/share/dictd/gcide.dict.dz) and the license texts in /usr/share/common-licenses.
# Deterministic (fixed order, fixed seed, gzip mtime 0) and idempotent: a file whose content
# would not change is left untouched, so `gum_train prepare` keeps its shards.
# Usage: scripts/make_corpus.sh [OUTPUT_DIR]   (default: data/corpus in the repository)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/data/corpus}"
mkdir -p "$out"
exec /usr/bin/python3 - "$out" <<'EOF'
import datetime, gzip, io, json, os, random, re, sys, unicodedata, zlib

out_dir = sys.argv[1]
FORTUNE_DIR = "/usr/share/games/fortunes"
GCIDE_DATA = "/usr/share/dictd/gcide.dict.dz"
GCIDE_INDEX = "/usr/share/dictd/gcide.index"
LICENSE_DIR = "/usr/share/common-licenses"
TARGET_DOC_CHARS = 2000      # short pieces (fortunes, entries) are grouped to about C4's document size
VALIDATION_EVERY = 40        # 1 in 40 documents (by a hash of its url) goes to validation
SHUFFLE_SEED = 1234          # documents are mixed so any prefix samples every source

def timestamp_of(path):
    t = datetime.datetime.fromtimestamp(int(os.stat(path).st_mtime), datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")

def clean_whitespace(text):
    text = text.replace("\r\n", "\n").replace("\t", " ")
    text = re.sub(r".\x08", "", text)                    # overstrike (x BACKSPACE) underlining
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)
    text = re.sub(r"[ ]+\n", "\n", text)
    return text.strip()

def grouped(pieces, url_prefix, timestamp):
    """Joins consecutive (name, text) pieces into documents of about TARGET_DOC_CHARS."""
    docs, buffer, first = [], [], None
    for name, text in pieces:
        if not buffer:
            first = name
        buffer.append(text)
        if sum(len(t) for t in buffer) >= TARGET_DOC_CHARS:
            docs.append({"text": "\n\n".join(buffer), "timestamp": timestamp, "url": url_prefix + first})
            buffer = []
    if buffer:
        docs.append({"text": "\n\n".join(buffer), "timestamp": timestamp, "url": url_prefix + first})
    return docs

def fortune_documents():
    docs = []
    if not os.path.isdir(FORTUNE_DIR):
        print(f"make_corpus: {FORTUNE_DIR} missing (install the 'fortunes' package); skipped", file=sys.stderr)
        return docs
    for name in sorted(os.listdir(FORTUNE_DIR)):
        path = os.path.join(FORTUNE_DIR, name)
        # .dat are indices, .u8 links to the same text; art is pictures, not prose.
        if os.path.islink(path) or "." in name or name in ("art", "ascii-art"):
            continue
        raw = open(path, "rb").read().decode("utf-8", errors="replace")
        pieces = []
        for i, fortune in enumerate(raw.split("\n%\n")):
            fortune = clean_whitespace(fortune.strip("%"))
            if len(fortune) >= 20:
                pieces.append((f"{name}/{i}", fortune))
        docs += grouped(pieces, "fortunes://", timestamp_of(path))
    return docs

DICTD_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
def dictd_number(text):
    value = 0
    for ch in text:
        value = value * 64 + DICTD_B64.index(ch)
    return value

# GCIDE writes accents as [<mark><letter>]: suppl['e]tif -> supplétif.
GCIDE_MARKS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303", "=": "\u0304",
               ",": "\u0327"}
def gcide_accents(text):
    text = re.sub(r"\[([`'^\"~=,])([A-Za-z])\]", lambda m: m.group(2) + GCIDE_MARKS[m.group(1)], text)
    return unicodedata.normalize("NFC", text)

# Source tags of the dictionary's contributors, not text.
GCIDE_TAG = re.compile(r"\[(?:1913 Webster|Webster 1913 Suppl\.|PJC|AS|RN|MW\d*|NRCD|JC|WordNet[^\]]*|Century[^\]]*)\]")

def clean_gcide_entry(entry):
    paragraphs = []
    for block in re.split(r"\n\s*\n", entry):
        lines = [l.strip() for l in block.split("\n")]
        lines = [l for l in lines if l and not re.fullmatch(r"\[[^\]]*\]", l)]   # source tags: [1913 Webster]
        if not lines:
            continue
        text = " ".join(lines)
        text = re.sub(r"\s*\\[^\\\n]*\\", "", text)   # pronunciation: Ab*jure"
        text = re.sub(r"[{}]", "", text)              # cross-reference braces
        text = gcide_accents(GCIDE_TAG.sub("", text))
        text = re.sub(r"\s+", " ", text).strip()
        if text:
            paragraphs.append(text)
    return "\n".join(paragraphs)

def gcide_documents():
    if not (os.path.exists(GCIDE_DATA) and os.path.exists(GCIDE_INDEX)):
        print("make_corpus: dict-gcide missing (install 'dict-gcide'); skipped", file=sys.stderr)
        return []
    data = gzip.open(GCIDE_DATA).read()   # dictzip is gzip with a random-access table
    entries = {}
    for line in open(GCIDE_INDEX, encoding="utf-8", errors="replace"):
        fields = line.rstrip("\n").split("\t")
        if len(fields) < 3 or fields[0].startswith("00"):
            continue                               # 00-database-* are the dictionary's own metadata
        offset, length = dictd_number(fields[1]), dictd_number(fields[2])
        entries.setdefault(offset, (fields[0], length))
    pieces = []
    for offset in sorted(entries):
        headword, length = entries[offset]
        text = clean_gcide_entry(data[offset:offset + length].decode("utf-8", errors="replace"))
        if len(text) >= 20:
            pieces.append((headword.replace(" ", "_"), text))
    return grouped(pieces, "gcide://", timestamp_of(GCIDE_DATA))

def license_documents():
    docs, seen = [], set()
    if not os.path.isdir(LICENSE_DIR):
        return docs
    for name in sorted(os.listdir(LICENSE_DIR)):
        path = os.path.realpath(os.path.join(LICENSE_DIR, name))
        if path in seen or not os.path.isfile(path):
            continue
        seen.add(path)
        text = clean_whitespace(open(path, "rb").read().decode("utf-8", errors="replace"))
        docs.append({"text": text, "timestamp": timestamp_of(path), "url": "license://" + os.path.basename(path)})
    return docs

def write_if_changed(path, docs):
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
        for doc in docs:
            gz.write((json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8"))
    payload = buffer.getvalue()
    if os.path.exists(path) and open(path, "rb").read() == payload:
        return False
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return True

sources = {"fortunes": fortune_documents(), "gcide": gcide_documents(), "licenses": license_documents()}
all_docs = [d for docs in sources.values() for d in docs]
if not all_docs:
    sys.exit("make_corpus: no source text found (install fortunes and dict-gcide)")
train, valid = [], []
for doc in all_docs:
    (valid if zlib.crc32(doc["url"].encode()) % VALIDATION_EVERY == 0 else train).append(doc)
random.Random(SHUFFLE_SEED).shuffle(train)
random.Random(SHUFFLE_SEED + 1).shuffle(valid)

for split, docs in (("train", train), ("validation", valid)):
    path = os.path.join(out_dir, f"c4-{split}.00000-of-00001.json.gz")
    changed = write_if_changed(path, docs)
    chars = sum(len(d["text"]) for d in docs)
    mb = sum(len(d["text"].encode("utf-8")) for d in docs) / 1e6
    print(f"make_corpus: {path}: {len(docs)} documents, {mb:.1f} MB of text, {chars} characters"
          f" ({'written' if changed else 'unchanged'})")
for name, docs in sources.items():
    print(f"make_corpus: source {name}: {len(docs)} documents, "
          f"{sum(len(d['text'].encode('utf-8')) for d in docs) / 1e6:.1f} MB")
EOF
