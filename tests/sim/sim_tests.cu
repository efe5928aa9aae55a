/* Standalone tests of the CUDA simulator (csrc/sim/cuda_sim.h) and the PTX wrappers
   (csrc/cuda/kernels/ptx.cuh), using the kernels of tests/sim/sim_selftest.cuh.
   Built by tests/sim/run.sh as C++ with the simulator force-included, three ways: fibers
   (-O2), fibers under ASan+UBSan, OS threads under TSan.

   Usage: sim_tests [NAME...]      run all tests, or those whose name contains NAME
          sim_tests --race         run the racy kernel (ThreadSanitizer must report it)
          sim_tests --oob          run the out-of-bounds kernel (AddressSanitizer must report it) */
#include "sim_selftest.cuh"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace sim_selftest;

// ---- a minimal test runner --------------------------------------------------------------------
namespace {
struct Failure {
  std::string what;
};
struct TestCase {
  const char* name;
  void (*fn)();
};
std::vector<TestCase>& tests() {
  static std::vector<TestCase> t;
  return t;
}
struct Register {
  Register(const char* name, void (*fn)()) { tests().push_back({name, fn}); }
};
#define TEST(name)                                  \
  static void test_##name();                        \
  static Register register_##name(#name, test_##name); \
  static void test_##name()
#define CHECK(cond)                                                                                  \
  do {                                                                                               \
    if (!(cond)) throw Failure{std::string(__FILE__ ":") + std::to_string(__LINE__) + ": " #cond}; \
  } while (0)
#define CHECK_NEAR(a, b, tol)                                                                            \
  do {                                                                                                   \
    const double a_ = (a), b_ = (b);                                                                     \
    if (!(std::fabs(a_ - b_) <= (tol)))                                                                  \
      throw Failure{std::string(__FILE__ ":") + std::to_string(__LINE__) + ": " #a " = " +              \
                    std::to_string(a_) + ", expected " + std::to_string(b_)};                           \
  } while (0)

// Runs f, which must throw cudasim::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& f, std::initializer_list<const char*> parts) {
  try {
    f();
  } catch (const cudasim::Error& e) {
    for (const char* p : parts)
      if (!std::strstr(e.what(), p)) throw Failure{std::string("error message lacks \"") + p + "\": " + e.what()};
    return;
  }
  throw Failure{"expected a cudasim::Error"};
}

std::vector<float> random_floats(std::size_t n, unsigned seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}
}  // namespace

// ---- tests ------------------------------------------------------------------------------------
TEST(sgemm_tiled_shared_memory) {
  for (auto [M, N, K] : {std::tuple{70, 45, 83}, std::tuple{1, 1, 1}, std::tuple{32, 16, 17}}) {
    auto A = random_floats((std::size_t)M * K, 1), B = random_floats((std::size_t)K * N, 2);
    std::vector<float> C((std::size_t)M * N, 0.f);
    constexpr int T = 16;
    LAUNCH(sgemm_tiled<T>, dim3((N + T - 1) / T, (M + T - 1) / T), dim3(T, T), 0, 0, A.data(), B.data(),
           C.data(), M, N, K);
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        double ref = 0;
        for (int k = 0; k < K; ++k) ref += (double)A[i * K + k] * B[k * N + j];
        CHECK_NEAR(C[i * N + j], ref, 1e-4);
      }
  }
}

TEST(softmax_warp_shuffles_early_return) {
  const int rows = 37, cols = 100;  // 8 warps per block: the last block has idle warps
  auto X = random_floats((std::size_t)rows * cols, 3, -4.f, 4.f);
  std::vector<float> Y(X.size(), 0.f);
  LAUNCH(softmax_rows, dim3((rows + 7) / 8), dim3(256), 0, 0, X.data(), Y.data(), rows, cols);
  for (int r = 0; r < rows; ++r) {
    double m = -1e30, s = 0;
    for (int c = 0; c < cols; ++c) m = std::max(m, (double)X[r * cols + c]);
    for (int c = 0; c < cols; ++c) s += std::exp(X[r * cols + c] - m);
    for (int c = 0; c < cols; ++c) CHECK_NEAR(Y[r * cols + c], std::exp(X[r * cols + c] - m) / s, 1e-6);
  }
}

TEST(block_reduce_dyn_smem_atomics_syncthreads_count) {
  const int n = 1000;
  auto X = random_floats(n, 4);
  double ref = 0;
  int pos_ref = 0;
  for (float v : X) ref += v, pos_ref += v > 0.f;
  float sum = 0.f;
  int positives = 0;
  LAUNCH(block_reduce, dim3(8), dim3(128), 128 * sizeof(float), 0, X.data(), n, &sum, &positives);
  CHECK_NEAR(sum, ref, 1e-3);
  CHECK(positives == pos_ref);
}

TEST(half_and_bfloat16) {
  const int n = 300;
  std::vector<__half> xh(n), yh(n);
  std::vector<__nv_bfloat16> xb(n), yb(n);
  for (int i = 0; i < n; ++i) {
    xh[i] = __float2half(i * 0.01f), yh[i] = __float2half(1.f);
    xb[i] = __float2bfloat16(i * 0.01f), yb[i] = __float2bfloat16(1.f);
  }
  LAUNCH(axpy_16bit, dim3((n + 127) / 128), dim3(128), 0, 0, 2.f, xh.data(), yh.data(), xb.data(), yb.data(), n);
  for (int i = 0; i < n; ++i) {
    CHECK_NEAR(__half2float(yh[i]), 1.0 + 2.0 * i * 0.01, 1e-2);
    CHECK_NEAR(__bfloat162float(yb[i]), 1.0 + 2.0 * i * 0.01, 4e-2);
  }
}

TEST(shuffles_votes_widths_partial_masks) {
  for (int width : {32, 16, 8, 1})
    for (int src : {0, 5, 37}) {
      std::vector<int> out(32 * 12, 0);
      LAUNCH(warp_ops, dim3(1), dim3(32), 0, 0, out.data(), width, src);
      for (int l = 0; l < 32; ++l) {
        const int* o = &out[l * 12];
        const int base = l & ~(width - 1);
        CHECK(o[0] == 100 + base + (src & (width - 1)));
        CHECK(o[1] == 100 + (l - 3 >= base ? l - 3 : l));
        CHECK(o[2] == 100 + (l + 3 < base + width ? l + 3 : l));
        CHECK(o[3] == 100 + ((l ^ 5) < base + width ? (l ^ 5) : l));
        CHECK((unsigned)o[4] == 0x49249249u);
        CHECK(o[5] == 1);
        CHECK(o[6] == 1);
        CHECK(o[7] == 0);
        CHECK(o[8] == 100 + (l ^ 1));
        CHECK((unsigned)o[9] == (l < 16 ? 0x0000aaaau : 0xaaaa0000u));
        CHECK((unsigned)o[10] == 0xffffffffu);
        CHECK(o[11] == 31 - l);
      }
    }
}

TEST(partial_warp_reads_missing_lanes_as_fill) {
  // 20 threads: lanes 20..31 do not exist; reading them yields the 0xFF fill (-1 as int).
  std::vector<int> out(20 * 12, 0);
  LAUNCH(warp_ops, dim3(1), dim3(20), 0, 0, out.data(), 32, 25);
  for (int l = 0; l < 20; ++l) {
    CHECK(out[l * 12 + 0] == -1);
    CHECK((unsigned)out[l * 12 + 10] == 0x000fffffu);
  }
}

TEST(early_exit_drops_out_of_barriers) {
  for (int live : {256, 200, 33, 1}) {
    std::vector<int> out(4, 0);
    LAUNCH(early_exit, dim3(2), dim3(256), 0, 0, out.data(), live, 4);
    const int warp0 = std::min(live, 32);
    for (int r = 0; r < 4; ++r) CHECK(out[r] == live * (r + 1) * 100 + warp0);
  }
}

TEST(atomics_all_types) {
  const int blocks = 3, threads = 64, n = blocks * threads;
  int fi[7] = {0, 0, 0, 0, 0, -1, 0};
  unsigned fu[2] = {0, 0};
  float ff[4] = {0.f, 0.f, 0.f, 1.f};
  double fd[2] = {0.0, 0.0};
  __half fh[1] = {__float2half(0.f)};
  LAUNCH(atomics, dim3(blocks), dim3(threads), 0, 0, fi, fu, ff, fd, fh);
  CHECK(fi[0] == n);
  CHECK(fi[1] == -2 * n);
  CHECK(fi[2] == -(n - 1));
  CHECK(fi[3] == n - 1);
  CHECK(fi[4] >= 1);  // thread 0 always moves it from 0 to 1; order decides how far it walks
  CHECK(fi[5] >= 0 && fi[5] < n);
  CHECK(fi[6] == 1);
  CHECK(fu[0] == 3u * n);
  CHECK(fu[1] == 7u * (n - 1));
  CHECK_NEAR(ff[0], 0.5 * n, 0);
  CHECK(ff[1] == 2.0f);
  CHECK_NEAR(ff[2], n, 0);
  CHECK_NEAR(fd[0], 0.25 * n, 0);
  CHECK_NEAR(fd[1], n * (n - 1) / 2.0, 0);
  CHECK_NEAR(__half2float(fh[0]), n, 0);
}

TEST(geometry_3d) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const unsigned nb = 12, nt = 24;
  std::vector<unsigned> out(nb * nt, 0xdeadbeefu);
  LAUNCH(geometry, grid, block, 0, 0, out.data());
  for (unsigned bz = 0; bz < 2; ++bz)
    for (unsigned by = 0; by < 2; ++by)
      for (unsigned bx = 0; bx < 3; ++bx)
        for (unsigned tz = 0; tz < 2; ++tz)
          for (unsigned ty = 0; ty < 3; ++ty)
            for (unsigned tx = 0; tx < 4; ++tx) {
              const unsigned b = (bz * 2 + by) * 3 + bx, t = (tz * 3 + ty) * 4 + tx;
              CHECK(out[b * nt + t] == ((bx << 24) | (by << 20) | (bz << 16) | (tx << 8) | (ty << 4) | tz));
            }
}

TEST(shared_memory_filled_with_nan_each_block) {
  std::vector<unsigned> out(3 * 128, 0);
  LAUNCH(smem_fill, dim3(3), dim3(64), 64 * sizeof(unsigned), 0, out.data());
  for (unsigned v : out) CHECK(v == 0xffffffffu);
}

TEST(divergent_syncthreads_is_an_error) {
  std::vector<int> out(64, 0);
  expect_error([&] { LAUNCH(divergent_syncthreads, dim3(1), dim3(64), 0, 0, out.data()); },
               {"divergent __syncthreads", "sim_selftest.cuh:", "divergent_syncthreads"});
}

TEST(deadlock_is_an_error) {
  std::vector<int> out(64, 0);
  expect_error([&] { LAUNCH(barrier_deadlock, dim3(1), dim3(64), 0, 0, out.data()); },
               {"deadlock", "__syncthreads at sim_selftest.cuh:", "__shfl_sync(mask 0xffffffff)"});
}

TEST(mismatched_masks_is_an_error) {
  std::vector<int> out(32, 0);
  expect_error([&] { LAUNCH(mismatched_masks, dim3(1), dim3(32), 0, 0, out.data()); },
               {"mismatched warp collectives", "mask 0x00000003"});
}

TEST(trap_and_bad_launches_are_errors_then_launches_work_again) {
  std::vector<int> out(3 * 32, 0);
  expect_error([&] { LAUNCH(traps, dim3(3), dim3(32), 0, 0, out.data()); },
               {"__trap", "block (1,0,0)", "thread (5,0,0)"});
  expect_error([&] { LAUNCH(traps, dim3(1), dim3(2048), 0, 0, out.data()); }, {"invalid launch", "2048"});
  expect_error([&] { LAUNCH(traps, dim3(0), dim3(32), 0, 0, out.data()); }, {"invalid launch"});
  // a normal launch after errors (the error left no state behind)
  auto X = random_floats(64, 5);
  std::vector<float> Y(64);
  LAUNCH(softmax_rows, dim3(1), dim3(64), 0, 0, X.data(), Y.data(), 1, 64);
  double s = 0;
  for (float y : Y) s += y;
  CHECK_NEAR(s, 1.0, 1e-5);
}

TEST(concurrent_host_threads) {
  std::vector<std::thread> pool;
  std::vector<int> ok(4, 0);
  for (int h = 0; h < 4; ++h)
    pool.emplace_back([&, h] {
      const int M = 24, N = 20, K = 19;
      auto A = random_floats(M * K, 10 + h), B = random_floats(K * N, 20 + h);
      std::vector<float> C(M * N);
      for (int rep = 0; rep < 3; ++rep)
        LAUNCH(sgemm_tiled<8>, dim3((N + 7) / 8, (M + 7) / 8), dim3(8, 8), 0, 0, A.data(), B.data(), C.data(), M,
               N, K);
      double err = 0;
      for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
          double ref = 0;
          for (int k = 0; k < K; ++k) ref += (double)A[i * K + k] * B[k * N + j];
          err = std::max(err, std::fabs(ref - C[i * N + j]));
        }
      ok[h] = err < 1e-4;
    });
  for (auto& t : pool) t.join();
  for (int v : ok) CHECK(v == 1);
}

// ---- tensor cores -------------------------------------------------------------------------
template <int N, bool TRANS> static void check_ldmatrix() {
  std::vector<std::uint16_t> src(32 * 8);
  for (int i = 0; i < 32 * 8; ++i) src[i] = (std::uint16_t)(i * 7 + 3);
  std::vector<std::uint32_t> out(32 * 4, 0);
  LAUNCH((ldmatrix_fragments<N, TRANS>), dim3(1), dim3(32), 0, 0, src.data(), out.data());
  // matrix i is rows 8i..8i+7 of src (lanes 8i..8i+7 gave their row addresses)
  auto M = [&](int i, int r, int c) { return (std::uint32_t)src[(8 * i + r) * 8 + c]; };
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const int g = l / 4, t = l % 4;
      std::uint32_t want = 0;
      if (i < N) want = TRANS ? (M(i, 2 * t, g) | M(i, 2 * t + 1, g) << 16) : (M(i, g, 2 * t) | M(i, g, 2 * t + 1) << 16);
      CHECK(out[l * 4 + i] == want);
    }
}
TEST(ldmatrix_fragment_layouts) {
  check_ldmatrix<1, false>();
  check_ldmatrix<2, false>();
  check_ldmatrix<4, false>();
  check_ldmatrix<1, true>();
  check_ldmatrix<2, true>();
  check_ldmatrix<4, true>();
}

template <class T> static void check_mma_16bit(float (*to_float)(T), T (*from_float)(float)) {
  auto a = random_floats(16 * 16, 6), b = random_floats(16 * 8, 7);
  std::vector<T> A(16 * 16), B(16 * 8);
  for (int i = 0; i < 256; ++i) A[i] = from_float(a[i]);
  for (int i = 0; i < 128; ++i) B[i] = from_float(b[i]);
  std::vector<float> C(16 * 8, 0.f);
  LAUNCH(mma_16x8x16<T>, dim3(1), dim3(32), 0, 0, A.data(), B.data(), C.data());
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j) {
      double ref = 1.0;  // the kernel's accumulator input
      for (int k = 0; k < 16; ++k) ref += (double)to_float(A[i * 16 + k]) * to_float(B[k * 8 + j]);
      CHECK_NEAR(C[i * 8 + j], ref, 1e-5);
    }
}
TEST(mma_m16n8k16_f16_and_bf16_vs_reference) {
  check_mma_16bit<__half>([](__half h) { return __half2float(h); }, [](float f) { return __float2half(f); });
  check_mma_16bit<__nv_bfloat16>([](__nv_bfloat16 h) { return __bfloat162float(h); },
                                 [](float f) { return __float2bfloat16(f); });
}

TEST(mma_m16n8k8_tf32_vs_reference) {
  auto A = random_floats(16 * 8, 8), B = random_floats(8 * 8, 9);
  std::vector<float> C(16 * 8, 0.f);
  LAUNCH(mma_16x8x8_tf32, dim3(1), dim3(32), 0, 0, A.data(), B.data(), C.data());
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j) {
      double ref = 0;
      for (int k = 0; k < 8; ++k) ref += (double)A[i * 8 + k] * B[k * 8 + j];
      CHECK_NEAR(C[i * 8 + j], ref, 8 * 2e-3);  // tf32 keeps 10 mantissa bits
    }
}

TEST(wmma_emulation_vs_reference) {
  auto Af = random_floats(256, 11), Bf = random_floats(256, 12), C = random_floats(256, 13);
  std::vector<__half> A(256), B(256);
  for (int i = 0; i < 256; ++i) A[i] = __float2half(Af[i]), B[i] = __float2half(Bf[i]);
  const std::vector<float> C0 = C;
  LAUNCH(wmma_16x16x16, dim3(1), dim3(32), 0, 0, A.data(), B.data(), C.data());
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      double ref = 0.5 * C0[i * 16 + j];
      for (int k = 0; k < 16; ++k)  // B is column-major: B(k, j) = B[j * 16 + k]
        ref += (double)__half2float(A[i * 16 + k]) * __half2float(B[j * 16 + k]);
      CHECK_NEAR(C[i * 16 + j], ref, 1e-4);
    }
}

TEST(mma_requires_full_warp) {
  std::vector<float> A(128), B(64), C(128);
  expect_error([&] { LAUNCH(mma_16x8x8_tf32, dim3(1), dim3(16), 0, 0, A.data(), B.data(), C.data()); },
               {"all 32 lanes"});
}

TEST(cp_async_pipeline_and_missing_wait) {
  const int rows = 5, valid = 4;
  auto src = random_floats(rows * 256, 11);
  std::vector<float> out(256, 0.f);
  LAUNCH(cp_async_pipeline<true>, dim3(1), dim3(64), 2 * 256 * sizeof(float), 0, src.data(), rows, valid,
         out.data());
  for (int c = 0; c < 256; ++c) {
    double ref = 0;
    for (int r = 0; r < valid; ++r) ref += src[r * 256 + c];  // row 4 is zero-filled
    CHECK_NEAR(out[c], ref, 1e-5);
  }
  LAUNCH(cp_async_pipeline<false>, dim3(1), dim3(64), 2 * 256 * sizeof(float), 0, src.data(), rows, valid,
         out.data());
  for (float v : out) CHECK(std::isnan(v));  // the copies never landed: stale fill was read
}

TEST(cp_async_4_and_8_bytes_zero_fill) {
  auto src = random_floats(96, 12);
  std::vector<float> out(96, 0.f);
  LAUNCH(cp_async_small, dim3(1), dim3(32), 0, 0, src.data(), out.data(), 50);
  for (int i = 0; i < 96; ++i) CHECK(out[i] == (i < 50 ? src[i] : 0.f));
}

#if defined(CUDASIM_CHECK_SMEM)
// 40 threads index a [4][8] shared array by threadIdx / 8: row 4 does not exist.
__global__ void smem_index_past_end(int* out) {
  SMEM_ARRAY(int, tile, 4, 8);
  tile[threadIdx.x / 8][threadIdx.x % 8] = 1;
  out[threadIdx.x] = tile[0][0];
}
TEST(checked_shared_arrays_report_bad_index) {
  std::vector<int> out(40, 0);
  expect_error([&] { LAUNCH(smem_index_past_end, dim3(1), dim3(40), 0, 0, out.data()); },
               {"shared array tile", "index 4 out of range [0, 4)", "thread (32,0,0)"});
}
#endif

#if !defined(CUDASIM_THREADS)
TEST(fiber_stacks_are_reused) {
  int dummy = 0;
  LAUNCH(sync_rounds, dim3(2), dim3(256), 0, 0, &dummy, 1);
  const std::size_t stacks = cudasim::stack_pool().size();
  for (int i = 0; i < 20; ++i) LAUNCH(sync_rounds, dim3(2), dim3(256), 0, 0, &dummy, 1);
  CHECK(cudasim::stack_pool().size() == stacks);
}
#endif

TEST(speed_report) {
  int dummy = 0;
  auto time = [&](int blocks, int threads, int rounds) {  // best of 3 (the machine is shared)
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      LAUNCH(sync_rounds, dim3(blocks), dim3(threads), 0, 0, &dummy, rounds);
      best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
#if defined(CUDASIM_THREADS)
  const int blocks = 4;
#else
  const int blocks = 64;
#endif
  const double t0 = time(blocks, 256, 0), t10 = time(blocks, 256, 10);
  std::printf("    %d blocks x 256 threads: %.2f ms empty, %.2f ms with 10 __syncthreads (%.0f ns per thread-barrier)\n",
              blocks, t0, t10, (t10 - t0) * 1e6 / (blocks * 256.0 * 10));
  CHECK(dummy == 10);
}

// ---- deliberate bugs for the sanitizer runs -------------------------------------------------
static int run_race() {
#if defined(CUDASIM_SELFTEST_RACE)
  std::vector<float> in(128), out(128);
  for (int i = 0; i < 128; ++i) in[i] = (float)i;
  LAUNCH(racy_reverse, dim3(2), dim3(64), 0, 0, in.data(), out.data());
  std::printf("racy kernel ran (ThreadSanitizer should have reported it)\n");
  return 0;
#else
  std::printf("built without CUDASIM_SELFTEST_RACE\n");
  return 2;
#endif
}
static int run_oob() {
#if defined(CUDASIM_SELFTEST_OOB)
  std::vector<float> out(100);
  LAUNCH(out_of_bounds, dim3(1), dim3(128), 0, 0, out.data(), 100);
  std::printf("out-of-bounds kernel ran (AddressSanitizer should have reported it)\n");
  return 0;
#else
  std::printf("built without CUDASIM_SELFTEST_OOB\n");
  return 2;
#endif
}

int main(int argc, char** argv) {
  std::vector<std::string> filters;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--race")) return run_race();
    if (!std::strcmp(argv[i], "--oob")) return run_oob();
    filters.emplace_back(argv[i]);
  }
  int passed = 0, failed = 0;
  for (const TestCase& t : tests()) {
    bool selected = filters.empty();
    for (auto& f : filters) selected |= std::string(t.name).find(f) != std::string::npos;
    if (!selected) continue;
    const auto t0 = std::chrono::steady_clock::now();
    std::string error;
    try {
      t.fn();
    } catch (const Failure& f) {
      error = f.what;
    } catch (const std::exception& e) {
      error = std::string("unexpected exception: ") + e.what();
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (error.empty()) {
      ++passed;
      std::printf("PASS %-55s %8.1f ms\n", t.name, ms);
    } else {
      ++failed;
      std::printf("FAIL %-55s %s\n", t.name, error.c_str());
    }
    std::fflush(stdout);
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
