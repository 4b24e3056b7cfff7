#pragma once
// Supervised fine-tuning (SFT) data: the data.sft config section. The example formats and chat
// templates are in sft_format.h, the rows the trainer reads in sft_loader.h.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace gum {

struct ChatRole {
  std::string prefix;
  std::string suffix;
};

struct ChatTemplate {
  std::map<std::string, ChatRole> roles;  // a message with another role is an error
  std::vector<std::string> trained_roles = {"assistant"};
  // The default: "### System:\n{content}\n\n", "### User:\n{content}\n\n", "### Assistant:\n{content}\n\n".
  static ChatTemplate default_template();
};

enum class SftFormat { Auto, PromptCompletion, Messages, Tokenized };
enum class SftLayout { Pack, Pad };
enum class SftTruncation {
  Truncate,  // keep the first seq_len + 1 tokens
  Drop,      // skip the example
};

struct SftConfig {
  std::vector<std::string> files;        // JSONL glob patterns (.gz accepted)
  std::vector<std::string> valid_files;  // held-out examples for evaluation (same formats); may be empty
  SftFormat format = SftFormat::Auto;    // Auto: decided per line from its keys
  std::string prompt_field = "prompt";
  std::string completion_field = "completion";
  ChatTemplate chat_template = ChatTemplate::default_template();
  bool add_bos = true;  // text formats: BOS first, when the tokenizer has one
  bool add_eos = true;  // text formats: EOS after the completion / each trained turn (trained)
  SftLayout layout = SftLayout::Pack;
  SftTruncation truncation = SftTruncation::Truncate;
  bool shuffle = true;
  uint64_t seed = 1234;
};

// The section (e.g. "data.sft") of a config: {"files", "valid_files", "format", "prompt_field", "completion_field",
// "chat_template": {"roles": {ROLE: {"prefix", "suffix"}}, "trained_roles": [...]} or a named one
// ("llama3", "chatml"; add_eos then defaults to false: their turns end with their own token), "add_bos",
// "add_eos", "layout", "truncation", "shuffle", "seed"}. Unknown keys and bad values are usage
// errors naming context and `path`.key.
SftConfig sft_config_from_json(const nlohmann::json& section, const std::string& context,
                               const std::string& path = "data.sft");
nlohmann::json to_json(const SftConfig& config);

// "pack" or "pad" (for logs).
const char* sft_layout_name(SftLayout layout);

}  // namespace gum
