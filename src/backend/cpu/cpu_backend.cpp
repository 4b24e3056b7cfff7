// The fp32 CPU reference backend: checks its arguments, then runs the float instantiation of
// the kernels in kernels.h (OpenBLAS GEMMs, LAPACK factorisations, OpenMP loops). BF16 tensors
// are widened for them and rounded back (F32Operand).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "../op_checks.h"
#include "gum/backend/backend.h"
#include "gum/core/error.h"
#include "gum/core/philox.h"
#include "kernels.h"

namespace gum {

namespace {

constexpr size_t kAlignment = 64;

using op_checks::require_numel;

void require_f32(const Tensor& t, const char* op, const char* what) {
  op_checks::require_dtype(t, DType::F32, Device::CPU, op, what);
}

void require_i32(const Tensor& t, const char* op, const char* what) {
  op_checks::require_dtype(t, DType::I32, Device::CPU, op, what);
}

double* f64_scalars(const Tensor& t, int64_t count, const char* op, const char* what) {
  op_checks::require_dtype(t, DType::F64, Device::CPU, op, what);
  require_numel(t, count, op, what);
  return t.ptr<double>();
}

void require_same_numel(const Tensor& a, const Tensor& b, const char* op, const char* what) {
  if (a.numel() != b.numel()) runtime_error(op, ": ", what, " sizes differ: ", a.shape.str(), " vs ", b.shape.str());
}

// Every token id in [0, limit), else an error naming the op, the position and the value.
void require_ids_below(const Tensor& ids, int64_t limit, bool allow_negative, const char* op, const char* what) {
  const int32_t* p = ids.ptr<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    if (allow_negative && p[i] < 0) continue;
    if (p[i] < 0 || p[i] >= limit) runtime_error(op, ": ", what, "[", i, "] = ", p[i], " is outside [0, ", limit, ")");
  }
}

// An F32 or BF16 tensor as the fp32 kernels see it. F32 is used in place. BF16 is widened into a
// temporary (exactly) unless the op only writes it, and when the op writes it the temporary is
// rounded back to nearest even as the operand goes out of scope: every op on BF16 storage
// computes in fp32 (a GEMM: bf16 operands, fp32 accumulation) and rounds once on store. Aliasing
// operands stay correct (each BF16 operand has its own temporary; only writers store back).
enum class Access { Read, Write, ReadWrite };

class F32Operand {
 public:
  F32Operand(const Tensor& t, Access access, const char* op, const char* what) : F32Operand(&t, access, op, what) {}
  // `t` null: an absent optional tensor (a bias), seen as a null pointer.
  F32Operand(const Tensor* optional, Access access, const char* op, const char* what) : access_(access) {
    if (!optional) return;
    const Tensor& t = *optional;
    tensor_ = t;
    op_checks::require_float(t, Device::CPU, op, what);
    if (t.dtype == DType::F32) {
      ptr_ = t.ptr<float>();
      return;
    }
    const int64_t n = t.numel();
    widened_.resize(static_cast<size_t>(n));
    ptr_ = widened_.data();
    if (access == Access::Write) return;
    const uint16_t* src = t.ptr<uint16_t>();
    float* dst = ptr_;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
  }
  ~F32Operand() {
    if (widened_.empty() || access_ == Access::Read) return;
    const float* src = ptr_;
    uint16_t* dst = tensor_.ptr<uint16_t>();
    const int64_t n = tensor_.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
  }
  F32Operand(const F32Operand&) = delete;
  F32Operand& operator=(const F32Operand&) = delete;
  float* get() const { return ptr_; }

 private:
  Tensor tensor_;
  Access access_;
  float* ptr_ = nullptr;
  std::vector<float> widened_;
};

cpu::AttentionDims attention_dims(const AttentionShape& s) {
  return {s.batch, s.seq_len, s.n_head, s.n_kv_head, s.head_dim};
}

void check_attention_shape(const AttentionShape& s, const Tensor& qkv, const Tensor* doc_start, const char* op) {
  op_checks::require_attention_args(s, qkv, doc_start, Device::CPU, op, /*bf16_allowed=*/true);
  if (doc_start) {  // host memory: the CPU can check each value up front
    const int32_t* p = doc_start->ptr<int32_t>();
    for (int64_t row = 0; row < doc_start->numel(); ++row) {
      const int64_t t = row % s.seq_len;
      if (p[row] < 0 || p[row] > t)
        runtime_error(op, ": doc_start[", row, "] = ", p[row], " must lie in [0, ", t, "] (its position)");
    }
  }
}

class CpuBackend final : public Backend {
 public:
  ~CpuBackend() override {
    for (auto& [ptr, bytes] : allocations_) std::free(ptr);
  }

  Device device() const override { return Device::CPU; }
  std::string name() const override { return "cpu"; }

  // ---- memory ----
  void* allocate(size_t bytes) override {
    const size_t rounded = std::max<size_t>(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
    void* ptr = std::aligned_alloc(kAlignment, rounded);
    if (!ptr) runtime_error("cpu backend: out of host memory allocating ", bytes, " bytes");
    std::memset(ptr, 0, rounded);
    std::lock_guard<std::mutex> lock(mutex_);
    allocations_[ptr] = rounded;
    current_bytes_ += rounded;
    peak_bytes_ = std::max(peak_bytes_, current_bytes_);
    return ptr;
  }

  void release(void* ptr) override {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = allocations_.find(ptr);
    GUM_CHECK(it != allocations_.end(), "release of memory this backend did not allocate");
    current_bytes_ -= it->second;
    allocations_.erase(it);
    std::free(ptr);
  }

  void copy_from_host(Tensor dst, const void* host_src) override {
    if (dst.nbytes()) std::memcpy(dst.data, host_src, dst.nbytes());
  }
  void copy_to_host(void* host_dst, const Tensor& src) override {
    if (src.nbytes()) std::memcpy(host_dst, src.data, src.nbytes());
  }

  void copy(Tensor dst, const Tensor& src) override {
    require_same_numel(dst, src, "copy", "dst and src");
    const int64_t n = src.numel();
    if (dst.dtype == src.dtype) {
      if (dst.data != src.data && n) std::memmove(dst.data, src.data, src.nbytes());
    } else if (dst.dtype == DType::BF16 && src.dtype == DType::F32) {
      const float* s = src.ptr<float>();
      uint16_t* d = dst.ptr<uint16_t>();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(s[i]);
    } else if (dst.dtype == DType::F32 && src.dtype == DType::BF16) {
      const uint16_t* s = src.ptr<uint16_t>();
      float* d = dst.ptr<float>();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) d[i] = bf16_to_f32(s[i]);
    } else {
      runtime_error("copy: no conversion from ", dtype_name(src.dtype), " to ", dtype_name(dst.dtype));
    }
  }

  void fill(Tensor dst, float value) override {
    const int64_t n = dst.numel();
    if (dst.dtype == DType::F32) {
      std::fill(dst.ptr<float>(), dst.ptr<float>() + n, value);
    } else if (dst.dtype == DType::BF16) {
      std::fill(dst.ptr<uint16_t>(), dst.ptr<uint16_t>() + n, f32_to_bf16(value));
    } else if (dst.dtype == DType::F64) {
      std::fill(dst.ptr<double>(), dst.ptr<double>() + n, double(value));
    } else {
      runtime_error("fill: unsupported dtype ", dtype_name(dst.dtype));
    }
  }

  void synchronize() override {}
  size_t peak_memory_bytes() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return peak_bytes_;
  }

  // ---- dense linear algebra ----
  void gemm(bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor c) override {
    const int64_t M = trans_a ? a.cols() : a.rows(), K = trans_a ? a.rows() : a.cols();
    const int64_t Kb = trans_b ? b.cols() : b.rows(), N = trans_b ? b.rows() : b.cols();
    if (K != Kb || c.rows() != M || c.cols() != N)
      runtime_error("gemm: shapes do not match: op(A) [", M, ", ", K, "] (A ", a.shape.str(), trans_a ? "^T" : "",
                    ") x op(B) [", Kb, ", ", N, "] (B ", b.shape.str(), trans_b ? "^T" : "", ") -> C ", c.shape.str());
    const F32Operand A(a, Access::Read, "gemm", "A"), B(b, Access::Read, "gemm", "B");
    const F32Operand C(c, beta == 0.0f ? Access::Write : Access::ReadWrite, "gemm", "C");
    cpu::gemm_rowmajor(trans_a, trans_b, M, N, K, alpha, A.get(), B.get(), beta, C.get());
  }

  void svd(Tensor u, Tensor s, Tensor vt, const Tensor& a) override {
    const int64_t m = a.rows(), n = a.cols(), k = std::min(m, n);
    if (u.rows() != m || u.cols() != k || s.numel() != k || vt.rows() != k || vt.cols() != n)
      runtime_error("svd: A ", a.shape.str(), " needs U [", m, ", ", k, "], S [", k, "], Vt [", k, ", ", n, "], got U ",
                    u.shape.str(), ", S ", s.shape.str(), ", Vt ", vt.shape.str());
    const F32Operand A(a, Access::Read, "svd", "A"), U(u, Access::Write, "svd", "U"), S(s, Access::Write, "svd", "S"),
        Vt(vt, Access::Write, "svd", "Vt");
    if (!std::isfinite(cpu::sum_squares(A.get(), a.numel())))
      runtime_error("svd: A ", a.shape.str(), " contains NaN or Inf");
    cpu::svd_thin(U.get(), S.get(), Vt.get(), A.get(), m, n);
  }

  void qr_orthonormal(Tensor q, const Tensor& a) override {
    const int64_t m = a.rows(), k = a.cols();
    if (m < k) runtime_error("qr_orthonormal: A ", a.shape.str(), " must have at least as many rows as columns");
    if (q.rows() != m || q.cols() != k)
      runtime_error("qr_orthonormal: Q ", q.shape.str(), " must have the shape of A ", a.shape.str());
    const F32Operand A(a, Access::Read, "qr_orthonormal", "A"), Q(q, Access::Write, "qr_orthonormal", "Q");
    if (!std::isfinite(cpu::sum_squares(A.get(), a.numel())))
      runtime_error("qr_orthonormal: A ", a.shape.str(), " contains NaN or Inf");
    cpu::qr_orthonormal(Q.get(), A.get(), m, k);
  }

  void fill_normal(Tensor dst, uint64_t seed, uint64_t stream, float mean, float std) override {
    const F32Operand out(dst, Access::Write, "fill_normal", "dst");
    float* p = out.get();
    const int64_t n = dst.numel();
    const int64_t blocks = (n + 3) / 4;
#pragma omp parallel for schedule(static)
    for (int64_t block = 0; block < blocks; ++block) {
      float z[4];
      philox_normal4(seed, stream, static_cast<uint64_t>(block), z);
      const int64_t first = 4 * block, end = std::min(n, first + 4);
      for (int64_t i = first; i < end; ++i) p[i] = mean + std * z[i - first];
    }
  }

  void round_stochastic(Tensor dst, const Tensor& src, uint64_t seed, uint64_t stream) override {
    op_checks::require_dtype(dst, DType::BF16, Device::CPU, "round_stochastic", "dst");
    require_f32(src, "round_stochastic", "src");
    require_same_numel(dst, src, "round_stochastic", "dst and src");
    const float* s = src.ptr<float>();
    uint16_t* d = dst.ptr<uint16_t>();
    const int64_t n = src.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16_stochastic(s[i], philox_bits(seed, stream, uint64_t(i)));
  }

  // ---- elementwise and reductions ----
  void add(Tensor out, const Tensor& a, const Tensor& b) override {
    require_same_numel(out, a, "add", "out and a");
    require_same_numel(out, b, "add", "out and b");
    const F32Operand x(a, Access::Read, "add", "a"), y(b, Access::Read, "add", "b"),
        o(out, Access::Write, "add", "out");
    float* op = o.get();
    const float *xp = x.get(), *yp = y.get();
    const int64_t n = out.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) op[i] = xp[i] + yp[i];
  }

  void axpby(Tensor y, float a, const Tensor& x, float b) override {
    require_same_numel(y, x, "axpby", "y and x");
    const F32Operand X(x, Access::Read, "axpby", "x"), Y(y, Access::ReadWrite, "axpby", "y");
    float* yp = Y.get();
    const float* xp = X.get();
    const int64_t n = y.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) yp[i] = a * xp[i] + b * yp[i];
  }

  void scale(Tensor x, float s) override {
    const F32Operand X(x, Access::ReadWrite, "scale", "x");
    float* p = X.get();
    const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] *= s;
  }

  double sum(const Tensor& x) override {
    const F32Operand X(x, Access::Read, "sum", "x");
    return cpu::sum(X.get(), x.numel());
  }

  double sum_squares(const Tensor& x) override {
    const F32Operand X(x, Access::Read, "sum_squares", "x");
    return cpu::sum_squares(X.get(), x.numel());
  }

  // ---- device scalars (plain memory here: the same arithmetic as the cuda kernels) ----
  void sum_into(Tensor acc, const Tensor& x, bool squares, bool accumulate) override {
    double& out = f64_scalars(acc, 1, "sum_into", "acc")[0];
    const double s = squares ? sum_squares(x) : sum(x);
    out = accumulate ? out + s : s;
  }

  void flag_non_finite(Tensor flag, const Tensor& value, double tag, double what) override {
    double* f = f64_scalars(flag, 3, "flag_non_finite", "flag");
    const double v = f64_scalars(value, 1, "flag_non_finite", "value")[0];
    if (f[0] != 0.0 || std::isfinite(v)) return;
    f[0] = tag;
    f[1] = what;
    f[2] = v;
  }

  void norm_scale(Tensor scale, const Tensor& sum_squares, double numerator, double eps, double threshold) override {
    require_f32(scale, "norm_scale", "scale");
    require_numel(scale, 1, "norm_scale", "scale");
    const double norm = std::sqrt(f64_scalars(sum_squares, 1, "norm_scale", "sum_squares")[0]);
    scale.ptr<float>()[0] = norm > threshold ? static_cast<float>(numerator / (norm + eps)) : 1.0f;
  }

  void scale_by(Tensor x, const Tensor& scale) override {
    require_f32(scale, "scale_by", "scale");
    require_numel(scale, 1, "scale_by", "scale");
    this->scale(x, scale.ptr<float>()[0]);
  }

  // ---- transformer ops ----
  void embedding_forward(Tensor out, const Tensor& tokens, const Tensor& table) override {
    require_i32(tokens, "embedding_forward", "tokens");
    const int64_t N = tokens.numel(), C = table.cols();
    require_numel(out, N * C, "embedding_forward", "out");
    require_ids_below(tokens, table.rows(), false, "embedding_forward", "tokens");
    const F32Operand Table(table, Access::Read, "embedding_forward", "table"),
        Out(out, Access::Write, "embedding_forward", "out");
    cpu::embedding_forward(Out.get(), tokens.ptr<int32_t>(), Table.get(), N, C);
  }

  void embedding_backward(Tensor dtable, const Tensor& dout, const Tensor& tokens) override {
    require_i32(tokens, "embedding_backward", "tokens");
    const int64_t N = tokens.numel(), C = dtable.cols();
    require_numel(dout, N * C, "embedding_backward", "dout");
    require_ids_below(tokens, dtable.rows(), false, "embedding_backward", "tokens");
    const F32Operand Dout(dout, Access::Read, "embedding_backward", "dout"),
        Dtable(dtable, Access::ReadWrite, "embedding_backward", "dtable");
    cpu::embedding_backward(Dtable.get(), Dout.get(), tokens.ptr<int32_t>(), N, C);
  }

  void rmsnorm_forward(Tensor out, Tensor rstd, const Tensor& x, const Tensor& weight, float eps) override {
    require_f32(rstd, "rmsnorm_forward", "rstd");
    const int64_t N = x.rows(), C = x.cols();
    require_numel(out, N * C, "rmsnorm_forward", "out");
    require_numel(rstd, N, "rmsnorm_forward", "rstd");
    require_numel(weight, C, "rmsnorm_forward", "weight");
    const F32Operand X(x, Access::Read, "rmsnorm_forward", "x"), W(weight, Access::Read, "rmsnorm_forward", "weight"),
        Out(out, Access::Write, "rmsnorm_forward", "out");
    cpu::rmsnorm_forward(Out.get(), rstd.f32(), X.get(), W.get(), N, C, eps);
  }

  // The two ops in turn: the reference the fused GPU kernel must match.
  void add_rmsnorm_forward(Tensor sum, Tensor out, Tensor rstd, const Tensor& a, const Tensor& b, const Tensor& weight,
                           float eps) override {
    add(sum, a, b);
    rmsnorm_forward(out, rstd, sum, weight, eps);
  }

  void rmsnorm_backward(Tensor dx, Tensor dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                        const Tensor& rstd) override {
    require_f32(rstd, "rmsnorm_backward", "rstd");
    const int64_t N = x.rows(), C = x.cols();
    require_numel(dx, N * C, "rmsnorm_backward", "dx");
    require_numel(dout, N * C, "rmsnorm_backward", "dout");
    require_numel(dweight, C, "rmsnorm_backward", "dweight");
    require_numel(weight, C, "rmsnorm_backward", "weight");
    require_numel(rstd, N, "rmsnorm_backward", "rstd");
    const F32Operand X(x, Access::Read, "rmsnorm_backward", "x"), W(weight, Access::Read, "rmsnorm_backward", "weight"),
        Dout(dout, Access::Read, "rmsnorm_backward", "dout"), Dx(dx, Access::ReadWrite, "rmsnorm_backward", "dx"),
        Dw(dweight, Access::ReadWrite, "rmsnorm_backward", "dweight");
    cpu::rmsnorm_backward(Dx.get(), Dw.get(), Dout.get(), X.get(), W.get(), rstd.f32(), N, C);
  }

  void linear_forward(Tensor out, const Tensor& x, const Tensor& weight, const Tensor* bias) override {
    const int64_t N = x.rows(), I = x.cols(), O = weight.rows();
    if (weight.cols() != I)
      runtime_error("linear_forward: weight ", weight.shape.str(), " does not take inputs of width ", I);
    require_numel(out, N * O, "linear_forward", "out");
    if (bias) require_numel(*bias, O, "linear_forward", "bias");
    const F32Operand X(x, Access::Read, "linear_forward", "x"), W(weight, Access::Read, "linear_forward", "weight"),
        B(bias, Access::Read, "linear_forward", "bias"), Out(out, Access::Write, "linear_forward", "out");
    cpu::linear_forward(Out.get(), X.get(), W.get(), B.get(), N, I, O);
  }

  void linear_backward(Tensor dx, Tensor dweight, Tensor* dbias, const Tensor& dout, const Tensor& x,
                       const Tensor& weight, bool accumulate_dx) override {
    const int64_t N = x.rows(), I = x.cols(), O = weight.rows();
    if (weight.cols() != I)
      runtime_error("linear_backward: weight ", weight.shape.str(), " does not take inputs of width ", I);
    require_numel(dx, N * I, "linear_backward", "dx");
    require_numel(dout, N * O, "linear_backward", "dout");
    require_numel(dweight, O * I, "linear_backward", "dweight");
    if (dbias) require_numel(*dbias, O, "linear_backward", "dbias");
    const F32Operand X(x, Access::Read, "linear_backward", "x"), W(weight, Access::Read, "linear_backward", "weight"),
        Dout(dout, Access::Read, "linear_backward", "dout"),
        Dx(dx, accumulate_dx ? Access::ReadWrite : Access::Write, "linear_backward", "dx"),
        Dw(dweight, Access::ReadWrite, "linear_backward", "dweight"),
        Db(dbias, Access::ReadWrite, "linear_backward", "dbias");
    cpu::linear_backward(Dx.get(), Dw.get(), Db.get(), Dout.get(), X.get(), W.get(), N, I, O, accumulate_dx);
  }

  void rope_forward(Tensor qkv, const Tensor& positions, const Tensor& cos_sin, const AttentionShape& s) override {
    rope(qkv, positions, cos_sin, s, false, "rope_forward");
  }
  void rope_backward(Tensor dqkv, const Tensor& positions, const Tensor& cos_sin, const AttentionShape& s) override {
    rope(dqkv, positions, cos_sin, s, true, "rope_backward");
  }

  size_t attention_aux_elems(const AttentionShape& s) const override {
    return static_cast<size_t>(s.batch) * s.n_head * s.seq_len * s.seq_len;
  }

  void attention_forward(Tensor out, Tensor aux, const Tensor& qkv, const Tensor* doc_start,
                         const AttentionShape& s) override {
    check_attention_shape(s, qkv, doc_start, "attention_forward");
    require_f32(aux, "attention_forward", "aux");
    require_numel(out, int64_t(s.batch) * s.seq_len * s.n_head * s.head_dim, "attention_forward", "out");
    if (aux.numel() < int64_t(attention_aux_elems(s)))
      runtime_error("attention_forward: aux has ", aux.numel(), " elements, needs ", attention_aux_elems(s));
    const F32Operand Qkv(qkv, Access::Read, "attention_forward", "qkv"),
        Out(out, Access::Write, "attention_forward", "out");
    cpu::attention_forward(Out.get(), aux.f32(), Qkv.get(), doc_start ? doc_start->ptr<int32_t>() : nullptr,
                           attention_dims(s));
  }

  void attention_backward(Tensor dqkv, const Tensor& dout, const Tensor& out, const Tensor& aux, const Tensor& qkv,
                          const Tensor* doc_start, const AttentionShape& s) override {
    check_attention_shape(s, qkv, doc_start, "attention_backward");
    require_f32(aux, "attention_backward", "aux");
    require_numel(dqkv, qkv.numel(), "attention_backward", "dqkv");
    require_numel(dout, int64_t(s.batch) * s.seq_len * s.n_head * s.head_dim, "attention_backward", "dout");
    if (aux.numel() < int64_t(attention_aux_elems(s)))
      runtime_error("attention_backward: aux has ", aux.numel(), " elements, needs ", attention_aux_elems(s));
    const F32Operand Qkv(qkv, Access::Read, "attention_backward", "qkv"),
        Dout(dout, Access::Read, "attention_backward", "dout"), Dqkv(dqkv, Access::Write, "attention_backward", "dqkv");
    cpu::attention_backward(Dqkv.get(), Dout.get(), aux.f32(), Qkv.get(),
                            doc_start ? doc_start->ptr<int32_t>() : nullptr, attention_dims(s));
  }

  void cached_attention_forward(Tensor out, Tensor kv_cache, const Tensor& qkv, int past_len,
                                const AttentionShape& s) override {
    const int64_t capacity = op_checks::require_cached_attention_args(s, out, kv_cache, qkv, past_len, Device::CPU,
                                                                      "cached_attention_forward");
    cpu::cached_attention_forward(out.f32(), kv_cache.f32(), qkv.f32(), past_len, capacity, attention_dims(s));
  }

  void swiglu_forward(Tensor out, const Tensor& gate_up) override {
    const int64_t N = gate_up.rows(), F = gate_up.cols() / 2;
    if (gate_up.cols() % 2 != 0) runtime_error("swiglu_forward: gate_up ", gate_up.shape.str(), " has an odd width");
    require_numel(out, N * F, "swiglu_forward", "out");
    const F32Operand In(gate_up, Access::Read, "swiglu_forward", "gate_up"),
        Out(out, Access::Write, "swiglu_forward", "out");
    cpu::swiglu_forward(Out.get(), In.get(), N, F);
  }

  void swiglu_backward(Tensor dgate_up, const Tensor& dout, const Tensor& gate_up) override {
    const int64_t N = gate_up.rows(), F = gate_up.cols() / 2;
    if (gate_up.cols() % 2 != 0) runtime_error("swiglu_backward: gate_up ", gate_up.shape.str(), " has an odd width");
    require_numel(dgate_up, N * 2 * F, "swiglu_backward", "dgate_up");
    require_numel(dout, N * F, "swiglu_backward", "dout");
    const F32Operand In(gate_up, Access::Read, "swiglu_backward", "gate_up"),
        Dout(dout, Access::Read, "swiglu_backward", "dout"),
        Din(dgate_up, Access::Write, "swiglu_backward", "dgate_up");
    cpu::swiglu_backward(Din.get(), Dout.get(), In.get(), N, F);
  }

  void cross_entropy_forward(Tensor losses, const Tensor& logits, const Tensor& targets) override {
    require_i32(targets, "cross_entropy_forward", "targets");
    const int64_t N = logits.rows(), V = logits.cols();
    require_numel(losses, N, "cross_entropy_forward", "losses");
    require_numel(targets, N, "cross_entropy_forward", "targets");
    require_ids_below(targets, V, true, "cross_entropy_forward", "targets");
    const F32Operand Logits(logits, Access::Read, "cross_entropy_forward", "logits"),
        Losses(losses, Access::Write, "cross_entropy_forward", "losses");
    cpu::cross_entropy_forward(Losses.get(), Logits.get(), targets.ptr<int32_t>(), N, V);
  }

  void cross_entropy_backward(Tensor dlogits, const Tensor& logits, const Tensor& targets, float scale) override {
    require_i32(targets, "cross_entropy_backward", "targets");
    const int64_t N = logits.rows(), V = logits.cols();
    require_numel(dlogits, N * V, "cross_entropy_backward", "dlogits");
    require_numel(targets, N, "cross_entropy_backward", "targets");
    require_ids_below(targets, V, true, "cross_entropy_backward", "targets");
    const F32Operand Logits(logits, Access::Read, "cross_entropy_backward", "logits"),
        Dlogits(dlogits, Access::Write, "cross_entropy_backward", "dlogits");
    cpu::cross_entropy_backward(Dlogits.get(), Logits.get(), targets.ptr<int32_t>(), N, V, scale);
  }

  void cross_entropy_fused(Tensor losses, Tensor logits, const Tensor& targets, float scale) override {
    cross_entropy_forward(losses, logits, targets);
    cross_entropy_backward(logits, logits, targets, scale);
  }

  // ---- optimizer ops ----
  void adamw_update(Tensor param, const Tensor& grad, Tensor m, Tensor v, const AdamWArgs& args) override {
    check_adam_tensors(param, grad, m, v, args, "adamw_update");
    const char* op = "adamw_update";
    const F32Operand G(grad, Access::Read, op, "grad"), P(param, Access::ReadWrite, op, "param"),
        M(m, Access::ReadWrite, op, "m"), V(v, Access::ReadWrite, op, "v");
    const double lr = args.step_scalars.empty() ? double(args.lr) : args.step_scalars.ptr<double>()[0];
    cpu::adamw_update(P.get(), G.get(), M.get(), V.get(), param.numel(), coefficients(args), lr, args.weight_decay,
                      args.update_scale);
  }

  void adam_direction(Tensor direction, const Tensor& grad, Tensor m, Tensor v, const AdamWArgs& args) override {
    check_adam_tensors(direction, grad, m, v, args, "adam_direction");
    const char* op = "adam_direction";
    const F32Operand G(grad, Access::Read, op, "grad"), D(direction, Access::Write, op, "direction"),
        M(m, Access::ReadWrite, op, "m"), V(v, Access::ReadWrite, op, "v");
    cpu::adam_direction(D.get(), G.get(), M.get(), V.get(), direction.numel(), coefficients(args));
  }

 private:
  // From AdamWArgs::step_scalars when given (host memory here), else from the step.
  static cpu::AdamCoefficients coefficients(const AdamWArgs& a) {
    if (a.step_scalars.empty())
      return {a.beta1, a.beta2, a.eps, adam_bias_correction(a.beta1, a.step), adam_bias_correction(a.beta2, a.step)};
    const double* s = a.step_scalars.ptr<double>();
    return {a.beta1, a.beta2, a.eps, s[1], s[2]};
  }

  static void check_adam_tensors(const Tensor& out, const Tensor& grad, const Tensor& m, const Tensor& v,
                                 const AdamWArgs& args, const char* op) {
    require_same_numel(out, grad, op, "param and grad");
    require_same_numel(out, m, op, "param and m");
    require_same_numel(out, v, op, "param and v");
    if (args.step < 1) runtime_error(op, ": step must be >= 1 (1-based, for bias correction), got ", args.step);
    if (!args.step_scalars.empty() && (args.step_scalars.dtype != DType::F64 || args.step_scalars.numel() != 3 ||
                                       args.step_scalars.device != Device::CPU))
      runtime_error(op, ": step_scalars must be F64 [3] (lr, bias corrections) on the cpu");
  }

  void rope(Tensor qkv, const Tensor& positions, const Tensor& cos_sin, const AttentionShape& s, bool inverse,
            const char* op) {
    require_f32(cos_sin, op, "cos_sin");
    require_i32(positions, op, "positions");
    const int64_t N = positions.numel();
    require_numel(qkv, N * s.qkv_width(), op, "qkv");
    if (s.head_dim % 2 != 0) runtime_error(op, ": head_dim ", s.head_dim, " must be even");
    const int64_t max_positions = cos_sin.numel() / s.head_dim;  // [P, D/2, 2]
    require_numel(cos_sin, max_positions * s.head_dim, op, "cos_sin");
    require_ids_below(positions, max_positions, false, op, "positions");
    const F32Operand Qkv(qkv, Access::ReadWrite, op, "qkv");
    cpu::rope_apply(Qkv.get(), positions.ptr<int32_t>(), cos_sin.f32(), N, s.n_head, s.n_kv_head, s.head_dim, inverse);
  }

  mutable std::mutex mutex_;
  std::unordered_map<void*, size_t> allocations_;
  size_t current_bytes_ = 0, peak_bytes_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace gum
