#pragma once
// Emulator controls for tests and tools; kernels and the backend never need them.
#include <map>
#include <string>

namespace gum_emu {

// "forward", "reverse" or "random[:SEED]": the order in which blocks run and in which the runnable
// fibers of a block are resumed between synchronisation points. The default comes from the
// environment variable GUM_CUDA_EMU_SCHEDULE (forward when unset); an invalid spec throws
// std::invalid_argument.
void set_schedule(const std::string& spec);
std::string schedule();

// "sync" or "deferred": whether work on a stream other than the legacy one runs inside the call
// that submits it or waits until something depends on it (src/streams.cpp). The default comes
// from GUM_CUDA_EMU_STREAMS (sync when unset); switching runs every queued item first; an invalid
// spec throws std::invalid_argument.
void set_stream_mode(const std::string& spec);
std::string stream_mode();

// The message of the last error a launch raised (empty if none): kernel, block, thread, source line.
std::string last_error_message();

// Work counters since the process started (src/stats.cpp). A host synchronisation is a call that
// makes the host wait for the device on a GPU (cudaStreamSynchronize, cudaDeviceSynchronize,
// cudaEventSynchronize, a blocking cudaMemcpy, cudaMemcpyAsync into pageable host memory), counted
// once per round trip: a wait counts only when device work (a launch, a library call, a copy, a
// memset) was queued since the previous wait, so a readback followed by a stream synchronisation
// counts once, and a blocking copy always counts (the host waits for the copy itself).
// Library calls carry their exact cost: cuBLAS GEMMs 2 m n k FLOPs per product and the bytes of A,
// B, C (read when beta != 0) and C written. GUM_CUDA_EMU_STATS=PATH writes them as JSON at exit.
// Kernels' global-memory traffic and tensor-core FLOPs are counted from their own accesses and
// WMMA operations (src/access.cpp) when the build instruments them (accesses_counted) and
// counting is on: GUM_CUDA_EMU_STATS set, or set_access_counting(true).
struct AccessCount {
  // moved: per block, distinct 32-byte sectors loaded plus sectors stored, times 32;
  // read/written: distinct bytes over the launch (their sum: what the launch requires).
  unsigned long long moved_bytes = 0, read_bytes = 0, written_bytes = 0;
  double tensor_flops = 0;  // 2 M N K per warp-wide wmma::mma_sync
};
struct KernelCount {
  unsigned long long launches = 0, threads = 0;
  AccessCount accesses;  // summed over the launches
};
struct LibraryCount {
  unsigned long long calls = 0;
  double flops = 0, bytes = 0;
};
struct Stats {
  bool accesses_counted = false;  // kernels instrumented and counting on
  unsigned long long allocations = 0, frees = 0, host_syncs = 0;
  // Work the host submitted outside a capture (kernel launches, library calls, copies, memsets,
  // graph launches: what costs a launch on a GPU), and graphs run; a graph's own kernels count
  // in `kernels` each time it runs.
  unsigned long long host_launches = 0, graph_launches = 0;
  std::map<std::string, KernelCount> kernels;   // by kernel name
  std::map<std::string, LibraryCount> library;  // by call, e.g. "cublasGemmEx F32 tf32"
};
Stats stats();
void write_stats(const char* path);
void count_launch(const char* kernel, unsigned long long threads);
void count_library_call(const char* call, double flops, double bytes);
void count_allocation();
void count_free();
void count_host_sync();
void count_device_work();  // a queued copy or memset
void count_host_launch();
void count_graph_launch();
void count_launch_accesses(const char* kernel, const AccessCount& count);

// Access counting (src/access.cpp): device allocations are registered by cudaMalloc, a launch
// brackets its blocks with begin/end calls.
bool accesses_instrumented();  // this build compiles the kernels with the access instrumentation
void set_access_counting(bool on);
bool access_counting();
void register_allocation(const void* ptr, size_t bytes);
void unregister_allocation(const void* ptr);
void begin_launch_accesses();
void begin_block_accesses();
AccessCount end_launch_accesses();

}  // namespace gum_emu
