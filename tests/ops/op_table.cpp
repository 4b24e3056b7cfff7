// The op table: one row per op case. A row names the Backend methods it covers, its tensors and
// their generators, runs the op(s) on a backend, says the same in double, and gives a tolerance per
// compared tensor and column (op_case.h; the driver is test_ops.cpp). Adding an op: its kernels and
// one row here; the coverage test fails until some row covers every method of backend.h.
//
// Shapes are small (the cuda column also runs under CPU emulation) but awkward: sizes that are not
// multiples of 32 or of the kernels' block sizes, a single row, grouped-query (H > KV), multi-query
// (KV = 1) and multi-head (H = KV) attention, packed documents, repeated and ignored ids.
//
// Tolerances are normalised errors ||actual - expected|| / ||expected||. fp32 rounds by up to
// 2^-24 = 6e-8 relative per operation, so a float-vs-double error of a few 1e-8 is one rounding and
// 1e-7 a sum of many; each double-column bound is the largest error measured over the family's rows
// (GUM_OP_TABLE_REPORT=1 prints them; this machine's OpenBLAS and glibc) times 2 to 10, so that a
// kernel change that costs precision is seen while BLAS's choice of blocking is not. A wrong index
// or a missing term gives errors of order 1. The cuda bounds are those the former
// tests/cuda/test_cuda_*.cpp used (fp32: 1e-5, reduction order, the device's expf/rsqrtf/FMA;
// bf16: 1e-2, one rounding to 8 significant bits is at most 2^-9 = 2e-3 relative). Under CPU
// emulation (tools/cuda_emu) the largest errors measured were 9.2e-6 (svd U and Vt), 6.1e-7 (svd S),
// 3.2e-7 for the other fp32 ops and 1.7e-3 for bf16 outputs; no GPU run has measured them yet.
#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>

#include "../../src/backend/cpu/kernels.h"
#include "common/relative_error.h"
#include "gum/core/dtype.h"
#include "gum/core/philox.h"
#include "op_case.h"

namespace gum::op_test {

namespace k = gum::cpu;
using gum::testing::relative_error;

namespace {

TensorSpec f32(std::string name, Shape shape, Generator values) { return {std::move(name), shape, std::move(values)}; }
TensorSpec zeros(std::string name, Shape shape) { return {std::move(name), shape, nullptr}; }
TensorSpec bf16(std::string name, Shape shape, Generator values) {
  return {std::move(name), shape, std::move(values), DType::BF16};
}
TensorSpec ids(std::string name, std::vector<int32_t> v) {
  const int64_t n = int64_t(v.size());
  return {std::move(name), Shape{n}, given_ids(std::move(v)), DType::I32};
}

std::vector<int32_t> random_ids(int64_t n, int32_t below, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> pick(0, below - 1);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& id : v) id = pick(rng);
  return v;
}

std::string dims(std::initializer_list<int64_t> d) {
  std::string s;
  for (int64_t x : d) s += (s.empty() ? "" : "x") + std::to_string(x);
  return s;
}

// ---- memory, copies, identity ----

OpCase memory_row() {
  const Shape shape{37, 41};
  OpCase row;
  row.name = "memory: allocate, host round trip, F32<->BF16 copies, fill, peak [37x41]";
  row.covers = {"device", "name", "allocate",    "release",       "copy_from_host",    "copy_to_host",
                "copy",   "fill", "synchronize", "native_stream", "peak_memory_bytes", "record"};
  row.tensors = {f32("x", shape, normal(1, 3.0)),
                 zeros("untouched", shape),
                 zeros("copied", shape),
                 {"x_bf16", shape, nullptr, DType::BF16},
                 zeros("back", shape),
                 zeros("filled", shape),
                 {"filled_bf16", shape, nullptr, DType::BF16}};
  row.run = [](Backend& b, DeviceTensors& t) {
    // The name says which device the backend runs on; only an asynchronous backend has a stream.
    CHECK(b.name() == (b.device() == Device::CPU ? "cpu" : "cuda"));
    CHECK((b.native_stream() == nullptr) == (b.device() == Device::CPU));
    b.copy(t["x_bf16"], t["x"]);
    b.copy(t["back"], t["x_bf16"]);
    b.copy(t["copied"], t["x"]);
    // The cuda backend records the fill without running it, and replay() runs it; the cpu backend
    // cannot record (null, the work not called), so it fills eagerly.
    std::unique_ptr<RecordedWork> fill = b.record([&] { b.fill(t["filled"], -2.5f); });
    CHECK((fill != nullptr) == (b.device() == Device::CUDA));
    if (fill) {
      std::vector<float> before(37 * 41);
      b.copy_to_host(before.data(), t["filled"]);
      CHECK(before.front() == 0.0f);
      CHECK(before.back() == 0.0f);
      CHECK(fill->valid());
      fill->replay();
    } else {
      b.fill(t["filled"], -2.5f);
    }
    b.fill(t["filled_bf16"], 0.1f);
    b.synchronize();
    // Seven [37, 41] tensors are alive (five F32, two BF16) when 1 MiB more is allocated; released
    // memory leaves the count, so allocating it again does not raise the peak.
    const size_t live = 37 * 41 * (5 * 4 + 2 * 2), block = size_t(1) << 20;
    void* extra = b.allocate(block);
    const size_t peak = b.peak_memory_bytes();
    CHECK(peak >= live + block);
    b.release(extra);
    extra = b.allocate(block);
    CHECK(b.peak_memory_bytes() == peak);
    b.release(extra);
  };
  row.forward = [](HostTensors& h) {
    const auto& x = h.at("x");
    for (size_t i = 0; i < x.size(); ++i) {
      h("x_bf16")[i] = h("back")[i] = bf16_to_f32(f32_to_bf16(float(x[i])));
      h("copied")[i] = x[i];
      h("filled")[i] = -2.5;
      h("filled_bf16")[i] = bf16_to_f32(f32_to_bf16(0.1f));
    }
  };
  // Copies, conversions and fills are exact: gum::f32_to_bf16's rounding to nearest even on every backend.
  for (const char* name : {"x", "untouched", "copied", "x_bf16", "back", "filled", "filled_bf16"})
    row.compare.push_back({name, 0.0, 0.0});
  row.rejects = {{"copy between different sizes",
                  [](Backend& b, DeviceTensors& t) { b.copy(t["x"], t.make("three", Shape{3})); }}};
  return row;
}

// ---- dense linear algebra ----

OpCase gemm_row(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, float beta) {
  OpCase row;
  row.name = std::string("gemm") + (trans_a ? " A^T" : " A") + (trans_b ? " B^T" : " B") + " [" + dims({M, N, K}) +
             "] alpha " + std::to_string(alpha) + " beta " + std::to_string(beta);
  row.covers = {"gemm"};
  row.tensors = {f32("a", trans_a ? Shape{K, M} : Shape{M, K}, normal(10)),
                 f32("b", trans_b ? Shape{N, K} : Shape{K, N}, normal(11)), f32("c", Shape{M, N}, normal(12))};
  row.run = [=](Backend& be, DeviceTensors& t) { be.gemm(trans_a, trans_b, alpha, t["a"], t["b"], beta, t["c"]); };
  // The textbook triple loop, independent of BLAS.
  row.forward = [=](HostTensors& h) {
    const double *a = h("a"), *b = h("b");
    double* c = h("c");
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < K; ++p)
          acc += (trans_a ? a[p * M + i] : a[i * K + p]) * (trans_b ? b[j * K + p] : b[p * N + j]);
        c[i * N + j] = alpha * acc + beta * c[i * N + j];
      }
  };
  // fp32 sums of K = 29 products (BLAS order vs the loop's): measured up to 1.0e-7.
  row.compare = {{"c", 5e-7, 1e-5}};
  row.rejects = {{"inner dimensions differ", [](Backend& b, DeviceTensors& t) {
                    b.gemm(false, false, 1.0f, t.make("a45", Shape{4, 5}), t.make("b64", Shape{6, 4}), 0.0f,
                           t.make("c44", Shape{4, 4}));
                  }}};
  return row;
}

OpCase gemm_bf16_row() {
  const int64_t M = 64, N = 48, K = 96;
  OpCase row;
  row.name = "gemm with BF16 operands on every backend, F32 and BF16 outputs [64x48x96]";
  row.covers = {"gemm"};
  row.tensors = {bf16("a", Shape{M, K}, normal(20)), bf16("b", Shape{N, K}, normal(21)), zeros("c", Shape{M, N}),
                 bf16("c16", Shape{M, N}, nullptr)};
  row.run = [](Backend& be, DeviceTensors& t) {
    be.gemm(false, true, 1.0f, t["a"], t["b"], 0.0f, t["c"]);
    be.gemm(false, true, 1.0f, t["a"], t["b"], 0.0f, t["c16"]);
  };
  row.forward = [=](HostTensors& h) {
    k::gemm_rowmajor(false, true, M, N, K, 1.0, h("a"), h("b"), 0.0, h("c"));
    h.tensors["c16"].data = h.at("c");
  };
  // Products of bf16 numbers are exact in fp32, so only the summation order differs: measured
  // 5.6e-8 (double). On the GPU c16 is rounded once to bf16.
  row.compare = {{"c", 5e-7, 1e-5}, {"c16", 3e-3, 1e-2}};
  return row;
}

// U [m,k], S [k], Vt [k,n]: orthonormal factors, U diag(S) Vt = A, S descending, the largest |U|
// entry of each column positive, A untouched.
void check_svd(const HostTensors& initial, const HostTensors& r, int64_t m, int64_t n) {
  const int64_t k = std::min(m, n);
  const auto &u = r.at("u"), &s = r.at("s"), &vt = r.at("vt"), &a = initial.at("a");
  CHECK(r.at("a") == a);
  for (int64_t i = 0; i + 1 < k; ++i) CHECK(s[i] >= s[i + 1]);
  double worst_orthonormal = 0;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      double uu = 0, vv = 0;
      for (int64_t row = 0; row < m; ++row) uu += u[row * k + i] * u[row * k + j];
      for (int64_t col = 0; col < n; ++col) vv += vt[i * n + col] * vt[j * n + col];
      worst_orthonormal = std::max({worst_orthonormal, std::fabs(uu - (i == j)), std::fabs(vv - (i == j))});
    }
  std::vector<double> rebuilt(size_t(m * n), 0.0);
  for (int64_t row = 0; row < m; ++row)
    for (int64_t col = 0; col < n; ++col)
      for (int64_t i = 0; i < k; ++i) rebuilt[row * n + col] += u[row * k + i] * s[i] * vt[i * n + col];
  // fp32 factors: measured up to 2.0e-6 (orthonormality, [32x32]) and 1.1e-6 (reconstruction).
  INFO("worst |U^T U - I|, |Vt Vt^T - I| " << worst_orthonormal);
  CHECK(worst_orthonormal < 1e-5);
  CHECK(relative_error(a, rebuilt) < 1e-5);
  for (int64_t i = 0; i < k; ++i) {
    int64_t arg = 0;
    for (int64_t row = 1; row < m; ++row)
      if (std::fabs(u[row * k + i]) > std::fabs(u[arg * k + i])) arg = row;
    CHECK(u[arg * k + i] > 0);
  }
}

// Runs `op` after reserving the op scratch of `factorization`, as a low-rank optimizer does at
// start-up: the op must take no more (allocate nothing; the cpu has no workspace).
void run_reserved(Backend& b, FactorizationShape factorization, const std::function<void()>& op) {
  TrainingShapes shapes;
  shapes.factorizations = {factorization};
  const size_t need = b.training_workspace_bytes(shapes);
  CHECK((need > 0) == (b.device() != Device::CPU));
  b.reserve_workspace(need);
  const size_t held = b.workspace_bytes(), peak = b.peak_memory_bytes();
  op();
  CHECK(b.workspace_bytes() == held);
  CHECK(b.peak_memory_bytes() == peak);
}

OpCase svd_row(int64_t m, int64_t n) {
  const int64_t k = std::min(m, n);
  OpCase row;
  row.name = "svd [" + dims({m, n}) + "]";
  row.covers = {"svd"};
  row.tensors = {f32("a", Shape{m, n}, normal(30 + m)), zeros("u", Shape{m, k}), zeros("s", Shape{k}),
                 zeros("vt", Shape{k, n})};
  row.run = [=](Backend& b, DeviceTensors& t) {
    run_reserved(b, {FactorizationShape::Svd, m, n}, [&] { b.svd(t["u"], t["s"], t["vt"], t["a"]); });
  };
  // LAPACK runs in float only here: the double column checks the factorisation's properties.
  row.check = [=](const HostTensors& initial, const HostTensors& r) { check_svd(initial, r, m, n); };
  // cuSOLVER vs LAPACK: singular vectors err by ~1e-7 / (gap between singular values), hence the
  // looser bound on U and Vt.
  row.compare = {{"s", kNotCompared, 1e-5}, {"u", kNotCompared, 1e-4}, {"vt", kNotCompared, 1e-4}};
  row.rejects = {{"U of the wrong shape", [=](Backend& b, DeviceTensors& t) {
                    b.svd(t.make("u_wrong", Shape{m, k + 1}), t["s"], t["vt"], t["a"]);
                  }}};
  return row;
}

OpCase qr_row(int64_t m, int64_t k) {
  OpCase row;
  row.name = "qr_orthonormal [" + dims({m, k}) + "]";
  row.covers = {"qr_orthonormal"};
  row.tensors = {f32("a", Shape{m, k}, normal(40 + m)), zeros("q", Shape{m, k})};
  row.run = [=](Backend& b, DeviceTensors& t) {
    run_reserved(b, {FactorizationShape::Qr, m, k}, [&] { b.qr_orthonormal(t["q"], t["a"]); });
  };
  // Q^T Q = I and R = Q^T A upper triangular with a non-negative diagonal (fp32: measured up to
  // 3.8e-7 and 6.2e-7 off the identity and below the diagonal).
  row.check = [=](const HostTensors& initial, const HostTensors& r) {
    const auto &q = r.at("q"), &a = initial.at("a");
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) {
        double qtq = 0, rij = 0;
        for (int64_t p = 0; p < m; ++p) {
          qtq += q[p * k + i] * q[p * k + j];
          rij += q[p * k + i] * a[p * k + j];
        }
        CHECK(std::fabs(qtq - (i == j)) < 1e-5);
        if (i > j) CHECK(std::fabs(rij) < 1e-5);
        if (i == j) CHECK(rij > 0);
      }
  };
  row.compare = {{"q", kNotCompared, 1e-5}};
  row.rejects = {{"a wide matrix", [](Backend& b, DeviceTensors& t) {
                    b.qr_orthonormal(t.make("q_wide", Shape{3, 5}), t.make("wide", Shape{3, 5}));
                  }}};
  return row;
}

OpCase fill_normal_row() {
  const int64_t n = 20001;
  OpCase row;
  row.name = "fill_normal: Philox streams 5 and 6 [20001]";
  row.covers = {"fill_normal"};
  row.tensors = {zeros("x", Shape{n}), zeros("y", Shape{n})};
  row.run = [](Backend& b, DeviceTensors& t) {
    b.fill_normal(t["x"], 1234, 5, 0.5f, 2.0f);
    b.fill_normal(t["y"], 1234, 6, 0.5f, 2.0f);
  };
  row.forward = [=](HostTensors& h) {
    for (int64_t i = 0; i < n; ++i) {
      h("x")[i] = 0.5 + 2.0 * double(philox_normal(1234, 5, uint64_t(i)));
      h("y")[i] = 0.5 + 2.0 * double(philox_normal(1234, 6, uint64_t(i)));
    }
  };
  // The same uniforms everywhere: the CPU only rounds mean + std * z to float (measured 1.7e-8); the
  // device's logf/sinf/cosf may differ from glibc's by an ulp.
  row.compare = {{"x", 1e-7, 1e-6}, {"y", 1e-7, 1e-6}};
  // 20001 draws: the sample mean and deviation are within 5 standard errors (0.07, 0.05) of 0.5 and 2.
  row.check = [](const HostTensors&, const HostTensors& r) {
    const auto& x = r.at("x");
    double mean = 0, var = 0;
    for (double v : x) mean += v;
    mean /= double(x.size());
    for (double v : x) var += (v - mean) * (v - mean);
    var /= double(x.size());
    CHECK(std::fabs(mean - 0.5) < 0.07);
    CHECK(std::fabs(std::sqrt(var) - 2.0) < 0.05);
    CHECK(r.at("x") != r.at("y"));
  };
  return row;
}

// The first 4096 values lie 0.3 of a bf16 ulp above 1 (ulp 2^-7), the rest are normal draws and
// bf16-representable values; both backends must give the bits of gum::f32_to_bf16_stochastic with
// Philox (77, 3).
OpCase round_stochastic_row() {
  const int64_t same = 4096, n = same + 3001;
  std::vector<double> values(static_cast<size_t>(n));
  const double above_one = 1.0 + 0.3 / 128.0;
  const std::vector<double> draws = normal(190, 3.0)(n);
  for (int64_t i = 0; i < n; ++i)
    values[i] = i < same ? above_one : i % 3 == 0 ? double(bf16_to_f32(f32_to_bf16(float(draws[i])))) : draws[i];
  OpCase row;
  row.name = "round_stochastic: Philox (77, 3) [7097]";
  row.covers = {"round_stochastic"};
  row.tensors = {f32("src", Shape{n}, given(values)), {"dst", Shape{n}, nullptr, DType::BF16}};
  row.run = [](Backend& b, DeviceTensors& t) { b.round_stochastic(t["dst"], t["src"], 77, 3); };
  row.forward = [=](HostTensors& h) {
    for (int64_t i = 0; i < n; ++i)
      h("dst")[i] = bf16_to_f32(f32_to_bf16_stochastic(float(h("src")[i]), philox_bits(77, 3, uint64_t(i))));
  };
  // The same integer arithmetic on every backend: identical bits.
  row.compare = {{"dst", 0.0, 0.0}};
  // Each result is one of the two bf16 neighbours of its input (the input itself when it is a bf16
  // value); over the 4096 equal inputs the mean is their value: the standard error of the mean is
  // sqrt(0.3 * 0.7) / 64 = 0.0072 ulp, so 0.036 ulp is 5 of them.
  row.check = [=](const HostTensors& initial, const HostTensors& r) {
    const auto &src = initial.at("src"), &dst = r.at("dst");
    double mean = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float x = float(src[i]);
      const float nearest = bf16_to_f32(f32_to_bf16(x));
      if (double(nearest) == src[i]) {
        CHECK(dst[i] == src[i]);
        continue;
      }
      // Truncation gives the neighbour nearer zero; the other one is a bf16 ulp further out.
      const double toward_zero = bf16_to_f32(uint16_t(std::bit_cast<uint32_t>(x) >> 16));
      const double ulp = std::ldexp(1.0, std::ilogb(x) - 7);
      CHECK((dst[i] == toward_zero || std::fabs(dst[i] - toward_zero) == ulp));
      if (i < same) mean += dst[i];
    }
    mean /= double(same);
    CHECK(std::fabs(mean - above_one) < 0.036 / 128.0);
  };
  return row;
}

// ---- elementwise and reductions ----

OpCase elementwise_row() {
  const Shape shape{1000, 3};
  OpCase row;
  row.name = "add (also in place), axpby (F32, and BF16 y), scale [1000x3]";
  row.covers = {"add", "axpby", "scale"};
  row.tensors = {f32("a", shape, normal(50)), f32("b", shape, normal(51)), zeros("out", shape),
                 bf16("y16", shape, normal(52)), f32("x32", shape, normal(53))};
  row.run = [](Backend& be, DeviceTensors& t) {
    be.add(t["out"], t["a"], t["b"]);
    be.add(t["a"], t["a"], t["b"]);  // out aliasing a
    be.axpby(t["b"], 0.25f, t["out"], -1.5f);
    be.scale(t["b"], 3.0f);
    be.axpby(t["y16"], 0.5f, t["x32"], 2.0f);
  };
  row.forward = [](HostTensors& h) {
    double *a = h("a"), *b = h("b"), *out = h("out"), *y = h("y16");
    const double* x = h("x32");
    for (size_t i = 0; i < h.at("a").size(); ++i) {
      out[i] = a[i] + b[i];
      a[i] = a[i] + b[i];
      b[i] = 3.0 * (0.25 * out[i] - 1.5 * b[i]);
      y[i] = 0.5 * x[i] + 2.0 * y[i];
    }
  };
  // One to three fp32 roundings per element: measured 2.5e-8 to 5.1e-8. The GPU performs the same
  // float operations, bit for bit, except that axpby may contract to an FMA.
  row.compare = {{"out", 2e-7, 0.0}, {"a", 2e-7, 0.0}, {"b", 2e-7, 1e-5}, {"y16", 3e-3, 1e-2}};
  row.rejects = {{"add of different sizes",
                  [](Backend& b, DeviceTensors& t) { b.add(t["out"], t["a"], t.make("three", Shape{3})); }}};
  return row;
}

// add over n elements, out-of-place and in place, with b in F32 or BF16 (the fp32 weights plus a
// bf16 compensation of bf16_weights.cpp); `offset` elements of padding put the views off the
// 16-byte grid (offset not a multiple of 4), n not a multiple of 4 leaves a scalar tail.
OpCase add_row(int64_t n, int64_t offset, DType b_dtype) {
  OpCase row;
  row.name = "add [" + std::to_string(n) + "] at element offset " + std::to_string(offset) +
             (b_dtype == DType::BF16 ? ", BF16 b" : "");
  row.covers = {"add"};
  TensorSpec b = f32("b", Shape{offset + n}, normal(55));
  b.dtype = b_dtype;
  row.tensors = {f32("a", Shape{offset + n}, normal(54)), b, zeros("out", Shape{offset + n}),
                 f32("in_place", Shape{offset + n}, normal(54))};
  row.run = [=](Backend& be, DeviceTensors& t) {
    auto view = [&](const char* name) { return t[name].flat_slice(offset, Shape{n}); };
    be.add(view("out"), view("a"), view("b"));
    be.add(view("in_place"), view("in_place"), view("b"));
  };
  row.forward = [=](HostTensors& h) {
    for (const char* out : {"out", "in_place"})
      for (int64_t i = offset; i < offset + n; ++i) h(out)[i] = h("a")[i] + h("b")[i];
  };
  // One fp32 rounding per element (as in the elementwise row); the GPU adds the same floats.
  row.compare = {{"out", 2e-7, 0.0}, {"in_place", 2e-7, 0.0}};
  return row;
}

OpCase sum_row(int64_t n, bool with_nan) {
  OpCase row;
  row.name = "sum, sum_squares [" + std::to_string(n) + "]" + (with_nan ? " with a NaN" : "");
  row.covers = {"sum", "sum_squares"};
  auto values = normal(60 + uint64_t(n));
  if (with_nan)
    values = [values](int64_t count) {
      auto v = values(count);
      v[size_t(count / 2)] = NAN;
      return v;
    };
  row.tensors = {f32("x", Shape{n}, values)};
  row.run = [](Backend& b, DeviceTensors& t) {
    t.result("sum", {b.sum(t["x"])});
    t.result("sum_squares", {b.sum_squares(t["x"])});
  };
  // The textbook loop, in order, in double.
  row.forward = [=](HostTensors& h) {
    double sum = 0, squares = 0;
    for (double x : h.at("x")) {
      sum += x;
      squares += x * x;
    }
    h.make("sum", Shape{1})[0] = sum;
    h.make("sum_squares", Shape{1})[0] = squares;
  };
  // The backends accumulate the float values in double too, in blocks: the orders differ by at most
  // n * 2^-53 = 3.3e-11 relative to sum |x| for n = 300007 (measured 1.2e-13 on sum_squares, 0 on
  // sum). A random sum cancels: |sum| is ~400 times smaller than sum |x| here, hence its looser
  // bound. A NaN is NaN on both sides, which relative_error accepts; a finite value on one side fails.
  row.compare = {{"sum", 1e-9, 1e-9}, {"sum_squares", 5e-11, 5e-11}};
  return row;
}

// The training step's device scalars: sums into F64 tensors (overwritten, then accumulated), the
// first non-finite value kept by flag_non_finite, the clip factor and scale_by reading it, and
// Muon's 1 / (norm + eps).
OpCase device_scalars_row(int64_t n, double max_norm) {
  OpCase row;
  row.name = "sum_into, flag_non_finite, norm_scale, scale_by, fill (F64) [" + std::to_string(n) + "] max_norm " +
             std::to_string(max_norm);
  row.covers = {"sum_into", "flag_non_finite", "norm_scale", "scale_by", "fill"};
  row.tensors = {f32("x", Shape{n}, normal(70 + uint64_t(n))),
                 f32("y", Shape{n}, normal(71)),
                 f32("with_nan", Shape{3}, given({1.0, NAN, 2.0})),
                 f32("with_inf", Shape{2}, given({INFINITY, 1.0})),
                 zeros("scale", Shape{1}),
                 zeros("inverse_norm", Shape{1})};
  row.run = [=](Backend& b, DeviceTensors& t) {
    Tensor &acc = t.make("acc", Shape{1}, DType::F64), &squares = t.make("squares", Shape{1}, DType::F64),
           &bad = t.make("bad", Shape{1}, DType::F64), &flag = t.make("flag", Shape{3}, DType::F64);
    b.fill(acc, 5.0f);  // overwritten by the first sum_into
    b.sum_into(acc, t["x"], false, false);
    b.sum_into(acc, t["x"], false, true);
    b.sum_into(squares, t["x"], true, false);
    b.flag_non_finite(flag, squares, 3.0, 1.0);  // finite: no record
    b.sum_into(bad, t["with_nan"], true, false);
    b.flag_non_finite(flag, bad, 7.0, 2.0);  // the first non-finite value: recorded
    b.sum_into(bad, t["with_inf"], false, false);
    b.flag_non_finite(flag, bad, 9.0, -1.0);                      // a later one: ignored
    b.norm_scale(t["scale"], squares, max_norm, 1e-6, max_norm);  // global-norm clipping
    b.scale_by(t["y"], t["scale"]);
    b.norm_scale(t["inverse_norm"], squares, 1.0, 1e-7, -1.0);  // Muon's normalisation
  };
  row.forward = [=](HostTensors& h) {
    double sum = 0, squares = 0;
    for (double x : h.at("x")) {
      sum += x;
      squares += x * x;
    }
    h.make("acc", Shape{1})[0] = 2 * sum;
    h.make("squares", Shape{1})[0] = squares;
    h.make("bad", Shape{1})[0] = INFINITY;
    double* flag = h.make("flag", Shape{3});
    flag[0] = 7.0;
    flag[1] = 2.0;
    flag[2] = NAN;
    const double norm = std::sqrt(squares);
    const double scale = norm > max_norm ? max_norm / (norm + 1e-6) : 1.0;
    h("scale")[0] = scale;
    h("inverse_norm")[0] = 1.0 / (norm + 1e-7);
    for (double& y : h.tensors.at("y").data) y *= scale;
  };
  // acc, squares: the sums of sum_row in double, same bounds (measured there). The flag holds
  // exact values. The factors and y: one and two fp32 roundings (<= 1.2e-7). The cuda kernels do
  // the same double and float operations as the CPU, so the cuda column differs only through
  // squares (~1e-13 relative), which can flip a factor's last float bit (6e-8): bound 1.2e-7.
  row.compare = {{"acc", 1e-9, 1e-9},
                 {"squares", 5e-11, 5e-11},
                 {"bad", 0.0, 0.0},
                 {"flag", 0.0, 0.0},
                 {"scale", 1.2e-7, 1.2e-7},
                 {"y", 1.2e-7, 1.2e-7},
                 {"inverse_norm", 1.2e-7, 1.2e-7}};
  // The comparison skips positions non-finite on both sides: which non-finite value, checked here.
  row.check = [](const HostTensors&, const HostTensors& result) {
    CHECK(std::isnan(result.at("flag")[2]));
    CHECK(result.at("bad")[0] == INFINITY);
  };
  row.rejects = {{"sum_into an F32 accumulator",
                  [](Backend& b, DeviceTensors& t) { b.sum_into(t["scale"], t["x"], false, false); }}};
  return row;
}

// The gradient norm's sum and its NaN/Inf watch over many tensors (sum_squares_checked): more
// tensors and more partials than one cuda launch takes (32 tensors, 4096 blocks), so groups are
// split; on every backend the result is bit for bit the loop of sum_into and flag_non_finite that
// the method stands for (Backend's default), run here beside it.
OpCase sum_squares_checked_row() {
  std::vector<int64_t> sizes;
  for (int64_t i = 0; i < 34; ++i) sizes.push_back(997 * i + 1);
  sizes.insert(sizes.begin() + 10, 3, 262401);  // 1024 blocks each on cuda
  const size_t count = sizes.size();
  const auto name = [](size_t i) { return "x" + std::to_string(i); };
  OpCase row;
  row.name = "sum_squares_checked [" + std::to_string(count) + " tensors]";
  row.covers = {"sum_squares_checked"};
  for (size_t i = 0; i < count; ++i) row.tensors.push_back(f32(name(i), Shape{sizes[i]}, normal(200 + i)));
  row.tensors.push_back(f32("with_nan", Shape{3}, given({1.0, NAN, 2.0})));
  row.tensors.push_back(f32("with_inf", Shape{2}, given({INFINITY, 1.0})));
  row.run = [=](Backend& b, DeviceTensors& t) {
    std::vector<Tensor> xs;
    std::vector<double> whats;
    for (size_t i = 0; i < count; ++i) {
      xs.push_back(t[name(i)]);
      whats.push_back(double(i));
    }
    const std::vector<Tensor> bad_xs = {t["x0"], t["with_nan"], t["with_inf"]};
    const std::vector<double> bad_whats = {0.0, 100.0, 101.0};
    Tensor &acc = t.make("acc", Shape{1}, DType::F64), &bad = t.make("bad", Shape{1}, DType::F64),
           &flag = t.make("flag", Shape{3}, DType::F64);
    Tensor &loop_acc = t.make("loop_acc", Shape{1}, DType::F64), &loop_bad = t.make("loop_bad", Shape{1}, DType::F64),
           &loop_flag = t.make("loop_flag", Shape{3}, DType::F64);
    b.fill(acc, 0.5f);  // accumulated into
    b.fill(loop_acc, 0.5f);
    b.sum_squares_checked(acc, xs, flag, 3.0, whats);  // finite: no record
    b.Backend::sum_squares_checked(loop_acc, xs, loop_flag, 3.0, whats);
    b.sum_squares_checked(bad, bad_xs, flag, 7.0, bad_whats);  // the NaN tensor's index is recorded
    b.Backend::sum_squares_checked(loop_bad, bad_xs, loop_flag, 7.0, bad_whats);
    double folded[5], loop[5];
    b.copy_to_host(folded, acc);
    b.copy_to_host(folded + 1, bad);
    b.copy_to_host(folded + 2, flag);
    b.copy_to_host(loop, loop_acc);
    b.copy_to_host(loop + 1, loop_bad);
    b.copy_to_host(loop + 2, loop_flag);
    CHECK(std::memcmp(folded, loop, sizeof(folded)) == 0);
  };
  row.forward = [=](HostTensors& h) {
    double squares = 0.5;
    for (size_t i = 0; i < count; ++i)
      for (double x : h.at(name(i))) squares += x * x;
    h.make("acc", Shape{1})[0] = squares;
    h.make("bad", Shape{1})[0] = NAN;
    double* flag = h.make("flag", Shape{3});
    flag[0] = 7.0;
    flag[1] = 100.0;
    flag[2] = NAN;
  };
  // acc: 1.3M squares summed in double in other orders than the reference's (measured 2.3e-13 cpu
  // against double, 2.6e-15 cuda against cpu; the bound of n * 2^-53 = 1.5e-10 is never approached
  // by rounding errors that partly cancel): 1e-12. The flag holds exact values.
  row.compare = {{"acc", 1e-12, 1e-12}, {"flag", 0.0, 0.0}};
  row.check = [](const HostTensors&, const HostTensors& result) {
    CHECK(std::isnan(result.at("flag")[2]));
    CHECK(std::isnan(result.at("bad")[0]));
  };
  row.rejects = {{"a tag for each tensor", [](Backend& b, DeviceTensors& t) {
                    b.sum_squares_checked(t.make("acc", Shape{1}, DType::F64), {t["x0"]},
                                          t.make("flag", Shape{3}, DType::F64), 1.0, {});
                  }}};
  return row;
}

// Side work (Backend::begin_side_work): ops issued inside it run after everything issued before
// (the scale reads x as filled), and the main queue's ops after wait_side_work see its results.
OpCase side_work_row(int64_t n) {
  OpCase row;
  row.name = "side work [" + std::to_string(n) + "]";
  row.covers = {"has_side_queue", "begin_side_work", "end_side_work", "wait_side_work"};
  row.tensors = {f32("x", Shape{n}, normal(80)), f32("y", Shape{n}, normal(81)), zeros("out", Shape{n})};
  row.run = [](Backend& b, DeviceTensors& t) {
    CHECK(b.has_side_queue() == (b.device() == Device::CUDA));  // on by default (BackendOptions)
    b.axpby(t["x"], 1.0f, t["y"], 1.0f);                        // main: x = x + y
    b.begin_side_work();
    b.scale(t["x"], 2.0f);  // side: after the main queue's x + y
    const uint64_t ticket = b.end_side_work();
    b.wait_side_work(ticket);
    b.add(t["out"], t["x"], t["y"]);  // main: after the side's scale
  };
  row.forward = [](HostTensors& h) {
    const std::vector<double>&x = h.at("x"), &y = h.at("y");
    double* out = h("out");
    for (size_t i = 0; i < x.size(); ++i) out[i] = 2 * (x[i] + y[i]) + y[i];
  };
  // Two fp32 roundings of sums (the doubling is exact), each at most 2^-24 = 6e-8 relative: 1.2e-7
  // (measured 3.5e-8; cuda equals the cpu bit for bit).
  row.compare = {{"out", 1.2e-7, 0.0}};
  return row;
}

// ---- transformer ops ----

OpCase embedding_row(std::string name, int64_t V, int64_t C, std::vector<int32_t> tokens, double gradient_tolerance) {
  const int64_t N = int64_t(tokens.size());
  OpCase row;
  row.name = "embedding " + name + " [" + dims({N, V, C}) + "]";
  row.covers = {"embedding_forward", "embedding_backward"};
  row.tensors = {ids("tokens", std::move(tokens)), f32("table", Shape{V, C}, normal(101)), zeros("out", Shape{N, C}),
                 f32("dout", Shape{N, C}, normal(102)), f32("dtable", Shape{V, C}, normal(103))};
  row.run = [](Backend& b, DeviceTensors& t) {
    b.embedding_forward(t["out"], t["tokens"], t["table"]);
    b.embedding_backward(t["dtable"], t["dout"], t["tokens"]);
  };
  row.forward = [=](HostTensors& h) { k::embedding_forward(h("out"), h.ids("tokens"), h("table"), N, C); };
  row.backward = [=](HostTensors& h) { k::embedding_backward(h("dtable"), h("dout"), h.ids("tokens"), N, C); };
  // A copy (measured 0), and fp32 sums per row in token order on every backend, the GPU too
  // (identical bits); against double the sums of up to 625 tokens per row measured 4.5e-7.
  row.compare = {{"out", 0.0, 0.0}, {"dtable", 2e-6, 0.0}};
  row.loss = {{"out", "dout"}};
  row.gradients = {{"table", "dtable", true}};
  row.gradient_tolerance = gradient_tolerance;
  row.rejects = {{"a token id equal to the vocabulary size", [=](Backend& b, DeviceTensors& t) {
                    Tensor& bad = t.make("bad", Shape{N}, DType::I32);
                    const std::vector<int32_t> v(static_cast<size_t>(N), int32_t(V));
                    b.copy_from_host(bad, v.data());
                    b.embedding_forward(t["out"], bad, t["table"]);
                  }}};
  return row;
}

OpCase rmsnorm_row(int64_t N, int64_t C, float eps, double x_scale, double gradient_tolerance) {
  OpCase row;
  row.name = "rmsnorm [" + dims({N, C}) + "] eps " + std::to_string(eps);
  row.covers = {"rmsnorm_forward", "rmsnorm_backward"};
  row.tensors = {f32("x", Shape{N, C}, normal(110, x_scale)),
                 f32("weight", Shape{C}, normal(111)),
                 zeros("out", Shape{N, C}),
                 zeros("rstd", Shape{N}),
                 f32("dout", Shape{N, C}, normal(112)),
                 f32("dx", Shape{N, C}, normal(113)),
                 f32("dweight", Shape{C}, normal(114))};
  row.run = [=](Backend& b, DeviceTensors& t) {
    b.rmsnorm_forward(t["out"], t["rstd"], t["x"], t["weight"], eps);
    b.rmsnorm_backward(t["dx"], t["dweight"], t["dout"], t["x"], t["weight"], t["rstd"]);
  };
  row.forward = [=](HostTensors& h) { k::rmsnorm_forward(h("out"), h("rstd"), h("x"), h("weight"), N, C, eps); };
  row.backward = [=](HostTensors& h) {
    k::rmsnorm_backward(h("dx"), h("dweight"), h("dout"), h("x"), h("weight"), h("rstd"), N, C);
  };
  // Row sums of C squares and products: measured up to 1.2e-7 (dweight, sums over N rows in fp32).
  row.compare = {{"out", 1e-6, 1e-5}, {"rstd", 1e-6, 1e-5}, {"dx", 1e-6, 1e-5}, {"dweight", 1e-6, 1e-5}};
  row.loss = {{"out", "dout"}};
  row.gradients = {{"x", "dx", true}, {"weight", "dweight", true}};
  row.gradient_tolerance = gradient_tolerance;
  return row;
}

OpCase rmsnorm_bf16_row() {
  const int64_t N = 33, C = 300;
  OpCase row;
  row.name = "rmsnorm forward with BF16 activations [33x300]";
  row.covers = {"rmsnorm_forward"};
  row.tensors = {bf16("x", Shape{N, C}, normal(115, 2.0)), f32("weight", Shape{C}, normal(111)),
                 bf16("out", Shape{N, C}, nullptr), zeros("rstd", Shape{N})};
  row.run = [](Backend& b, DeviceTensors& t) { b.rmsnorm_forward(t["out"], t["rstd"], t["x"], t["weight"], 1e-5f); };
  row.forward = [=](HostTensors& h) { k::rmsnorm_forward(h("out"), h("rstd"), h("x"), h("weight"), N, C, 1e-5); };
  // Statistics in fp32 from bf16-representable inputs: measured 4.5e-8; on the GPU out is rounded
  // once to bf16.
  row.compare = {{"out", 3e-3, 1e-2}, {"rstd", 1e-6, 1e-5}};
  return row;
}

// The residual add fused into the norm: sum = a + b, out = rmsnorm(sum), against add then
// rmsnorm_forward in double. `offset` elements of padding before a, b, sum and out put the views
// off the 16-byte grid for an offset that is not a multiple of 4, so the GPU takes scalar accesses.
OpCase add_rmsnorm_row(int64_t N, int64_t C, int64_t offset) {
  const int64_t n = N * C;
  OpCase row;
  row.name = "add_rmsnorm [" + dims({N, C}) + "]" + (offset ? " at element offset " + std::to_string(offset) : "");
  row.covers = {"add_rmsnorm_forward"};
  row.tensors = {f32("a", Shape{offset + n}, normal(116)),
                 f32("b", Shape{offset + n}, normal(117, 0.5)),
                 f32("weight", Shape{C}, normal(111)),
                 zeros("sum", Shape{offset + n}),
                 zeros("out", Shape{offset + n}),
                 zeros("rstd", Shape{N}),
                 f32("in_place", Shape{offset + n}, normal(116)),
                 zeros("in_place_out", Shape{offset + n})};
  row.run = [=](Backend& b, DeviceTensors& t) {
    auto view = [&](const char* name) { return t[name].flat_slice(offset, Shape{N, C}); };
    b.add_rmsnorm_forward(view("sum"), view("out"), t["rstd"], view("a"), view("b"), t["weight"], 1e-5f);
    // sum aliasing a, as `x += delta` would call it: the same results.
    b.add_rmsnorm_forward(view("in_place"), view("in_place_out"), t["rstd"], view("in_place"), view("b"), t["weight"],
                          1e-5f);
  };
  row.forward = [=](HostTensors& h) {
    for (const char* sum : {"sum", "in_place"}) {
      double *s = h(sum) + offset, *a = h("a") + offset, *b = h("b") + offset;
      for (int64_t i = 0; i < n; ++i) s[i] = a[i] + b[i];
    }
    k::rmsnorm_forward(h("out") + offset, h("rstd"), h("sum") + offset, h("weight"), N, C, 1e-5);
    k::rmsnorm_forward(h("in_place_out") + offset, h("rstd"), h("in_place") + offset, h("weight"), N, C, 1e-5);
  };
  // The sum is one fp32 rounding (measured 3e-8), then rmsnorm's row statistics (the rmsnorm rows'
  // 1e-6 and 1e-5); the GPU rounds the same sum, so sum and in_place match it bit for bit.
  row.compare = {{"sum", 1e-7, 0.0},
                 {"in_place", 1e-7, 0.0},
                 {"out", 1e-6, 1e-5},
                 {"in_place_out", 1e-6, 1e-5},
                 {"rstd", 1e-6, 1e-5}};
  return row;
}

OpCase linear_row(int64_t N, int64_t I, int64_t O, bool with_bias, bool accumulate_dx, double gradient_tolerance) {
  OpCase row;
  row.name =
      "linear [" + dims({N, I, O}) + "]" + (with_bias ? " with bias" : "") + (accumulate_dx ? ", dx accumulated" : "");
  row.covers = {"linear_forward", "linear_backward"};
  row.tensors = {f32("x", Shape{N, I}, normal(120)),       f32("weight", Shape{O, I}, normal(121, 0.1)),
                 f32("bias", Shape{O}, normal(122)),       zeros("out", Shape{N, O}),
                 f32("dout", Shape{N, O}, normal(123)),    f32("dx", Shape{N, I}, normal(124)),
                 f32("dweight", Shape{O, I}, normal(125)), f32("dbias", Shape{O}, normal(126))};
  row.run = [=](Backend& b, DeviceTensors& t) {
    b.linear_forward(t["out"], t["x"], t["weight"], with_bias ? &t["bias"] : nullptr);
    b.linear_backward(t["dx"], t["dweight"], with_bias ? &t["dbias"] : nullptr, t["dout"], t["x"], t["weight"],
                      accumulate_dx);
  };
  row.forward = [=](HostTensors& h) {
    k::linear_forward(h("out"), h("x"), h("weight"), with_bias ? h("bias") : nullptr, N, I, O);
  };
  row.backward = [=](HostTensors& h) {
    k::linear_backward(h("dx"), h("dweight"), with_bias ? h("dbias") : nullptr, h("dout"), h("x"), h("weight"), N, I, O,
                       accumulate_dx);
  };
  // fp32 GEMMs with inner dimensions up to 90: measured up to 1.6e-7.
  row.compare = {{"out", 1e-6, 1e-5}, {"dx", 1e-6, 1e-5}, {"dweight", 1e-6, 1e-5}, {"dbias", 1e-6, 1e-5}};
  row.loss = {{"out", "dout"}};
  row.gradients = {{"x", "dx", accumulate_dx}, {"weight", "dweight", true}};
  if (with_bias) row.gradients.push_back({"bias", "dbias", true});
  row.gradient_tolerance = gradient_tolerance;
  row.rejects = {{"a weight of the wrong width", [=](Backend& b, DeviceTensors& t) {
                    b.linear_forward(t["out"], t["x"], t.make("wide_weight", Shape{O, I + 1}), nullptr);
                  }}};
  return row;
}

OpCase linear_bf16_row() {
  const int64_t N = 64, I = 96, O = 80;
  OpCase row;
  row.name = "linear with BF16 activations and weights, F32 weight gradient [64x96x80]";
  row.covers = {"linear_forward", "linear_backward"};
  row.tensors = {bf16("x", Shape{N, I}, normal(130)), bf16("weight", Shape{O, I}, normal(131, 0.1)),
                 bf16("out", Shape{N, O}, nullptr),   bf16("dout", Shape{N, O}, normal(132)),
                 bf16("dx", Shape{N, I}, nullptr),    zeros("dweight", Shape{O, I})};
  row.run = [](Backend& b, DeviceTensors& t) {
    b.linear_forward(t["out"], t["x"], t["weight"], nullptr);
    b.linear_backward(t["dx"], t["dweight"], nullptr, t["dout"], t["x"], t["weight"], false);
  };
  row.forward = [=](HostTensors& h) { k::linear_forward<double>(h("out"), h("x"), h("weight"), nullptr, N, I, O); };
  row.backward = [=](HostTensors& h) {
    k::linear_backward<double>(h("dx"), h("dweight"), nullptr, h("dout"), h("x"), h("weight"), N, I, O, false);
  };
  // bf16 products are exact in fp32 (measured 5.7e-8); on the GPU out and dx are rounded once to
  // bf16, the F32 weight gradient differs by summation order only.
  row.compare = {{"out", 3e-3, 1e-2}, {"dx", 3e-3, 1e-2}, {"dweight", 5e-7, 1e-5}};
  return row;
}

// Rotary embedding forward on qkv in place, its inverse on a copy (restores qkv) and backward on
// a probe (the gradient).
OpCase rope_row(const AttentionShape& s, int64_t max_positions, double theta, std::vector<int32_t> positions,
                double gradient_tolerance) {
  const int64_t N = int64_t(positions.size()), W = s.qkv_width(), H = s.n_head, KV = s.n_kv_head, D = s.head_dim;
  OpCase row;
  row.name = "rope [N " + std::to_string(N) + ", H " + std::to_string(H) + ", KV " + std::to_string(KV) + ", D " +
             std::to_string(D) + "]";
  row.covers = {"rope_forward", "rope_backward"};
  row.tensors = {ids("positions", positions),
                 f32("cos_sin", Shape{max_positions, D / 2, 2}, rope_table(max_positions, D, theta)),
                 f32("qkv", Shape{N, W}, normal(141)),
                 zeros("restored", Shape{N, W}),
                 f32("probe", Shape{N, W}, normal(142)),
                 f32("dqkv", Shape{N, W}, normal(143))};
  row.run = [=](Backend& b, DeviceTensors& t) {
    b.rope_forward(t["qkv"], t["positions"], t["cos_sin"], s);
    b.copy(t["restored"], t["qkv"]);
    b.rope_backward(t["restored"], t["positions"], t["cos_sin"], s);
    b.copy(t["dqkv"], t["probe"]);
    b.rope_backward(t["dqkv"], t["positions"], t["cos_sin"], s);
  };
  row.forward = [=](HostTensors& h) { k::rope_apply(h("qkv"), h.ids("positions"), h("cos_sin"), N, H, KV, D, false); };
  row.backward = [=](HostTensors& h) {
    h.tensors["restored"].data = h.at("qkv");
    k::rope_apply(h("restored"), h.ids("positions"), h("cos_sin"), N, H, KV, D, true);
    h.tensors["dqkv"].data = h.at("probe");
    k::rope_apply(h("dqkv"), h.ids("positions"), h("cos_sin"), N, H, KV, D, true);
  };
  // Two products and a sum per element, twice for `restored`: measured up to 4.5e-8. The GPU does
  // the same float operations without FMA contraction: identical bits.
  row.compare = {{"qkv", 2e-7, 0.0}, {"restored", 2e-7, 0.0}, {"dqkv", 2e-7, 0.0}};
  row.loss = {{"qkv", "probe"}};
  row.gradients = {{"qkv", "dqkv", false}};
  row.gradient_tolerance = gradient_tolerance;
  // v is untouched, position 0 is the identity, and the inverse rotation restores the input
  // (two roundings per element: measured 6.0e-8).
  row.check = [=](const HostTensors& initial, const HostTensors& r) {
    const auto &before = initial.at("qkv"), &after = r.at("qkv");
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < W; ++c) {
        const bool v_column = c >= (H + KV) * D;
        if (v_column || positions[size_t(n)] == 0) CHECK(after[n * W + c] == before[n * W + c]);
      }
    CHECK(relative_error(before, r.at("restored")) < 1e-6);
  };
  return row;
}

// Packed documents: in each sequence a document starts at t = 0 and at every listed boundary.
std::vector<int32_t> doc_starts(const AttentionShape& s, const std::vector<int>& boundaries) {
  std::vector<int32_t> starts;
  for (int b = 0; b < s.batch; ++b) {
    int start = 0;
    for (int t = 0; t < s.seq_len; ++t) {
      for (int boundary : boundaries)
        if (t == boundary) start = t;
      starts.push_back(start);
    }
  }
  return starts;
}

k::AttentionDims attention_dims(const AttentionShape& s) {
  return {s.batch, s.seq_len, s.n_head, s.n_kv_head, s.head_dim};
}

std::string attention_name(const AttentionShape& s) {
  return "[B " + std::to_string(s.batch) + ", T " + std::to_string(s.seq_len) + ", H " + std::to_string(s.n_head) +
         ", KV " + std::to_string(s.n_kv_head) + ", D " + std::to_string(s.head_dim) + "]";
}

// doc_start: empty for plain causal attention.
OpCase attention_row(const AttentionShape& s, std::vector<int32_t> doc_start, uint64_t seed,
                     double gradient_tolerance) {
  const int64_t N = int64_t(s.batch) * s.seq_len, W = s.qkv_width(), HD = int64_t(s.n_head) * s.head_dim;
  const bool packed = !doc_start.empty();
  OpCase row;
  row.name = "attention " + attention_name(s) + (packed ? " packed documents" : "");
  row.covers = {"attention_aux_elems",      "attention_forward", "attention_backward",
                "training_workspace_bytes", "reserve_workspace", "workspace_bytes"};
  row.tensors = {f32("qkv", Shape{N, W}, normal(seed)), zeros("out", Shape{N, HD}),
                 f32("dout", Shape{N, HD}, normal(seed + 1)), f32("dqkv", Shape{N, W}, normal(seed + 2))};
  if (packed) row.tensors.push_back(ids("doc_start", doc_start));
  row.run = [=](Backend& b, DeviceTensors& t) {
    // The CPU keeps the probabilities [B, H, T, T]; a flash kernel only a log-sum-exp per query row.
    const size_t aux = b.attention_aux_elems(s);
    CHECK((aux == size_t(N) * s.n_head * s.seq_len || aux == size_t(N) * s.n_head));
    if (b.device() == Device::CPU) CHECK(aux == size_t(N) * s.n_head * s.seq_len);
    t.make("aux", Shape{int64_t(aux)});
    // The workspace reserved for this shape is all both passes take: they allocate nothing (the
    // cpu has no workspace; the backend may already hold more from an earlier row).
    TrainingShapes shapes;
    shapes.rows = N;
    shapes.attention = s;
    const size_t need = b.training_workspace_bytes(shapes);
    CHECK((need > 0) == (b.device() != Device::CPU));
    b.reserve_workspace(need);
    const size_t held = b.workspace_bytes(), peak = b.peak_memory_bytes();
    CHECK(held >= need);
    const Tensor* starts = packed ? &t["doc_start"] : nullptr;
    b.attention_forward(t["out"], t["aux"], t["qkv"], starts, s);
    b.attention_backward(t["dqkv"], t["dout"], t["out"], t["aux"], t["qkv"], starts, s);
    CHECK(b.workspace_bytes() == held);
    CHECK(b.peak_memory_bytes() == peak);
  };
  row.forward = [=](HostTensors& h) {
    double* probs = h.make("aux", Shape{N * s.n_head * s.seq_len});
    k::attention_forward(h("out"), probs, h("qkv"), packed ? h.ids("doc_start") : nullptr, attention_dims(s));
  };
  row.backward = [=](HostTensors& h) {
    k::attention_backward(h("dqkv"), h("dout"), h("aux"), h("qkv"), packed ? h.ids("doc_start") : nullptr,
                          attention_dims(s));
  };
  // Softmax of fp32 scores with the vectorised exp (1.5e-7 relative) and GEMMs over T and D:
  // measured up to 2.0e-7 (dqkv, T = 70) on the CPU and the fp32 kernels (gemm, flash).
  // flash_wmma rounds q, k, v, dO, P and dS to bf16 (2^-9 = 2.0e-3 relative) as tensor-core
  // operands, fp32 sums: measured up to 3.0e-3 (out) and 5.8e-3 (dqkv, D = 2; 4.0e-3 at D = 128);
  // 1e-2 leaves room for the device's own accumulation order.
  row.compare = {{"out", 1e-6, kNotCompared}, {"dqkv", 1e-6, kNotCompared}, {"aux", 1e-6, 1e-5, "gemm"}};
  for (const auto& [kernel, tolerance] : {std::pair{"gemm", 1e-5}, {"flash", 1e-5}, {"flash_wmma", 1e-2}})
    for (const char* tensor : {"out", "dqkv"}) row.compare.push_back({tensor, kNotCompared, tolerance, kernel});
  row.loss = {{"out", "dout"}};
  row.gradients = {{"qkv", "dqkv", false}};
  row.gradient_tolerance = gradient_tolerance;
  row.cuda_attention = {"gemm", "flash", "flash_wmma"};
  if (packed) {
    std::vector<int32_t> bad = doc_start;
    bad[1] = 5;  // later than its own position
    row.rejects = {{"a doc_start later than its position", [=](Backend& b, DeviceTensors& t) {
                      Tensor& starts = t.make("bad_doc_start", Shape{N}, DType::I32);
                      b.copy_from_host(starts, bad.data());
                      t.make("aux", Shape{int64_t(b.attention_aux_elems(s))});
                      b.attention_forward(t["out"], t["aux"], t["qkv"], &starts, s);
                    }}};
  }
  return row;
}

// A token never sees an earlier document: changing the first document of sequence 0 leaves the
// outputs of its later documents bit for bit unchanged.
OpCase attention_mask_row() {
  const AttentionShape s{2, 5, 2, 1, 4};
  const int64_t N = int64_t(s.batch) * s.seq_len, W = s.qkv_width(), HD = int64_t(s.n_head) * s.head_dim;
  const std::vector<int32_t> starts = {0, 0, 2, 2, 2, 0, 1, 1, 1, 4};
  const auto original = normal(31)(N * W);
  std::vector<double> changed = original;
  for (int64_t c = 0; c < W; ++c) changed[c] += 1.0, changed[W + c] -= 0.5;
  OpCase row;
  row.name = "attention: packed documents do not see earlier documents " + attention_name(s);
  row.covers = {"attention_forward"};
  row.tensors = {ids("doc_start", starts), f32("qkv", Shape{N, W}, given(original)),
                 f32("qkv_changed", Shape{N, W}, given(changed)), zeros("out", Shape{N, HD}),
                 zeros("out_changed", Shape{N, HD})};
  row.run = [=](Backend& b, DeviceTensors& t) {
    Tensor& aux = t.make("aux", Shape{int64_t(b.attention_aux_elems(s))});
    b.attention_forward(t["out"], aux, t["qkv"], &t["doc_start"], s);
    b.attention_forward(t["out_changed"], aux, t["qkv_changed"], &t["doc_start"], s);
  };
  row.check = [=](const HostTensors&, const HostTensors& r) {
    const auto &out = r.at("out"), &changed_out = r.at("out_changed");
    for (int64_t i = 2 * HD; i < N * HD; ++i) CHECK(out[i] == changed_out[i]);
    CHECK(out[0] != changed_out[0]);
  };
  row.cuda_attention = {"gemm", "flash", "flash_wmma"};
  return row;
}

struct CacheCase {
  int B, H, KV, D, capacity;
};

// A prefill, single-token decode steps, a chunk, then decode steps up to the full cache.
OpCase cached_attention_row(const CacheCase& c) {
  std::vector<int> pieces = {c.capacity / 3, 1, 1, c.capacity / 4};
  for (int used = c.capacity / 3 + 2 + c.capacity / 4; used < c.capacity; ++used) pieces.push_back(1);
  const int64_t HD = int64_t(c.H) * c.D;
  const AttentionShape one{c.B, 1, c.H, c.KV, c.D};
  OpCase row;
  row.name = "cached_attention_forward [B " + std::to_string(c.B) + ", H " + std::to_string(c.H) + ", KV " +
             std::to_string(c.KV) + ", D " + std::to_string(c.D) + ", capacity " + std::to_string(c.capacity) + "]";
  row.covers = {"cached_attention_forward"};
  row.tensors = {zeros("cache", Shape{c.B, c.capacity, 2 * int64_t(c.KV) * c.D})};
  for (size_t i = 0; i < pieces.size(); ++i) {
    const int64_t rows = int64_t(c.B) * pieces[i];
    row.tensors.push_back(f32("qkv" + std::to_string(i), Shape{rows, one.qkv_width()}, normal(300 + 2 * i)));
    row.tensors.push_back(f32("out" + std::to_string(i), Shape{rows, HD}, normal(301 + 2 * i)));  // overwritten
  }
  auto shape_of = [c](int n) { return AttentionShape{c.B, n, c.H, c.KV, c.D}; };
  row.run = [=](Backend& b, DeviceTensors& t) {
    int past = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const std::string id = std::to_string(i);
      b.cached_attention_forward(t["out" + id], t["cache"], t["qkv" + id], past, shape_of(pieces[i]));
      past += pieces[i];
    }
  };
  row.forward = [=](HostTensors& h) {
    int past = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const std::string id = std::to_string(i);
      k::cached_attention_forward(h("out" + id), h("cache"), h("qkv" + id), past, c.capacity,
                                  attention_dims(shape_of(pieces[i])));
      past += pieces[i];
    }
  };
  // Dot products over D and a softmax over up to `capacity` keys: measured up to 2.1e-7. The
  // appended keys and values are copies: bitwise equal.
  row.compare = {{"cache", 0.0, 0.0}};
  for (size_t i = 0; i < pieces.size(); ++i) row.compare.push_back({"out" + std::to_string(i), 1e-6, 1e-5});
  row.rejects = {{"rows beyond the cache's capacity", [=](Backend& b, DeviceTensors& t) {
                    b.cached_attention_forward(t["out1"], t["cache"], t["qkv1"], c.capacity, one);
                  }}};
  return row;
}

OpCase swiglu_row(int64_t N, int64_t F, double gradient_tolerance) {
  OpCase row;
  row.name = "swiglu [" + dims({N, F}) + "]";
  row.covers = {"swiglu_forward", "swiglu_backward"};
  row.tensors = {f32("gate_up", Shape{N, 2 * F}, normal(170, 2.0)), zeros("out", Shape{N, F}),
                 f32("dout", Shape{N, F}, normal(171)), f32("dgate_up", Shape{N, 2 * F}, normal(172))};
  row.run = [](Backend& b, DeviceTensors& t) {
    b.swiglu_forward(t["out"], t["gate_up"]);
    b.swiglu_backward(t["dgate_up"], t["dout"], t["gate_up"]);
  };
  row.forward = [=](HostTensors& h) { k::swiglu_forward(h("out"), h("gate_up"), N, F); };
  row.backward = [=](HostTensors& h) { k::swiglu_backward(h("dgate_up"), h("dout"), h("gate_up"), N, F); };
  // A sigmoid (vectorised exp, 1.5e-7) and a few products per element: measured up to 6.3e-8.
  row.compare = {{"out", 5e-7, 1e-5}, {"dgate_up", 5e-7, 1e-5}};
  row.loss = {{"out", "dout"}};
  row.gradients = {{"gate_up", "dgate_up", false}};
  row.gradient_tolerance = gradient_tolerance;
  return row;
}

// Forward, backward into a separate buffer and backward in place (dlogits aliasing logits, as the
// model does it); targets < 0 are ignored.
OpCase cross_entropy_row(int64_t V, std::vector<int32_t> targets, double scale, double logit_scale,
                         double gradient_tolerance) {
  const int64_t N = int64_t(targets.size());
  OpCase row;
  row.name = "cross_entropy [" + dims({N, V}) + "] scale " + std::to_string(scale);
  row.covers = {"cross_entropy_forward", "cross_entropy_backward", "cross_entropy_fused"};
  row.tensors = {ids("targets", targets),        f32("logits", Shape{N, V}, normal(181, logit_scale)),
                 zeros("losses", Shape{N}),      f32("dlogits", Shape{N, V}, normal(182)),
                 zeros("in_place", Shape{N, V}), f32("probe", Shape{N}, constant(scale)),
                 zeros("fused", Shape{N, V}),    f32("fused_losses", Shape{N}, normal(183))};
  row.run = [=](Backend& b, DeviceTensors& t) {
    b.cross_entropy_forward(t["losses"], t["logits"], t["targets"]);
    b.cross_entropy_backward(t["dlogits"], t["logits"], t["targets"], float(scale));
    b.copy(t["in_place"], t["logits"]);
    b.cross_entropy_backward(t["in_place"], t["in_place"], t["targets"], float(scale));
    b.copy(t["fused"], t["logits"]);
    b.cross_entropy_fused(t["fused_losses"], t["fused"], t["targets"], float(scale));
  };
  row.forward = [=](HostTensors& h) { k::cross_entropy_forward(h("losses"), h("logits"), h.ids("targets"), N, V); };
  row.backward = [=](HostTensors& h) {
    k::cross_entropy_backward(h("dlogits"), h("logits"), h.ids("targets"), N, V, scale);
    h.tensors["in_place"].data = h.at("dlogits");
    h.tensors["fused"].data = h.at("dlogits");
    h.tensors["fused_losses"].data = h.at("losses");
  };
  // A log-sum-exp over V (vectorised exp, double sum): measured up to 3.9e-8.
  row.compare = {{"losses", 3e-7, 1e-5},
                 {"dlogits", 3e-7, 1e-5},
                 {"in_place", 3e-7, 1e-5},
                 {"fused_losses", 3e-7, 1e-5},
                 {"fused", 3e-7, 1e-5}};
  row.loss = {{"losses", "probe"}};  // L = scale * sum of the losses
  row.gradients = {{"logits", "dlogits", false}};
  row.gradient_tolerance = gradient_tolerance;
  // The textbook formula log(sum exp) - logit[target] on every kept row (an fp32 result: measured up
  // to 6.7e-8); ignored rows have loss and gradient exactly 0; in place and fused give the same bits.
  row.check = [=](const HostTensors& initial, const HostTensors& r) {
    const auto &logits = initial.at("logits"), &losses = r.at("losses"), &dlogits = r.at("dlogits");
    std::vector<double> textbook(size_t(N), 0.0);
    for (int64_t n = 0; n < N; ++n) {
      if (targets[n] < 0) {
        CHECK(losses[n] == 0.0);
        for (int64_t i = 0; i < V; ++i) CHECK(dlogits[n * V + i] == 0.0);
        continue;
      }
      double denom = 0;
      for (int64_t i = 0; i < V; ++i) denom += std::exp(logits[n * V + i]);
      textbook[n] = std::log(denom) - logits[n * V + targets[n]];
    }
    CHECK(relative_error(textbook, losses) < 1e-6);
    CHECK(r.at("in_place") == dlogits);
    CHECK(r.at("fused") == dlogits);
    CHECK(r.at("fused_losses") == losses);
  };
  row.rejects = {{"a target equal to the vocabulary size", [=](Backend& b, DeviceTensors& t) {
                    std::vector<int32_t> bad = targets;
                    bad[0] = int32_t(V);
                    Tensor& bad_targets = t.make("bad_targets", Shape{N}, DType::I32);
                    b.copy_from_host(bad_targets, bad.data());
                    b.cross_entropy_forward(t["losses"], t["logits"], bad_targets);
                  }}};
  return row;
}

// ---- optimizer ops ----

// Three steps (bias correction at steps 1 to 3, from moments that are not zero) of adamw_update and
// of adam_direction on separate moments, against the formula of backend.h written out in double.
OpCase adam_row() {
  const Shape shape{257, 33};
  const int64_t n = shape.numel();
  AdamWArgs args;
  args.lr = 1e-2f;
  args.beta1 = 0.9f;
  args.beta2 = 0.95f;
  args.eps = 1e-8f;
  args.weight_decay = 0.1f;
  args.update_scale = 0.25f;
  OpCase row;
  row.name = "adamw_update, adam_direction: 3 steps [257x33]";
  row.covers = {"adamw_update", "adam_direction"};
  row.tensors = {f32("param", shape, normal(70)), f32("m", shape, normal(71, 0.01)),  f32("v", shape, constant(1e-3)),
                 zeros("direction", shape),       f32("m2", shape, normal(71, 0.01)), f32("v2", shape, constant(1e-3))};
  for (int step = 1; step <= 3; ++step)
    row.tensors.push_back(f32("grad" + std::to_string(step), shape, normal(80 + step, 0.1)));
  row.run = [=](Backend& b, DeviceTensors& t) {
    AdamWArgs a = args;
    for (a.step = 1; a.step <= 3; ++a.step) {
      const std::string grad = "grad" + std::to_string(a.step);
      b.adamw_update(t["param"], t[grad], t["m"], t["v"], a);
      b.adam_direction(t["direction"], t[grad], t["m2"], t["v2"], a);
    }
  };
  row.forward = [=](HostTensors& h) {
    const double b1 = args.beta1, b2 = args.beta2, eps = args.eps;
    for (int step = 1; step <= 3; ++step) {
      const double* g = h("grad" + std::to_string(step));
      const double bias1 = 1 - std::pow(b1, step), bias2 = 1 - std::pow(b2, step);
      double *p = h("param"), *m = h("m"), *v = h("v"), *d = h("direction"), *m2 = h("m2"), *v2 = h("v2");
      for (int64_t i = 0; i < n; ++i) {
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        const double adam = m[i] / bias1 / (std::sqrt(v[i] / bias2) + eps);
        p[i] -= double(args.lr) * (double(args.update_scale) * adam + double(args.weight_decay) * p[i]);
        m2[i] = b1 * m2[i] + (1 - b1) * g[i];
        v2[i] = b2 * v2[i] + (1 - b2) * g[i] * g[i];
        d[i] = m2[i] / bias1 / (std::sqrt(v2[i] / bias2) + eps);
      }
    }
  };
  // fp32 state rounded once per step: measured up to 4.9e-8. The GPU computes the same with FMA
  // contraction and its own sqrtf (the former test's 1e-6).
  row.compare = {{"param", 3e-7, 1e-6}, {"m", 3e-7, 1e-6},  {"v", 3e-7, 1e-6},
                 {"m2", 3e-7, 1e-6},    {"v2", 3e-7, 1e-6}, {"direction", 3e-7, 1e-6}};
  row.rejects = {{"step 0", [=](Backend& b, DeviceTensors& t) {
                    AdamWArgs a = args;
                    a.step = 0;
                    b.adamw_update(t["param"], t["grad1"], t["m"], t["v"], a);
                  }}};
  return row;
}

// A precision row: `row` with the named tensors stored in BF16 on every backend (the op computes
// in fp32 and rounds to nearest even on store), against the same double reference evaluated on
// the bf16-rounded inputs, with the bounds `compare` (kBf16 for a BF16 output). Finite
// differences, rejects and property checks stay with the fp32 row.
OpCase in_bf16(OpCase row, const std::vector<std::string>& tensors, std::vector<Compare> compare) {
  std::string names;
  for (TensorSpec& spec : row.tensors)
    if (std::find(tensors.begin(), tensors.end(), spec.name) != tensors.end()) {
      spec.dtype = DType::BF16;
      names += (names.empty() ? "" : ", ") + spec.name;
    }
  REQUIRE(names.size() > 0);
  row.name += ", BF16 " + names;
  row.compare = std::move(compare);
  row.loss.clear();
  row.gradients.clear();
  row.gradient_tolerance = 0;
  row.check = nullptr;
  row.rejects.clear();
  return row;
}

}  // namespace

std::vector<OpCase> op_table() {
  std::vector<OpCase> rows;
  auto add = [&](OpCase row) { rows.push_back(std::move(row)); };
  // Finite differences in double: truncation ~h^2 |f'''| = 1e-10 and rounding ~1e-16 / h = 1e-11
  // per element; measured 9.6e-12 (embedding) to 1.3e-8 (cross-entropy of logits with standard
  // deviation 3, whose gradient is small against the loss's curvature). Any wrong term gives errors
  // of order 1; 1e-7 leaves room for larger third derivatives in other shapes.
  const double fd = 1e-7;
  const double no_fd = 0;  // rows too large for finite differences (one forward per input element)

  // BF16 outputs are rounded once to 8 significant bits (at most 2^-9 = 2e-3 relative per value);
  // normalised over a tensor that measured 0.9e-3 to 1.7e-3 (gemm, linear, rmsnorm, rope, swiglu,
  // cross-entropy's gradient, axpby). The cuda column matched the CPU bit for bit except linear with
  // a bias (2.1e-3: the GPU rounds the GEMM output to bf16 before adding the bias).
  const double kBf16 = 3e-3;

  add(memory_row());

  for (bool trans_a : {false, true})
    for (bool trans_b : {false, true}) add(gemm_row(trans_a, trans_b, 37, 53, 29, 0.7f, 0.3f));
  add(gemm_row(false, false, 1, 7, 3, 1.5f, 0.5f));  // a single row
  add(gemm_bf16_row());
  // One BF16 operand against an F32 one (bf16 projectors meeting fp32 gradients), either side:
  // the bf16 operand widens exactly, so the fp32 row's bounds hold; and into a BF16 output read by
  // beta, rounded once (kBf16).
  add(in_bf16(gemm_row(false, true, 37, 53, 29, 0.7f, 0.3f), {"a"}, {{"c", 5e-7, 1e-5}}));
  add(in_bf16(gemm_row(true, false, 37, 53, 29, 0.7f, 0.3f), {"b"}, {{"c", 5e-7, 1e-5}}));
  add(in_bf16(gemm_row(false, false, 37, 53, 29, 0.7f, 0.3f), {"b", "c"}, {{"c", kBf16, 1e-2}}));
  // [300, 8]: U's columns are longer than the sign kernel's 256-thread block (each thread holds
  // one or two candidates), so its arg-max reduction must combine every thread's candidate.
  for (auto [m, n] : {std::pair<int64_t, int64_t>{40, 24}, {24, 40}, {32, 32}, {9, 5}, {4, 10}, {6, 6}, {300, 8}})
    add(svd_row(m, n));
  for (auto [m, n] : {std::pair<int64_t, int64_t>{50, 12}, {16, 16}, {12, 5}}) add(qr_row(m, n));
  add(fill_normal_row());
  add(round_stochastic_row());

  add(elementwise_row());
  for (DType b_dtype : {DType::F32, DType::BF16}) {
    add(add_row(1003, 0, b_dtype));  // packs and a tail of 3
    add(add_row(1003, 1, b_dtype));  // unaligned: scalar accesses
  }
  // One element; one partial block; more than the GPU's 1024 x 256 first-pass threads (grid-stride).
  for (int64_t n : {int64_t(1), int64_t(255), int64_t(300007)}) add(sum_row(n, false));
  add(sum_row(1000, true));
  add(device_scalars_row(300007, 1.0));  // the norm (~548) is clipped to 1
  add(device_scalars_row(255, 1e3));     // below max_norm: factor 1
  add(sum_squares_checked_row());
  add(side_work_row(1000));

  add(embedding_row("(repeated tokens)", 4, 5, {0, 3, 1, 3, 3, 2}, fd));
  add(embedding_row("(one token)", 3, 33, {2}, no_fd));
  {
    std::vector<int32_t> t(300);
    for (size_t n = 0; n < t.size(); ++n) t[n] = int32_t((n * 7) % 17);
    add(embedding_row("(300 tokens over 17 rows)", 17, 130, t, no_fd));
    add(in_bf16(embedding_row("(300 tokens over 17 rows)", 17, 130, t, no_fd), {"table", "out", "dout"},
                {{"out", 0.0, 0.0}, {"dtable", 2e-6, 0.0}}));
  }
  // 300 tokens over 150 rows, then 5000 tokens over 8 rows: overflows the CUDA kernel's shared list
  // of positions, exercising its flush path. First and last rows of the range are hit.
  for (auto [N, distinct] : {std::pair<int64_t, int32_t>{300, 150}, {5000, 8}}) {
    auto t = random_ids(N, distinct, 100 + uint64_t(N));
    t.front() = 0;
    t.back() = distinct - 1;
    add(embedding_row("(" + std::to_string(N) + " tokens over " + std::to_string(distinct) + " rows)", 150, 70, t,
                      no_fd));
  }

  add(rmsnorm_row(4, 7, 1e-5f, 1.0, fd));
  add(rmsnorm_row(33, 96, 1e-6f, 1.0, no_fd));
  add(rmsnorm_row(33, 300, 1e-5f, 2.0, no_fd));
  add(rmsnorm_row(1, 33, 1e-5f, 1.0, no_fd));
  add(rmsnorm_bf16_row());
  // 2056 channels: more than one pass of 256 threads x 4 (f32) or x 8 (bf16) elements; 300 rows:
  // more than the GPU backward's 264 blocks, so blocks sum dweight over two rows.
  add(rmsnorm_row(300, 2056, 1e-5f, 1.0, no_fd));
  add(in_bf16(rmsnorm_row(300, 2056, 1e-5f, 1.0, no_fd), {"x", "weight", "out", "dout", "dx"},
              {{"out", kBf16, 1e-2}, {"rstd", 1e-6, 1e-5}, {"dx", kBf16, 1e-2}, {"dweight", 1e-6, 1e-5}}));
  add(add_rmsnorm_row(4, 7, 0));
  add(add_rmsnorm_row(33, 96, 0));
  add(add_rmsnorm_row(33, 96, 1));
  add(add_rmsnorm_row(5, 2056, 0));
  // The backends normalise the sum rounded to bf16, the double reference the exact sum: rstd
  // differs by that rounding (measured 2.8e-4).
  add(in_bf16(add_rmsnorm_row(33, 96, 0), {"a", "b", "sum", "out", "in_place", "in_place_out"},
              {{"sum", kBf16, 0.0},
               {"in_place", kBf16, 0.0},
               {"out", kBf16, 1e-2},
               {"in_place_out", kBf16, 1e-2},
               {"rstd", 1e-3, 1e-5}}));
  add(in_bf16(rmsnorm_row(33, 300, 1e-5f, 2.0, no_fd), {"x", "weight", "out", "dout", "dx"},
              {{"out", kBf16, 1e-2}, {"rstd", 1e-6, 1e-5}, {"dx", kBf16, 1e-2}, {"dweight", 1e-6, 1e-5}}));

  add(linear_row(5, 4, 3, true, false, fd));
  add(linear_row(5, 4, 3, true, true, fd));
  add(linear_row(40, 24, 18, true, false, no_fd));
  for (bool with_bias : {false, true})
    for (bool accumulate_dx : {false, true}) add(linear_row(45, 70, 90, with_bias, accumulate_dx, no_fd));
  add(linear_row(1, 33, 65, true, true, no_fd));  // one row
  add(linear_bf16_row());
  add(in_bf16(linear_row(45, 70, 90, true, true, no_fd), {"x", "weight", "out", "dout", "dx"},
              {{"out", kBf16, 1e-2}, {"dx", kBf16, 1e-2}, {"dweight", 1e-6, 1e-5}, {"dbias", 1e-6, 1e-5}}));

  add(rope_row(AttentionShape{1, 3, 2, 1, 6}, 8, 100.0, {5, 0, 7}, fd));
  add(rope_row(AttentionShape{2, 9, 4, 2, 16}, 32, 10000.0, random_ids(18, 32, 140), no_fd));
  add(in_bf16(rope_row(AttentionShape{2, 9, 4, 2, 16}, 32, 10000.0, random_ids(18, 32, 140), no_fd),
              {"qkv", "restored", "probe", "dqkv"},
              {{"qkv", kBf16, 1e-2}, {"restored", kBf16, 1e-2}, {"dqkv", kBf16, 1e-2}}));

  add(attention_row(AttentionShape{2, 4, 4, 2, 3}, {}, 20, fd));  // grouped-query
  add(attention_row(AttentionShape{1, 3, 2, 2, 2}, {}, 22, fd));  // multi-head
  // Sequence 0: documents [0,2) and [2,5); sequence 1: [0,1), [1,4), [4,5).
  add(attention_row(AttentionShape{2, 5, 2, 1, 4}, {0, 0, 2, 2, 2, 0, 1, 1, 1, 4}, 30, fd));
  add(attention_mask_row());
  {
    const AttentionShape s{2, 9, 4, 2, 8};
    add(attention_row(s, {}, 10, no_fd));
    add(attention_row(s, doc_starts(s, {4}), 10, no_fd));
  }
  // Not multiples of the kernels' tiles: T = 37, 70, 20; D = 16, 8, 32; GQA, MHA, MQA.
  add(attention_row(AttentionShape{2, 37, 4, 2, 16}, {}, 150, no_fd));
  {
    const AttentionShape s{2, 37, 4, 2, 16};
    add(attention_row(s, doc_starts(s, {7, 19}), 150, no_fd));
  }
  add(attention_row(AttentionShape{1, 70, 3, 3, 8}, {}, 151, no_fd));
  add(attention_row(AttentionShape{3, 1, 4, 1, 8}, {}, 153, no_fd));  // sequences of one token
  {
    const AttentionShape s{3, 20, 8, 1, 32};
    add(attention_row(s, doc_starts(s, {7, 11, 19}), 152, no_fd));
  }
  // The tensor-core kernel's heads (D = 32, 64, 128 fill 2, 4, 8 fragments of 16), tiles of 32
  // rows cut at T = 40, 33, 70, GQA ratios 4 and 2, documents crossing tile boundaries.
  add(attention_row(AttentionShape{1, 40, 4, 1, 32}, {}, 154, no_fd));
  {
    const AttentionShape s{2, 33, 4, 2, 64};
    add(attention_row(s, doc_starts(s, {5, 31, 32}), 155, no_fd));
  }
  add(attention_row(AttentionShape{1, 70, 2, 1, 128}, {}, 156, no_fd));
  {
    const AttentionShape s{1, 70, 2, 2, 128};
    add(attention_row(s, doc_starts(s, {20, 50}), 157, no_fd));
  }

  // D = 80: a head that does not fill the last register column of the warp; D = 256: the largest.
  for (const CacheCase& c :
       {CacheCase{2, 4, 2, 16, 40}, CacheCase{1, 3, 3, 80, 33}, CacheCase{3, 8, 1, 32, 21}, CacheCase{1, 2, 1, 256, 9}})
    add(cached_attention_row(c));

  add(swiglu_row(3, 5, fd));
  add(swiglu_row(21, 35, no_fd));
  add(swiglu_row(17, 300, no_fd));
  add(swiglu_row(1, 33, no_fd));
  add(in_bf16(swiglu_row(17, 300, no_fd), {"gate_up", "out", "dout", "dgate_up"},
              {{"out", kBf16, 1e-2}, {"dgate_up", kBf16, 1e-2}}));
  // F = 296 packs into bf16x8 (300 takes the scalar path in bf16).
  add(in_bf16(swiglu_row(17, 296, no_fd), {"gate_up", "out", "dout", "dgate_up"},
              {{"out", kBf16, 1e-2}, {"dgate_up", kBf16, 1e-2}}));

  add(cross_entropy_row(7, {3, -1, 0, 6, -100}, 0.37, 3.0, fd));
  {
    std::vector<int32_t> t(21);
    for (int64_t n = 0; n < 21; ++n) t[n] = n % 4 == 3 ? -1 : int32_t((n * 13) % 50);
    add(cross_entropy_row(50, t, 0.125, 4.0, no_fd));
  }
  {
    auto t = random_ids(20, 1000, 180);
    t[3] = -1;
    t[11] = -100;
    t[19] = 999;
    add(cross_entropy_row(1000, t, 0.05, 3.0, no_fd));
    add(in_bf16(cross_entropy_row(1000, t, 0.05, 3.0, no_fd), {"logits", "dlogits", "in_place", "fused"},
                {{"losses", 1e-6, 1e-5},
                 {"dlogits", kBf16, 1e-2},
                 {"in_place", kBf16, 1e-2},
                 {"fused_losses", 1e-6, 1e-5},
                 {"fused", kBf16, 1e-2}}));
  }
  add(cross_entropy_row(33, {32}, 1.0, 3.0, no_fd));  // one row, the last class

  add(adam_row());
  // Parameters and moments rounded to bf16 after each of the 3 steps: measured 2.3e-3 (v) to 3.4e-3
  // (param); the GPU rounds the same floats.
  const double kBf16ThreeSteps = 7e-3;
  add(in_bf16(adam_row(), {"param", "m", "v", "m2", "v2", "direction"},
              {{"param", kBf16ThreeSteps, 1e-2},
               {"m", kBf16ThreeSteps, 1e-2},
               {"v", kBf16ThreeSteps, 1e-2},
               {"m2", kBf16ThreeSteps, 1e-2},
               {"v2", kBf16ThreeSteps, 1e-2},
               {"direction", kBf16ThreeSteps, 1e-2}}));
  return rows;
}

}  // namespace gum::op_test
