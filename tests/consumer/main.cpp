// Uses the installed headers the way a downstream project would: a scan with a known answer, a
// small RWKV-6 language model (its layers' forward), and a checkpoint of it written with
// <linrec/io/...> and read back into a model initialised differently, which must then give the
// same logits. Exits non-zero with a message on any mismatch.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <linrec/io/checkpoint.hpp>
#include <linrec/io/safetensors.hpp>
#include <linrec/models/rwkv_lm.hpp>
#include <linrec/scan/scan.hpp>
#include <vector>

namespace {

int check_scan() {
  const linrec::scan_shape shape{1, 5, 1};
  std::vector<float> a = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f}, b = {1, 2, 3, 4, 5}, h(5);
  linrec::scan_forward(linrec::cpu{}, shape, a.data(), b.data(), h.data());
  const float expected[] = {1.0f, 2.5f, 4.25f, 6.125f, 8.0625f};
  for (int t = 0; t < 5; ++t)
    if (std::abs(h[t] - expected[t]) > 1e-6f) {
      std::printf("consumer: h[%d] = %g, expected %g\n", t, h[t], expected[t]);
      return 1;
    }
  return 0;
}

int check_checkpoint() {
  using model_type = linrec::models::rwkv_lm<float>;
  const linrec::models::rwkv_lm_config config{.version = 6, .vocab = 32, .dim = 16, .layers = 1, .head_size = 8};
  linrec::rng seed_a(1), seed_b(2);
  model_type saved(config, seed_a), loaded(config, seed_b);
  const std::vector<std::int32_t> ids = {3, 1, 4, 1, 5, 9, 2, 6};
  const auto logits = [&](const model_type& m) {
    linrec::Tape tape(linrec::grad_mode::off);
    return m.forward(tape, ids, 2, 4, {}).first.value().clone();
  };
  const auto path = std::filesystem::temp_directory_path() / "linrec_consumer.safetensors";
  linrec::io::tensor_file file;
  linrec::io::add_parameters(file, saved.parameters(), "model.");
  linrec::io::save_safetensors(path, file);
  linrec::io::restore_parameters(linrec::io::load_safetensors(path), loaded.parameters(), "model.");
  std::filesystem::remove(path);
  const auto want = logits(saved), got = logits(loaded);
  for (linrec::index_t i = 0; i < want.numel(); ++i)
    if (want.data()[i] != got.data()[i] || !std::isfinite(want.data()[i])) {
      std::printf("consumer: logit %lld after the checkpoint round trip is %g, expected %g\n", (long long)i,
                  got.data()[i], want.data()[i]);
      return 1;
    }
  return 0;
}

}  // namespace

int main() {
  try {
    if (check_scan() != 0 || check_checkpoint() != 0) return 1;
  } catch (const std::exception& e) {
    std::printf("consumer: %s\n", e.what());
    return 1;
  }
  std::printf("consumer: installed linrec works (scan, a model's layers, a checkpoint through io)\n");
  return 0;
}
