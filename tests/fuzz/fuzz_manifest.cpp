// Fuzz target: the MANIFEST of a checkpoint. A real checkpoint (tiny tensors) is saved once;
// each input replaces its MANIFEST, then the checkpoint is verified and loaded as resume does.
#include "fuzz_util.h"
#include "gum/io/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string step_dir = [] {
    gum::CheckpointContents contents;
    contents.model.emplace("w", gum::HostTensor::from_f32({2, 3}, {1, 2, 3, 4, 5, 6}));
    contents.optimizer.emplace("m", gum::HostTensor::from_f32({2}, {7, 8}));
    contents.trainer = {{"step", 1}};
    return gum::save_checkpoint(gum_fuzz::scratch_dir() + "/checkpoints", 1, contents, 0);
  }();
  gum_fuzz::write_bytes(step_dir + "/MANIFEST", data, size);
  gum_fuzz::expect_accept_or_gum_error([&] { gum::load_checkpoint(step_dir); });
  return 0;
}
