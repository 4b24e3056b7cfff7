// The nccl communicator: GPU buffers through NCCL, host values and the bootstrap (the
// ncclUniqueId) through an MPI communicator. The NCCL communicator is created non-blocking,
// so every call returns at once and we poll ncclCommGetAsyncError and an event ourselves
// until done or until the deadline: a failed or missing peer ends the job instead of leaving
// this rank inside a kernel that waits forever.
//
// Every collective is started the same way (start()): our stream waits on the GPU for the
// backend's queued work (an event recorded on the backend's stream), the bucket is enqueued as
// one NCCL group, and an event recorded after it marks completion; wait() polls those events in
// start order. The host never synchronises on start, so backward keeps queueing kernels while a
// bucket is reduced; a blocking collective is start() followed by wait().
// Compiled, not run: there was no GPU where this was written (scripts/gpu_check.sh runs it).
#if defined(GUM_HAVE_MPI) && defined(GUM_HAVE_NCCL)
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>
#include <deque>
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

bool no_elements(const std::vector<Tensor>& bucket) {
  for (const Tensor& t : bucket)
    if (t.numel() > 0) return false;
  return true;
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
    for (const PendingCollective& pending : pending_) cudaEventDestroy(pending.done);
    for (cudaEvent_t event : free_events_) cudaEventDestroy(event);
    if (backend_ready_ != nullptr) cudaEventDestroy(backend_ready_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "nccl"; }
  int rank() const override { return host_.rank(); }
  int world_size() const override { return host_.world_size(); }
  int local_rank() const override { return host_.local_rank(); }
  Device device() const override { return Device::CUDA; }

  void all_reduce(Tensor t, ReduceOp op) override { wait(all_reduce_async({t}, op)); }

  void reduce_scatter(Tensor out, const Tensor& in, ReduceOp op) override {
    check_reducible(*this, "reduce_scatter", in.dtype, op);
    check_reduce_scatter(*this, out, in);  // NCCL's in-place form is exactly "out is chunk rank of in"
    if (out.numel() == 0) return;
    wait(start(describe_bucket("reduce_scatter", {in}), [&] {
      check_nccl(ncclReduceScatter(in.data, out.data, static_cast<size_t>(out.numel()), nccl_arithmetic_type(in.dtype),
                                   nccl_op_for(op), comm_, stream_),
                 "ncclReduceScatter");
    }));
  }

  void all_gather(Tensor out, const Tensor& in) override {
    check_all_gather(*this, out, in);
    if (in.numel() == 0) return;
    wait(start(describe_bucket("all_gather", {out}), [&] {
      check_nccl(ncclAllGather(in.data, out.data, in.nbytes(), ncclUint8, comm_, stream_), "ncclAllGather");
    }));
  }

  void broadcast(Tensor t, int root) override {
    check_tensor_device(*this, "broadcast", "tensor", t, Device::CUDA);
    check_root(*this, "broadcast", root);
    if (t.numel() == 0) return;
    wait(start(describe_bucket("broadcast", {t}), [&] {
      check_nccl(ncclBroadcast(t.data, t.data, t.nbytes(), ncclUint8, root, comm_, stream_), "ncclBroadcast");
    }));
  }

  CollectiveHandle all_reduce_async(const std::vector<Tensor>& bucket, ReduceOp op) override {
    check_reduce_bucket(*this, "all_reduce", bucket, op);
    if (no_elements(bucket)) return next_handle();  // complete already; no empty NCCL group
    return start(describe_bucket("all_reduce", bucket), [&] {
      for (const Tensor& t : bucket)
        if (t.numel() > 0)
          check_nccl(ncclAllReduce(t.data, t.data, static_cast<size_t>(t.numel()), nccl_arithmetic_type(t.dtype),
                                   nccl_op_for(op), comm_, stream_),
                     "ncclAllReduce");
    });
  }

  CollectiveHandle reduce_async(const std::vector<Tensor>& bucket, const std::vector<int>& roots,
                                ReduceOp op) override {
    check_reduce_bucket(*this, "reduce", bucket, op);
    check_bucket_roots(*this, "reduce", bucket, roots);
    if (no_elements(bucket)) return next_handle();
    return start(describe_bucket("reduce", bucket), [&] {
      // In place (sendbuff == recvbuff): the root's tensor receives the result, the others only send.
      for (size_t i = 0; i < bucket.size(); ++i)
        if (bucket[i].numel() > 0)
          check_nccl(ncclReduce(bucket[i].data, bucket[i].data, static_cast<size_t>(bucket[i].numel()),
                                nccl_arithmetic_type(bucket[i].dtype), nccl_op_for(op), roots[i], comm_, stream_),
                     "ncclReduce");
    });
  }

  void wait(CollectiveHandle handle) override {
    while (!pending_.empty() && pending_.front().handle.id <= handle.id) {
      const PendingCollective& pending = pending_.front();
      wait_for_event(pending.done, pending.description);
      free_events_.push_back(pending.done);
      pending_.pop_front();
    }
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
    check_cuda(cudaEventCreateWithFlags(&backend_ready_, cudaEventDisableTiming), "cudaEventCreateWithFlags", where);

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
  void wait_until_issued(const std::string& what) {
    ncclResult_t state = poll_state(timeout_s_);
    if (state == ncclInProgress) abort(timeout_message(what, timeout_s_), 1);
    check_nccl(state, what.c_str());
  }

  // Enqueues one collective (or a bucket of them: `enqueue` makes the NCCL calls, grouped here) on
  // our stream, ordered after the backend's queued work, and returns its handle without waiting.
  template <typename Enqueue>
  CollectiveHandle start(std::string description, Enqueue enqueue) {
    const std::string where = concat("nccl ", description, ", ", rank_prefix(*this));
    check_cuda(cudaSetDevice(device_), "cudaSetDevice", where);
    order_after_backend(where);
    check_nccl(ncclGroupStart(), "ncclGroupStart");
    enqueue();
    check_nccl(ncclGroupEnd(), "ncclGroupEnd");
    wait_until_issued(description);
    cudaEvent_t done = take_event(where);
    check_cuda(cudaEventRecord(done, stream_), "cudaEventRecord", where);
    pending_.push_back({next_handle(), done, std::move(description)});
    return pending_.back().handle;
  }

  // The inputs are results of kernels queued on the backend's stream: our stream waits for them
  // on the GPU. A backend without a native stream has finished its work once synchronised.
  void order_after_backend(const std::string& where) {
    auto backend_stream = static_cast<cudaStream_t>(backend_.native_stream());
    if (backend_stream == nullptr) {
      backend_.synchronize();
      return;
    }
    check_cuda(cudaEventRecord(backend_ready_, backend_stream), "cudaEventRecord (backend stream)", where);
    check_cuda(cudaStreamWaitEvent(stream_, backend_ready_, 0), "cudaStreamWaitEvent", where);
  }

  cudaEvent_t take_event(const std::string& where) {
    if (!free_events_.empty()) {
      cudaEvent_t event = free_events_.back();
      free_events_.pop_back();
      return event;
    }
    cudaEvent_t event = nullptr;
    check_cuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreateWithFlags", where);
    return event;
  }

  // Polls `done` until the deadline, checking NCCL's asynchronous errors meanwhile.
  void wait_for_event(cudaEvent_t done, const std::string& description) {
    bool finished = poll_until(timeout_s_, [&] {
      cudaError_t status = cudaEventQuery(done);
      if (status == cudaSuccess) return true;
      if (status != cudaErrorNotReady) {
        broken_ = true;
        check_cuda(status, "cudaEventQuery", concat("nccl ", description, ", ", rank_prefix(*this)));
      }
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_, &state);
      if (state != ncclSuccess && state != ncclInProgress) check_nccl(state, description.c_str());
      return false;
    });
    if (!finished) abort(timeout_message(description, timeout_s_), 1);
  }

  // A started collective: `done` is recorded on our stream right after it.
  struct PendingCollective {
    CollectiveHandle handle;
    cudaEvent_t done = nullptr;
    std::string description;  // for timeout and error messages
  };

  Backend& backend_;
  MpiCommunicator host_;
  double timeout_s_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t backend_ready_ = nullptr;    // recorded on the backend's stream at each start
  std::deque<PendingCollective> pending_;  // started, not yet waited for, in start order
  std::vector<cudaEvent_t> free_events_;   // completion events to reuse
  ncclComm_t comm_ = nullptr;
  bool broken_ = false;  // an NCCL or CUDA error was seen: abort, don't finalize, at destruction
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Backend& backend, const CommunicatorOptions& options) {
  return std::make_unique<NcclCommunicator>(backend, options);
}

}  // namespace gum::dist_detail
#endif  // GUM_HAVE_MPI && GUM_HAVE_NCCL
