#pragma once
// The CUDA emulator's mma.h: nvcuda::wmma with bf16 operands and fp32 accumulators, the shapes
// m16n16k16, m32n8k16 and m8n32k16. Every operation is a warp collective, as on the device: all
// 32 lanes of the warp must reach it with the same arguments (pointer, ldm, layout, fill value),
// else the launch fails naming the lanes and lines. A fragment holds num_elements values per
// lane; which matrix elements a lane holds is unspecified, as in CUDA: here lane l holds the
// elements l, l + 32, l + 64, ... of the fragment's matrix in row-major order. Loads read
// memory, and stores write it, only after the whole warp has arrived, so a lane that reads what
// another lane stored needs a __syncwarp in between, as on the hardware.
#include <cstdint>
#include <cstdio>
#include <type_traits>

#include "cuda_bf16.h"
#include "gum_cuda_emu/device.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {

template <typename Use, int M, int N, int K>
struct Extent;  // the fragment's matrix: rows x cols
template <int M, int N, int K>
struct Extent<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct Extent<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct Extent<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};

}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment {
  static_assert((M == 16 && N == 16 && K == 16) || (M == 32 && N == 8 && K == 16) || (M == 8 && N == 32 && K == 16),
                "wmma shape: m16n16k16, m32n8k16 or m8n32k16");
  static_assert(std::is_same_v<Use, accumulator> ? std::is_same_v<T, float> : std::is_same_v<T, __nv_bfloat16>,
                "the emulated wmma has bf16 operands (matrix_a, matrix_b) and float accumulators");
  static_assert(std::is_same_v<Use, accumulator>
                    ? std::is_void_v<Layout>
                    : std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>,
                "matrix_a and matrix_b fragments name row_major or col_major; accumulators no layout");

 public:
  static constexpr int rows = detail::Extent<Use, M, N, K>::rows, cols = detail::Extent<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols / warpSize;
  using element_type = T;
  using storage_element_type = T;
  T x[num_elements];
};

namespace detail {

inline int lane_id() {
  return static_cast<int>((threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32);
}
inline int warp_id() {
  return static_cast<int>((threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) / 32);
}

// mma_sync reads the operand fragments of every lane: each lane publishes their addresses here
// (one block runs at a time; at most 32 warps of 32 lanes).
struct LaneOperands {
  const void* a;
  const void* b;
};
inline LaneOperands lane_operands[32][32];

// The whole warp arrives (mask 0xffffffff) with the same argument word, or the launch fails.
inline void collective(gum_emu::WarpOp op, uint64_t arguments, gum_emu::Site site) {
  gum_emu::warp_collective(op, 0xffffffffu, arguments, 0, warpSize, site);
}

inline uint64_t argument_word(const void* p, unsigned ldm, int layout) {
  return reinterpret_cast<uintptr_t>(p) ^ (uint64_t(ldm) << 40) ^ (uint64_t(layout) << 62);
}

// The device's requirements: a 256-bit aligned pointer and ldm a multiple of 16 bytes; an ldm
// shorter than a row (col) of the matrix would overlap rows (cols) and is a bug in practice.
template <typename T>
void check_pointer_and_ldm(const char* op, const void* p, unsigned ldm, int extent, gum_emu::Site site) {
  char what[200];
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    std::snprintf(what, sizeof what, "%s: pointer %p is not 256-bit aligned", op, p);
  else if (ldm * sizeof(T) % 16 != 0)
    std::snprintf(what, sizeof what, "%s: ldm %u is not a multiple of %zu elements (16 bytes)", op, ldm,
                  16 / sizeof(T));
  else if (ldm < unsigned(extent))
    std::snprintf(what, sizeof what, "%s: ldm %u is shorter than the %d elements of a %s", op, ldm, extent,
                  "row (row major) or column (col major)");
  else
    return;
  gum_emu::device_error(what, site);
}

// Index in p of element (r, c) of a matrix stored with leading dimension ldm.
inline int64_t offset(int r, int c, unsigned ldm, bool row_major_layout) {
  return row_major_layout ? int64_t(r) * ldm + c : int64_t(c) * ldm + r;
}

template <typename Frag, typename T>
void load(Frag& f, const T* p, unsigned ldm, bool row_major_layout, gum_emu::Site site) {
  check_pointer_and_ldm<T>("wmma::load_matrix_sync", p, ldm, row_major_layout ? Frag::cols : Frag::rows, site);
  collective(gum_emu::WarpOp::kWmmaLoad, argument_word(p, ldm, row_major_layout), site);
  const int lane = lane_id();
  for (int e = 0; e < Frag::num_elements; ++e) {
    const int i = lane + warpSize * e;
    f.x[e] = p[offset(i / Frag::cols, i % Frag::cols, ldm, row_major_layout)];
  }
}

template <typename Layout>
constexpr bool is_row_major() {
  return std::is_same_v<Layout, row_major>;
}

}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, std::type_identity_t<T> value,
                   gum_emu::Site site = gum_emu::Site::current()) {
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  detail::collective(gum_emu::WarpOp::kWmmaFill, bits, site);
  for (T& x : f.x) x = value;
}

template <typename Use, int M, int N, int K, typename Layout>
void load_matrix_sync(fragment<Use, M, N, K, __nv_bfloat16, Layout>& f, const __nv_bfloat16* p, unsigned ldm,
                      gum_emu::Site site = gum_emu::Site::current()) {
  detail::load(f, p, ldm, detail::is_row_major<Layout>(), site);
}

template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm, layout_t layout,
                      gum_emu::Site site = gum_emu::Site::current()) {
  detail::load(f, p, ldm, layout == mem_row_major, site);
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout,
                       gum_emu::Site site = gum_emu::Site::current()) {
  using Frag = fragment<accumulator, M, N, K, float>;
  const bool row_major_layout = layout == mem_row_major;
  detail::check_pointer_and_ldm<float>("wmma::store_matrix_sync", p, ldm, row_major_layout ? N : M, site);
  detail::collective(gum_emu::WarpOp::kWmmaStore, detail::argument_word(p, ldm, row_major_layout), site);
  const int lane = detail::lane_id();
  for (int e = 0; e < Frag::num_elements; ++e) {
    const int i = lane + warpSize * e;
    p[detail::offset(i / N, i % N, ldm, row_major_layout)] = f.x[e];
  }
}

// d = a b + c: the products of bf16 values are exact in fp32; they are added to c in fp32, in
// the order k = 0, 1, ... (the device's order and internal precision are unspecified).
template <int M, int N, int K, typename LayoutA, typename LayoutB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, __nv_bfloat16, LayoutA>& a,
              const fragment<matrix_b, M, N, K, __nv_bfloat16, LayoutB>& b,
              const fragment<accumulator, M, N, K, float>& c, gum_emu::Site site = gum_emu::Site::current()) {
  using A = fragment<matrix_a, M, N, K, __nv_bfloat16, LayoutA>;
  using B = fragment<matrix_b, M, N, K, __nv_bfloat16, LayoutB>;
  using C = fragment<accumulator, M, N, K, float>;
  const int lane = detail::lane_id(), warp = detail::warp_id();
  detail::lane_operands[warp][lane] = {&a, &b};
  detail::collective(gum_emu::WarpOp::kWmmaMma, 0, site);
  const auto& operands = detail::lane_operands[warp];
  auto a_at = [&](int r, int k) {
    const int i = r * K + k;
    return __bfloat162float(static_cast<const A*>(operands[i % warpSize].a)->x[i / warpSize]);
  };
  auto b_at = [&](int k, int col) {
    const int i = k * N + col;
    return __bfloat162float(static_cast<const B*>(operands[i % warpSize].b)->x[i / warpSize]);
  };
  float result[C::num_elements];
  for (int e = 0; e < C::num_elements; ++e) {
    const int i = lane + warpSize * e;
    float acc = c.x[e];
    for (int k = 0; k < K; ++k) acc += a_at(i / N, k) * b_at(k, i % N);
    result[e] = acc;
  }
  // Every lane has read the operands of all others before any lane may change its own.
  detail::collective(gum_emu::WarpOp::kWmmaMma, 0, site);
  if (lane == 0) gum_emu::count_tensor_flops(2.0 * M * N * K);
  for (int e = 0; e < C::num_elements; ++e) d.x[e] = result[e];
}

}  // namespace nvcuda::wmma
