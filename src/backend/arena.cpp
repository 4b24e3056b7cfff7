#include "gum/backend/arena.h"

#include "gum/core/checked_math.h"
#include "gum/core/error.h"

namespace gum {

Arena::Arena(Backend& backend, DType dtype, const std::vector<NamedShape>& layout) : backend_(&backend), dtype_(dtype) {
  for (const auto& entry : layout) {
    const std::optional<int64_t> sum = checked_add(total_elems_, entry.shape.numel());
    if (!sum) runtime_error("arena: the tensors up to ", entry.name, " hold more elements than a 64-bit count holds");
    total_elems_ = *sum;
  }
  const std::optional<int64_t> bytes = checked_mul(total_elems_, static_cast<int64_t>(dtype_size(dtype)));
  if (!bytes) runtime_error("arena of ", total_elems_, " elements: its byte count does not fit in 64 bits");
  base_ = backend.allocate(static_cast<size_t>(*bytes));
  int64_t offset = 0;
  for (const auto& entry : layout) {
    GUM_CHECK(index_.count(entry.name) == 0, "duplicate arena tensor ", entry.name);
    auto* ptr = static_cast<uint8_t*>(base_) + static_cast<size_t>(offset) * dtype_size(dtype);
    index_[entry.name] = views_.size();
    names_.push_back(entry.name);
    views_.emplace_back(ptr, dtype, backend.device(), entry.shape);
    offset += entry.shape.numel();
  }
}

Arena::~Arena() {
  if (backend_ && base_) backend_->release(base_);
}

Arena::Arena(Arena&& other) noexcept { *this = std::move(other); }

Arena& Arena::operator=(Arena&& other) noexcept {
  if (this != &other) {
    if (backend_ && base_) backend_->release(base_);
    backend_ = other.backend_;
    base_ = other.base_;
    dtype_ = other.dtype_;
    total_elems_ = other.total_elems_;
    names_ = std::move(other.names_);
    views_ = std::move(other.views_);
    index_ = std::move(other.index_);
    other.backend_ = nullptr;
    other.base_ = nullptr;
  }
  return *this;
}

size_t Arena::index_of(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) runtime_error("no tensor named '", name, "' in the arena");
  return it->second;
}

const Tensor& Arena::view(const std::string& name) const { return views_[index_of(name)]; }

Tensor Arena::all() const {
  return Tensor(base_, dtype_, backend_ ? backend_->device() : Device::CPU, Shape{total_elems_});
}

size_t Arena::bytes() const { return static_cast<size_t>(total_elems_) * dtype_size(dtype_); }

}  // namespace gum
