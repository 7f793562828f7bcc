#pragma once
// What a training run of the byte-level RWKV language model is: the model, the data windows,
// the optimizer and its schedule. `run_config` is the part stored in every checkpoint (metadata
// "config") and compared on resume; its keys are a file-format contract (docs/train_rwkv.md).
#include <cstdint>
#include <nlohmann/json.hpp>

#include "linrec/models/rwkv_lm.hpp"
#include "linrec/tensor/device.hpp"

namespace linrec::train {

struct train_config {
  models::rwkv_lm_config model{.version = 6, .vocab = 256, .dim = 128, .layers = 2, .head_size = 32};
  std::int64_t ctx = 64;    // bytes per training window
  std::int64_t batch = 16;  // sequences per micro-batch
  std::int64_t accum = 1;   // micro-batches per optimizer step
  double lr = 3e-3;         // peak learning rate
  double min_lr_ratio = 0.1;
  std::int64_t warmup = 50;
  std::int64_t steps = 2000;  // length of the cosine schedule
  double weight_decay = 0.01;
  double clip = 1.0;  // global gradient-norm clip
  std::int64_t seed = 1;
  bool carry_state = false;  // rows read the text contiguously, state carried between steps
  std::int64_t eval_tokens = 65536;
  // Where the model and its gradients live. Only the CPU today: this is the seam the GPU
  // backend plugs into (tensors, ops and optimizer on the device), not a runtime switch yet.
  device on = cpu_device;
};

// The hyper-parameters a checkpoint records and a resume must match (keys and types are the
// checkpoint format "linrec.train_rwkv.v1": keep them).
inline nlohmann::json run_config(const train_config& c) {
  return {{"version", c.model.version},
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
          {"weight_decay", c.weight_decay}};
}

}  // namespace linrec::train
