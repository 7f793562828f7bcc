// train_rwkv: train a byte-level RWKV language model on a text file, checkpoint it, resume
// it to the identical trajectory, and sample from it in recurrent mode.
//
//   train_rwkv --max-seconds 240 --ckpt run --sample 300 --prompt "The "
//   train_rwkv --ckpt run --steps 0 --sample 500 --temperature 0.8     # sample only
//
// Effective batch = --batch × --accum sequences of --ctx bytes per optimizer step.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "linrec/io/checkpoint.hpp"
#include "linrec/io/metrics_log.hpp"
#include "linrec/io/progress.hpp"
#include "linrec/io/text_data.hpp"
#include "linrec/models/rwkv_lm.hpp"
#include "linrec/optim/optim.hpp"

namespace {

using namespace linrec;
using model_type = models::rwkv_lm<float>;
using json = nlohmann::json;

struct options {
  std::string data, log, ckpt, prompt = "\n", device = "cpu";
  double val_fraction = 0.05, lr = 3e-3, min_lr_ratio = 0.1, weight_decay = 0.01, clip = 1.0, max_seconds = 0;
  double temperature = 0.8, top_p = 0.9;
  models::rwkv_lm_config model{.version = 6, .vocab = 256, .dim = 128, .layers = 2, .head_size = 32};
  std::int64_t ctx = 64, batch = 16, accum = 1, warmup = 50, steps = 2000, eval_every = 100, eval_tokens = 65536;
  std::int64_t ckpt_every = 200, sample = 0, seed = 1, stop_at = 0;
  int threads = 0;
  bool resume = false, carry_state = false;
};

// Hyper-parameters that must match for a checkpoint to continue the same run.
json run_config(const options& o) {
  return {{"version", o.model.version}, {"dim", o.model.dim}, {"layers", o.model.layers},
          {"head_size", o.model.head_size}, {"ctx", o.ctx}, {"batch", o.batch}, {"accum", o.accum},
          {"lr", o.lr}, {"warmup", o.warmup}, {"steps", o.steps}, {"seed", o.seed},
          {"carry_state", o.carry_state}, {"weight_decay", o.weight_decay}};
}

// AdamW with no weight decay on norms, biases, time_* parameters and the embedding.
AdamW make_optimizer(const model_type& model, const options& o) {
  std::vector<Parameter> decay, no_decay;
  for (const auto& p : model.parameters()) {
    const bool matrix = p.value().rank() >= 2 && p.name().find("time_") == std::string::npos && p.name() != "emb.weight";
    (matrix ? decay : no_decay).push_back(p);
  }
  return AdamW({ParamGroup(decay), ParamGroup(no_decay, 0.0)},
               {.lr = o.lr, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = o.weight_decay});
}

// Mean loss (nats/byte) over the first eval_tokens of the validation split, in fixed windows.
double validation_loss(const model_type& model, std::span<const std::uint8_t> val, const options& o, cpu exec) {
  const std::int64_t windows = std::min<std::int64_t>(o.eval_tokens, std::int64_t(val.size()) - 1) / o.ctx;
  LINREC_CHECK(windows > 0, "validation split of " << val.size() << " bytes is shorter than --ctx " << o.ctx);
  double total = 0;
  for (std::int64_t first = 0; first < windows; first += o.batch) {
    const std::int64_t rows = std::min(o.batch, windows - first);
    std::vector<std::int32_t> ids, targets;
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t t = 0; t < o.ctx; ++t) {
        ids.push_back(val[(first + r) * o.ctx + t]);
        targets.push_back(val[(first + r) * o.ctx + t + 1]);
      }
    Tape tape(grad_mode::off);
    total += model.loss(tape, ids, targets, rows, o.ctx, {}, exec).first.item() * double(rows);
  }
  return total / double(windows);
}

// Recurrent generation: feed the prompt, then sample with temperature and nucleus (top-p).
std::string generate(const model_type& model, const options& o, cpu exec) {
  rng gen(static_cast<std::uint64_t>(o.seed) + 7);
  model_type::state state;
  auto ids = io::byte_tokenizer::encode(o.prompt.empty() ? std::string("\n") : o.prompt);
  Tensor logits;
  for (auto id : ids) logits = model.step(std::span(&id, 1), state, exec);
  std::vector<std::int32_t> out;
  std::vector<std::pair<double, int>> probs(256);
  for (std::int64_t i = 0; i < o.sample; ++i) {
    double peak = -1e30, total = 0;
    for (int v = 0; v < 256; ++v) peak = std::max(peak, double(logits.at({0, v})) / o.temperature);
    for (int v = 0; v < 256; ++v) total += probs[v].first = std::exp(double(logits.at({0, v})) / o.temperature - peak);
    for (int v = 0; v < 256; ++v) probs[v] = {probs[v].first / total, v};
    std::sort(probs.begin(), probs.end(), std::greater<>());
    double mass = 0, kept = 0;
    std::size_t cut = 0;
    while (cut < probs.size() && mass < o.top_p) mass += probs[cut++].first;
    double u = gen.uniform() * mass;
    std::int32_t next = probs[0].second;
    for (std::size_t k = 0; k < cut; ++k)
      if ((kept += probs[k].first) >= u) {
        next = probs[k].second;
        break;
      }
    out.push_back(next);
    logits = model.step(std::span(&next, 1), state, exec);
  }
  return o.prompt + io::byte_tokenizer::decode(out);
}

// Every sampled byte, a zero byte included (printf's %s would stop there), then a newline.
void print_sample(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
}

// The run configuration stored in a checkpoint, as JSON with the fields run_config writes.
json stored_config(const io::tensor_file& file) {
  const json config = json::parse(io::metadata_string(file, "config"), nullptr, /*allow_exceptions=*/false);
  LINREC_CHECK(config.is_object(), "checkpoint: metadata 'config' is not a JSON object");
  for (const char* key : {"version", "dim", "layers", "head_size"})
    LINREC_CHECK(config.contains(key) && config.at(key).is_number_integer(),
                 "checkpoint: metadata 'config' lacks the integer '" << key << "'");
  return config;
}

std::filesystem::path checkpoint_path(const options& o) { return std::filesystem::path(o.ckpt) / "latest.safetensors"; }

struct progress_counters {
  std::int64_t step = 0, tokens = 0;
  double seconds = 0;
};

// Carried recurrent states (one per micro-batch) as tensors "carry.<micro>.<block>.<field>".
void add_carry(io::tensor_file& file, const std::vector<model_type::state>& carry) {
  for (std::size_t m = 0; m < carry.size(); ++m)
    for (std::size_t l = 0; l < carry[m].size(); ++l) {
      const auto& s = carry[m][l];
      const std::string p = "carry." + std::to_string(m) + "." + std::to_string(l) + ".";
      const std::pair<const char*, const Var*> fields[] = {{"tm4.prev_x", &s.tm_v4.prev_x}, {"tm4.num", &s.tm_v4.num},
                                                           {"tm4.den", &s.tm_v4.den},       {"cm4.prev_x", &s.cm_v4.prev_x},
                                                           {"tm6.prev_x", &s.tm_v6.prev_x}, {"tm6.wkv", &s.tm_v6.wkv},
                                                           {"cm6.prev_x", &s.cm_v6.prev_x}};
      for (const auto& [name, var] : fields)
        if (var->defined()) io::add_tensor(file, p + name, var->value());
    }
}

std::vector<model_type::state> carry_from(const io::tensor_file& file, std::size_t micro, std::size_t blocks) {
  std::vector<model_type::state> carry(micro);
  for (std::size_t m = 0; m < micro; ++m) {
    if (!file.contains("carry." + std::to_string(m) + ".0.tm4.prev_x") &&
        !file.contains("carry." + std::to_string(m) + ".0.tm6.prev_x"))
      continue;
    carry[m].resize(blocks);
    for (std::size_t l = 0; l < blocks; ++l) {
      auto& s = carry[m][l];
      const std::string p = "carry." + std::to_string(m) + "." + std::to_string(l) + ".";
      const std::pair<const char*, Var*> fields[] = {{"tm4.prev_x", &s.tm_v4.prev_x}, {"tm4.num", &s.tm_v4.num},
                                                     {"tm4.den", &s.tm_v4.den},       {"cm4.prev_x", &s.cm_v4.prev_x},
                                                     {"tm6.prev_x", &s.tm_v6.prev_x}, {"tm6.wkv", &s.tm_v6.wkv},
                                                     {"cm6.prev_x", &s.cm_v6.prev_x}};
      for (const auto& [name, var] : fields)
        if (const auto* t = file.find(p + name))
          *var = constant(Tensor::from_data(io::detail::shape_of(t->shape), std::span<const float>(t->data)));
    }
  }
  return carry;
}

int run(options o) {
  LINREC_CHECK(o.device == "cpu", "--device " << o.device << ": this build trains on the CPU only (CUDA tensors "
                                              << "are not available yet)");
  if (o.threads > 0) omp_set_num_threads(o.threads);
  const cpu exec{o.threads};
  std::optional<io::tensor_file> saved;
  if (!o.ckpt.empty() && (o.resume || o.steps == 0) && std::filesystem::exists(checkpoint_path(o))) {
    saved = io::load_safetensors(checkpoint_path(o));
    json stored;
    try {  // all metadata checked up front, so a bad checkpoint fails before anything is restored
      stored = stored_config(*saved);
      for (const char* key : {"step", "tokens", "optim.step"}) io::metadata_integer(*saved, key);
      io::metadata_real(*saved, "seconds");
      for (const char* key : {"sampler.random", "sampler.streams"}) io::metadata_string(*saved, key);
    } catch (const Error& e) {
      throw Error(checkpoint_path(o).string() + ": " + e.what());
    }
    if (o.steps == 0) {  // sampling only: the checkpoint decides the model
      o.model.version = stored.at("version");
      o.model.dim = stored.at("dim");
      o.model.layers = stored.at("layers");
      o.model.head_size = stored.at("head_size");
    } else {
      const json current = run_config(o);
      for (const auto& item : current.items())
        LINREC_CHECK(stored.contains(item.key()) && stored.at(item.key()) == item.value(),
                     "--resume: checkpoint was trained with " << item.key() << " = "
                                                              << stored.value(item.key(), json()).dump()
                                                              << ", this run has " << item.value().dump());
    }
  } else if (o.steps == 0) {
    throw Error("--steps 0 samples from a checkpoint, but " + checkpoint_path(o).string() + " does not exist");
  }
  rng init(static_cast<std::uint64_t>(o.seed));
  model_type model(o.model, init);
  AdamW opt = make_optimizer(model, o);
  progress_counters done;
  if (saved) io::restore_parameters(*saved, model.parameters(), "model.");
  if (o.steps == 0) {
    print_sample(generate(model, o, exec));
    return 0;
  }

  const auto corpus = io::load_corpus(o.data.empty() ? io::default_corpus_path() : std::filesystem::path(o.data));
  const auto split = io::split_train_validation(corpus, o.val_fraction);
  const double unigram = io::unigram_cross_entropy(io::byte_counts(split.train), split.validation);
  io::random_window_sampler random_windows(split.train, o.batch * o.accum, o.ctx, static_cast<std::uint64_t>(o.seed));
  io::contiguous_sampler streams(split.train, o.batch * o.accum, o.ctx);
  std::vector<model_type::state> carry(static_cast<std::size_t>(o.accum));
  if (saved) {
    opt.import_state(io::optimizer_state_from(*saved, "optim."));
    random_windows.set_state(io::metadata_string(*saved, "sampler.random"));
    streams.set_state(io::metadata_string(*saved, "sampler.streams"));
    carry = carry_from(*saved, carry.size(), static_cast<std::size_t>(o.model.layers));
    done = {io::metadata_integer(*saved, "step"), io::metadata_integer(*saved, "tokens"),
            io::metadata_real(*saved, "seconds")};
  }
  std::printf("corpus %zu bytes (train %zu, validation %zu); unigram validation loss %.4f nats/byte\n", corpus.size(),
              split.train.size(), split.validation.size(), unigram);
  std::printf("RWKV-%d: %lld layers, dim %lld, %zu parameters; effective batch %lld x %lld bytes%s%s\n",
              o.model.version, (long long)o.model.layers, (long long)o.model.dim,
              [&] { std::size_t n = 0; for (const auto& p : model.parameters()) n += std::size_t(p.value().numel()); return n; }(),
              (long long)(o.batch * o.accum), (long long)o.ctx, o.carry_state ? ", state carried across steps" : "",
              saved ? ", resumed" : "");

  std::optional<io::metrics_log> log;
  if (!o.log.empty() && std::filesystem::path(o.log).has_parent_path())
    std::filesystem::create_directories(std::filesystem::path(o.log).parent_path());
  if (!o.log.empty()) log.emplace(o.log, saved ? io::log_mode::append : io::log_mode::truncate);
  const warmup_cosine schedule{o.lr, o.warmup, o.steps, o.lr * o.min_lr_ratio};
  auto save = [&] {
    if (o.ckpt.empty()) return;
    std::filesystem::create_directories(o.ckpt);
    io::tensor_file file;
    file.metadata = {{"format", "linrec.train_rwkv.v1"}, {"config", run_config(o).dump()},
                     {"step", std::to_string(done.step)}, {"tokens", std::to_string(done.tokens)},
                     {"seconds", std::to_string(done.seconds)}, {"sampler.random", random_windows.state()},
                     {"sampler.streams", streams.state()}};
    io::add_parameters(file, model.parameters(), "model.");
    io::add_optimizer_state(file, opt.export_state(), "optim.");
    add_carry(file, carry);
    io::save_safetensors(checkpoint_path(o), file);
  };

  io::progress_options bar_options;
  bar_options.max_seconds = o.max_seconds;
  io::progress_bar bar(o.steps, stdout, bar_options);
  const auto start = std::chrono::steady_clock::now();
  const double seconds_before = done.seconds;
  std::optional<double> last_val;
  while (done.step < o.steps) {
    opt.set_lr(schedule(done.step));
    const auto batch = o.carry_state ? streams.next() : random_windows.next();
    const auto inputs = batch.inputs(), targets = batch.targets();
    double step_loss = 0;
    for (std::int64_t m = 0; m < o.accum; ++m) {
      const auto rows = std::span(inputs).subspan(m * o.batch * o.ctx, o.batch * o.ctx);
      const auto wanted = std::span(targets).subspan(m * o.batch * o.ctx, o.batch * o.ctx);
      bool wrapped = false;
      for (std::int64_t r = 0; r < o.batch && o.carry_state; ++r) wrapped = wrapped || batch.wrapped[m * o.batch + r];
      const model_type::state in = o.carry_state && !wrapped ? carry[m] : model_type::state{};
      Tape tape;
      auto [loss, out] = model.loss(tape, rows, wanted, o.batch, o.ctx, in, exec);
      step_loss += loss.item() / double(o.accum);
      tape.backward(loss, float(1.0 / double(o.accum)));
      if (o.carry_state) carry[m] = model_type::detach(out);
    }
    if (!std::isfinite(step_loss)) {
      bar.finish();
      std::fprintf(stderr, "train_rwkv: loss became %f at step %lld; stopping (the last checkpoint is kept)\n",
                   step_loss, (long long)done.step);
      return 2;
    }
    clip_grad_norm(model.parameters(), o.clip);
    opt.step();
    opt.zero_grad();
    ++done.step;
    done.tokens += o.batch * o.accum * o.ctx;
    done.seconds = seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const bool out_of_time = (o.max_seconds > 0 && done.seconds - seconds_before >= o.max_seconds) ||
                             (o.stop_at > 0 && done.step >= o.stop_at);
    const bool last = done.step == o.steps || out_of_time;
    std::optional<double> val;
    if (done.step % o.eval_every == 0 || last) last_val = val = validation_loss(model, split.validation, o, exec);
    const double tokens_per_second = double(done.tokens) / std::max(1e-9, done.seconds);
    bar.update(done.step, step_loss, tokens_per_second, val);  // the bar keeps the last one shown
    if (log) {
      json record{{"step", done.step}, {"tokens", done.tokens}, {"seconds", done.seconds}, {"train_loss", step_loss},
                  {"lr", opt.lr()}, {"tokens_per_second", tokens_per_second}};
      record["val_loss"] = val ? json(*val) : json(nullptr);
      log->write(record);
    }
    if (!o.ckpt.empty() && (done.step % o.ckpt_every == 0 || last)) save();
    if (out_of_time) break;
  }
  bar.finish();
  std::printf("done: %lld steps, %lld tokens in %.1f s (%.0f tokens/s); validation loss %.4f nats/byte (unigram %.4f)\n",
              (long long)done.step, (long long)done.tokens, done.seconds, double(done.tokens) / std::max(1e-9, done.seconds),
              last_val.value_or(NAN), unigram);
  if (o.sample > 0) {
    std::printf("--- sample ---\n");
    print_sample(generate(model, o, exec));
    std::printf("--------------\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  CLI::App app{"train_rwkv: train a byte-level RWKV language model on any text, checkpoint and resume it, and "
               "sample from it in recurrent mode."};
  app.add_option("--data", o.data, "training text (any bytes, or a folder of text files); default: the fortunes "
                                   "corpus the README setup installs");
  app.add_option("--val-fraction", o.val_fraction, "tail of the text held out for validation")->capture_default_str()->check(CLI::Range(0.001, 0.5));
  app.add_option("--version", o.model.version, "RWKV block version: 4 or 6")->capture_default_str()->check(CLI::IsMember({4, 6}));
  app.add_option("--layers", o.model.layers, "number of blocks")->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--dim", o.model.dim, "model width C")->capture_default_str()->check(CLI::Range(8, 4096));
  app.add_option("--head-size", o.model.head_size, "RWKV-6 head size (divides --dim)")->capture_default_str();
  app.add_option("--ctx", o.ctx, "bytes per training window")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--batch", o.batch, "sequences per micro-batch")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  app.add_option("--accum", o.accum, "micro-batches per optimizer step (effective batch = batch x accum)")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  app.add_option("--lr", o.lr, "peak learning rate (AdamW)")->capture_default_str();
  app.add_option("--min-lr-ratio", o.min_lr_ratio, "final learning rate / peak (cosine decay)")->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "AdamW weight decay on matrices")->capture_default_str();
  app.add_option("--clip", o.clip, "global gradient-norm clip")->capture_default_str();
  app.add_option("--warmup", o.warmup, "linear warm-up steps")->capture_default_str();
  app.add_option("--steps", o.steps, "optimizer steps (0 = sample from --ckpt only)")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--max-seconds", o.max_seconds, "stop after this much training time (0 = no limit)")->capture_default_str();
  app.add_option("--stop-at", o.stop_at, "interrupt at this step (checkpointed; --resume continues the same schedule)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seed", o.seed, "seed of initialisation, data order and sampling")->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0 = all)")->capture_default_str();
  app.add_option("--device", o.device, "cpu (cuda: not yet)")->capture_default_str();
  app.add_option("--eval-every", o.eval_every, "steps between validation evaluations")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--eval-tokens", o.eval_tokens, "validation bytes evaluated")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--log", o.log, "JSON-lines metrics file");
  app.add_option("--ckpt", o.ckpt, "checkpoint directory (latest.safetensors, written atomically)");
  app.add_option("--ckpt-every", o.ckpt_every, "steps between checkpoints")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_flag("--resume", o.resume, "continue from --ckpt (same hyper-parameters) to the identical trajectory");
  app.add_flag("--carry-state", o.carry_state, "rows read the text contiguously; the recurrent state is carried "
                                               "from one step's window to the next (truncated BPTT)");
  app.add_option("--sample", o.sample, "bytes to generate after training (or from --ckpt with --steps 0)")->capture_default_str();
  app.add_option("--prompt", o.prompt, "text the sample starts from");
  app.add_option("--temperature", o.temperature, "sampling temperature")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--top-p", o.top_p, "nucleus sampling mass")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_rwkv: %s\n", e.what());
    return 1;
  }
}
