"""Reference encodings from Hugging Face `tokenizers` for the tokenizer.json exactness test.

  python hf_tokenizer_cases.py OUT_DIR CORPUS_JSONL_GZ [LLAMA3_TOKENIZER_JSON]

Writes OUT_DIR/<kind>/tokenizer.json and OUT_DIR/<kind>/cases.tsv for each kind:
  llama3      the real Llama 3.2 file (when its path is given)
  qwen2       byte-level BPE trained here with Qwen2's normalizer (NFC) and pre-tokenizer
  gpt2        byte-level BPE trained here with GPT-2's pre-tokenizer and an NFC normalizer
  llama2      SentencePiece-style BPE with byte fallback (Llama 2's normalizer and decoder)
  metaspace   the same model with the Metaspace pre-tokenizer (newer Llama 2 / Mistral files)
cases.tsv lines:
  T <prefix ids> <suffix ids>        what the post-processor adds around one sequence
  E <input hex> <ids> <decoded hex>  encode(input) == ids (no specials added), decode(ids) == decoded
  D <ids> <decoded hex>              decode only (random ids: partial UTF-8, byte tokens)
The input is bytes, possibly ill-formed UTF-8: the reference encodes its lossy decoding, as a
caller holding those bytes would have to.
"""
import gzip
import json
import os
import random
import shutil
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
CORPUS_LINES = 16000
WHOLE_DOCUMENTS = 300


def corpus(path):
    lines, documents = [], []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for row in f:
            text = json.loads(row)["text"]
            if len(documents) < WHOLE_DOCUMENTS:
                documents.append(text)
            lines.extend(text.split("\n"))
            if len(lines) >= CORPUS_LINES:
                break
    return lines[:CORPUS_LINES], documents


def generated(rng, specials):
    """Hand-picked hard cases, then random mixes of scripts, marks, spaces, digits and specials."""
    cases = [
        "", " ", "  ", "\n", "\n\n\n", "\t", " \t\n ", "a", "hello world", " hello  world ", "don't I'll we'VE it's",
        "DON'T YOU'LL", "12345678901234567890", "3.14159 and 1,000,000", "ａｂｃ１２３", "ﬁne ﬂour",
        "日本語のテキストです。", "中文文本，还有标点！", "한국어 텍스트", "Ελληνικά κείμενα", "Русский текст",
        "עברית", "العربية", "हिन्दी", "ภาษาไทย", "emoji 😀👍🏽👨‍👩‍👧‍👦🇫🇷", "e\u0301 a\u0300 n\u0303",
        "Å vs A\u030a", "\u1e9b\u0323", "zero\u200bwidth", "nbsp\u00a0here", "nel\u0085line", "line\u2028sep",
        "ideographic\u3000space", "tab\tand\rreturn\r\n", "    indented code():\n        return 1\n",
        "ends with spaces   ", "\u00ad soft hyphen", "\x00\x01\x7f control", "a" * 300, "ab" * 500,
        " ".join(["word"] * 200), "😀" * 50, "\U0010ffff\ue000", "<s>", "</s>", "<unk>", "<0x41>",
    ]
    pieces = ["the", " ", "  ", "\n", "\t", "é", "e\u0301", "日本", "😀", "👍🏽", "123", "4567", "'s", "'LL", "?!",
              "...", "\u0085", "\u00a0", "Ω", "ß", "İ", "ǅ", "x", "\r\n", "—", "$", "_", "ℌ", "①", "½"]
    for _ in range(7000):
        cases.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))))
    for token in specials:
        cases += [token, f"Hello{token}world", f"Hello {token} world", f" {token}  ", f"{token}{token}",
                  f"x\n{token}\ny", f"{rng.choice(specials)}text{token}"]
    return cases


def invalid_utf8(rng):
    """Byte strings that are not UTF-8: truncated sequences, lone continuation bytes, surrogates."""
    out = [b"\xff", b"abc\x80def", b"\xe6\x97", b"\xe6\x97\xa5\xe6", b"\xed\xa0\x80x", b"\xf0\x90\x80",
           b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xe0\x80\x80", b"ok \xf0\x9f\x98 done", b"\xc3"]
    for _ in range(300):
        raw = bytearray("mixé 日本 😀".encode())
        raw.insert(rng.randrange(len(raw) + 1), rng.randrange(128, 256))
        out.append(bytes(raw))
    return out


def byte_level_tokenizer(kind, train_text):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    if kind == "qwen2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        specials = ["<|endoftext|>"]
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=3000, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(train_text, trainer)
    # Added tokens with every matching option: lstrip, rstrip, single_word, normalized.
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False), AddedToken("<sep>", rstrip=True)])
    tok.add_tokens([AddedToken("yes", single_word=True), AddedToken("Ångström", normalized=True),
                    AddedToken("cafe\u0301", normalized=False)])
    return tok


def byte_fallback_tokenizer(kind, train_text):
    """Trains a BPE with Metaspace words, then lays it out as a SentencePiece conversion does: <unk>,
    <s>, </s>, the 256 byte tokens, then the pieces."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=120,
                                  show_progress=False)
    tok.train_from_iterator(train_text, trainer)
    spec = json.loads(tok.to_str())
    trained = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in trained:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    spec["model"]["vocab"] = vocab
    spec["added_tokens"] = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                             "normalized": False, "special": True} for c, i in (("<unk>", 0), ("<s>", 1), ("</s>", 2))]
    if kind == "llama2":
        spec["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
        spec["pre_tokenizer"] = None
    else:
        spec["normalizer"] = None
        spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    return Tokenizer.from_str(json.dumps(spec))


def write_cases(tok, out_dir, texts, raw_cases, rng):
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    empty = tok.encode("", add_special_tokens=True).ids
    assert tok.encode("", add_special_tokens=False).ids == []
    inputs = [t.encode("utf-8") for t in texts] + raw_cases
    decoded_inputs = [b.decode("utf-8", errors="replace") for b in inputs]
    encodings = tok.encode_batch(decoded_inputs, add_special_tokens=False)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    with open(os.path.join(out_dir, "cases.tsv"), "w") as f:
        # A single sequence's specials: everything around the ids of a one-token text.
        probe = tok.encode("a", add_special_tokens=True).ids
        inner = tok.encode("a", add_special_tokens=False).ids
        at = next(i for i in range(len(probe)) if probe[i:i + len(inner)] == inner)
        assert empty == probe[:at] + probe[at + len(inner):]
        f.write(f"T\t{' '.join(map(str, probe[:at]))}\t{' '.join(map(str, probe[at + len(inner):]))}\n")
        for raw, enc in zip(inputs, encodings):
            decoded = tok.decode(enc.ids, skip_special_tokens=False)
            f.write(f"E\t{raw.hex()}\t{' '.join(map(str, enc.ids))}\t{decoded.encode('utf-8').hex()}\n")
        for _ in range(1000):
            ids = [rng.randrange(vocab_size) for _ in range(rng.randint(1, 8))]
            decoded = tok.decode(ids, skip_special_tokens=False)
            f.write(f"D\t{' '.join(map(str, ids))}\t{decoded.encode('utf-8').hex()}\n")
    return len(inputs)


def main():
    out, corpus_path = sys.argv[1], sys.argv[2]
    llama3 = sys.argv[3] if len(sys.argv) > 3 else None
    lines, documents = corpus(corpus_path)
    rng = random.Random(20240)
    raw = invalid_utf8(rng)
    kinds = {}
    if llama3:
        kinds["llama3"] = Tokenizer.from_file(llama3)
    train_text = lines[:8000]
    kinds["qwen2"] = byte_level_tokenizer("qwen2", train_text)
    kinds["gpt2"] = byte_level_tokenizer("gpt2", train_text)
    kinds["llama2"] = byte_fallback_tokenizer("llama2", train_text)
    kinds["metaspace"] = byte_fallback_tokenizer("metaspace", train_text)
    for kind, tok in kinds.items():
        specials = [t.content for t in tok.get_added_tokens_decoder().values()]
        texts = lines + documents + generated(random.Random(7), specials)
        count = write_cases(tok, os.path.join(out, kind), texts, raw, rng)
        print(f"{kind}: {count} strings")


if __name__ == "__main__":
    main()
