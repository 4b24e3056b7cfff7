// Global-memory traffic of each launch, counted from the kernels' own loads and stores.
// The emulated kernels are compiled with GCC's ThreadSanitizer instrumentation (tools/cuda_emu/
// CMakeLists.txt, GUM_CUDA_EMU_COUNT_ACCESSES), which turns every load and store into a call of
// __tsan_{read,write}N(address); unlike AddressSanitizer's, it keeps a store to an address just
// loaded (a race detector needs both). The calls below keep those that fall in a
// device allocation (not shared memory, registers or fiber stacks) while a launch runs on this
// thread. Two sizes per launch (gum_cuda_emu/control.h, KernelCount):
// - moved: per thread block, the distinct 32-byte sectors it loads plus those it stores, times
//   32. A model of DRAM traffic in which reuse inside a block is free (L1, registers) and reuse
//   across blocks is not (no L2 is modelled), and uncoalesced accesses pay whole sectors.
// - required: the distinct bytes the launch reads plus the distinct bytes it writes, the least
//   any kernel computing the same outputs from the same inputs moves.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

#include "gum_cuda_emu/control.h"

namespace gum_emu {
namespace {

constexpr uintptr_t kSectorBytes = 32;

// Per allocation, created when a counted launch first touches it. Stamps instead of clearing:
// a sector's byte flags belong to the launch in `launch_stamp`, and a sector was loaded (stored)
// by the current block when its stamp equals the block's serial number.
struct Shadow {
  uintptr_t begin = 0, end = 0;
  std::vector<uint8_t> byte_flags;  // bit 0: read by the launch, bit 1: written
  std::vector<uint32_t> launch_stamp, load_block, store_block;
  explicit Shadow(uintptr_t b, size_t bytes) : begin(b), end(b + bytes) {}
  void ensure() {
    if (!byte_flags.empty()) return;
    const size_t sectors = (end - begin + kSectorBytes - 1) / kSectorBytes;
    byte_flags.assign(sectors * kSectorBytes, 0);
    launch_stamp.assign(sectors, 0);
    load_block.assign(sectors, 0);
    store_block.assign(sectors, 0);
  }
};

struct Registry {
  std::mutex mutex;
  std::vector<std::shared_ptr<Shadow>> allocations;  // sorted by begin
};
Registry& registry() {
  static Registry r;
  return r;
}

bool counting_enabled = std::getenv("GUM_CUDA_EMU_STATS") != nullptr;

// The launch running on this thread (launches are serialised; its fibers run on this thread).
struct ActiveLaunch {
  std::vector<std::shared_ptr<Shadow>> allocations;  // a snapshot of the registry
  uint32_t launch = 0, block = 0;
  AccessCount count;
};
thread_local ActiveLaunch* active = nullptr;
uint32_t launch_serial = 0, block_serial = 0;  // under the launch lock of the scheduler

Shadow* find(ActiveLaunch& a, uintptr_t address) {
  auto it = std::upper_bound(a.allocations.begin(), a.allocations.end(), address,
                             [](uintptr_t x, const std::shared_ptr<Shadow>& s) { return x < s->begin; });
  if (it == a.allocations.begin()) return nullptr;
  Shadow* s = (it - 1)->get();
  return address < s->end ? s : nullptr;
}

void record(uintptr_t address, size_t bytes, bool store) {
  ActiveLaunch* a = active;
  if (!a || bytes == 0) return;
  Shadow* s = find(*a, address);
  if (!s) return;
  s->ensure();
  const uint8_t bit = store ? 2 : 1;
  const uintptr_t first = (address - s->begin) / kSectorBytes, last = (address + bytes - 1 - s->begin) / kSectorBytes;
  for (uintptr_t sector = first; sector <= last; ++sector) {
    std::vector<uint32_t>& seen = store ? s->store_block : s->load_block;
    if (seen[sector] != a->block) {
      seen[sector] = a->block;
      a->count.moved_bytes += kSectorBytes;
    }
    if (s->launch_stamp[sector] != a->launch) {
      s->launch_stamp[sector] = a->launch;
      std::fill_n(s->byte_flags.begin() + ptrdiff_t(sector * kSectorBytes), kSectorBytes, uint8_t(0));
    }
  }
  for (uintptr_t i = address - s->begin; i < address - s->begin + bytes; ++i) {
    if (s->byte_flags[i] & bit) continue;
    s->byte_flags[i] |= bit;
    (store ? a->count.written_bytes : a->count.read_bytes) += 1;
  }
}

}  // namespace

bool accesses_instrumented() { return GUM_CUDA_EMU_COUNT_ACCESSES != 0; }
void set_access_counting(bool on) { counting_enabled = on; }
bool access_counting() { return counting_enabled && accesses_instrumented(); }

void count_tensor_flops(double flops) {
  if (active) active->count.tensor_flops += flops;
}

void register_allocation(const void* ptr, size_t bytes) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto s = std::make_shared<Shadow>(reinterpret_cast<uintptr_t>(ptr), bytes ? bytes : 1);
  auto it = std::upper_bound(r.allocations.begin(), r.allocations.end(), s->begin,
                             [](uintptr_t x, const std::shared_ptr<Shadow>& a) { return x < a->begin; });
  r.allocations.insert(it, std::move(s));
}

void unregister_allocation(const void* ptr) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  const auto begin = reinterpret_cast<uintptr_t>(ptr);
  r.allocations.erase(std::remove_if(r.allocations.begin(), r.allocations.end(),
                                     [&](const std::shared_ptr<Shadow>& s) { return s->begin == begin; }),
                      r.allocations.end());
}

void begin_launch_accesses() {
  if (!access_counting()) return;
  static thread_local ActiveLaunch launch;
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    launch.allocations = r.allocations;
  }
  launch.launch = ++launch_serial;
  launch.count = AccessCount{};
  active = &launch;
}

void begin_block_accesses() {
  if (active) active->block = ++block_serial;
}

AccessCount end_launch_accesses() {
  if (!active) return AccessCount{};
  const AccessCount count = active->count;
  active->allocations.clear();
  active = nullptr;
  return count;
}

}  // namespace gum_emu

#if GUM_CUDA_EMU_COUNT_ACCESSES
// The instrumentation's entry points (GCC -fsanitize=thread, compiled but not linked with its
// runtime): every load and store of the instrumented files, aligned or not, and the ranges of
// aggregate copies. Not in sanitizer builds whose runtime defines the same names.
extern "C" {
#define GUM_EMU_ACCESS(N)                                                                     \
  void __tsan_read##N(void* address) { gum_emu::record(uintptr_t(address), N, false); }           \
  void __tsan_write##N(void* address) { gum_emu::record(uintptr_t(address), N, true); }           \
  void __tsan_unaligned_read##N(void* address) { gum_emu::record(uintptr_t(address), N, false); } \
  void __tsan_unaligned_write##N(void* address) { gum_emu::record(uintptr_t(address), N, true); }
GUM_EMU_ACCESS(1)
GUM_EMU_ACCESS(2)
GUM_EMU_ACCESS(4)
GUM_EMU_ACCESS(8)
GUM_EMU_ACCESS(16)
#undef GUM_EMU_ACCESS
void __tsan_read_range(void* address, size_t bytes) { gum_emu::record(uintptr_t(address), bytes, false); }
void __tsan_write_range(void* address, size_t bytes) { gum_emu::record(uintptr_t(address), bytes, true); }
// Hooks the instrumentation also calls, with nothing to do here.
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void**, void*) {}
}
#endif
