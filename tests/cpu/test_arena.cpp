// Arena layout (include/gum/backend/arena.h): each tensor starts at a multiple of kArenaAlignment unless it
// joins the previous one, the gaps are zero, and bytes() is what arena_entry_bytes adds up to.
#include <catch2/catch.hpp>
#include <cstdint>
#include <vector>

#include "gum/backend/arena.h"

using namespace gum;

namespace {

uintptr_t address(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data); }

}  // namespace

TEST_CASE("arena: tensors start at multiples of 256 bytes, joined ones right after the previous, gaps zero") {
  auto backend = make_backend("cpu");
  // bf16: 5461 elements (llama_1b's intermediate size) end off any 16-byte boundary.
  const Arena arena(*backend, DType::BF16,
                    {{"a", Shape{5461}}, {"b", Shape{3, 7}}, {"c", Shape{10}, true}, {"d", Shape{1}}});
  // Offsets from the allocation, which is as aligned as the backend makes it (cudaMalloc: 256).
  const uintptr_t base = address(arena.view("a"));
  CHECK(base == address(arena.all()));
  CHECK(address(arena.view("b")) - base == 11008);  // 10922 bytes rounded up to 43 x 256
  CHECK(address(arena.view("c")) == address(arena.view("b")) + 21 * 2);
  CHECK(address(arena.view("d")) - base == 11008 + 256);  // b and c (62 bytes) share one entry
  CHECK(arena.bytes() == 11008 + 256 + 256);
  CHECK(arena.all().nbytes() == arena.bytes());

  backend->fill(arena.view("a"), 1.0f);
  backend->fill(arena.view("b"), 1.0f);
  std::vector<uint16_t> all(arena.bytes() / 2);
  backend->copy_to_host(all.data(), arena.all());
  CHECK(all[5460] != 0);
  for (size_t i = 5461; i < 11008 / 2; ++i) REQUIRE(all[i] == 0);  // the gap after a stays zero

  // Without joins, the arena is the sum of its entries: what memory plans count.
  const std::vector<NamedShape> layout = {{"x", Shape{5461}}, {"y", Shape{64}}, {"z", Shape{3, 3}}};
  size_t planned = 0;
  for (const NamedShape& entry : layout) planned += arena_entry_bytes(entry.shape, DType::F32);
  CHECK(Arena(*backend, DType::F32, layout).bytes() == planned);
  CHECK(arena_entry_bytes(Shape{64}, DType::F32) == 256);
  CHECK(arena_entry_bytes(Shape{65}, DType::F32) == 512);
}
