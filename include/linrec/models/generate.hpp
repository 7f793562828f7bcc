#pragma once
// Text generation in recurrent mode: the prompt is fed one token at a time (constant memory per
// token), then tokens are sampled with temperature and nucleus (top-p) sampling, as RWKV-LM's
// chat and generation scripts do.
//
//   linrec::rng gen(seed);
//   auto ids = linrec::models::generate(model, prompt_ids, 400, {.temperature = 0.8, .top_p = 0.9}, gen);
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <utility>
#include <vector>

#include "linrec/core/error.hpp"
#include "linrec/core/exec.hpp"
#include "linrec/core/rng.hpp"
#include "linrec/tensor/tensor.hpp"

namespace linrec::models {

struct sampling_options {
  double temperature = 0.8;  // > 0; logits are divided by it
  double top_p = 0.9;        // nucleus mass in [0, 1]; 0 = always the most likely token
};

inline void check_sampling_options(const sampling_options& o) {
  LINREC_CHECK(std::isfinite(o.temperature) && o.temperature > 0,
               "sampling: temperature must be a finite number > 0, got " << o.temperature);
  LINREC_CHECK(std::isfinite(o.top_p) && o.top_p >= 0 && o.top_p <= 1,
               "sampling: top_p must be in [0, 1], got " << o.top_p);
}

// One token from the logits of row 0 of [B,V]: softmax at `temperature`, keep the most likely
// tokens until their mass reaches top_p, draw among them in proportion to their probability.
template <class T>
std::int32_t sample_token(const basic_tensor<T>& device_logits, const sampling_options& o, rng& gen) {
  check_sampling_options(o);
  const basic_tensor<T> logits = device_logits.to(cpu_device);  // the host draws
  LINREC_CHECK(logits.rank() == 2 && logits.shape()[1] > 0,
               "sample_token: logits must be [B,V], got " << logits.shape());
  const index_t vocab = logits.shape()[1];
  std::vector<std::pair<double, int>> probs(static_cast<std::size_t>(vocab));
  double peak = -1e30, total = 0;
  for (index_t v = 0; v < vocab; ++v) peak = std::max(peak, double(logits.at({0, v})) / o.temperature);
  for (index_t v = 0; v < vocab; ++v)
    total += probs[std::size_t(v)].first = std::exp(double(logits.at({0, v})) / o.temperature - peak);
  LINREC_CHECK(std::isfinite(total) && total > 0, "sample_token: the logits are not finite");
  for (index_t v = 0; v < vocab; ++v) probs[std::size_t(v)] = {probs[std::size_t(v)].first / total, int(v)};
  std::sort(probs.begin(), probs.end(), std::greater<>());
  double mass = 0, kept = 0;
  std::size_t cut = 0;
  while (cut < probs.size() && mass < o.top_p) mass += probs[cut++].first;
  const double u = gen.uniform() * mass;
  for (std::size_t k = 0; k < cut; ++k)
    if ((kept += probs[k].first) >= u) return probs[k].second;
  return probs[0].second;
}

// Feeds `prompt` (at least one token) through model.step, then samples `count` tokens.
template <class Model>
std::vector<std::int32_t> generate(const Model& model, std::span<const std::int32_t> prompt, std::int64_t count,
                                   const sampling_options& o, rng& gen, cpu exec = {}) {
  check_sampling_options(o);
  LINREC_CHECK(!prompt.empty(), "generate: the prompt must hold at least one token");
  LINREC_CHECK(count >= 0, "generate: count must be >= 0, got " << count);
  typename Model::state state;
  basic_tensor<typename Model::value_type> logits;
  for (std::int32_t id : prompt) logits = model.step(std::span(&id, 1), state, exec);
  std::vector<std::int32_t> out;
  out.reserve(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) {
    std::int32_t next = sample_token(logits, o, gen);
    out.push_back(next);
    logits = model.step(std::span(&next, 1), state, exec);
  }
  return out;
}

}  // namespace linrec::models
