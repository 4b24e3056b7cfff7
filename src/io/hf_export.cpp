#include "gum/io/hf_export.h"

#include <filesystem>
#include <fstream>

#include "gum/core/error.h"
#include "gum/io/safetensors.h"

namespace fs = std::filesystem;

namespace gum {

namespace {

void write_json_file(const std::string& path, const nlohmann::json& j) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) runtime_error(tmp, ": cannot create file");
    out << j.dump(2) << "\n";
    if (!out) runtime_error(tmp, ": write failed (disk full?)");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) runtime_error(path, ": cannot rename from ", tmp, " (", ec.message(), ")");
}

}  // namespace

void write_hf_folder(const std::string& out_dir, const HfFolder& folder) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) runtime_error(out_dir, ": cannot create folder (", ec.message(), ")");
  if (folder.weights.empty()) runtime_error(out_dir, ": no weights to export");

  const std::string weights_path = out_dir + "/model.safetensors";
  write_safetensors(weights_path + ".tmp", folder.weights, {{"format", "pt"}});
  fs::rename(weights_path + ".tmp", weights_path, ec);
  if (ec) runtime_error(weights_path, ": cannot rename (", ec.message(), ")");

  write_json_file(out_dir + "/config.json", folder.config);
  write_json_file(out_dir + "/generation_config.json", folder.generation_config);
  if (!folder.tokenizer_config.is_null()) write_json_file(out_dir + "/tokenizer_config.json", folder.tokenizer_config);

  for (const auto& [source, name] : {std::pair{folder.tokenizer_model_path, "tokenizer.model"},
                                     std::pair{folder.tokenizer_json_path, "tokenizer.json"}}) {
    if (source.empty()) continue;
    const std::string target = out_dir + "/" + name;
    fs::copy_file(source, target + ".tmp", fs::copy_options::overwrite_existing, ec);
    if (ec) runtime_error(source, ": cannot copy to ", target, " (", ec.message(), ")");
    fs::rename(target + ".tmp", target, ec);
    if (ec) runtime_error(target, ": cannot rename (", ec.message(), ")");
  }
}

}  // namespace gum
