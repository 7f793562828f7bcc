#pragma once
// What a training run of the byte-level RWKV language model is: the model, the data windows,
// the optimizer and its schedule. `run_config` is the part stored in every checkpoint (metadata
// "config") and compared on resume; its keys are a file-format contract (docs/train_rwkv.md).
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "linrec/models/rwkv_lm.hpp"
#include "linrec/tensor/device.hpp"

namespace linrec::train {

// The defaults are the README run's: the best validation loss found within its four minutes on
// 2 cores (docs/train_rwkv.md, "Defaults, measured"). Until 2026-12 they were RWKV-6, ctx 64,
// batch 16, 2000 steps (`--version 6 --ctx 64 --batch 16 --steps 2000` restores them).
struct train_config {
  models::rwkv_lm_config model{.version = 4, .vocab = 256, .dim = 128, .layers = 2, .head_size = 32};
  std::int64_t ctx = 256;  // bytes per training window
  std::int64_t batch = 4;  // sequences per micro-batch
  std::int64_t accum = 1;  // micro-batches per optimizer step
  double lr = 3e-3;        // peak learning rate
  double min_lr_ratio = 0.1;
  std::int64_t warmup = 50;
  std::int64_t steps = 8000;  // length of the cosine schedule
  double weight_decay = 0.01;
  double clip = 1.0;  // global gradient-norm clip
  std::int64_t seed = 1;
  bool carry_state = false;  // rows read the text contiguously, state carried between steps
  std::int64_t eval_tokens = 65536;
  // A content hash of the data the run trains and validates on (data_fingerprint below); empty:
  // not recorded. A resume on other data would silently leave the run's trajectory.
  std::string data;
  // Where the model, its gradients and the optimizer's state live: the CPU, or a CUDA device
  // when the program links the CUDA backends (linrec/cuda.cuh). Not part of run_config: a
  // checkpoint resumes on either (its tensors are host values).
  device on = cpu_device;
};

// The hyper-parameters a checkpoint records and a resume must match: every one that changes the
// trajectory. Keys and types are the checkpoint format "linrec.train_rwkv.v1": keep them; new
// keys may be added (listed in keys_added_to_run_config, so older checkpoints still resume).
inline nlohmann::json run_config(const train_config& c) {
  nlohmann::json config = {{"version", c.model.version},
                           {"dim", c.model.dim},
                           {"layers", c.model.layers},
                           {"head_size", c.model.head_size},
                           {"ctx", c.ctx},
                           {"batch", c.batch},
                           {"accum", c.accum},
                           {"lr", c.lr},
                           {"warmup", c.warmup},
                           {"steps", c.steps},
                           {"seed", c.seed},
                           {"carry_state", c.carry_state},
                           {"weight_decay", c.weight_decay},
                           {"clip", c.clip},
                           {"min_lr_ratio", c.min_lr_ratio}};
  if (!c.data.empty()) config["data"] = c.data;
  return config;
}

// Keys that checkpoints of the first release lack; such a checkpoint resumes with them unchecked.
inline const std::vector<std::string>& keys_added_to_run_config() {
  static const std::vector<std::string> keys{"clip", "min_lr_ratio", "data"};
  return keys;
}

// The fingerprint of a run's data: FNV-1a (64-bit) over the training split, then the validation
// split, each preceded by its length, as hex. Not cryptographic: it catches another file,
// another --val-fraction or an edited text, which is what a resume must refuse.
inline std::string data_fingerprint(std::span<const std::uint8_t> train, std::span<const std::uint8_t> validation) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  const auto mix = [&h](std::uint8_t byte) { h = (h ^ byte) * 0x100000001b3ull; };
  for (const auto part : {train, validation}) {
    for (int i = 0; i < 8; ++i) mix(std::uint8_t(std::uint64_t(part.size()) >> (8 * i)));
    for (const std::uint8_t byte : part) mix(byte);
  }
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
  return text;
}

}  // namespace linrec::train
