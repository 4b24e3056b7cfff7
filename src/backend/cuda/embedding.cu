// Embedding lookup and its backward (scatter-add of rows into dtable).
#include "cuda_backend.h"
#include "device_utils.cuh"

namespace gum::cuda {

namespace {

// ---------------------------------------------------------------------------------------------
// Embedding. Forward: one thread per output element, out[n, c] = table[tokens[n], c].
// A bad id cannot throw on the device: the row becomes NaN and the status word says why.

__global__ void embedding_forward_kernel(FloatPtr out, const int32_t* tokens, FloatPtr table, int64_t N, int64_t C,
                                         int64_t V, int* status) {
  GUM_GRID_STRIDE_LOOP(i, N * C) {
    const int64_t n = i / C, c = i % C;
    const int32_t token = tokens[n];
    if (token < 0 || token >= V) {
      if (c == 0) atomicOr(status, kStatusTokenOutOfRange);
      store(out, i, NAN);
    } else {
      store(out, i, load(table, int64_t(token) * C + c));
    }
  }
}

// Backward without float atomics: block b owns the vocabulary rows [b*R, (b+1)*R). It scans
// all tokens in order, compacts the positions that hit its rows into a shared list (ballot +
// prefix count, which keeps token order), and adds those dout rows into dtable. Thread c
// always handles channel c, so every dtable element is summed by one thread in token order:
// the same order as the CPU reference, hence the same bits.
constexpr int kEmbeddingRowsPerBlock = 64;
constexpr int kEmbeddingListCapacity = 2048;  // >= kThreads, so one chunk always fits after a flush

__device__ void embedding_flush(FloatPtr dtable, FloatPtr dout, const int32_t* list_position, const int32_t* list_token,
                                int count, int64_t C) {
  for (int e = 0; e < count; ++e) {
    const int64_t row = list_token[e], n = list_position[e];
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
      store(dtable, row * C + c, load(dtable, row * C + c) + load(dout, n * C + c));
  }
}

__global__ void embedding_backward_kernel(FloatPtr dtable, FloatPtr dout, const int32_t* tokens, int64_t N, int64_t C,
                                          int64_t V, int* status) {
  __shared__ int32_t list_position[kEmbeddingListCapacity];
  __shared__ int32_t list_token[kEmbeddingListCapacity];
  __shared__ int warp_counts[32];
  const int64_t row_begin = int64_t(blockIdx.x) * kEmbeddingRowsPerBlock;
  const int64_t row_end = min(V, row_begin + kEmbeddingRowsPerBlock);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  int list_size = 0;  // the same value in every thread
  for (int64_t chunk = 0; chunk < N; chunk += blockDim.x) {
    const int64_t n = chunk + threadIdx.x;
    int32_t token = -1;
    bool mine = false;
    if (n < N) {
      token = tokens[n];
      mine = token >= row_begin && token < row_end;
      if (blockIdx.x == 0 && (token < 0 || token >= V)) atomicOr(status, kStatusTokenOutOfRange);
    }
    const unsigned ballot = __ballot_sync(kFullMask, mine);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, total = 0;
    for (int w = 0; w < warps; ++w) {
      if (w < warp) before += warp_counts[w];
      total += warp_counts[w];
    }
    if (list_size + total > kEmbeddingListCapacity) {  // same decision in every thread
      embedding_flush(dtable, dout, list_position, list_token, list_size, C);
      list_size = 0;
      __syncthreads();  // the list is read by every thread before it is overwritten
    }
    if (mine) {
      const int slot = list_size + before + __popc(ballot & ((1u << lane) - 1u));
      list_position[slot] = static_cast<int32_t>(n);
      list_token[slot] = token;
    }
    list_size += total;
    __syncthreads();  // list entries visible; warp_counts free for the next chunk
  }
  embedding_flush(dtable, dout, list_position, list_token, list_size, C);
}

void launch_embedding_forward(FloatPtr out, const int32_t* tokens, FloatPtr table, int64_t N, int64_t C, int64_t V,
                              int* status, cudaStream_t stream) {
  if (N * C <= 0) return;
  embedding_forward_kernel<<<grid_for(N * C), kThreads, 0, stream>>>(out, tokens, table, N, C, V, status);
  GUM_CUDA_CHECK_LAUNCH("embedding_forward_kernel");
}

void launch_embedding_backward(FloatPtr dtable, FloatPtr dout, const int32_t* tokens, int64_t N, int64_t C, int64_t V,
                               int* status, cudaStream_t stream) {
  if (N <= 0 || C <= 0 || V <= 0) return;
  if (N > 0x7fffffff) runtime_error("embedding_backward: ", N, " tokens exceed the kernel's 32-bit positions");
  const unsigned blocks = static_cast<unsigned>((V + kEmbeddingRowsPerBlock - 1) / kEmbeddingRowsPerBlock);
  embedding_backward_kernel<<<blocks, kThreads, 0, stream>>>(dtable, dout, tokens, N, C, V, status);
  GUM_CUDA_CHECK_LAUNCH("embedding_backward_kernel");
}

}  // namespace

void CudaBackend::embedding_forward(Tensor out, const Tensor& tokens, const Tensor& table) {
  const char* op = "embedding_forward";
  const int64_t N = tokens.numel(), C = table.cols();
  require_numel(out, N * C, op, "out");
  launch_embedding_forward(float_ptr(out, op, "out"), i32_ptr(tokens, op, "tokens"), float_ptr(table, op, "table"), N,
                           C, table.rows(), status_, stream_);
}

void CudaBackend::embedding_backward(Tensor dtable, const Tensor& dout, const Tensor& tokens) {
  const char* op = "embedding_backward";
  const int64_t N = tokens.numel(), C = dtable.cols();
  require_numel(dout, N * C, op, "dout");
  launch_embedding_backward(float_ptr(dtable, op, "dtable"), float_ptr(dout, op, "dout"), i32_ptr(tokens, op, "tokens"),
                            N, C, dtable.rows(), status_, stream_);
}

}  // namespace gum::cuda
