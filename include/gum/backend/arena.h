#pragma once
// One allocation holding many named tensors in the order given, each starting at a multiple of
// kArenaAlignment bytes from the allocation (which cudaMalloc aligns to 256), except an entry
// marked `joins_previous`, which starts right where the previous one ends (so tensors that a
// fused op reads as one, like q/k/v weights, are adjacent).
#include <string>
#include <unordered_map>
#include <vector>

#include "gum/backend/backend.h"

namespace gum {

struct NamedShape {
  std::string name;
  Shape shape;
  bool joins_previous = false;
};

// cudaMalloc's alignment: cuBLAS picks its tensor-core kernels only for operands aligned to at
// least 16 bytes, and 256 keeps every view as aligned as a fresh allocation.
constexpr size_t kArenaAlignment = 256;

// The bytes an arena gives one entry of `shape` in `dtype`, the gap to the next aligned offset
// included: the one place memory plans and arenas agree on.
size_t arena_entry_bytes(const Shape& shape, DType dtype);

class Arena {
 public:
  Arena() = default;
  Arena(Backend& backend, DType dtype, const std::vector<NamedShape>& layout);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  Arena(Arena&& other) noexcept;
  Arena& operator=(Arena&& other) noexcept;

  size_t count() const { return views_.size(); }
  const std::string& name(size_t i) const { return names_[i]; }
  const Tensor& view(size_t i) const { return views_[i]; }
  // Throws naming the tensor when absent.
  const Tensor& view(const std::string& name) const;
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  size_t index_of(const std::string& name) const;
  // The whole arena as one flat tensor: all views in order, with the zero-filled alignment gaps
  // between them (a fill or a comparison of all() covers every view).
  Tensor all() const;
  size_t bytes() const;  // the allocation: views and gaps

 private:
  Backend* backend_ = nullptr;
  void* base_ = nullptr;
  DType dtype_ = DType::F32;
  int64_t total_elems_ = 0;
  std::vector<std::string> names_;
  std::vector<Tensor> views_;
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace gum
