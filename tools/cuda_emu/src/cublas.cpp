// cuBLAS over OpenBLAS for the CUDA emulation (include/cublas_v2.h). cuBLAS and cblas share the
// column-major convention, so a GEMM maps onto cblas_sgemm argument for argument; BF16 matrices
// are widened into float copies first (and a BF16 C rounded back to nearest even afterwards),
// which is what CUBLAS_COMPUTE_32F does with BF16 operands on a GPU.
#include <cblas.h>
#include <cublas_v2.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gum/core/dtype.h"
#include "gum_cuda_emu/control.h"
#include "streams.h"

// A handle's math mode (CUBLAS_TF32_TENSOR_OP_MATH makes CUBLAS_COMPUTE_32F F32 GEMMs TF32, as on
// a GPU) and its stream, on which each call is one work item (src/streams.h).
struct cublasContext {
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  cudaStream_t stream = nullptr;
};

namespace {

// One GEMM's shape and types, checked once for a whole batch.
struct GemmCall {
  cublasOperation_t transa, transb;
  int m, n, k;
  float alpha, beta;
  cudaDataType_t operand_type, c_type;
  int lda, ldb, ldc;
  bool tf32;  // F32 operands rounded to TF32 (10 mantissa bits) before the fp32 product
};

// TF32 computation of F32 GEMMs: CUBLAS_COMPUTE_32F_FAST_TF32, or CUBLAS_COMPUTE_32F under
// CUBLAS_TF32_TENSOR_OP_MATH (the _PEDANTIC compute types never use it).
bool uses_tf32(cublasHandle_t handle, cudaDataType_t operand_type, cublasComputeType_t compute) {
  if (operand_type != CUDA_R_32F) return false;
  const int base = handle->math & ~CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
  return compute == CUBLAS_COMPUTE_32F_FAST_TF32 ||
         (compute == CUBLAS_COMPUTE_32F && base == CUBLAS_TF32_TENSOR_OP_MATH);
}

// A float rounded to TF32 as the tensor cores' operand conversion does (cvt.rna.tf32.f32: the 13
// low mantissa bits dropped, to nearest with ties away from zero); infinities and NaN pass.
float round_to_tf32(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7f800000u) == 0x7f800000u) return x;
  bits = (bits + 0x1000u) & 0xffffe000u;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

bool is_operation(cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

// Rows of op(X) as X is stored: X is rows x cols when not transposed, cols x rows otherwise.
int stored_rows(cublasOperation_t op, int rows, int cols) { return op == CUBLAS_OP_N ? rows : cols; }

bool is_known_compute_type(cublasComputeType_t t) {
  switch (t) {
    case CUBLAS_COMPUTE_16F:
    case CUBLAS_COMPUTE_16F_PEDANTIC:
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
    case CUBLAS_COMPUTE_64F:
    case CUBLAS_COMPUTE_64F_PEDANTIC:
    case CUBLAS_COMPUTE_32I:
    case CUBLAS_COMPUTE_32I_PEDANTIC:
    case CUBLAS_COMPUTE_32F_FAST_16F:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_TF32:
      return true;
  }
  return false;
}

// The combinations the emulator computes exactly as a GPU does (see cublas_v2.h).
bool is_emulated(cudaDataType_t a, cudaDataType_t b, cudaDataType_t c, cublasComputeType_t compute,
                 cublasGemmAlgo_t algo) {
  if (algo != CUBLAS_GEMM_DEFAULT && algo != CUBLAS_GEMM_DEFAULT_TENSOR_OP) return false;
  if (a != b) return false;
  if (compute == CUBLAS_COMPUTE_32F_FAST_TF32) return a == CUDA_R_32F && c == CUDA_R_32F;
  if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_PEDANTIC) return false;
  if (a == CUDA_R_32F) return c == CUDA_R_32F;
  return a == CUDA_R_16BF && (c == CUDA_R_32F || c == CUDA_R_16BF);
}

// cuBLAS's documented checks for GemmEx and GemmBatchedEx, in the order it reports them.
cublasStatus_t check_gemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                          int k, const void* alpha, cudaDataType_t Atype, int lda, cudaDataType_t Btype, int ldb,
                          const void* beta, cudaDataType_t Ctype, int ldc, int batch_count, cublasComputeType_t compute,
                          cublasGemmAlgo_t algo) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!is_operation(transa) || !is_operation(transb) || m < 0 || n < 0 || k < 0 || batch_count < 0)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (lda < std::max(1, stored_rows(transa, m, k)) || ldb < std::max(1, stored_rows(transb, k, n)) ||
      ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (alpha == nullptr || beta == nullptr || !is_known_compute_type(compute)) return CUBLAS_STATUS_INVALID_VALUE;
  if (!is_emulated(Atype, Btype, Ctype, compute, algo)) return CUBLAS_STATUS_NOT_SUPPORTED;
  return CUBLAS_STATUS_SUCCESS;
}

// A matrix as cblas reads it: the caller's floats, or a dense float copy of a BF16 matrix.
struct FloatMatrix {
  float* data;
  int ld;
  std::vector<float> widened;
};

FloatMatrix dense_zeros(int rows, int cols) {
  FloatMatrix m{nullptr, std::max(1, rows), std::vector<float>(size_t(rows) * cols)};
  m.data = m.widened.data();
  return m;
}

// tf32: an F32 operand's dense copy rounded to TF32 (never for C, which stays fp32).
FloatMatrix as_float(const void* p, cudaDataType_t type, int rows, int cols, int ld, bool tf32 = false) {
  if (type == CUDA_R_32F && !tf32) return {static_cast<float*>(const_cast<void*>(p)), ld, {}};
  FloatMatrix m = dense_zeros(rows, cols);
  for (int j = 0; j < cols; ++j)
    for (int i = 0; i < rows; ++i) {
      const size_t at = i + size_t(j) * ld;
      m.widened[i + size_t(j) * rows] = type == CUDA_R_32F ? round_to_tf32(static_cast<const float*>(p)[at])
                                                           : gum::bf16_to_f32(static_cast<const uint16_t*>(p)[at]);
    }
  m.data = m.widened.data();
  return m;
}

// The work counters' entry for `count` GEMMs of this shape: 2 m n k FLOPs each, and the bytes of
// A and B read, C read (beta != 0) and written.
void count_gemms(const char* call, const GemmCall& g, int count) {
  const double operand = g.operand_type == CUDA_R_32F ? 4 : 2, out = g.c_type == CUDA_R_32F ? 4 : 2;
  const double m = g.m, n = g.n, k = g.k;
  const double bytes = (m * k + k * n) * operand + m * n * out * (g.beta != 0.0f ? 2 : 1);
  const std::string name =
      std::string(call) + (g.operand_type == CUDA_R_32F ? " F32" : " BF16") + (g.tf32 ? " tf32" : "");
  gum_emu::count_library_call(name.c_str(), 2 * m * n * k * count, bytes * count);
}

void gemm(const GemmCall& g, const void* A, const void* B, void* C) {
  if (g.m == 0 || g.n == 0) return;
  const int a_rows = stored_rows(g.transa, g.m, g.k), a_cols = stored_rows(g.transa, g.k, g.m);
  const int b_rows = stored_rows(g.transb, g.k, g.n), b_cols = stored_rows(g.transb, g.n, g.k);
  FloatMatrix a = as_float(A, g.operand_type, a_rows, a_cols, g.lda, g.tf32);
  FloatMatrix b = as_float(B, g.operand_type, b_rows, b_cols, g.ldb, g.tf32);
  // With beta == 0 cuBLAS does not read C (it may hold NaN); a BF16 C is widened only when read.
  FloatMatrix c =
      g.c_type == CUDA_R_32F || g.beta != 0.0f ? as_float(C, g.c_type, g.m, g.n, g.ldc) : dense_zeros(g.m, g.n);
  auto op = [](cublasOperation_t t) { return t == CUBLAS_OP_N ? CblasNoTrans : CblasTrans; };
  cblas_sgemm(CblasColMajor, op(g.transa), op(g.transb), g.m, g.n, g.k, g.alpha, a.data, a.ld, b.data, b.ld, g.beta,
              c.data, c.ld);
  if (g.c_type == CUDA_R_16BF) {
    auto* bits = static_cast<uint16_t*>(C);
    for (int j = 0; j < g.n; ++j)
      for (int i = 0; i < g.m; ++i) bits[i + size_t(j) * g.ldc] = gum::f32_to_bf16(c.data[i + size_t(j) * g.m]);
  }
}

// The GEMMs as a work item of the handle's stream: alpha and beta (host scalars) and the
// operands' addresses are bound at the call, the matrices read when it runs. A call the stream
// refuses (an invalidated capture) fails as a launch would.
template <typename Gemms>
cublasStatus_t enqueue(cublasHandle_t handle, const char* call, Gemms gemms) {
  return gum_emu::submit(handle->stream, gum_emu::Work{call, std::move(gemms)}) == cudaSuccess
             ? CUBLAS_STATUS_SUCCESS
             : CUBLAS_STATUS_EXECUTION_FAILED;
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  const int base = mode & ~CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
  if (base != CUBLAS_DEFAULT_MATH && base != CUBLAS_TENSOR_OP_MATH && base != CUBLAS_PEDANTIC_MATH &&
      base != CUBLAS_TF32_TENSOR_OP_MATH)
    return CUBLAS_STATUS_INVALID_VALUE;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "there is an error with the license";
  }
  return "unknown error";
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType_t Atype, int lda, const void* B,
                            cudaDataType_t Btype, int ldb, const void* beta, void* C, cudaDataType_t Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
  const cublasStatus_t status = check_gemm(handle, transa, transb, m, n, k, alpha, Atype, lda, Btype, ldb, beta, Ctype,
                                           ldc, 1, computeType, algo);
  if (status != CUBLAS_STATUS_SUCCESS) return status;
  const GemmCall call{
      transa, transb, m,   n,   k,   *static_cast<const float*>(alpha),    *static_cast<const float*>(beta),
      Atype,  Ctype,  lda, ldb, ldc, uses_tf32(handle, Atype, computeType)};
  return enqueue(handle, "cublasGemmEx", [call, A, B, C] {
    count_gemms("cublasGemmEx", call, 1);
    gemm(call, A, B, C);
  });
}

cublasStatus_t cublasGemmBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                                   int n, int k, const void* alpha, const void* const Aarray[], cudaDataType_t Atype,
                                   int lda, const void* const Barray[], cudaDataType_t Btype, int ldb, const void* beta,
                                   void* const Carray[], cudaDataType_t Ctype, int ldc, int batchCount,
                                   cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
  const cublasStatus_t status = check_gemm(handle, transa, transb, m, n, k, alpha, Atype, lda, Btype, ldb, beta, Ctype,
                                           ldc, batchCount, computeType, algo);
  if (status != CUBLAS_STATUS_SUCCESS) return status;
  const GemmCall call{
      transa, transb, m,   n,   k,   *static_cast<const float*>(alpha),    *static_cast<const float*>(beta),
      Atype,  Ctype,  lda, ldb, ldc, uses_tf32(handle, Atype, computeType)};
  return enqueue(handle, "cublasGemmBatchedEx", [call, Aarray, Barray, Carray, batchCount] {
    count_gemms("cublasGemmBatchedEx", call, batchCount);
    for (int i = 0; i < batchCount; ++i) gemm(call, Aarray[i], Barray[i], Carray[i]);
  });
}

}  // extern "C"
