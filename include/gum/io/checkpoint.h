#pragma once
// Checkpoints (docs/design.md §4):
//   CKPT_DIR/step_000100/model.safetensors      weights, Hugging Face LLaMA tensor names
//   CKPT_DIR/step_000100/optimizer.safetensors  every tensor of the optimizer's state
//   CKPT_DIR/step_000100/trainer.json           step, tokens, loader position, RNG seeds, world size, config
//   CKPT_DIR/step_000100/MANIFEST               size and CRC-32 of every file above
//   CKPT_DIR/latest                             name of the newest complete step folder
// A checkpoint is written into a hidden temporary folder, every file is fsynced, the folder
// is renamed into place and `latest` is replaced last (write + rename), so a crash at any
// moment leaves the previous checkpoint intact and never a half-written one under a step name.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "gum/core/tensor.h"

namespace gum {

struct CheckpointContents {
  TensorMap model;
  TensorMap optimizer;
  nlohmann::json trainer;
};

// "step_000100".
std::string checkpoint_folder_name(int64_t step);

// Writes CKPT_DIR/step_NNNNNN atomically (see above), then deletes the oldest step folders so
// that at most keep_last remain (keep_last <= 0 keeps all). Returns the new folder's path.
std::string save_checkpoint(const std::string& ckpt_dir, int64_t step, const CheckpointContents& contents,
                            int keep_last);

// Deletes what an interrupted or failed save left in CKPT_DIR (.tmp_step_* folders,
// .latest.tmp), so that their space is free again; a step folder moved aside (.old_step_*) goes
// back to its name unless that name holds a complete folder again. Only for the run's single writer.
void remove_partial_checkpoints(const std::string& ckpt_dir);

// Checks every file listed in STEP_DIR/MANIFEST (present, size, CRC-32) and that the manifest
// lists the three checkpoint files. Throws a runtime error naming the first bad file.
void verify_checkpoint(const std::string& step_dir);

// Verifies, then reads all three files.
CheckpointContents load_checkpoint(const std::string& step_dir);

// Reads only trainer.json (no verification): what `eval` and `export` need besides the weights.
nlohmann::json read_checkpoint_trainer_state(const std::string& step_dir);

// Complete step folders of CKPT_DIR (renamed into place), newest first: (step, path).
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& ckpt_dir);

// The newest checkpoint of CKPT_DIR that verifies; each newer one that fails is reported with
// a warning and skipped. "" when there is none.
std::string find_resume_checkpoint(const std::string& ckpt_dir);

// Accepts either a step folder or a CKPT_DIR (then its newest valid checkpoint). Throws a
// usage error naming `option` and `path` when it holds no checkpoint.
std::string resolve_checkpoint_path(const std::string& path, const std::string& option = "--checkpoint");

// CRC-32 (IEEE 802.3 polynomial, as zlib and PNG) of a file's bytes; `size` receives its length.
uint32_t file_crc32(const std::string& path, uint64_t* size = nullptr);

}  // namespace gum
