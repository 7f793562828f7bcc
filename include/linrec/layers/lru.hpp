#pragma once
// The Linear Recurrent Unit (Orvieto et al. 2023; docs/models.md §5): a complex diagonal
// recurrence with an exponential parametrisation of its eigenvalues, γ normalisation of the
// input, a real read-out and a skip term. Parallel over time through the complex scan
// (time-invariant a) for training; one token at a time for generation, with the same numbers.
//
//   linrec::layers::lru_config cfg{.dim = 64, .state = 128};        // H, P
//   linrec::layers::lru<float> layer(cfg, gen, "blocks.0.lru.");
//   auto [y, state] = layer.forward(tape, x, {});          // x [B,T,H] → y [B,T,H]; {} = h0 = 0
//   auto [y2, state2] = layer.forward(tape, x2, state);     // the next segment continues
//   auto [y_t, next] = layer.step(x_t, state2);             // x_t [B,H], generation
//
// Parameters (names as in the paper's code; B and C stored as real and imaginary parts):
//   nu_log, theta_log, gamma_log [P];  B_re, B_im [P,H];  C_re, C_im [H,P];  D [H]
// gamma_log is a free parameter initialised to log sqrt(1 − |λ|²), as in the reference.
#include <cmath>
#include <numbers>
#include <string>
#include <utility>

#include "linrec/autodiff/autodiff.hpp"
#include "linrec/layers/init.hpp"
#include "linrec/layers/recurrent.hpp"

namespace linrec::layers {

struct lru_config {
  index_t dim = 64;     // H: input and output channels
  index_t state = 128;  // P: complex state size
  double r_min = 0.9;   // |λ| ring, in the squared-radius sense
  double r_max = 0.999;
  double max_phase = 2.0 * std::numbers::pi;  // arg λ ∈ (0, max_phase]; π/10 for long-range tasks
};

template <class T>
class lru {
 public:
  using value_type = T;
  struct state {
    basic_var<T> h;  // [B,P,2] complex state (undefined: zeros, the start of a sequence)
  };

  basic_parameter<T> nu_log, theta_log, gamma_log;  // [P]
  basic_parameter<T> B_re, B_im;                    // [P,H]
  basic_parameter<T> C_re, C_im;                    // [H,P]
  basic_parameter<T> D;                             // [H]

  lru(const lru_config& cfg, rng& gen, const std::string& prefix = "lru.") : dim_(cfg.dim), state_size_(cfg.state) {
    LINREC_CHECK(cfg.dim > 0 && cfg.state > 0,
                 "lru: dim and state must be positive, got " << cfg.dim << ", " << cfg.state);
    LINREC_CHECK(0 <= cfg.r_min && cfg.r_min < cfg.r_max && cfg.r_max < 1 && cfg.max_phase > 0,
                 "lru: need 0 ≤ r_min < r_max < 1 and max_phase > 0, got r_min " << cfg.r_min << ", r_max " << cfg.r_max
                                                                                 << ", max_phase " << cfg.max_phase);
    const index_t p_dim = cfg.state, h_dim = cfg.dim;
    // ν_log = log(−½ log(u (r_max² − r_min²) + r_min²)) so that |λ|² is uniform on [r_min², r_max²]
    nu_log = named<T>(
        prefix, "nu_log", per_channel<T>(p_dim, [&](index_t) {
          const double u = gen.uniform();
          return std::log(-0.5 * std::log(u * (cfg.r_max * cfg.r_max - cfg.r_min * cfg.r_min) + cfg.r_min * cfg.r_min));
        }));
    // θ = u·max_phase with u ∈ (0, 1] (θ = 0 has no logarithm)
    theta_log =
        named<T>(prefix, "theta_log",
                 per_channel<T>(p_dim, [&](index_t) { return std::log(cfg.max_phase * (1.0 - gen.uniform())); }));
    // γ = sqrt(1 − |λ|²), |λ| = exp(−exp(ν_log))
    gamma_log = named<T>(prefix, "gamma_log", per_channel<T>(p_dim, [&](index_t p) {
                           const double modulus = std::exp(-std::exp(double(nu_log.value().at({p}))));
                           return 0.5 * std::log(1.0 - modulus * modulus);
                         }));
    B_re = named<T>(prefix, "B_re",
                    basic_tensor<T>::randn({p_dim, h_dim}, gen, 0.0, 1.0 / std::sqrt(2.0 * double(h_dim))));
    B_im = named<T>(prefix, "B_im",
                    basic_tensor<T>::randn({p_dim, h_dim}, gen, 0.0, 1.0 / std::sqrt(2.0 * double(h_dim))));
    C_re = named<T>(prefix, "C_re", basic_tensor<T>::randn({h_dim, p_dim}, gen, 0.0, 1.0 / std::sqrt(double(p_dim))));
    C_im = named<T>(prefix, "C_im", basic_tensor<T>::randn({h_dim, p_dim}, gen, 0.0, 1.0 / std::sqrt(double(p_dim))));
    D = named<T>(prefix, "D", basic_tensor<T>::randn({h_dim}, gen));
  }

  parameter_list<T> parameters() const { return {nu_log, theta_log, gamma_log, B_re, B_im, C_re, C_im, D}; }

  index_t dim() const { return dim_; }
  index_t state_size() const { return state_size_; }

  // λ = exp(−exp(ν_log) + i·exp(θ_log)) as a complex [P,2].
  basic_var<T> lambda(basic_tape<T>& tape) const {
    return complex_polar(tape, exp(tape, neg(tape, exp(tape, nu_log))), exp(tape, theta_log));
  }

  // x [B,T,H] → y [B,T,H]:  h_t = λ ⊙ h_{t−1} + γ ⊙ (B x_t),  y_t = Re(C h_t) + D ⊙ x_t
  std::pair<basic_var<T>, state> forward(basic_tape<T>& tape, const basic_var<T>& x, const state& in,
                                         cpu exec = {}) const {
    LINREC_CHECK(x.shape().rank() == 3 && x.shape()[2] == dim_,
                 "lru: x must be [B,T," << dim_ << "], got " << x.shape());
    const index_t batch = x.shape()[0];
    if (in.h.defined())
      LINREC_CHECK(in.h.shape() == (Shape{batch, state_size_, 2}),
                   "lru: state h must be [" << batch << "," << state_size_ << ",2], got " << in.h.shape());
    const auto decay = broadcast_to(tape, lambda(tape), Shape{batch, state_size_, 2});  // time-invariant a
    const auto gamma = exp(tape, gamma_log);
    // γ ⊙ (B x_t): x [B,T,H] · Bᵀ [H,P], real and imaginary parts
    const auto input_re = mul(tape, matmul(tape, x, B_re, false, true, exec), gamma);
    const auto input_im = mul(tape, matmul(tape, x, B_im, false, true, exec), gamma);
    auto [h, h_final] = scan<complex_op>(tape, decay, complex(tape, input_re, input_im), in.h, exec);
    // Re(C h) = Re(h) C_reᵀ − Im(h) C_imᵀ
    const auto read = sub(tape, matmul(tape, real(tape, h), C_re, false, true, exec),
                          matmul(tape, imag(tape, h), C_im, false, true, exec));
    return {add(tape, read, mul(tape, x, D)), state{h_final}};
  }

  // One token x_t [B,H] with nothing recorded (generation).
  std::pair<basic_tensor<T>, state> step(const basic_tensor<T>& x_t, const state& s) const {
    return step_of(*this, x_t, s);
  }

 private:
  index_t dim_, state_size_;
};

}  // namespace linrec::layers
