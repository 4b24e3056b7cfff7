#include "gum/io/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gum/core/error.h"
#include "gum/core/logging.h"
#include "gum/io/safetensors.h"

namespace fs = std::filesystem;

namespace gum {

namespace {

const char* const kModelFile = "model.safetensors";
const char* const kOptimizerFile = "optimizer.safetensors";
const char* const kTrainerFile = "trainer.json";
const char* const kManifestFile = "MANIFEST";
const char* const kLatestFile = "latest";
const char* const kManifestHeader = "# gum_train checkpoint manifest v1: crc32 bytes file";

// Slicing-by-8 tables for the reflected IEEE polynomial 0xEDB88320.
const std::array<std::array<uint32_t, 256>, 8>& crc32_tables() {
  static const auto tables = [] {
    std::array<std::array<uint32_t, 256>, 8> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
    return t;
  }();
  return tables;
}

uint32_t crc32_update(uint32_t crc, const uint8_t* data, size_t n) {
  const auto& t = crc32_tables();
  crc = ~crc;
  while (n >= 8) {
    uint32_t lo =
        crc ^ (uint32_t(data[0]) | uint32_t(data[1]) << 8 | uint32_t(data[2]) << 16 | uint32_t(data[3]) << 24);
    uint32_t hi = uint32_t(data[4]) | uint32_t(data[5]) << 8 | uint32_t(data[6]) << 16 | uint32_t(data[7]) << 24;
    crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^ t[3][hi & 0xff] ^
          t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    data += 8;
    n -= 8;
  }
  while (n--) crc = t[0][(crc ^ *data++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

// fsync of a file or folder: a rename is durable only once the folder holding it is synced.
void fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) runtime_error(path, ": cannot open for fsync");
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) runtime_error(path, ": fsync failed");
}

void write_text_file_synced(const std::string& path, const std::string& text) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) runtime_error(path, ": cannot create file");
    out << text;
    out.flush();
    if (!out) runtime_error(path, ": write failed (disk full?)");
  }
  fsync_path(path, false);
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) runtime_error(path, ": cannot open file");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// "step_000100" -> 100; -1 for any other name (temporary folders, `latest`, stray files).
int64_t parse_step_folder(const std::string& name) {
  const std::string prefix = "step_";
  if (name.rfind(prefix, 0) != 0 || name.size() == prefix.size()) return -1;
  int64_t step = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

struct ManifestEntry {
  std::string file;
  uint32_t crc = 0;
  uint64_t bytes = 0;
};

std::vector<ManifestEntry> read_manifest(const std::string& step_dir) {
  const std::string path = step_dir + "/" + kManifestFile;
  if (!fs::exists(path)) runtime_error(path, ": missing (incomplete checkpoint)");
  std::istringstream in(read_text_file(path));
  std::vector<ManifestEntry> entries;
  std::string line;
  int line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string crc_hex;
    ManifestEntry e;
    if (!(fields >> crc_hex >> e.bytes >> e.file) || crc_hex.size() != 8 ||
        crc_hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
      runtime_error(path, ":", line_number, ": malformed line '", line, "'");
    e.crc = static_cast<uint32_t>(std::stoul(crc_hex, nullptr, 16));
    entries.push_back(e);
  }
  return entries;
}

}  // namespace

uint32_t file_crc32(const std::string& path, uint64_t* size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) runtime_error(path, ": cannot open file");
  std::vector<uint8_t> buffer(1 << 20);
  uint32_t crc = 0;
  uint64_t total = 0;
  while (in) {
    in.read(reinterpret_cast<char*>(buffer.data()), static_cast<std::streamsize>(buffer.size()));
    size_t got = static_cast<size_t>(in.gcount());
    crc = crc32_update(crc, buffer.data(), got);
    total += got;
  }
  if (size) *size = total;
  return crc;
}

std::string checkpoint_folder_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step_%06lld", static_cast<long long>(step));
  return name;
}

std::string save_checkpoint(const std::string& ckpt_dir, int64_t step, const CheckpointContents& contents,
                            int keep_last) {
  std::error_code ec;
  fs::create_directories(ckpt_dir, ec);
  if (ec) runtime_error(ckpt_dir, ": cannot create checkpoint folder (", ec.message(), ")");
  const std::string name = checkpoint_folder_name(step);
  const std::string final_dir = ckpt_dir + "/" + name;
  const std::string tmp_dir = ckpt_dir + "/.tmp_" + name;
  fs::remove_all(tmp_dir, ec);  // left by a crash during an earlier save of this step
  fs::create_directories(tmp_dir, ec);
  if (ec) runtime_error(tmp_dir, ": cannot create folder (", ec.message(), ")");

  // A failed save (disk full) must not leave its partial folder holding the space it filled.
  try {
    write_safetensors(tmp_dir + "/" + kModelFile, contents.model, {{"step", std::to_string(step)}});
    write_safetensors(tmp_dir + "/" + kOptimizerFile, contents.optimizer, {{"step", std::to_string(step)}});
    write_text_file_synced(tmp_dir + "/" + kTrainerFile, contents.trainer.dump(2) + "\n");

    std::ostringstream manifest;
    manifest << kManifestHeader << "\n";
    for (const char* file : {kModelFile, kOptimizerFile, kTrainerFile}) {
      uint64_t bytes = 0;
      uint32_t crc = file_crc32(tmp_dir + "/" + file, &bytes);
      char hex[16];
      std::snprintf(hex, sizeof(hex), "%08x", crc);
      manifest << hex << " " << bytes << " " << file << "\n";
    }
    write_text_file_synced(tmp_dir + "/" + kManifestFile, manifest.str());
    fsync_path(tmp_dir, true);
  } catch (...) {
    fs::remove_all(tmp_dir, ec);
    throw;
  }

  // Re-saving a step (a resumed run that reaches it again) replaces the old folder.
  if (fs::exists(final_dir)) {
    const std::string old_dir = ckpt_dir + "/.old_" + name;
    fs::remove_all(old_dir, ec);
    fs::rename(final_dir, old_dir, ec);
    if (ec) runtime_error(final_dir, ": cannot move aside (", ec.message(), ")");
    fs::remove_all(old_dir, ec);
  }
  fs::rename(tmp_dir, final_dir, ec);
  if (ec) runtime_error(tmp_dir, ": cannot rename to ", final_dir, " (", ec.message(), ")");
  fsync_path(ckpt_dir, true);

  const std::string latest_tmp = ckpt_dir + "/.latest.tmp";
  write_text_file_synced(latest_tmp, name + "\n");
  fs::rename(latest_tmp, ckpt_dir + "/" + kLatestFile, ec);
  if (ec) runtime_error(ckpt_dir, "/latest: cannot update (", ec.message(), ")");
  fsync_path(ckpt_dir, true);

  if (keep_last > 0) {
    auto all = list_checkpoints(ckpt_dir);
    for (size_t i = static_cast<size_t>(keep_last); i < all.size(); ++i) {
      if (all[i].first == step) continue;
      fs::remove_all(all[i].second, ec);
      if (ec) spdlog::warn("checkpoint {}: cannot delete old folder ({})", all[i].second, ec.message());
    }
  }
  return final_dir;
}

void remove_partial_checkpoints(const std::string& ckpt_dir) {
  std::error_code ec;
  if (!fs::is_directory(ckpt_dir, ec)) return;
  std::vector<fs::path> partial, moved_aside;
  for (const auto& entry : fs::directory_iterator(ckpt_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".tmp_", 0) == 0 || name == ".latest.tmp") partial.push_back(entry.path());
    if (name.rfind(".old_", 0) == 0) moved_aside.push_back(entry.path());
  }
  // A save that replaced a step folder moves the old one aside first: when it stopped before its
  // new folder took the name, the old folder is the only copy of that step and goes back.
  for (const auto& path : moved_aside) {
    const fs::path original = path.parent_path() / path.filename().string().substr(5);
    if (fs::exists(original, ec)) {
      partial.push_back(path);
      continue;
    }
    fs::rename(path, original, ec);
    if (ec) spdlog::warn("{}: cannot move back to {} ({})", path.string(), original.string(), ec.message());
  }
  for (const auto& path : partial) {
    fs::remove_all(path, ec);
    if (ec)
      spdlog::warn("{}: cannot remove what an interrupted checkpoint save left ({})", path.string(), ec.message());
    else
      spdlog::info("removed {}, left by an interrupted checkpoint save", path.string());
  }
}

void verify_checkpoint(const std::string& step_dir) {
  auto entries = read_manifest(step_dir);
  for (const char* required : {kModelFile, kOptimizerFile, kTrainerFile}) {
    bool listed =
        std::any_of(entries.begin(), entries.end(), [&](const ManifestEntry& e) { return e.file == required; });
    if (!listed) runtime_error(step_dir, "/", kManifestFile, ": does not list ", required);
  }
  for (const auto& e : entries) {
    const std::string path = step_dir + "/" + e.file;
    if (!fs::exists(path)) runtime_error(path, ": missing (listed in MANIFEST)");
    std::error_code ec;
    const uint64_t bytes = fs::file_size(path, ec);  // fails for a folder
    if (ec) runtime_error(path, ": listed in MANIFEST but not a file (", ec.message(), ")");
    if (bytes != e.bytes) runtime_error(path, ": size ", bytes, " bytes, MANIFEST says ", e.bytes, " (truncated?)");
    uint32_t crc = file_crc32(path);
    if (crc != e.crc) {
      char got[16], want[16];
      std::snprintf(got, sizeof(got), "%08x", crc);
      std::snprintf(want, sizeof(want), "%08x", e.crc);
      runtime_error(path, ": checksum ", got, " does not match MANIFEST (", want, "): file is corrupt");
    }
  }
}

nlohmann::json read_checkpoint_trainer_state(const std::string& step_dir) {
  const std::string path = step_dir + "/" + kTrainerFile;
  std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    runtime_error(path, ": invalid JSON (", e.what(), ")");
  }
}

CheckpointContents load_checkpoint(const std::string& step_dir) {
  verify_checkpoint(step_dir);
  CheckpointContents c;
  c.model = read_safetensors(step_dir + "/" + kModelFile);
  c.optimizer = read_safetensors(step_dir + "/" + kOptimizerFile);
  c.trainer = read_checkpoint_trainer_state(step_dir);
  return c;
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& ckpt_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(ckpt_dir, ec)) return found;
  for (const auto& entry : fs::directory_iterator(ckpt_dir, ec)) {
    if (!entry.is_directory()) continue;
    int64_t step = parse_step_folder(entry.path().filename().string());
    if (step >= 0) found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return found;
}

std::string find_resume_checkpoint(const std::string& ckpt_dir) {
  // `latest` is a hint for humans and tools; the newest folder that verifies is authoritative
  // (a crash between the folder rename and the `latest` update leaves `latest` one behind).
  for (const auto& [step, path] : list_checkpoints(ckpt_dir)) {
    try {
      verify_checkpoint(path);
      return path;
    } catch (const Error& e) {
      spdlog::warn("skipping checkpoint {}: {}", path, e.what());
    }
  }
  return "";
}

std::string resolve_checkpoint_path(const std::string& path, const std::string& option) {
  if (fs::exists(path + "/" + kManifestFile)) return path;
  if (fs::is_directory(path)) {
    std::string found = find_resume_checkpoint(path);
    if (!found.empty()) return found;
  }
  usage_error(option, " ", path, ": no checkpoint there (expected a step_NNNNNN folder with a MANIFEST, ",
              "or a checkpoint folder holding such step folders)");
}

}  // namespace gum
