// What the scan's streaming (evict-first) output stores cost the kernel after it: a
// producer → scan_forward → reader pipeline like a layer's (a, b computed from x; y = h ⊙ r read
// straight after), each stage timed with events, medians of 200 calls, L2 warm (back to back)
// and cold (clean lines of other data, then a wait). Both kinds of store in one run: the
// public entry point (the policy's streaming_stores) and the same policy with plain stores.
// Not a contract and not part of any table: it backs the comment on store_output
// (detail/cuda_vector.cuh) and docs/notes/cuda_scan.md, v8.
#define EIGEN_NO_CUDA
#include <algorithm>
#include <cstdio>
#include <exception>
#include <vector>

#include "../bench/cuda_bench_support.cuh"  // shared with bench/bench_scan_cuda.cu
#include "linrec/scan/cuda.cuh"

namespace {

using linrec::index_t;
using linrec::bench::device_floats;
namespace cs = linrec::detail::cuda_scan;

// The Hopper policy with plain stores.
struct plain_stores_policy : cs::policy_sm90 {
  static constexpr bool streaming_stores = false;
};

constexpr int grid = 1056, block = 256;  // 8 blocks of 256 per SM on a 132-SM H100

__global__ void produce(const float* x, float* a, float* b, index_t n) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    a[i] = 0.5f + 0.5f / (1.0f + __expf(-v));
    b[i] = 0.25f * v;
  }
}
__global__ void read_h(const float* h, const float* r, float* y, index_t n) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x)
    y[i] = h[i] * r[i];
}

struct pipeline_shape {
  linrec::scan_shape shape;
  bool bct;
  const char* name;
};

}  // namespace

int main() {
  if (!linrec::bench::has_cuda_device("probe_scan_cuda_pipeline")) return 1;
  const pipeline_shape shapes[] = {{{1, 65536, 64}, false, "(1,65536,64) btc"},
                                   {{1, 65536, 64}, true, "(1,64,65536)/bct"},
                                   {{4, 1024, 256}, false, "(4,1024,256) btc"},
                                   {{8, 4096, 1536}, false, "(8,4096,1536) btc"}};
  try {
    linrec::bench::l2_filler l2;
    std::printf(
        "stores: streaming = the public entry point (policy_sm90), plain = plain_stores_policy; "
        "medians of 200 calls, us\n");
    for (const pipeline_shape& s : shapes) {
      const index_t n = s.shape.elements();
      const device_floats x(n, -2, 2, 1), a(n, 0, 1, 2), b(n, 0, 1, 3), h(n, 0, 1, 4), r(n, -1, 1, 5), y(n, 0, 1, 6);
      const linrec::strides3 st = s.bct ? linrec::strides3::bct(s.shape) : linrec::strides3::btc(s.shape);
      const linrec::scan_forward_args<linrec::real_op<float>> args{s.shape, a.get(), st, b.get(), st, h.get(), st};
      cudaEvent_t event[4];
      for (auto& e : event) LINREC_CUDA_CHECK(cudaEventCreate(&e));
      for (const bool plain : {false, true})
        for (const bool cold : {false, true}) {
          std::vector<float> us[4];  // producer, scan, reader, all three
          for (int call = 0; call < 220; ++call) {
            if (cold) {
              l2.clean();
              LINREC_CUDA_CHECK(cudaDeviceSynchronize());
            }
            LINREC_CUDA_CHECK(cudaEventRecord(event[0]));
            produce<<<grid, block>>>(x.get(), a.get(), b.get(), n);
            LINREC_CUDA_CHECK_LAUNCH("produce");
            LINREC_CUDA_CHECK(cudaEventRecord(event[1]));
            if (plain)
              cs::dispatch<cs::policy_chain<plain_stores_policy>>(linrec::cuda{}, args,
                                                                  linrec::scan_algorithm::parallel);
            else
              linrec::scan_forward(linrec::cuda{}, args, linrec::scan_algorithm::parallel);
            LINREC_CUDA_CHECK(cudaEventRecord(event[2]));
            read_h<<<grid, block>>>(h.get(), r.get(), y.get(), n);
            LINREC_CUDA_CHECK_LAUNCH("read_h");
            LINREC_CUDA_CHECK(cudaEventRecord(event[3]));
            LINREC_CUDA_CHECK(cudaEventSynchronize(event[3]));
            if (call < 20) continue;  // warm-up
            float ms = 0;
            for (int k = 0; k < 3; ++k) {
              LINREC_CUDA_CHECK(cudaEventElapsedTime(&ms, event[k], event[k + 1]));
              us[k].push_back(ms * 1e3f);
            }
            LINREC_CUDA_CHECK(cudaEventElapsedTime(&ms, event[0], event[3]));
            us[3].push_back(ms * 1e3f);
          }
          float median[4];
          for (int k = 0; k < 4; ++k) {
            std::sort(us[k].begin(), us[k].end());
            median[k] = us[k][us[k].size() / 2];
          }
          std::printf("%-20s %-9s %s  producer %8.2f  scan %8.2f  reader %8.2f  all %8.2f\n", s.name,
                      plain ? "plain" : "streaming", cold ? "cold" : "warm", median[0], median[1], median[2],
                      median[3]);
        }
      for (auto& e : event) LINREC_CUDA_CHECK(cudaEventDestroy(e));
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "probe_scan_cuda_pipeline: %s\n", error.what());
    return 1;
  }
  return 0;
}
