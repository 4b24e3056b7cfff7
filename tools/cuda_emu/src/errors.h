#pragma once
// Error state shared by the scheduler and the host API (runtime.cpp).
#include <string>

#include "cuda_runtime_api.h"

namespace gum_emu {

// Records `error` for cudaGetLastError and `message` for cudaGetErrorString, and prints the
// message to stderr (an error inside a kernel is otherwise easy to lose).
void raise_error(cudaError_t error, const std::string& message);

}  // namespace gum_emu
