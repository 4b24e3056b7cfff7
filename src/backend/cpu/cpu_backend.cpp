// The fp32 CPU reference backend: checks its arguments, then runs the float instantiation of
// the kernels in kernels.h (OpenBLAS GEMMs, LAPACK factorisations, OpenMP loops).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "gum/backend/backend.h"
#include "gum/core/error.h"
#include "gum/core/philox.h"
#include "kernels.h"
#include "../op_checks.h"

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

cpu::AttentionDims attention_dims(const AttentionShape& s) {
  return {s.batch, s.seq_len, s.n_head, s.n_kv_head, s.head_dim};
}

void check_attention_shape(const AttentionShape& s, const Tensor& qkv, const Tensor* doc_start, const char* op) {
  op_checks::require_attention_args(s, qkv, doc_start, Device::CPU, op);
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
    require_f32(a, "gemm", "A");
    require_f32(b, "gemm", "B");
    require_f32(c, "gemm", "C");
    const int64_t M = trans_a ? a.cols() : a.rows(), K = trans_a ? a.rows() : a.cols();
    const int64_t Kb = trans_b ? b.cols() : b.rows(), N = trans_b ? b.rows() : b.cols();
    if (K != Kb || c.rows() != M || c.cols() != N)
      runtime_error("gemm: shapes do not match: op(A) [", M, ", ", K, "] (A ", a.shape.str(), trans_a ? "^T" : "",
                    ") x op(B) [", Kb, ", ", N, "] (B ", b.shape.str(), trans_b ? "^T" : "", ") -> C ", c.shape.str());
    cpu::gemm_rowmajor(trans_a, trans_b, M, N, K, alpha, a.f32(), b.f32(), beta, c.f32());
  }

  void svd(Tensor u, Tensor s, Tensor vt, const Tensor& a) override {
    require_f32(a, "svd", "A");
    const int64_t m = a.rows(), n = a.cols(), k = std::min(m, n);
    require_f32(u, "svd", "U");
    require_f32(s, "svd", "S");
    require_f32(vt, "svd", "Vt");
    if (u.rows() != m || u.cols() != k || s.numel() != k || vt.rows() != k || vt.cols() != n)
      runtime_error("svd: A ", a.shape.str(), " needs U [", m, ", ", k, "], S [", k, "], Vt [", k, ", ", n, "], got U ",
                    u.shape.str(), ", S ", s.shape.str(), ", Vt ", vt.shape.str());
    if (!std::isfinite(sum_squares(a))) runtime_error("svd: A ", a.shape.str(), " contains NaN or Inf");
    cpu::svd_thin(u.f32(), s.f32(), vt.f32(), a.f32(), m, n);
  }

  void qr_orthonormal(Tensor q, const Tensor& a) override {
    require_f32(a, "qr_orthonormal", "A");
    require_f32(q, "qr_orthonormal", "Q");
    const int64_t m = a.rows(), k = a.cols();
    if (m < k) runtime_error("qr_orthonormal: A ", a.shape.str(), " must have at least as many rows as columns");
    if (q.rows() != m || q.cols() != k)
      runtime_error("qr_orthonormal: Q ", q.shape.str(), " must have the shape of A ", a.shape.str());
    if (!std::isfinite(sum_squares(a))) runtime_error("qr_orthonormal: A ", a.shape.str(), " contains NaN or Inf");
    cpu::qr_orthonormal(q.f32(), a.f32(), m, k);
  }

  void fill_normal(Tensor dst, uint64_t seed, uint64_t stream, float mean, float std) override {
    require_f32(dst, "fill_normal", "dst");
    float* p = dst.f32();
    const int64_t n = dst.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = mean + std * philox_normal(seed, stream, static_cast<uint64_t>(i));
  }

  // ---- elementwise and reductions ----
  void add(Tensor out, const Tensor& a, const Tensor& b) override {
    require_f32(out, "add", "out");
    require_f32(a, "add", "a");
    require_f32(b, "add", "b");
    require_same_numel(out, a, "add", "out and a");
    require_same_numel(out, b, "add", "out and b");
    float* o = out.f32();
    const float *x = a.f32(), *y = b.f32();
    const int64_t n = out.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) o[i] = x[i] + y[i];
  }

  void axpby(Tensor y, float a, const Tensor& x, float b) override {
    require_f32(y, "axpby", "y");
    require_f32(x, "axpby", "x");
    require_same_numel(y, x, "axpby", "y and x");
    float* yp = y.f32();
    const float* xp = x.f32();
    const int64_t n = y.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) yp[i] = a * xp[i] + b * yp[i];
  }

  void scale(Tensor x, float s) override {
    require_f32(x, "scale", "x");
    float* p = x.f32();
    const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] *= s;
  }

  double sum(const Tensor& x) override {
    require_f32(x, "sum", "x");
    return cpu::sum(x.f32(), x.numel());
  }

  double sum_squares(const Tensor& x) override {
    require_f32(x, "sum_squares", "x");
    return cpu::sum_squares(x.f32(), x.numel());
  }

  // ---- transformer ops ----
  void embedding_forward(Tensor out, const Tensor& tokens, const Tensor& table) override {
    require_f32(out, "embedding_forward", "out");
    require_f32(table, "embedding_forward", "table");
    require_i32(tokens, "embedding_forward", "tokens");
    const int64_t N = tokens.numel(), C = table.cols();
    require_numel(out, N * C, "embedding_forward", "out");
    require_ids_below(tokens, table.rows(), false, "embedding_forward", "tokens");
    cpu::embedding_forward(out.f32(), tokens.ptr<int32_t>(), table.f32(), N, C);
  }

  void embedding_backward(Tensor dtable, const Tensor& dout, const Tensor& tokens) override {
    require_f32(dtable, "embedding_backward", "dtable");
    require_f32(dout, "embedding_backward", "dout");
    require_i32(tokens, "embedding_backward", "tokens");
    const int64_t N = tokens.numel(), C = dtable.cols();
    require_numel(dout, N * C, "embedding_backward", "dout");
    require_ids_below(tokens, dtable.rows(), false, "embedding_backward", "tokens");
    cpu::embedding_backward(dtable.f32(), dout.f32(), tokens.ptr<int32_t>(), N, C);
  }

  void rmsnorm_forward(Tensor out, Tensor rstd, const Tensor& x, const Tensor& weight, float eps) override {
    require_f32(out, "rmsnorm_forward", "out");
    require_f32(rstd, "rmsnorm_forward", "rstd");
    require_f32(x, "rmsnorm_forward", "x");
    require_f32(weight, "rmsnorm_forward", "weight");
    const int64_t N = x.rows(), C = x.cols();
    require_numel(out, N * C, "rmsnorm_forward", "out");
    require_numel(rstd, N, "rmsnorm_forward", "rstd");
    require_numel(weight, C, "rmsnorm_forward", "weight");
    cpu::rmsnorm_forward(out.f32(), rstd.f32(), x.f32(), weight.f32(), N, C, eps);
  }

  void rmsnorm_backward(Tensor dx, Tensor dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                        const Tensor& rstd) override {
    require_f32(dx, "rmsnorm_backward", "dx");
    require_f32(dweight, "rmsnorm_backward", "dweight");
    require_f32(dout, "rmsnorm_backward", "dout");
    require_f32(x, "rmsnorm_backward", "x");
    const int64_t N = x.rows(), C = x.cols();
    require_numel(dx, N * C, "rmsnorm_backward", "dx");
    require_numel(dout, N * C, "rmsnorm_backward", "dout");
    require_numel(dweight, C, "rmsnorm_backward", "dweight");
    require_numel(weight, C, "rmsnorm_backward", "weight");
    require_numel(rstd, N, "rmsnorm_backward", "rstd");
    cpu::rmsnorm_backward(dx.f32(), dweight.f32(), dout.f32(), x.f32(), weight.f32(), rstd.f32(), N, C);
  }

  void linear_forward(Tensor out, const Tensor& x, const Tensor& weight, const Tensor* bias) override {
    require_f32(out, "linear_forward", "out");
    require_f32(x, "linear_forward", "x");
    require_f32(weight, "linear_forward", "weight");
    const int64_t N = x.rows(), I = x.cols(), O = weight.rows();
    if (weight.cols() != I)
      runtime_error("linear_forward: weight ", weight.shape.str(), " does not take inputs of width ", I);
    require_numel(out, N * O, "linear_forward", "out");
    if (bias) {
      require_f32(*bias, "linear_forward", "bias");
      require_numel(*bias, O, "linear_forward", "bias");
    }
    cpu::linear_forward(out.f32(), x.f32(), weight.f32(), bias ? bias->f32() : nullptr, N, I, O);
  }

  void linear_backward(Tensor dx, Tensor dweight, Tensor* dbias, const Tensor& dout, const Tensor& x,
                       const Tensor& weight, bool accumulate_dx) override {
    require_f32(dx, "linear_backward", "dx");
    require_f32(dweight, "linear_backward", "dweight");
    require_f32(dout, "linear_backward", "dout");
    require_f32(x, "linear_backward", "x");
    require_f32(weight, "linear_backward", "weight");
    const int64_t N = x.rows(), I = x.cols(), O = weight.rows();
    if (weight.cols() != I)
      runtime_error("linear_backward: weight ", weight.shape.str(), " does not take inputs of width ", I);
    require_numel(dx, N * I, "linear_backward", "dx");
    require_numel(dout, N * O, "linear_backward", "dout");
    require_numel(dweight, O * I, "linear_backward", "dweight");
    if (dbias) {
      require_f32(*dbias, "linear_backward", "dbias");
      require_numel(*dbias, O, "linear_backward", "dbias");
    }
    cpu::linear_backward(dx.f32(), dweight.f32(), dbias ? dbias->f32() : nullptr, dout.f32(), x.f32(), weight.f32(), N,
                         I, O, accumulate_dx);
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
    require_f32(out, "attention_forward", "out");
    require_f32(aux, "attention_forward", "aux");
    require_numel(out, int64_t(s.batch) * s.seq_len * s.n_head * s.head_dim, "attention_forward", "out");
    if (aux.numel() < int64_t(attention_aux_elems(s)))
      runtime_error("attention_forward: aux has ", aux.numel(), " elements, needs ", attention_aux_elems(s));
    cpu::attention_forward(out.f32(), aux.f32(), qkv.f32(), doc_start ? doc_start->ptr<int32_t>() : nullptr,
                           attention_dims(s));
  }

  void attention_backward(Tensor dqkv, const Tensor& dout, const Tensor& out, const Tensor& aux, const Tensor& qkv,
                          const Tensor* doc_start, const AttentionShape& s) override {
    check_attention_shape(s, qkv, doc_start, "attention_backward");
    require_f32(dqkv, "attention_backward", "dqkv");
    require_f32(dout, "attention_backward", "dout");
    require_f32(aux, "attention_backward", "aux");
    require_numel(dqkv, qkv.numel(), "attention_backward", "dqkv");
    require_numel(dout, int64_t(s.batch) * s.seq_len * s.n_head * s.head_dim, "attention_backward", "dout");
    if (aux.numel() < int64_t(attention_aux_elems(s)))
      runtime_error("attention_backward: aux has ", aux.numel(), " elements, needs ", attention_aux_elems(s));
    cpu::attention_backward(dqkv.f32(), dout.f32(), aux.f32(), qkv.f32(),
                            doc_start ? doc_start->ptr<int32_t>() : nullptr, attention_dims(s));
  }

  void cached_attention_forward(Tensor out, Tensor kv_cache, const Tensor& qkv, int past_len,
                                const AttentionShape& s) override {
    const int64_t capacity = op_checks::require_cached_attention_args(s, out, kv_cache, qkv, past_len, Device::CPU,
                                                                      "cached_attention_forward");
    cpu::cached_attention_forward(out.f32(), kv_cache.f32(), qkv.f32(), past_len, capacity, attention_dims(s));
  }

  void swiglu_forward(Tensor out, const Tensor& gate_up) override {
    require_f32(out, "swiglu_forward", "out");
    require_f32(gate_up, "swiglu_forward", "gate_up");
    const int64_t N = gate_up.rows(), F = gate_up.cols() / 2;
    if (gate_up.cols() % 2 != 0) runtime_error("swiglu_forward: gate_up ", gate_up.shape.str(), " has an odd width");
    require_numel(out, N * F, "swiglu_forward", "out");
    cpu::swiglu_forward(out.f32(), gate_up.f32(), N, F);
  }

  void swiglu_backward(Tensor dgate_up, const Tensor& dout, const Tensor& gate_up) override {
    require_f32(dgate_up, "swiglu_backward", "dgate_up");
    require_f32(dout, "swiglu_backward", "dout");
    require_f32(gate_up, "swiglu_backward", "gate_up");
    const int64_t N = gate_up.rows(), F = gate_up.cols() / 2;
    if (gate_up.cols() % 2 != 0) runtime_error("swiglu_backward: gate_up ", gate_up.shape.str(), " has an odd width");
    require_numel(dgate_up, N * 2 * F, "swiglu_backward", "dgate_up");
    require_numel(dout, N * F, "swiglu_backward", "dout");
    cpu::swiglu_backward(dgate_up.f32(), dout.f32(), gate_up.f32(), N, F);
  }

  void cross_entropy_forward(Tensor losses, const Tensor& logits, const Tensor& targets) override {
    require_f32(losses, "cross_entropy_forward", "losses");
    require_f32(logits, "cross_entropy_forward", "logits");
    require_i32(targets, "cross_entropy_forward", "targets");
    const int64_t N = logits.rows(), V = logits.cols();
    require_numel(losses, N, "cross_entropy_forward", "losses");
    require_numel(targets, N, "cross_entropy_forward", "targets");
    require_ids_below(targets, V, true, "cross_entropy_forward", "targets");
    cpu::cross_entropy_forward(losses.f32(), logits.f32(), targets.ptr<int32_t>(), N, V);
  }

  void cross_entropy_backward(Tensor dlogits, const Tensor& logits, const Tensor& targets, float scale) override {
    require_f32(dlogits, "cross_entropy_backward", "dlogits");
    require_f32(logits, "cross_entropy_backward", "logits");
    require_i32(targets, "cross_entropy_backward", "targets");
    const int64_t N = logits.rows(), V = logits.cols();
    require_numel(dlogits, N * V, "cross_entropy_backward", "dlogits");
    require_numel(targets, N, "cross_entropy_backward", "targets");
    require_ids_below(targets, V, true, "cross_entropy_backward", "targets");
    cpu::cross_entropy_backward(dlogits.f32(), logits.f32(), targets.ptr<int32_t>(), N, V, scale);
  }

  // ---- optimizer ops ----
  void adamw_update(Tensor param, const Tensor& grad, Tensor m, Tensor v, const AdamWArgs& args) override {
    check_adam_tensors(param, grad, m, v, args, "adamw_update");
    cpu::adamw_update(param.f32(), grad.f32(), m.f32(), v.f32(), param.numel(), coefficients(args), args.lr,
                      args.weight_decay, args.update_scale);
  }

  void adam_direction(Tensor direction, const Tensor& grad, Tensor m, Tensor v, const AdamWArgs& args) override {
    check_adam_tensors(direction, grad, m, v, args, "adam_direction");
    cpu::adam_direction(direction.f32(), grad.f32(), m.f32(), v.f32(), direction.numel(), coefficients(args));
  }

 private:
  static cpu::AdamCoefficients coefficients(const AdamWArgs& a) {
    return cpu::adam_coefficients(a.beta1, a.beta2, a.eps, a.step);
  }

  static void check_adam_tensors(const Tensor& out, const Tensor& grad, const Tensor& m, const Tensor& v,
                                 const AdamWArgs& args, const char* op) {
    require_f32(out, op, "param/direction");
    require_f32(grad, op, "grad");
    require_f32(m, op, "m");
    require_f32(v, op, "v");
    require_same_numel(out, grad, op, "param and grad");
    require_same_numel(out, m, op, "param and m");
    require_same_numel(out, v, op, "param and v");
    if (args.step < 1) runtime_error(op, ": step must be >= 1 (1-based, for bias correction), got ", args.step);
  }

  void rope(Tensor qkv, const Tensor& positions, const Tensor& cos_sin, const AttentionShape& s, bool inverse,
            const char* op) {
    require_f32(qkv, op, "qkv");
    require_f32(cos_sin, op, "cos_sin");
    require_i32(positions, op, "positions");
    const int64_t N = positions.numel();
    require_numel(qkv, N * s.qkv_width(), op, "qkv");
    if (s.head_dim % 2 != 0) runtime_error(op, ": head_dim ", s.head_dim, " must be even");
    const int64_t max_positions = cos_sin.numel() / s.head_dim;  // [P, D/2, 2]
    require_numel(cos_sin, max_positions * s.head_dim, op, "cos_sin");
    require_ids_below(positions, max_positions, false, op, "positions");
    cpu::rope_apply(qkv.f32(), positions.ptr<int32_t>(), cos_sin.f32(), N, s.n_head, s.n_kv_head, s.head_dim, inverse);
  }

  mutable std::mutex mutex_;
  std::unordered_map<void*, size_t> allocations_;
  size_t current_bytes_ = 0, peak_bytes_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace gum
