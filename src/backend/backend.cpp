#include "gum/backend/backend.h"

#include "gum/core/error.h"

namespace gum {

std::unique_ptr<Backend> make_cpu_backend();
#ifdef GUM_HAVE_CUDA
std::unique_ptr<Backend> make_cuda_backend(int device_index, const BackendOptions& options);
int cuda_runtime_device_count(std::string* reason);  // 0 on any CUDA error (no driver, no device)
#endif

int cuda_device_count() {
#ifdef GUM_HAVE_CUDA
  return cuda_runtime_device_count(nullptr);
#else
  return 0;
#endif
}

bool cuda_available() { return cuda_device_count() > 0; }

std::unique_ptr<Backend> make_backend(const std::string& name, int device_index, const BackendOptions& options) {
  if (name == "cpu") return make_cpu_backend();
#ifdef GUM_CUDA_EMULATED
  // The emulator proves the kernels on the CPU; it is far too slow to train on, so `auto` means
  // the CPU backend here and only an explicit `cuda` (the tests) runs the emulated kernels.
  if (name == "auto") return make_cpu_backend();
#endif
  if (name == "cuda" || name == "auto") {
#ifdef GUM_HAVE_CUDA
    if (cuda_available()) return make_cuda_backend(device_index, options);
#endif
    if (name == "auto") return make_cpu_backend();
#ifdef GUM_HAVE_CUDA
    std::string reason = "cudaGetDeviceCount returned 0";
    cuda_runtime_device_count(&reason);
    usage_error("backend 'cuda' was asked for but no usable GPU was found (", reason, ")");
#else
    usage_error("backend 'cuda' was asked for but this build has no CUDA backend (configure with GUM_CUDA=ON)");
#endif
  }
  usage_error("unknown backend '", name, "' (valid: cpu, cuda, auto)");
}

}  // namespace gum
