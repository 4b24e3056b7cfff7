#pragma once
// The column sums of reduce.cu, shared by rmsnorm.cu (dweight) and linear.cu (dbias), and the
// size of the sum reduction's buffer that CudaBackend allocates once.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "op_args.h"

namespace gum::cuda {

// Partials of CudaBackend::sum/sum_squares: reduce_buffer_ holds kReducePartials doubles + 1 result.
constexpr int kReducePartials = 1024;

// dst[c] += sum_r a[r,c] * (b ? b[r,c] : 1) * (row_scale ? row_scale[r] : 1), deterministic:
// row splits reduce into `partials` (column_reduce_partials_size floats), then a fixed-order pass.
int64_t column_reduce_partials_size(int64_t rows, int64_t cols);
void launch_column_reduce(float* dst, FloatPtr a, FloatPtr b, const float* row_scale, int64_t rows, int64_t cols,
                          float* partials, cudaStream_t stream);

}  // namespace gum::cuda
