// The launch scheduler: blocks one at a time, each CUDA thread a fiber that runs until it reaches
// a synchronisation point. When no fiber can run, pending warp collectives are
// resolved (every lane of the mask waiting with the same mask), else the block barrier (every
// live thread waiting at the same __syncthreads); anything else is an error naming the kernel,
// block, thread and source lines, and the launch stops there.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_runtime.h"
#include "errors.h"
#include "gum_cuda_emu/control.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define GUM_EMU_ASAN 1
#endif

// Bounds of the __shared__ variables of the whole program (see __shared__ in device.h); weak so
// that a program without any links too.
extern "C" char __start_gum_emu_shared[] __attribute__((weak));
extern "C" char __stop_gum_emu_shared[] __attribute__((weak));

namespace {
char* shared_begin() { return __start_gum_emu_shared; }
char* shared_end() { return __stop_gum_emu_shared; }
}  // namespace

// Fiber switch (x86-64 System V): saves the callee-saved registers on the current stack, stores
// the stack pointer in *save, loads `next` and restores what it saved there. About 20 times
// cheaper than swapcontext, which also saves the signal mask with a system call. The kernels
// never change MXCSR or the x87 control word, so those are not switched.
extern "C" void gum_emu_switch_stack(void** save, void* next);
asm(R"(
  .text
  .p2align 4
  .globl gum_emu_switch_stack
  .hidden gum_emu_switch_stack
  .type gum_emu_switch_stack, @function
gum_emu_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size gum_emu_switch_stack, .-gum_emu_switch_stack
)");

namespace gum_emu {
namespace {

constexpr int kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockDimZ = 64, kMaxGridDimYZ = 65535, kMaxGridDimX = 0x7fffffffu;
constexpr size_t kMaxSharedBytes = 48 * 1024;
#if defined(GUM_EMU_ASAN)
constexpr size_t kStackBytes = 1024 * 1024;  // instrumented frames are several times larger
#else
constexpr size_t kStackBytes = 256 * 1024;
#endif
constexpr size_t kStackStagger = 208;  // bytes, a multiple of 16; 256 colours span 52 KiB

enum class State { kRunnable, kAtBarrier, kAtWarpOp, kExited, kFailed };

struct Fiber {
  void* sp = nullptr;     // saved stack pointer while switched out
  char* stack = nullptr;  // kStackBytes, the lowest page a guard page
  uint3 index{};
  State state = State::kRunnable;
  Site site;
  WarpOp op = WarpOp::kSync;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  int operand = 0, width = 0;
#if defined(GUM_EMU_ASAN)
  void* fake_stack = nullptr;
#endif
};

enum class Order { kForward, kReverse, kRandom };

struct Schedule {
  Order order = Order::kForward;
  uint64_t seed = 0;
};

Schedule parse_schedule(const std::string& spec) {
  Schedule s;
  if (spec == "forward") return s;
  if (spec == "reverse") {
    s.order = Order::kReverse;
    return s;
  }
  if (spec.rfind("random", 0) == 0) {
    s.order = Order::kRandom;
    if (spec.size() == 6) {
      s.seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
      std::fprintf(stderr, "gum_cuda_emu: schedule random:%llu\n", static_cast<unsigned long long>(s.seed));
      return s;
    }
    if (spec[6] == ':' && spec.size() > 7) {
      char* end = nullptr;
      s.seed = std::strtoull(spec.c_str() + 7, &end, 10);
      if (*end == '\0') return s;
    }
  }
  throw std::invalid_argument("GUM_CUDA_EMU_SCHEDULE: '" + spec + "' is not forward, reverse or random[:SEED]");
}

std::string format_site(const Site& site) { return std::string(site.file_name()) + ":" + std::to_string(site.line()); }

std::string format_index(uint3 i) {
  return "(" + std::to_string(i.x) + "," + std::to_string(i.y) + "," + std::to_string(i.z) + ")";
}

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::kSync:
      return "__syncwarp";
    case WarpOp::kShfl:
      return "__shfl_sync";
    case WarpOp::kShflUp:
      return "__shfl_up_sync";
    case WarpOp::kShflDown:
      return "__shfl_down_sync";
    case WarpOp::kShflXor:
      return "__shfl_xor_sync";
    case WarpOp::kBallot:
      return "__ballot_sync";
    case WarpOp::kAny:
      return "__any_sync";
    case WarpOp::kAll:
      return "__all_sync";
    case WarpOp::kWmmaFill:
      return "wmma::fill_fragment";
    case WarpOp::kWmmaLoad:
      return "wmma::load_matrix_sync";
    case WarpOp::kWmmaStore:
      return "wmma::store_matrix_sync";
    case WarpOp::kWmmaMma:
      return "wmma::mma_sync";
  }
  return "?";
}

// A launch's failure inside the scheduler: unwinds run_grid, never a fiber.
struct KernelError {
  cudaError_t error;
  std::string message;
};

class Scheduler {
 public:
  Scheduler() {
    const char* env = std::getenv("GUM_CUDA_EMU_SCHEDULE");
    set_schedule(env && *env ? env : "forward");
  }
  void run(const LaunchConfig& config, void (*body)(void*), void* context);
  void set_schedule(const std::string& spec) {
    schedule_ = parse_schedule(spec);
    spec_ = spec;
    rng_.seed(schedule_.seed);
  }
  const std::string& schedule_spec() const { return spec_; }

  // Called on a fiber's stack.
  void syncthreads(Site site);
  uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int operand, int width, Site site);
  [[noreturn]] void device_error(const char* what, Site site);
  static void fiber_main();

 private:
  void check_config(const LaunchConfig& config) const;
  void run_block(uint3 block);
  void resume(Fiber& f);
  void yield_to_scheduler(bool exiting);
  void after_switch_in(Fiber& f);
  bool resolve_warp_ops();
  bool resolve_warp_if_ready(int thread);
  void resolve_warp(int first_lane, int lanes);
  bool release_barrier();
  [[noreturn]] void fail(const Fiber& f, const std::string& what) const;
  std::vector<int>& order_for_round();

  Schedule schedule_;
  std::string spec_ = "forward";
  std::mt19937_64 rng_;
  std::vector<Fiber> fibers_ = std::vector<Fiber>(kMaxThreadsPerBlock);  // stacks persist across launches
  std::vector<int> order_;
  int threads_ = 0;
  Fiber* current_ = nullptr;
  std::string device_error_;  // the message of the fiber in State::kFailed
  void* scheduler_sp_ = nullptr;
  const LaunchConfig* config_ = nullptr;
  void (*body_)(void*) = nullptr;
  void* body_context_ = nullptr;
#if defined(GUM_EMU_ASAN)
  bool stacks_dirty_ = false;  // a launch was abandoned with fibers mid-frame (ASan shadow stale)
  void* scheduler_fake_stack_ = nullptr;
  const void* scheduler_stack_bottom_ = nullptr;
  size_t scheduler_stack_size_ = 0;
#endif
};

Scheduler& scheduler() {
  static Scheduler s;
  return s;
}

std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

void Scheduler::fail(const Fiber& f, const std::string& what) const {
  std::ostringstream s;
  s << "gum_cuda_emu: kernel " << config_->kernel << " (launched at " << config_->file << ":" << config_->line
    << ") block " << format_index(blockIdx) << " thread " << format_index(f.index) << ": " << what;
  throw KernelError{cudaErrorLaunchFailure, s.str()};
}

void Scheduler::check_config(const LaunchConfig& c) const {
  const dim3 g = c.grid, b = c.block;
  std::ostringstream s;
  const uint64_t threads = uint64_t(b.x) * b.y * b.z;
  if (threads == 0 || threads > kMaxThreadsPerBlock || b.z > kMaxBlockDimZ)
    s << "block (" << b.x << "," << b.y << "," << b.z << ") has " << threads << " threads (1 to " << kMaxThreadsPerBlock
      << ", z at most " << kMaxBlockDimZ << ")";
  else if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > kMaxGridDimX || g.y > kMaxGridDimYZ || g.z > kMaxGridDimYZ)
    s << "grid (" << g.x << "," << g.y << "," << g.z << ") out of range (x 1 to 2^31-1, y and z 1 to 65535)";
  else if (c.dynamic_shared_bytes > kMaxSharedBytes)
    s << c.dynamic_shared_bytes << " bytes of dynamic shared memory (at most " << kMaxSharedBytes << ")";
  else
    return;
  throw KernelError{cudaErrorInvalidConfiguration, "gum_cuda_emu: kernel " + std::string(c.kernel) + " (launched at " +
                                                       c.file + ":" + std::to_string(c.line) +
                                                       "): invalid configuration: " + s.str()};
}

std::vector<int>& Scheduler::order_for_round() {
  if (schedule_.order == Order::kRandom) std::shuffle(order_.begin(), order_.end(), rng_);
  return order_;
}

void Scheduler::run(const LaunchConfig& config, void (*body)(void*), void* context) {
  config_ = &config;
  body_ = body;
  body_context_ = context;
  check_config(config);
  gridDim = config.grid;
  blockDim = config.block;
  threads_ = static_cast<int>(config.block.x * config.block.y * config.block.z);
  for (int i = 0; i < threads_; ++i) {
    Fiber& f = fibers_[i];
    if (!f.stack) {
      void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) throw KernelError{cudaErrorMemoryAllocation, "gum_cuda_emu: cannot map a fiber stack"};
      mprotect(p, size_t(sysconf(_SC_PAGESIZE)), PROT_NONE);  // overflow faults instead of corrupting
      f.stack = static_cast<char*>(p);
    }
    f.index = uint3{unsigned(i) % config.block.x, unsigned(i) / config.block.x % config.block.y,
                    unsigned(i) / (config.block.x * config.block.y)};
  }
#if defined(GUM_EMU_ASAN)
  if (stacks_dirty_)
    for (Fiber& f : fibers_)
      if (f.stack) __asan_unpoison_memory_region(f.stack + sysconf(_SC_PAGESIZE), kStackBytes - sysconf(_SC_PAGESIZE));
  stacks_dirty_ = false;
#endif
  order_.resize(threads_);
  std::iota(order_.begin(), order_.end(), 0);
  if (schedule_.order == Order::kReverse) std::reverse(order_.begin(), order_.end());

  const uint64_t blocks = uint64_t(config.grid.x) * config.grid.y * config.grid.z;
  std::vector<uint64_t> block_order;
  if (schedule_.order != Order::kForward) {
    block_order.resize(blocks);
    std::iota(block_order.begin(), block_order.end(), 0);
    if (schedule_.order == Order::kReverse)
      std::reverse(block_order.begin(), block_order.end());
    else
      std::shuffle(block_order.begin(), block_order.end(), rng_);
  }
  for (uint64_t k = 0; k < blocks; ++k) {
    const uint64_t b = block_order.empty() ? k : block_order[k];
    const uint64_t plane = uint64_t(config.grid.x) * config.grid.y;
    begin_block_accesses();
    run_block(uint3{unsigned(b % config.grid.x), unsigned(b / config.grid.x % config.grid.y), unsigned(b / plane)});
  }
}

void Scheduler::run_block(uint3 block) {
  blockIdx = block;
  if (shared_begin() != shared_end())  // uninitialised shared reads see NaN / -1
    std::memset(shared_begin(), 0xFF, size_t(shared_end() - shared_begin()));
  for (int i = 0; i < threads_; ++i) {
    // A fresh frame for gum_emu_switch_stack to pop: six zero registers, then fiber_main as the
    // return address, above it a null return address for fiber_main (which never returns), so
    // fiber_main starts with the stack alignment of a called function.
    // The tops are staggered: stacks kStackBytes apart would all map to the same cache sets.
    Fiber& f = fibers_[i];
    void** top = reinterpret_cast<void**>(f.stack + kStackBytes - size_t(i % 256) * kStackStagger);
    top[-1] = nullptr;
    top[-2] = reinterpret_cast<void*>(&Scheduler::fiber_main);
    for (int r = 3; r <= 8; ++r) top[-r] = nullptr;
    f.sp = top - 8;
    f.state = State::kRunnable;
  }
  int exited = 0;
  try {
    while (exited < threads_) {
      bool warp_ahead = false;
      for (int i : order_for_round()) {
        if (fibers_[i].state != State::kRunnable) continue;
        resume(fibers_[i]);
        if (fibers_[i].state == State::kFailed) fail(fibers_[i], device_error_);
        if (fibers_[i].state == State::kExited) ++exited;
        // A warp whose collective is complete runs on before the other warps resume (a new round),
        // as a warp may on the GPU: a missing __syncthreads before a collective then shows.
        if (fibers_[i].state == State::kAtWarpOp && resolve_warp_if_ready(i)) {
          warp_ahead = true;
          break;
        }
      }
      if (warp_ahead || exited == threads_ || resolve_warp_ops() || release_barrier()) continue;
      throw KernelError{cudaErrorLaunchFailure,
                        "gum_cuda_emu: kernel " + std::string(config_->kernel) + ": no thread can proceed"};
    }
  } catch (...) {
#if defined(GUM_EMU_ASAN)
    stacks_dirty_ = true;
#endif
    throw;
  }
}

void Scheduler::resume(Fiber& f) {
  current_ = &f;
  threadIdx = f.index;
#if defined(GUM_EMU_ASAN)
  __sanitizer_start_switch_fiber(&scheduler_fake_stack_, f.stack, kStackBytes);
#endif
  gum_emu_switch_stack(&scheduler_sp_, f.sp);
#if defined(GUM_EMU_ASAN)
  __sanitizer_finish_switch_fiber(scheduler_fake_stack_, nullptr, nullptr);
#endif
  current_ = nullptr;
}

void Scheduler::after_switch_in(Fiber& f) {
#if defined(GUM_EMU_ASAN)
  __sanitizer_finish_switch_fiber(f.fake_stack, &scheduler_stack_bottom_, &scheduler_stack_size_);
#else
  (void)f;
#endif
}

void Scheduler::yield_to_scheduler(bool exiting) {
  Fiber& f = *current_;
#if defined(GUM_EMU_ASAN)
  __sanitizer_start_switch_fiber(exiting ? nullptr : &f.fake_stack, scheduler_stack_bottom_, scheduler_stack_size_);
#else
  (void)exiting;
#endif
  gum_emu_switch_stack(&f.sp, scheduler_sp_);
  after_switch_in(f);
}

void Scheduler::fiber_main() {
  Scheduler& s = scheduler();
#if defined(GUM_EMU_ASAN)
  s.current_->fake_stack = nullptr;
#endif
  s.after_switch_in(*s.current_);
  s.body_(s.body_context_);
  s.current_->state = State::kExited;
  s.yield_to_scheduler(true);
  std::abort();  // an exited fiber is never resumed
}

void Scheduler::syncthreads(Site site) {
  Fiber& f = *current_;
  f.state = State::kAtBarrier;
  f.site = site;
  yield_to_scheduler(false);
}

uint64_t Scheduler::warp_collective(WarpOp op, unsigned mask, uint64_t value, int operand, int width, Site site) {
  Fiber& f = *current_;
  f.state = State::kAtWarpOp;
  f.op = op;
  f.mask = mask;
  f.value = value;
  f.operand = operand;
  f.width = width;
  f.site = site;
  yield_to_scheduler(false);
  return f.result;
}

void Scheduler::device_error(const char* what, Site site) {
  Fiber& f = *current_;
  f.state = State::kFailed;
  device_error_ = std::string(what) + " at " + format_site(site);
  yield_to_scheduler(false);
  std::abort();  // a failed fiber is never resumed
}

// Every fiber is blocked or exited. Resolves each warp collective whose mask has fully arrived.
bool Scheduler::resolve_warp_ops() {
  bool resolved = false;
  for (int first = 0; first < threads_; first += warpSize) {
    const int lanes = std::min(warpSize, threads_ - first);
    for (int lane = 0; lane < lanes; ++lane) {
      if (fibers_[first + lane].state != State::kAtWarpOp) continue;
      resolve_warp(first, lanes);
      resolved = true;
      break;
    }
  }
  return resolved;
}

// Resolves the collective of `thread`'s warp when every lane it names waits at a collective
// (resolve_warp then checks that they agree); false while one of them may still run.
bool Scheduler::resolve_warp_if_ready(int thread) {
  const int first = thread / warpSize * warpSize, lanes = std::min(warpSize, threads_ - first);
  int leader = 0;  // the lane resolve_warp resolves for
  while (fibers_[first + leader].state != State::kAtWarpOp) ++leader;
  const unsigned mask = fibers_[first + leader].mask;
  for (int lane = 0; lane < warpSize; ++lane)
    if ((mask >> lane & 1u) && (lane >= lanes || fibers_[first + lane].state != State::kAtWarpOp)) return false;
  resolve_warp(first, lanes);
  return true;
}

// Resolves the collective of the warp's lowest waiting lane, or fails naming what blocks it.
void Scheduler::resolve_warp(int first, int lanes) {
  int leader = 0;
  while (fibers_[first + leader].state != State::kAtWarpOp) ++leader;
  const Fiber& f = fibers_[first + leader];
  const unsigned mask = f.mask;
  if (!(mask >> leader & 1u)) {
    std::ostringstream s;
    s << op_name(f.op) << " at " << format_site(f.site) << " with mask 0x" << std::hex << mask
      << " that does not name the calling lane " << std::dec << leader;
    fail(f, s.str());
  }
  for (int lane = 0; lane < warpSize; ++lane) {
    if (!(mask >> lane & 1u)) continue;
    const Fiber* other = lane < lanes ? &fibers_[first + lane] : nullptr;
    if (other && other->state == State::kAtWarpOp && other->mask == mask && other->op == f.op) {
      if (f.op < WarpOp::kWmmaFill || other->value == f.value) continue;
      fail(*other, std::string(op_name(f.op)) + " at " + format_site(other->site) + ": lane " + std::to_string(lane) +
                       " passes other arguments (pointer, ldm, layout or value) than lane " + std::to_string(leader) +
                       " at " + format_site(f.site));
    }
    std::ostringstream s;
    s << op_name(f.op) << " at " << format_site(f.site) << " with mask 0x" << std::hex << mask << std::dec << ": lane "
      << lane;
    if (!other)
      s << " does not exist (the block has " << threads_ << " threads)";
    else if (other->state == State::kExited)
      s << " has exited";
    else if (other->state == State::kAtBarrier)
      s << " waits at __syncthreads at " << format_site(other->site) << " (deadlock)";
    else
      s << " is at " << op_name(other->op) << " at " << format_site(other->site) << " with mask 0x" << std::hex
        << other->mask << " (lanes disagree)";
    fail(f, s.str());
  }
  unsigned votes = 0;
  for (int lane = 0; lane < warpSize; ++lane)
    if ((mask >> lane & 1u) && fibers_[first + lane].value) votes |= 1u << lane;
  for (int lane = 0; lane < warpSize; ++lane) {
    if (!(mask >> lane & 1u)) continue;
    Fiber& self = fibers_[first + lane];
    self.state = State::kRunnable;
    switch (f.op) {
      case WarpOp::kSync:
      case WarpOp::kWmmaFill:
      case WarpOp::kWmmaLoad:
      case WarpOp::kWmmaStore:
      case WarpOp::kWmmaMma:
        break;
      case WarpOp::kBallot:
        self.result = votes;
        break;
      case WarpOp::kAny:
        self.result = votes != 0;
        break;
      case WarpOp::kAll:
        self.result = votes == mask;
        break;
      default: {
        const int width = self.width;
        if (width <= 0 || width > warpSize || (width & (width - 1)))
          fail(self, std::string(op_name(self.op)) + " at " + format_site(self.site) + ": width " +
                         std::to_string(width) + " is not a power of two up to 32");
        const int segment = lane / width * width;
        int source = lane;
        if (self.op == WarpOp::kShfl) source = segment + (self.operand % width + width) % width;
        if (self.op == WarpOp::kShflUp && lane - self.operand >= segment) source = lane - self.operand;
        if (self.op == WarpOp::kShflDown && lane + self.operand < segment + width) source = lane + self.operand;
        if (self.op == WarpOp::kShflXor && ((lane ^ self.operand) < segment + width)) source = lane ^ self.operand;
        if (source < 0 || source >= warpSize || !(mask >> source & 1u))
          fail(self, std::string(op_name(self.op)) + " at " + format_site(self.site) + " reads lane " +
                         std::to_string(source) + ", which is not in the mask");
        self.result = fibers_[first + source].value;
      }
    }
  }
}

// Every fiber is blocked or exited and no warp collective is pending (resolve_warp_ops resolves
// or fails each): release the barrier
// if every live thread waits at the same one, else fail (divergent barrier or deadlock).
bool Scheduler::release_barrier() {
  const Fiber* at_barrier = nullptr;
  for (int i = 0; i < threads_; ++i) {
    const Fiber& f = fibers_[i];
    if (f.state != State::kAtBarrier) continue;
    if (!at_barrier) {
      at_barrier = &f;
    } else if (f.site.line() != at_barrier->site.line() ||
               std::strcmp(f.site.file_name(), at_barrier->site.file_name()) != 0) {
      fail(f, "divergent __syncthreads: this thread waits at " + format_site(f.site) + ", thread " +
                  format_index(at_barrier->index) + " at " + format_site(at_barrier->site));
    }
  }
  if (!at_barrier) return false;
  for (int i = 0; i < threads_; ++i)
    if (fibers_[i].state == State::kAtBarrier) fibers_[i].state = State::kRunnable;
  return true;
}

}  // namespace

void syncthreads(Site site) { scheduler().syncthreads(site); }

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int operand, int width, Site site) {
  return scheduler().warp_collective(op, mask, value, operand, width, site);
}

void device_error(const char* what, Site site) { scheduler().device_error(what, site); }

void run_grid(const LaunchConfig& config, void (*body)(void*), void* context) {
  count_launch(config.kernel,
               1ull * config.grid.x * config.grid.y * config.grid.z * config.block.x * config.block.y * config.block.z);
  std::lock_guard<std::mutex> lock(launch_mutex());
  begin_launch_accesses();
  try {
    scheduler().run(config, body, context);
  } catch (const KernelError& e) {
    end_launch_accesses();
    raise_error(e.error, e.message);
  }
  count_launch_accesses(config.kernel, end_launch_accesses());
}

void set_schedule(const std::string& spec) {
  std::lock_guard<std::mutex> lock(launch_mutex());
  scheduler().set_schedule(spec);
}

std::string schedule() {
  std::lock_guard<std::mutex> lock(launch_mutex());
  return scheduler().schedule_spec();
}

}  // namespace gum_emu
