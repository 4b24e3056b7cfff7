// NCCL over MPI for the CUDA emulation (include/nccl.h). Each collective becomes one non-blocking
// MPI collective on the communicator's own MPI communicator, moving bytes: every rank's
// contribution is gathered (all-gather, gather to the root, or all-to-all for reduce-scatter) and
// combined locally in rank order, so the result is the same bits on every rank. Sends are copied
// when the collective starts and results written when it finishes, so in-place calls are safe.
#include <mpi.h>
#include <nccl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "gum/core/dtype.h"
#include "streams.h"

namespace {

enum class Kind { kAllReduce, kReduce, kBroadcast, kAllGather, kReduceScatter };

// One collective call: its arguments, what this rank sends and what MPI delivers.
struct Collective {
  Kind kind;
  const void* send;
  void* recv;
  size_t count;  // elements per rank: the reduced length, or the gathered/scattered chunk
  ncclDataType_t type;
  ncclRedOp_t op;
  int root;
  ncclComm_t comm;
  std::vector<uint8_t> outgoing, incoming;
  MPI_Request request = MPI_REQUEST_NULL;
};

thread_local std::string last_error;
thread_local int group_depth = 0;
thread_local std::vector<std::unique_ptr<Collective>> grouped;  // called inside a group, not started

}  // namespace

struct ncclComm {
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0, nranks = 0;
  bool blocking = true;
  bool finalized = false;
  // ncclInProgress while started collectives have not finished; an error once one failed.
  ncclResult_t state = ncclSuccess;
  std::deque<std::unique_ptr<Collective>> started;  // in start order
};

namespace {

template <typename... Parts>
ncclResult_t fail(ncclResult_t result, const Parts&... parts) {
  last_error.clear();
  (last_error.append(parts), ...);
  return result;
}

ncclResult_t fail_mpi(ncclComm_t comm, int code, const char* call) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  comm->state = ncclSystemError;
  return fail(ncclSystemError, call, " failed: ", std::string(text, size_t(length)));
}

size_t type_size(ncclDataType_t type) {
  switch (type) {
    case ncclInt8:
    case ncclUint8:
      return 1;
    case ncclFloat16:
    case ncclBfloat16:
      return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
      return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
      return 8;
    case ncclNumTypes:
      break;
  }
  return 0;
}

// How a stored element is combined: arithmetic in `Acc`, converted on load and store.
template <typename T>
struct Plain {
  using Acc = T;
  static constexpr size_t kBytes = sizeof(T);
  static Acc load(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
  }
  static void store(Acc v, uint8_t* p) { std::memcpy(p, &v, sizeof(T)); }
};

template <float (*Widen)(uint16_t), uint16_t (*Narrow)(float)>
struct HalfWidth {
  using Acc = float;
  static constexpr size_t kBytes = 2;
  static Acc load(const uint8_t* p) {
    uint16_t bits;
    std::memcpy(&bits, p, 2);
    return Widen(bits);
  }
  static void store(Acc v, uint8_t* p) {
    const uint16_t bits = Narrow(v);
    std::memcpy(p, &bits, 2);
  }
};
using Bf16 = HalfWidth<gum::bf16_to_f32, gum::f32_to_bf16>;
using F16 = HalfWidth<gum::f16_to_f32, gum::f32_to_f16>;

// Integer sums and products wrap around, as on a GPU (signed overflow is undefined in C++).
template <typename T>
T combine(ncclRedOp_t op, T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    if (op == ncclSum || op == ncclAvg) return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
    if (op == ncclProd) return static_cast<T>(static_cast<U>(a) * static_cast<U>(b));
  } else {
    if (op == ncclSum || op == ncclAvg) return a + b;
    if (op == ncclProd) return a * b;
  }
  return op == ncclMax ? std::max(a, b) : std::min(a, b);
}

// out[i] = op over ranks r of blocks[r][i]; blocks are `count` elements each, in rank order.
template <typename Format>
void reduce_as(const uint8_t* blocks, int nranks, size_t count, ncclRedOp_t op, uint8_t* out) {
  using Acc = typename Format::Acc;
  constexpr size_t size = Format::kBytes;
  const size_t block_bytes = count * size;
  for (size_t i = 0; i < count; ++i) {
    Acc acc = Format::load(blocks + i * size);
    for (int r = 1; r < nranks; ++r) acc = combine(op, acc, Format::load(blocks + r * block_bytes + i * size));
    if (op == ncclAvg) acc = static_cast<Acc>(acc / static_cast<Acc>(nranks));
    Format::store(acc, out + i * size);
  }
}

void reduce_blocks(const Collective& c, const uint8_t* blocks, void* out_buffer) {
  auto* out = static_cast<uint8_t*>(out_buffer);
  const int n = c.comm->nranks;
  switch (c.type) {
    case ncclInt8:
      return reduce_as<Plain<int8_t>>(blocks, n, c.count, c.op, out);
    case ncclUint8:
      return reduce_as<Plain<uint8_t>>(blocks, n, c.count, c.op, out);
    case ncclInt32:
      return reduce_as<Plain<int32_t>>(blocks, n, c.count, c.op, out);
    case ncclUint32:
      return reduce_as<Plain<uint32_t>>(blocks, n, c.count, c.op, out);
    case ncclInt64:
      return reduce_as<Plain<int64_t>>(blocks, n, c.count, c.op, out);
    case ncclUint64:
      return reduce_as<Plain<uint64_t>>(blocks, n, c.count, c.op, out);
    case ncclFloat16:
      return reduce_as<F16>(blocks, n, c.count, c.op, out);
    case ncclFloat32:
      return reduce_as<Plain<float>>(blocks, n, c.count, c.op, out);
    case ncclFloat64:
      return reduce_as<Plain<double>>(blocks, n, c.count, c.op, out);
    case ncclBfloat16:
      return reduce_as<Bf16>(blocks, n, c.count, c.op, out);
    case ncclNumTypes:
      break;
  }
}

// Posts the collective's MPI operation (`outgoing` is a copy of the send buffer taken now).
int start(Collective& c) {
  const int chunk = static_cast<int>(c.count * type_size(c.type));
  const int n = c.comm->nranks;
  const auto* send = static_cast<const uint8_t*>(c.send);
  MPI_Comm mpi = c.comm->mpi;
  switch (c.kind) {
    case Kind::kAllReduce:
    case Kind::kAllGather:
      c.outgoing.assign(send, send + chunk);
      c.incoming.resize(size_t(chunk) * n);
      return MPI_Iallgather(c.outgoing.data(), chunk, MPI_BYTE, c.incoming.data(), chunk, MPI_BYTE, mpi, &c.request);
    case Kind::kReduce:
      c.outgoing.assign(send, send + chunk);
      if (c.comm->rank == c.root) c.incoming.resize(size_t(chunk) * n);
      return MPI_Igather(c.outgoing.data(), chunk, MPI_BYTE, c.incoming.data(), chunk, MPI_BYTE, c.root, mpi,
                         &c.request);
    case Kind::kBroadcast:
      if (c.comm->rank == c.root)
        c.incoming.assign(send, send + chunk);
      else
        c.incoming.resize(size_t(chunk));
      return MPI_Ibcast(c.incoming.data(), chunk, MPI_BYTE, c.root, mpi, &c.request);
    case Kind::kReduceScatter:  // rank r receives chunk r of every rank's send buffer
      c.outgoing.assign(send, send + size_t(chunk) * n);
      c.incoming.resize(size_t(chunk) * n);
      return MPI_Ialltoall(c.outgoing.data(), chunk, MPI_BYTE, c.incoming.data(), chunk, MPI_BYTE, mpi, &c.request);
  }
  return MPI_ERR_OTHER;
}

// Writes the result of a collective whose MPI operation has completed.
void finish(const Collective& c) {
  switch (c.kind) {
    case Kind::kAllReduce:
    case Kind::kReduceScatter:
      reduce_blocks(c, c.incoming.data(), c.recv);
      return;
    case Kind::kReduce:
      if (c.comm->rank == c.root) reduce_blocks(c, c.incoming.data(), c.recv);
      return;
    case Kind::kBroadcast:
    case Kind::kAllGather:
      std::memcpy(c.recv, c.incoming.data(), c.incoming.size());
      return;
  }
}

// Finishes started collectives in start order: all of them when `wait`, else those MPI has
// completed. Returns the communicator's state afterwards.
ncclResult_t progress(ncclComm_t comm, bool wait) {
  while (!comm->started.empty() && comm->state == ncclInProgress) {
    Collective& c = *comm->started.front();
    int done = 1;
    const int code = wait ? MPI_Wait(&c.request, MPI_STATUS_IGNORE) : MPI_Test(&c.request, &done, MPI_STATUS_IGNORE);
    if (code != MPI_SUCCESS) return fail_mpi(comm, code, wait ? "MPI_Wait" : "MPI_Test");
    if (!done) return ncclInProgress;
    finish(c);
    comm->started.pop_front();
  }
  if (comm->state == ncclInProgress) comm->state = ncclSuccess;
  return comm->state;
}

// Starts collectives in call order, then completes them on blocking communicators and
// progresses them on non-blocking ones.
ncclResult_t launch(std::vector<std::unique_ptr<Collective>> collectives) {
  std::vector<ncclComm_t> comms;
  for (std::unique_ptr<Collective>& c : collectives) {
    ncclComm_t comm = c->comm;
    if (comm->state != ncclSuccess && comm->state != ncclInProgress) return comm->state;
    if (const int code = start(*c); code != MPI_SUCCESS) return fail_mpi(comm, code, "starting the MPI collective");
    comm->state = ncclInProgress;
    comm->started.push_back(std::move(c));
    if (std::find(comms.begin(), comms.end(), comm) == comms.end()) comms.push_back(comm);
  }
  ncclResult_t result = ncclSuccess;
  for (ncclComm_t comm : comms) {
    const ncclResult_t state = progress(comm, comm->blocking);
    if (state != ncclSuccess && (result == ncclSuccess || result == ncclInProgress)) result = state;
  }
  return result;
}

// NCCL's argument checks for a collective on `comm`, then the collective runs (or joins the group)
// once the work queued before it on `stream` has run (GUM_CUDA_EMU_STREAMS=deferred).
ncclResult_t submit(Kind kind, const void* send, void* recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                    int root, ncclComm_t comm, cudaStream_t stream, const char* name) {
  if (comm == nullptr) return fail(ncclInvalidArgument, name, ": comm is NULL");
  if (gum_emu::capturing(stream)) return fail(ncclInvalidUsage, name, ": the emulator does not capture NCCL calls");
  gum_emu::drain(stream);
  if (comm->state != ncclSuccess && comm->state != ncclInProgress) return comm->state;
  if (comm->finalized) return fail(ncclInvalidUsage, name, ": the communicator is finalized");
  if (!comm->started.empty())
    return fail(ncclInvalidUsage, name,
                ": the previous call on this non-blocking communicator is still in progress (poll "
                "ncclCommGetAsyncError until it is no longer ncclInProgress)");
  if (type_size(type) == 0) return fail(ncclInvalidArgument, name, ": invalid data type ", std::to_string(int(type)));
  if (op < 0 || op >= ncclNumOps)
    return fail(ncclInvalidArgument, name, ": invalid reduction ", std::to_string(int(op)));
  if (root < 0 || root >= comm->nranks)
    return fail(ncclInvalidArgument, name, ": root ", std::to_string(root), " is not a rank of ",
                std::to_string(comm->nranks));
  if (count == 0) return ncclSuccess;
  if (count * type_size(type) > size_t(INT_MAX))
    return fail(ncclInvalidArgument, name, ": the emulation moves at most INT_MAX bytes per rank and call");
  const bool receives = kind != Kind::kReduce || comm->rank == root;
  if (send == nullptr || (receives && recv == nullptr))
    return fail(ncclInvalidArgument, name, ": NULL buffer for ", std::to_string(count), " elements");
  auto c = std::make_unique<Collective>(Collective{kind, send, recv, count, type, op, root, comm, {}, {}});
  if (group_depth > 0) {
    grouped.push_back(std::move(c));
    return ncclSuccess;
  }
  std::vector<std::unique_ptr<Collective>> one;
  one.push_back(std::move(c));
  return launch(std::move(one));
}

// Identifies a communicator's creation: every rank must pass the same one (the process and time
// tell apart ids that ranks made each for itself).
struct UniqueIdContents {
  char tag[16];
  int64_t creator_pid;
  int64_t creation_ns;
  uint64_t serial;
};
constexpr char kIdTag[16] = "gum-emu-nccl-id";
static_assert(sizeof(UniqueIdContents) <= NCCL_UNIQUE_ID_BYTES);

// What each rank brings to ncclCommInitRank, compared across ranks before the communicator exists.
struct JoinRequest {
  ncclUniqueId id;
  int nranks;
  int rank;
};

ncclResult_t init(ncclComm_t* comm, int nranks, const ncclUniqueId& id, int rank, bool blocking) {
  if (comm == nullptr) return fail(ncclInvalidArgument, "ncclCommInitRank: comm is NULL");
  *comm = nullptr;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) return fail(ncclInvalidUsage, "ncclCommInitRank: the emulated NCCL needs MPI to be initialized");
  if (std::memcmp(id.internal, kIdTag, sizeof(kIdTag)) != 0)
    return fail(ncclInvalidArgument, "ncclCommInitRank: the unique id does not come from ncclGetUniqueId");
  // Split, not dup: the NCCL rank becomes the rank in the new communicator (ties keep world order,
  // and an invalid rank argument is caught below on every rank alike).
  auto owned = std::make_unique<ncclComm>();
  owned->blocking = blocking;
  if (int code = MPI_Comm_split(MPI_COMM_WORLD, 0, rank, &owned->mpi); code != MPI_SUCCESS)
    return fail_mpi(owned.get(), code, "MPI_Comm_split");
  MPI_Comm_set_errhandler(owned->mpi, MPI_ERRORS_RETURN);
  MPI_Comm_rank(owned->mpi, &owned->rank);
  MPI_Comm_size(owned->mpi, &owned->nranks);
  const JoinRequest mine{id, nranks, rank};
  std::vector<JoinRequest> all(size_t(owned->nranks));
  if (int code =
          MPI_Allgather(&mine, sizeof(JoinRequest), MPI_BYTE, all.data(), sizeof(JoinRequest), MPI_BYTE, owned->mpi);
      code != MPI_SUCCESS) {
    MPI_Comm_free(&owned->mpi);
    return fail_mpi(owned.get(), code, "MPI_Allgather");
  }
  for (int r = 0; r < owned->nranks; ++r) {
    const JoinRequest& other = all[size_t(r)];
    const char* problem = std::memcmp(&other.id, &id, sizeof(id)) != 0 ? "ranks passed different unique ids"
                          : other.nranks != owned->nranks              ? "nranks is not the number of MPI processes"
                          : other.rank != r                            ? "the ranks are not 0 .. nranks-1, each once"
                                                                       : nullptr;
    if (problem != nullptr) {
      MPI_Comm_free(&owned->mpi);
      return fail(ncclInvalidArgument, "ncclCommInitRank: ", problem, " (the emulated NCCL spans all ",
                  std::to_string(owned->nranks), " MPI processes)");
    }
  }
  *comm = owned.release();
  return ncclSuccess;
}

// Releases the communicator. Collectives MPI has not completed keep their buffers forever:
// MPI may still write into them, and an abandoned MPI collective cannot be cancelled.
void release(ncclComm_t comm) {
  for (std::unique_ptr<Collective>& c : comm->started)
    if (c->request != MPI_REQUEST_NULL) static_cast<void>(c.release());
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm->mpi != MPI_COMM_NULL) MPI_Comm_free(&comm->mpi);
  delete comm;
}

}  // namespace

extern "C" {

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess:
      return "no error";
    case ncclUnhandledCudaError:
      return "unhandled cuda error";
    case ncclSystemError:
      return "unhandled system error";
    case ncclInternalError:
      return "internal error";
    case ncclInvalidArgument:
      return "invalid argument";
    case ncclInvalidUsage:
      return "invalid usage";
    case ncclRemoteError:
      return "remote process exited or there was a network error";
    case ncclInProgress:
      return "NCCL operation in progress";
    case ncclNumResults:
      break;
  }
  return "unknown result code";
}

const char* ncclGetLastError(ncclComm_t) { return last_error.c_str(); }

ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId) {
  if (uniqueId == nullptr) return fail(ncclInvalidArgument, "ncclGetUniqueId: uniqueId is NULL");
  static uint64_t serial = 0;
  UniqueIdContents contents{};
  std::memcpy(contents.tag, kIdTag, sizeof(kIdTag));
  contents.creator_pid = getpid();
  contents.creation_ns = std::chrono::steady_clock::now().time_since_epoch().count();
  contents.serial = ++serial;
  std::memset(uniqueId->internal, 0, sizeof(uniqueId->internal));
  std::memcpy(uniqueId->internal, &contents, sizeof(contents));
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank) {
  return init(comm, nranks, commId, rank, true);
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank, ncclConfig_t* config) {
  if (config != nullptr && config->magic != 0xcafebeef)
    return fail(ncclInvalidArgument, "ncclCommInitRankConfig: config was not set up with NCCL_CONFIG_INITIALIZER");
  return init(comm, nranks, commId, rank, config == nullptr || config->blocking != 0);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError) {
  if (comm == nullptr || asyncError == nullptr)
    return fail(ncclInvalidArgument, "ncclCommGetAsyncError: comm or asyncError is NULL");
  *asyncError = comm->state == ncclInProgress ? progress(comm, false) : comm->state;
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (comm == nullptr || count == nullptr) return fail(ncclInvalidArgument, "ncclCommCount: comm or count is NULL");
  *count = comm->nranks;
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (comm == nullptr || rank == nullptr) return fail(ncclInvalidArgument, "ncclCommUserRank: comm or rank is NULL");
  *rank = comm->rank;
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
  if (comm == nullptr) return fail(ncclInvalidArgument, "ncclCommFinalize: comm is NULL");
  if (comm->finalized) return fail(ncclInvalidUsage, "ncclCommFinalize: the communicator is finalized already");
  comm->finalized = true;
  return comm->state == ncclInProgress ? progress(comm, comm->blocking) : comm->state;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (comm == nullptr) return ncclSuccess;
  release(comm);
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (comm == nullptr) return ncclSuccess;
  release(comm);
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
  return submit(Kind::kAllReduce, sendbuff, recvbuff, count, datatype, op, 0, comm, stream, "ncclAllReduce");
}

ncclResult_t ncclReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                        int root, ncclComm_t comm, cudaStream_t stream) {
  return submit(Kind::kReduce, sendbuff, recvbuff, count, datatype, op, root, comm, stream, "ncclReduce");
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  return submit(Kind::kBroadcast, sendbuff, recvbuff, count, datatype, ncclSum, root, comm, stream, "ncclBroadcast");
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
  return submit(Kind::kAllGather, sendbuff, recvbuff, sendcount, datatype, ncclSum, 0, comm, stream, "ncclAllGather");
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  return submit(Kind::kReduceScatter, sendbuff, recvbuff, recvcount, datatype, op, 0, comm, stream,
                "ncclReduceScatter");
}

ncclResult_t ncclGroupStart(void) {
  ++group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void) {
  if (group_depth == 0) return fail(ncclInvalidUsage, "ncclGroupEnd: no ncclGroupStart to end");
  if (--group_depth > 0) return ncclSuccess;
  return launch(std::exchange(grouped, {}));
}

}  // extern "C"
