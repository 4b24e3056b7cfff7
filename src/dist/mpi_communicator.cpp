#ifdef GUM_HAVE_MPI
#include "mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "collective_checks.h"
#include "gum/core/error.h"

namespace gum::dist_detail {

namespace {

// MPI counts are int: larger buffers go in pieces of at most this many elements.
constexpr int64_t kMaxElementsPerCall = int64_t{1} << 30;

void finalize_mpi_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void check_mpi(int code, const char* call, const std::string& where) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  runtime_error(where, ": ", call, " failed: ", std::string(text, static_cast<size_t>(length)));
}

// Element type for arithmetic (reductions).
MPI_Datatype arithmetic_type(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return MPI_FLOAT;
    case DType::F64:
      return MPI_DOUBLE;
    case DType::I32:
      return MPI_INT32_T;
    case DType::I64:
      return MPI_INT64_T;
    default:
      break;
  }
  runtime_error("no MPI arithmetic type for ", dtype_name(dtype));
}

// Element type of the same width for pure data movement (gather, broadcast): any dtype.
MPI_Datatype movement_type(DType dtype) {
  switch (dtype_size(dtype)) {
    case 1:
      return MPI_UINT8_T;
    case 2:
      return MPI_UINT16_T;
    case 4:
      return MPI_UINT32_T;
    default:
      return MPI_UINT64_T;
  }
}

MPI_Op mpi_op_for(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
    case ReduceOp::Avg:
      return MPI_SUM;  // Avg divides by the world size afterwards
    case ReduceOp::Max:
      return MPI_MAX;
    case ReduceOp::Min:
      return MPI_MIN;
  }
  return MPI_SUM;
}

uint8_t* element_at(const Tensor& t, int64_t index) {
  return static_cast<uint8_t*>(t.data) + static_cast<size_t>(index) * dtype_size(t.dtype);
}

}  // namespace

void ensure_mpi_initialized() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  int provided = 0;
  // Only the main thread calls MPI; OpenMP threads never do.
  check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread", "mpi communicator");
  std::atexit(finalize_mpi_at_exit);
}

MpiCommunicator::MpiCommunicator(const CommunicatorOptions& options) : timeout_s_(options.timeout_s) {
  ensure_mpi_initialized();
  check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup", "mpi communicator");
  // Errors come back as codes and become gum::Error (run_or_abort then aborts the job).
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &world_size_);
  MPI_Comm node_comm = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_comm), "MPI_Comm_split_type",
            "mpi communicator");
  MPI_Comm_rank(node_comm, &local_rank_);
  MPI_Comm_free(&node_comm);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::wait_request(MPI_Request& request, const char* collective, int64_t count, DType dtype) {
  bool finished = poll_until(timeout_s_, [&] {
    int done = 0;
    check_mpi(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test", concat(rank_prefix(*this), " ", collective));
    return done != 0;
  });
  if (!finished) abort(timeout_message(collective, count, dtype, timeout_s_), 1);
}

void MpiCommunicator::all_reduce(Tensor t, ReduceOp op) { wait(all_reduce_async({t}, op)); }

CollectiveHandle MpiCommunicator::all_reduce_async(const std::vector<Tensor>& bucket, ReduceOp op) {
  check_reduce_bucket(*this, "all_reduce", bucket, op);
  return start_reduction("all_reduce", bucket, {}, op);
}

CollectiveHandle MpiCommunicator::reduce_async(const std::vector<Tensor>& bucket, const std::vector<int>& roots,
                                               ReduceOp op) {
  check_reduce_bucket(*this, "reduce", bucket, op);
  check_bucket_roots(*this, "reduce", bucket, roots);
  return start_reduction("reduce", bucket, roots, op);
}

CollectiveHandle MpiCommunicator::start_reduction(const char* collective, const std::vector<Tensor>& bucket,
                                                  const std::vector<int>& roots, ReduceOp op) {
  PendingReduction& pending = pending_.emplace_back();
  pending.handle = next_handle();
  pending.description = describe_bucket(collective, bucket);
  pending.op = op;
  // All parts first: MPI keeps pointers into the staging buffers, which must not move afterwards.
  pending.parts.resize(bucket.size());
  for (size_t i = 0; i < bucket.size(); ++i) {
    ReductionPart& part = pending.parts[i];
    part.tensor = bucket[i];
    part.holds_result = roots.empty() || roots[i] == rank_;
    if (needs_f32_staging(bucket[i].dtype)) part.staging = widen_to_f32(bucket[i]);
  }
  for (size_t i = 0; i < bucket.size(); ++i) {
    ReductionPart& part = pending.parts[i];
    Tensor buffer = part.staging.empty()
                        ? part.tensor
                        : Tensor(part.staging.data(), DType::F32, Device::CPU, Shape{part.tensor.numel()});
    for (int64_t offset = 0; offset < buffer.numel(); offset += kMaxElementsPerCall) {
      int count = static_cast<int>(std::min(kMaxElementsPerCall, buffer.numel() - offset));
      MPI_Datatype type = arithmetic_type(buffer.dtype);
      MPI_Request& request = pending.requests.emplace_back();
      if (roots.empty()) {
        check_mpi(
            MPI_Iallreduce(MPI_IN_PLACE, element_at(buffer, offset), count, type, mpi_op_for(op), comm_, &request),
            "MPI_Iallreduce", rank_prefix(*this));
      } else {
        // The root reduces in place; the others only send (their receive buffer is ignored).
        void* send = part.holds_result ? MPI_IN_PLACE : element_at(buffer, offset);
        check_mpi(MPI_Ireduce(send, element_at(buffer, offset), count, type, mpi_op_for(op), roots[i], comm_, &request),
                  "MPI_Ireduce", rank_prefix(*this));
      }
    }
  }
  return pending.handle;
}

void MpiCommunicator::wait(CollectiveHandle handle) {
  while (!pending_.empty() && pending_.front().handle.id <= handle.id) {
    PendingReduction& pending = pending_.front();
    bool finished = poll_until(timeout_s_, [&] {
      int done = 0;
      check_mpi(
          MPI_Testall(static_cast<int>(pending.requests.size()), pending.requests.data(), &done, MPI_STATUSES_IGNORE),
          "MPI_Testall", concat(rank_prefix(*this), " ", pending.description));
      return done != 0;
    });
    if (!finished) abort(timeout_message(pending.description, timeout_s_), 1);
    for (ReductionPart& part : pending.parts) {
      if (!part.holds_result) continue;
      if (pending.op == ReduceOp::Avg) {
        if (part.staging.empty())
          divide_host(part.tensor.data, part.tensor.dtype, part.tensor.numel(), world_size_);
        else
          divide_host(part.staging.data(), DType::F32, part.tensor.numel(), world_size_);
      }
      if (!part.staging.empty()) narrow_from_f32(part.tensor, part.staging);
    }
    pending_.pop_front();
  }
}

void MpiCommunicator::reduce_scatter(Tensor out, const Tensor& in, ReduceOp op) {
  check_reducible(*this, "reduce_scatter", in.dtype, op);
  bool in_place = check_reduce_scatter(*this, out, in);
  if (out.numel() > INT_MAX)
    runtime_error("mpi reduce_scatter: ", out.numel(), " elements per rank exceed MPI's int count");
  if (needs_f32_staging(in.dtype)) {
    std::vector<float> in_values = widen_to_f32(in);
    std::vector<float> out_values(static_cast<size_t>(out.numel()));
    reduce_scatter(Tensor(out_values.data(), DType::F32, Device::CPU, Shape{out.numel()}),
                   Tensor(in_values.data(), DType::F32, Device::CPU, Shape{in.numel()}), op);
    narrow_from_f32(out, out_values);
    return;
  }
  MPI_Request request;
  int count = static_cast<int>(out.numel());
  if (in_place) {
    // MPI's in-place form takes the input from and leaves the result at the start of the buffer.
    check_mpi(MPI_Ireduce_scatter_block(MPI_IN_PLACE, in.data, count, arithmetic_type(in.dtype), mpi_op_for(op), comm_,
                                        &request),
              "MPI_Ireduce_scatter_block", rank_prefix(*this));
    wait_request(request, "reduce_scatter", in.numel(), in.dtype);
    std::memmove(out.data, in.data, out.nbytes());
  } else {
    check_mpi(
        MPI_Ireduce_scatter_block(in.data, out.data, count, arithmetic_type(in.dtype), mpi_op_for(op), comm_, &request),
        "MPI_Ireduce_scatter_block", rank_prefix(*this));
    wait_request(request, "reduce_scatter", in.numel(), in.dtype);
  }
  if (op == ReduceOp::Avg) divide_host(out.data, out.dtype, out.numel(), world_size_);
}

void MpiCommunicator::all_gather(Tensor out, const Tensor& in) {
  bool in_place = check_all_gather(*this, out, in);
  if (in.numel() > INT_MAX) runtime_error("mpi all_gather: ", in.numel(), " elements per rank exceed MPI's int count");
  int count = static_cast<int>(in.numel());
  MPI_Datatype type = movement_type(in.dtype);
  MPI_Request request;
  check_mpi(MPI_Iallgather(in_place ? MPI_IN_PLACE : in.data, count, type, out.data, count, type, comm_, &request),
            "MPI_Iallgather", rank_prefix(*this));
  wait_request(request, "all_gather", out.numel(), out.dtype);
}

void MpiCommunicator::broadcast_raw(void* data, int64_t count, DType dtype, int root, const char* collective) {
  Tensor flat(data, dtype, Device::CPU, Shape{count});
  for (int64_t offset = 0; offset < count; offset += kMaxElementsPerCall) {
    int piece = static_cast<int>(std::min(kMaxElementsPerCall, count - offset));
    MPI_Request request;
    check_mpi(MPI_Ibcast(element_at(flat, offset), piece, movement_type(dtype), root, comm_, &request), "MPI_Ibcast",
              rank_prefix(*this));
    wait_request(request, collective, count, dtype);
  }
}

void MpiCommunicator::broadcast(Tensor t, int root) {
  check_tensor_device(*this, "broadcast", "tensor", t, Device::CPU);
  check_root(*this, "broadcast", root);
  broadcast_raw(t.data, t.numel(), t.dtype, root, "broadcast");
}

void MpiCommunicator::barrier() {
  MPI_Request request;
  check_mpi(MPI_Ibarrier(comm_, &request), "MPI_Ibarrier", rank_prefix(*this));
  wait_request(request, "barrier", 0, DType::U8);
}

double MpiCommunicator::all_reduce_host(double value, ReduceOp op) {
  double result = value;
  all_reduce(Tensor(&result, DType::F64, Device::CPU, Shape{1}), op);
  return result;
}

void MpiCommunicator::broadcast_bytes(std::vector<uint8_t>& bytes, int root) {
  check_root(*this, "broadcast_bytes", root);
  uint64_t size = bytes.size();
  broadcast_raw(&size, 1, DType::I64, root, "broadcast_bytes (size)");
  bytes.resize(size);
  broadcast_raw(bytes.data(), static_cast<int64_t>(size), DType::U8, root, "broadcast_bytes");
}

void MpiCommunicator::abort(const std::string& message, int exit_code) {
  report_fatal(*this, message);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

std::unique_ptr<Communicator> make_mpi_communicator(const CommunicatorOptions& options) {
  return std::make_unique<MpiCommunicator>(options);
}

}  // namespace gum::dist_detail
#endif  // GUM_HAVE_MPI
