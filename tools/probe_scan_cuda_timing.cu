// Where the time of a small CUDA scan goes, against `copy`: each call timed four ways
// (medians of 200 calls), for the 4M-element shapes of bench_scan_cuda and one large shape.
//
//   warm event    events around the call, L2 holding whatever the previous call left, the
//                 host's launch latency inside (bench_scan_cuda with LINREC_BENCH_L2=warm)
//   warm gpu      the same, with a spin kernel queued first so that the call is on the device
//                 before the start event fires: device time only
//   cold dirty    L2 filled with dirty lines (a memset of 4× L2) first, as nvbench and
//                 triton.testing.do_bench flush; their write-back lands in the timed call
//   cold clean    L2 filled with clean lines (a read of 4× L2) first; the timed call's own
//                 writes stay in L2 (bench_scan_cuda's default fills L2 the same way, then
//                 waits, and its events include the launch)
//
// Then host time: the runtime calls the dispatcher makes before its launch, and whole calls
// (an empty kernel's launch, the forward scan) made with the device idle.
// Not a contract and not part of any table: it explains bench_scan_cuda's 4M-element numbers
// (docs/notes/cuda_scan.md, v7).
#define EIGEN_NO_CUDA
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "../bench/cuda_bench_support.cuh"  // shared with bench/bench_scan_cuda.cu
#include "linrec/scan/cuda.cuh"

namespace {

using linrec::index_t;
using linrec::bench::device_floats;
using linrec::bench::l2_filler;

__global__ void spin(long long ns) {
  long long start = 0, now = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  while (now - start < ns);
}
__global__ void empty_kernel() {}

enum { warm_event, warm_gpu, cold_dirty, cold_clean, settings };
const char* const setting_names[settings] = {"warm event", "warm gpu", "cold dirty", "cold clean"};

// Median µs per call in each setting.
template <class Call>
std::vector<double> time_call(l2_filler& l2, Call call) {
  linrec::bench::event_timer timer;
  std::vector<double> medians;
  for (int i = 0; i < 10; ++i) call();  // first-use costs (module load, scratch) stay out
  LINREC_CUDA_CHECK(cudaDeviceSynchronize());
  for (int setting = 0; setting < settings; ++setting) {
    std::vector<float> us;
    for (int i = 0; i < 200; ++i) {
      if (setting == warm_gpu) {
        spin<<<1, 1>>>(40000);
        LINREC_CUDA_CHECK_LAUNCH("spin");
      }
      if (setting == cold_dirty) l2.dirty();
      if (setting == cold_clean) l2.clean();
      us.push_back(timer.milliseconds(call) * 1e3f);
    }
    std::sort(us.begin(), us.end());
    medians.push_back(us[us.size() / 2]);
  }
  return medians;
}

void report(const char* name, const std::vector<double>& us, double bytes, const std::vector<double>* copy_us,
            double copy_bytes) {
  std::printf("%-34s", name);
  for (int s = 0; s < settings; ++s) {
    const double gbs = bytes / us[std::size_t(s)] / 1e3;
    if (copy_us)
      std::printf(" | %6.2f us %5.0f GB/s %3.0f%%", us[std::size_t(s)], gbs,
                  100 * gbs / (copy_bytes / (*copy_us)[std::size_t(s)] / 1e3));
    else
      std::printf(" | %6.2f us %5.0f GB/s     ", us[std::size_t(s)], gbs);
  }
  std::printf("\n");
}

// One shape: copy, forward and backward (parallel), in bench_scan_cuda's byte convention.
void shape_rows(l2_filler& l2, const linrec::scan_shape& shape, bool bct) {
  const index_t n = shape.elements();
  const linrec::strides3 st = bct ? linrec::strides3::bct(shape) : linrec::strides3::btc(shape);
  const device_floats a(n, 0.5f, 1.0f, 1), b(n, -1, 1, 2), h(n, 0, 1, 3), dh(n, -1, 1, 4), da(n, 0, 1, 5),
      db(n, 0, 1, 6);
  const linrec::scan_forward_args<linrec::real_op<float>> fwd{shape, a.get(), st, b.get(), st, h.get(), st};
  const linrec::scan_backward_args<linrec::real_op<float>> bwd{
      shape, a.get(), st, h.get(), st, nullptr, dh.get(), st, nullptr, da.get(), st, db.get(), st};
  char label[96];
  const auto copy_us = time_call(
      l2, [&] { LINREC_CUDA_CHECK(cudaMemcpyAsync(da.get(), b.get(), std::size_t(n) * 4, cudaMemcpyDeviceToDevice)); });
  const auto fwd_us =
      time_call(l2, [&] { linrec::scan_forward(linrec::cuda{}, fwd, linrec::scan_algorithm::parallel); });
  const auto bwd_us =
      time_call(l2, [&] { linrec::scan_backward(linrec::cuda{}, bwd, linrec::scan_algorithm::parallel); });
  const char* layout = bct ? "/bct" : "";
  std::snprintf(label, sizeof label, "copy/%lld/%lld/%lld%s", (long long)shape.batch, (long long)shape.time,
                (long long)shape.channels, layout);
  report(label, copy_us, 8.0 * double(n), nullptr, 0);
  std::snprintf(label, sizeof label, "forward/%lld/%lld/%lld%s", (long long)shape.batch, (long long)shape.time,
                (long long)shape.channels, layout);
  report(label, fwd_us, 12.0 * double(n), &copy_us, 8.0 * double(n));
  std::snprintf(label, sizeof label, "backward/%lld/%lld/%lld%s", (long long)shape.batch, (long long)shape.time,
                (long long)shape.channels, layout);
  report(label, bwd_us, 20.0 * double(n), &copy_us, 8.0 * double(n));
}

// Host-only calls: the mean over many.
template <class F>
double host_us_per_call(F f, int calls = 20000) {
  for (int i = 0; i < 100; ++i) f();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) f();
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::micro>(t1 - t0).count() / calls;
}

// Calls that enqueue device work: the median of single calls, each made with the device idle
// (a queue of pending launches would make the host wait for the device).
template <class F>
double enqueue_us(F f) {
  std::vector<double> us;
  for (int i = 0; i < 500; ++i) {
    LINREC_CUDA_CHECK(cudaDeviceSynchronize());
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  LINREC_CUDA_CHECK(cudaDeviceSynchronize());
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

}  // namespace

int main() {
  if (!linrec::bench::has_cuda_device("probe_scan_cuda_timing")) return 1;
  l2_filler l2;
  std::printf("%-34s", "median of 200 calls");
  for (const char* s : setting_names) std::printf(" | %-27s", s);
  std::printf("\n");
  shape_rows(l2, {1, 65536, 64}, false);
  shape_rows(l2, {1, 65536, 64}, true);
  shape_rows(l2, {8, 4096, 1536}, false);
  const auto empty_us = time_call(l2, [] {
    empty_kernel<<<512, 256>>>();
    LINREC_CUDA_CHECK_LAUNCH("empty_kernel");
  });
  std::printf("%-34s", "empty kernel (512 blocks)");
  for (double us : empty_us) std::printf(" | %6.2f us                   ", us);
  std::printf("\n\nhost µs per call:");
  device_floats x(1 << 20, 0, 1, 7);
  cudaPointerAttributes attributes{};
  cudaStreamCaptureStatus capture{};
  unsigned long long stream_id = 0;
  int device = 0;
  std::printf(" cudaPointerGetAttributes %.3f,",
              host_us_per_call([&] { (void)cudaPointerGetAttributes(&attributes, x.get()); }));
  std::printf(" cudaStreamIsCapturing %.3f,",
              host_us_per_call([&] { (void)cudaStreamIsCapturing(nullptr, &capture); }));
  std::printf(" cudaStreamGetId %.3f,", host_us_per_call([&] { (void)cudaStreamGetId(nullptr, &stream_id); }));
  std::printf(" cudaGetDevice %.3f", host_us_per_call([&] { (void)cudaGetDevice(&device); }));
  std::printf("\nhost µs per call, device idle before it (medians of 500):");
  std::printf(" empty kernel launch %.2f,", enqueue_us([] {
                empty_kernel<<<512, 256>>>();
                LINREC_CUDA_CHECK_LAUNCH("empty_kernel");
              }));
  const linrec::scan_shape shape{1, 65536, 64};
  const device_floats a(shape.elements(), 0.5f, 1.0f, 8), b(shape.elements(), -1, 1, 9), h(shape.elements(), 0, 1, 10);
  for (const bool bct : {false, true}) {
    const linrec::strides3 st = bct ? linrec::strides3::bct(shape) : linrec::strides3::btc(shape);
    const linrec::scan_forward_args<linrec::real_op<float>> fwd{shape, a.get(), st, b.get(), st, h.get(), st};
    std::printf(" scan_forward (1,65536,64)%s %.2f%s", bct ? "/bct" : "",
                enqueue_us([&] { linrec::scan_forward(linrec::cuda{}, fwd, linrec::scan_algorithm::parallel); }),
                bct ? "\n" : ",");
  }
  return 0;
}
