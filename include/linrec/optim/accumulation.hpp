#pragma once
// Gradient accumulation over micro-batches: k micro-batches of size b give exactly the
// gradient of one batch of size k·b when each micro-batch's mean loss is scaled by 1/k
// (gradients accumulate in the parameters until zero_grad).
//
//   linrec::grad_accumulation accum(k);
//   for (each micro-batch) {
//     linrec::Tape tape;
//     auto loss = model_loss(tape, micro_batch);        // mean over the micro-batch
//     tape.backward(loss, accum.loss_scale());           // seeds d(loss)/d(loss) = 1/k
//     if (accum.micro_step_done()) { opt.step(); opt.zero_grad(); }
//   }
// (Exact for losses that are means over equally sized micro-batches; with ignored targets
// in softmax_cross_entropy the per-micro-batch counts differ, so weight by counts instead.)
#include "linrec/core/error.hpp"

namespace linrec {

class grad_accumulation {
 public:
  explicit grad_accumulation(int micro_batches) : micro_batches_(micro_batches) {
    LINREC_CHECK(micro_batches >= 1, "grad_accumulation: need at least one micro-batch, got " << micro_batches);
  }
  int micro_batches() const { return micro_batches_; }
  // The factor each micro-batch's loss (or backward seed) is multiplied by: 1/k.
  double loss_scale() const { return 1.0 / micro_batches_; }
  // Call after each micro-batch's backward; true when k micro-batches have been accumulated
  // (then step the optimizer and zero the gradients).
  bool micro_step_done() {
    if (++count_ < micro_batches_) return false;
    count_ = 0;
    return true;
  }
  // Micro-batches accumulated since the last optimizer step.
  int pending() const { return count_; }

 private:
  int micro_batches_;
  int count_ = 0;
};

}  // namespace linrec
