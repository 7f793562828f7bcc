#pragma once
// Tape: dynamic reverse-mode autodiff. Ops on Vars record one entry each (inputs, outputs,
// a backward function); `backward(loss)` walks the entries once in reverse, accumulating
// gradients into every Var that requires one (parameters keep theirs across tapes), and then
// releases the tape: its activations are freed and its Vars can no longer feed new ops.
//
//   linrec::Tape tape;                       // records
//   auto loss = linrec::mean_all(tape, linrec::square(tape, linrec::matmul(tape, x, w)));
//   tape.backward(loss);                     // w.grad() += ∂loss/∂w; tape released
//
//   linrec::Tape eval(linrec::grad_mode::off);  // inference: nothing is recorded
//   tape.set_checked(true);                  // every output and gradient tested for NaN/Inf
//
// Ops are free functions taking the tape first (linrec/autodiff/ops/*.hpp). A layer can add
// its own op with `tape.record(...)` (see "Writing an op" in docs/autodiff.md).
#include <atomic>
#include <cmath>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "linrec/autodiff/var.hpp"
#include "linrec/tensor/eigen.hpp"

namespace linrec {

enum class grad_mode { enabled, off };

template <class T>
class basic_tape;

// What an op's backward function sees: its inputs and outputs (as recorded).
template <class T>
struct op_record {
  using node_ptr = std::shared_ptr<detail::var_node<T>>;
  const char* name = "";
  std::vector<node_ptr> inputs;
  std::vector<node_ptr> outputs;
  std::function<void(op_record&)> backward;

  // Upstream gradient of output i; undefined when nothing downstream used it (= zero).
  const basic_tensor<T>& grad_out(std::size_t i = 0) const { return outputs[i]->grad; }
  bool needs_grad(std::size_t i) const { return inputs[i] && inputs[i]->requires_grad; }
};

// Where a backward function writes an input's gradient: `fresh` means the buffer has just been
// allocated (uninitialised) and must be assigned, otherwise added to.
template <class T>
struct grad_sink {
  basic_tensor<T> tensor;
  bool fresh = false;
  explicit operator bool() const { return tensor.defined(); }
  // dst = expr or dst += expr for an Eigen array/matrix expression over the whole tensor.
  template <class Dst, class Expr>
  void put(Dst&& dst, const Expr& expr) const {
    if (fresh)
      dst = expr;
    else
      dst += expr;
  }
  // Same for matrix products, without Eigen's aliasing temporary.
  template <class Dst, class Expr>
  void put_product(Dst&& dst, const Expr& expr) const {
    if (fresh)
      dst.noalias() = expr;
    else
      dst.noalias() += expr;
  }
  // dst = src or dst += src for a whole tensor of the sink's device (device kernels write
  // their result into a temporary and hand it over here).
  void put_tensor(const basic_tensor<T>& src) const {
    if (fresh)
      tensor.copy_from(src);
    else
      tensor.add_(src);
  }
  // Zero-initialise a fresh buffer (for ops that scatter-add into it).
  void zero_if_fresh() {
    if (fresh) tensor.fill_(T(0));
    fresh = false;
  }
};

template <class T>
class basic_tape {
 public:
  using var = basic_var<T>;
  using node_ptr = std::shared_ptr<detail::var_node<T>>;
  using record_type = op_record<T>;

  explicit basic_tape(grad_mode mode = grad_mode::enabled) : mode_(mode), id_(next_id()) {}
  basic_tape(const basic_tape&) = delete;
  basic_tape& operator=(const basic_tape&) = delete;
  ~basic_tape() { ++generation_; }

  bool recording() const { return mode_ == grad_mode::enabled; }
  void set_grad_mode(grad_mode mode) { mode_ = mode; }
  // Checked mode: every op output and every gradient is tested for NaN/Inf; a failure throws
  // linrec::Error naming the op and the shapes of its inputs and outputs.
  void set_checked(bool on) { checked_ = on; }
  bool checked() const { return checked_; }
  // Number of recorded ops (0 after backward or clear).
  std::size_t size() const { return records_.size(); }

  // Release every recorded op and its activations without computing gradients. Vars made
  // on this tape can no longer be used in ops.
  void clear() {
    records_.clear();
    ++generation_;
  }

  // Reverse pass from a one-element output, seeded with d(loss)/d(loss) = seed. Releases the
  // tape afterwards (so calling it twice is an error).
  void backward(const var& loss, T seed = T(1)) {
    LINREC_CHECK(loss.defined(), "backward: undefined loss");
    LINREC_CHECK(loss.value().numel() == 1, "backward: the loss must have one element, got shape "
                                                << loss.shape() << "; pass an output gradient instead");
    backward(loss, basic_tensor<T>::full(loss.shape(), seed, loss.value().where()));
  }
  // Reverse pass from any output with a given gradient of the same shape.
  void backward(const var& output, const basic_tensor<T>& output_grad) {
    LINREC_CHECK(output.defined(), "backward: undefined output");
    const auto& node = *output.node();
    LINREC_CHECK(node.tape_id == id_ && node.generation == generation_,
                 "backward: the output was not recorded on this tape, or backward was already called on it (the "
                 "tape is released after backward)");
    LINREC_CHECK(output_grad.shape() == output.shape(), "backward: output gradient of shape "
                                                            << output_grad.shape() << " for an output of shape "
                                                            << output.shape());
    LINREC_CHECK(output_grad.where() == output.value().where(), "backward: output gradient on "
                                                                    << output_grad.where() << " for an output on "
                                                                    << output.value().where());
    accumulate(*output.node(), output_grad);
    for (auto it = records_.rbegin(); it != records_.rend(); ++it) {
      record_type& r = *it;
      bool any = false;
      for (const auto& o : r.outputs) any = any || o->grad.defined();
      if (!any) continue;
      r.backward(r);
      if (checked_) check_gradients(r);
      // Free what this op held as soon as it is done (activations, its outputs' grads are
      // kept only where the user still holds the Var).
      r.backward = nullptr;
      r.inputs.clear();
      r.outputs.clear();
    }
    clear();
  }

  // ---- building blocks of ops -------------------------------------------------------------
  // Validates the inputs of op `name` and says whether its output needs a record: the tape
  // records and at least one input requires a gradient.
  bool begin(const char* name, std::initializer_list<const var*> inputs) const {
    return begin(name, std::span<const var* const>(inputs.begin(), inputs.size()));
  }
  bool begin(const char* name, std::span<const var* const> inputs) const {
    bool grad = false;
    const var* first = nullptr;  // the first defined input: every other must be on its device
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      const var* v = inputs[i];
      if (!v->defined()) continue;
      const auto& n = *v->node();
      if (first == nullptr) first = v;
      LINREC_CHECK(n.value.where() == first->node()->value.where(),
                   "op '" << name << "': inputs on different devices: " << first->node()->value.where() << " (shape "
                          << first->node()->value.shape() << ") and " << n.value.where() << " (input " << i
                          << ", shape " << n.value.shape() << "); move one with .to(device)");
      if (n.tape_id != 0) {
        LINREC_CHECK(n.tape_id == id_,
                     "op '" << name << "': an input of shape " << n.value.shape() << " was recorded on another tape");
        LINREC_CHECK(n.generation == generation_,
                     "op '" << name << "': an input of shape " << n.value.shape()
                            << " comes from a released tape (after backward or clear); recompute it on a live tape");
      }
      grad = grad || n.requires_grad;
    }
    return grad && recording();
  }

  // Wraps an op's output value into a Var; records the op when `record` is set. In checked
  // mode the output is tested here.
  var finish(const char* name, std::initializer_list<const var*> inputs, basic_tensor<T> value, bool record,
             std::function<void(record_type&)> backward_fn) {
    std::vector<basic_tensor<T>> values;
    values.push_back(std::move(value));
    return finish_many(name, inputs, std::move(values), record, std::move(backward_fn))[0];
  }

  std::vector<var> finish_many(const char* name, std::initializer_list<const var*> inputs,
                               std::vector<basic_tensor<T>> values, bool record,
                               std::function<void(record_type&)> backward_fn) {
    return finish_many(name, std::span<const var* const>(inputs.begin(), inputs.size()), std::move(values), record,
                       std::move(backward_fn));
  }
  std::vector<var> finish_many(const char* name, std::span<const var* const> inputs,
                               std::vector<basic_tensor<T>> values, bool record,
                               std::function<void(record_type&)> backward_fn) {
    std::vector<var> outs;
    outs.reserve(values.size());
    for (auto& v : values) {
      auto node = std::make_shared<detail::var_node<T>>();
      node->value = std::move(v);
      if (record) {
        node->tape_id = id_;
        node->generation = generation_;
        node->requires_grad = true;
      }
      outs.emplace_back(std::move(node));
    }
    if (checked_)
      for (std::size_t i = 0; i < outs.size(); ++i)
        if (!all_finite(outs[i].value()))
          throw Error("linrec: checked mode: op '" + std::string(name) + "' produced a non-finite value in output " +
                      std::to_string(i) + " " + describe(inputs, outs));
    if (record) {
      record_type r;
      r.name = name;
      r.inputs.reserve(inputs.size());
      for (const var* v : inputs) r.inputs.push_back(v->defined() ? v->node() : nullptr);
      r.outputs.reserve(outs.size());
      for (const auto& o : outs) r.outputs.push_back(o.node());
      r.backward = std::move(backward_fn);
      records_.push_back(std::move(r));
    }
    return outs;
  }

  // The buffer for input i's gradient contribution (undefined sink when it needs none).
  static grad_sink<T> sink(record_type& r, std::size_t i) {
    grad_sink<T> s;
    if (!r.needs_grad(i)) return s;
    auto& node = *r.inputs[i];
    if (!node.grad.defined()) {
      node.grad = basic_tensor<T>::empty(node.value.shape(), node.value.where());
      s.fresh = true;
    }
    s.tensor = node.grad;
    return s;
  }

 private:
  static std::uint64_t next_id() {
    static std::atomic<std::uint64_t> counter{0};
    return ++counter;
  }
  static void accumulate(detail::var_node<T>& node, const basic_tensor<T>& g) {
    if (!node.grad.defined())
      node.grad = g.clone();
    else if (node.grad.where().is_cpu())
      as_array(node.grad) += as_array(g);
    else
      node.grad.add_(g);
  }
  static bool all_finite(const basic_tensor<T>& t) {
    if (!t.where().is_cpu()) return true;  // device tensors are checked by their backend
    const T* p = t.data();
    const index_t n = t.numel();
    for (index_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) return false;
    return true;
  }
  static std::string describe(std::span<const var* const> inputs, const std::vector<var>& outs) {
    std::ostringstream s;
    s << "(inputs";
    for (const var* v : inputs) {
      if (v->defined())
        s << ' ' << v->shape();
      else
        s << " none";
    }
    s << "; outputs";
    for (const auto& o : outs) s << ' ' << o.shape();
    s << ')';
    return s.str();
  }
  void check_gradients(const record_type& r) const {
    for (std::size_t i = 0; i < r.inputs.size(); ++i) {
      if (!r.needs_grad(i) || !r.inputs[i]->grad.defined()) continue;
      if (!all_finite(r.inputs[i]->grad)) {
        std::ostringstream s;
        s << "linrec: checked mode: backward of op '" << r.name << "' produced a non-finite gradient for input " << i
          << " (inputs";
        for (const auto& in : r.inputs) {
          if (in)
            s << ' ' << in->value.shape();
          else
            s << " none";
        }
        s << "; outputs";
        for (const auto& o : r.outputs) s << ' ' << o->value.shape();
        s << ')';
        throw Error(s.str());
      }
    }
  }

  grad_mode mode_;
  bool checked_ = false;
  std::uint64_t id_;
  std::uint64_t generation_ = 0;
  std::vector<record_type> records_;
};

using Tape = basic_tape<float>;

}  // namespace linrec
