#include "gum/data/sft.h"

#include "gum/core/error.h"
#include "gum/core/json_util.h"

namespace gum {

namespace {

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
  // A named template's turns end with their own end token: an EOS after it would be a second one.
  if (j.contains("chat_template") && j["chat_template"].is_string()) c.add_eos = false;
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

const char* sft_layout_name(SftLayout layout) { return enum_name(layout, kLayouts); }

}  // namespace gum
