#include <catch2/catch.hpp>

#include "data_test_util.h"
#include "gum/core/error.h"
#include "gum/data/checksum.h"
#include "gum/data/tokenizer.h"

using namespace gum;
using gum_test::fresh_dir;

namespace {

std::vector<std::string> generated_sentences(int count, uint64_t seed) {
  PhiloxStream rng(seed, 0);
  std::vector<std::string> sentences;
  for (int i = 0; i < count; ++i) sentences.push_back(gum_test::generated_sentence(rng));
  return sentences;
}

}  // namespace

TEST_CASE("train a tokenizer, encode and decode round trip") {
  auto dir = fresh_dir("tokenizer_train");
  const std::string path = (dir / "tok.model").string();
  for (const char* model_type : {"unigram", "bpe"}) {
    INFO(model_type);
    TokenizerTrainOptions options;
    options.vocab_size = 150;
    options.model_type = model_type;
    options.character_coverage = 1.0;
    options.num_threads = 2;
    train_tokenizer(generated_sentences(3000, 1), options, path);
    // The model comes back in memory: no stray files next to it.
    CHECK_FALSE(std::filesystem::exists(path + ".vocab"));
    CHECK_FALSE(std::filesystem::exists(path + ".tmp"));

    Tokenizer tokenizer(path);
    CHECK(tokenizer.vocab_size() == 150);
    CHECK(tokenizer.unk_id() == 0);
    CHECK(tokenizer.bos_id() == 1);
    CHECK(tokenizer.eos_id() == 2);
    CHECK(tokenizer.pad_id() == -1);
    CHECK(tokenizer.fingerprint() == checksum64_file(path));
    CHECK(tokenizer.piece(tokenizer.eos_id()) == "</s>");

    for (const std::string& text : generated_sentences(50, 99)) {
      std::vector<int32_t> ids = tokenizer.encode(text);
      REQUIRE_FALSE(ids.empty());
      for (int32_t id : ids) REQUIRE((id >= 0 && id < 150));
      CHECK(tokenizer.decode(ids) == text);
    }
    // Characters never seen in training map to unk instead of failing.
    std::vector<int32_t> unknown = tokenizer.encode("zebra \xe6\x97\xa5");
    CHECK(std::count(unknown.begin(), unknown.end(), tokenizer.unk_id()) >= 1);
    CHECK_THROWS_WITH(tokenizer.decode({5, 150}), Catch::Contains("150"));
  }
}

TEST_CASE("tokenizer fingerprints differ between models and bad files are refused") {
  auto dir = fresh_dir("tokenizer_fingerprint");
  TokenizerTrainOptions options;
  options.vocab_size = 150;
  options.num_threads = 2;
  train_tokenizer(generated_sentences(2000, 1), options, (dir / "a.model").string());
  options.vocab_size = 120;
  train_tokenizer(generated_sentences(2000, 1), options, (dir / "b.model").string());
  CHECK(Tokenizer((dir / "a.model").string()).fingerprint() != Tokenizer((dir / "b.model").string()).fingerprint());

  gum_test::write_text(dir / "junk.model", "this is not a protobuf");
  CHECK_THROWS_WITH(Tokenizer((dir / "junk.model").string()), Catch::Contains("junk.model"));
  CHECK_THROWS_WITH(Tokenizer((dir / "missing.model").string()), Catch::Contains("missing.model"));
  options.model_type = "wordpiece";
  CHECK_THROWS_WITH(train_tokenizer({"x"}, options, (dir / "c.model").string()), Catch::Contains("wordpiece"));
  options.model_type = "unigram";
  CHECK_THROWS_AS(train_tokenizer({}, options, (dir / "c.model").string()), Error);
}

TEST_CASE("a trained tokenizer encodes whole documents in word-sized pieces and decodes them exactly") {
  auto dir = fresh_dir("tokenizer_documents");
  TokenizerTrainOptions options;
  options.vocab_size = 180;
  options.character_coverage = 1.0;  // every capital letter too: decoding is then exact
  options.num_threads = 2;
  train_tokenizer(generated_sentences(4000, 3), options, (dir / "t.model").string());
  Tokenizer tokenizer((dir / "t.model").string());
  PhiloxStream rng(5, 0);
  size_t bytes = 0, tokens = 0;
  for (int d = 0; d < 20; ++d) {
    const std::string doc = gum_test::generated_document(rng, 20);
    const std::vector<int32_t> ids = tokenizer.encode(doc);
    CHECK(tokenizer.decode(ids) == doc);
    bytes += doc.size();
    tokens += ids.size();
  }
  // Measured: 5.1 bytes per token (the generator's 57 words fit in 180 pieces, so most are one
  // piece); a tokenizer that fell back to single characters gives about 1.
  INFO(bytes << " bytes in " << tokens << " tokens");
  CHECK(static_cast<double>(bytes) / static_cast<double>(tokens) > 3.0);
}

TEST_CASE("a corpus too small for the requested vocabulary gives a smaller tokenizer") {
  auto dir = fresh_dir("tokenizer_small");
  TokenizerTrainOptions options;
  options.vocab_size = 5000;
  options.num_threads = 2;
  train_tokenizer(generated_sentences(500, 4), options, (dir / "small.model").string());
  Tokenizer tokenizer((dir / "small.model").string());
  CHECK(tokenizer.vocab_size() < 5000);
  CHECK(tokenizer.vocab_size() > 50);
  const std::string text = "The model learns from data.";
  CHECK(tokenizer.decode(tokenizer.encode(text)) == text);
}
