#include "gum/dist/communicator.h"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <thread>

#include "collective_checks.h"
#include "gum/core/error.h"
#include "gum/core/logging.h"

namespace gum {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return "sum";
    case ReduceOp::Avg:
      return "avg";
    case ReduceOp::Max:
      return "max";
    case ReduceOp::Min:
      return "min";
  }
  return "?";
}

// ---------------------------------------------------------------- launch environment

namespace {

// Value of an integer environment variable, or `fallback` when it is not set.
int int_from_environment(const char* variable, int fallback) {
  const char* text = std::getenv(variable);
  if (text == nullptr) return fallback;
  errno = 0;
  char* end = nullptr;
  long value = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || errno != 0 || value < 0 || value > 1 << 24)
    runtime_error("environment variable ", variable, "='", text, "' is not a valid rank count or index");
  return static_cast<int>(value);
}

}  // namespace

LaunchInfo launch_info_from_environment() {
  LaunchInfo info;
  info.under_mpirun = std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr;
  if (!info.under_mpirun) return info;
  info.world_size = int_from_environment("OMPI_COMM_WORLD_SIZE", 1);
  info.rank = int_from_environment("OMPI_COMM_WORLD_RANK", 0);
  info.local_rank = int_from_environment("OMPI_COMM_WORLD_LOCAL_RANK", 0);
  info.local_size = int_from_environment("OMPI_COMM_WORLD_LOCAL_SIZE", 1);
  if (info.world_size < 1 || info.rank >= info.world_size)
    runtime_error("inconsistent mpirun environment: OMPI_COMM_WORLD_RANK=", info.rank,
                  " with OMPI_COMM_WORLD_SIZE=", info.world_size);
  return info;
}

int device_index_for_local_rank(int local_rank, int device_count) {
  return device_count > 0 ? local_rank % device_count : 0;
}

void Communicator::reduce(Tensor t, ReduceOp op, int root) { wait(reduce_async({t}, {root}, op)); }

std::string Communicator::broadcast_string(const std::string& text, int root) {
  std::vector<uint8_t> bytes(text.begin(), text.end());
  broadcast_bytes(bytes, root);
  return std::string(bytes.begin(), bytes.end());
}

// ---------------------------------------------------------------- shared checks

namespace dist_detail {

bool poll_until(double timeout_s, const std::function<bool()>& done) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  while (!done()) {
    double waited_s = std::chrono::duration<double>(clock::now() - start).count();
    if (timeout_s > 0 && waited_s > timeout_s) return false;
    if (waited_s < 1.0)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

std::string timeout_message(const std::string& what, double timeout_s) {
  return concat(what, " did not complete within ", timeout_s,
                " s: another rank has failed, hangs, or did not call the same collective");
}

std::string timeout_message(const char* collective, int64_t count, DType dtype, double timeout_s) {
  return timeout_message(
      concat(collective, count > 0 ? concat(" of ", count, " ", dtype_name(dtype), " elements") : ""), timeout_s);
}

std::string describe_bucket(const char* collective, const std::vector<Tensor>& bucket) {
  if (bucket.size() == 1)
    return concat(collective, " of ", bucket[0].numel(), " ", dtype_name(bucket[0].dtype), " elements");
  int64_t elements = 0;
  std::string dtypes;
  for (const Tensor& t : bucket) {
    elements += t.numel();
    if (dtypes.find(dtype_name(t.dtype)) == std::string::npos)
      dtypes += concat(dtypes.empty() ? "" : "/", dtype_name(t.dtype));
  }
  return concat(collective, " of a bucket of ", bucket.size(), " tensors (", elements, " elements",
                dtypes.empty() ? "" : ", " + dtypes, ")");
}

std::string rank_prefix(const Communicator& comm) { return concat("rank ", comm.rank(), " of ", comm.world_size()); }

void report_fatal(const Communicator& comm, const std::string& message) {
  if (auto logger = spdlog::default_logger()) logger->flush();
  std::fprintf(stderr, "gum_train: %s: %s (aborting all ranks)\n", rank_prefix(comm).c_str(), message.c_str());
  std::fflush(nullptr);
}

void check_tensor_device(const Communicator& comm, const char* collective, const char* argument, const Tensor& t,
                         Device device) {
  if (t.device != device)
    runtime_error(
        comm.name(), " ", collective, ": ", argument, " ", t.shape.str(), " is on ", device_name(t.device),
        " but this communicator works on ", device_name(device), " buffers",
        device == Device::CPU ? " (OpenMPI here is not CUDA-aware: GPU buffers need the nccl communicator)" : "");
  if (t.numel() > 0 && t.data == nullptr)
    runtime_error(comm.name(), " ", collective, ": ", argument, " ", t.shape.str(), " has no data pointer");
}

void check_reducible(const Communicator& comm, const char* collective, DType dtype, ReduceOp op) {
  bool floating = dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16 || dtype == DType::F64;
  bool arithmetic = floating || dtype == DType::I32 || dtype == DType::I64;
  if (!arithmetic)
    runtime_error(comm.name(), " ", collective, ": cannot reduce ", dtype_name(dtype),
                  " tensors (reductions take F32, BF16, F16, F64, I32 or I64)");
  if (op == ReduceOp::Avg && !floating)
    runtime_error(comm.name(), " ", collective, ": avg of ", dtype_name(dtype),
                  " tensors is not defined (use sum, or a floating dtype)");
}

void check_root(const Communicator& comm, const char* collective, int root) {
  if (root < 0 || root >= comm.world_size())
    runtime_error(comm.name(), " ", collective, ": root ", root, " is not a rank of this job (world size ",
                  comm.world_size(), ")");
}

void check_reduce_bucket(const Communicator& comm, const char* collective, const std::vector<Tensor>& bucket,
                         ReduceOp op) {
  for (size_t i = 0; i < bucket.size(); ++i) {
    const std::string argument = concat("bucket tensor ", i);
    check_tensor_device(comm, collective, argument.c_str(), bucket[i], comm.device());
    check_reducible(comm, collective, bucket[i].dtype, op);
  }
}

void check_bucket_roots(const Communicator& comm, const char* collective, const std::vector<Tensor>& bucket,
                        const std::vector<int>& roots) {
  if (roots.size() != bucket.size())
    runtime_error(comm.name(), " ", collective, ": ", roots.size(), " roots for a bucket of ", bucket.size(),
                  " tensors (one root per tensor)");
  for (int root : roots) check_root(comm, collective, root);
}

namespace {

// Whether `part` lies inside `whole` as chunk `index` (of part's size), or is disjoint from it.
// Any other overlap is an error.
bool is_chunk_or_disjoint(const Communicator& comm, const char* collective, const Tensor& whole, const Tensor& part,
                          int index) {
  auto* whole_begin = static_cast<const uint8_t*>(whole.data);
  auto* part_begin = static_cast<const uint8_t*>(part.data);
  const uint8_t* whole_end = whole_begin + whole.nbytes();
  const uint8_t* part_end = part_begin + part.nbytes();
  if (part_end <= whole_begin || whole_end <= part_begin) return false;
  if (part_begin == whole_begin + static_cast<size_t>(index) * part.nbytes()) return true;
  runtime_error(comm.name(), " ", collective, ": buffers overlap; the per-rank buffer must be chunk ", index,
                " (this rank's) of the full buffer ", whole.shape.str(), " or not overlap it at all");
}

}  // namespace

bool check_reduce_scatter(const Communicator& comm, const Tensor& out, const Tensor& in) {
  check_tensor_device(comm, "reduce_scatter", "out", out, comm.device());
  check_tensor_device(comm, "reduce_scatter", "in", in, comm.device());
  if (out.dtype != in.dtype)
    runtime_error(comm.name(), " reduce_scatter: out is ", dtype_name(out.dtype), " but in is ", dtype_name(in.dtype));
  if (in.numel() != out.numel() * comm.world_size())
    runtime_error(comm.name(), " reduce_scatter: in ", in.shape.str(), " must hold world_size (", comm.world_size(),
                  ") times the elements of out ", out.shape.str());
  return is_chunk_or_disjoint(comm, "reduce_scatter", in, out, comm.rank());
}

bool check_all_gather(const Communicator& comm, const Tensor& out, const Tensor& in) {
  check_tensor_device(comm, "all_gather", "out", out, comm.device());
  check_tensor_device(comm, "all_gather", "in", in, comm.device());
  if (out.dtype != in.dtype)
    runtime_error(comm.name(), " all_gather: out is ", dtype_name(out.dtype), " but in is ", dtype_name(in.dtype));
  if (out.numel() != in.numel() * comm.world_size())
    runtime_error(comm.name(), " all_gather: out ", out.shape.str(), " must hold world_size (", comm.world_size(),
                  ") times the elements of in ", in.shape.str());
  return is_chunk_or_disjoint(comm, "all_gather", out, in, comm.rank());
}

bool needs_f32_staging(DType dtype) { return dtype == DType::BF16 || dtype == DType::F16; }

std::vector<float> widen_to_f32(const Tensor& t) {
  std::vector<float> values(static_cast<size_t>(t.numel()));
  const auto* halves = t.ptr<const uint16_t>();
  for (size_t i = 0; i < values.size(); ++i)
    values[i] = t.dtype == DType::BF16 ? bf16_to_f32(halves[i]) : f16_to_f32(halves[i]);
  return values;
}

void narrow_from_f32(Tensor t, const std::vector<float>& values) {
  GUM_CHECK(static_cast<int64_t>(values.size()) == t.numel());
  auto* halves = t.ptr<uint16_t>();
  for (size_t i = 0; i < values.size(); ++i)
    halves[i] = t.dtype == DType::BF16 ? f32_to_bf16(values[i]) : f32_to_f16(values[i]);
}

void divide_host(void* data, DType dtype, int64_t count, int world_size) {
  if (dtype == DType::F32) {
    auto* values = static_cast<float*>(data);
    for (int64_t i = 0; i < count; ++i) values[i] /= static_cast<float>(world_size);
  } else if (dtype == DType::F64) {
    auto* values = static_cast<double*>(data);
    for (int64_t i = 0; i < count; ++i) values[i] /= world_size;
  } else {
    GUM_CHECK(false, "divide_host on ", dtype_name(dtype));
  }
}

}  // namespace dist_detail

// ---------------------------------------------------------------- single process

namespace {

using namespace dist_detail;

// World size 1: reductions, gathers and broadcasts of one rank are identities; only the
// out-of-place forms copy.
class SingleCommunicator final : public Communicator {
 public:
  explicit SingleCommunicator(Backend& backend) : backend_(backend) {}
  std::string name() const override { return "single"; }
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  int local_rank() const override { return 0; }
  Device device() const override { return backend_.device(); }

  void all_reduce(Tensor t, ReduceOp op) override {
    check_tensor_device(*this, "all_reduce", "tensor", t, device());
    check_reducible(*this, "all_reduce", t.dtype, op);
  }
  void reduce_scatter(Tensor out, const Tensor& in, ReduceOp op) override {
    check_reducible(*this, "reduce_scatter", in.dtype, op);
    if (!check_reduce_scatter(*this, out, in)) copy(out, in);
  }
  void all_gather(Tensor out, const Tensor& in) override {
    if (!check_all_gather(*this, out, in)) copy(out, in);
  }
  void broadcast(Tensor t, int root) override {
    check_tensor_device(*this, "broadcast", "tensor", t, device());
    check_root(*this, "broadcast", root);
  }
  // One rank: the reductions are done when they start.
  CollectiveHandle all_reduce_async(const std::vector<Tensor>& bucket, ReduceOp op) override {
    check_reduce_bucket(*this, "all_reduce", bucket, op);
    return next_handle();
  }
  CollectiveHandle reduce_async(const std::vector<Tensor>& bucket, const std::vector<int>& roots,
                                ReduceOp op) override {
    check_reduce_bucket(*this, "reduce", bucket, op);
    check_bucket_roots(*this, "reduce", bucket, roots);
    return next_handle();
  }
  void wait(CollectiveHandle) override {}
  void barrier() override {}
  double all_reduce_host(double value, ReduceOp) override { return value; }
  void broadcast_bytes(std::vector<uint8_t>&, int root) override { check_root(*this, "broadcast_bytes", root); }

  [[noreturn]] void abort(const std::string& message, int exit_code) override {
    report_fatal(*this, message);
    std::_Exit(exit_code);
  }

 private:
  void copy(Tensor out, const Tensor& in) {
    if (in.numel() == 0) return;
    if (device() == Device::CPU)
      std::memcpy(out.data, in.data, in.nbytes());
    else
      backend_.copy(out, in.reshaped(out.shape));
  }

  Backend& backend_;
};

}  // namespace

std::unique_ptr<Communicator> make_single_communicator(Backend& backend) {
  return std::make_unique<SingleCommunicator>(backend);
}

std::unique_ptr<Communicator> make_communicator(Backend& backend, const CommunicatorOptions& options) {
  LaunchInfo launch = launch_info_from_environment();
  if (!launch.under_mpirun) return make_single_communicator(backend);
#ifdef GUM_HAVE_MPI
  if (backend.device() == Device::CUDA) {
#ifdef GUM_HAVE_NCCL
    return make_nccl_communicator(backend, options);
#else
    usage_error(
        "launched under mpirun with training.backend=cuda but this gum_train was built without NCCL: "
        "install NCCL and reconfigure (CMake reports 'NCCL ON')");
#endif
  }
  return make_mpi_communicator(options);
#else
  usage_error("launched under mpirun (OMPI_COMM_WORLD_SIZE=", launch.world_size,
              ") but this gum_train was built without MPI: install OpenMPI and configure with GUM_MPI=ON");
#endif
}

int run_or_abort(Communicator& comm, const std::function<int()>& body) {
  std::string message;
  int exit_code = 1;
  try {
    return body();
  } catch (const Error& error) {
    message = error.what();
    exit_code = error.exit_code();
  } catch (const std::exception& error) {
    message = error.what();
  } catch (...) {
    message = "unknown exception";
  }
  comm.abort(message, exit_code);
  std::_Exit(exit_code);  // not reached: abort() ends the process (a virtual call hides [[noreturn]])
}

}  // namespace gum
