#pragma once
// One row of the op table (op_table.cpp): named tensors with generated contents, the op(s) on a
// Backend, the same op(s) in double precision, what to compare and how closely. test_ops.cpp runs
// every row in three columns, the scheme of ggml's test-backend-ops:
//   double: the CPU backend (float) against the row's double reference (the templated CPU kernels
//           of src/backend/cpu/kernels.h instantiated in double, or a textbook formula);
//   finite differences: the double backward against central differences of the double forward;
//   cuda: the CUDA backend against the CPU backend on identical inputs.
// Errors are normalised, ||actual - expected|| / ||expected|| (tests/common/relative_error.h).
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "gum/backend/backend.h"

namespace gum::op_test {

// A tensor's values on the host in double whatever its dtype (I32 ids are exact in double).
struct Values {
  DType dtype = DType::F32;  // I32 for ids, F32 for every float tensor (F32 or BF16 on the device)
  Shape shape;
  std::vector<double> data;
};

// The named tensors of one row on the host, where the double reference computes.
class HostTensors {
 public:
  std::map<std::string, Values> tensors;

  double* operator()(const std::string& name);  // F32 data
  const std::vector<double>& at(const std::string& name) const;
  const int32_t* ids(const std::string& name);  // I32 data as int32_t (kept in step with the values)
  // A new zero F32 tensor (a buffer the reference needs that the row's specs do not list).
  double* make(const std::string& name, Shape shape);
  bool has(const std::string& name) const { return tensors.count(name) != 0; }

 private:
  std::map<std::string, std::vector<int32_t>> ids_;
};

// How a tensor's initial values are made; F32 values are rounded to float (to bf16 for a BF16
// spec) before any column sees them, so every side starts equal.
using Generator = std::function<std::vector<double>(int64_t numel)>;
Generator normal(uint64_t seed, double scale = 1.0);  // never exactly 0 (no all-zero input)
Generator constant(double value);
Generator given(std::vector<double> values);
Generator given_ids(std::vector<int32_t> ids);
// cos_sin [max_positions, D/2, 2] of position * theta^(-2j/D), as the model builds it.
Generator rope_table(int64_t max_positions, int64_t head_dim, double theta);

struct TensorSpec {
  std::string name;
  Shape shape;
  Generator values;          // null: left as allocate() returns it (zeroed)
  DType dtype = DType::F32;  // BF16: stored in BF16 on every backend (its initial values rounded to bf16)
};

// The tensors of one row on one backend, allocated and filled from the specs.
class DeviceTensors {
 public:
  DeviceTensors(Backend& backend, const std::vector<TensorSpec>& specs, const HostTensors& initial);
  ~DeviceTensors();
  DeviceTensors(const DeviceTensors&) = delete;
  DeviceTensors& operator=(const DeviceTensors&) = delete;

  Tensor& operator[](const std::string& name);
  // A zero tensor the row's run needs beyond the specs (attention's backend-sized aux).
  Tensor& make(const std::string& name, Shape shape, DType dtype = DType::F32);
  // A value an op returns to the host (sum), compared like a tensor.
  void result(const std::string& name, std::vector<double> values);
  HostTensors download();  // synchronises

 private:
  Backend& backend_;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::vector<double>> results_;
};

struct Compare {
  std::string tensor;
  double vs_double;  // tolerance of the double column; kNotCompared to skip
  double vs_cuda;    // tolerance of the cuda column; kNotCompared to skip
  // Compared with the CPU in the cuda column only for this CUDA attention kernel: a backend-defined
  // layout (attention's aux: "gemm" keeps the CPU's probabilities, the flash kernels a log-sum-exp)
  // or a tolerance of the kernel's own ("flash_wmma" computes with bf16 operands).
  std::string cuda_attention_only = {};
};
constexpr double kNotCompared = -1.0;

struct Gradient {
  std::string input, gradient;
  bool accumulates;  // the op adds into `gradient` (else it overwrites whatever was there)
};

using Run = std::function<void(Backend&, DeviceTensors&)>;
using Reference = std::function<void(HostTensors&)>;

struct OpCase {
  std::string name;
  std::vector<std::string> covers;  // the Backend methods this row runs and checks
  std::vector<TensorSpec> tensors;
  Run run;             // the op(s) on a backend
  Reference forward;   // the same in double; null: the row has only properties
  Reference backward;  // run == forward then backward
  std::vector<Compare> compare;
  // Finite differences (rows with gradients): L = sum over (output, probe) of <output, probe>,
  // so backward with dout = probe must give dL/dinput.
  std::vector<std::pair<std::string, std::string>> loss;
  std::vector<Gradient> gradients;
  double gradient_tolerance = 0;  // 0: no finite differences (too large: a forward per input element)
  // Properties of any backend's results (initial values, results), checked on every backend.
  std::function<void(const HostTensors&, const HostTensors&)> check;
  // Calls with invalid arguments: each must throw gum::Error on every backend (at the call or at
  // the next synchronize).
  std::vector<std::pair<std::string, Run>> rejects;
  // CUDA attention kernels ("gemm", "flash", "flash_wmma") the cuda column runs this row with.
  std::vector<const char*> cuda_attention = {"gemm"};
};

std::vector<OpCase> op_table();
HostTensors initial_values(const OpCase& row);

}  // namespace gum::op_test
