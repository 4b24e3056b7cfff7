#pragma once
// CudaBackend: the Backend of include/gum/backend/backend.h on one NVIDIA GPU. Hand-written
// kernels for the elementwise and transformer ops (one file per op family, the kernels beside
// the methods that launch them), cuBLAS for GEMMs (also the
// batched GEMMs of attention), cuSOLVER for SVD and QR. Every op is enqueued on one stream
// (created with default flags, so it also orders with the legacy default stream that other
// libraries use), except side work (Backend::begin_side_work), which runs on a second stream
// created non-blocking: the legacy stream's implicit synchronisation must not serialise it with
// the main stream, so every ordering it has is an explicit event. Only functions that return
// host values synchronise.
//
// Floating tensors may be F32 or BF16 wherever the op reads or writes them elementwise
// (arithmetic in fp32); gemm/linear take BF16 operands through cublasGemmEx with fp32
// accumulation. SVD and QR are F32 only; attention computes on fp32 copies of BF16 operands.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <mutex>
#include <unordered_map>
#include <vector>

#include "gum/backend/backend.h"
#include "op_args.h"

namespace gum::cuda {

// The kernels of attention_forward/backward (attention.cu), from BackendOptions::attention.
enum class AttentionKernel { Gemm, Flash, FlashWmma };

class CudaBackend final : public Backend {
 public:
  // allow_tf32: F32 GEMMs on the tensor cores in TF32 (BackendOptions::allow_tf32).
  // side_stream: side work on a second stream (BackendOptions::side_stream).
  CudaBackend(int device_index, AttentionKernel attention, bool allow_tf32 = false, bool side_stream = true);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  Device device() const override { return Device::CUDA; }
  std::string name() const override { return "cuda"; }
  int device_index() const { return device_index_; }
  // The stream ops run on now (the main one outside side work; for NCCL or other libraries that
  // must order with us).
  cudaStream_t stream() const { return stream_; }

  // ---- memory ----
  void* allocate(size_t bytes) override;
  void release(void* ptr) override;
  void copy_from_host(Tensor dst, const void* host_src) override;
  void copy_to_host(void* host_dst, const Tensor& src) override;
  void copy(Tensor dst, const Tensor& src) override;
  void fill(Tensor dst, float value) override;
  void synchronize() override;
  void* native_stream() override { return stream_; }
  std::unique_ptr<RecordedWork> record(const std::function<void()>& work) override;
  size_t peak_memory_bytes() const override;
  size_t training_workspace_bytes(const TrainingShapes& shapes) const override;
  void reserve_workspace(size_t bytes) override { workspace(bytes); }
  size_t workspace_bytes() const override { return workspace_bytes_ + side_.workspace_bytes; }
  bool has_side_queue() const override { return side_stream_ != nullptr; }
  void begin_side_work() override;
  uint64_t end_side_work() override;
  void wait_side_work(uint64_t ticket) override;

  // ---- dense linear algebra (gemm.cpp, linalg.cu) ----
  void gemm(bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor c) override;
  void svd(Tensor u, Tensor s, Tensor vt, const Tensor& a) override;
  void qr_orthonormal(Tensor q, const Tensor& a) override;
  void fill_normal(Tensor dst, uint64_t seed, uint64_t stream, float mean, float std) override;
  void round_stochastic(Tensor dst, const Tensor& src, uint64_t seed, uint64_t stream) override;

  // ---- elementwise and reductions ----
  void add(Tensor out, const Tensor& a, const Tensor& b) override;
  void axpby(Tensor y, float a, const Tensor& x, float b) override;
  void scale(Tensor x, float s) override;
  double sum(const Tensor& x) override;
  double sum_squares(const Tensor& x) override;
  void sum_into(Tensor acc, const Tensor& x, bool squares, bool accumulate) override;
  void flag_non_finite(Tensor flag, const Tensor& value, double tag, double what) override;
  void sum_squares_checked(Tensor acc, const std::vector<Tensor>& xs, Tensor flag, double tag,
                           const std::vector<double>& whats) override;
  void norm_scale(Tensor scale, const Tensor& sum_squares, double numerator, double eps, double threshold) override;
  void scale_by(Tensor x, const Tensor& scale) override;

  // ---- transformer ops ----
  void embedding_forward(Tensor out, const Tensor& tokens, const Tensor& table) override;
  void embedding_backward(Tensor dtable, const Tensor& dout, const Tensor& tokens) override;
  void rmsnorm_forward(Tensor out, Tensor rstd, const Tensor& x, const Tensor& weight, float eps) override;
  void add_rmsnorm_forward(Tensor sum, Tensor out, Tensor rstd, const Tensor& a, const Tensor& b, const Tensor& weight,
                           float eps) override;
  void rmsnorm_backward(Tensor dx, Tensor dweight, const Tensor& dout, const Tensor& x, const Tensor& weight,
                        const Tensor& rstd) override;
  void linear_forward(Tensor out, const Tensor& x, const Tensor& weight, const Tensor* bias) override;
  void linear_backward(Tensor dx, Tensor dweight, Tensor* dbias, const Tensor& dout, const Tensor& x,
                       const Tensor& weight, bool accumulate_dx) override;
  void rope_forward(Tensor qkv, const Tensor& positions, const Tensor& cos_sin, const AttentionShape& s) override;
  void rope_backward(Tensor dqkv, const Tensor& positions, const Tensor& cos_sin, const AttentionShape& s) override;
  size_t attention_aux_elems(const AttentionShape& s) const override;
  void attention_forward(Tensor out, Tensor aux, const Tensor& qkv, const Tensor* doc_start,
                         const AttentionShape& s) override;
  void attention_backward(Tensor dqkv, const Tensor& dout, const Tensor& out, const Tensor& aux, const Tensor& qkv,
                          const Tensor* doc_start, const AttentionShape& s) override;
  void cached_attention_forward(Tensor out, Tensor kv_cache, const Tensor& qkv, int past_len,
                                const AttentionShape& s) override;
  void swiglu_forward(Tensor out, const Tensor& gate_up) override;
  void swiglu_backward(Tensor dgate_up, const Tensor& dout, const Tensor& gate_up) override;
  void cross_entropy_forward(Tensor losses, const Tensor& logits, const Tensor& targets) override;
  void cross_entropy_backward(Tensor dlogits, const Tensor& logits, const Tensor& targets, float scale) override;
  void cross_entropy_fused(Tensor losses, Tensor logits, const Tensor& targets, float scale) override;

  // ---- optimizer ops ----
  void adamw_update(Tensor param, const Tensor& grad, Tensor m, Tensor v, const AdamWArgs& args) override;
  void adam_direction(Tensor direction, const Tensor& grad, Tensor m, Tensor v, const AdamWArgs& args) override;

 private:
  // cudaMalloc that counts towards peak_memory_bytes; throws naming `what` on failure.
  void* device_malloc(size_t bytes, const char* what);
  void device_free(void* ptr);
  // One scratch buffer reused by every op (stream order makes reuse safe); grows on demand, which
  // reserve_workspace makes unnecessary in training. Each op's need, as that op lays it out:
  void* workspace(size_t bytes);
  static size_t rmsnorm_backward_workspace(int64_t rows, int64_t channels);
  // The larger of forward and backward; with bf16 operands the fp32 copies the kernels run on too.
  size_t attention_workspace(const AttentionShape& s, bool bf16_operands) const;
  // The pieces of svd's and qr_orthonormal's scratch for an [m, n] matrix (cuSOLVER's buffers
  // queried for that shape): the one place that lays them out, for the op and for reservations.
  struct SvdWorkspace;
  struct QrWorkspace;
  SvdWorkspace svd_workspace(int64_t m, int64_t n) const;
  QrWorkspace qr_workspace(int64_t m, int64_t k) const;
  // Copies the status word and `bytes` from device `src` to the host, then waits: one round trip.
  void wait_for_device(void* host_dst, const void* src, size_t bytes);
  // Reads the status word wait_for_device copied and throws if a kernel flagged bad ids.
  void check_device_status();
  // rmsnorm_forward, or with sum and delta add_rmsnorm_forward (sum = x + delta).
  void rmsnorm(Tensor out, Tensor rstd, Tensor* sum, const Tensor& x, const Tensor* delta, const Tensor& weight,
               float eps, const char* op);
  void rope(Tensor qkv, const Tensor& positions, const Tensor& cos_sin, const AttentionShape& s, bool inverse,
            const char* op);
  double reduce(const Tensor& x, bool squares, const char* op);
  // attention_forward/backward on F32 operands, the kernels' scratch at `scratch` (the op workspace,
  // after the fp32 copies of bf16 operands when there are any).
  void attention_forward_f32(Tensor out, Tensor aux, const Tensor& qkv, const Tensor* doc_start,
                             const AttentionShape& s, void* scratch);
  void attention_backward_f32(Tensor dqkv, const Tensor& dout, const Tensor& out, const Tensor& aux, const Tensor& qkv,
                              const Tensor* doc_start, const AttentionShape& s, void* scratch);
  void adam(Tensor out, const Tensor& grad, Tensor m, Tensor v, const AdamWArgs& args, bool write_direction,
            const char* op);

  // Row-major C[M,N] = alpha op(A) op(B) + beta C with explicit leading dimensions (row strides).
  void gemm_rowmajor(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const void* a,
                     DType a_type, int64_t lda, const void* b, DType b_type, int64_t ldb, float beta, void* c,
                     DType c_type, int64_t ldc, const char* op);
  // The same over `count` F32 matrices whose addresses are in device pointer arrays.
  void gemm_batched_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* const* a,
                        int64_t lda, const float* const* b, int64_t ldb, float beta, const float* const* c, int64_t ldc,
                        int64_t count, const char* op);

  int device_index_ = 0;
  // Gemm: batched cuBLAS GEMMs with the probabilities [B, H, T, T] in aux; Flash (scalar fp32)
  // and FlashWmma (tensor cores, bf16 operands): flash kernels, aux = log-sum-exp [B, H, T].
  AttentionKernel attention_ = AttentionKernel::Gemm;
  // The compute type of F32 GEMMs: CUBLAS_COMPUTE_32F_FAST_TF32 under allow_tf32, else plain fp32
  // (the handle keeps CUBLAS_DEFAULT_MATH, which never turns CUBLAS_COMPUTE_32F into TF32).
  cublasComputeType_t f32_compute_ = CUBLAS_COMPUTE_32F;
  cudaStream_t stream_ = nullptr;  // where ops go now: main_stream_, or side_stream_ in side work
  cudaStream_t main_stream_ = nullptr;
  cudaStream_t side_stream_ = nullptr;  // null: no side queue
  bool in_side_work_ = false;
  // The scratch and library handles of the queue not in use now: begin/end_side_work swap them
  // with workspace_, reduce_buffer_, cublas_ and cusolver_, so every op takes the current queue's.
  struct Scratch {
    void* workspace = nullptr;
    size_t workspace_bytes = 0;
    double* reduce_buffer = nullptr;
    cublasHandle_t cublas = nullptr;
    cusolverDnHandle_t cusolver = nullptr;
  } side_;
  void create_library_handles(cudaStream_t stream, cublasHandle_t& cublas, cusolverDnHandle_t& cusolver);
  void swap_scratch();
  // Events marking side work's end (end_side_work's tickets index them), reused once waited for.
  std::vector<cudaEvent_t> events_;
  std::vector<uint64_t> free_events_;
  uint64_t take_event();
  cublasHandle_t cublas_ = nullptr;
  cusolverDnHandle_t cusolver_ = nullptr;
  int* status_ = nullptr;            // device status word (op_args.h StatusBits)
  int* status_host_ = nullptr;       // its page-locked host copy
  double* reduce_buffer_ = nullptr;  // kReducePartials (reduce.h) partials + 1 result
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  // Counts the reallocations of the op workspaces: a recording (record()) made before the latest
  // one addresses freed memory.
  uint64_t buffer_moves_ = 0;

  mutable std::mutex mutex_;  // guards the allocation table
  std::unordered_map<void*, size_t> allocations_;
  size_t current_bytes_ = 0, peak_bytes_ = 0;
};

// Carves one workspace allocation into aligned pieces: add() every piece, then take the
// pointers from the base returned by CudaBackend::workspace(total()).
class WorkspaceLayout {
 public:
  size_t add(size_t bytes) {
    const size_t offset = (total_ + kAlign - 1) / kAlign * kAlign;
    total_ = offset + bytes;
    return offset;
  }
  size_t total() const { return total_; }
  template <typename T>
  static T* at(void* base, size_t offset) {
    return reinterpret_cast<T*>(static_cast<unsigned char*>(base) + offset);
  }

 private:
  static constexpr size_t kAlign = 256;
  size_t total_ = 0;
};

// svd of an [m, n] matrix: its column-major copy, for a tall one gesvd's U and VT (a wide one's
// land in the outputs), gesvd's buffer and its info word.
struct CudaBackend::SvdWorkspace {
  WorkspaceLayout layout;
  size_t matrix_at = 0, left_at = 0, right_at = 0, work_at = 0, info_at = 0;
  int lwork = 0;
};

// qr_orthonormal of an [m, k] matrix: its column-major copy, tau, the signs of R's diagonal, the
// info word and one buffer for geqrf and orgqr.
struct CudaBackend::QrWorkspace {
  WorkspaceLayout layout;
  size_t matrix_at = 0, tau_at = 0, signs_at = 0, info_at = 0, work_at = 0;
  int lwork = 0;
};

}  // namespace gum::cuda
