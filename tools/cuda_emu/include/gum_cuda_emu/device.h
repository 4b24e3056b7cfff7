#pragma once
// Device side of the CUDA emulator: what a .cu file sees once compiled by the host compiler.
// A launch runs its blocks one at a time on the calling thread; every CUDA thread of a block is a
// fiber that runs until it reaches __syncthreads, a warp collective or its end (scheduler.cpp).
// Built-in indices are plain globals the scheduler sets before resuming a fiber; they change only
// inside the (out-of-line) synchronisation calls, so compiled code never caches a stale value.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda_runtime_api.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One block runs at a time, so a block's shared memory can be a static; the named section lets
// the scheduler poison all of it (0xFF) at every block start (linker-provided __start_/__stop_).
#define __shared__ static __attribute__((section("gum_emu_shared")))

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
constexpr int warpSize = 32;

namespace gum_emu {

using Site = std::source_location;

// The kWmma* operations (mma.h) need every lane of the warp, passing the same argument word.
enum class WarpOp {
  kSync,
  kShfl,
  kShflUp,
  kShflDown,
  kShflXor,
  kBallot,
  kAny,
  kAll,
  kWmmaFill,
  kWmmaLoad,
  kWmmaStore,
  kWmmaMma
};

void syncthreads(Site site);
// Blocks the calling fiber until every lane named in `mask` has reached a warp collective with
// the same mask; returns this lane's result (the value's bits for shuffles, the vote otherwise).
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int operand, int width, Site site);
// Stops the launch with an error naming the kernel, block, thread and `site` (an invalid argument
// of a device-side API); the calling fiber never resumes.
[[noreturn]] void device_error(const char* what, Site site);
// Adds the FLOPs of one warp's tensor-core operation to the running launch's count (src/access.cpp).
void count_tensor_flops(double flops);

template <typename T>
uint64_t to_bits(T value) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(uint64_t), "shuffle of a type over 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  return bits;
}

template <typename T>
T from_bits(uint64_t bits) {
  T value;
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

template <typename T>
T shuffle(WarpOp op, unsigned mask, T value, int operand, int width, Site site) {
  return from_bits<T>(warp_collective(op, mask, to_bits(value), operand, width, site));
}

struct LaunchConfig {
  const char* kernel;
  const char* file;
  int line;
  dim3 grid, block;
  size_t dynamic_shared_bytes;
  cudaStream_t stream;
};

// Runs the grid: body(context) once per CUDA thread. Errors are kept for cudaGetLastError.
void run_grid(const LaunchConfig& config, void (*body)(void*), void* context);
// Runs the grid now, queues it on its stream or records it into the stream's capture
// (src/streams.cpp), which owns `context` from then on and calls destroy(context) once no queued
// launch or graph needs it. (Ownership is shared there, not here: a shared_ptr's atomic counts
// in an instrumented kernel file would call ThreadSanitizer's runtime, see src/access.cpp.)
void submit_launch(const LaunchConfig& config, void (*body)(void*), void* context, void (*destroy)(void*));

// What `kernel<<<grid, block, smem, stream>>>` becomes (rewrite_launches.cmake); the call
// operator takes the kernel's arguments, converted to its parameter types as a call would.
template <typename... Params>
class Launch {
 public:
  Launch(void (*kernel)(Params...), LaunchConfig config) : kernel_(kernel), config_(config) {}

  template <typename... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(Params), "kernel launched with the wrong number of arguments");
    struct Context {
      void (*kernel)(Params...);
      std::tuple<Params...> params;  // bound by value at the launch, as a captured graph keeps them
    };
    // Each thread gets its own copy of the parameters, as on the device.
    submit_launch(
        config_,
        [](void* c) {
          auto* ctx = static_cast<Context*>(c);
          std::tuple<Params...> params = ctx->params;
          std::apply(ctx->kernel, std::move(params));
        },
        new Context{kernel_, std::tuple<Params...>(std::forward<Args>(args)...)},
        [](void* c) { delete static_cast<Context*>(c); });
  }

 private:
  void (*kernel_)(Params...);
  LaunchConfig config_;
};

template <typename... Params>
Launch<Params...> launch(void (*kernel)(Params...), const char* name, const char* file, int line, dim3 grid, dim3 block,
                         size_t dynamic_shared_bytes = 0, cudaStream_t stream = nullptr) {
  return Launch<Params...>(kernel, LaunchConfig{name, file, line, grid, block, dynamic_shared_bytes, stream});
}

}  // namespace gum_emu

// ---- synchronisation and warp collectives (the _sync forms only, as on Volta and later) ----
inline void __syncthreads(gum_emu::Site site = gum_emu::Site::current()) { gum_emu::syncthreads(site); }

inline void __syncwarp(unsigned mask = 0xffffffffu, gum_emu::Site site = gum_emu::Site::current()) {
  gum_emu::warp_collective(gum_emu::WarpOp::kSync, mask, 0, 0, warpSize, site);
}

template <typename T>
T __shfl_sync(unsigned mask, T value, int src_lane, int width = warpSize,
              gum_emu::Site site = gum_emu::Site::current()) {
  return gum_emu::shuffle(gum_emu::WarpOp::kShfl, mask, value, src_lane, width, site);
}

template <typename T>
T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = warpSize,
                 gum_emu::Site site = gum_emu::Site::current()) {
  return gum_emu::shuffle(gum_emu::WarpOp::kShflUp, mask, value, static_cast<int>(delta), width, site);
}

template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = warpSize,
                   gum_emu::Site site = gum_emu::Site::current()) {
  return gum_emu::shuffle(gum_emu::WarpOp::kShflDown, mask, value, static_cast<int>(delta), width, site);
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = warpSize,
                  gum_emu::Site site = gum_emu::Site::current()) {
  return gum_emu::shuffle(gum_emu::WarpOp::kShflXor, mask, value, lane_mask, width, site);
}

inline unsigned __ballot_sync(unsigned mask, int predicate, gum_emu::Site site = gum_emu::Site::current()) {
  return static_cast<unsigned>(
      gum_emu::warp_collective(gum_emu::WarpOp::kBallot, mask, predicate != 0, 0, warpSize, site));
}

inline int __any_sync(unsigned mask, int predicate, gum_emu::Site site = gum_emu::Site::current()) {
  return static_cast<int>(gum_emu::warp_collective(gum_emu::WarpOp::kAny, mask, predicate != 0, 0, warpSize, site));
}

inline int __all_sync(unsigned mask, int predicate, gum_emu::Site site = gum_emu::Site::current()) {
  return static_cast<int>(gum_emu::warp_collective(gum_emu::WarpOp::kAll, mask, predicate != 0, 0, warpSize, site));
}

// ---- arithmetic intrinsics. The _rn forms are plain operations: emulated sources are compiled
// with -ffp-contract=off, so nothing is fused anywhere. ----
inline unsigned __float_as_uint(float f) { return std::bit_cast<unsigned>(f); }
inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
inline int __float_as_int(float f) { return std::bit_cast<int>(f); }
inline float __int_as_float(int i) { return std::bit_cast<float>(i); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }

// CUDA's min/max accept mixed argument types (usual arithmetic conversions).
template <typename A, typename B>
constexpr std::common_type_t<A, B> min(A a, B b) {
  using T = std::common_type_t<A, B>;
  return T(b) < T(a) ? T(b) : T(a);
}
template <typename A, typename B>
constexpr std::common_type_t<A, B> max(A a, B b) {
  using T = std::common_type_t<A, B>;
  return T(a) < T(b) ? T(b) : T(a);
}

// Atomics: fibers switch only at synchronisation points, so a plain read-modify-write is atomic.
// The operand converts to the pointee type, as with CUDA's overloads (atomicOr(int*, int)).
template <typename T, typename Update>
T atomic_update(T* address, Update update) {
  const T old = *address;
  *address = update(old);
  return old;
}
// clang-format off
template <typename T> T atomicAdd(T* a, std::type_identity_t<T> v) { return atomic_update(a, [v](T o) { return T(o + v); }); }
template <typename T> T atomicSub(T* a, std::type_identity_t<T> v) { return atomic_update(a, [v](T o) { return T(o - v); }); }
template <typename T> T atomicOr(T* a, std::type_identity_t<T> v) { return atomic_update(a, [v](T o) { return T(o | v); }); }
template <typename T> T atomicAnd(T* a, std::type_identity_t<T> v) { return atomic_update(a, [v](T o) { return T(o & v); }); }
template <typename T> T atomicXor(T* a, std::type_identity_t<T> v) { return atomic_update(a, [v](T o) { return T(o ^ v); }); }
template <typename T> T atomicMax(T* a, std::type_identity_t<T> v) { return atomic_update(a, [v](T o) { return T(max(o, v)); }); }
template <typename T> T atomicMin(T* a, std::type_identity_t<T> v) { return atomic_update(a, [v](T o) { return T(min(o, v)); }); }
template <typename T> T atomicExch(T* a, std::type_identity_t<T> v) { return atomic_update(a, [v](T) { return v; }); }
template <typename T>
T atomicCAS(T* a, std::type_identity_t<T> compare, std::type_identity_t<T> v) {
  return atomic_update(a, [compare, v](T o) { return o == compare ? v : o; });
}
// clang-format on
