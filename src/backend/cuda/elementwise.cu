// Elementwise ops, reductions, the Adam step and the small helpers of the factorisations.
// Flat tensors walked by grid-stride loops; each element is owned by one thread, so nothing
// here depends on scheduling (reductions combine in a fixed order).
#include <algorithm>

#include "device_utils.cuh"
#include "gum/core/philox.h"

namespace gum::cuda {

namespace {

__global__ void fill_kernel(FloatPtr dst, int64_t n, float value) { GUM_GRID_STRIDE_LOOP(i, n) store(dst, i, value); }

__global__ void convert_kernel(FloatPtr dst, FloatPtr src, int64_t n) {
  GUM_GRID_STRIDE_LOOP(i, n) store(dst, i, load(src, i));
}

// out may alias a or b: each element is read before it is written by the same thread.
__global__ void add_kernel(FloatPtr out, FloatPtr a, FloatPtr b, int64_t n) {
  GUM_GRID_STRIDE_LOOP(i, n) store(out, i, load(a, i) + load(b, i));
}

__global__ void axpby_kernel(FloatPtr y, float a, FloatPtr x, float b, int64_t n) {
  GUM_GRID_STRIDE_LOOP(i, n) store(y, i, a * load(x, i) + b * load(y, i));
}

__global__ void scale_kernel(FloatPtr x, float s, int64_t n) { GUM_GRID_STRIDE_LOOP(i, n) store(x, i, load(x, i) * s); }

// Element i takes Philox stream element i (include/gum/core/philox.h), as on the CPU.
// __fmul_rn/__fadd_rn keep nvcc from fusing mean + std * z into an FMA the CPU does not do.
__global__ void fill_normal_kernel(FloatPtr dst, int64_t n, uint64_t seed, uint64_t philox_stream, float mean,
                                   float std) {
  GUM_GRID_STRIDE_LOOP(i, n) {
    const float z = philox_normal(seed, philox_stream, static_cast<uint64_t>(i));
    store(dst, i, __fadd_rn(mean, __fmul_rn(std, z)));
  }
}

// Pass 1: block b sums a grid-stride share of x in double; pass 2: one block sums the
// partials in index order. The grid size depends only on n, so the result is reproducible.
__global__ void sum_partials_kernel(double* partials, FloatPtr x, int64_t n, bool squares) {
  __shared__ double scratch[32];
  double acc = 0.0;
  GUM_GRID_STRIDE_LOOP(i, n) {
    const double v = load(x, i);
    acc += squares ? v * v : v;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void sum_finish_kernel(double* result, const double* partials, int count) {
  __shared__ double scratch[32];
  double acc = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) result[0] = acc;
}

// Adam moments in double like the CPU reference (kernels.h of the cpu backend): the stored
// moments are float, the arithmetic of one step is double.
__global__ void adam_kernel(FloatPtr out, FloatPtr grad, float* m, float* v, int64_t n, AdamParams p,
                            bool write_direction) {
  GUM_GRID_STRIDE_LOOP(i, n) {
    const double g = load(grad, i);
    const float m_new = static_cast<float>(p.beta1 * m[i] + (1.0 - p.beta1) * g);
    const float v_new = static_cast<float>(p.beta2 * v[i] + (1.0 - p.beta2) * g * g);
    m[i] = m_new;
    v[i] = v_new;
    const double mhat = m_new / p.bias1, vhat = v_new / p.bias2;
    const float direction = static_cast<float>(mhat / (sqrt(vhat) + p.eps));
    if (write_direction) {
      store(out, i, direction);
    } else {
      const double param = load(out, i);
      store(out, i, static_cast<float>(param - p.lr * (p.update_scale * direction + p.weight_decay * param)));
    }
  }
}

__global__ void add_bias_rows_kernel(FloatPtr out, const float* bias, int64_t rows, int64_t cols) {
  GUM_GRID_STRIDE_LOOP(i, rows * cols) store(out, i, load(out, i) + bias[i % cols]);
}

// Column sums by row splits. Block (32, 8): threadIdx.x picks the column (coalesced rows),
// threadIdx.y strides the split's rows; the 8 row-partials are added in y order.
constexpr int kColumnTile = 32, kColumnRowsPerThread = 8, kRowsPerSplitTarget = 128, kMaxSplits = 256;

int64_t column_splits(int64_t rows) {
  int64_t splits = (rows + kRowsPerSplitTarget - 1) / kRowsPerSplitTarget;
  if (splits < 1) splits = 1;
  if (splits > kMaxSplits) splits = kMaxSplits;
  return splits;
}

__global__ void column_partials_kernel(float* partials, FloatPtr a, FloatPtr b, const float* row_scale, int64_t rows,
                                       int64_t cols, int64_t rows_per_split) {
  __shared__ float tile[kColumnRowsPerThread][kColumnTile + 1];
  const int64_t col = int64_t(blockIdx.x) * kColumnTile + threadIdx.x;
  const int64_t row_begin = int64_t(blockIdx.y) * rows_per_split;
  const int64_t row_end = min(rows, row_begin + rows_per_split);
  float acc = 0.0f;
  if (col < cols) {
    for (int64_t r = row_begin + threadIdx.y; r < row_end; r += kColumnRowsPerThread) {
      float value = load(a, r * cols + col);
      if (b.data) value *= load(b, r * cols + col);
      if (row_scale) value *= row_scale[r];
      acc += value;
    }
  }
  tile[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    float total = 0.0f;
    for (int y = 0; y < kColumnRowsPerThread; ++y) total += tile[y][threadIdx.x];
    partials[int64_t(blockIdx.y) * cols + col] = total;
  }
}

__global__ void column_finish_kernel(float* dst, const float* partials, int64_t splits, int64_t cols) {
  GUM_GRID_STRIDE_LOOP(col, cols) {
    float total = 0.0f;
    for (int64_t s = 0; s < splits; ++s) total += partials[s * cols + col];
    dst[col] += total;
  }
}

// 32x32 tiles through shared memory (padded against bank conflicts): reads and writes coalesced.
__global__ void transpose_kernel(float* dst, const float* src, int64_t rows, int64_t cols, const float* row_signs) {
  __shared__ float tile[32][33];
  const int64_t col0 = int64_t(blockIdx.x) * 32, row0 = int64_t(blockIdx.y) * 32;
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    const int64_t r = row0 + k, c = col0 + threadIdx.x;
    if (r < rows && c < cols) tile[k][threadIdx.x] = src[r * cols + c] * (row_signs ? row_signs[r] : 1.0f);
  }
  __syncthreads();
  for (int k = threadIdx.y; k < 32; k += blockDim.y) {
    const int64_t c = col0 + k, r = row0 + threadIdx.x;
    if (c < cols && r < rows) dst[c * rows + r] = tile[threadIdx.x][k];
  }
}

__global__ void diagonal_signs_kernel(float* signs, const float* a, int64_t ld, int64_t k) {
  GUM_GRID_STRIDE_LOOP(j, k) signs[j] = a[j * ld + j] < 0.0f ? -1.0f : 1.0f;
}

// One block per singular vector j: arg max |u[i, j]| (first index on ties, as the CPU), then
// flip u's column and vt's row together when that entry is negative (A = U S Vt unchanged).
__global__ void svd_sign_kernel(float* u, float* vt, int64_t m, int64_t k, int64_t n) {
  __shared__ float best_value[kThreads];
  __shared__ int64_t best_index[kThreads];
  const int64_t j = blockIdx.x;
  float best = -1.0f;
  int64_t arg = 0;
  for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
    const float magnitude = fabsf(u[i * k + j]);
    if (magnitude > best) {
      best = magnitude;
      arg = i;
    }
  }
  best_value[threadIdx.x] = best;
  best_index[threadIdx.x] = arg;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      const float other = best_value[threadIdx.x + stride];
      const int64_t other_index = best_index[threadIdx.x + stride];
      if (other > best_value[threadIdx.x] ||
          (other == best_value[threadIdx.x] && other_index < best_index[threadIdx.x])) {
        best_value[threadIdx.x] = other;
        best_index[threadIdx.x] = other_index;
      }
    }
    __syncthreads();
  }
  // Decide once, then flip: a thread must not read the deciding entry after another flipped it.
  __shared__ bool flip;
  if (threadIdx.x == 0) flip = u[best_index[0] * k + j] < 0.0f;
  __syncthreads();
  if (!flip) return;  // uniform across the block
  for (int64_t i = threadIdx.x; i < m; i += blockDim.x) u[i * k + j] = -u[i * k + j];
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) vt[j * n + i] = -vt[j * n + i];
}

}  // namespace

void launch_fill(FloatPtr dst, int64_t n, float value, cudaStream_t stream) {
  if (n <= 0) return;
  fill_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, n, value);
  GUM_CUDA_CHECK_LAUNCH("fill_kernel");
}

void launch_convert(FloatPtr dst, FloatPtr src, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  convert_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, src, n);
  GUM_CUDA_CHECK_LAUNCH("convert_kernel");
}

void launch_add(FloatPtr out, FloatPtr a, FloatPtr b, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  add_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, a, b, n);
  GUM_CUDA_CHECK_LAUNCH("add_kernel");
}

void launch_axpby(FloatPtr y, float a, FloatPtr x, float b, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  axpby_kernel<<<grid_for(n), kThreads, 0, stream>>>(y, a, x, b, n);
  GUM_CUDA_CHECK_LAUNCH("axpby_kernel");
}

void launch_scale(FloatPtr x, float s, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  scale_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, s, n);
  GUM_CUDA_CHECK_LAUNCH("scale_kernel");
}

void launch_fill_normal(FloatPtr dst, int64_t n, uint64_t seed, uint64_t philox_stream, float mean, float std,
                        cudaStream_t stream) {
  if (n <= 0) return;
  fill_normal_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, n, seed, philox_stream, mean, std);
  GUM_CUDA_CHECK_LAUNCH("fill_normal_kernel");
}

void launch_sum(double* result, double* partials, FloatPtr x, int64_t n, bool squares, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(grid_for(n), kReducePartials));
  sum_partials_kernel<<<blocks, kThreads, 0, stream>>>(partials, x, n, squares);
  GUM_CUDA_CHECK_LAUNCH("sum_partials_kernel");
  sum_finish_kernel<<<1, kThreads, 0, stream>>>(result, partials, static_cast<int>(blocks));
  GUM_CUDA_CHECK_LAUNCH("sum_finish_kernel");
}

void launch_adam(FloatPtr out, FloatPtr grad, float* m, float* v, int64_t n, const AdamParams& p, bool write_direction,
                 cudaStream_t stream) {
  if (n <= 0) return;
  adam_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, grad, m, v, n, p, write_direction);
  GUM_CUDA_CHECK_LAUNCH("adam_kernel");
}

void launch_add_bias_rows(FloatPtr out, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows * cols <= 0) return;
  add_bias_rows_kernel<<<grid_for(rows * cols), kThreads, 0, stream>>>(out, bias, rows, cols);
  GUM_CUDA_CHECK_LAUNCH("add_bias_rows_kernel");
}

int64_t column_reduce_partials_size(int64_t rows, int64_t cols) { return column_splits(rows) * cols; }

void launch_column_reduce(float* dst, FloatPtr a, FloatPtr b, const float* row_scale, int64_t rows, int64_t cols,
                          float* partials, cudaStream_t stream) {
  if (cols <= 0) return;
  const int64_t splits = column_splits(rows);
  const int64_t rows_per_split = std::max<int64_t>(1, (rows + splits - 1) / splits);
  const dim3 grid(static_cast<unsigned>((cols + kColumnTile - 1) / kColumnTile), static_cast<unsigned>(splits));
  const dim3 block(kColumnTile, kColumnRowsPerThread);
  column_partials_kernel<<<grid, block, 0, stream>>>(partials, a, b, row_scale, rows, cols, rows_per_split);
  GUM_CUDA_CHECK_LAUNCH("column_partials_kernel");
  column_finish_kernel<<<grid_for(cols), kThreads, 0, stream>>>(dst, partials, splits, cols);
  GUM_CUDA_CHECK_LAUNCH("column_finish_kernel");
}

void launch_transpose(float* dst, const float* src, int64_t rows, int64_t cols, const float* row_signs,
                      cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  if ((rows + 31) / 32 > 65535) runtime_error("transpose: ", rows, " rows exceed the kernel's grid limit");
  const dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>((rows + 31) / 32));
  transpose_kernel<<<grid, dim3(32, 8), 0, stream>>>(dst, src, rows, cols, row_signs);
  GUM_CUDA_CHECK_LAUNCH("transpose_kernel");
}

void launch_diagonal_signs(float* signs, const float* a, int64_t ld, int64_t k, cudaStream_t stream) {
  if (k <= 0) return;
  diagonal_signs_kernel<<<grid_for(k), kThreads, 0, stream>>>(signs, a, ld, k);
  GUM_CUDA_CHECK_LAUNCH("diagonal_signs_kernel");
}

void launch_svd_sign_normalise(float* u, float* vt, int64_t m, int64_t k, int64_t n, cudaStream_t stream) {
  if (k <= 0) return;
  svd_sign_kernel<<<static_cast<unsigned>(k), kThreads, 0, stream>>>(u, vt, m, k, n);
  GUM_CUDA_CHECK_LAUNCH("svd_sign_kernel");
}

}  // namespace gum::cuda
