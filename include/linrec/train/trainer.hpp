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
// Data-parallel training: give the trainer a communicator of N ranks (dist/mpi.hpp under
// mpirun; the default is one process). Every rank builds the same trainer; the parameters are
// broadcast from rank 0 at construction and after restore; every step draws one global batch
// of N × batch × accum windows from the shared random stream and each rank trains on its
// part (micro-batch m of the global batch is the N ranks' micro-batches m side by side); the
// gradients are averaged over the ranks in buckets (dist/buckets.hpp) before clipping, so the
// clip and the update are those of the global batch. A run of N ranks × batch B therefore
// follows the trajectory of 1 rank × batch N·B (to rounding: the sums are grouped differently)
// and its checkpoints record the global batch: a resume may change N if N × batch is the same.
//
// Seams for what plugs in later: `hooks.reduce_gradients` runs after the all-reduce and before
// clipping; `train_config::on` names the device the model lives on.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <functional>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "linrec/dist/any_communicator.hpp"
#include "linrec/dist/buckets.hpp"
#include "linrec/io/checkpoint.hpp"
#include "linrec/io/text_data.hpp"
#include "linrec/models/rwkv_lm.hpp"
#include "linrec/optim/optim.hpp"
#include "linrec/train/train_config.hpp"

namespace linrec::train {

// The checkpoint format this trainer writes (metadata "format").
inline constexpr const char* checkpoint_format = "linrec.train_rwkv.v1";

struct trainer_hooks {
  // Called once per optimizer step with every parameter's accumulated gradient (averaged over
  // the ranks already when there are several).
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
  bool finite = true;  // false: the loss or the gradient norm was NaN/inf and no update was made
  // Wall time this rank spent in the step's collectives (the loss and the gradient all-reduce,
  // waiting for slower ranks included); 0 on one rank.
  double reduce_seconds = 0;
  double grad_norm = 0;  // global gradient norm before clipping (after the ranks' all-reduce)
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

  // `train_text` must outlive the trainer (the samplers read it in place). `config.batch` is
  // this rank's share of a micro-batch; with `comm` of N ranks a micro-batch has N × batch rows.
  trainer(const train_config& config, std::span<const std::uint8_t> train_text, cpu exec = {}, trainer_hooks hooks = {},
          dist::any_communicator comm = {})
      : config_(checked(config)),
        exec_(exec),
        hooks_(std::move(hooks)),
        comm_(std::move(comm)),
        ranks_(comm_.size()),
        rank_(comm_.rank()),
        init_(static_cast<std::uint64_t>(config.seed)),
        model_(config.model, init_),
        optimizer_(make_optimizer(model_, config)),
        schedule_{config.lr, config.warmup, config.steps, config.lr * config.min_lr_ratio},
        random_windows_(train_text, ranks_ * config.batch * config.accum, config.ctx,
                        static_cast<std::uint64_t>(config.seed)),
        streams_(train_text, ranks_ * config.batch * config.accum, config.ctx),
        carry_(static_cast<std::size_t>(config.accum)) {
    LINREC_CHECK(config_.on.is_cpu() || ranks_ == 1, "trainer: data-parallel training ("
                                                         << ranks_ << " ranks) runs on the CPU only; a model on "
                                                         << config_.on << " trains in one process");
    // The model is initialised on the host (the same numbers as a CPU run), then moved.
    move_parameters(model_.parameters(), config_.on);
    broadcast_parameters();
    make_shards();
  }

  const train_config& config() const { return config_; }
  const model_type& model() const { return model_; }
  model_type& model() { return model_; }
  const AdamW& optimizer() const { return optimizer_; }
  const progress_counters& progress() const { return progress_; }
  void set_seconds(double seconds) { progress_.seconds = seconds; }
  int ranks() const { return ranks_; }
  int rank() const { return rank_; }
  // Row groups of a micro-batch, each with its own gradient buffers (1: the ops' own threads),
  // and the threads that run them.
  int shards() const { return shards_; }
  int shard_threads() const { return shard_threads_; }
  // Rows of one global micro-batch (ranks × batch): what checkpoints record as "batch".
  std::int64_t global_batch() const { return std::int64_t(ranks_) * config_.batch; }
  // All-reduce calls the last step's gradient reduction made (its bucket count; 0 on one rank).
  std::size_t gradient_buckets() const { return reduce_.calls(); }

  // One optimizer step over the global batch (ranks × batch × accum windows); this rank trains on
  // its batch × accum of them. The loss returned is the global batch's (the same on every rank).
  step_result step() {
    const double lr = schedule_(progress_.step);
    optimizer_.set_lr(lr);
    const auto windows = config_.carry_state ? streams_.next() : random_windows_.next();
    const auto inputs = windows.inputs(), targets = windows.targets();
    const std::int64_t per_micro = config_.batch * config_.ctx;
    double loss = 0;
    for (std::int64_t m = 0; m < config_.accum; ++m) {
      // Global micro-batch m holds rows [m·N·B, (m+1)·N·B) of the global batch; this rank's
      // rows are the rank-th block of B of them.
      const std::int64_t first_row = m * global_batch(), own_row = first_row + std::int64_t(rank_) * config_.batch;
      const auto ids = std::span(inputs).subspan(std::size_t(own_row * config_.ctx), std::size_t(per_micro));
      const auto wanted = std::span(targets).subspan(std::size_t(own_row * config_.ctx), std::size_t(per_micro));
      // A row that wrapped around the end of the text starts a new document: the whole global
      // micro-batch restarts from the empty state (one state per micro-batch, not per row;
      // every rank sees every row, so the ranks decide alike).
      bool wrapped = false;
      for (std::int64_t r = 0; r < global_batch() && config_.carry_state; ++r)
        wrapped = wrapped || windows.wrapped[std::size_t(first_row + r)];
      auto& carried = carry_[std::size_t(m)];
      const model_type::state in = config_.carry_state && !wrapped ? carried : model_type::state{};
      if (shards_ > 1) {
        loss += sharded_micro_batch(ids, wanted) / double(config_.accum);
        continue;
      }
      Tape tape;
      auto [micro_loss, out] = model_.loss(tape, ids, wanted, config_.batch, config_.ctx, in, exec_);
      loss += micro_loss.item() / double(config_.accum);
      tape.backward(micro_loss, float(1.0 / double(config_.accum)));
      if (config_.carry_state) carried = out.detach();
    }
    if (shards_ > 1) gather_shard_gradients();
    const auto reduce_start = std::chrono::steady_clock::now();
    if (ranks_ > 1) {  // the global loss decides for every rank whether the step is taken
      double global[1] = {loss};
      comm_.all_reduce_mean(std::span<double>(global));
      loss = global[0];
    }
    const auto params = model_.parameters();
    if (!std::isfinite(loss)) {  // no update; a caller that skips the batch starts clean
      release_gradients(params);
      return {loss, lr, false};
    }
    // A parameter that received no gradient steps as with a zero one (and takes part in the
    // all-reduce as zeros: the ranks' buffers must line up).
    for (const auto& p : params)
      if (!p.grad().defined()) p.grad() = Tensor::zeros(p.value().shape(), p.value().where());
    reduce_gradients(params);
    const double reduce_seconds =
        ranks_ > 1 ? std::chrono::duration<double>(std::chrono::steady_clock::now() - reduce_start).count() : 0.0;
    if (hooks_.reduce_gradients) hooks_.reduce_gradients(params);
    // A finite loss can still come with an infinite gradient (an overflow in the backward); the
    // update would turn every parameter into NaN. The norm is computed after the all-reduce, so
    // every rank decides alike.
    const double norm = clip_grad_norm(params, config_.clip);
    if (!std::isfinite(norm)) {
      release_gradients(params);
      return {loss, lr, false, reduce_seconds, norm};
    }
    optimizer_.step();
    release_gradients(params);
    ++progress_.step;
    progress_.tokens += global_batch() * config_.accum * config_.ctx;
    return {loss, lr, true, reduce_seconds, norm};
  }

  // A hash of every parameter's bits (FNV-1a over names, shapes and values). Data-parallel
  // ranks must agree on it after every step: check_replicas() compares it across the ranks.
  std::uint64_t parameter_hash() const {
    std::uint64_t h = 0xcbf29ce484222325ull;
    const auto mix = [&h](const void* data, std::size_t bytes) {
      for (std::size_t i = 0; i < bytes; ++i) h = (h ^ static_cast<const unsigned char*>(data)[i]) * 0x100000001b3ull;
    };
    for (const auto& p : model_.parameters()) {
      mix(p.name().data(), p.name().size());
      for (const index_t d : p.value().shape()) mix(&d, sizeof d);
      mix(p.value().to(cpu_device).data(), std::size_t(p.value().numel()) * sizeof(float));
    }
    return h;
  }

  // Throws (on every rank) if any rank's parameters differ from rank 0's: a debugging check
  // of the data-parallel invariant, two small collectives.
  void check_replicas() {
    if (ranks_ == 1) return;
    const std::uint64_t own = parameter_hash();
    // The hash in two exactly representable halves, as the communicator moves floating point.
    double root[2] = {double(own >> 32), double(own & 0xffffffffu)};
    comm_.broadcast(std::span<double>(root), 0);
    double differs[1] = {root[0] == double(own >> 32) && root[1] == double(own & 0xffffffffu) ? 0.0 : 1.0};
    comm_.all_reduce_sum(std::span<double>(differs));
    LINREC_CHECK(differs[0] == 0, "data-parallel replicas diverged at step "
                                      << progress_.step << ": " << differs[0] << " of " << ranks_
                                      << " ranks hold parameters other than rank 0's");
  }

  // Mean loss (nats/byte) over the first eval_tokens of `validation`, in windows of ctx bytes
  // from the empty state, batch windows per forward. With several ranks each evaluates every
  // N-th group of windows and the sums are all-reduced: every rank returns the same value.
  double evaluate(std::span<const std::uint8_t> validation) {
    const std::int64_t windows =
        std::min<std::int64_t>(config_.eval_tokens, std::int64_t(validation.size()) - 1) / config_.ctx;
    LINREC_CHECK(windows > 0,
                 "validation split of " << validation.size() << " bytes is shorter than --ctx " << config_.ctx);
    // This rank's groups of `batch` windows; with shards, each thread takes whole groups (the
    // replicas share the parameters) and the sums are added in group order.
    std::vector<std::int64_t> groups;
    for (std::int64_t first = std::int64_t(rank_) * config_.batch; first < windows;
         first += std::int64_t(ranks_) * config_.batch)
      groups.push_back(first);
    std::vector<double> sums(groups.size(), 0.0);
    const auto group_loss = [&](std::size_t g, const model_type& model, cpu exec) {
      const std::int64_t first = groups[g], rows = std::min(config_.batch, windows - first);
      std::vector<std::int32_t> ids, targets;
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t t = 0; t < config_.ctx; ++t) {
          ids.push_back(validation[std::size_t((first + r) * config_.ctx + t)]);
          targets.push_back(validation[std::size_t((first + r) * config_.ctx + t + 1)]);
        }
      Tape tape(grad_mode::off);
      sums[g] = model.loss(tape, ids, targets, rows, config_.ctx, {}, exec).first.item() * double(rows);
    };
    if (shards_ > 1) {
      on_shards([&](int shard) {
        for (std::size_t g = std::size_t(shard); g < groups.size(); g += std::size_t(shards_))
          group_loss(g, shard_model(shard), cpu{1});
      });
    } else {
      for (std::size_t g = 0; g < groups.size(); ++g) group_loss(g, model_, exec_);
    }
    double total = 0;
    for (const double sum : sums) total += sum;
    if (ranks_ > 1) {
      double sum[1] = {total};
      comm_.all_reduce_sum(std::span<double>(sum));
      total = sum[0];
    }
    return total / double(windows);
  }

  // Mean loss (nats/byte) over the first eval_tokens of `validation` read as a recurrent model
  // reads text: the span is cut into S contiguous segments (S = the global batch, fewer if the
  // span is short), each read from the empty state in windows of ctx bytes with the state
  // carried from each window to the next. Only the first window of each segment starts cold,
  // where evaluate() restarts every ctx bytes. Scores S · ⌊span / (S·ctx)⌋ · ctx bytes; the
  // result does not depend on how the global batch is split among ranks.
  double evaluate_stateful(std::span<const std::uint8_t> validation) {
    const std::int64_t span = std::min<std::int64_t>(config_.eval_tokens, std::int64_t(validation.size()) - 1);
    LINREC_CHECK(span >= config_.ctx,
                 "validation split of " << validation.size() << " bytes is shorter than --ctx " << config_.ctx);
    const std::int64_t segments = std::min(global_batch(), span / config_.ctx);
    const std::int64_t windows = span / (segments * config_.ctx), length = windows * config_.ctx;
    const std::int64_t first = std::min(segments, std::int64_t(rank_) * config_.batch);
    const std::int64_t rows = std::min(segments, first + config_.batch) - first;  // this rank's segments
    double total = 0;
    if (rows > 0) {
      model_type::state carried;
      std::vector<std::int32_t> ids(std::size_t(rows * config_.ctx)), targets(ids.size());
      for (std::int64_t w = 0; w < windows; ++w) {
        for (std::int64_t r = 0; r < rows; ++r)
          for (std::int64_t t = 0; t < config_.ctx; ++t) {
            const std::size_t at = std::size_t((first + r) * length + w * config_.ctx + t);
            ids[std::size_t(r * config_.ctx + t)] = validation[at];
            targets[std::size_t(r * config_.ctx + t)] = validation[at + 1];
          }
        Tape tape(grad_mode::off);
        auto [loss, out] = model_.loss(tape, ids, targets, rows, config_.ctx, carried, exec_);
        total += loss.item() * double(rows);
        carried = std::move(out);
      }
    }
    if (ranks_ > 1) {
      double sum[1] = {total};
      comm_.all_reduce_sum(std::span<double>(sum));
      total = sum[0];
    }
    return total / double(segments * windows);
  }

  // Everything a resume needs: parameters, optimizer moments, counters, both samplers'
  // positions and the carried states, with the run configuration in the metadata ("batch" is
  // the global batch). Collective when states are carried over several ranks (their rows are
  // gathered): call it on every rank; one of them writes the file.
  io::tensor_file checkpoint() {
    io::tensor_file file;
    file.metadata = {{"format", checkpoint_format},
                     {"config", run_config(global_config()).dump()},
                     {"step", std::to_string(progress_.step)},
                     {"tokens", std::to_string(progress_.tokens)},
                     {"seconds", std::to_string(progress_.seconds)},
                     {"sampler.random", random_windows_.state()},
                     {"sampler.streams", streams_.state()}};
    io::add_parameters(file, model_.parameters(), "model.");
    io::add_optimizer_state(file, optimizer_.export_state(), "optim.");
    for (std::size_t m = 0; m < carry_.size(); ++m)
      for (const auto& [name, tensor] : carry_[m].tensors())
        io::add_tensor(file, carry_prefix(m) + name, gather_rows(tensor));
    return file;
  }

  // Continues the run a checkpoint holds. Every hyper-parameter of run_config must match
  // (the first difference is named; "batch" is compared as ranks × batch, so a run may resume
  // on another number of ranks with the same global batch); all metadata is read before
  // anything is restored. Returns the keys the checkpoint predates (not compared:
  // keys_added_to_run_config). Collective: every rank restores the same file.
  std::vector<std::string> restore(const io::tensor_file& file) {
    check_checkpoint(file);
    const auto stored = stored_config(file);
    const auto current = run_config(global_config());  // named: items() refers to it for the whole loop
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
      LINREC_CHECK(item.key() != "batch" || stored.at("batch") == item.value(),
                   "checkpoint was trained with a global batch of "
                       << stored.at("batch").dump() << " rows per micro-batch (ranks x --batch), this run has "
                       << ranks_ << " x " << config_.batch << " = " << item.value().dump());
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
        return t ? own_rows(Tensor::from_data(io::detail::shape_of(t->shape), std::span<const float>(t->data)),
                            carry_prefix(m) + name)
                       .to(config_.on)
                 : Tensor();
      });
    progress_ = saved;
    broadcast_parameters();  // a no-op when every rank read the same file; cheap insurance
    return unchecked;        // the replicas alias the parameters restored in place: nothing to redo
  }

 private:
  static std::string carry_prefix(std::size_t micro) { return "carry." + std::to_string(micro) + "."; }

  // Batch-parallel threads. A micro-batch's rows are split into `shards_` fixed groups (at
  // most max_shards, at least min_shard_rows rows each); group g runs its forward and backward on its
  // own tape with its own copy of the model, whose parameters alias model_'s values (read-only
  // during the pass) and whose gradients are its own; the groups' gradients are added into
  // model_'s in group order once per step. Threads take whole groups and the ops inside run on
  // one thread each. The groups depend on the batch alone, so the numbers do not depend on the
  // thread count (a run resumed with other --threads continues bitwise). This replaces
  // fine-grained threading inside every op (an OpenMP region and barrier per op, most of them
  // a few microseconds of work) with one region per micro-batch (docs/benchmarks.md).
  // Carried-state runs keep the op threads (their state rows would be split and joined every
  // window).
  static constexpr int max_shards = 8;
  // A group of one row makes every product a matrix-vector-like sliver: measured slower per
  // row than two (2 MPI ranks x batch 8: 17.7k bytes/s with 8 groups of 1 row each).
  static constexpr std::int64_t min_shard_rows = 2;

  void make_shards() {
    const int threads = exec_.threads > 0 ? exec_.threads : omp_get_max_threads();
    // On a device the whole micro-batch is one pass (its kernels are the parallelism).
    shards_ = config_.carry_state || !config_.on.is_cpu()
                  ? 1
                  : int(std::clamp<std::int64_t>(config_.batch / min_shard_rows, 1, max_shards));
    shard_threads_ = std::min(threads, shards_);
    rng scratch(0);
    for (int s = 1; s < shards_; ++s) {
      replicas_.emplace_back(config_.model, scratch);
      const auto mine = replicas_.back().parameters(), theirs = model_.parameters();
      for (std::size_t i = 0; i < mine.size(); ++i) mine[i].value() = theirs[i].value();
    }
  }
  const model_type& shard_model(int shard) const { return shard == 0 ? model_ : replicas_[std::size_t(shard - 1)]; }

  // body(shard) for every shard, on shard_threads_ threads (one OpenMP team: the ops' regions
  // inside run on one thread each); the first exception is rethrown after the team ends.
  template <class Body>
  void on_shards(Body&& body) {
    std::exception_ptr error;
#pragma omp parallel num_threads(shard_threads_)
    {
      // This team's threads' own setting (it ends with the region): any OpenMP region or Eigen
      // product an op starts inside runs on this one thread, also when the team has only one
      // (a region of one thread does not make the ones inside it single-threaded by itself).
      omp_set_num_threads(1);
      for (int shard = omp_get_thread_num(); shard < shards_; shard += omp_get_num_threads()) {
        try {
          body(shard);
        } catch (...) {
#pragma omp critical(linrec_trainer_shard_error)
          if (!error) error = std::current_exception();
        }
      }
    }
    if (error) std::rethrow_exception(error);
  }

  // One micro-batch split by rows among the shards; returns its mean loss. Each shard's
  // backward is weighted by its share of the rows, so the summed gradient is the micro-batch
  // mean's (÷ accum, as the unsharded step).
  double sharded_micro_batch(std::span<const std::int32_t> ids, std::span<const std::int32_t> targets) {
    std::vector<double> losses(std::size_t(shards_), 0.0);
    on_shards([&](int shard) {
      const std::int64_t first = config_.batch * shard / shards_, last = config_.batch * (shard + 1) / shards_;
      const std::int64_t rows = last - first;
      const auto part = [&](std::span<const std::int32_t> all) {
        return all.subspan(std::size_t(first * config_.ctx), std::size_t(rows * config_.ctx));
      };
      Tape tape;
      auto [shard_loss, out] = shard_model(shard).loss(tape, part(ids), part(targets), rows, config_.ctx, {}, cpu{1});
      const double share = double(rows) / double(config_.batch);
      losses[std::size_t(shard)] = shard_loss.item() * share;
      tape.backward(shard_loss, float(share / double(config_.accum)));
    });
    for (int stride = 1; stride < shards_; stride *= 2)  // the same tree as the gradients'
      for (int g = 0; g + stride < shards_; g += 2 * stride) losses[std::size_t(g)] += losses[std::size_t(g + stride)];
    return losses[0];
  }

  // model_'s gradients ← the sum of every group's, added as a binary tree (group g absorbs group
  // g + stride for stride 1, 2, 4, …); the replicas' are zeroed. A tree, not a running sum: N
  // ranks whose groups are the leaves of one process's tree, with shares that are powers of
  // two, then make that process's additions exactly (2 ranks × batch 8 = 1 × batch 16 bit for
  // bit, docs/distributed.md).
  // An absent gradient counts as zero: it takes the other's tensor (0 + x = x) instead of
  // adding. Parameters are independent, so each level's additions are split over the threads.
  void gather_shard_gradients() {
    const auto params = model_.parameters();
    std::vector<std::vector<Parameter>> groups{params};
    for (auto& replica : replicas_) groups.push_back(replica.parameters());
    const auto count = static_cast<std::int64_t>(params.size());
    for (int stride = 1; stride < shards_; stride *= 2)
#pragma omp parallel for schedule(dynamic, 1) num_threads(shard_threads_)
      for (std::int64_t i = 0; i < count; ++i)
        for (int g = 0; g + stride < shards_; g += 2 * stride) {
          auto& from = groups[std::size_t(g + stride)][std::size_t(i)].grad();
          if (!from.defined()) continue;
          auto& into = groups[std::size_t(g)][std::size_t(i)].grad();
          if (!into.defined()) {
            into = std::exchange(from, Tensor{});
            continue;
          }
          float* a = into.data();
          const float* b = from.data();
          const index_t n = from.numel();
          for (index_t k = 0; k < n; ++k) a[k] += b[k];
        }
    for (auto& replica : replicas_) release_gradients(replica.parameters());
  }

  // Gradients are dropped after a step, not zero-filled (PyTorch's zero_grad(set_to_none)):
  // the next backward writes fresh buffers from the host cache instead of adding to zeros.
  static void release_gradients(const std::vector<Parameter>& params) {
    for (const auto& p : params) p.grad() = Tensor{};
  }

  // The configuration as checkpoints record it: one micro-batch of all the ranks' rows.
  train_config global_config() const {
    train_config global = config_;
    global.batch = global_batch();
    return global;
  }

  // Rank 0's parameters on every rank (initialisation or restore must not leave replicas apart).
  void broadcast_parameters() {
    if (ranks_ == 1) return;
    for (const auto& p : model_.parameters())
      comm_.broadcast(std::span<float>(p.value().data(), std::size_t(p.value().numel())), 0);
  }

  // Every gradient (all defined by now) ← its mean over the ranks, in buckets.
  void reduce_gradients(const std::vector<Parameter>& params) {
    if (ranks_ == 1) return;
    std::vector<std::span<float>> grads;
    grads.reserve(params.size());
    for (const auto& p : params) grads.emplace_back(p.grad().data(), std::size_t(p.grad().numel()));
    reduce_.mean(comm_, std::span<const std::span<float>>(grads));
  }

  // A carried state's rows are the micro-batch's rows: this rank holds rows [rank·B, (rank+1)·B)
  // of the global micro-batch's N·B. gather_rows assembles the global tensor on every rank
  // (a sum of zero-padded copies: one all-reduce, at checkpoints only); own_rows takes this
  // rank's block back out of it.
  Tensor gather_rows(const Tensor& local) {
    if (ranks_ == 1) return local;
    Shape shape = local.shape();
    shape[0] *= ranks_;
    Tensor global = Tensor::zeros(shape);
    const std::size_t block = std::size_t(local.numel());
    std::copy_n(local.data(), block, global.data() + std::size_t(rank_) * block);
    comm_.all_reduce_sum(std::span<float>(global.data(), std::size_t(global.numel())));
    return global;
  }
  Tensor own_rows(const Tensor& global, const std::string& name) const {
    if (ranks_ == 1) return global;
    LINREC_CHECK(global.rank() >= 1 && global.shape()[0] == global_batch(),
                 "checkpoint: carried state '" << name << "' has shape " << global.shape() << ", expected "
                                               << global_batch() << " rows (ranks x --batch) first");
    Shape shape = global.shape();
    shape[0] = config_.batch;
    const std::size_t block = std::size_t(shape.numel());
    return Tensor::from_data(shape, std::span<const float>(global.data() + std::size_t(rank_) * block, block));
  }

  static const train_config& checked(const train_config& c) {
    LINREC_CHECK(c.on.is_cpu() || cuda_available(),
                 "trainer: the model was asked to live on " << c.on << ", but this program was built without CUDA");
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
  dist::any_communicator comm_;
  int ranks_, rank_;
  dist::bucketed_all_reduce<float> reduce_;
  rng init_;
  model_type model_;
  AdamW optimizer_;
  warmup_cosine schedule_;
  io::random_window_sampler random_windows_;
  io::contiguous_sampler streams_;
  std::vector<model_type::state> carry_;
  progress_counters progress_;
  int shards_ = 1, shard_threads_ = 1;
  std::vector<model_type> replicas_;  // shards 1.. (shard 0 is model_)
};

}  // namespace linrec::train
