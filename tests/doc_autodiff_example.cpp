// The training example of docs/autodiff.md, compiled and run by test_optim (a test checks
// that the page shows exactly this code between the markers).
// [doc-example-begin]
#include <linrec/autodiff/autodiff.hpp>
#include <linrec/optim/optim.hpp>

// Fit y = sin(3x) on [-1, 1] with a 2-layer MLP; returns the final training loss.
float train_sine_regression(int steps) {
  using namespace linrec;
  rng gen(0);
  auto x = Tensor::rand({256, 1}, gen, -1.0, 1.0);
  auto y = Tensor::empty({256, 1});
  for (index_t i = 0; i < 256; ++i) y.at({i, 0}) = std::sin(3 * x.at({i, 0}));
  Parameter w1(Tensor::randn({1, 64}, gen, 0, 1.0), "w1"), b1(Tensor::zeros({64}), "b1");
  Parameter w2(Tensor::randn({64, 1}, gen, 0, 0.125), "w2"), b2(Tensor::zeros({1}), "b2");
  // Two parameter groups: no weight decay on biases.
  AdamW opt({{{w1, w2}}, {{b1, b2}, /*weight_decay*/ 0.0}}, {.lr = 1e-2, .weight_decay = 1e-4});
  const warmup_cosine schedule{.peak_lr = 1e-2, .warmup_steps = 20, .total_steps = steps, .min_lr = 1e-4};
  float last_loss = 0;
  for (int step = 0; step < steps; ++step) {
    Tape tape;  // a fresh tape per step; released by backward
    auto hidden = tanh(tape, linear(tape, constant(x), w1, b1));
    auto prediction = linear(tape, hidden, w2, b2);
    auto loss = mean_all(tape, square(tape, sub(tape, prediction, constant(y))));
    last_loss = loss.item();
    tape.backward(loss);  // w1.grad(), b1.grad(), ... accumulate
    clip_grad_norm<float>({w1, b1, w2, b2}, 1.0);
    opt.set_lr(schedule(step));
    opt.step();
    opt.zero_grad();
  }
  return last_loss;
}
// [doc-example-end]
