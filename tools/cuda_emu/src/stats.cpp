// The emulator's work counters (gum_cuda_emu/control.h): what one process asked of the "GPU".
// Kernel launches and library calls are counted where they enter the emulator, allocations and
// host synchronisations in the runtime calls that make them, so the counts are the backend's own.
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "gum_cuda_emu/control.h"

namespace gum_emu {
namespace {

std::mutex& stats_mutex() {
  static std::mutex m;
  return m;
}

Stats& stats_unlocked() {
  static Stats s;
  return s;
}

bool device_busy = false;  // work was queued since the host last waited (under stats_mutex)

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// GUM_CUDA_EMU_STATS=PATH: the counters are written there as JSON when the process exits.
struct WriteAtExit {
  WriteAtExit() {
    // Constructed before the handler is registered, so destroyed only after it ran.
    stats_mutex();
    stats_unlocked();
    if (std::getenv("GUM_CUDA_EMU_STATS")) std::atexit([] { write_stats(std::getenv("GUM_CUDA_EMU_STATS")); });
  }
} write_at_exit;

}  // namespace

void count_launch(const char* kernel, unsigned long long threads) {
  std::lock_guard<std::mutex> lock(stats_mutex());
  KernelCount& k = stats_unlocked().kernels[kernel];
  ++k.launches;
  k.threads += threads;
  device_busy = true;
}

void count_launch_accesses(const char* kernel, const AccessCount& count) {
  std::lock_guard<std::mutex> lock(stats_mutex());
  AccessCount& total = stats_unlocked().kernels[kernel].accesses;
  total.moved_bytes += count.moved_bytes;
  total.read_bytes += count.read_bytes;
  total.written_bytes += count.written_bytes;
  total.tensor_flops += count.tensor_flops;
}

void count_library_call(const char* call, double flops, double bytes) {
  std::lock_guard<std::mutex> lock(stats_mutex());
  LibraryCount& l = stats_unlocked().library[call];
  ++l.calls;
  l.flops += flops;
  l.bytes += bytes;
  device_busy = true;
}

void count_allocation() {
  std::lock_guard<std::mutex> lock(stats_mutex());
  ++stats_unlocked().allocations;
}

void count_free() {
  std::lock_guard<std::mutex> lock(stats_mutex());
  ++stats_unlocked().frees;
}

void count_device_work() {
  std::lock_guard<std::mutex> lock(stats_mutex());
  device_busy = true;
}

void count_host_launch() {
  std::lock_guard<std::mutex> lock(stats_mutex());
  ++stats_unlocked().host_launches;
  device_busy = true;
}

void count_graph_launch() {
  std::lock_guard<std::mutex> lock(stats_mutex());
  ++stats_unlocked().graph_launches;
}

void count_host_sync() {
  std::lock_guard<std::mutex> lock(stats_mutex());
  if (!device_busy) return;  // waiting on an idle device again costs no round trip
  device_busy = false;
  ++stats_unlocked().host_syncs;
}

Stats stats() {
  std::lock_guard<std::mutex> lock(stats_mutex());
  Stats s = stats_unlocked();
  s.accesses_counted = access_counting();
  return s;
}

void write_stats(const char* path) {
  const Stats s = stats();
  std::FILE* f = std::fopen(path, "w");
  if (!f) {
    std::fprintf(stderr, "gum_cuda_emu: cannot write the stats file %s\n", path);
    return;
  }
  std::fprintf(f,
               "{\n  \"accesses_counted\": %s,\n  \"allocations\": %llu,\n  \"frees\": %llu,\n  \"host_syncs\": "
               "%llu,\n  \"host_launches\": %llu,\n  \"graph_launches\": %llu,\n  \"kernels\": {",
               s.accesses_counted ? "true" : "false", s.allocations, s.frees, s.host_syncs, s.host_launches,
               s.graph_launches);
  const char* sep = "\n";
  for (const auto& [name, k] : s.kernels) {
    const AccessCount& a = k.accesses;
    std::fprintf(f,
                 "%s    \"%s\": {\"launches\": %llu, \"threads\": %llu, \"moved_bytes\": %llu, \"read_bytes\": %llu, "
                 "\"written_bytes\": %llu, \"tensor_flops\": %.17g}",
                 sep, json_escape(name).c_str(), k.launches, k.threads, a.moved_bytes, a.read_bytes, a.written_bytes,
                 a.tensor_flops);
    sep = ",\n";
  }
  std::fprintf(f, "\n  },\n  \"library\": {");
  sep = "\n";
  for (const auto& [name, l] : s.library) {
    std::fprintf(f, "%s    \"%s\": {\"calls\": %llu, \"flops\": %.17g, \"bytes\": %.17g}", sep,
                 json_escape(name).c_str(), l.calls, l.flops, l.bytes);
    sep = ",\n";
  }
  std::fprintf(f, "\n  }\n}\n");
  std::fclose(f);
}

}  // namespace gum_emu
