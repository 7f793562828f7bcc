// train_rwkv: train a byte-level RWKV language model on a text file, checkpoint it, resume
// it to the identical trajectory, and sample from it in recurrent mode.
//
//   train_rwkv --max-seconds 240 --ckpt run --sample 300 --prompt "The "
//   train_rwkv --ckpt run --steps 0 --sample 500 --temperature 0.8     # sample only
//
// Effective batch = --batch × --accum sequences of --ctx bytes per optimizer step.
//
// Data-parallel over MPI (docs/distributed.md): the same command under `mpirun -np N` trains
// on N ranks, each on --batch of every micro-batch (global batch N × --batch × --accum); rank 0
// prints, logs and checkpoints.
#include <omp.h>
#include <sched.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "linrec/dist/any_communicator.hpp"
#include "linrec/dist/launcher.hpp"
#include "linrec/io/metrics_log.hpp"
#include "linrec/io/progress.hpp"
#include "linrec/models/generate.hpp"
#include "linrec/train/run_files.hpp"
#include "linrec/train/trainer.hpp"
#if LINREC_WITH_MPI
#include "linrec/dist/mpi.hpp"
#endif

namespace {

using namespace linrec;
using json = nlohmann::json;

// The command line: the trainer's configuration plus what only the tool does (files, logging,
// sampling, stopping early).
struct options {
  train::train_config train;
  std::string data, log, ckpt, prompt = "\n", device = "cpu", dist = "auto", eval_mode = "windows";
  double val_fraction = 0.05, max_seconds = 0;
  models::sampling_options sampling{.temperature = 0.8, .top_p = 0.9};
  std::int64_t eval_every = 500, ckpt_every = 200, sample = 0, stop_at = 0;
  int threads = 0;
  bool resume = false, overwrite = false, check_replicas = false;
  bool warmup_given = false;  // --warmup on the command line (not its default)
};

// Recurrent generation from the prompt (a lone newline when empty), seeded from --seed.
std::string generate(const train::trainer::model_type& model, const options& o, cpu exec) {
  rng gen(static_cast<std::uint64_t>(o.train.seed) + 7);
  const auto prompt = io::byte_tokenizer::encode(o.prompt.empty() ? std::string("\n") : o.prompt);
  return o.prompt + io::byte_tokenizer::decode(models::generate(model, prompt, o.sample, o.sampling, gen, exec));
}

// Every sampled byte, a zero byte included (printf's %s would stop there), then a newline.
void print_sample(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
}

std::filesystem::path checkpoint_path(const options& o) { return std::filesystem::path(o.ckpt) / "latest.safetensors"; }

namespace fs = std::filesystem;

// The signal that asked the run to stop (SIGINT, SIGTERM), or 0. The loop saves at the next step
// boundary; a second signal gets the default action (the handler resets it), so it still stops.
volatile std::sig_atomic_t stop_signal = 0;
extern "C" void on_stop_signal(int signal) {
  stop_signal = signal;
  std::signal(signal, SIG_DFL);
}

// An error that names `path` (io's own errors already do: they are kept as they are).
Error naming(const fs::path& path, const Error& e, const std::string& context = "") {
  const std::string what = e.what();
  if (what.find(path.string()) != std::string::npos) return Error(context + what);
  return Error(context + path.string() + ": " + what);
}

// A checkpoint file, loaded and checked whole (integrity, metadata, shapes against its config)
// before anything is built from it; errors name the file.
io::tensor_file load_checkpoint(const fs::path& path) {
  auto file = io::load_safetensors(path);
  try {
    train::check_checkpoint(file);
  } catch (const Error& e) {
    throw naming(path, e);
  }
  return file;
}

int sample_only(options o, cpu exec) {
  LINREC_CHECK(!o.ckpt.empty(), "--steps 0 samples from a checkpoint: give --ckpt DIR");
  LINREC_CHECK(fs::exists(checkpoint_path(o)),
               "--steps 0 samples from a checkpoint, but " << checkpoint_path(o).string() << " does not exist");
  const auto saved = load_checkpoint(checkpoint_path(o));
  o.train.model = train::stored_model_config(saved);
  rng init(static_cast<std::uint64_t>(o.train.seed));
  train::trainer::model_type model(o.train.model, init);
  move_parameters(model.parameters(), o.train.on);
  io::restore_parameters(saved, model.parameters(), "model.");
  print_sample(generate(model, o, exec));
  return 0;
}

// The validation windows must exist before training time is spent on a run that cannot report.
void check_validation(const options& o, std::size_t validation_bytes) {
  LINREC_CHECK(o.train.eval_tokens >= o.train.ctx,
               "--eval-tokens " << o.train.eval_tokens << " is shorter than one --ctx window of " << o.train.ctx);
  LINREC_CHECK(validation_bytes > std::size_t(o.train.ctx),
               "the validation split (--val-fraction "
                   << o.val_fraction << ") holds " << validation_bytes << " bytes, fewer than --ctx " << o.train.ctx
                   << " + 1: use more data, a larger --val-fraction or a smaller --ctx");
}

// What a non-finite loss leaves behind: the newest checkpoint whose parameters gave a finite
// loss. If latest.safetensors holds the parameters that just failed, the one before it
// (previous.safetensors) takes its place, or it is moved aside when there is none.
std::string keep_last_finite_checkpoint(const options& o, std::int64_t failed_from_step, std::int64_t last_saved) {
  if (o.ckpt.empty()) return "no --ckpt: nothing was saved";
  const fs::path dir = o.ckpt, latest = dir / "latest.safetensors", previous = dir / "previous.safetensors";
  if (!fs::exists(latest)) return "no checkpoint was written";
  if (last_saved != failed_from_step) return "kept " + latest.string() + " (step " + std::to_string(last_saved) + ")";
  if (fs::exists(previous)) {
    const auto previous_step = io::metadata_integer(load_checkpoint(previous), "step");
    fs::rename(previous, latest);
    return "kept the checkpoint of step " + std::to_string(previous_step) + " as " + latest.string() +
           " (the one of step " + std::to_string(last_saved) + " led to this step)";
  }
  fs::rename(latest, dir / "nonfinite.safetensors");
  return "no checkpoint gave a finite loss: the one of step " + std::to_string(last_saved) + " is now " +
         (dir / "nonfinite.safetensors").string();
}

// CPUs this process may run on (a launcher that binds ranks to cores narrows it).
int usable_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return std::max(1, int(std::thread::hardware_concurrency()));
}

// The checkpoint rank 0 read (its folder), sent to the other ranks, so that ranks on other
// hosts need not see rank 0's files; checked again where it arrives.
io::tensor_file shared_checkpoint(dist::any_communicator& comm, const fs::path& path,
                                  std::optional<io::tensor_file> on_rank0) {
  if (comm.size() == 1) return std::move(*on_rank0);
  std::vector<std::byte> bytes;
  if (comm.rank() == 0) bytes = io::serialize_safetensors(*on_rank0);
  std::uint64_t size = bytes.size();
  comm.broadcast(std::as_writable_bytes(std::span(&size, 1)), 0);
  bytes.resize(std::size_t(size));
  comm.broadcast(std::span<std::byte>(bytes), 0);
  if (comm.rank() == 0) return std::move(*on_rank0);
  auto file = io::parse_safetensors(bytes, path.string());
  train::check_checkpoint(file);
  return file;
}

// Every rank must train on the same text: rank 0's fingerprint of it against this rank's.
void check_same_data(dist::any_communicator& comm, const std::string& fingerprint, const fs::path& data) {
  if (comm.size() == 1) return;
  std::string root = fingerprint;
  comm.broadcast(std::as_writable_bytes(std::span(root.data(), root.size())), 0);
  LINREC_CHECK(root == fingerprint, "--data " << data.string() << " on rank " << comm.rank()
                                              << " holds other text than "
                                              << "on rank 0 (content hash " << fingerprint << ", rank 0's " << root
                                              << "): every rank must read the same corpus");
}

// --device: "cpu", "cuda" or "cuda:N"; a CUDA device must exist and this build must have CUDA.
device parse_device(const std::string& text) {
  if (text == "cpu") return cpu_device;
  int index = 0;
  const bool cuda = text == "cuda" || (text.rfind("cuda:", 0) == 0 && text.size() > 5 &&
                                       text.find_first_not_of("0123456789", 5) == std::string::npos &&
                                       (index = std::stoi(text.substr(5))) >= 0);
  LINREC_CHECK(cuda, "--device " << text << ": expected cpu, cuda or cuda:N");
  LINREC_CHECK(cuda_available(), "--device " << text
                                             << ": this build has no CUDA backend (nvcc was not found when it was "
                                                "configured; docs/gpu.md)");
  const int count = cuda_device_count();
  LINREC_CHECK(index < count, "--device "
                                  << text << ": "
                                  << (count == 0 ? "no CUDA device is usable here"
                                                 : "this machine has CUDA devices 0 to " + std::to_string(count - 1)));
  make_cuda_device_current(index);
  return cuda_device(index);
}

int run(options o, dist::any_communicator comm) {
  o.train.on = parse_device(o.device);
  LINREC_CHECK(o.train.on.is_cpu() || comm.size() == 1,
               "--device " << o.device << ": data-parallel runs (" << comm.size() << " ranks) train on the CPU only");
  const bool leader = comm.rank() == 0;  // prints, logs, checkpoints
  const int cores = std::max(1, int(std::thread::hardware_concurrency()));
  if (o.threads == 0 && comm.size() > 1) o.threads = std::max(1, std::min(usable_cpus(), cores / comm.local_size()));
  // Threads of all ranks on this host beyond its cores spin in each other's OpenMP barriers
  // (one thread per rank is always allowed: mpirun --oversubscribe runs on any machine).
  LINREC_CHECK(o.threads <= 1 || comm.local_size() == 1 || o.threads * comm.local_size() <= cores,
               "--threads " << o.threads << " x " << comm.local_size() << " ranks on this host exceed its " << cores
                            << " hardware threads (leave --threads out: it defaults to the cores divided among the "
                            << "host's ranks)");
  if (o.threads > 0) omp_set_num_threads(o.threads);
  const cpu exec{o.threads};
  if (o.train.steps == 0) return leader ? sample_only(o, exec) : 0;

  // Files first: nothing is read or trained before every output is known to be usable.
  const fs::path data = o.data.empty() ? io::default_corpus_path() : fs::path(o.data);
  train::check_outputs_apart(data, o.log, o.ckpt);
  std::optional<train::run_lock> ckpt_lock, log_lock;
  std::int64_t last_saved = -1;
  std::optional<io::tensor_file> saved;
  if (!o.ckpt.empty() && leader) {
    std::error_code ec;
    fs::create_directories(o.ckpt, ec);
    LINREC_CHECK(fs::is_directory(o.ckpt), "--ckpt " << o.ckpt << " is not a folder that can be created or written"
                                                     << (ec ? ": " + ec.message() : std::string()));
    ckpt_lock.emplace(fs::path(o.ckpt) / ".lock", "the checkpoint folder " + o.ckpt);
    if (const int removed = train::remove_stale_temporaries(o.ckpt); removed > 0)
      std::printf("removed %d temporary file%s of interrupted saves from %s\n", removed, removed == 1 ? "" : "s",
                  o.ckpt.c_str());
    const bool exists = fs::exists(checkpoint_path(o));
    if (o.resume) {
      LINREC_CHECK(exists,
                   "--resume: " << checkpoint_path(o).string()
                                << " does not exist; nothing to resume (leave out --resume to start a new run)");
      saved = load_checkpoint(checkpoint_path(o));
    } else if (exists) {
      LINREC_CHECK(o.overwrite, "--ckpt " << o.ckpt << " holds the checkpoint of another run ("
                                          << checkpoint_path(o).string()
                                          << "): --resume continues it, --overwrite replaces it");
      for (const char* name : {"latest.safetensors", "previous.safetensors"}) fs::remove(fs::path(o.ckpt) / name);
    }
  }
  if (o.resume) {
    saved = shared_checkpoint(comm, checkpoint_path(o), std::move(saved));
    last_saved = io::metadata_integer(*saved, "step");
  }
  if (!o.log.empty() && leader) {
    if (fs::path(o.log).has_parent_path()) fs::create_directories(fs::path(o.log).parent_path());
    LINREC_CHECK(!fs::is_directory(o.log), "--log " << o.log << " is a folder, expected a file");
    log_lock.emplace(o.log, "the log " + o.log);
  }

  const auto corpus = io::load_corpus(data);
  const auto split = io::split_train_validation(corpus, o.val_fraction);
  check_validation(o, split.validation.size());
  o.train.data = train::data_fingerprint(split.train, split.validation);
  check_same_data(comm, o.train.data, data);
  const double unigram = io::unigram_cross_entropy(io::byte_counts(split.train), split.validation);
  train::trainer trainer(o.train, split.train, exec, {}, comm);
  if (saved) {
    try {
      const auto unchecked = trainer.restore(*saved);
      if (!unchecked.empty()) {
        std::string keys;
        for (const auto& key : unchecked) keys += (keys.empty() ? "" : ", ") + key;
        std::printf("note: the checkpoint predates recording %s; those are not compared\n", keys.c_str());
      }
    } catch (const Error& e) {
      throw naming(checkpoint_path(o), e, "--resume: ");
    }
  }
  const auto& c = o.train;
  std::printf("corpus %zu bytes (train %zu, validation %zu); unigram validation loss %.4f nats/byte\n", corpus.size(),
              split.train.size(), split.validation.size(), unigram);
  std::printf(
      "RWKV-%d: %lld layers, dim %lld, %zu parameters; effective batch %lld x %lld bytes%s%s\n", c.model.version,
      (long long)c.model.layers, (long long)c.model.dim,
      [&] {
        std::size_t n = 0;
        for (const auto& p : trainer.model().parameters()) n += std::size_t(p.value().numel());
        return n;
      }(),
      (long long)(trainer.global_batch() * c.accum), (long long)c.ctx,
      c.carry_state ? ", state carried across steps" : "", saved ? ", resumed" : "");
  if (comm.size() > 1)
    std::printf("data-parallel: %d ranks x batch %lld x accum %lld, %d thread%s per rank\n", comm.size(),
                (long long)c.batch, (long long)c.accum, omp_get_max_threads(), omp_get_max_threads() == 1 ? "" : "s");
  if (saved)
    std::printf("resumed from %s at step %lld\n", checkpoint_path(o).c_str(), (long long)trainer.progress().step);

  // The log follows the checkpoint: a resume first cuts it back to the checkpoint's step, so
  // steps logged after it by the interrupted run (and any partial line) appear once, not twice.
  std::optional<io::metrics_log> log;
  if (!o.log.empty() && leader) {
    if (saved)
      if (const auto removed = train::cut_log(o.log, trainer.progress().step); removed > 0)
        std::printf("cut %s back to step %lld (%zu lines after the checkpoint removed)\n", o.log.c_str(),
                    (long long)trainer.progress().step, removed);
    log.emplace(o.log, saved ? io::log_mode::append : io::log_mode::truncate);
  }
  const auto save = [&] {  // every rank: the checkpoint gathers carried states across ranks
    if (o.ckpt.empty()) return;
    auto file = trainer.checkpoint();
    if (leader) train::save_keeping_previous(o.ckpt, file);
    last_saved = trainer.progress().step;
  };
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);

  io::progress_options bar_options;
  bar_options.max_seconds = o.max_seconds;
  io::progress_bar bar(c.steps, stdout, bar_options);
  const auto start = std::chrono::steady_clock::now();
  const double seconds_before = trainer.progress().seconds;
  std::optional<double> last_val, last_stateful;
  const bool stateful_eval = o.eval_mode == "stateful";
  double reduce_seconds = 0;  // this session's time in the step's collectives (rank 0's view)
  while (trainer.progress().step < c.steps) {
    const auto result = trainer.step();
    reduce_seconds += result.reduce_seconds;
    if (!result.finite) {  // the global loss: every rank stops here
      bar.finish();
      if (!leader) return 2;
      const auto step = trainer.progress().step;
      if (std::isfinite(result.loss))
        std::fprintf(stderr, "train_rwkv: gradient norm became %f at step %lld (loss %f); stopping: %s\n",
                     result.grad_norm, (long long)(step + 1), result.loss,
                     keep_last_finite_checkpoint(o, step, last_saved).c_str());
      else
        std::fprintf(stderr, "train_rwkv: loss became %f at step %lld; stopping: %s\n", result.loss,
                     (long long)(step + 1), keep_last_finite_checkpoint(o, step, last_saved).c_str());
      return 2;
    }
    if (o.check_replicas) trainer.check_replicas();
    trainer.set_seconds(seconds_before +
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    const auto& done = trainer.progress();
    bool interrupted = stop_signal != 0;
    bool out_of_time = (o.max_seconds > 0 && done.seconds - seconds_before >= o.max_seconds) ||
                       (o.stop_at > 0 && done.step >= o.stop_at);
    if (comm.size() > 1) {
      // The ranks stop together: at a signal any of them received, or when rank 0's clock says.
      double stop[3] = {stop_signal == SIGINT ? 1.0 : 0.0, stop_signal == SIGTERM ? 1.0 : 0.0,
                        leader && out_of_time ? 1.0 : 0.0};
      comm.all_reduce_sum(std::span<double>(stop));
      if (stop_signal == 0 && (stop[0] > 0 || stop[1] > 0)) stop_signal = stop[0] > 0 ? SIGINT : SIGTERM;
      // The reduced flags decide, never this rank's own flag read again: a signal that arrived
      // after this rank contributed would make it stop alone and leave the others waiting in
      // their next collective. Such a signal is counted at the next step, by every rank.
      interrupted = stop[0] > 0 || stop[1] > 0;
      out_of_time = stop[2] > 0;
    }
    const bool last = done.step == c.steps || out_of_time;
    std::optional<double> val, stateful;
    if (!interrupted && (done.step % o.eval_every == 0 || last)) {
      last_val = val = trainer.evaluate(split.validation);
      if (stateful_eval) last_stateful = stateful = trainer.evaluate_stateful(split.validation);
    }
    const double tokens_per_second = double(done.tokens) / std::max(1e-9, done.seconds);
    bar.update(done.step, result.loss, tokens_per_second, val);  // the bar keeps the last one shown
    if (log) {
      json record{{"step", done.step},         {"tokens", done.tokens}, {"seconds", done.seconds},
                  {"train_loss", result.loss}, {"lr", result.lr},       {"tokens_per_second", tokens_per_second}};
      record["val_loss"] = val ? json(*val) : json(nullptr);  // windowed, as in every release
      if (stateful_eval) {
        record["val_loss_windows"] = record["val_loss"];
        record["val_loss_stateful"] = stateful ? json(*stateful) : json(nullptr);
      }
      log->write(record);
    }
    if (!o.ckpt.empty() && (done.step % o.ckpt_every == 0 || last || interrupted)) save();
    if (interrupted) {
      bar.finish();
      const int signal = int(stop_signal);
      if (!leader) return 128 + signal;
      std::fprintf(stderr, "train_rwkv: %s at step %lld: %s\n",
                   signal == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)", (long long)done.step,
                   o.ckpt.empty() ? "no --ckpt, nothing saved"
                                  : (checkpoint_path(o).string() + " saved; --resume continues the run").c_str());
      return 128 + signal;
    }
    if (out_of_time) break;
  }
  bar.finish();
  const auto& done = trainer.progress();
  std::printf(
      "done: %lld steps, %lld tokens in %.1f s (%.0f tokens/s); validation loss %.4f nats/byte (unigram %.4f)\n",
      (long long)done.step, (long long)done.tokens, done.seconds, double(done.tokens) / std::max(1e-9, done.seconds),
      last_val.value_or(NAN), unigram);
  if (stateful_eval)
    std::printf("stateful validation loss %.4f nats/byte (state carried across windows; windowed %.4f)\n",
                last_stateful.value_or(NAN), last_val.value_or(NAN));
  if (comm.size() > 1)
    std::printf("all-reduce: %.1f%% of this session's training time on rank 0 (%.2f s of %.1f s, waiting included)\n",
                100.0 * reduce_seconds / std::max(1e-9, done.seconds - seconds_before), reduce_seconds,
                done.seconds - seconds_before);
  if (o.sample > 0 && leader) {
    std::printf("--- sample ---\n");
    print_sample(generate(trainer.model(), o, exec));
    std::printf("--------------\n");
  }
  return 0;
}

}  // namespace

// A finite number in [lo, hi] (or (lo, hi] with lo_open). CLI11's Range lets "nan" through
// (every comparison with NaN is false) and prints unbounded ends as 309-digit numbers; this
// states the interval as a reader would write it.
CLI::Validator finite_in(double lo, double hi, bool lo_open = false) {
  const auto bound = [](double x) {
    if (std::isinf(x)) return std::string(x > 0 ? "inf" : "-inf");
    std::ostringstream text;
    text << x;
    return text.str();
  };
  const std::string wanted = "a finite number in " + std::string(lo_open ? "(" : "[") + bound(lo) + ", " + bound(hi) +
                             (std::isinf(hi) ? ")" : "]");
  return CLI::Validator(
      [=](std::string& text) {
        double value = 0;
        std::istringstream in(text);
        in >> value;
        const bool parsed = !in.fail() && in.eof();
        if (!parsed || !std::isfinite(value) || value < lo || (lo_open && value == lo) || value > hi)
          return "expected " + wanted + ", got " + text;
        return std::string();
      },
      wanted);
}

// Relations between flags, checked before anything is read or built.
void check_flag_relations(const options& o) {
  const auto& c = o.train;
  if (c.model.version == 6)
    LINREC_CHECK(c.model.head_size > 0 && c.model.dim % c.model.head_size == 0,
                 "--head-size " << c.model.head_size << " must divide --dim " << c.model.dim << " (RWKV-6 heads)");
  // Only a --warmup given on the command line: short runs with the default warm-up of 50 steps
  // are common (and recorded in checkpoints, so the default cannot shrink with --steps).
  LINREC_CHECK(
      !o.warmup_given || c.steps == 0 || c.warmup <= c.steps,
      "--warmup " << c.warmup << " exceeds --steps " << c.steps << ": the peak learning rate is never reached");
  LINREC_CHECK(!o.resume || !o.ckpt.empty(), "--resume continues the run in --ckpt DIR: give --ckpt");
  LINREC_CHECK(!o.resume || !o.overwrite, "--resume continues the run in --ckpt, --overwrite replaces it: give one");
  LINREC_CHECK(o.dist == "auto" || o.dist == "mpi" || o.dist == "none",
               "--dist " << o.dist << ": expected auto, mpi or none");
  const unsigned cores = std::thread::hardware_concurrency();
  LINREC_CHECK(cores == 0 || o.threads <= int(cores),
               "--threads " << o.threads << " exceeds the " << cores << " hardware threads of this machine "
                            << "(oversubscribed OpenMP barriers make every step many times slower)");
}

// The transport --dist asks for: MPI when a launcher started this process (auto) or when asked.
dist::any_communicator communicator_for(const std::string& choice, int* argc, char*** argv) {
  const int launched = dist::launched_processes();
  if (choice == "none" || (choice == "auto" && launched == 0)) {
    LINREC_CHECK(launched <= 1, "--dist none, but an MPI launcher started "
                                    << launched << " processes: each would train alone and overwrite the others' "
                                    << "checkpoints (leave out --dist none, or start one process)");
    return {};
  }
#if LINREC_WITH_MPI
  return dist::any_communicator(std::make_shared<dist::mpi_communicator>(argc, argv));
#else
  (void)argc;
  (void)argv;
  throw Error((choice == "mpi" ? std::string("--dist mpi")
                               : "started by an MPI launcher (" + std::to_string(launched) + " processes)") +
              ", but this train_rwkv was built without MPI: install it (Debian: libopenmpi-dev openmpi-bin) and "
              "rebuild, or start one process without the launcher");
#endif
}

int main(int argc, char** argv) {
  options o;
  CLI::App app{
      "train_rwkv: train a byte-level RWKV language model on any text, checkpoint and resume it, and "
      "sample from it in recurrent mode."};
  app.add_option("--data", o.data,
                 "training text (any bytes, or a folder of text files); default: the fortunes "
                 "corpus the README setup installs");
  app.add_option("--val-fraction", o.val_fraction, "tail of the text held out for validation")
      ->capture_default_str()
      ->check(finite_in(0.001, 0.5));
  app.add_option("--version", o.train.model.version, "RWKV block version: 4 or 6")
      ->capture_default_str()
      ->check(CLI::IsMember({4, 6}));
  app.add_option("--layers", o.train.model.layers, "number of blocks")->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--dim", o.train.model.dim, "model width C")->capture_default_str()->check(CLI::Range(8, 4096));
  app.add_option("--head-size", o.train.model.head_size, "RWKV-6 head size (divides --dim)")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_option("--ctx", o.train.ctx, "bytes per training window")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--batch", o.train.batch, "sequences per micro-batch")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--accum", o.train.accum, "micro-batches per optimizer step (effective batch = batch x accum)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--lr", o.train.lr, "peak learning rate (AdamW)")
      ->capture_default_str()
      ->check(finite_in(0, 10, true));
  app.add_option("--min-lr-ratio", o.train.min_lr_ratio, "final learning rate / peak (cosine decay)")
      ->capture_default_str()
      ->check(finite_in(0, 1));
  app.add_option("--weight-decay", o.train.weight_decay, "AdamW weight decay on matrices")
      ->capture_default_str()
      ->check(finite_in(0, INFINITY));
  app.add_option("--clip", o.train.clip, "global gradient-norm clip")
      ->capture_default_str()
      ->check(finite_in(0, INFINITY, true));
  app.add_option("--warmup", o.train.warmup, "linear warm-up steps")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--steps", o.train.steps, "optimizer steps (0 = sample from --ckpt only)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-seconds", o.max_seconds, "stop after this much training time (0 = no limit)")
      ->capture_default_str()
      ->check(finite_in(0, INFINITY));
  app.add_option("--stop-at", o.stop_at, "interrupt at this step (checkpointed; --resume continues the same schedule)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seed", o.train.seed, "seed of initialisation, data order and sampling")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--threads", o.threads, "CPU threads (0 = all)")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--device", o.device, "cpu, cuda or cuda:N (docs/gpu.md)")->capture_default_str();
  app.add_option("--dist", o.dist,
                 "data-parallel transport: auto (MPI when started by mpirun), mpi, none (one process); "
                 "--threads then defaults to the cores divided among this host's ranks")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "mpi", "none"}));
  app.add_flag("--check-replicas", o.check_replicas,
               "debugging: after every step, check that all ranks hold the same parameters (a hash)");
  app.add_option("--eval-every", o.eval_every, "steps between validation evaluations")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--eval-mode", o.eval_mode,
                 "windows: validation in --ctx windows, each from the empty state (val_loss); stateful: also "
                 "read it with the state carried from window to window (val_loss_stateful; val_loss_windows = "
                 "val_loss)")
      ->capture_default_str()
      ->check(CLI::IsMember({"windows", "stateful"}));
  app.add_option("--eval-tokens", o.train.eval_tokens, "validation bytes evaluated")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--log", o.log, "JSON-lines metrics file");
  app.add_option("--ckpt", o.ckpt, "checkpoint directory (latest.safetensors, written atomically)");
  app.add_option("--ckpt-every", o.ckpt_every, "steps between checkpoints")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_flag("--resume", o.resume, "continue from --ckpt (same hyper-parameters) to the identical trajectory");
  app.add_flag("--overwrite", o.overwrite,
               "start a new run in a --ckpt folder that holds another run's checkpoint "
               "(it is replaced)");
  app.add_flag("--carry-state", o.train.carry_state,
               "rows read the text contiguously; the recurrent state is carried "
               "from one step's window to the next (truncated BPTT)");
  app.add_option("--sample", o.sample, "bytes to generate after training (or from --ckpt with --steps 0)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--prompt", o.prompt, "text the sample starts from");
  app.add_option("--temperature", o.sampling.temperature, "sampling temperature")
      ->capture_default_str()
      ->check(finite_in(0, INFINITY, true));
  app.add_option("--top-p", o.sampling.top_p, "nucleus sampling mass")->capture_default_str()->check(finite_in(0, 1));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::optional<dist::any_communicator> comm;
  try {
    o.warmup_given = app.count("--warmup") > 0;
    check_flag_relations(o);
    comm = communicator_for(o.dist, &argc, &argv);
    if (comm->rank() != 0) {
      // Progress, the summary and samples are rank 0's; errors (stderr) are every rank's.
      LINREC_CHECK(std::freopen("/dev/null", "w", stdout) != nullptr, "cannot silence stdout on rank " << comm->rank());
    }
    return run(o, *comm);
  } catch (const std::exception& e) {
    // One failing rank ends the job: the others may wait in a collective for it forever.
    if (comm && comm->size() > 1) comm->abort("train_rwkv: " + std::string(e.what()), 1);
    std::fprintf(stderr, "train_rwkv: %s\n", e.what());
    return 1;
  }
}
