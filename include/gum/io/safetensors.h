#pragma once
// safetensors files (https://github.com/huggingface/safetensors, format notes in docs/design.md §4):
//   [8 bytes: little-endian u64 header length N][N bytes: JSON header][data section]
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} with offsets
// relative to the data section; "__metadata__" holds string pairs. Writing always adds
// {"format": "pt"} (older transformers refuse files without it). Reading is strict: any
// inconsistency is a gum::Error naming the file and, where it applies, the tensor.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "gum/core/tensor.h"

namespace gum {

// Where one tensor lies in a safetensors file.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t data_begin = 0;  // relative to the data section
  uint64_t data_end = 0;
};

// The validated header of a file: what a sharded checkpoint loader needs before reading data.
struct SafetensorsHeader {
  std::map<std::string, SafetensorsEntry> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t data_section_offset = 0;  // absolute file offset of the data section (8 + header length)
  uint64_t data_section_bytes = 0;
};

// Writes all tensors (in name order, contiguous from offset 0) and fsyncs the file.
void write_safetensors(const std::string& path, const TensorMap& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Reads and validates every tensor; `metadata`, when given, receives "__metadata__".
TensorMap read_safetensors(const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

// Reads and validates only the header (offsets checked against the file size).
SafetensorsHeader read_safetensors_header(const std::string& path);

// Reads the named tensors from a file whose header was read by read_safetensors_header.
// A name not in the header is an error naming the file and the tensor.
TensorMap read_safetensors_tensors(const std::string& path, const SafetensorsHeader& header,
                                   const std::vector<std::string>& names);

}  // namespace gum
