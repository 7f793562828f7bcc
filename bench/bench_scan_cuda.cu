// CUDA scan throughput. Same contract as bench_scan (names and arguments are compared across
// versions): copy (device-to-device), scan_forward/{sequential,parallel,auto},
// scan_backward/{sequential,parallel,auto}; arguments batch, time, channels; bytes = the
// minimum each must move (copy 8, forward 12, backward 20 per element), so bytes_per_second
// reads against `copy`. Names ending in /bct use the [B,C,T] layout (time contiguous), the
// others [B,T,C]. `auto` is the dispatcher's own choice. Timing: CUDA events around each
// iteration (manual time); inputs are random (never zeros), generated on the device.
//
// LINREC_BENCH_L2 = warm (default, the contract) | cold: what L2 holds when a timed call
// starts. `warm` is whatever the previous iteration left there. At 4M elements that is all of
// `copy`'s working set (2 × 16 MB in the H100's 50 MB L2): its device time there is at HBM3's
// peak rate or above. The forward scan's 48 MB and the backward's 80 MB do not stay (each
// call also writes back the previous call's outputs: probe_scan_cuda_timing). `cold` first
// reads a buffer of 4× the L2 size (L2 then holds only clean lines of other data; the TLB is
// swept too) and waits for that read. The event timing, launch latency included, is the same
// in both modes. The JSON context records the mode.
#define EIGEN_NO_CUDA
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "linrec/scan/cuda.cuh"

namespace {

using linrec::index_t;
using linrec::scan_algorithm;
using linrec::scan_shape;
using linrec::strides3;

struct shape_entry {
  std::int64_t batch, time, channels;
  bool bct;
  bool sequential;  // false where one thread per sequence would run for many seconds
};

// (B, T, C) as arguments; the /bct shapes are the issue's (B, C, T) = (8,1536,4096),
// (8,1536,65536), (1,64,65536).
const std::vector<shape_entry> shapes = {
    {8, 4096, 1536, false, true},  {64, 1024, 1024, false, true}, {1, 65536, 64, false, true},
    {1, 67108864, 1, false, false}, {8, 4096, 1536, true, true},  {8, 65536, 1536, true, true},
    {1, 65536, 64, true, true}};

scan_shape shape_of(const benchmark::State& state) { return {state.range(0), state.range(1), state.range(2)}; }

// Uniform numbers in [lo, hi) from a hash of the index: deterministic, nowhere zero-filled.
__global__ void fill_uniform(float* out, index_t n, float lo, float hi, std::uint32_t seed) {
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    std::uint32_t x = std::uint32_t(i) * 0x9E3779B9u ^ std::uint32_t(i >> 32) * 0x85EBCA6Bu ^ seed;
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    out[i] = lo + (hi - lo) * float(x >> 8) * (1.0f / 16777216.0f);
  }
}

class device_floats {
 public:
  device_floats(index_t n, float lo, float hi, std::uint32_t seed) : n_(n) {
    LINREC_CUDA_CHECK(cudaMalloc(&ptr_, std::size_t(n) * sizeof(float)));
    fill_uniform<<<2048, 256>>>(ptr_, n, lo, hi, seed);
    LINREC_CUDA_CHECK_LAUNCH("fill_uniform");
  }
  device_floats(const device_floats&) = delete;
  device_floats& operator=(const device_floats&) = delete;
  ~device_floats() { cudaFree(ptr_); }
  float* get() const { return ptr_; }

 private:
  float* ptr_ = nullptr;
  index_t n_;
};

__global__ void read_all(const float4* in, index_t n, float* sink) {
  float sum = 0;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const float4 v = __ldcg(in + i);
    sum += v.x + v.y + v.z + v.w;
  }
  if (sum == 1234.5f) *sink = sum;  // the compiler cannot know the sum, so the loads stay
}

// LINREC_BENCH_L2=cold: evicts the timed call's operands by reading 4× L2 of other memory.
class l2_evictor {
 public:
  l2_evictor() {
    int device = 0, l2 = 0;
    LINREC_CUDA_CHECK(cudaGetDevice(&device));
    LINREC_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    LINREC_CUDA_CHECK(cudaDeviceGetAttribute(&blocks_, cudaDevAttrMultiProcessorCount, device));
    vectors_ = index_t(4) * l2 / 16;
    LINREC_CUDA_CHECK(cudaMalloc(&buffer_, std::size_t(vectors_) * 16));
    LINREC_CUDA_CHECK(cudaMemset(buffer_, 0, std::size_t(vectors_) * 16));
  }
  l2_evictor(const l2_evictor&) = delete;
  l2_evictor& operator=(const l2_evictor&) = delete;
  ~l2_evictor() { cudaFree(buffer_); }
  void evict() {
    read_all<<<unsigned(blocks_ * 8), 256>>>(buffer_, vectors_, reinterpret_cast<float*>(buffer_));
    LINREC_CUDA_CHECK_LAUNCH("read_all");
    LINREC_CUDA_CHECK(cudaDeviceSynchronize());
  }

 private:
  float4* buffer_ = nullptr;
  index_t vectors_ = 0;
  int blocks_ = 0;
};

bool cold_l2 = false;

// One per process: 4× L2 of device memory, allocated on first use.
l2_evictor& evictor() {
  static l2_evictor instance;
  return instance;
}

// Times `run` with CUDA events, one warm-up call first.
template <class Run>
void time_iterations(benchmark::State& state, Run run) {
  cudaEvent_t start, stop;
  LINREC_CUDA_CHECK(cudaEventCreate(&start));
  LINREC_CUDA_CHECK(cudaEventCreate(&stop));
  run();
  LINREC_CUDA_CHECK(cudaDeviceSynchronize());
  for (auto _ : state) {
    if (cold_l2) evictor().evict();
    LINREC_CUDA_CHECK(cudaEventRecord(start));
    run();
    LINREC_CUDA_CHECK(cudaEventRecord(stop));
    LINREC_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    LINREC_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(double(ms) / 1e3);
  }
  LINREC_CUDA_CHECK(cudaEventDestroy(start));
  LINREC_CUDA_CHECK(cudaEventDestroy(stop));
}

void copy(benchmark::State& state) {
  const index_t n = shape_of(state).elements();
  const device_floats src(n, -1, 1, 1), dst(n, 0, 1, 2);
  time_iterations(state, [&] {
    LINREC_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), std::size_t(n) * sizeof(float), cudaMemcpyDeviceToDevice));
  });
  state.SetBytesProcessed(state.iterations() * n * 8);
}

void scan_forward(benchmark::State& state, scan_algorithm algorithm, bool bct) {
  const scan_shape shape = shape_of(state);
  const index_t n = shape.elements();
  const device_floats a(n, 0.5f, 1.0f, 3), b(n, -1, 1, 4), h(n, 0, 1, 5);
  const strides3 st = bct ? strides3::bct(shape) : strides3::btc(shape);
  const linrec::scan_forward_args<linrec::real_op<float>> args{shape, a.get(), st, b.get(), st, h.get(), st};
  time_iterations(state, [&] { linrec::scan_forward(linrec::cuda{}, args, algorithm); });
  state.SetBytesProcessed(state.iterations() * n * 12);
}

void scan_backward(benchmark::State& state, scan_algorithm algorithm, bool bct) {
  const scan_shape shape = shape_of(state);
  const index_t n = shape.elements();
  const device_floats a(n, 0.5f, 1.0f, 6), h(n, -1, 1, 7), dh(n, -1, 1, 8), da(n, 0, 1, 9), db(n, 0, 1, 10);
  const strides3 st = bct ? strides3::bct(shape) : strides3::btc(shape);
  const linrec::scan_backward_args<linrec::real_op<float>> args{
      shape, a.get(), st, h.get(), st, nullptr, dh.get(), st, nullptr, da.get(), st, db.get(), st};
  time_iterations(state, [&] { linrec::scan_backward(linrec::cuda{}, args, algorithm); });
  state.SetBytesProcessed(state.iterations() * n * 20);
}

void register_all() {
  const struct {
    const char* name;
    scan_algorithm algorithm;
  } algorithms[] = {{"sequential", scan_algorithm::sequential},
                    {"parallel", scan_algorithm::parallel},
                    {"auto", scan_algorithm::automatic}};
  auto setup = [](benchmark::internal::Benchmark* bench, const shape_entry& s) {
    bench->Args({s.batch, s.time, s.channels})->UseManualTime()->Unit(benchmark::kMillisecond);
  };
  for (const auto& s : shapes) {
    const std::string suffix = s.bct ? "/bct" : "";
    setup(benchmark::RegisterBenchmark(("copy" + suffix).c_str(), copy), s);
    for (const auto& alg : algorithms) {
      if (alg.algorithm == scan_algorithm::sequential && !s.sequential) continue;
      setup(benchmark::RegisterBenchmark((std::string("scan_forward/") + alg.name + suffix).c_str(), scan_forward,
                                         alg.algorithm, s.bct),
            s);
      setup(benchmark::RegisterBenchmark((std::string("scan_backward/") + alg.name + suffix).c_str(), scan_backward,
                                         alg.algorithm, s.bct),
            s);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const char* l2 = std::getenv("LINREC_BENCH_L2");
  const std::string l2_mode = l2 && *l2 ? l2 : "warm";
  if (l2_mode != "warm" && l2_mode != "cold") {
    std::fprintf(stderr, "bench_scan_cuda: LINREC_BENCH_L2 is '%s'; expected warm or cold\n", l2_mode.c_str());
    return 1;
  }
  cold_l2 = l2_mode == "cold";
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "bench_scan_cuda: no usable CUDA device\n");
    return 1;
  }
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("l2", l2_mode);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
