#pragma once
// One allocation holding many named tensors, laid out contiguously in the order given
// (so tensors that a fused op reads together, like q/k/v weights, are adjacent).
#include <string>
#include <unordered_map>
#include <vector>

#include "gum/backend/backend.h"

namespace gum {

struct NamedShape {
  std::string name;
  Shape shape;
};

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
  // The whole arena as one flat tensor (all views, in order, without gaps).
  Tensor all() const;
  size_t bytes() const;

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
