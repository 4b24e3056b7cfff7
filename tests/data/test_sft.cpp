// SFT data: loss masking, chat templates, pre-tokenized input, truncation, packing with
// attention boundaries, padding, resumable deterministic order, errors naming file and line.
#include <zlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "gum/core/error.h"
#include "gum/data/sft_format.h"
#include "gum/data/sft_loader.h"
#include "gum/data/tokenizer.h"

using namespace gum;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

// One token per byte: id = 3 + byte, pad 0, bos 1, eos 2. Token boundaries are then exact.
constexpr int32_t kPad = 0, kBos = 1, kEos = 2;
int32_t byte_token(char c) { return 3 + static_cast<unsigned char>(c); }

TextEncoder byte_encoder() {
  TextEncoder e;
  e.encode = [](std::string_view text) {
    std::vector<int32_t> ids;
    for (char c : text) ids.push_back(byte_token(c));
    return ids;
  };
  e.bos_id = kBos;
  e.eos_id = kEos;
  e.pad_id = kPad;
  e.vocab_size = 259;
  return e;
}

std::vector<int32_t> bytes_of(const std::string& s) {
  std::vector<int32_t> ids;
  for (char c : s) ids.push_back(byte_token(c));
  return ids;
}

fs::path temp_dir(const std::string& name) {
  fs::path dir = fs::path(GUM_BINARY_DIR) / "test_tmp" / "sft" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write_lines(const fs::path& path, const std::vector<std::string>& lines) {
  std::ofstream out(path);
  for (const auto& line : lines) out << line << "\n";
}

// An example of `n` tokens whose every label after the first is trained; tokens encode `tag`.
SftExample numbered_example(int tag, int n) {
  SftExample ex;
  for (int i = 0; i < n; ++i) {
    ex.tokens.push_back(3 + tag * 10 + i);
    ex.labels.push_back(i == 0 ? -1 : 3 + tag * 10 + i);
  }
  return ex;
}

SftConfig in_memory_config(SftLayout layout, bool shuffle) {
  SftConfig c;
  c.layout = layout;
  c.shuffle = shuffle;
  c.seed = 7;
  return c;
}

}  // namespace

TEST_CASE("prompt/completion: loss only on the completion and the EOS", "[sft]") {
  SftConfig config;
  SftExample ex = sft_example_from_json({{"prompt", "Q:ab\n"}, {"completion", "cd"}, {"id", 17}}, config,
                                        byte_encoder(), "f.jsonl:1");
  std::vector<int32_t> tokens = {kBos};
  for (int32_t t : bytes_of("Q:ab\ncd")) tokens.push_back(t);
  tokens.push_back(kEos);
  CHECK(ex.tokens == tokens);
  std::vector<int32_t> labels(tokens.size(), -1);
  labels[6] = byte_token('c');
  labels[7] = byte_token('d');
  labels[8] = kEos;
  CHECK(ex.labels == labels);

  config.add_bos = false;
  config.add_eos = false;
  config.prompt_field = "question";
  config.completion_field = "answer";
  ex = sft_example_from_json({{"question", "x"}, {"answer", "y"}}, config, byte_encoder(), "f.jsonl:2");
  CHECK(ex.tokens == bytes_of("xy"));
  CHECK(ex.labels == std::vector<int32_t>{-1, byte_token('y')});
}

TEST_CASE("chat template: per-role prefix/suffix, trained roles, EOS after each trained turn", "[sft]") {
  nlohmann::json messages = nlohmann::json::parse(R"([
    {"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "yo"}, {"role": "user", "content": "?"},
    {"role": "assistant", "content": "!"}])");
  std::vector<SftSegment> segments = render_chat(messages, ChatTemplate::default_template(), "f:1");
  std::string rendered, trained;
  for (const auto& s : segments) {
    rendered += s.text;
    if (s.trained) trained += s.text;
  }
  CHECK(rendered == "### System:\nS\n\n### User:\nhi\n\n### Assistant:\nyo\n\n### User:\n?\n\n### Assistant:\n!\n\n");
  CHECK(trained == "yo\n\n!\n\n");

  SftConfig config = sft_config_from_json(nlohmann::json::parse(R"({
      "chat_template": {"roles": {"user": {"prefix": "<u>", "suffix": "</u>"},
                                  "assistant": {"prefix": "<a>", "suffix": "</a>"}}}})"),
                                          "cfg.json");
  nlohmann::json no_system = nlohmann::json::parse(R"({"messages": [
    {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
    {"role": "user", "content": "?"}, {"role": "assistant", "content": "!"}]})");
  SftExample ex = sft_example_from_json(no_system, config, byte_encoder(), "f:1");
  std::vector<int32_t> tokens = {kBos}, labels = {-1};
  auto add = [&](const std::string& text, bool train) {
    for (int32_t t : bytes_of(text)) {
      tokens.push_back(t);
      labels.push_back(train ? t : -1);
    }
  };
  add("<u>hi</u><a>", false);
  add("yo</a>", true);
  tokens.push_back(kEos);
  labels.push_back(kEos);
  add("<u>?</u><a>", false);
  add("!</a>", true);
  tokens.push_back(kEos);
  labels.push_back(kEos);
  CHECK(ex.tokens == tokens);
  CHECK(ex.labels == labels);

  // Training the user turns too.
  config = sft_config_from_json(
      nlohmann::json::parse(R"({"chat_template": {"trained_roles": ["user", "assistant"]}, "add_eos": false})"), "c");
  ex = sft_example_from_json(no_system, config, byte_encoder(), "f:1");
  int untrained = static_cast<int>(std::count(ex.labels.begin(), ex.labels.end(), -1));
  // Only BOS and the prefixes stay untrained: 2 x "### User:\n" and 2 x "### Assistant:\n".
  CHECK(untrained == 1 + 2 * 10 + 2 * 15);
}

TEST_CASE("chat errors name the file, line and message", "[sft]") {
  SftConfig config;
  CHECK_THROWS_WITH(sft_example_from_json(nlohmann::json::parse(R"({"messages": [{"role": "tool", "content": "x"}]})"),
                                          config, byte_encoder(), "chat.jsonl:4"),
                    Contains("chat.jsonl:4") && Contains("messages[0]") && Contains("'tool'"));
  CHECK_THROWS_WITH(sft_example_from_json(nlohmann::json::parse(R"({"messages": [{"role": "user"}]})"), config,
                                          byte_encoder(), "chat.jsonl:5"),
                    Contains("chat.jsonl:5") && Contains("content"));
  CHECK_THROWS_WITH(
      sft_config_from_json(nlohmann::json::parse(R"({"chat_template": {"trained_roles": ["bot"]}})"), "cfg.json"),
      Contains("cfg.json") && Contains("data.sft.chat_template.trained_roles") && Contains("'bot'"));
}

TEST_CASE("pre-tokenized input: labels -100 are ignored, absent labels train everything", "[sft]") {
  SftConfig config;
  SftExample ex =
      sft_example_from_json(nlohmann::json::parse(R"({"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8]})"),
                            config, byte_encoder(), "t:1");
  CHECK(ex.tokens == std::vector<int32_t>{5, 6, 7, 8});
  CHECK(ex.labels == std::vector<int32_t>{-1, -1, 7, 8});
  ex = sft_example_from_json(nlohmann::json::parse(R"({"input_ids": [5, 6]})"), config, byte_encoder(), "t:2");
  CHECK(ex.labels == std::vector<int32_t>{5, 6});
  CHECK_THROWS_WITH(sft_example_from_json(nlohmann::json::parse(R"({"input_ids": [5, 6], "labels": [5]})"), config,
                                          byte_encoder(), "t:3"),
                    Contains("t:3") && Contains("labels"));
  CHECK_THROWS_WITH(
      sft_example_from_json(nlohmann::json::parse(R"({"input_ids": [5, 900]})"), config, byte_encoder(), "t:4"),
      Contains("t:4") && Contains("input_ids[1]") && Contains("900"));
  CHECK_THROWS_WITH(
      sft_example_from_json(nlohmann::json::parse(R"({"input_ids": [5, "a"]})"), config, byte_encoder(), "t:5"),
      Contains("t:5") && Contains("input_ids[1]"));
  // Pre-tokenized data needs no tokenizer; text does.
  TextEncoder ids_only;
  ids_only.vocab_size = 10;
  CHECK_NOTHROW(sft_example_from_json(nlohmann::json::parse(R"({"input_ids": [1, 2]})"), config, ids_only, "t:6"));
  CHECK_THROWS_WITH(
      sft_example_from_json({{"prompt", "a"}, {"completion", "b"}}, config, ids_only, "t:7"),
      Contains("t:7") && Contains("tokenizer.model") && Contains("pre-tokenized") && Contains("input_ids"));
}

TEST_CASE("truncation keeps seq_len + 1 tokens or drops, and both are counted", "[sft]") {
  auto make = [] {
    return std::vector<SftExample>{numbered_example(0, 5), numbered_example(1, 9), numbered_example(2, 6),
                                   numbered_example(3, 12)};
  };
  SftConfig config = in_memory_config(SftLayout::Pack, false);
  SftDataset truncated(make(), config, byte_encoder(), 5);  // at most 6 tokens
  CHECK(truncated.size() == 4);
  CHECK(truncated.stats().truncated == 2);
  CHECK(truncated.stats().dropped_too_long == 0);
  CHECK(truncated.example(1).tokens.size() == 6);
  CHECK(truncated.example(1).tokens == std::vector<int32_t>{13, 14, 15, 16, 17, 18});
  CHECK(truncated.stats().tokens == 5 + 6 + 6 + 6);
  CHECK(truncated.stats().trained_tokens == 4 + 5 + 5 + 5);

  config.truncation = SftTruncation::Drop;
  SftDataset dropped(make(), config, byte_encoder(), 5);
  CHECK(dropped.size() == 2);
  CHECK(dropped.stats().dropped_too_long == 2);
  CHECK(dropped.stats().lines == 4);

  // A completion that truncation cuts away entirely leaves nothing to train on.
  SftExample long_prompt;
  for (int i = 0; i < 10; ++i) {
    long_prompt.tokens.push_back(3 + i);
    long_prompt.labels.push_back(i < 8 ? -1 : 3 + i);
  }
  config.truncation = SftTruncation::Truncate;
  SftDataset cut({long_prompt, numbered_example(1, 3)}, config, byte_encoder(), 5);
  CHECK(cut.size() == 1);
  CHECK(cut.stats().dropped_untrained == 1);
}

TEST_CASE("an example trained only on its first token is dropped: nothing predicts that token", "[sft]") {
  SftExample first_only;  // labels[0] is trained, but no position has the first token as its target
  first_only.tokens = {5, 6, 7};
  first_only.labels = {5, -1, -1};
  SftExample single_token;  // pre-tokenized without labels: trains everything, which is nothing here
  single_token.tokens = {5};
  single_token.labels = {5};
  SftDataset data({first_only, single_token, numbered_example(1, 3)}, in_memory_config(SftLayout::Pack, false),
                  byte_encoder(), 8);
  CHECK(data.size() == 1);
  CHECK(data.stats().dropped_untrained == 2);
  CHECK(data.stats().trained_tokens == 2);
  CHECK(data.example(0).tokens == numbered_example(1, 3).tokens);
}

TEST_CASE("packing: positions restart, doc_start marks each example, no target crosses examples", "[sft]") {
  std::vector<SftExample> examples;
  for (int i = 0; i < 7; ++i) examples.push_back(numbered_example(i, 3 + i % 3));  // 3, 4, 5 tokens
  SftDataset data(examples, in_memory_config(SftLayout::Pack, false), byte_encoder(), 8);
  SftLoader loader(data);
  SftBatch batch;
  loader.next_batch(3, 0, 1, batch);
  REQUIRE(batch.rows == 3);
  REQUIRE(batch.tokens.size() == 24);
  // Row 0: examples 0 (2 positions), 1 (3), 2 (4) would be 9 > 8: so 0 and 1, then padding.
  // Row 1: 2 (4), 3 (2) = 6; 4 (3) does not fit. Row 2: 4 (3), 5 (4) = 7.
  std::vector<int32_t> row0_tokens = {3, 4, 13, 14, 15, kPad, kPad, kPad};
  std::vector<int32_t> row0_targets = {4, 5, 14, 15, 16, -1, -1, -1};
  std::vector<int32_t> row0_positions = {0, 1, 0, 1, 2, 0, 1, 2};
  std::vector<int32_t> row0_doc_start = {0, 0, 2, 2, 2, 5, 5, 5};
  CHECK(std::vector<int32_t>(batch.tokens.begin(), batch.tokens.begin() + 8) == row0_tokens);
  CHECK(std::vector<int32_t>(batch.targets.begin(), batch.targets.begin() + 8) == row0_targets);
  CHECK(std::vector<int32_t>(batch.positions.begin(), batch.positions.begin() + 8) == row0_positions);
  CHECK(std::vector<int32_t>(batch.doc_start.begin(), batch.doc_start.begin() + 8) == row0_doc_start);
  std::vector<int32_t> row1_doc_start = {0, 0, 0, 0, 4, 4, 6, 6};
  CHECK(std::vector<int32_t>(batch.doc_start.begin() + 8, batch.doc_start.begin() + 16) == row1_doc_start);
  std::vector<int32_t> row2_tokens = {43, 44, 45, 53, 54, 55, 56, kPad};
  CHECK(std::vector<int32_t>(batch.tokens.begin() + 16, batch.tokens.end()) == row2_tokens);
  CHECK(batch.examples == 6);
  CHECK(batch.trained_tokens == 2 + 3 + 4 + 2 + 3 + 4);

  // The epoch ends after example 6: its row is not topped up from the next epoch.
  loader.next_batch(2, 0, 1, batch);
  std::vector<int32_t> row3_tokens = {63, 64, kPad, kPad, kPad, kPad, kPad, kPad};
  CHECK(std::vector<int32_t>(batch.tokens.begin(), batch.tokens.begin() + 8) == row3_tokens);
  CHECK(batch.tokens[8] == 3);  // epoch 1 starts a new row with example 0
  CHECK(loader.state().epoch == 1);
  CHECK(loader.rows_in_epoch(0) == 4);
}

TEST_CASE("pad layout: one example per row", "[sft]") {
  std::vector<SftExample> examples = {numbered_example(0, 3), numbered_example(1, 4)};
  SftDataset data(examples, in_memory_config(SftLayout::Pad, false), byte_encoder(), 6);
  SftLoader loader(data);
  SftBatch batch;
  loader.next_batch(2, 0, 1, batch);
  std::vector<int32_t> tokens = {3, 4, kPad, kPad, kPad, kPad, 13, 14, 15, kPad, kPad, kPad};
  std::vector<int32_t> targets = {4, 5, -1, -1, -1, -1, 14, 15, 16, -1, -1, -1};
  CHECK(batch.tokens == tokens);
  CHECK(batch.targets == targets);
  CHECK(loader.rows_in_epoch(0) == 2);
}

TEST_CASE("shuffled order: every epoch visits each example once, epochs differ, resume is exact", "[sft]") {
  std::vector<SftExample> examples;
  for (int i = 0; i < 40; ++i) examples.push_back(numbered_example(i, 2 + i % 5));
  SftDataset data(examples, in_memory_config(SftLayout::Pack, true), byte_encoder(), 16);
  auto first_tokens = [](const SftBatch& b) {
    std::vector<int32_t> firsts;
    for (size_t i = 0; i < b.tokens.size(); ++i)
      if (b.targets[i] >= 0 && b.positions[i] == 0) firsts.push_back(b.tokens[i]);
    return firsts;
  };
  SftLoader loader(data);
  const uint64_t rows0 = loader.rows_in_epoch(0);
  SftBatch batch;
  loader.next_batch(static_cast<int>(rows0), 0, 1, batch);
  std::vector<int32_t> epoch0 = first_tokens(batch);
  CHECK(std::set<int32_t>(epoch0.begin(), epoch0.end()).size() == 40);
  CHECK(loader.state().next_example == 40);
  loader.next_batch(static_cast<int>(loader.rows_in_epoch(1)), 0, 1, batch);
  std::vector<int32_t> epoch1 = first_tokens(batch);
  CHECK(std::set<int32_t>(epoch1.begin(), epoch1.end()).size() == 40);
  CHECK(epoch0 != epoch1);

  // Resume: a loader restored from a state continues exactly as the original.
  SftLoader original(data);
  for (int i = 0; i < 3; ++i) original.next_batch(4, 0, 1, batch);
  SftLoaderState saved = sft_loader_state_from_json(to_json(original.state()), "trainer.json");
  SftLoader resumed(data);
  resumed.restore(saved);
  for (int i = 0; i < 10; ++i) {
    SftBatch a, b;
    original.next_batch(4, 0, 1, a);
    resumed.next_batch(4, 0, 1, b);
    CHECK(a.tokens == b.tokens);
    CHECK(a.targets == b.targets);
    CHECK(a.positions == b.positions);
    CHECK(a.doc_start == b.doc_start);
  }
  SftLoaderState bad{0, 41};
  CHECK_THROWS_WITH(resumed.restore(bad), Contains("41"));
}

TEST_CASE("ranks take contiguous slices of the same global batch", "[sft]") {
  std::vector<SftExample> examples;
  for (int i = 0; i < 25; ++i) examples.push_back(numbered_example(i, 2 + i % 4));
  SftDataset data(examples, in_memory_config(SftLayout::Pack, true), byte_encoder(), 8);
  SftLoader single(data), rank0(data), rank1(data), rank2(data);
  for (int step = 0; step < 5; ++step) {
    SftBatch all, a, b, c;
    single.next_batch(6, 0, 1, all);
    rank0.next_batch(6, 0, 3, a);
    rank1.next_batch(6, 1, 3, b);
    rank2.next_batch(6, 2, 3, c);
    std::vector<int32_t> joined = a.tokens;
    joined.insert(joined.end(), b.tokens.begin(), b.tokens.end());
    joined.insert(joined.end(), c.tokens.begin(), c.tokens.end());
    CHECK(joined == all.tokens);
    CHECK(a.trained_tokens + b.trained_tokens + c.trained_tokens == all.trained_tokens);
  }
  CHECK(rank1.state().epoch == single.state().epoch);
  CHECK(rank1.state().next_example == single.state().next_example);
}

TEST_CASE("files: JSONL and gzip read in order, malformed lines name file and line", "[sft]") {
  fs::path dir = temp_dir("files");
  write_lines(dir / "a.jsonl",
              {R"({"prompt": "p1", "completion": "c1"})", "",
               R"({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]})"});
  gzFile gz = gzopen((dir / "b.jsonl.gz").c_str(), "wb");
  const std::string gz_line = "{\"input_ids\": [7, 8, 9], \"labels\": [-100, 8, 9]}\n";
  gzwrite(gz, gz_line.data(), static_cast<unsigned>(gz_line.size()));
  gzclose(gz);

  SftConfig config;
  config.files = {(dir / "*.jsonl*").string()};
  SftDataset data(config, byte_encoder(), 64);
  CHECK(data.stats().files == 2);
  REQUIRE(data.size() == 3);
  CHECK(data.example(2).tokens == std::vector<int32_t>{7, 8, 9});
  CHECK(data.example(0).tokens.size() == 1 + 4 + 1);
  SftLoader(data).log_summary();
  config.valid_files = {(dir / "b.jsonl.gz").string()};
  SftDataset valid(config, byte_encoder(), 64, true);
  CHECK(valid.size() == 1);
  config.valid_files.clear();
  CHECK_THROWS_WITH(SftDataset(config, byte_encoder(), 64, true), Contains("data.sft.valid_files"));

  write_lines(dir / "bad.jsonl", {R"({"prompt": "p", "completion": "c"})", R"({"prompt": "p", "completion": "c")"});
  config.files = {(dir / "bad.jsonl").string()};
  CHECK_THROWS_WITH(SftDataset(config, byte_encoder(), 64), Contains("bad.jsonl:2") && Contains("invalid JSON"));
  write_lines(dir / "bad.jsonl", {R"({"prompt": "p", "completion": "c"})", "", R"({"text": "no prompt"})"});
  CHECK_THROWS_WITH(SftDataset(config, byte_encoder(), 64), Contains("bad.jsonl:3") && Contains("'prompt'"));
  write_lines(dir / "bad.jsonl", {R"({"prompt": "p", "completion": 5})"});
  CHECK_THROWS_WITH(SftDataset(config, byte_encoder(), 64), Contains("bad.jsonl:1") && Contains("'completion'"));
  config.files = {(dir / "missing*.jsonl").string()};
  CHECK_THROWS_WITH(SftDataset(config, byte_encoder(), 64), Contains("missing*.jsonl"));
}

TEST_CASE("config: defaults, round trip through JSON, unknown keys and bad values", "[sft]") {
  SftConfig c = sft_config_from_json(nlohmann::json::parse(R"({"files": "data/sft/*.jsonl", "layout": "pad",
      "valid_files": ["v1.jsonl", "v2.jsonl"],
      "truncation": "drop", "seed": 9, "shuffle": false, "format": "messages"})"),
                                     "cfg.json");
  CHECK(c.files == std::vector<std::string>{"data/sft/*.jsonl"});
  CHECK(c.valid_files == std::vector<std::string>{"v1.jsonl", "v2.jsonl"});
  CHECK(c.layout == SftLayout::Pad);
  CHECK(c.truncation == SftTruncation::Drop);
  CHECK(c.format == SftFormat::Messages);
  CHECK(c.seed == 9);
  CHECK_FALSE(c.shuffle);
  SftConfig back = sft_config_from_json(to_json(c), "resolved");
  CHECK(to_json(back) == to_json(c));
  CHECK(back.chat_template.roles.size() == 3);

  CHECK_THROWS_WITH(sft_config_from_json(nlohmann::json::parse(R"({"layuot": "pad"})"), "cfg.json"),
                    Contains("cfg.json") && Contains("data.sft.layuot") && Contains("data.sft.layout"));
  CHECK_THROWS_WITH(sft_config_from_json(nlohmann::json::parse(R"({"layout": "stack"})"), "cfg.json"),
                    Contains("data.sft.layout") && Contains("stack") && Contains("pack"));
  CHECK_THROWS_WITH(sft_config_from_json(nlohmann::json::parse(R"({"seed": "x"})"), "cfg.json"),
                    Contains("data.sft.seed"));
}

TEST_CASE("with a real SentencePiece tokenizer the trained tokens decode to the completion", "[sft]") {
  fs::path dir = temp_dir("spm");
  std::vector<std::string> sentences;
  const char* words[] = {"alpha", "beta", "gamma", "delta", "define", "word", "meaning", "the", "of", "a"};
  for (int i = 0; i < 400; ++i)
    sentences.push_back(std::string("Define: ") + words[i % 10] + " " + words[(i * 7) % 10] + " means " +
                        words[(i * 3) % 10]);
  TokenizerTrainOptions options;
  options.vocab_size = 60;
  options.num_threads = 1;
  train_tokenizer(sentences, options, (dir / "tok.model").string());
  Tokenizer tokenizer((dir / "tok.model").string());

  SftConfig config;
  SftExample ex = sft_example_from_json({{"prompt", "Define: gamma\n"}, {"completion", "the meaning of delta"}}, config,
                                        text_encoder(tokenizer), "spm:1");
  std::vector<int32_t> trained;
  for (size_t i = 0; i < ex.labels.size(); ++i)
    if (ex.labels[i] >= 0 && ex.labels[i] != tokenizer.eos_id()) trained.push_back(ex.labels[i]);
  CHECK(tokenizer.decode(trained) == "the meaning of delta");
  CHECK(ex.tokens.front() == tokenizer.bos_id());
  CHECK(ex.tokens.back() == tokenizer.eos_id());
  CHECK(ex.labels.back() == tokenizer.eos_id());
}
