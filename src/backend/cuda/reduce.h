#pragma once
// The column sums of reduce.cu (linear.cu's dbias, rmsnorm.cu's dweight partials), and the size
// of the sum reduction's buffer that CudaBackend allocates once.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "op_args.h"

namespace gum::cuda {

// Partials of CudaBackend::sum/sum_squares: reduce_buffer_ holds kReducePartials doubles + 1 result.
constexpr int kReducePartials = 1024;
// sum_squares_checked's partials in the op workspace: one launch sums tensors whose partials fit.
constexpr int kCheckedPartials = 4 * kReducePartials;

// dst[c] += sum_r a[r,c], deterministic: row splits reduce into `partials`
// (column_reduce_partials_size floats), then a fixed-order pass.
int64_t column_reduce_partials_size(int64_t rows, int64_t cols);
void launch_column_reduce(float* dst, FloatPtr a, int64_t rows, int64_t cols, float* partials, cudaStream_t stream);
// dst[c] += sum_s partials[s * cols + c], s in order (the second pass of launch_column_reduce).
void launch_column_finish(float* dst, const float* partials, int64_t splits, int64_t cols, cudaStream_t stream);

}  // namespace gum::cuda
