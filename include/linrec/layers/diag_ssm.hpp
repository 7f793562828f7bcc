#pragma once
// Diagonal state-space layers (docs/models.md §6), both on the shared scan, both parallel over
// time for training and one token at a time for generation, with the same numbers.
//
// s4d: per channel c, N/2 complex modes in conjugate pairs (Gu et al. 2022, s4d.py), ZOH:
//   Ā = exp(Δ_c A),  B̄ = (exp(Δ_c A) − 1)/A · B  (B = 1, absorbed into C as in s4d.py)
//   h_t = Ā ⊙ h_{t−1} + B̄ x_t,   y_t = 2·Re(Σ_n C_n h_t[n]) + D x_t
//
//   linrec::layers::s4d_config cfg{.dim = 64, .state = 64, .init = linrec::layers::s4d_init::lin};
//   linrec::layers::s4d<float> layer(cfg, gen, "blocks.0.s4d.");
//   auto [y, state] = layer.forward(tape, x, {});      // x [B,T,H] → y [B,T,H]
//
// selective_ssm: Mamba's selective scan (Gu & Dao 2023, selective_scan_ref), real A < 0:
//   Δ_t = softplus(W_Δ x_t + b_Δ) [D],  B_t = W_B x_t, C_t = W_C x_t [N] (shared over channels)
//   h_t[d,n] = exp(Δ_t[d] A[d,n]) h_{t−1}[d,n] + Δ_t[d] B_t[n] x_t[d]
//   y_t[d] = Σ_n C_t[n] h_t[d,n] + D[d] x_t[d],   optionally ⊙ silu(z_t), z_t = x_t W_z
// W_Δ is low rank (x_proj's first dt_rank outputs, then dt_proj) as in Mamba.
//
//   linrec::layers::selective_ssm<float> ssm({.dim = 64, .state = 16}, gen, "blocks.0.mixer.");
//   auto [y, state] = ssm.forward(tape, x, {});
//
// Weights are stored [in, out] (y = x W), like every linrec layer.
#include <cmath>
#include <numbers>
#include <string>
#include <utility>
#include <vector>

#include "linrec/autodiff/autodiff.hpp"
#include "linrec/layers/init.hpp"
#include "linrec/layers/recurrent.hpp"

namespace linrec::layers {

// A's initialisation (S4D paper §4): the imaginary parts of the N/2 modes n = 0, 1, …
enum class s4d_init {
  lin,   // A_n = −½ + iπn
  inv,   // A_n = −½ + i(N/π)(N/(2n+1) − 1)
  real,  // A_n = −(n+1)  (imaginary part 0, still learnable)
};

struct s4d_config {
  index_t dim = 64;    // H: channels
  index_t state = 64;  // N: state size per channel (N/2 complex modes; even)
  s4d_init init = s4d_init::lin;
  double dt_min = 0.001;  // log Δ ~ U[log dt_min, log dt_max]
  double dt_max = 0.1;
};

template <class T>
class s4d {
 public:
  using value_type = T;
  struct state {
    basic_var<T> h;  // [B,H,N/2,2] complex modes (undefined: zeros)
  };

  basic_parameter<T> log_dt;      // [H]       log Δ
  basic_parameter<T> log_A_real;  // [H,N/2]   Re A = −exp(log_A_real)
  basic_parameter<T> A_imag;      // [H,N/2]   Im A
  basic_parameter<T> C;           // [H,N/2,2] complex
  basic_parameter<T> D;           // [H]

  s4d(const s4d_config& cfg, rng& gen, const std::string& prefix = "s4d.") : dim_(cfg.dim), modes_(cfg.state / 2) {
    LINREC_CHECK(cfg.dim > 0 && cfg.state >= 2 && cfg.state % 2 == 0,
                 "s4d: need dim > 0 and an even state size ≥ 2, got " << cfg.dim << ", " << cfg.state);
    LINREC_CHECK(0 < cfg.dt_min && cfg.dt_min <= cfg.dt_max,
                 "s4d: need 0 < dt_min ≤ dt_max, got " << cfg.dt_min << ", " << cfg.dt_max);
    const index_t h_dim = cfg.dim, m_dim = modes_;
    const double n_state = double(cfg.state);
    log_dt = named<T>(prefix, "log_dt", per_channel<T>(h_dim, [&](index_t) {
                        return gen.uniform(std::log(cfg.dt_min), std::log(cfg.dt_max));
                      }));
    auto re = basic_tensor<T>::empty({h_dim, m_dim}), im = basic_tensor<T>::empty({h_dim, m_dim});
    for (index_t c = 0; c < h_dim; ++c)
      for (index_t n = 0; n < m_dim; ++n) {
        const double nd = double(n);
        switch (cfg.init) {
          case s4d_init::lin:
            re.at({c, n}) = T(std::log(0.5));
            im.at({c, n}) = T(std::numbers::pi * nd);
            break;
          case s4d_init::inv:
            re.at({c, n}) = T(std::log(0.5));
            im.at({c, n}) = T(n_state / std::numbers::pi * (n_state / (2.0 * nd + 1.0) - 1.0));
            break;
          case s4d_init::real:
            re.at({c, n}) = T(std::log(nd + 1.0));
            im.at({c, n}) = T(0);
            break;
        }
      }
    log_A_real = named<T>(prefix, "log_A_real", re);
    A_imag = named<T>(prefix, "A_imag", im);
    // C ~ standard complex normal: real and imaginary parts N(0, ½)
    C = named<T>(prefix, "C", basic_tensor<T>::randn({h_dim, m_dim, 2}, gen, 0.0, std::sqrt(0.5)));
    D = named<T>(prefix, "D", basic_tensor<T>::randn({h_dim}, gen));
  }

  parameter_list<T> parameters() const { return {log_dt, log_A_real, A_imag, C, D}; }
  index_t dim() const { return dim_; }
  index_t modes() const { return modes_; }

  // The ZOH discretisation (Ā, B̄), each complex [H,N/2,2]. e^{ΔA} − 1 is formed by
  // complex_expm1, so B̄ ≈ Δ·B keeps its precision for tiny steps Δ.
  std::pair<basic_var<T>, basic_var<T>> discretize(basic_tape<T>& tape) const {
    const auto dt = reshape(tape, exp(tape, log_dt), Shape{dim_, 1});
    const auto a_re = neg(tape, exp(tape, log_A_real));
    const auto dta = complex(tape, mul(tape, a_re, dt), mul(tape, A_imag, dt));  // ΔA
    const auto growth = complex_expm1(tape, dta);                                // e^{ΔA} − 1
    const auto one = constant(basic_tensor<T>::from_data(Shape{2}, {T(1), T(0)}));
    const auto a_bar = add(tape, growth, one);
    // B̄ = (e^{ΔA} − 1)/A = (e^{ΔA} − 1)·conj(A) / |A|²
    const auto conj_a = complex(tape, a_re, neg(tape, A_imag));
    const auto norm2 = reshape(tape, add(tape, square(tape, a_re), square(tape, A_imag)), Shape{dim_, modes_, 1});
    const auto b_bar = div(tape, complex_mul(tape, growth, conj_a), norm2);
    return {a_bar, b_bar};
  }

  // x [B,T,H] → y [B,T,H]
  std::pair<basic_var<T>, state> forward(basic_tape<T>& tape, const basic_var<T>& x, const state& in,
                                         cpu exec = {}) const {
    LINREC_CHECK(x.shape().rank() == 3 && x.shape()[2] == dim_,
                 "s4d: x must be [B,T," << dim_ << "], got " << x.shape());
    const index_t batch = x.shape()[0], time = x.shape()[1], lanes = dim_ * modes_;
    const Shape state_shape{batch, dim_, modes_, 2};
    basic_var<T> h0;
    if (in.h.defined()) {
      LINREC_CHECK(in.h.shape() == state_shape, "s4d: state h must be " << state_shape << ", got " << in.h.shape());
      h0 = reshape(tape, in.h, Shape{batch, lanes, 2});
    }
    const auto [a_bar, b_bar] = discretize(tape);
    const auto decay = broadcast_to(tape, reshape(tape, a_bar, Shape{lanes, 2}), Shape{batch, lanes, 2});
    // b_t[c,n] = B̄[c,n] x_t[c]
    const auto drive = mul(tape, reshape(tape, x, Shape{batch * time, dim_, 1, 1}), b_bar);
    auto [h, h_final] = scan<complex_op>(tape, decay, reshape(tape, drive, Shape{batch, time, lanes, 2}), h0, exec);
    // 2·Re(C h) = Σ over (re, im) of h ⊙ (2 C_re, −2 C_im)
    const auto signs = constant(basic_tensor<T>::from_data(Shape{2}, {T(2), T(-2)}));
    const auto readout = reshape(tape, mul(tape, C, signs), Shape{dim_, modes_ * 2});
    const auto y = sum(tape, mul(tape, reshape(tape, h, Shape{batch * time, dim_, modes_ * 2}), readout), 2);
    return {add(tape, reshape(tape, y, Shape{batch, time, dim_}), mul(tape, x, D)),
            state{reshape(tape, h_final, state_shape)}};
  }

  std::pair<basic_tensor<T>, state> step(const basic_tensor<T>& x_t, const state& s) const {
    return step_of(*this, x_t, s);
  }

 private:
  index_t dim_, modes_;
};

struct selective_ssm_config {
  index_t dim = 64;       // D: channels (Mamba's d_inner)
  index_t state = 16;     // N: state size per channel (d_state)
  index_t dt_rank = 0;    // rank of W_Δ; 0 = ⌈D/16⌉
  double dt_min = 0.001;  // Δ at init: exp(U[log dt_min, log dt_max]), at least dt_init_floor
  double dt_max = 0.1;
  double dt_init_floor = 1e-4;
  double dt_scale = 1.0;  // dt_proj.weight ~ U(±dt_scale/√dt_rank)
  bool gate = true;       // y ⊙ silu(x W_z)
};

template <class T>
class selective_ssm {
 public:
  using value_type = T;
  struct state {
    basic_var<T> h;  // [B,D,N] (undefined: zeros)
  };

  basic_parameter<T> x_proj;   // [D, R+2N]: (Δ low-rank input, B_t, C_t)
  basic_parameter<T> dt_proj;  // [R, D]
  basic_parameter<T> dt_bias;  // [D]  b_Δ = softplus⁻¹(Δ_init)
  basic_parameter<T> A_log;    // [D,N] A = −exp(A_log)
  basic_parameter<T> D;        // [D]
  basic_parameter<T> z_proj;   // [D,D] (gate only)

  selective_ssm(const selective_ssm_config& cfg, rng& gen, const std::string& prefix = "mixer.")
      : dim_(cfg.dim),
        state_size_(cfg.state),
        rank_(cfg.dt_rank > 0 ? cfg.dt_rank : (cfg.dim + 15) / 16),
        gate_(cfg.gate) {
    LINREC_CHECK(cfg.dim > 0 && cfg.state > 0,
                 "selective_ssm: dim and state must be positive, got " << cfg.dim << ", " << cfg.state);
    LINREC_CHECK(0 < cfg.dt_min && cfg.dt_min <= cfg.dt_max,
                 "selective_ssm: need 0 < dt_min ≤ dt_max, got " << cfg.dt_min << ", " << cfg.dt_max);
    const index_t d_dim = cfg.dim, n_dim = cfg.state;
    const double linear_bound = 1.0 / std::sqrt(double(d_dim));  // PyTorch nn.Linear default
    x_proj = named<T>(prefix, "x_proj.weight",
                      basic_tensor<T>::rand({d_dim, rank_ + 2 * n_dim}, gen, -linear_bound, linear_bound));
    const double dt_std = cfg.dt_scale / std::sqrt(double(rank_));
    dt_proj = named<T>(prefix, "dt_proj.weight", basic_tensor<T>::rand({rank_, d_dim}, gen, -dt_std, dt_std));
    // Δ = exp(U[log dt_min, log dt_max]) ≥ floor; bias = Δ + log(−expm1(−Δ)) so softplus(bias) = Δ
    dt_bias = named<T>(prefix, "dt_proj.bias", per_channel<T>(d_dim, [&](index_t) {
                         const double dt = std::max(cfg.dt_init_floor,
                                                    std::exp(gen.uniform(std::log(cfg.dt_min), std::log(cfg.dt_max))));
                         return dt + std::log(-std::expm1(-dt));
                       }));
    auto a_log = basic_tensor<T>::empty({d_dim, n_dim});
    for (index_t d = 0; d < d_dim; ++d)
      for (index_t n = 0; n < n_dim; ++n) a_log.at({d, n}) = T(std::log(double(n + 1)));  // A_n = −(n+1)
    A_log = named<T>(prefix, "A_log", a_log);
    D = named<T>(prefix, "D", basic_tensor<T>::ones({d_dim}));
    if (gate_)
      z_proj =
          named<T>(prefix, "z_proj.weight", basic_tensor<T>::rand({d_dim, d_dim}, gen, -linear_bound, linear_bound));
  }

  parameter_list<T> parameters() const {
    parameter_list<T> p{x_proj, dt_proj, dt_bias, A_log, D};
    if (gate_) p.push_back(z_proj);
    return p;
  }
  index_t dim() const { return dim_; }
  index_t state_size() const { return state_size_; }
  index_t dt_rank() const { return rank_; }

  // x [B,T,D] → y [B,T,D]
  std::pair<basic_var<T>, state> forward(basic_tape<T>& tape, const basic_var<T>& x, const state& in,
                                         cpu exec = {}) const {
    LINREC_CHECK(x.shape().rank() == 3 && x.shape()[2] == dim_,
                 "selective_ssm: x must be [B,T," << dim_ << "], got " << x.shape());
    const index_t batch = x.shape()[0], time = x.shape()[1], lanes = dim_ * state_size_;
    const Shape state_shape{batch, dim_, state_size_};
    basic_var<T> h0;
    if (in.h.defined()) {
      LINREC_CHECK(in.h.shape() == state_shape,
                   "selective_ssm: state h must be " << state_shape << ", got " << in.h.shape());
      h0 = reshape(tape, in.h, Shape{batch, lanes});
    }
    const auto parts = split(tape, matmul(tape, x, x_proj, exec), 2, {rank_, state_size_, state_size_});
    const auto dt = softplus(tape, linear(tape, parts[0], dt_proj, dt_bias, exec));  // Δ_t [B,T,D]
    const auto input_b = reshape(tape, parts[1], Shape{batch, time, 1, state_size_});
    const auto output_c = reshape(tape, parts[2], Shape{batch, time, 1, state_size_});
    // a_t[d,n] = exp(Δ_t[d]·A[d,n]),  b_t[d,n] = Δ_t[d] x_t[d] B_t[n]
    const auto a = exp(tape, mul(tape, reshape(tape, dt, Shape{batch, time, dim_, 1}), neg(tape, exp(tape, A_log))));
    const auto b = mul(tape, reshape(tape, mul(tape, dt, x), Shape{batch, time, dim_, 1}), input_b);
    auto [h, h_final] = scan<real_op>(tape, reshape(tape, a, Shape{batch, time, lanes}),
                                      reshape(tape, b, Shape{batch, time, lanes}), h0, exec);
    // y_t[d] = Σ_n C_t[n] h_t[d,n] + D[d] x_t[d]
    auto y = add(tape, sum(tape, mul(tape, reshape(tape, h, Shape{batch, time, dim_, state_size_}), output_c), 3),
                 mul(tape, x, D));
    if (gate_) y = mul(tape, y, silu(tape, matmul(tape, x, z_proj, exec)));
    return {y, state{reshape(tape, h_final, state_shape)}};
  }

  std::pair<basic_tensor<T>, state> step(const basic_tensor<T>& x_t, const state& s) const {
    return step_of(*this, x_t, s);
  }

 private:
  index_t dim_, state_size_, rank_;
  bool gate_;
};

}  // namespace linrec::layers
