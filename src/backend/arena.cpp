#include "gum/backend/arena.h"

#include <limits>

#include "gum/core/checked_math.h"
#include "gum/core/error.h"

namespace gum {

namespace {

int64_t aligned(int64_t bytes) {
  const auto a = static_cast<int64_t>(kArenaAlignment);
  return (bytes + a - 1) / a * a;
}

}  // namespace

size_t arena_entry_bytes(const Shape& shape, DType dtype) {
  return static_cast<size_t>(aligned(shape.numel() * static_cast<int64_t>(dtype_size(dtype))));
}

Arena::Arena(Backend& backend, DType dtype, const std::vector<NamedShape>& layout) : backend_(&backend), dtype_(dtype) {
  // Byte offsets first: an entry starts at the next aligned offset unless it joins the previous.
  std::vector<int64_t> offsets;
  int64_t end = 0;  // where the previous entry's data ends
  const auto element_bytes = static_cast<int64_t>(dtype_size(dtype));
  for (const auto& entry : layout) {
    const int64_t start = entry.joins_previous ? end : aligned(end);
    const std::optional<int64_t> bytes = checked_mul(entry.shape.numel(), element_bytes);
    const std::optional<int64_t> next = bytes ? checked_add(start, *bytes) : std::nullopt;
    if (!next || *next > std::numeric_limits<int64_t>::max() - static_cast<int64_t>(kArenaAlignment))
      runtime_error("arena: the tensors up to ", entry.name, " hold more bytes than a 64-bit count holds");
    offsets.push_back(start);
    end = *next;
  }
  total_elems_ = aligned(end) / element_bytes;
  base_ = backend.allocate(static_cast<size_t>(aligned(end)));
  for (size_t i = 0; i < layout.size(); ++i) {
    const NamedShape& entry = layout[i];
    GUM_CHECK(index_.count(entry.name) == 0, "duplicate arena tensor ", entry.name);
    index_[entry.name] = views_.size();
    names_.push_back(entry.name);
    views_.emplace_back(static_cast<uint8_t*>(base_) + offsets[i], dtype, backend.device(), entry.shape);
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
