#pragma once
// The CUDA emulator's cuda_runtime.h: the host API plus what device code sees (execution-space
// keywords, built-in indices, intrinsics, launches). See gum_cuda_emu/device.h.
#include "cuda_runtime_api.h"
#include "gum_cuda_emu/device.h"
