#pragma once
// Emulator controls for tests and tools; kernels and the backend never need them.
#include <string>

namespace gum_emu {

// "forward", "reverse" or "random[:SEED]": the order in which blocks run and in which the runnable
// fibers of a block are resumed between synchronisation points. The default comes from the
// environment variable GUM_CUDA_EMU_SCHEDULE (forward when unset); an invalid spec throws
// std::invalid_argument.
void set_schedule(const std::string& spec);
std::string schedule();

// The message of the last error a launch raised (empty if none): kernel, block, thread, source line.
std::string last_error_message();

}  // namespace gum_emu
