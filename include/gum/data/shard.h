#pragma once
// Token shards: the tokenized corpus, documents joined with EOS, read by mmap.
//
// Layout (little-endian), a 64-byte header then the payload:
//   0  char[8] magic "GUMTOKS\0"
//   8  u32     version (1)
//  12  u32     token width in bytes: 2 when vocab_size <= 65536, else 4
//  16  u64     token count
//  24  u64     vocab size of the tokenizer
//  32  u64     tokenizer fingerprint (checksum64 of the .model file)
//  40  u64     checksum64 of the payload bytes
//  48  u64     document count
//  56  u64     reserved (0)
//  64  payload: token_count tokens of the given width
#include <cstdint>
#include <string>
#include <vector>

#include "gum/data/checksum.h"

namespace gum {

constexpr uint32_t kShardVersion = 1;
constexpr uint64_t kShardHeaderBytes = 64;

struct ShardInfo {
  uint32_t token_bytes = 2;
  uint64_t token_count = 0;
  uint64_t vocab_size = 0;
  uint64_t tokenizer_fingerprint = 0;
  uint64_t payload_checksum = 0;
  uint64_t document_count = 0;
};

// Bytes per token for a vocabulary (16 bit while every id fits).
uint32_t shard_token_bytes(uint64_t vocab_size);

// Streams tokens into `path` + ".tmp" (each id checked against vocab_size); finish() writes the header,
// fsyncs and renames into place, so a crash never leaves a half-written shard under the real name.
class ShardWriter {
 public:
  ShardWriter(const std::string& path, uint64_t vocab_size, uint64_t tokenizer_fingerprint);
  ~ShardWriter();  // removes the temporary file when finish() was not reached
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Appends one document's tokens (the caller appends EOS).
  void append_document(const int32_t* tokens, size_t count);
  ShardInfo finish();

 private:
  void flush_buffer();

  std::string path_;
  std::string temporary_path_;
  int fd_ = -1;
  ShardInfo info_;
  Checksum64Stream checksum_;
  std::vector<uint8_t> buffer_;  // encoded tokens not yet written
};

// A read-only, memory-mapped shard. Opening validates magic, version, width, size, the
// tokenizer fingerprint (`expected_fingerprint`) and, when `verify_checksum`, the payload checksum;
// any failure is a runtime error naming the file.
class TokenShard {
 public:
  TokenShard(const std::string& path, uint64_t expected_fingerprint, bool verify_checksum = true);
  ~TokenShard();
  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&&) = delete;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const ShardInfo& info() const { return info_; }
  const std::string& path() const { return path_; }
  uint64_t token_count() const { return info_.token_count; }
  // Copies tokens [begin, begin + count) as int32.
  void copy_tokens(uint64_t begin, uint64_t count, int32_t* out) const;

 private:
  std::string path_;
  ShardInfo info_;
  const uint8_t* mapping_ = nullptr;
  size_t mapping_bytes_ = 0;
};

// Reads only the header of a shard (validated against the file size, no fingerprint check).
ShardInfo read_shard_info(const std::string& path);

}  // namespace gum
