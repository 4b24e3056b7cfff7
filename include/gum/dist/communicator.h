#pragma once
// Collectives between the ranks of a data-parallel job. Three implementations:
//   single  world size 1: every collective is the identity (no MPI needed at run time);
//   mpi     CPU buffers, MPI collectives (OpenMPI here is not CUDA-aware);
//   nccl    GPU buffers, NCCL collectives bootstrapped over MPI (host values still go over MPI).
// make_communicator() picks one from how the process was launched and the backend.
//
// The plain collectives are blocking from the caller's point of view; the *_async forms start
// a bucket of tensors and return, and wait() completes them (see "asynchronous collectives").
// Every wait lasts at most CommunicatorOptions::timeout_s: a collective that does not finish in
// time (a rank died, hangs or took another code path) aborts the whole job with a message naming
// the rank and the collective, so no rank waits forever.
//
// Every rank starts the same collectives in the same order (MPI and NCCL match them by order),
// blocking and asynchronous alike; a blocking collective may be called while async ones are
// outstanding.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gum/backend/backend.h"
#include "gum/core/tensor.h"

namespace gum {

enum class ReduceOp { Sum, Avg, Max, Min };
const char* reduce_op_name(ReduceOp op);

// A collective started by an *_async call. Handles count up from 1 in the order the collectives
// were started on this communicator; the default handle (0) stands for "nothing started".
struct CollectiveHandle {
  uint64_t id = 0;
};

struct CommunicatorOptions {
  // Longest wait for one collective before the job is aborted; 0 waits forever.
  double timeout_s = 1800;
};

// What the launcher tells a process before any MPI call: OpenMPI's mpirun exports
// OMPI_COMM_WORLD_SIZE / _RANK / _LOCAL_RANK / _LOCAL_SIZE. The trainer needs the local rank
// before the communicator exists, to create its backend on the right GPU.
struct LaunchInfo {
  bool under_mpirun = false;
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_size = 1;
};
// Throws a runtime error naming the variable when one is set but is not a valid number.
LaunchInfo launch_info_from_environment();
// The GPU a rank uses: local_rank % device_count (device 0 when there is no GPU count).
int device_index_for_local_rank(int local_rank, int device_count);

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string name() const = 0;  // "single", "mpi" or "nccl"
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual int local_rank() const = 0;  // rank among the processes of this host
  bool is_root() const { return rank() == 0; }
  // Where tensor arguments must live (CPU for single-on-cpu and mpi, CUDA for nccl).
  virtual Device device() const = 0;

  // ---- tensor collectives (contiguous tensors on device()) ----
  // In place: every rank ends with op over all ranks' `t`. Avg needs a floating dtype.
  virtual void all_reduce(Tensor t, ReduceOp op) = 0;
  // in.numel() == world_size * out.numel(); rank r receives op over all ranks of chunk r of `in`.
  // out may be chunk `rank` of `in` (in place); the other chunks of `in` are then left undefined.
  virtual void reduce_scatter(Tensor out, const Tensor& in, ReduceOp op) = 0;
  // out.numel() == world_size * in.numel(); chunk r of out receives rank r's `in`.
  // `in` may be chunk `rank` of `out` (in place).
  virtual void all_gather(Tensor out, const Tensor& in) = 0;
  // Every rank's `t` becomes root's `t`.
  virtual void broadcast(Tensor t, int root) = 0;
  // In place: root's `t` becomes op over all ranks' `t`; on the other ranks `t` is an input and
  // its contents afterwards are unspecified. Avg needs a floating dtype.
  void reduce(Tensor t, ReduceOp op, int root);

  // ---- asynchronous collectives (buckets of contiguous tensors on device()) ----
  // Start the collective on every tensor of `bucket` and return without waiting for it (the
  // single and mpi communicators may complete some of the work before returning). Arguments are
  // checked before anything starts, so a bad call throws on every rank alike.
  //
  // Contract: until wait() has returned for the handle (or a later one), nobody may read or
  // write the bucket's tensors: not host code, and not backend work queued after the start
  // (queue it after the wait). The collective reads the tensors after all backend work queued
  // before the start: on a GPU the communication stream waits for the backend's stream, the
  // host does not.
  //
  // all_reduce on each tensor, as all_reduce() does.
  virtual CollectiveHandle all_reduce_async(const std::vector<Tensor>& bucket, ReduceOp op) = 0;
  // reduce of bucket[i] to roots[i] (one root per tensor: a bucket may have several owners).
  virtual CollectiveHandle reduce_async(const std::vector<Tensor>& bucket, const std::vector<int>& roots,
                                        ReduceOp op) = 0;
  // Returns once `handle` and every collective started before it have completed: their tensors
  // hold the results and may be used again, also by backend work queued from now on. Collectives
  // complete in the order they were started. A wait that passes timeout_s aborts the job naming
  // this rank and the bucket that did not complete; an MPI, NCCL or CUDA error throws a
  // gum::Error naming the rank (run_or_abort then ends the job).
  virtual void wait(CollectiveHandle handle) = 0;
  // wait() for every collective started so far.
  void wait_all() { wait(CollectiveHandle{started_}); }

  // ---- host values ----
  virtual void barrier() = 0;
  // op over one double per rank: loss sums, token counts, norms, "any rank failed" flags.
  virtual double all_reduce_host(double value, ReduceOp op) = 0;
  // Every rank's `bytes` becomes root's (resized as needed): configs, RNG states.
  virtual void broadcast_bytes(std::vector<uint8_t>& bytes, int root) = 0;
  std::string broadcast_string(const std::string& text, int root);

  // Ends every rank of the job with exit code `exit_code` (MPI_Abort under mpirun) after
  // printing `message`, prefixed with this rank, to stderr.
  [[noreturn]] virtual void abort(const std::string& message, int exit_code = 1) = 0;

 protected:
  // The handle of the next started collective (implementations call it once per start).
  CollectiveHandle next_handle() { return CollectiveHandle{++started_}; }

 private:
  uint64_t started_ = 0;
};

// Under mpirun (OMPI_COMM_WORLD_SIZE set): "nccl" for a CUDA backend, "mpi" for a CPU backend.
// Otherwise "single", without calling MPI_Init, so gum_train runs where MPI is not set up.
// MPI_Init happens once per process and MPI_Finalize at exit. The nccl communicator selects
// the GPU device_index_for_local_rank(local_rank, device count) (create the backend on it).
// The backend serves the single communicator's copies and lets nccl wait for queued work.
std::unique_ptr<Communicator> make_communicator(Backend& backend, const CommunicatorOptions& options = {});
// The single-process communicator, whatever the environment says.
std::unique_ptr<Communicator> make_single_communicator(Backend& backend);

// The pattern for every rank's main work: runs `body` and returns its result; an exception
// escaping it (gum::Error or any std::exception) is reported as "rank R of W: <what>" and ends
// the whole job through comm.abort() with the error's exit code (gum::Error::exit_code(), else 1),
// so the other ranks are not left blocked in a collective that the failed rank will never join.
int run_or_abort(Communicator& comm, const std::function<int()>& body);

}  // namespace gum
