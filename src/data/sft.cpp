#include "gum/data/sft.h"

#include <zlib.h>

#include <algorithm>

#include "gum/core/error.h"
#include "gum/core/json_util.h"
#include "gum/core/logging.h"
#include "gum/data/corpus.h"
#include "gum/data/loader.h"
#include "gum/data/tokenizer.h"

namespace gum {

namespace {

constexpr int32_t kIgnoredLabel = -100;  // Hugging Face's ignore_index in pre-tokenized labels

const char* format_name(SftFormat f) {
  switch (f) {
    case SftFormat::Auto: return "auto";
    case SftFormat::PromptCompletion: return "prompt_completion";
    case SftFormat::Messages: return "messages";
    case SftFormat::Tokenized: return "tokenized";
  }
  return "?";
}

template <typename Enum>
Enum enum_from_name(const std::string& name, const std::vector<std::pair<const char*, Enum>>& table,
                    const std::string& context, const std::string& key) {
  std::string valid;
  for (const auto& [n, value] : table) {
    if (name == n) return value;
    valid += (valid.empty() ? "" : ", ") + std::string(n);
  }
  usage_error(context, ": key '", key, "' is '", name, "'; expected one of ", valid);
}

const std::vector<std::pair<const char*, SftFormat>> kFormats = {{"auto", SftFormat::Auto},
                                                                 {"prompt_completion", SftFormat::PromptCompletion},
                                                                 {"messages", SftFormat::Messages},
                                                                 {"tokenized", SftFormat::Tokenized}};
const std::vector<std::pair<const char*, SftLayout>> kLayouts = {{"pack", SftLayout::Pack}, {"pad", SftLayout::Pad}};
const std::vector<std::pair<const char*, SftTruncation>> kTruncations = {{"truncate", SftTruncation::Truncate},
                                                                         {"drop", SftTruncation::Drop}};

template <typename Enum>
const char* enum_name(Enum value, const std::vector<std::pair<const char*, Enum>>& table) {
  for (const auto& [n, v] : table)
    if (v == value) return n;
  return "?";
}

ChatTemplate chat_template_from_json(const nlohmann::json& j, const std::string& context, const std::string& path) {
  reject_unknown_keys(j, {"roles", "trained_roles"}, context, path);
  ChatTemplate chat = ChatTemplate::default_template();
  if (j.contains("roles")) {
    const auto& roles = j["roles"];
    if (!roles.is_object() || roles.empty())
      usage_error(context, ": key '", path, ".roles' must be a non-empty object {ROLE: {\"prefix\", \"suffix\"}}");
    chat.roles.clear();
    for (const auto& item : roles.items()) {
      const std::string role_path = path + ".roles." + item.key();
      reject_unknown_keys(item.value(), {"prefix", "suffix"}, context, role_path);
      ChatRole role;
      read_key(item.value(), "prefix", role.prefix, context, role_path);
      read_key(item.value(), "suffix", role.suffix, context, role_path);
      chat.roles[item.key()] = role;
    }
  }
  if (j.contains("trained_roles")) {
    const auto& trained = j["trained_roles"];
    if (!trained.is_array()) usage_error(context, ": key '", path, ".trained_roles' must be a list of role names");
    chat.trained_roles.clear();
    for (const auto& role : trained) {
      if (!role.is_string()) usage_error(context, ": key '", path, ".trained_roles' must hold strings, got ", role.dump());
      chat.trained_roles.push_back(role.get<std::string>());
    }
  }
  for (const auto& role : chat.trained_roles)
    if (!chat.roles.count(role))
      usage_error(context, ": key '", path, ".trained_roles' names role '", role, "', which has no template in '",
                  path, ".roles'");
  return chat;
}

bool is_trained_role(const ChatTemplate& chat, const std::string& role) {
  return std::find(chat.trained_roles.begin(), chat.trained_roles.end(), role) != chat.trained_roles.end();
}

// Rendered segments -> tokens; a trained segment is followed by EOS when add_eos.
SftExample tokenize_segments(const std::vector<SftSegment>& segments, const SftConfig& config,
                             const TextEncoder& encoder, const std::string& where) {
  if (!encoder.encode)
    runtime_error(where,
                  ": a text example needs a SentencePiece tokenizer (data.tokenizer, or tokenizer.model in the "
                  "model.init_from folder; tokenizer.json is not supported): without one, write the examples "
                  "pre-tokenized as {\"input_ids\": [...], \"labels\": [...]} (-100 = not trained on)");
  SftExample ex;
  auto push = [&](int32_t token, bool trained) {
    ex.tokens.push_back(token);
    ex.labels.push_back(trained ? token : -1);
  };
  if (config.add_bos && encoder.bos_id >= 0) push(encoder.bos_id, false);
  for (const SftSegment& segment : segments) {
    for (int32_t token : encoder.encode(segment.text)) push(token, segment.trained);
    if (segment.trained && config.add_eos && encoder.eos_id >= 0) push(encoder.eos_id, true);
  }
  return ex;
}

std::vector<int32_t> read_id_list(const nlohmann::json& line, const char* key, int32_t vocab_size, bool allow_ignored,
                                  const std::string& where) {
  const auto& list = line[key];
  if (!list.is_array()) runtime_error(where, ": '", key, "' must be a list of token ids");
  std::vector<int32_t> ids;
  ids.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    if (!list[i].is_number_integer()) runtime_error(where, ": ", key, "[", i, "] is not an integer: ", list[i].dump());
    int64_t id = list[i].get<int64_t>();
    bool ignored = allow_ignored && id == kIgnoredLabel;
    if (!ignored && (id < 0 || (vocab_size > 0 && id >= vocab_size)))
      runtime_error(where, ": ", key, "[", i, "] = ", id, " is outside the vocabulary [0, ", vocab_size, ")",
                    allow_ignored ? " (use -100 for no loss)" : "");
    ids.push_back(ignored ? -1 : static_cast<int32_t>(id));
  }
  return ids;
}

SftExample tokenized_example(const nlohmann::json& line, const TextEncoder& encoder, const std::string& where) {
  SftExample ex;
  ex.tokens = read_id_list(line, "input_ids", encoder.vocab_size, false, where);
  if (line.contains("labels") && !line["labels"].is_null()) {
    ex.labels = read_id_list(line, "labels", encoder.vocab_size, true, where);
    if (ex.labels.size() != ex.tokens.size())
      runtime_error(where, ": 'labels' has ", ex.labels.size(), " entries, 'input_ids' has ", ex.tokens.size());
  } else {
    ex.labels = ex.tokens;
  }
  return ex;
}

SftFormat detect_format(const nlohmann::json& line, const SftConfig& config, const std::string& where) {
  if (config.format != SftFormat::Auto) return config.format;
  if (line.contains("messages")) return SftFormat::Messages;
  if (line.contains("input_ids")) return SftFormat::Tokenized;
  if (line.contains(config.prompt_field) || line.contains(config.completion_field)) return SftFormat::PromptCompletion;
  runtime_error(where, ": expected '", config.prompt_field, "'/'", config.completion_field,
                "', 'messages' or 'input_ids' in this line");
}

// Reads the lines of a plain or gzip file (zlib reads both).
class LineReader {
 public:
  explicit LineReader(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    if (!file_) runtime_error(path, ": cannot open file");
  }
  ~LineReader() { gzclose(file_); }
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  bool next(std::string& line) {
    line.clear();
    char chunk[1 << 16];
    while (gzgets(file_, chunk, sizeof(chunk))) {
      line += chunk;
      if (!line.empty() && line.back() == '\n') break;
    }
    int err = 0;
    const char* message = gzerror(file_, &err);
    if (err != Z_OK && err != Z_STREAM_END) runtime_error(path_, ": read error: ", message);
    if (line.empty()) return false;
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    return true;
  }

 private:
  std::string path_;
  gzFile file_;
};

}  // namespace

TextEncoder text_encoder(const Tokenizer& tokenizer) {
  TextEncoder e;
  e.encode = [&tokenizer](std::string_view text) { return tokenizer.encode(text); };
  e.bos_id = tokenizer.bos_id();
  e.eos_id = tokenizer.eos_id();
  e.pad_id = tokenizer.pad_id();
  e.vocab_size = tokenizer.vocab_size();
  return e;
}

ChatTemplate ChatTemplate::default_template() {
  ChatTemplate chat;
  chat.roles["system"] = {"### System:\n", "\n\n"};
  chat.roles["user"] = {"### User:\n", "\n\n"};
  chat.roles["assistant"] = {"### Assistant:\n", "\n\n"};
  chat.trained_roles = {"assistant"};
  return chat;
}

SftConfig sft_config_from_json(const nlohmann::json& j, const std::string& context, const std::string& path) {
  reject_unknown_keys(j,
                      {"files", "valid_files", "format", "prompt_field", "completion_field", "chat_template", "add_bos", "add_eos",
                       "layout", "truncation", "shuffle", "seed"},
                      context, path);
  SftConfig c;
  auto read_globs = [&](const char* key, std::vector<std::string>& out) {
    if (!j.contains(key)) return;
    const auto& value = j[key];
    if (value.is_string()) {
      out.push_back(value.get<std::string>());
    } else if (value.is_array()) {
      for (const auto& f : value) {
        if (!f.is_string()) usage_error(context, ": key '", path, ".", key, "' must hold strings, got ", f.dump());
        out.push_back(f.get<std::string>());
      }
    } else if (!value.is_null()) {
      usage_error(context, ": key '", path, ".", key, "' must be a glob pattern or a list of them");
    }
  };
  read_globs("files", c.files);
  read_globs("valid_files", c.valid_files);
  std::string name = format_name(c.format);
  read_key(j, "format", name, context, path);
  c.format = enum_from_name(name, kFormats, context, path + ".format");
  read_key(j, "prompt_field", c.prompt_field, context, path);
  read_key(j, "completion_field", c.completion_field, context, path);
  if (j.contains("chat_template")) c.chat_template = chat_template_from_json(j["chat_template"], context, path + ".chat_template");
  read_key(j, "add_bos", c.add_bos, context, path);
  read_key(j, "add_eos", c.add_eos, context, path);
  name = enum_name(c.layout, kLayouts);
  read_key(j, "layout", name, context, path);
  c.layout = enum_from_name(name, kLayouts, context, path + ".layout");
  name = enum_name(c.truncation, kTruncations);
  read_key(j, "truncation", name, context, path);
  c.truncation = enum_from_name(name, kTruncations, context, path + ".truncation");
  read_key(j, "shuffle", c.shuffle, context, path);
  read_key(j, "seed", c.seed, context, path);
  return c;
}

nlohmann::json to_json(const SftConfig& c) {
  nlohmann::json roles = nlohmann::json::object();
  for (const auto& [name, role] : c.chat_template.roles) roles[name] = {{"prefix", role.prefix}, {"suffix", role.suffix}};
  return {{"files", c.files},
          {"valid_files", c.valid_files},
          {"format", format_name(c.format)},
          {"prompt_field", c.prompt_field},
          {"completion_field", c.completion_field},
          {"chat_template", {{"roles", roles}, {"trained_roles", c.chat_template.trained_roles}}},
          {"add_bos", c.add_bos},
          {"add_eos", c.add_eos},
          {"layout", enum_name(c.layout, kLayouts)},
          {"truncation", enum_name(c.truncation, kTruncations)},
          {"shuffle", c.shuffle},
          {"seed", c.seed}};
}

std::vector<SftSegment> render_chat(const nlohmann::json& messages, const ChatTemplate& chat, const std::string& where) {
  if (!messages.is_array() || messages.empty()) runtime_error(where, ": 'messages' must be a non-empty list");
  std::vector<SftSegment> segments;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string())
      runtime_error(where, ": messages[", i, "] must be {\"role\": string, \"content\": string}, got ", m.dump());
    const std::string role = m["role"].get<std::string>();
    auto it = chat.roles.find(role);
    if (it == chat.roles.end()) {
      std::string known;
      for (const auto& [name, r] : chat.roles) known += (known.empty() ? "" : ", ") + name;
      runtime_error(where, ": messages[", i, "] has role '", role, "', which the chat template lacks (roles: ", known,
                    ")");
    }
    const bool trained = is_trained_role(chat, role);
    if (!it->second.prefix.empty()) segments.push_back({it->second.prefix, false});
    segments.push_back({m["content"].get<std::string>() + it->second.suffix, trained});
  }
  return segments;
}

SftExample sft_example_from_json(const nlohmann::json& line, const SftConfig& config, const TextEncoder& encoder,
                                 const std::string& where) {
  if (!line.is_object()) runtime_error(where, ": each line must be a JSON object");
  switch (detect_format(line, config, where)) {
    case SftFormat::Messages:
      if (!line.contains("messages")) runtime_error(where, ": missing 'messages' (data.sft.format is messages)");
      return tokenize_segments(render_chat(line["messages"], config.chat_template, where), config, encoder, where);
    case SftFormat::Tokenized:
      if (!line.contains("input_ids")) runtime_error(where, ": missing 'input_ids' (data.sft.format is tokenized)");
      return tokenized_example(line, encoder, where);
    case SftFormat::PromptCompletion:
    case SftFormat::Auto: {
      for (const std::string& key : {config.prompt_field, config.completion_field})
        if (!line.contains(key) || !line[key].is_string()) runtime_error(where, ": '", key, "' must be a string");
      std::vector<SftSegment> segments = {{line[config.prompt_field].get<std::string>(), false},
                                          {line[config.completion_field].get<std::string>(), true}};
      return tokenize_segments(segments, config, encoder, where);
    }
  }
  runtime_error(where, ": unreachable SFT format");
}

// ---- dataset ----

static int32_t choose_pad_token(const TextEncoder& encoder) {
  // Padding is never a target and never attended to by real tokens, so any valid id works.
  if (encoder.pad_id >= 0) return encoder.pad_id;
  if (encoder.eos_id >= 0) return encoder.eos_id;
  return 0;
}

SftDataset::SftDataset(const SftConfig& config, const TextEncoder& encoder, int seq_len, bool validation)
    : config_(config), seq_len_(seq_len), pad_token_(choose_pad_token(encoder)) {
  if (seq_len < 1) usage_error("SFT data: seq_len must be positive, got ", seq_len);
  const std::string key = validation ? "data.sft.valid_files" : "data.sft.files";
  const std::vector<std::string>& patterns = validation ? config.valid_files : config.files;
  if (patterns.empty()) usage_error("SFT data: ", key, " is empty");
  const std::vector<std::string> files = expand_globs(patterns, key);
  stats_.files = files.size();
  std::string text;
  for (const std::string& path : files) {
    LineReader reader(path);
    for (uint64_t line_number = 1; reader.next(text); ++line_number) {
      if (text.find_first_not_of(" \t") == std::string::npos) continue;  // blank lines separate nothing
      const std::string where = path + ":" + std::to_string(line_number);
      nlohmann::json line;
      try {
        line = nlohmann::json::parse(text);
      } catch (const nlohmann::json::parse_error& e) {
        runtime_error(where, ": invalid JSON (", e.what(), ")");
      }
      keep(sft_example_from_json(line, config_, encoder, where));
    }
  }
  if (examples_.empty())
    runtime_error("SFT data: no usable example in ", files.size(), " file(s) (", stats_.lines, " read, ",
                  stats_.dropped_too_long, " too long, ", stats_.dropped_untrained, " with nothing to train on)");
}

SftDataset::SftDataset(std::vector<SftExample> examples, const SftConfig& config, const TextEncoder& encoder,
                       int seq_len)
    : config_(config), seq_len_(seq_len), pad_token_(choose_pad_token(encoder)) {
  if (seq_len < 1) usage_error("SFT data: seq_len must be positive, got ", seq_len);
  for (auto& ex : examples) keep(std::move(ex));
}

void SftDataset::keep(SftExample&& ex) {
  GUM_CHECK(ex.tokens.size() == ex.labels.size());
  ++stats_.lines;
  const size_t max_tokens = static_cast<size_t>(seq_len_) + 1;  // seq_len inputs and their targets
  if (ex.tokens.size() > max_tokens) {
    if (config_.truncation == SftTruncation::Drop) {
      ++stats_.dropped_too_long;
      return;
    }
    ex.tokens.resize(max_tokens);
    ex.labels.resize(max_tokens);
    ++stats_.truncated;
  }
  // labels[0] is never a target: nothing predicts the first token.
  uint64_t trained = ex.labels.empty() ? 0 : std::count_if(ex.labels.begin() + 1, ex.labels.end(),
                                                           [](int32_t l) { return l >= 0; });
  if (trained == 0) {
    ++stats_.dropped_untrained;
    return;
  }
  ++stats_.examples;
  stats_.tokens += ex.tokens.size();
  stats_.trained_tokens += trained;
  examples_.push_back(std::move(ex));
}

// ---- loader ----

nlohmann::json to_json(const SftLoaderState& s) { return {{"epoch", s.epoch}, {"next_example", s.next_example}}; }

SftLoaderState sft_loader_state_from_json(const nlohmann::json& j, const std::string& context) {
  if (!j.is_object() || !j.contains("epoch") || !j.contains("next_example"))
    runtime_error(context, ": SFT loader state must be {\"epoch\", \"next_example\"}, got ", j.dump());
  SftLoaderState s;
  read_key(j, "epoch", s.epoch, context, "sft_loader");
  read_key(j, "next_example", s.next_example, context, "sft_loader");
  return s;
}

SftLoader::SftLoader(const SftDataset& data) : data_(data) {
  if (data.size() == 0) runtime_error("SFT loader: the dataset has no examples");
}

size_t SftLoader::example_at(uint64_t epoch, uint64_t index) const {
  if (!data_.config().shuffle) return index;
  return WindowPermutation(data_.size(), data_.config().seed, epoch)(index);
}

void SftLoader::fill_row(SftBatch* out, int row) {
  const int T = data_.seq_len();
  const size_t base = static_cast<size_t>(row) * T;
  int used = 0;
  while (true) {
    if (state_.next_example == data_.size()) {
      if (used > 0) break;  // a row never spans two epochs
      ++state_.epoch;
      state_.next_example = 0;
    }
    const SftExample& ex = data_.example(example_at(state_.epoch, state_.next_example));
    const int length = static_cast<int>(ex.tokens.size()) - 1;  // inputs tokens[0..n-2], targets labels[1..n-1]
    if (used + length > T) break;
    if (out) {
      for (int i = 0; i < length; ++i) {
        const size_t at = base + used + i;
        out->tokens[at] = ex.tokens[i];
        out->targets[at] = ex.labels[i + 1];
        out->positions[at] = i;  // RoPE restarts with each example
        out->doc_start[at] = used;
        out->trained_tokens += ex.labels[i + 1] >= 0;
      }
      ++out->examples;
    }
    used += length;
    ++state_.next_example;
    if (data_.config().layout == SftLayout::Pad) break;
  }
  if (out) {
    for (int t = used; t < T; ++t) {
      out->tokens[base + t] = data_.pad_token();
      out->targets[base + t] = -1;
      out->positions[base + t] = t - used;
      out->doc_start[base + t] = used;
    }
  }
}

void SftLoader::next_batch(int global_batch, int rank, int world_size, SftBatch& out) {
  if (world_size < 1 || rank < 0 || rank >= world_size || global_batch < world_size)
    usage_error("SFT loader: global batch ", global_batch, " cannot be split over ", world_size,
                " ranks (rank ", rank, ")");
  const int begin = static_cast<int>(int64_t(rank) * global_batch / world_size);
  const int end = static_cast<int>(int64_t(rank + 1) * global_batch / world_size);
  const size_t n = static_cast<size_t>(end - begin) * data_.seq_len();
  out.rows = end - begin;
  out.seq_len = data_.seq_len();
  out.tokens.assign(n, 0);
  out.targets.assign(n, -1);
  out.positions.assign(n, 0);
  out.doc_start.assign(n, 0);
  out.trained_tokens = 0;
  out.examples = 0;
  for (int row = 0; row < global_batch; ++row)
    fill_row(row >= begin && row < end ? &out : nullptr, row - begin);
}

void SftLoader::restore(const SftLoaderState& s) {
  if (s.next_example > data_.size())
    runtime_error("SFT loader: checkpoint position ", s.next_example, " is past the ", data_.size(),
                  " examples of this dataset (did the SFT files change?)");
  state_ = s;
}

uint64_t SftLoader::rows_in_epoch(uint64_t epoch) const {
  SftLoader walk(data_);
  walk.state_ = {epoch, 0};
  uint64_t rows = 0;
  while (walk.state_.next_example < data_.size()) {
    walk.fill_row(nullptr, 0);
    ++rows;
  }
  return rows;
}

void SftLoader::log_summary() const {
  const SftStats& s = data_.stats();
  const uint64_t rows = rows_in_epoch(state_.epoch);
  const double slots = double(rows) * data_.seq_len();
  uint64_t positions = s.tokens - s.examples;  // each example fills n - 1 positions
  spdlog::info(
      "SFT data: {} examples from {} file(s) ({} read), {} tokens, {:.1f}% trained; {} truncated, {} dropped as "
      "longer than {} tokens, {} dropped with nothing to train on",
      s.examples, s.files, s.lines, s.tokens, 100.0 * double(s.trained_tokens) / double(std::max<uint64_t>(1, s.tokens)),
      s.truncated, s.dropped_too_long, data_.seq_len() + 1, s.dropped_untrained);
  spdlog::info("SFT rows ({}): {} per epoch of {} positions, {:.1f}% filled with examples, {:.1f}% of positions trained",
               enum_name(data_.config().layout, kLayouts), rows, data_.seq_len(),
               100.0 * double(positions) / std::max(1.0, slots), 100.0 * double(s.trained_tokens) / std::max(1.0, slots));
}

}  // namespace gum
