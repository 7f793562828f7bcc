#pragma once
// The training loop of the byte-level RWKV language model as a library piece: build (or
// restore from a checkpoint), step (micro-batches + gradient accumulation + clip + AdamW),
// evaluate, checkpoint. examples/train_rwkv.cpp is a thin command line over it; a resumed
// trainer continues the identical trajectory (bitwise: tests/test_train.cpp).
//
//   linrec::train::trainer t(config, split.train);
//   if (resuming) t.restore(io::load_safetensors(path));
//   while (t.progress().step < config.steps) {
//     auto r = t.step();                       // r.loss: mean over the micro-batches
//     if (!r.finite) break;                    // nothing was updated
//   }
//   io::save_safetensors(path, t.checkpoint());
//
// Seams for what plugs in later: `hooks.reduce_gradients` runs after accumulation and before
// clipping (a data-parallel run all-reduces the gradients there, so the clip and the update
// see the global batch); `train_config::on` names the device the model lives on.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "linrec/io/checkpoint.hpp"
#include "linrec/io/text_data.hpp"
#include "linrec/models/rwkv_lm.hpp"
#include "linrec/optim/optim.hpp"
#include "linrec/train/train_config.hpp"

namespace linrec::train {

// The checkpoint format this trainer writes (metadata "format").
inline constexpr const char* checkpoint_format = "linrec.train_rwkv.v1";

struct trainer_hooks {
  // Called once per optimizer step with every parameter's accumulated gradient.
  std::function<void(const std::vector<Parameter>&)> reduce_gradients;
};

struct progress_counters {
  std::int64_t step = 0;    // optimizer steps done
  std::int64_t tokens = 0;  // training tokens seen
  double seconds = 0;       // training time, kept by the caller (wall clock is not the trainer's)
};

struct step_result {
  double loss = 0;     // mean training loss of the step (nats/token)
  double lr = 0;       // learning rate the step used
  bool finite = true;  // false: the loss was NaN/inf and no update was made
};

// The run configuration stored in a checkpoint, with the model fields checked.
inline nlohmann::json stored_config(const io::tensor_file& file) {
  const auto config = nlohmann::json::parse(io::metadata_string(file, "config"), nullptr, /*allow_exceptions=*/false);
  LINREC_CHECK(config.is_object(), "checkpoint: metadata 'config' is not a JSON object");
  for (const char* key : {"version", "dim", "layers", "head_size"})
    LINREC_CHECK(config.contains(key) && config.at(key).is_number_integer(),
                 "checkpoint: metadata 'config' lacks the integer '" << key << "'");
  return config;
}

// The model a checkpoint holds (for sampling from it without knowing its flags).
inline models::rwkv_lm_config stored_model_config(const io::tensor_file& file) {
  const auto config = stored_config(file);
  models::rwkv_lm_config model;
  model.version = config.at("version").get<int>();
  model.dim = config.at("dim").get<index_t>();
  model.layers = config.at("layers").get<index_t>();
  model.head_size = config.at("head_size").get<index_t>();
  return model;
}

// Everything a checkpoint of this trainer must satisfy before anything is built from it: the
// format, the model configuration in range (a crafted "layers": 1000000 must not allocate), the
// counters non-negative and consistent with each other and the configuration, and the model
// tensors present with the shapes that configuration implies. Errors say what is wrong; the
// caller adds the file's path.
inline void check_checkpoint(const io::tensor_file& file) {
  const std::string& format = io::metadata_string(file, "format");
  LINREC_CHECK(format == checkpoint_format,
               "checkpoint: format '" << io::detail::printable(format) << "', expected '" << checkpoint_format << "'");
  const auto config = stored_config(file);
  const auto model = stored_model_config(file);
  LINREC_CHECK(model.version == 4 || model.version == 6,
               "checkpoint: config version " << model.version << " is not 4 or 6");
  LINREC_CHECK(model.dim >= 1 && model.dim <= 65536,
               "checkpoint: config dim " << model.dim << " is outside [1, 65536]");
  LINREC_CHECK(model.layers >= 1 && model.layers <= 1024,
               "checkpoint: config layers " << model.layers << " is outside [1, 1024]");
  LINREC_CHECK(model.version == 4 || (model.head_size >= 1 && model.dim % model.head_size == 0),
               "checkpoint: config head_size " << model.head_size << " does not divide dim " << model.dim);
  const auto positive = [&](const char* key) {
    LINREC_CHECK(
        !config.contains(key) || (config.at(key).is_number_integer() && config.at(key).get<std::int64_t>() >= 1 &&
                                  config.at(key).get<std::int64_t>() <= (std::int64_t(1) << 32)),
        "checkpoint: config " << key << " = " << config.value(key, nlohmann::json()).dump()
                              << " is not a positive integer");
  };
  for (const char* key : {"ctx", "batch", "accum"}) positive(key);
  const std::int64_t step = io::metadata_integer(file, "step"), tokens = io::metadata_integer(file, "tokens");
  const std::int64_t optim_step = io::metadata_integer(file, "optim.step");
  const double seconds = io::metadata_real(file, "seconds");
  LINREC_CHECK(step >= 0 && step <= (std::int64_t(1) << 40), "checkpoint: step " << step << " is out of range");
  LINREC_CHECK(optim_step == step, "checkpoint: optim.step " << optim_step << " differs from step " << step);
  if (config.contains("ctx") && config.contains("batch") && config.contains("accum")) {
    const std::int64_t per_step =
        config["ctx"].get<std::int64_t>() * config["batch"].get<std::int64_t>() * config["accum"].get<std::int64_t>();
    LINREC_CHECK(tokens == step * per_step,
                 "checkpoint: tokens " << tokens << " is not step " << step << " x " << per_step << " tokens per step");
  }
  LINREC_CHECK(seconds >= 0 && seconds <= 1e9, "checkpoint: seconds " << seconds << " is outside [0, 1e9]");
  const auto expect_shape = [&](const std::string& name, const Shape& shape) {
    const io::named_tensor* t = file.find(name);
    LINREC_CHECK(t != nullptr, "checkpoint: no tensor '" << name << "' (config: " << model.layers << " layers)");
    LINREC_CHECK(io::detail::shape_of(t->shape) == shape, "checkpoint: tensor '" << name << "' has shape "
                                                                                 << io::detail::shape_of(t->shape)
                                                                                 << ", the config implies " << shape);
  };
  expect_shape("model.emb.weight", Shape{model.vocab, model.dim});
  expect_shape("model.head.weight", Shape{model.dim, model.vocab});
  expect_shape("model.blocks." + std::to_string(model.layers - 1) + ".ln1.weight", Shape{model.dim});
  LINREC_CHECK(file.find("model.blocks." + std::to_string(model.layers) + ".ln1.weight") == nullptr,
               "checkpoint: it holds more blocks than its config's " << model.layers << " layers");
}

class trainer {
 public:
  using model_type = models::rwkv_lm<float>;

  // `train_text` must outlive the trainer (the samplers read it in place).
  trainer(const train_config& config, std::span<const std::uint8_t> train_text, cpu exec = {}, trainer_hooks hooks = {})
      : config_(checked(config)),
        exec_(exec),
        hooks_(std::move(hooks)),
        init_(static_cast<std::uint64_t>(config.seed)),
        model_(config.model, init_),
        optimizer_(make_optimizer(model_, config)),
        schedule_{config.lr, config.warmup, config.steps, config.lr * config.min_lr_ratio},
        random_windows_(train_text, config.batch * config.accum, config.ctx, static_cast<std::uint64_t>(config.seed)),
        streams_(train_text, config.batch * config.accum, config.ctx),
        carry_(static_cast<std::size_t>(config.accum)) {}

  const train_config& config() const { return config_; }
  const model_type& model() const { return model_; }
  model_type& model() { return model_; }
  const AdamW& optimizer() const { return optimizer_; }
  const progress_counters& progress() const { return progress_; }
  void set_seconds(double seconds) { progress_.seconds = seconds; }

  // One optimizer step over batch × accum windows.
  step_result step() {
    const double lr = schedule_(progress_.step);
    optimizer_.set_lr(lr);
    const auto windows = config_.carry_state ? streams_.next() : random_windows_.next();
    const auto inputs = windows.inputs(), targets = windows.targets();
    const std::int64_t per_micro = config_.batch * config_.ctx;
    double loss = 0;
    for (std::int64_t m = 0; m < config_.accum; ++m) {
      const auto ids = std::span(inputs).subspan(std::size_t(m * per_micro), std::size_t(per_micro));
      const auto wanted = std::span(targets).subspan(std::size_t(m * per_micro), std::size_t(per_micro));
      // A row that wrapped around the end of the text starts a new document: the whole
      // micro-batch restarts from the empty state (one state per micro-batch, not per row).
      bool wrapped = false;
      for (std::int64_t r = 0; r < config_.batch && config_.carry_state; ++r)
        wrapped = wrapped || windows.wrapped[std::size_t(m * config_.batch + r)];
      auto& carried = carry_[std::size_t(m)];
      const model_type::state in = config_.carry_state && !wrapped ? carried : model_type::state{};
      Tape tape;
      auto [micro_loss, out] = model_.loss(tape, ids, wanted, config_.batch, config_.ctx, in, exec_);
      loss += micro_loss.item() / double(config_.accum);
      tape.backward(micro_loss, float(1.0 / double(config_.accum)));
      if (config_.carry_state) carried = out.detach();
    }
    if (!std::isfinite(loss)) return {loss, lr, false};
    const auto params = model_.parameters();
    if (hooks_.reduce_gradients) hooks_.reduce_gradients(params);
    clip_grad_norm(params, config_.clip);
    optimizer_.step();
    optimizer_.zero_grad();
    ++progress_.step;
    progress_.tokens += config_.batch * config_.accum * config_.ctx;
    return {loss, lr, true};
  }

  // Mean loss (nats/byte) over the first eval_tokens of `validation`, in windows of ctx bytes
  // from the empty state, batch windows per forward.
  double evaluate(std::span<const std::uint8_t> validation) const {
    const std::int64_t windows =
        std::min<std::int64_t>(config_.eval_tokens, std::int64_t(validation.size()) - 1) / config_.ctx;
    LINREC_CHECK(windows > 0,
                 "validation split of " << validation.size() << " bytes is shorter than --ctx " << config_.ctx);
    double total = 0;
    for (std::int64_t first = 0; first < windows; first += config_.batch) {
      const std::int64_t rows = std::min(config_.batch, windows - first);
      std::vector<std::int32_t> ids, targets;
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t t = 0; t < config_.ctx; ++t) {
          ids.push_back(validation[std::size_t((first + r) * config_.ctx + t)]);
          targets.push_back(validation[std::size_t((first + r) * config_.ctx + t + 1)]);
        }
      Tape tape(grad_mode::off);
      total += model_.loss(tape, ids, targets, rows, config_.ctx, {}, exec_).first.item() * double(rows);
    }
    return total / double(windows);
  }

  // Everything a resume needs: parameters, optimizer moments, counters, both samplers'
  // positions and the carried states, with the run configuration in the metadata.
  io::tensor_file checkpoint() const {
    io::tensor_file file;
    file.metadata = {{"format", checkpoint_format},
                     {"config", run_config(config_).dump()},
                     {"step", std::to_string(progress_.step)},
                     {"tokens", std::to_string(progress_.tokens)},
                     {"seconds", std::to_string(progress_.seconds)},
                     {"sampler.random", random_windows_.state()},
                     {"sampler.streams", streams_.state()}};
    io::add_parameters(file, model_.parameters(), "model.");
    io::add_optimizer_state(file, optimizer_.export_state(), "optim.");
    for (std::size_t m = 0; m < carry_.size(); ++m)
      for (const auto& [name, tensor] : carry_[m].tensors()) io::add_tensor(file, carry_prefix(m) + name, tensor);
    return file;
  }

  // Continues the run a checkpoint holds. Every hyper-parameter of run_config must match
  // (the first difference is named); all metadata is read before anything is restored. Returns
  // the keys the checkpoint predates (not compared: keys_added_to_run_config).
  std::vector<std::string> restore(const io::tensor_file& file) {
    check_checkpoint(file);
    const auto stored = stored_config(file);
    const auto current = run_config(config_);  // named: items() refers to it for the whole loop
    const auto& added = keys_added_to_run_config();
    std::vector<std::string> unchecked;
    for (const auto& item : current.items()) {
      if (!stored.contains(item.key()) && std::find(added.begin(), added.end(), item.key()) != added.end()) {
        unchecked.push_back(item.key());
        continue;
      }
      LINREC_CHECK(item.key() != "data" || stored.at("data") == item.value(),
                   "checkpoint was trained on other data (content hash " << stored.at("data").dump() << ", this run's "
                                                                         << item.value().dump()
                                                                         << "): --data or --val-fraction differ");
      LINREC_CHECK(stored.contains(item.key()) && stored.at(item.key()) == item.value(),
                   "checkpoint was trained with "
                       << item.key() << " = " << stored.value(item.key(), nlohmann::json()).dump() << ", this run has "
                       << item.value().dump());
    }
    const progress_counters saved{io::metadata_integer(file, "step"), io::metadata_integer(file, "tokens"),
                                  io::metadata_real(file, "seconds")};
    const std::string& random_state = io::metadata_string(file, "sampler.random");
    const std::string& streams_state = io::metadata_string(file, "sampler.streams");
    auto optimizer_state = io::optimizer_state_from(file, "optim.");
    io::restore_parameters(file, model_.parameters(), "model.");
    optimizer_.import_state(optimizer_state);
    random_windows_.set_state(random_state);
    streams_.set_state(streams_state);
    for (std::size_t m = 0; m < carry_.size(); ++m)
      carry_[m] = model_.state_from([&](const std::string& name) {
        const io::named_tensor* t = file.find(carry_prefix(m) + name);
        return t ? Tensor::from_data(io::detail::shape_of(t->shape), std::span<const float>(t->data)) : Tensor();
      });
    progress_ = saved;
    return unchecked;
  }

 private:
  static std::string carry_prefix(std::size_t micro) { return "carry." + std::to_string(micro) + "."; }

  static const train_config& checked(const train_config& c) {
    LINREC_CHECK(c.on.is_cpu(), "trainer: the model can live on the CPU only (asked for " << c.on << ")");
    LINREC_CHECK(c.ctx > 0 && c.batch > 0 && c.accum > 0, "trainer: ctx, batch and accum must be > 0");
    LINREC_CHECK(c.steps >= 0 && c.warmup >= 0, "trainer: steps and warmup must be >= 0");
    return c;
  }

  // AdamW with no weight decay on norms, biases, time_* parameters and the embedding (as RWKV-LM).
  static AdamW make_optimizer(const model_type& model, const train_config& c) {
    std::vector<Parameter> decay, no_decay;
    for (const auto& p : model.parameters()) {
      const bool matrix =
          p.value().rank() >= 2 && p.name().find("time_") == std::string::npos && p.name() != "emb.weight";
      (matrix ? decay : no_decay).push_back(p);
    }
    return AdamW({ParamGroup(decay), ParamGroup(no_decay, 0.0)},
                 {.lr = c.lr, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = c.weight_decay});
  }

  train_config config_;
  cpu exec_;
  trainer_hooks hooks_;
  rng init_;
  model_type model_;
  AdamW optimizer_;
  warmup_cosine schedule_;
  io::random_window_sampler random_windows_;
  io::contiguous_sampler streams_;
  std::vector<model_type::state> carry_;
  progress_counters progress_;
};

}  // namespace linrec::train
