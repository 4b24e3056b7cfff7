// The Adam step (Kingma & Ba 2015, Alg. 1) with AdamW's decoupled decay (Loshchilov & Hutter
// 2019): the in-place parameter update and the direction that muon/galore/gum consume.
#include <cmath>

#include "cuda_backend.h"
#include "device_utils.cuh"

namespace gum::cuda {

namespace {

struct AdamParams {
  double beta1, beta2, eps;
  double bias1, bias2;  // 1 - beta^step
  double lr, weight_decay, update_scale;
  const double* step_scalars;  // null, or lr, bias1, bias2 on the device (AdamWArgs::step_scalars)
};

// Adam moments in double like the CPU reference (kernels.h of the cpu backend): the new moments
// are rounded to float, the direction uses those floats, and the stored moments (F32 or BF16) are
// rounded from them; the arithmetic of one step is double.
__global__ void adam_kernel(FloatPtr out, FloatPtr grad, FloatPtr m, FloatPtr v, int64_t n, AdamParams p,
                            bool write_direction) {
  GUM_GRID_STRIDE_LOOP(i, n) {
    const double g = load(grad, i);
    const float m_new = static_cast<float>(p.beta1 * load(m, i) + (1.0 - p.beta1) * g);
    const float v_new = static_cast<float>(p.beta2 * load(v, i) + (1.0 - p.beta2) * g * g);
    store(m, i, m_new);
    store(v, i, v_new);
    const double lr = p.step_scalars ? p.step_scalars[0] : p.lr;
    const double bias1 = p.step_scalars ? p.step_scalars[1] : p.bias1;
    const double bias2 = p.step_scalars ? p.step_scalars[2] : p.bias2;
    const double mhat = m_new / bias1, vhat = v_new / bias2;
    const float direction = static_cast<float>(mhat / (sqrt(vhat) + p.eps));
    if (write_direction) {
      store(out, i, direction);
    } else {
      const double param = load(out, i);
      store(out, i, static_cast<float>(param - lr * (p.update_scale * direction + p.weight_decay * param)));
    }
  }
}

// write_direction: out = mhat / (sqrt(vhat) + eps); else out (the parameter) is updated in place.
void launch_adam(FloatPtr out, FloatPtr grad, FloatPtr m, FloatPtr v, int64_t n, const AdamParams& p,
                 bool write_direction, cudaStream_t stream) {
  if (n <= 0) return;
  adam_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, grad, m, v, n, p, write_direction);
  GUM_CUDA_CHECK_LAUNCH("adam_kernel");
}

}  // namespace

void CudaBackend::adam(Tensor out, const Tensor& grad, Tensor m, Tensor v, const AdamWArgs& args, bool write_direction,
                       const char* op) {
  const int64_t n = out.numel();
  require_numel(grad, n, op, "grad");
  require_numel(m, n, op, "m");
  require_numel(v, n, op, "v");
  if (args.step < 1) runtime_error(op, ": step must be >= 1 (1-based, for bias correction), got ", args.step);
  AdamParams p{};
  p.beta1 = args.beta1;
  p.beta2 = args.beta2;
  p.eps = args.eps;
  p.bias1 = adam_bias_correction(args.beta1, args.step);
  p.bias2 = adam_bias_correction(args.beta2, args.step);
  p.lr = args.lr;
  if (!args.step_scalars.empty()) {
    require_device(args.step_scalars, op, "step_scalars");
    if (args.step_scalars.dtype != DType::F64 || args.step_scalars.numel() != 3)
      runtime_error(op, ": step_scalars must be F64 [3] (lr, bias corrections)");
    p.step_scalars = static_cast<const double*>(args.step_scalars.data);
  }
  p.weight_decay = args.weight_decay;
  p.update_scale = args.update_scale;
  launch_adam(float_ptr(out, op, write_direction ? "direction" : "param"), float_ptr(grad, op, "grad"),
              float_ptr(m, op, "m"), float_ptr(v, op, "v"), n, p, write_direction, stream_);
}

void CudaBackend::adamw_update(Tensor param, const Tensor& grad, Tensor m, Tensor v, const AdamWArgs& args) {
  adam(param, grad, m, v, args, false, "adamw_update");
}

void CudaBackend::adam_direction(Tensor direction, const Tensor& grad, Tensor m, Tensor v, const AdamWArgs& args) {
  adam(direction, grad, m, v, args, true, "adam_direction");
}

}  // namespace gum::cuda
