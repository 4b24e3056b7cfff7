#include "gum/data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "gum/core/error.h"

namespace gum {

namespace {
// Token ids are stored as int32 in memory, so a vocabulary may not exceed 2^31 entries.
bool valid_shard_vocab_size(uint64_t vocab_size) { return vocab_size > 0 && vocab_size <= (1ull << 31); }
}  // namespace
namespace {

constexpr char kShardMagic[8] = {'G', 'U', 'M', 'T', 'O', 'K', 'S', '\0'};
constexpr size_t kWriteBufferBytes = 4 << 20;

void encode_header(const ShardInfo& info, uint8_t out[kShardHeaderBytes]) {
  std::memset(out, 0, kShardHeaderBytes);
  std::memcpy(out, kShardMagic, 8);
  const uint32_t version = kShardVersion;
  std::memcpy(out + 8, &version, 4);
  std::memcpy(out + 12, &info.token_bytes, 4);
  std::memcpy(out + 16, &info.token_count, 8);
  std::memcpy(out + 24, &info.vocab_size, 8);
  std::memcpy(out + 32, &info.tokenizer_fingerprint, 8);
  std::memcpy(out + 40, &info.payload_checksum, 8);
  std::memcpy(out + 48, &info.document_count, 8);
}

// Validates a header against the file size; errors name the shard.
ShardInfo decode_header(const std::string& path, const uint8_t* header, uint64_t file_bytes) {
  if (file_bytes < kShardHeaderBytes)
    runtime_error("shard ", path, ": file of ", file_bytes, " bytes is shorter than the ", kShardHeaderBytes,
                  "-byte header (truncated?)");
  if (std::memcmp(header, kShardMagic, 8) != 0) runtime_error("shard ", path, ": bad magic (not a gum token shard)");
  uint32_t version;
  std::memcpy(&version, header + 8, 4);
  if (version != kShardVersion)
    runtime_error("shard ", path, ": format version ", version, ", this build reads version ", kShardVersion,
                  " (re-run gum_train prepare)");
  ShardInfo info;
  std::memcpy(&info.token_bytes, header + 12, 4);
  std::memcpy(&info.token_count, header + 16, 8);
  std::memcpy(&info.vocab_size, header + 24, 8);
  std::memcpy(&info.tokenizer_fingerprint, header + 32, 8);
  std::memcpy(&info.payload_checksum, header + 40, 8);
  std::memcpy(&info.document_count, header + 48, 8);
  if (!valid_shard_vocab_size(info.vocab_size)) runtime_error("shard ", path, ": invalid vocab size ", info.vocab_size);
  if (info.token_bytes != 2 && info.token_bytes != 4)
    runtime_error("shard ", path, ": token width ", info.token_bytes, " bytes (expected 2 or 4)");
  if (info.token_bytes != shard_token_bytes(info.vocab_size))
    runtime_error("shard ", path, ": token width ", info.token_bytes, " does not match vocab size ", info.vocab_size);
  const uint64_t payload_bytes = file_bytes - kShardHeaderBytes;
  if (info.token_count > payload_bytes / info.token_bytes || payload_bytes != info.token_count * info.token_bytes)
    runtime_error("shard ", path, ": header says ", info.token_count, " tokens of ", info.token_bytes,
                  " bytes but the payload holds ", payload_bytes, " bytes (truncated or corrupt)");
  return info;
}

uint64_t file_size(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) runtime_error("shard ", path, ": cannot stat: ", std::strerror(errno));
  return static_cast<uint64_t>(st.st_size);
}

void write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (bytes > 0) {
    ssize_t n = ::write(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) runtime_error("shard ", path, ": write failed: ", std::strerror(errno));
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

}  // namespace

uint32_t shard_token_bytes(uint64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

ShardWriter::ShardWriter(const std::string& path, uint64_t vocab_size, uint64_t tokenizer_fingerprint)
    : path_(path), temporary_path_(path + ".tmp") {
  if (!valid_shard_vocab_size(vocab_size)) runtime_error("shard ", path, ": invalid vocab size ", vocab_size);
  info_.token_bytes = shard_token_bytes(vocab_size);
  info_.vocab_size = vocab_size;
  info_.tokenizer_fingerprint = tokenizer_fingerprint;
  fd_ = ::open(temporary_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) runtime_error("shard ", temporary_path_, ": cannot create: ", std::strerror(errno));
  // Placeholder header; the real one (count, checksum) is written by finish().
  uint8_t header[kShardHeaderBytes] = {};
  write_all(fd_, header, sizeof(header), temporary_path_);
  buffer_.reserve(kWriteBufferBytes);
}

ShardWriter::~ShardWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temporary_path_.c_str());
  }
}

void ShardWriter::append_document(const int32_t* tokens, size_t count) {
  GUM_CHECK(fd_ >= 0, "shard ", path_, " already finished");
  for (size_t i = 0; i < count; ++i) {
    const int32_t id = tokens[i];
    if (id < 0 || static_cast<uint64_t>(id) >= info_.vocab_size)
      runtime_error("shard ", path_, ": token id ", id, " in document ", info_.document_count,
                    " is outside the vocabulary of ", info_.vocab_size);
    if (info_.token_bytes == 2) {
      const uint16_t narrow = static_cast<uint16_t>(id);
      buffer_.insert(buffer_.end(), reinterpret_cast<const uint8_t*>(&narrow),
                     reinterpret_cast<const uint8_t*>(&narrow) + 2);
    } else {
      const uint32_t wide = static_cast<uint32_t>(id);
      buffer_.insert(buffer_.end(), reinterpret_cast<const uint8_t*>(&wide),
                     reinterpret_cast<const uint8_t*>(&wide) + 4);
    }
  }
  info_.token_count += count;
  ++info_.document_count;
  if (buffer_.size() >= kWriteBufferBytes) flush_buffer();
}

void ShardWriter::flush_buffer() {
  checksum_.update(buffer_.data(), buffer_.size());
  write_all(fd_, buffer_.data(), buffer_.size(), temporary_path_);
  buffer_.clear();
}

ShardInfo ShardWriter::finish() {
  GUM_CHECK(fd_ >= 0, "shard ", path_, " already finished");
  flush_buffer();
  info_.payload_checksum = checksum_.finish();
  uint8_t header[kShardHeaderBytes];
  encode_header(info_, header);
  if (::pwrite(fd_, header, sizeof(header), 0) != static_cast<ssize_t>(sizeof(header)))
    runtime_error("shard ", temporary_path_, ": writing the header failed: ", std::strerror(errno));
  if (::fsync(fd_) != 0) runtime_error("shard ", temporary_path_, ": fsync failed: ", std::strerror(errno));
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) runtime_error("shard ", temporary_path_, ": close failed: ", std::strerror(errno));
  if (std::rename(temporary_path_.c_str(), path_.c_str()) != 0)
    runtime_error("shard ", path_, ": rename from ", temporary_path_, " failed: ", std::strerror(errno));
  return info_;
}

ShardInfo read_shard_info(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) runtime_error("shard ", path, ": cannot open: ", std::strerror(errno));
  uint8_t header[kShardHeaderBytes] = {};
  const uint64_t bytes = file_size(fd, path);
  ssize_t n = bytes >= kShardHeaderBytes ? ::pread(fd, header, sizeof(header), 0) : 0;
  ::close(fd);
  if (bytes >= kShardHeaderBytes && n != static_cast<ssize_t>(sizeof(header)))
    runtime_error("shard ", path, ": cannot read the header");
  return decode_header(path, header, bytes);
}

TokenShard::TokenShard(const std::string& path, uint64_t expected_fingerprint, bool verify_checksum) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) runtime_error("shard ", path, ": cannot open: ", std::strerror(errno));
  const uint64_t bytes = file_size(fd, path);
  if (bytes < kShardHeaderBytes) {
    ::close(fd);
    runtime_error("shard ", path, ": file of ", bytes, " bytes is shorter than the header (truncated?)");
  }
  void* mapping = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);  // the mapping keeps the file referenced
  if (mapping == MAP_FAILED) runtime_error("shard ", path, ": mmap failed: ", std::strerror(errno));
  mapping_ = static_cast<const uint8_t*>(mapping);
  mapping_bytes_ = bytes;
  try {
    info_ = decode_header(path, mapping_, bytes);
    if (info_.tokenizer_fingerprint != expected_fingerprint)
      runtime_error("shard ", path, ": tokenized with another tokenizer (fingerprint ", std::hex,
                    info_.tokenizer_fingerprint, ", this run's tokenizer has ", expected_fingerprint, std::dec,
                    "); re-run gum_train prepare");
    if (verify_checksum) {
      ::madvise(const_cast<uint8_t*>(mapping_), mapping_bytes_, MADV_SEQUENTIAL);
      const uint64_t actual = checksum64(mapping_ + kShardHeaderBytes, bytes - kShardHeaderBytes);
      if (actual != info_.payload_checksum)
        runtime_error("shard ", path, ": payload checksum mismatch (stored ", std::hex, info_.payload_checksum,
                      ", computed ", actual, std::dec, "): the file is corrupt; re-run gum_train prepare");
      ::madvise(const_cast<uint8_t*>(mapping_), mapping_bytes_, MADV_RANDOM);
    }
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(mapping_), mapping_bytes_);
    mapping_ = nullptr;
    throw;
  }
}

TokenShard::~TokenShard() {
  if (mapping_) ::munmap(const_cast<uint8_t*>(mapping_), mapping_bytes_);
}

TokenShard::TokenShard(TokenShard&& other) noexcept
    : path_(std::move(other.path_)),
      info_(other.info_),
      mapping_(other.mapping_),
      mapping_bytes_(other.mapping_bytes_) {
  other.mapping_ = nullptr;
  other.mapping_bytes_ = 0;
}

void TokenShard::copy_tokens(uint64_t begin, uint64_t count, int32_t* out) const {
  GUM_CHECK(begin <= info_.token_count && count <= info_.token_count - begin, "tokens [", begin, ", ", begin + count,
            ") of shard ", path_, " with ", info_.token_count);
  const uint8_t* payload = mapping_ + kShardHeaderBytes;
  if (info_.token_bytes == 2) {
    for (uint64_t i = 0; i < count; ++i) {
      uint16_t v;
      std::memcpy(&v, payload + (begin + i) * 2, 2);
      out[i] = v;
    }
  } else {
    std::memcpy(out, payload + begin * 4, count * 4);
  }
}

}  // namespace gum
