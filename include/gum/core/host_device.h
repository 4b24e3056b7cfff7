#pragma once
// Marks a function that CUDA code calls on the device as well as on the host (bf16 rounding,
// Philox), so the two backends share one definition of it.
#if defined(__CUDACC__)
#define GUM_HOST_DEVICE __host__ __device__
#else
#define GUM_HOST_DEVICE
#endif
