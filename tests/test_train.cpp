// The trainer (train/trainer.hpp): a run interrupted at any step, checkpointed through a
// safetensors file and resumed in a fresh trainer continues the identical trajectory (bitwise
// losses and parameters) for RWKV-4, RWKV-6 and RWKV-6 with carried state and accumulation;
// the gradient hook sees every parameter once per step and what it does reaches the update;
// restore refuses other hyper-parameters, naming the first difference.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "linrec/io/safetensors.hpp"
#include "linrec/train/run_files.hpp"
#include "linrec/train/trainer.hpp"

using namespace linrec;

namespace {

std::vector<std::uint8_t> random_text(std::size_t n, std::uint64_t seed) {
  rng gen(seed);
  std::vector<std::uint8_t> text(n);
  for (auto& c : text) c = static_cast<std::uint8_t>('a' + gen.below(20));
  return text;
}

train::train_config small_config(int version, bool carry, std::int64_t accum) {
  train::train_config c;
  c.model = {.version = version, .vocab = 256, .dim = 16, .layers = 2, .head_size = 8};
  c.ctx = 12;
  c.batch = 3;
  c.accum = accum;
  c.warmup = 2;
  c.steps = 9;
  c.carry_state = carry;
  c.eval_tokens = 200;
  return c;
}

bool same_bits(const std::vector<Parameter>& a, const std::vector<Parameter>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto& x = a[i].value();
    const auto& y = b[i].value();
    if (x.shape() != y.shape() ||
        std::memcmp(x.data(), y.data(), static_cast<std::size_t>(x.numel()) * sizeof(float)) != 0)
      return false;
  }
  return true;
}

std::filesystem::path temp_checkpoint(const std::string& name) {
  return std::filesystem::temp_directory_path() / ("linrec_test_train_" + name + ".safetensors");
}

}  // namespace

TEST_CASE("trainer: an interrupted and resumed run continues the identical trajectory", "[train]") {
  const auto text = random_text(5000, 11);
  const auto validation = random_text(400, 12);
  struct run_kind {
    int version;
    bool carry;
    std::int64_t accum;
  };
  for (const auto kind : {run_kind{6, false, 1}, run_kind{4, false, 1}, run_kind{6, true, 2}, run_kind{4, true, 2}}) {
    const auto config = small_config(kind.version, kind.carry, kind.accum);
    INFO("RWKV-" << kind.version << (kind.carry ? " carry-state" : "") << " accum " << kind.accum);
    train::trainer straight(config, text, cpu{2});
    std::vector<double> straight_losses;
    while (straight.progress().step < config.steps) straight_losses.push_back(straight.step().loss);
    const double straight_val = straight.evaluate(validation);

    for (std::int64_t stop : {1, 4, 8}) {
      INFO("interrupted after step " << stop);
      const auto path = temp_checkpoint(std::to_string(kind.version) + "_" + std::to_string(stop));
      std::vector<double> losses;
      {
        train::trainer first(config, text, cpu{2});
        while (first.progress().step < stop) losses.push_back(first.step().loss);
        io::save_safetensors(path, first.checkpoint());
      }
      train::trainer resumed(config, text, cpu{1});  // another thread count: still the same numbers
      resumed.restore(io::load_safetensors(path));
      std::filesystem::remove(path);
      CHECK(resumed.progress().step == stop);
      CHECK(resumed.progress().tokens == stop * config.batch * config.accum * config.ctx);
      while (resumed.progress().step < config.steps) losses.push_back(resumed.step().loss);
      REQUIRE(losses.size() == straight_losses.size());
      for (std::size_t i = 0; i < losses.size(); ++i) {
        INFO("step " << i + 1);
        CHECK(std::memcmp(&losses[i], &straight_losses[i], sizeof(double)) == 0);
      }
      CHECK(same_bits(resumed.model().parameters(), straight.model().parameters()));
      CHECK(resumed.evaluate(validation) == straight_val);
    }
  }
}

TEST_CASE("trainer: the losses fall on learnable text", "[train]") {
  std::vector<std::uint8_t> text;
  for (int i = 0; i < 3000; ++i) text.push_back(static_cast<std::uint8_t>("abcab"[i % 5]));
  auto config = small_config(6, false, 1);
  config.steps = 40;
  config.lr = 1e-2;
  train::trainer t(config, text);
  const double first = t.step().loss;
  double last = first;
  while (t.progress().step < config.steps) last = t.step().loss;
  INFO(first << " -> " << last);
  CHECK(first > 4.0);  // ≈ ln 256 at init
  CHECK(last < 1.0);
}

TEST_CASE("trainer: stateful evaluation carries the state across windows, as one long pass would", "[train]") {
  for (const int version : {4, 6}) {
    INFO("RWKV-" << version);
    const auto text = random_text(3100, 21);  // validation: the last 1100 bytes
    auto config = small_config(version, false, 1);
    config.eval_tokens = 1000;  // span 1000: 3 segments (global batch) of 27 windows of 12 = 324 bytes
    train::trainer t(config, std::span(text).first(2000));
    for (int s = 0; s < 3; ++s) t.step();
    const auto validation = std::span<const std::uint8_t>(text).subspan(2000);
    const double stateful = t.evaluate_stateful(validation);
    // The reference: each segment in one forward pass of 324 bytes from the empty state.
    const std::int64_t segments = 3, length = 324;
    std::vector<std::int32_t> ids, targets;
    for (std::int64_t r = 0; r < segments; ++r)
      for (std::int64_t i = 0; i < length; ++i) {
        ids.push_back(validation[std::size_t(r * length + i)]);
        targets.push_back(validation[std::size_t(r * length + i + 1)]);
      }
    Tape tape(grad_mode::off);
    const double one_pass = t.model().loss(tape, ids, targets, segments, length, {}, cpu{}).first.item();
    CHECK(stateful == Approx(one_pass).epsilon(1e-5));
    // The windowed evaluation restarts every 12 bytes: on text with structure across windows it
    // scores differently (here: a different number, whatever its sign on random text).
    CHECK(t.evaluate(validation) != Approx(stateful).epsilon(1e-4));
  }
}

TEST_CASE("trainer: the gradient hook runs once per step, before clipping and the update", "[train]") {
  const auto text = random_text(3000, 5);
  auto config = small_config(6, false, 2);
  config.steps = 3;
  int calls = 0;
  std::size_t seen = 0;
  train::trainer_hooks zeroing{[&](const std::vector<Parameter>& params) {
    ++calls;
    seen = params.size();
    for (const auto& p : params) as_array(p.grad()).setZero();  // a hook's change reaches the update
  }};
  train::trainer hooked(config, text, {}, zeroing);
  const auto before = hooked.model().parameters();
  std::vector<Tensor> initial;
  for (const auto& p : before) initial.push_back(p.value().clone());
  hooked.step();
  CHECK(calls == 1);
  CHECK(seen == hooked.model().parameters().size());
  // Zero gradients: AdamW's moments stay zero, so only weight decay moves the matrices and
  // the no-decay parameters (norms, time_*, embedding) stay bitwise where they were.
  const auto after = hooked.model().parameters();
  std::size_t unchanged = 0;
  for (std::size_t i = 0; i < after.size(); ++i)
    unchanged += std::memcmp(after[i].value().data(), initial[i].data(),
                             static_cast<std::size_t>(initial[i].numel()) * sizeof(float)) == 0;
  CHECK(unchanged > 0);
  CHECK(unchanged < after.size());  // the decayed matrices did move
}

TEST_CASE("trainer: restore refuses another run's checkpoint and names the difference", "[train]") {
  const auto text = random_text(3000, 9);
  train::trainer a(small_config(6, false, 1), text);
  a.step();
  const auto file = a.checkpoint();
  auto other = small_config(6, false, 1);
  other.lr = 1e-3;
  train::trainer b(other, text);
  try {
    b.restore(file);
    FAIL("restore accepted a checkpoint with another learning rate");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("lr = 0.003") && Catch::Contains("this run has 0.001"));
  }
  CHECK(b.progress().step == 0);  // nothing restored
}

TEST_CASE("trainer: bad configurations are errors naming the value", "[train]") {
  const auto text = random_text(3000, 9);
  auto config = small_config(6, false, 1);
  config.model.head_size = 0;
  CHECK_THROWS_WITH(train::trainer(config, text), Catch::Contains("head_size"));
  config = small_config(6, false, 1);
  config.on = cuda_device(0);
  CHECK_THROWS_WITH(train::trainer(config, text), Catch::Contains("cuda:0"));
}

TEST_CASE("trainer: checkpoints with damaged or inconsistent metadata are refused before anything is built",
          "[train]") {
  const auto text = random_text(3000, 4);
  train::trainer t(small_config(6, false, 1), text);
  t.step();
  const auto good = t.checkpoint();
  CHECK_NOTHROW(train::check_checkpoint(good));
  struct edit {
    std::string key, value, expected;
  };
  const std::vector<edit> edits = {
      {"format", "something.else", "format"},
      {"step", "-3", "step"},
      {"step", "2", "optim.step 1 differs from step 2"},
      {"tokens", "-36", "tokens -36 is not step 1"},
      {"seconds", std::string(300, '9'), "seconds"},
      {"config", R"({"version":6,"dim":16,"layers":1000000,"head_size":8})", "layers 1000000"},
      {"config", R"({"version":6,"dim":16,"layers":3,"head_size":8})", "no tensor 'model.blocks.2.ln1.weight'"},
      {"config", R"({"version":6,"dim":16,"layers":1,"head_size":8})", "more blocks"},
      {"config", R"({"version":6,"dim":32,"layers":2,"head_size":8})", "model.emb.weight"},
      {"config", R"({"version":6,"dim":16,"layers":2,"head_size":0})", "head_size 0"},
      {"config", R"({"version":5,"dim":16,"layers":2,"head_size":8})", "version 5"},
      {"config", R"({"version":6,"dim":16,"layers":2,"head_size":8,"ctx":-1})", "ctx"},
  };
  for (const auto& e : edits) {
    INFO(e.key << " = " << e.value);
    auto bad = good;
    bad.metadata[e.key] = e.value;
    CHECK_THROWS_WITH(train::check_checkpoint(bad), Catch::Contains(e.expected));
    train::trainer fresh(small_config(6, false, 1), text);
    CHECK_THROWS(fresh.restore(bad));
    CHECK(fresh.progress().step == 0);
  }
}

TEST_CASE("run files: the log is cut back to a step atomically, partial lines dropped", "[train]") {
  const auto path = std::filesystem::temp_directory_path() / "linrec_test_cut_log.jsonl";
  {
    std::ofstream out(path, std::ios::binary);
    out << "{\"step\":1,\"x\":1}\n{\"step\":2,\"x\":2}\n{\"step\":3,\"x\":3}\nnot json\n{\"step\":4,\"tr";
  }
  CHECK(train::cut_log(path, 2) == 3);
  std::ifstream in(path, std::ios::binary);
  const std::string kept((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(kept == "{\"step\":1,\"x\":1}\n{\"step\":2,\"x\":2}\n");
  CHECK(train::cut_log(path, 2) == 0);  // nothing after the step: the file is left as it is
  std::filesystem::remove(path);
  CHECK(train::cut_log(path, 2) == 0);  // no log yet: nothing to cut
}

TEST_CASE("run files: outputs that alias the data are refused", "[train]") {
  const auto dir = std::filesystem::temp_directory_path() / "linrec_test_alias";
  std::filesystem::create_directories(dir / "data");
  CHECK(train::path_within(dir / "data" / "x.jsonl", dir / "data"));
  CHECK(train::path_within(dir / "data", dir / "data" / ""));
  CHECK_FALSE(train::path_within(dir / "database.jsonl", dir / "data"));
  CHECK_FALSE(train::path_within(dir / "data", dir / "data" / "x.txt"));
  CHECK_THROWS_WITH(train::check_outputs_apart(dir / "data", dir / "data" / "log.jsonl", {}), Catch::Contains("--log"));
  CHECK_THROWS_WITH(train::check_outputs_apart(dir / "data", {}, dir / "data" / "ck"), Catch::Contains("--ckpt"));
  CHECK_NOTHROW(train::check_outputs_apart(dir / "data", dir / "log.jsonl", dir / "ck"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("run files: one process per folder, previous checkpoint kept, stale temporaries removed", "[train]") {
  const auto dir = std::filesystem::temp_directory_path() / "linrec_test_run_files";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  {
    train::run_lock lock(dir / ".lock", "the folder");
    // flock locks belong to the open file description: a second open, even in this process,
    // conflicts, as a second process would.
    CHECK_THROWS_WITH(train::run_lock(dir / ".lock", "the folder"), Catch::Contains("another process is using"));
  }
  CHECK_NOTHROW(train::run_lock(dir / ".lock", "the folder"));  // released with the first
  const auto text = random_text(3000, 8);
  train::trainer t(small_config(4, false, 1), text);
  t.step();
  train::save_keeping_previous(dir, t.checkpoint());
  CHECK_FALSE(std::filesystem::exists(dir / "previous.safetensors"));
  t.step();
  train::save_keeping_previous(dir, t.checkpoint());
  CHECK(io::metadata_integer(io::load_safetensors(dir / "latest.safetensors"), "step") == 2);
  CHECK(io::metadata_integer(io::load_safetensors(dir / "previous.safetensors"), "step") == 1);
  std::ofstream(dir / ".latest.safetensors.tmp.Ab12Cd") << "half a checkpoint";
  std::ofstream(dir / "notes.txt") << "kept";
  CHECK(train::remove_stale_temporaries(dir) == 1);
  CHECK(std::filesystem::exists(dir / "notes.txt"));
  std::filesystem::remove_all(dir);
}
