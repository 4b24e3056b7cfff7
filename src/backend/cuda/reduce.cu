// Reductions: sum and sum of squares (in double, a deterministic two-pass reduction) to the host
// or into a device scalar, the step's other device-scalar ops, and the column sums (reduce.h)
// behind linear's dbias and the final pass over rmsnorm's dweight partials.
#include <algorithm>
#include <cfloat>
#include <cmath>

#include "../op_checks.h"
#include "cuda_backend.h"
#include "device_utils.cuh"
#include "reduce.h"

namespace gum::cuda {

namespace {

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

__global__ void sum_finish_kernel(double* result, const double* partials, int count, bool accumulate) {
  __shared__ double scratch[32];
  double acc = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) result[0] = accumulate ? result[0] + acc : acc;
}

// sum_squares_checked over up to kCheckedTensors tensors per launch: tensor t takes blocks
// [first_block[t], first_block[t + 1]), as many as launch_sum gives it alone, so that its partials
// and their sum are bit for bit those of sum_into.
constexpr int kCheckedTensors = 32;
struct CheckedTensors {
  FloatPtr x[kCheckedTensors];
  int64_t n[kCheckedTensors];
  double what[kCheckedTensors];
  int first_block[kCheckedTensors + 1];
  int count;
};

unsigned sum_blocks(int64_t n) { return static_cast<unsigned>(std::min<int64_t>(grid_for(n), kReducePartials)); }

__global__ void sum_squares_partials_kernel(double* partials, CheckedTensors list) {
  __shared__ double scratch[32];
  int t = 0;
  while (int(blockIdx.x) >= list.first_block[t + 1]) ++t;
  const int64_t block = int64_t(blockIdx.x) - list.first_block[t];
  const int64_t blocks = list.first_block[t + 1] - list.first_block[t];
  double acc = 0.0;
  for (int64_t i = block * blockDim.x + threadIdx.x; i < list.n[t]; i += blocks * blockDim.x) {
    const double v = load(list.x[t], i);
    acc += v * v;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Tensor by tensor in order: sum_finish_kernel's sum of its partials added to result, then
// flag_non_finite_kernel's test of the running sum.
__global__ void sum_squares_finish_kernel(double* result, double* flag, const double* partials, CheckedTensors list,
                                          double tag) {
  __shared__ double scratch[32];
  for (int t = 0; t < list.count; ++t) {
    double acc = 0.0;
    for (int i = list.first_block[t] + threadIdx.x; i < list.first_block[t + 1]; i += blockDim.x) acc += partials[i];
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) {
      result[0] = result[0] + acc;
      if (flag[0] == 0.0 && !(fabs(result[0]) <= DBL_MAX)) {
        flag[0] = tag;
        flag[1] = list.what[t];
        flag[2] = result[0];
      }
    }
  }
}

// One thread: the device-scalar ops of the training step (backend.h), each a few flops that
// would otherwise cost a host round trip.
__global__ void flag_non_finite_kernel(double* flag, const double* value, double tag, double what) {
  // NaN fails every comparison, Inf exceeds DBL_MAX: both are "not finite" here, in every compiler.
  if (flag[0] == 0.0 && !(fabs(value[0]) <= DBL_MAX)) {
    flag[0] = tag;
    flag[1] = what;
    flag[2] = value[0];
  }
}

__global__ void norm_scale_kernel(float* scale, const double* sum_squares, double numerator, double eps,
                                  double threshold) {
  const double norm = sqrt(sum_squares[0]);
  scale[0] = norm > threshold ? static_cast<float>(numerator / (norm + eps)) : 1.0f;
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

__global__ void column_partials_kernel(float* partials, FloatPtr a, int64_t rows, int64_t cols,
                                       int64_t rows_per_split) {
  __shared__ float tile[kColumnRowsPerThread][kColumnTile + 1];
  const int64_t col = int64_t(blockIdx.x) * kColumnTile + threadIdx.x;
  const int64_t row_begin = int64_t(blockIdx.y) * rows_per_split;
  const int64_t row_end = min(rows, row_begin + rows_per_split);
  float acc = 0.0f;
  if (col < cols) {
    for (int64_t r = row_begin + threadIdx.y; r < row_end; r += kColumnRowsPerThread) acc += load(a, r * cols + col);
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

void launch_sum(double* result, double* partials, FloatPtr x, int64_t n, bool squares, bool accumulate,
                cudaStream_t stream) {
  const unsigned blocks = sum_blocks(n);
  sum_partials_kernel<<<blocks, kThreads, 0, stream>>>(partials, x, n, squares);
  GUM_CUDA_CHECK_LAUNCH("sum_partials_kernel");
  sum_finish_kernel<<<1, kThreads, 0, stream>>>(result, partials, static_cast<int>(blocks), accumulate);
  GUM_CUDA_CHECK_LAUNCH("sum_finish_kernel");
}

double* f64_scalars(const Tensor& t, int64_t count, const char* op, const char* what) {
  op_checks::require_dtype(t, DType::F64, Device::CUDA, op, what);
  require_numel(t, count, op, what);
  return t.ptr<double>();
}

}  // namespace

int64_t column_reduce_partials_size(int64_t rows, int64_t cols) { return column_splits(rows) * cols; }

void launch_column_reduce(float* dst, FloatPtr a, int64_t rows, int64_t cols, float* partials, cudaStream_t stream) {
  if (cols <= 0) return;
  const int64_t splits = column_splits(rows);
  const int64_t rows_per_split = std::max<int64_t>(1, (rows + splits - 1) / splits);
  const dim3 grid(static_cast<unsigned>((cols + kColumnTile - 1) / kColumnTile), static_cast<unsigned>(splits));
  const dim3 block(kColumnTile, kColumnRowsPerThread);
  column_partials_kernel<<<grid, block, 0, stream>>>(partials, a, rows, cols, rows_per_split);
  GUM_CUDA_CHECK_LAUNCH("column_partials_kernel");
  launch_column_finish(dst, partials, splits, cols, stream);
}

void launch_column_finish(float* dst, const float* partials, int64_t splits, int64_t cols, cudaStream_t stream) {
  if (cols <= 0) return;
  column_finish_kernel<<<grid_for(cols), kThreads, 0, stream>>>(dst, partials, splits, cols);
  GUM_CUDA_CHECK_LAUNCH("column_finish_kernel");
}

double CudaBackend::reduce(const Tensor& x, bool squares, const char* op) {
  const Tensor result(reduce_buffer_ + kReducePartials, DType::F64, Device::CUDA, Shape{1});
  launch_sum(result.ptr<double>(), reduce_buffer_, float_ptr(x, op, "x"), x.numel(), squares, false, stream_);
  double value = 0.0;
  copy_to_host(&value, result);
  return value;
}

double CudaBackend::sum(const Tensor& x) { return reduce(x, false, "sum"); }
double CudaBackend::sum_squares(const Tensor& x) { return reduce(x, true, "sum_squares"); }

// The partials buffer is shared with sum/sum_squares: stream order makes the reuse safe.
void CudaBackend::sum_into(Tensor acc, const Tensor& x, bool squares, bool accumulate) {
  launch_sum(f64_scalars(acc, 1, "sum_into", "acc"), reduce_buffer_, float_ptr(x, "sum_into", "x"), x.numel(), squares,
             accumulate, stream_);
}

void CudaBackend::flag_non_finite(Tensor flag, const Tensor& value, double tag, double what) {
  flag_non_finite_kernel<<<1, 1, 0, stream_>>>(f64_scalars(flag, 3, "flag_non_finite", "flag"),
                                               f64_scalars(value, 1, "flag_non_finite", "value"), tag, what);
  GUM_CUDA_CHECK_LAUNCH("flag_non_finite_kernel");
}

// Groups of consecutive tensors, each as many as kCheckedTensors and kCheckedPartials allow:
// two launches per group, whose partials live in the op workspace (reserved for training).
void CudaBackend::sum_squares_checked(Tensor acc, const std::vector<Tensor>& xs, Tensor flag, double tag,
                                      const std::vector<double>& whats) {
  const char* op = "sum_squares_checked";
  GUM_CHECK(xs.size() == whats.size(), op, ": ", xs.size(), " tensors, ", whats.size(), " tags");
  double* result = f64_scalars(acc, 1, op, "acc");
  double* flag_ptr = f64_scalars(flag, 3, op, "flag");
  double* partials = static_cast<double*>(workspace(size_t(kCheckedPartials) * sizeof(double)));
  CheckedTensors list{};
  const auto flush = [&] {
    if (list.count == 0) return;
    sum_squares_partials_kernel<<<static_cast<unsigned>(list.first_block[list.count]), kThreads, 0, stream_>>>(partials,
                                                                                                               list);
    GUM_CUDA_CHECK_LAUNCH("sum_squares_partials_kernel");
    sum_squares_finish_kernel<<<1, kThreads, 0, stream_>>>(result, flag_ptr, partials, list, tag);
    GUM_CUDA_CHECK_LAUNCH("sum_squares_finish_kernel");
    list = CheckedTensors{};
  };
  for (size_t i = 0; i < xs.size(); ++i) {
    const int blocks = static_cast<int>(sum_blocks(xs[i].numel()));
    if (list.count == kCheckedTensors || list.first_block[list.count] + blocks > kCheckedPartials) flush();
    list.x[list.count] = float_ptr(xs[i], op, "x");
    list.n[list.count] = xs[i].numel();
    list.what[list.count] = whats[i];
    list.first_block[list.count + 1] = list.first_block[list.count] + blocks;
    ++list.count;
  }
  flush();
}

void CudaBackend::norm_scale(Tensor scale, const Tensor& sum_squares, double numerator, double eps, double threshold) {
  require_f32(scale, "norm_scale", "scale");
  require_numel(scale, 1, "norm_scale", "scale");
  norm_scale_kernel<<<1, 1, 0, stream_>>>(scale.ptr<float>(), f64_scalars(sum_squares, 1, "norm_scale", "sum_squares"),
                                          numerator, eps, threshold);
  GUM_CUDA_CHECK_LAUNCH("norm_scale_kernel");
}

}  // namespace gum::cuda
