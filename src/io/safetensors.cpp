#include "gum/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "gum/core/error.h"

namespace gum {
namespace {

// The reference implementation refuses headers above 100 MB; a larger one means a corrupt length.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

class FileDescriptor {
 public:
  FileDescriptor(const std::string& path, int flags, mode_t mode = 0644) : path_(path) {
    fd_ = ::open(path.c_str(), flags | O_CLOEXEC, mode);
    if (fd_ < 0) runtime_error("safetensors ", path, ": cannot open: ", std::strerror(errno));
  }
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;

  uint64_t size() const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) runtime_error("safetensors ", path_, ": cannot stat: ", std::strerror(errno));
    return static_cast<uint64_t>(st.st_size);
  }

  void write_all(const void* data, size_t bytes) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (bytes > 0) {
      ssize_t n = ::write(fd_, p, bytes);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) runtime_error("safetensors ", path_, ": write failed: ", std::strerror(errno));
      p += n;
      bytes -= static_cast<size_t>(n);
    }
  }

  // Reads exactly `bytes` at `offset`; `what` names the tensor (or header) for the message.
  void read_exact(void* data, size_t bytes, uint64_t offset, const std::string& what) const {
    auto* p = static_cast<uint8_t*>(data);
    while (bytes > 0) {
      ssize_t n = ::pread(fd_, p, bytes, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) runtime_error("safetensors ", path_, ": reading ", what, " failed: ", std::strerror(errno));
      if (n == 0) runtime_error("safetensors ", path_, ": file truncated while reading ", what);
      p += n;
      offset += static_cast<uint64_t>(n);
      bytes -= static_cast<size_t>(n);
    }
  }

  void sync_and_close() {
    if (::fsync(fd_) != 0) runtime_error("safetensors ", path_, ": fsync failed: ", std::strerror(errno));
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) runtime_error("safetensors ", path_, ": close failed: ", std::strerror(errno));
  }

 private:
  std::string path_;
  int fd_ = -1;
};

uint64_t read_u64_le(const uint8_t* b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
  return v;
}

void write_u64_le(uint64_t v, uint8_t* b) {
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
}

// Reads a non-negative JSON integer that fits in 64 bits, or fails naming the field.
uint64_t json_to_u64(const nlohmann::json& value, const std::string& path, const std::string& what) {
  if (!value.is_number_unsigned() && !(value.is_number_integer() && value.get<int64_t>() >= 0))
    runtime_error("safetensors ", path, ": ", what, " must be a non-negative integer, got ", value.dump());
  return value.get<uint64_t>();
}

SafetensorsEntry parse_entry(const std::string& path, const std::string& name, const nlohmann::json& info) {
  const std::string where = "tensor '" + name + "'";
  if (!info.is_object()) runtime_error("safetensors ", path, ": ", where, ": entry is not an object");
  for (auto it = info.begin(); it != info.end(); ++it)
    if (it.key() != "dtype" && it.key() != "shape" && it.key() != "data_offsets")
      runtime_error("safetensors ", path, ": ", where, ": unknown field '", it.key(), "'");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!info.contains(field)) runtime_error("safetensors ", path, ": ", where, ": missing field '", field, "'");

  SafetensorsEntry entry;
  entry.name = name;
  if (!info["dtype"].is_string()) runtime_error("safetensors ", path, ": ", where, ": dtype must be a string");
  entry.dtype = dtype_from_name(info["dtype"].get<std::string>(), "safetensors " + path + ": " + where);

  const auto& shape = info["shape"];
  if (!shape.is_array()) runtime_error("safetensors ", path, ": ", where, ": shape must be an array");
  if (shape.size() > static_cast<size_t>(kMaxDims))
    runtime_error("safetensors ", path, ": ", where, ": shape ", shape.dump(), " has more than ", kMaxDims,
                  " dimensions");
  std::vector<int64_t> dims;
  // numel * element size must fit comfortably in 64 bits; bound each step to avoid overflow.
  unsigned __int128 bytes = dtype_size(entry.dtype);
  for (const auto& d : shape) {
    uint64_t dim = json_to_u64(d, path, where + " shape entry");
    if (dim > (1ull << 62)) runtime_error("safetensors ", path, ": ", where, ": dimension ", dim, " too large");
    bytes *= dim;
    if (bytes > (static_cast<unsigned __int128>(1) << 62))
      runtime_error("safetensors ", path, ": ", where, ": shape ", shape.dump(), " is too large");
    dims.push_back(static_cast<int64_t>(dim));
  }
  entry.shape = Shape(dims);

  const auto& offsets = info["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2)
    runtime_error("safetensors ", path, ": ", where, ": data_offsets must be [begin, end], got ", offsets.dump());
  entry.data_begin = json_to_u64(offsets[0], path, where + " data_offsets[0]");
  entry.data_end = json_to_u64(offsets[1], path, where + " data_offsets[1]");
  if (entry.data_end < entry.data_begin)
    runtime_error("safetensors ", path, ": ", where, ": data_offsets [", entry.data_begin, ", ", entry.data_end,
                  "] end before begin");
  if (entry.data_end - entry.data_begin != static_cast<uint64_t>(bytes))
    runtime_error("safetensors ", path, ": ", where, ": shape ", entry.shape.str(), " of ", dtype_name(entry.dtype),
                  " needs ", static_cast<uint64_t>(bytes), " bytes but data_offsets [", entry.data_begin, ", ",
                  entry.data_end, "] hold ", entry.data_end - entry.data_begin);
  return entry;
}

// Offsets must tile the data section exactly: sorted by begin, each starts where the previous
// ended, the first at 0, the last at the end of the file.
void check_offsets_tile_data(const std::string& path, const SafetensorsHeader& header) {
  std::vector<const SafetensorsEntry*> order;
  for (const auto& [name, entry] : header.tensors) order.push_back(&entry);
  std::sort(order.begin(), order.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
    return a->data_begin != b->data_begin ? a->data_begin < b->data_begin : a->data_end < b->data_end;
  });
  uint64_t expected_begin = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry* e : order) {
    if (e->data_end > header.data_section_bytes)
      runtime_error("safetensors ", path, ": tensor '", e->name, "': data_offsets [", e->data_begin, ", ", e->data_end,
                    "] out of range: the data section holds ", header.data_section_bytes, " bytes (file truncated?)");
    if (e->data_begin < expected_begin)
      runtime_error("safetensors ", path, ": tensor '", e->name, "': data_offsets [", e->data_begin, ", ", e->data_end,
                    "] overlap tensor '", previous->name, "' which ends at ", expected_begin);
    if (e->data_begin > expected_begin)
      runtime_error("safetensors ", path, ": tensor '", e->name, "': gap in the data section: begins at ",
                    e->data_begin, " but the previous tensor", previous ? " '" + previous->name + "'" : "", " ends at ",
                    expected_begin);
    expected_begin = e->data_end;
    previous = e;
  }
  if (expected_begin != header.data_section_bytes)
    runtime_error("safetensors ", path, ": the tensors cover ", expected_begin, " bytes but the data section holds ",
                  header.data_section_bytes, " (trailing bytes)");
}

SafetensorsHeader read_header_from(const FileDescriptor& file, const std::string& path) {
  const uint64_t file_bytes = file.size();
  if (file_bytes < 8)
    runtime_error("safetensors ", path, ": file of ", file_bytes, " bytes is too short for the 8-byte header length");
  uint8_t length_bytes[8];
  file.read_exact(length_bytes, 8, 0, "the header length");
  const uint64_t header_bytes = read_u64_le(length_bytes);
  if (header_bytes < 2 || header_bytes > kMaxHeaderBytes)
    runtime_error("safetensors ", path, ": implausible header length ", header_bytes, " (not a safetensors file?)");
  if (header_bytes > file_bytes - 8)
    runtime_error("safetensors ", path, ": header length ", header_bytes, " exceeds the file size ", file_bytes,
                  " (file truncated?)");
  std::string text(header_bytes, '\0');
  file.read_exact(text.data(), header_bytes, 8, "the header");
  if (text[0] != '{') runtime_error("safetensors ", path, ": header does not start with '{' (not a safetensors file?)");

  // The parser keeps the last of two equal keys: a tensor named twice would silently lose one.
  std::set<std::string> names;
  auto reject_duplicate_names = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::key && depth == 1 && !names.insert(parsed.get<std::string>()).second)
      runtime_error("safetensors ", path, ": header names '", parsed.get<std::string>(), "' twice");
    return true;
  };
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text, reject_duplicate_names);
  } catch (const nlohmann::json::exception& e) {
    runtime_error("safetensors ", path, ": header is not valid JSON: ", e.what());
  }
  if (!json.is_object()) runtime_error("safetensors ", path, ": header is not a JSON object");

  SafetensorsHeader header;
  header.data_section_offset = 8 + header_bytes;
  header.data_section_bytes = file_bytes - header.data_section_offset;
  for (auto it = json.begin(); it != json.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) runtime_error("safetensors ", path, ": __metadata__ must be an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          runtime_error("safetensors ", path, ": __metadata__ key '", m.key(), "' must be a string, got ", m->dump());
        header.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    header.tensors[it.key()] = parse_entry(path, it.key(), *it);
  }
  check_offsets_tile_data(path, header);
  return header;
}

}  // namespace

void write_safetensors(const std::string& path, const TensorMap& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  nlohmann::json meta = nlohmann::json::object();
  for (const auto& [key, value] : metadata) meta[key] = value;
  meta["format"] = "pt";
  header["__metadata__"] = meta;

  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") usage_error("safetensors ", path, ": '__metadata__' is not a valid tensor name");
    const uint64_t bytes = static_cast<uint64_t>(tensor.numel()) * dtype_size(tensor.dtype);
    if (tensor.bytes.size() != bytes)
      runtime_error("safetensors ", path, ": tensor '", name, "' of shape ", tensor.shape.str(), " ",
                    dtype_name(tensor.dtype), " holds ", tensor.bytes.size(), " bytes, expected ", bytes);
    header[name] = {{"dtype", dtype_name(tensor.dtype)},
                    {"shape", tensor.shape.to_vector()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }

  std::string text = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned (the reference writer does the same).
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t length_bytes[8];
  write_u64_le(text.size(), length_bytes);

  FileDescriptor file(path, O_WRONLY | O_CREAT | O_TRUNC);
  file.write_all(length_bytes, 8);
  file.write_all(text.data(), text.size());
  for (const auto& [name, tensor] : tensors) file.write_all(tensor.bytes.data(), tensor.bytes.size());
  file.sync_and_close();
}

SafetensorsHeader read_safetensors_header(const std::string& path) {
  FileDescriptor file(path, O_RDONLY);
  return read_header_from(file, path);
}

namespace {
HostTensor read_tensor_data(const FileDescriptor& file, const SafetensorsHeader& header,
                            const SafetensorsEntry& entry) {
  HostTensor tensor(entry.dtype, entry.shape);
  GUM_CHECK(tensor.bytes.size() == entry.data_end - entry.data_begin, "tensor ", entry.name);
  file.read_exact(tensor.bytes.data(), tensor.bytes.size(), header.data_section_offset + entry.data_begin,
                  "tensor '" + entry.name + "'");
  return tensor;
}
}  // namespace

TensorMap read_safetensors_tensors(const std::string& path, const SafetensorsHeader& header,
                                   const std::vector<std::string>& names) {
  FileDescriptor file(path, O_RDONLY);
  const uint64_t expected_size = header.data_section_offset + header.data_section_bytes;
  if (file.size() != expected_size)
    runtime_error("safetensors ", path, ": file changed size since its header was read (", file.size(), " vs ",
                  expected_size, " bytes)");
  TensorMap out;
  for (const auto& name : names) {
    auto it = header.tensors.find(name);
    if (it == header.tensors.end()) runtime_error("safetensors ", path, ": no tensor named '", name, "'");
    out[name] = read_tensor_data(file, header, it->second);
  }
  return out;
}

TensorMap read_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  FileDescriptor file(path, O_RDONLY);
  SafetensorsHeader header = read_header_from(file, path);
  TensorMap out;
  for (const auto& [name, entry] : header.tensors) out[name] = read_tensor_data(file, header, entry);
  if (metadata) *metadata = header.metadata;
  return out;
}

}  // namespace gum
