#include "gum/data/sft.h"

#include "gum/core/config_fields.h"
#include "gum/core/error.h"
#include "gum/core/json_util.h"
#include "gum/data/data_config.h"

namespace gum {

namespace {

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

// Reads section[key], when present, as one of the names of `table` (a bad name gets the
// closest as a hint).
template <typename Enum>
void read_enum(const nlohmann::json& section, const std::string& key,
               const std::vector<std::pair<const char*, Enum>>& table, Enum& value, const std::string& context,
               const std::string& path) {
  std::string name = enum_name(value, table);
  read_key(section, key, name, context, path);
  std::vector<std::string> names;
  for (const auto& [n, v] : table) names.push_back(n);
  check_string(one_of(names), name, context, path + "." + key);
  for (const auto& [n, v] : table)
    if (name == n) value = v;
}

// The keys held as plain values; the file patterns, the enums (named in JSON) and the chat
// template are read around them.
const FieldTable<SftConfig> kSftFields = {
    {"prompt_field", &SftConfig::prompt_field}, {"completion_field", &SftConfig::completion_field},
    {"add_bos", &SftConfig::add_bos},           {"add_eos", &SftConfig::add_eos},
    {"shuffle", &SftConfig::shuffle},           {"seed", &SftConfig::seed},
};

const std::vector<std::string> kNamedKeys = {"files", "valid_files", "format", "chat_template", "layout", "truncation"};

// The chat formats of the models people fine-tune most, by name: each turn ends with the model's
// own end-of-turn token, which is trained on assistant turns.
ChatTemplate named_chat_template(const std::string& name, const std::string& context, const std::string& path) {
  ChatTemplate chat;
  for (const char* role : {"system", "user", "assistant"}) {
    if (name == "llama3")
      chat.roles[role] = {std::string("<|start_header_id|>") + role + "<|end_header_id|>\n\n", "<|eot_id|>"};
    else if (name == "chatml")  // Qwen2 and others
      chat.roles[role] = {std::string("<|im_start|>") + role + "\n", "<|im_end|>\n"};
    else
      usage_error(context, ": key '", path, "' names an unknown chat template '", name,
                  "' (expected llama3, chatml or {\"roles\": ...})");
  }
  chat.trained_roles = {"assistant"};
  return chat;
}

ChatTemplate chat_template_from_json(const nlohmann::json& j, const std::string& context, const std::string& path) {
  if (j.is_string()) return named_chat_template(j.get<std::string>(), context, path);
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
      if (!role.is_string())
        usage_error(context, ": key '", path, ".trained_roles' must hold strings, got ", role.dump());
      chat.trained_roles.push_back(role.get<std::string>());
    }
  }
  for (const auto& role : chat.trained_roles)
    if (!chat.roles.count(role))
      usage_error(context, ": key '", path, ".trained_roles' names role '", role, "', which has no template in '", path,
                  ".roles'");
  return chat;
}

}  // namespace

ChatTemplate ChatTemplate::default_template() {
  ChatTemplate chat;
  chat.roles["system"] = {"### System:\n", "\n\n"};
  chat.roles["user"] = {"### User:\n", "\n\n"};
  chat.roles["assistant"] = {"### Assistant:\n", "\n\n"};
  chat.trained_roles = {"assistant"};
  return chat;
}

SftConfig sft_config_from_json(const nlohmann::json& j, const std::string& context, const std::string& path) {
  std::vector<std::string> keys = kNamedKeys;
  const std::vector<std::string> field_names = field_keys(kSftFields);
  keys.insert(keys.end(), field_names.begin(), field_names.end());
  reject_unknown_keys(j, keys, context, path);
  SftConfig c;
  c.files = read_glob_patterns(j, "files", context, path).value_or(std::vector<std::string>{});
  c.valid_files = read_glob_patterns(j, "valid_files", context, path).value_or(std::vector<std::string>{});
  read_enum(j, "format", kFormats, c.format, context, path);
  read_enum(j, "layout", kLayouts, c.layout, context, path);
  read_enum(j, "truncation", kTruncations, c.truncation, context, path);
  if (j.contains("chat_template"))
    c.chat_template = chat_template_from_json(j["chat_template"], context, path + ".chat_template");
  // A named template's turns end with their own end token: an EOS after it would be a second one.
  if (j.contains("chat_template") && j["chat_template"].is_string()) c.add_eos = false;
  read_fields(j, kSftFields, c, context, path);
  return c;
}

nlohmann::json to_json(const SftConfig& c) {
  nlohmann::json roles = nlohmann::json::object();
  for (const auto& [name, role] : c.chat_template.roles)
    roles[name] = {{"prefix", role.prefix}, {"suffix", role.suffix}};
  nlohmann::json j = {{"files", c.files},
                      {"valid_files", c.valid_files},
                      {"format", enum_name(c.format, kFormats)},
                      {"layout", enum_name(c.layout, kLayouts)},
                      {"truncation", enum_name(c.truncation, kTruncations)},
                      {"chat_template", {{"roles", roles}, {"trained_roles", c.chat_template.trained_roles}}}};
  write_fields(kSftFields, c, j);
  return j;
}

const char* sft_layout_name(SftLayout layout) { return enum_name(layout, kLayouts); }

}  // namespace gum
