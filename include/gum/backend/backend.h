#pragma once
// The op interface between the model/optimizers and the hardware. The model and
// every optimizer are written once against it; `cpu` (fp32 reference, OpenBLAS,
// LAPACK, OpenMP) and `cuda` (hand-written kernels, cuBLAS(Lt), cuSOLVER) implement it.
//
// Conventions for every op:
// - tensors are contiguous row-major views on this backend's device;
// - a floating tensor may be stored in F32 or BF16 unless the op says F32; arithmetic is fp32
//   whatever the storage, BF16 is read exactly and written rounded to nearest even (a GEMM with
//   BF16 operands accumulates in fp32). The cuda backend widens a GEMM's BF16 operand that meets
//   an F32 one (cuBLAS takes one operand dtype) and keeps attention, SVD and QR in F32; the cpu
//   backend takes any mix;
// - a linear layer's weight is [out_features, in_features] (Hugging Face layout);
// - "N" is the number of token positions (batch * seq_len) and 2-D activations are [N, C];
// - parameter-gradient outputs ACCUMULATE (+=), so micro-batches add up; activation-gradient
//   outputs are overwritten unless the op says otherwise;
// - ops may run asynchronously; functions that return a host value synchronise (the device
//   scalars below keep a training step's measurements off the host until it logs).
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gum/backend/recorded_work.h"
#include "gum/core/error.h"
#include "gum/core/tensor.h"

namespace gum {

struct AttentionShape {
  int batch = 0;      // B
  int seq_len = 0;    // T
  int n_head = 0;     // H query heads
  int n_kv_head = 0;  // KV heads (grouped-query attention: H % KV == 0)
  int head_dim = 0;   // D
  int qkv_width() const { return (n_head + 2 * n_kv_head) * head_dim; }
};

// A factorization an optimizer runs inside the step (a projector refresh): Backend::svd of an
// [rows, cols] matrix, or Backend::qr_orthonormal of one.
struct FactorizationShape {
  enum Kind { Svd, Qr } kind = Svd;
  int64_t rows = 0, cols = 0;
};

// The shapes of a training step whose ops take scratch (Backend::training_workspace_bytes).
struct TrainingShapes {
  int64_t rows = 0;        // tokens of the largest micro-batch
  int64_t channels = 0;    // the RMSNorm width (hidden size)
  int64_t bias_width = 0;  // the widest linear layer with a bias (0: none)
  AttentionShape attention;
  DType activations = DType::F32;  // BF16: attention's operands arrive in bf16 (precision bf16, bf16_pure)
  std::vector<FactorizationShape> factorizations;
};

struct AdamWArgs {
  float lr = 0;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0;  // decoupled: param -= lr * weight_decay * param
  int64_t step = 1;        // 1-based, for bias correction
  float update_scale = 1;  // GaLore's alpha: param -= lr * update_scale * adam_direction
  // When not empty: F64 [3] on the backend's device holding double(lr), adam_bias_correction(beta1,
  // step) and adam_bias_correction(beta2, step), which the kernel reads in place of `lr` and `step`
  // (the same doubles, so the same bits), so that a recorded update replays with each step's values
  // written there before it.
  Tensor step_scalars;
};

// 1 - beta^step, Adam's bias correction (Kingma & Ba 2015, Alg. 1), as every backend computes it.
inline double adam_bias_correction(float beta, int64_t step) { return 1.0 - std::pow(double(beta), double(step)); }

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;

  // ---- memory ----
  virtual void* allocate(size_t bytes) = 0;  // zero-initialised
  virtual void release(void* ptr) = 0;
  virtual void copy_from_host(Tensor dst, const void* host_src) = 0;  // dst.nbytes() bytes
  virtual void copy_to_host(void* host_dst, const Tensor& src) = 0;
  // dst = src on this device, converting between F32 and BF16 when the dtypes differ.
  virtual void copy(Tensor dst, const Tensor& src) = 0;
  virtual void fill(Tensor dst, float value) = 0;  // dst F32, BF16 or F64 (device scalars)
  virtual void synchronize() = 0;
  // The native queue this backend's ops run on (the cudaStream_t of the cuda backend), so that a
  // library can order its own work after ours without waiting on the host (NCCL collectives);
  // null where ops have completed when they return (cpu).
  virtual void* native_stream() { return nullptr; }
  // Calls `work` and records the device work it enqueues instead of running it (the cuda backend:
  // stream capture into a CUDA graph); nothing runs until replay(). Null where a backend cannot
  // record (cpu: its ops complete when they return), and then `work` was not called.
  virtual std::unique_ptr<RecordedWork> record(const std::function<void()>& /*work*/) { return nullptr; }
  virtual size_t peak_memory_bytes() const = 0;
  // Op scratch (cuda: one buffer every op reuses): the bytes the forward and backward ops and the
  // factorizations of a step of these shapes take at most, reserving that much once at start-up
  // (the buffer grows to the largest reservation, never shrinks), so that no step allocates (an
  // allocation waits for the device), and the bytes held now. None on the cpu.
  virtual size_t training_workspace_bytes(const TrainingShapes&) const { return 0; }
  virtual void reserve_workspace(size_t /*bytes*/) {}
  virtual size_t workspace_bytes() const { return 0; }

  // ---- side work: a second queue that overlaps the step (the projector refreshes) ----
  // Ops issued between begin_side_work() and end_side_work() run on the side queue (cuda: a second
  // stream) once everything issued before begin_side_work has completed, with op scratch and a
  // reduction buffer of their own (never the main queue's, which goes on meanwhile), in issue
  // order among themselves; a host read inside side work waits for the side queue only. The main
  // queue does not wait for them until wait_side_work(ticket) with end_side_work's ticket. A
  // reservation inside side work (reserve_workspace) reserves the side scratch. Without a side
  // queue (cpu; cuda with BackendOptions::side_stream off) side work is ordinary work in order.
  virtual bool has_side_queue() const { return false; }
  virtual void begin_side_work() {}
  virtual uint64_t end_side_work() { return 0; }
  virtual void wait_side_work(uint64_t /*ticket*/) {}

  // ---- dense linear algebra ----
  // C[M,N] = alpha * op(A) * op(B) + beta * C with A [M,K] ([K,M] when trans_a) and
  // B [K,N] ([N,K] when trans_b); A, B, C 2-D (leading dims multiplied out).
  virtual void gemm(bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b, float beta,
                    Tensor c) = 0;
  // Thin SVD of A [m,n], k = min(m,n): U [m,k], S [k] descending, Vt [k,n]. Signs are normalised
  // so that the entry of largest magnitude in each column of U is positive (makes backends and
  // the PyTorch reference comparable).
  virtual void svd(Tensor u, Tensor s, Tensor vt, const Tensor& a) = 0;
  // Q [m,k] with orthonormal columns spanning the columns of A [m,k] (m >= k), thin QR;
  // signs normalised so that R has a non-negative diagonal.
  virtual void qr_orthonormal(Tensor q, const Tensor& a) = 0;
  // Standard normal (mean + std * z) from Philox with (seed, stream), element i of the
  // flat tensor takes stream element i: identical bits on every backend.
  virtual void fill_normal(Tensor dst, uint64_t seed, uint64_t stream, float mean, float std) = 0;

  // dst (BF16) = src (F32) rounded stochastically (f32_to_bf16_stochastic in core/dtype.h), element i
  // with the random bits of Philox (seed, stream) element i (philox_bits): identical on every backend.
  virtual void round_stochastic(Tensor dst, const Tensor& src, uint64_t seed, uint64_t stream) = 0;

  // ---- elementwise and reductions ----
  virtual void add(Tensor out, const Tensor& a, const Tensor& b) = 0;   // out = a + b (out may alias)
  virtual void axpby(Tensor y, float a, const Tensor& x, float b) = 0;  // y = a * x + b * y
  virtual void scale(Tensor x, float s) = 0;                            // x *= s
  virtual double sum(const Tensor& x) = 0;                              // synchronises
  virtual double sum_squares(const Tensor& x) = 0;                      // synchronises; NaN propagates

  // ---- device scalars ----
  // What a training step measures (loss sum, gradient sum of squares, the first non-finite value)
  // stays in small F64 tensors on this device and reaches the host only when the trainer reads
  // them (copy_to_host, one synchronisation per logged step); the clip scale is computed and
  // applied on the device. None of these synchronise.
  //
  // acc (F64 [1]) = sum(x), or acc += sum(x) when accumulate; with squares the sum of x^2. Summed
  // in double in the order of sum/sum_squares: without accumulate, acc holds sum(x) bit for bit.
  virtual void sum_into(Tensor acc, const Tensor& x, bool squares, bool accumulate) = 0;
  // Records the first non-finite value in stream order: when value[0] (F64 [1]) is NaN or Inf and
  // flag[0] is 0, flag (F64 [3]) = (tag, what, value[0]); otherwise nothing changes.
  virtual void flag_non_finite(Tensor flag, const Tensor& value, double tag, double what) = 0;
  // The gradient norm's sum with its NaN/Inf watch over many tensors: for each i in order,
  // sum_into(acc, xs[i], true, true), then flag_non_finite(flag, acc, tag, whats[i]). The same bits
  // and the same record as that loop, which is the default; cuda folds it into two launches per
  // group of tensors instead of three per tensor. (Inline: defined out of line, it would make
  // Backend's type information live in gum_backend, which the cuda library, linked after it, needs.)
  virtual void sum_squares_checked(Tensor acc, const std::vector<Tensor>& xs, Tensor flag, double tag,
                                   const std::vector<double>& whats) {
    GUM_CHECK(xs.size() == whats.size(), "sum_squares_checked: ", xs.size(), " tensors, ", whats.size(), " tags");
    for (size_t i = 0; i < xs.size(); ++i) {
      sum_into(acc, xs[i], /*squares=*/true, /*accumulate=*/true);
      flag_non_finite(flag, acc, tag, whats[i]);
    }
  }
  // With norm = sqrt(sum_squares[0]) (F64 [1]): scale (F32 [1]) = float(numerator / (norm + eps))
  // when norm > threshold, else 1 (also for a NaN norm). Global-norm clipping (Pascanu et al. 2013)
  // is (max_norm, 1e-6, max_norm); Muon's normalisation X / (||X|| + 1e-7) is (1, 1e-7, -1).
  virtual void norm_scale(Tensor scale, const Tensor& sum_squares, double numerator, double eps, double threshold) = 0;
  // x *= scale[0], scale F32 [1] on this device: like scale(), the factor read by the kernel.
  virtual void scale_by(Tensor x, const Tensor& scale) = 0;

  // ---- transformer ops ----
  // out[n,:] = table[tokens[n],:]; tokens I32 [N].
  virtual void embedding_forward(Tensor out, const Tensor& tokens, const Tensor& table) = 0;
  // dtable[tokens[n],:] += dout[n,:], deterministic (no float atomics).
  virtual void embedding_backward(Tensor dtable, const Tensor& dout, const Tensor& tokens) = 0;

  // out = x * rstd * weight, rstd[n] = 1/sqrt(mean(x[n,:]^2) + eps); rstd F32 [N] saved for backward.
  virtual void rmsnorm_forward(Tensor out, Tensor rstd, const Tensor& x, const Tensor& weight, float eps) = 0;
  // sum = a + b, then rmsnorm_forward(out, rstd, sum, weight, eps): the residual add fused into
  // the norm that reads it (the same results as add then rmsnorm_forward). sum may alias a or b.
  virtual void add_rmsnorm_forward(Tensor sum, Tensor out, Tensor rstd, const Tensor& a, const Tensor& b,
                                   const Tensor& weight, float eps) = 0;
  // dx += d(out)/dx (accumulates into the residual-stream gradient), dweight += ...
  virtual void rmsnorm_backward(Tensor dx, Tensor dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                                const Tensor& rstd) = 0;

  // out[N,out] = x[N,in] * W^T (+ bias[out]).
  virtual void linear_forward(Tensor out, const Tensor& x, const Tensor& weight, const Tensor* bias) = 0;
  // dweight += dout^T x; dbias += column sums of dout (when given); dx = dout * W, or
  // dx += dout * W when accumulate_dx.
  virtual void linear_backward(Tensor dx, Tensor dweight, Tensor* dbias, const Tensor& dout, const Tensor& x,
                               const Tensor& weight, bool accumulate_dx) = 0;

  // Rotary embedding in place on the q and k heads of qkv [N, (H + 2 KV) * D]
  // (v untouched), Hugging Face rotate_half pairing: element j with j + D/2 in each head.
  // positions I32 [N]; cos_sin F32 [max_positions, D/2, 2] holds (cos, sin) of position * inv_freq[j].
  virtual void rope_forward(Tensor qkv, const Tensor& positions, const Tensor& cos_sin, const AttentionShape& s) = 0;
  // The inverse rotation, in place on the gradient.
  virtual void rope_backward(Tensor dqkv, const Tensor& positions, const Tensor& cos_sin, const AttentionShape& s) = 0;

  // Causal softmax attention with grouped-query heads (query head h reads kv head h / (H/KV)),
  // scale 1/sqrt(D). qkv [N, (H + 2 KV) * D] rows are (q heads, k heads, v heads); out [N, H*D].
  // doc_start (optional, I32 [N]): position t of a sequence attends only to [doc_start[t], t]
  // (packed documents); null means [0, t]. aux holds what backward needs; its size in F32
  // elements is attention_aux_elems (the CPU keeps probabilities, a flash kernel only the log-sum-exp).
  virtual size_t attention_aux_elems(const AttentionShape& s) const = 0;
  virtual void attention_forward(Tensor out, Tensor aux, const Tensor& qkv, const Tensor* doc_start,
                                 const AttentionShape& s) = 0;
  // dqkv (overwritten) from dout [N, H*D].
  virtual void attention_backward(Tensor dqkv, const Tensor& dout, const Tensor& out, const Tensor& aux,
                                  const Tensor& qkv, const Tensor* doc_start, const AttentionShape& s) = 0;

  // Incremental decoding (forward only): s.seq_len = n new rows per sequence, qkv [B*n, (H + 2 KV) * D]
  // after RoPE. kv_cache [B, capacity, 2 * KV * D]: row p of sequence b holds (k heads | v heads) of
  // position p. The new k/v rows are written to cache rows [past_len, past_len + n), then new row i
  // attends causally to cache rows [0, past_len + i] (same GQA mapping and scale as
  // attention_forward); out [B*n, H*D]. Needs past_len + n <= capacity.
  virtual void cached_attention_forward(Tensor out, Tensor kv_cache, const Tensor& qkv, int past_len,
                                        const AttentionShape& s) = 0;

  // gate_up [N, 2F]: gate in columns [0,F), up in [F,2F); out [N,F] = silu(gate) * up.
  virtual void swiglu_forward(Tensor out, const Tensor& gate_up) = 0;
  virtual void swiglu_backward(Tensor dgate_up, const Tensor& dout, const Tensor& gate_up) = 0;  // overwrites

  // losses[n] = -log softmax(logits[n])[targets[n]], 0 where targets[n] < 0 (ignored). targets I32 [N].
  virtual void cross_entropy_forward(Tensor losses, const Tensor& logits, const Tensor& targets) = 0;
  // dlogits = scale * (softmax(logits) - onehot(target)), 0 on ignored rows; dlogits may alias logits.
  virtual void cross_entropy_backward(Tensor dlogits, const Tensor& logits, const Tensor& targets, float scale) = 0;

  // cross_entropy_forward(losses, logits, targets), then cross_entropy_backward(logits, logits,
  // targets, scale): the losses and, in place of the logits, their gradient (the same results).
  virtual void cross_entropy_fused(Tensor losses, Tensor logits, const Tensor& targets, float scale) = 0;

  // ---- optimizer ops ----
  // AdamW on one tensor (m, v F32 like param): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
  // param -= lr * (update_scale * mhat / (sqrt(vhat) + eps) + weight_decay * param).
  virtual void adamw_update(Tensor param, const Tensor& grad, Tensor m, Tensor v, const AdamWArgs& args) = 0;
  // Adam moments only, writing the direction mhat/(sqrt(vhat)+eps) into `direction` (GaLore: the
  // direction lives in the projected space and is projected back by a GEMM).
  virtual void adam_direction(Tensor direction, const Tensor& grad, Tensor m, Tensor v, const AdamWArgs& args) = 0;
};

// Choices among a backend's kernels for one op (the cpu backend has one kernel per op and ignores them).
struct BackendOptions {
  // Causal attention on the cuda backend (training.attention): "gemm" runs cuBLAS batched GEMMs around
  // a masked-softmax kernel and keeps the probabilities [B, H, T, T] in aux; "flash" (fp32, one warp
  // per query row) and "flash_wmma" (tensor cores, bf16 operands, heads up to 128) run flash kernels
  // and keep only each query row's log-sum-exp [B, H, T]. training.attention defaults to flash_wmma;
  // here the default stays the fp32 gemm, which the backend tests compare with the CPU bit-closely.
  std::string attention = "gemm";
  // The cuda backend's F32 GEMMs (matmuls and attention's batched products) on the tensor cores in
  // TF32: operands rounded to 10 mantissa bits, fp32 accumulation (relative error ~1e-3 instead of
  // ~1e-6). Off here so that backend-level comparisons stay fp32; training.allow_tf32 turns it on.
  bool allow_tf32 = false;
  // The cuda backend's side queue (Backend::begin_side_work) on a second stream; off: side work
  // runs on the one stream, in issue order (the tests' single-stream reference).
  bool side_stream = true;
};

// "cpu", "cuda" or "auto" (cuda when a GPU is usable, else cpu). Throws a usage error for
// an unknown name, "cuda" without a usable GPU, or an unknown option value.
std::unique_ptr<Backend> make_backend(const std::string& name, int device_index = 0,
                                      const BackendOptions& options = {});
// True when this build has the CUDA backend and a GPU is usable (any CUDA error = no GPU).
bool cuda_available();
int cuda_device_count();

}  // namespace gum
