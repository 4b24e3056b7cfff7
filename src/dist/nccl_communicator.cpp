// The nccl communicator: GPU buffers through NCCL, host values and the bootstrap (the
// ncclUniqueId) through an MPI communicator. The NCCL communicator is created non-blocking,
// so every call returns at once and we poll ncclCommGetAsyncError and the stream ourselves
// until done or until the deadline: a failed or missing peer ends the job instead of leaving
// this rank inside a kernel that waits forever.
#if defined(GUM_HAVE_MPI) && defined(GUM_HAVE_CUDA)
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>
#include <memory>

#include "collective_checks.h"
#include "gum/core/error.h"
#include "gum/core/logging.h"
#include "mpi_communicator.h"

namespace gum::dist_detail {

namespace {

ncclRedOp_t nccl_op_for(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return ncclSum;
    case ReduceOp::Avg:
      return ncclAvg;
    case ReduceOp::Max:
      return ncclMax;
    case ReduceOp::Min:
      return ncclMin;
  }
  return ncclSum;
}

// NCCL type for arithmetic; data movement uses bytes (ncclUint8) whatever the dtype.
ncclDataType_t nccl_arithmetic_type(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return ncclFloat32;
    case DType::BF16:
      return ncclBfloat16;
    case DType::F16:
      return ncclFloat16;
    case DType::F64:
      return ncclFloat64;
    case DType::I32:
      return ncclInt32;
    case DType::I64:
      return ncclInt64;
    default:
      break;
  }
  runtime_error("no NCCL arithmetic type for ", dtype_name(dtype));
}

void check_cuda(cudaError_t code, const char* call, const std::string& where) {
  if (code != cudaSuccess) runtime_error(where, ": ", call, " failed: ", cudaGetErrorString(code));
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Backend& backend, const CommunicatorOptions& options)
      : backend_(backend), host_(options), timeout_s_(options.timeout_s) {
    // MPI is up from here: a failure on one rank must end the job, not leave the other ranks
    // waiting for it in the bootstrap broadcast or in ncclCommInitRank.
    try {
      initialize();
    } catch (const Error& error) {
      abort(error.what(), error.exit_code());
    }
  }

  ~NcclCommunicator() override {
    if (comm_ != nullptr) {
      // Finalize flushes outstanding work; a broken or stuck communicator is aborted instead.
      bool clean = !broken_;
      if (clean) {
        ncclResult_t result = ncclCommFinalize(comm_);
        clean = (result == ncclSuccess || result == ncclInProgress) && poll_state(timeout_s_) == ncclSuccess;
      }
      if (clean)
        ncclCommDestroy(comm_);
      else
        ncclCommAbort(comm_);
    }
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "nccl"; }
  int rank() const override { return host_.rank(); }
  int world_size() const override { return host_.world_size(); }
  int local_rank() const override { return host_.local_rank(); }
  Device device() const override { return Device::CUDA; }

  void all_reduce(Tensor t, ReduceOp op) override {
    check_tensor_device(*this, "all_reduce", "tensor", t, Device::CUDA);
    check_reducible(*this, "all_reduce", t.dtype, op);
    if (t.numel() == 0) return;
    run("all_reduce", t, [&] {
      return ncclAllReduce(t.data, t.data, static_cast<size_t>(t.numel()), nccl_arithmetic_type(t.dtype),
                           nccl_op_for(op), comm_, stream_);
    });
  }

  void reduce_scatter(Tensor out, const Tensor& in, ReduceOp op) override {
    check_reducible(*this, "reduce_scatter", in.dtype, op);
    check_reduce_scatter(*this, out, in);  // NCCL's in-place form is exactly "out is chunk rank of in"
    if (out.numel() == 0) return;
    run("reduce_scatter", in, [&] {
      return ncclReduceScatter(in.data, out.data, static_cast<size_t>(out.numel()), nccl_arithmetic_type(in.dtype),
                               nccl_op_for(op), comm_, stream_);
    });
  }

  void all_gather(Tensor out, const Tensor& in) override {
    check_all_gather(*this, out, in);
    if (in.numel() == 0) return;
    run("all_gather", out, [&] { return ncclAllGather(in.data, out.data, in.nbytes(), ncclUint8, comm_, stream_); });
  }

  void broadcast(Tensor t, int root) override {
    check_tensor_device(*this, "broadcast", "tensor", t, Device::CUDA);
    check_root(*this, "broadcast", root);
    if (t.numel() == 0) return;
    run("broadcast", t, [&] { return ncclBroadcast(t.data, t.data, t.nbytes(), ncclUint8, root, comm_, stream_); });
  }

  void barrier() override { host_.barrier(); }
  double all_reduce_host(double value, ReduceOp op) override { return host_.all_reduce_host(value, op); }
  void broadcast_bytes(std::vector<uint8_t>& bytes, int root) override { host_.broadcast_bytes(bytes, root); }

  [[noreturn]] void abort(const std::string& message, int exit_code) override {
    if (comm_ != nullptr) ncclCommAbort(comm_);  // frees this rank's kernels stuck waiting for peers
    comm_ = nullptr;
    host_.abort(message, exit_code);
  }

 private:
  void initialize() {
    const std::string where = concat("nccl communicator, ", rank_prefix(host_));
    int device_count = 0;
    check_cuda(cudaGetDeviceCount(&device_count), "cudaGetDeviceCount", where);
    if (device_count == 0) runtime_error(where, ": no GPU is visible to this rank");
    device_ = device_index_for_local_rank(host_.local_rank(), device_count);
    check_cuda(cudaSetDevice(device_), "cudaSetDevice", where);
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags", where);

    ncclUniqueId id{};
    if (host_.rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    std::vector<uint8_t> id_bytes(reinterpret_cast<uint8_t*>(&id), reinterpret_cast<uint8_t*>(&id) + sizeof(id));
    host_.broadcast_bytes(id_bytes, 0);
    std::memcpy(&id, id_bytes.data(), sizeof(id));

    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    check_nccl(ncclCommInitRankConfig(&comm_, host_.world_size(), id, host_.rank(), &config), "ncclCommInitRankConfig");
    wait_until_issued("ncclCommInitRankConfig");
    spdlog::debug("nccl communicator: rank {} of {} on GPU {} (local rank {})", host_.rank(), host_.world_size(),
                  device_, host_.local_rank());
  }

  void check_nccl(ncclResult_t code, const char* call) {
    if (code == ncclSuccess || code == ncclInProgress) return;
    broken_ = true;
    const char* detail = comm_ != nullptr ? ncclGetLastError(comm_) : "";
    runtime_error("nccl communicator, ", rank_prefix(*this), ": ", call, " failed: ", ncclGetErrorString(code),
                  detail != nullptr && *detail ? concat(" (", detail, ")") : "");
  }

  // The communicator's state once it leaves ncclInProgress, or ncclInProgress after timeout_s.
  ncclResult_t poll_state(double timeout_s) {
    ncclResult_t state = ncclInProgress;
    poll_until(timeout_s, [&] {
      ncclCommGetAsyncError(comm_, &state);
      return state != ncclInProgress;
    });
    return state;
  }

  // A non-blocking communicator may still be issuing a call when it returns: wait for that.
  void wait_until_issued(const char* what) {
    ncclResult_t state = poll_state(timeout_s_);
    if (state == ncclInProgress) abort(timeout_message(what, 0, DType::U8, timeout_s_), 1);
    check_nccl(state, what);
  }

  // Runs one collective on our stream and waits for it with the deadline. The backend's queued
  // work is finished first: the inputs are results of kernels on the backend's stream.
  template <typename Enqueue>
  void run(const char* collective, const Tensor& described, Enqueue enqueue) {
    backend_.synchronize();
    check_cuda(cudaSetDevice(device_), "cudaSetDevice", rank_prefix(*this));
    check_nccl(enqueue(), collective);
    wait_until_issued(collective);
    bool finished = poll_until(timeout_s_, [&] {
      cudaError_t status = cudaStreamQuery(stream_);
      if (status == cudaSuccess) return true;
      if (status != cudaErrorNotReady) {
        broken_ = true;
        check_cuda(status, "cudaStreamQuery", concat("nccl ", collective, ", ", rank_prefix(*this)));
      }
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_, &state);
      if (state != ncclSuccess && state != ncclInProgress) check_nccl(state, collective);
      return false;
    });
    if (!finished) abort(timeout_message(collective, described.numel(), described.dtype, timeout_s_), 1);
  }

  Backend& backend_;
  MpiCommunicator host_;
  double timeout_s_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  ncclComm_t comm_ = nullptr;
  bool broken_ = false;  // an NCCL or CUDA error was seen: abort, don't finalize, at destruction
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Backend& backend, const CommunicatorOptions& options) {
  return std::make_unique<NcclCommunicator>(backend, options);
}

}  // namespace gum::dist_detail
#endif  // GUM_HAVE_MPI && GUM_HAVE_CUDA
