#include "gum/data/sft_format.h"

#include <algorithm>

#include "gum/core/error.h"
#include "gum/data/tokenizer.h"

namespace gum {

namespace {

constexpr int32_t kIgnoredLabel = -100;  // Hugging Face's ignore_index in pre-tokenized labels

bool is_trained_role(const ChatTemplate& chat, const std::string& role) {
  return std::find(chat.trained_roles.begin(), chat.trained_roles.end(), role) != chat.trained_roles.end();
}

// Rendered segments -> tokens; a trained segment is followed by EOS when add_eos.
SftExample tokenize_segments(const std::vector<SftSegment>& segments, const SftConfig& config,
                             const TextEncoder& encoder, const std::string& where) {
  if (!encoder.encode)
    runtime_error(where,
                  ": a text example needs a tokenizer (data.tokenizer, or tokenizer.model or tokenizer.json in the "
                  "model.init_from folder): without one, write the examples "
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

std::vector<SftSegment> render_chat(const nlohmann::json& messages, const ChatTemplate& chat,
                                    const std::string& where) {
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

}  // namespace gum
