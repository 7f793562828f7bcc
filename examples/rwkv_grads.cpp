// The reference side of tools/compare_pytorch.py: one batch's loss and every parameter's
// gradient of an RWKV model, and the speed of full training steps, at given shapes and on a
// given device.
//
//   rwkv_grads --device cuda --dim 512 --layers 6 --ctx 512 --batch 16 --data DIR --out g.safetensors
//              --time-steps 20
//
// The file holds the weights (model.<name>, as checkpoints name them), the batch (batch.ids,
// batch.targets as floats), the loss and the gradients (grad.<name>). With --time-steps K it
// then times K training steps (forward, backward, gradient clip, AdamW; after 3 untimed ones)
// with train_rwkv's trainer and prints one JSON line: {"tokens_per_second": ...}.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "linrec/io/checkpoint.hpp"
#include "linrec/io/safetensors.hpp"
#include "linrec/io/text_data.hpp"
#include "linrec/train/trainer.hpp"

using namespace linrec;

namespace {

device parse_device(const std::string& text) {
  if (text == "cpu") return cpu_device;
  LINREC_CHECK(text == "cuda", "--device " << text << ": expected cpu or cuda");
  LINREC_CHECK(cuda_available() && cuda_device_count() > 0,
               "--device cuda: " << (cuda_available() ? "no CUDA device is usable here" : "built without CUDA"));
  return cuda_device(0);
}

std::vector<float> as_floats(const std::vector<std::int32_t>& ids) { return {ids.begin(), ids.end()}; }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("One batch's loss and gradients of an RWKV model, and the training-step speed");
  train::train_config c;
  c.model.version = 6;
  std::string device_name = "cpu", data, out, ckpt;
  int time_steps = 0;
  app.add_option("--device", device_name, "cpu or cuda")->capture_default_str();
  app.add_option("--version", c.model.version, "RWKV version (4 or 6)")->capture_default_str();
  app.add_option("--dim", c.model.dim)->capture_default_str();
  app.add_option("--layers", c.model.layers)->capture_default_str();
  app.add_option("--head-size", c.model.head_size)->capture_default_str();
  app.add_option("--ctx", c.ctx)->capture_default_str();
  app.add_option("--batch", c.batch)->capture_default_str();
  app.add_option("--seed", c.seed)->capture_default_str();
  app.add_option("--data", data, "training text (default: the fortunes)");
  app.add_option("--ckpt", ckpt, "weights from this train_rwkv checkpoint (default: the seed's initialisation)");
  app.add_option("--out", out, "write weights, batch, loss and gradients here (safetensors)");
  app.add_option("--time-steps", time_steps, "time this many training steps")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    c.on = parse_device(device_name);
    const auto corpus = io::load_corpus(data.empty() ? io::default_corpus_path() : std::filesystem::path(data));
    rng init(static_cast<std::uint64_t>(c.seed));
    train::trainer::model_type model(c.model, init);
    if (!ckpt.empty()) io::restore_parameters(io::load_safetensors(ckpt, {}), model.parameters(), "model.");
    move_parameters(model.parameters(), c.on);
    io::random_window_sampler sampler(corpus, c.batch, c.ctx, static_cast<std::uint64_t>(c.seed) + 1);
    const auto windows = sampler.next();
    const auto ids = windows.inputs(), targets = windows.targets();
    Tape tape;
    auto [loss, state] = model.loss(tape, ids, targets, c.batch, c.ctx, {});
    const double loss_value = loss.item();
    tape.backward(loss);
    std::printf("{\"loss\": %.9g}\n", loss_value);
    if (!out.empty()) {
      io::tensor_file file;
      file.metadata["config"] = nlohmann::json{
          {"version", c.model.version},
          {"dim", c.model.dim},
          {"layers", c.model.layers},
          {"head_size", c.model.head_size},
          {"vocab", c.model.vocab},
          {"ctx", c.ctx},
          {"batch", c.batch}}.dump();
      io::add_parameters(file, model.parameters(), "model.");
      file.add("batch.ids", {c.batch, c.ctx}, as_floats(ids));
      file.add("batch.targets", {c.batch, c.ctx}, as_floats(targets));
      file.add("loss", {1}, {float(loss_value)});
      for (const auto& p : model.parameters()) io::add_tensor(file, "grad." + p.name(), p.grad());
      io::save_safetensors(out, file, {});
    }
    if (time_steps > 0) {
      c.steps = 1000000;  // a flat schedule over the timed steps
      c.warmup = 0;
      const std::vector<std::uint8_t> text(corpus.begin(), corpus.end());
      train::trainer trainer(c, text);
      for (int i = 0; i < 3; ++i) trainer.step();
      (void)trainer.step().loss;  // .loss reads the device: the warm-up has finished
      const auto start = std::chrono::steady_clock::now();
      double last = 0;
      for (int i = 0; i < time_steps; ++i) last = trainer.step().loss;  // each step reads its loss (a sync)
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf(
          "{\"device\": \"%s\", \"steps\": %d, \"seconds\": %.6f, \"tokens_per_second\": %.1f, \"loss\": %.6f}\n",
          device_name.c_str(), time_steps, seconds, double(time_steps) * double(c.batch * c.ctx) / seconds, last);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rwkv_grads: %s\n", e.what());
    return 1;
  }
  return 0;
}
