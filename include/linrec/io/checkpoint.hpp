#pragma once
// Model parameters and optimizer state in and out of a safetensors tensor_file. Restoring
// checks every name and shape before it copies anything, so a mismatching checkpoint leaves
// the model untouched (nothing half-loaded).
//
//   linrec::io::tensor_file file;
//   linrec::io::add_parameters(file, model.parameters(), "model.");
//   linrec::io::add_optimizer_state(file, opt.export_state(), "optim.");
//   ...
//   linrec::io::restore_parameters(file, model.parameters(), "model.");
//   opt.import_state(linrec::io::optimizer_state_from(file, "optim."));
//
// Errors name the file the tensor_file was loaded from (tensor_file::source):
//   "linrec: run/latest.safetensors: checkpoint: metadata 'step' is missing"
// or say "linrec: checkpoint: ..." for a tensor_file built in memory.
#include <charconv>
#include <cmath>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "linrec/io/safetensors.hpp"
#include "linrec/optim/optimizer.hpp"

namespace linrec::io {

namespace detail {
inline std::vector<std::int64_t> shape_vector(const Shape& s) { return {s.begin(), s.end()}; }
inline Shape shape_of(const std::vector<std::int64_t>& dims) {
  LINREC_CHECK(dims.size() <= static_cast<std::size_t>(Shape::max_rank),
               "checkpoint: a tensor of rank " << dims.size() << " exceeds the maximum rank " << Shape::max_rank);
  return Shape::from_range(dims.begin(), dims.end());
}

// "linrec: <file>: checkpoint: <what...>", or "linrec: checkpoint: <what...>" when the
// tensor_file was not loaded from a file.
template <class... Parts>
[[noreturn]] void checkpoint_error(const tensor_file& file, const Parts&... what) {
  const std::string message = concat("checkpoint: ", what...);
  if (file.source.empty()) throw ::linrec::Error("linrec: " + message);
  throw_file_error(file.source, message);
}

// shape_of, with errors naming the file and the tensor.
inline Shape shape_of(const tensor_file& file, const named_tensor& t) {
  if (t.shape.size() > static_cast<std::size_t>(Shape::max_rank))
    checkpoint_error(file, "tensor '", printable(t.name), "' has rank ", t.shape.size(), ", more than the maximum ",
                     Shape::max_rank);
  return Shape::from_range(t.shape.begin(), t.shape.end());
}
}  // namespace detail

// Metadata entries a checkpoint must hold: a missing key or a malformed number is a
// linrec::Error naming the file and the key (never std::out_of_range / std::invalid_argument
// from deep inside).
inline const std::string& metadata_string(const tensor_file& file, const std::string& key) {
  const auto it = file.metadata.find(key);
  if (it == file.metadata.end()) detail::checkpoint_error(file, "metadata '", detail::printable(key), "' is missing");
  return it->second;
}
inline std::int64_t metadata_integer(const tensor_file& file, const std::string& key) {
  const std::string& text = metadata_string(file, key);
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size())
    detail::checkpoint_error(file, "metadata '", detail::printable(key), "' = '", detail::printable(text),
                             "' is not an integer");
  return value;
}
inline double metadata_real(const tensor_file& file, const std::string& key) {
  const std::string& text = metadata_string(file, key);
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value))
    detail::checkpoint_error(file, "metadata '", detail::printable(key), "' = '", detail::printable(text),
                             "' is not a finite number");
  return value;
}

// A tensor on a device is copied to the host first: files hold values, not devices.
inline void add_tensor(tensor_file& file, const std::string& name, const Tensor& device_or_host) {
  const Tensor t = device_or_host.to(cpu_device);
  const float* p = t.data();
  file.add(name, detail::shape_vector(t.shape()), std::span<const float>(p, static_cast<std::size_t>(t.numel())));
}

inline void add_parameters(tensor_file& file, const std::vector<Parameter>& params, const std::string& prefix) {
  for (const auto& p : params) add_tensor(file, prefix + p.name(), p.value());
}

// Copies the stored values into the parameters; every name must exist with the same shape.
inline void restore_parameters(const tensor_file& file, const std::vector<Parameter>& params,
                               const std::string& prefix) {
  std::vector<const named_tensor*> found;
  for (const auto& p : params) {
    const named_tensor* t = file.find(prefix + p.name());
    if (t == nullptr)
      detail::checkpoint_error(file, "no tensor '", detail::printable(prefix + p.name()),
                               "' (was it written by another model?)");
    const Shape stored = detail::shape_of(file, *t);
    if (stored != p.value().shape()) {
      std::ostringstream shapes;
      shapes << stored << ", the model expects " << p.value().shape();
      detail::checkpoint_error(file, "tensor '", detail::printable(t->name), "' has shape ", shapes.str());
    }
    found.push_back(t);
  }
  for (std::size_t i = 0; i < params.size(); ++i)  // into the parameter's storage, on its device
    params[i].value().copy_from(Tensor::from_data(params[i].value().shape(), std::span<const float>(found[i]->data)));
}

inline void add_optimizer_state(tensor_file& file, const OptimizerState& state, const std::string& prefix) {
  file.metadata[prefix + "step"] = std::to_string(state.step);
  for (const auto& [name, tensor] : state.tensors) add_tensor(file, prefix + name, tensor);
}

inline OptimizerState optimizer_state_from(const tensor_file& file, const std::string& prefix) {
  OptimizerState state;
  state.step = metadata_integer(file, prefix + "step");
  if (state.step < 0)
    detail::checkpoint_error(file, "metadata '", detail::printable(prefix), "step' = ", state.step, " is negative");
  for (const auto& t : file.tensors())
    if (t.name.starts_with(prefix))
      state.tensors.emplace_back(t.name.substr(prefix.size()),
                                 Tensor::from_data(detail::shape_of(file, t), std::span<const float>(t.data)));
  return state;
}

}  // namespace linrec::io
