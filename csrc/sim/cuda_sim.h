/* CUDA simulator: run the project's CUDA kernels on the CPU.

   The same kernel source builds two ways:
     nvcc:  this header only defines the portability macros (LAUNCH, DYN_SMEM, SMEM_ARRAY).
     g++:   `g++ -std=c++20 -x c++ -include csrc/sim/cuda_sim.h kernel.cu` (or include it
            before anything else); the kernel then runs on the host through LAUNCH.

   Execution model
   - Launches are serialised by a mutex; the blocks of a launch run one after another.
   - The threads of a block run either as cooperative fibers on the launching OS thread (the
     default: a hand-written context switch on x86-64, ucontext elsewhere), or, with
     CUDASIM_THREADS defined (forced under ThreadSanitizer), as one OS thread per CUDA thread.
     The thread backend lets ThreadSanitizer report a missing __syncthreads at the source line.
   - __syncthreads and every warp collective (shuffles, votes, __syncwarp, the mma/ldmatrix
     wrappers of ptx.cuh) are "collectives": each participant publishes a pointer to its
     arguments, the last one to arrive checks that all agree (same barrier site; same
     operation and mask), computes every participant's result and releases them.
   - Threads that return drop out of the block barrier and of their warp's masks (exited
     lanes are not waited for; reading an exited or non-member lane yields 0xFF bytes).
   - Divergent __syncthreads, mismatched warp masks, and deadlocks are reported by throwing
     cudasim::Error out of the launch, never by hanging.
   - Shared memory declared with SMEM_ARRAY and DYN_SMEM is filled with 0xFF bytes (NaN) at
     every block start; with CUDASIM_CHECK_SMEM, SMEM_ARRAY indexing is bounds checked.
     A raw `__shared__` variable works (it becomes `static`) but gets neither aid.

   Limits: no inter-block communication through spin-waits (blocks run in sequence); no
   dynamic parallelism; streams are ignored (launches are synchronous). */
#pragma once

// ------------------------------------------------------------------------------------------
// Shape helper shared by both builds: array_t<T, 4, 8> is T[4][8], array_t<T> is T.
// ------------------------------------------------------------------------------------------
#include <cstddef>
namespace cudasim {
template <class T, std::size_t... N> struct array_of { using type = T; };
template <class T, std::size_t N0, std::size_t... R> struct array_of<T, N0, R...> {
  using type = typename array_of<T, R...>::type[N0];
};
template <class T, std::size_t... N> using array_t = typename array_of<T, N...>::type;
}  // namespace cudasim

#if defined(__CUDACC__)
// ==========================================================================================
// Real CUDA build: portability macros only (plus the 16-bit float types, which the simulator
// build always provides too).
// ==========================================================================================
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
// One untyped declaration for every kernel, so templates with different T do not clash.
#define DYN_SMEM(T, name)                                                     \
  extern __shared__ __align__(16) unsigned char cudasim_dynamic_smem_[];      \
  T* name = reinterpret_cast<T*>(cudasim_dynamic_smem_)
#define SMEM_ARRAY(T, name, ...) __shared__ __align__(16) ::cudasim::array_t<T, __VA_ARGS__> name

#else  // !__CUDACC__
// ==========================================================================================
// Simulator build.
// ==========================================================================================
#ifndef CUDASIM
#define CUDASIM 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(CUDASIM_THREADS)
#define CUDASIM_THREADS 1  // fibers would confuse ThreadSanitizer; OS threads are what it checks
#endif
#if defined(__SANITIZE_ADDRESS__)
#define CUDASIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUDASIM_ASAN 1
#endif
#endif
#if !defined(CUDASIM_THREADS) && !defined(CUDASIM_UCONTEXT) && !defined(__x86_64__)
#define CUDASIM_UCONTEXT 1
#endif

// Function and variable qualifiers (CUDA's host compilers see the same). __noinline__ stays
// undefined because libstdc++ spells __attribute__((__noinline__)).
#define __host__
#define __device__
#define __global__
#define __constant__
#define __managed__
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __align__(n) __attribute__((aligned(n)))
#define __builtin_align__(n) __align__(n)
#define __shared__ static  // one copy per launch: blocks run one at a time
#define __launch_bounds__(...)
#define __grid_constant__

// The vector types, dim3, __half and __nv_bfloat16 are the simulator's own: no CUDA toolkit
// is needed to build or run it.
#include "cuda_types.h"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <source_location>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(CUDASIM_UCONTEXT)
#include <ucontext.h>
#endif
#if defined(CUDASIM_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#define CUDASIM_CAT_(a, b) a##b
#define CUDASIM_CAT(a, b) CUDASIM_CAT_(a, b)
#if defined(CUDASIM_THREADS)
#define CUDASIM_TLS thread_local
#else
#define CUDASIM_TLS
#endif

// Built-in variables. With fibers the scheduler rewrites threadIdx on every switch.
inline CUDASIM_TLS uint3 threadIdx;
inline uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;
inline constexpr int warpSize = 32;

namespace cudasim {

// ------------------------------------------------------------------------------------------
// Errors and small utilities
// ------------------------------------------------------------------------------------------
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct Abort {};  // unwinds a thread of a launch that is being abandoned

using Site = std::source_location;
inline std::string where(const Site& s) {
  const char* f = s.file_name();
  const char* slash = std::strrchr(f, '/');
  return std::string(slash ? slash + 1 : f) + ":" + std::to_string(s.line());
}
inline std::string hex(unsigned v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", v);
  return b;
}
inline std::string xyz(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}
inline uint3 unflatten(unsigned i, dim3 d) { return uint3{i % d.x, (i / d.x) % d.y, i / (d.x * d.y)}; }

// ------------------------------------------------------------------------------------------
// Per-CUDA-thread state
// ------------------------------------------------------------------------------------------
// A warp collective: every participant passes the same Op and its own argument block.
struct Op {
  const char* name;
  void (*run)(void* const* lane_args);  // [32], nullptr for non-participating lanes
};
enum class Wait : unsigned char { none, block, warp };
enum class BlockKind : unsigned char { sync, count };

struct AsyncCopy {
  void* dst;
  const void* src;
  unsigned bytes;
  bool zero_fill;
  unsigned group;
};

struct Thread {
  uint3 tid{};
  unsigned linear = 0, lane = 0, warp = 0;
  bool blocked = false, exited = false;
  Wait wait = Wait::none;
  Site site;
  BlockKind block_kind = BlockKind::sync;
  const Op* op = nullptr;
  void* args = nullptr;
  unsigned mask = 0;
  std::vector<AsyncCopy> copies;  // cp.async requests not yet performed
  unsigned open_group = 0;        // index of the cp.async group being filled
  // fiber backend
  void* sp = nullptr;
  struct Stack* stack = nullptr;
#if defined(CUDASIM_UCONTEXT)
  ucontext_t uc;
#endif
};

struct SyncDomain {
#if defined(CUDASIM_THREADS)
  std::mutex mu;
  std::condition_variable cv;
#endif
};
struct BlockSync : SyncDomain {
  unsigned live = 0, arrived = 0;
  int accum = 0, result = 0;
  unsigned result_live = 0;  // live threads when the last barrier completed
};
struct WarpSync : SyncDomain {
  unsigned existing = 0, exited = 0, arrived = 0;
};

#if defined(CUDASIM_THREADS)
using Lock = std::unique_lock<std::mutex>;
inline Lock lock(SyncDomain& d) { return Lock(d.mu); }
#else
struct Lock {
  void unlock() {}
};
inline Lock lock(SyncDomain&) { return {}; }
#endif

// State of the launch in progress (guarded by launch_mutex()).
struct Launch {
  const char* kernel_name = "";
  void (*body)(void*) = nullptr;  // runs the kernel once for the current thread
  void* job = nullptr;
  std::vector<Thread> threads;
  std::vector<WarpSync> warps;
  BlockSync block;
  unsigned char* dyn_smem = nullptr;
  std::size_t dyn_smem_bytes = 0;
  std::exception_ptr error;
  std::atomic<bool> abort{false};
  // fiber backend
  unsigned runnable = 0;
  bool deadlock = false;
  // thread backend
  std::atomic<unsigned> idle{0};  // threads that are exited or waiting on an incomplete barrier
};
inline Launch* g_launch = nullptr;
inline CUDASIM_TLS Thread* g_self = nullptr;
inline thread_local bool tl_in_kernel = false;

inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}
inline Thread& self() { return *g_self; }
inline void* dyn_smem() { return g_launch->dyn_smem; }

// ------------------------------------------------------------------------------------------
// Shared-memory registry: SMEM_ARRAY storage is refilled with 0xFF at every block start.
// ------------------------------------------------------------------------------------------
struct SmemRegistry {
  std::mutex mu;
  std::vector<std::pair<void*, std::size_t>> arrays;
};
inline SmemRegistry& smem_registry() {
  static SmemRegistry r;
  return r;
}
inline bool register_smem(void* p, std::size_t bytes) {
  SmemRegistry& r = smem_registry();
  std::lock_guard<std::mutex> g(r.mu);
  r.arrays.emplace_back(p, bytes);
  std::memset(p, 0xFF, bytes);
  return true;
}
inline void poison_smem() {
  SmemRegistry& r = smem_registry();
  std::lock_guard<std::mutex> g(r.mu);
  for (auto& [p, n] : r.arrays) std::memset(p, 0xFF, n);
  if (g_launch->dyn_smem_bytes) std::memset(g_launch->dyn_smem, 0xFF, g_launch->dyn_smem_bytes);
}

// Bounds-checked shared array (CUDASIM_CHECK_SMEM): indexing throws on out-of-range.
template <class T, std::size_t N, std::size_t... R> struct Checked;
template <class T, std::size_t N, std::size_t... R> struct CheckedRef {
  array_t<T, N, R...>* p;
  const char* name;
  decltype(auto) operator[](long long i) const {
    if (i < 0 || i >= (long long)N)
      throw Error(std::string("shared array ") + name + ": index " + std::to_string(i) +
                  " out of range [0, " + std::to_string(N) + ")");
    if constexpr (sizeof...(R) == 0) return (*p)[i];
    else return CheckedRef<T, R...>{&(*p)[i], name};
  }
  operator array_t<T, R...>*() const { return *p; }
};
template <class T, std::size_t N, std::size_t... R> struct Checked {
  array_t<T, N, R...> data;
};

// ------------------------------------------------------------------------------------------
// Fibers
// ------------------------------------------------------------------------------------------
#if !defined(CUDASIM_THREADS)
#ifndef CUDASIM_STACK_BYTES
#define CUDASIM_STACK_BYTES (256 * 1024)
#endif
struct Stack {
  char* lo = nullptr;  // lowest usable address (a guard page lies below)
  std::size_t size = 0;
  bool dirty = false;  // abandoned mid-kernel: sanitizer shadow may be stale
};
// Stacks live for the whole process and are reused by every launch (a deque keeps their
// addresses stable as it grows).
inline std::deque<Stack>& stack_pool() {
  static std::deque<Stack> pool;
  return pool;
}
inline Stack* get_stack(unsigned i) {
  auto& pool = stack_pool();
  while (pool.size() <= i) {
    const std::size_t page = (std::size_t)sysconf(_SC_PAGESIZE);
    const std::size_t size = (CUDASIM_STACK_BYTES + page - 1) / page * page;
    void* m = mmap(nullptr, size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) throw Error("cudasim: cannot allocate a fiber stack");
    mprotect(m, page, PROT_NONE);  // overflow faults instead of corrupting a neighbour
    pool.push_back(Stack{static_cast<char*>(m) + page, size, false});
  }
  return &pool[i];
}

struct MainContext {
  void* sp = nullptr;
  const void* stack_lo = nullptr;
  std::size_t stack_size = 0;
#if defined(CUDASIM_UCONTEXT)
  ucontext_t uc;
#endif
};
inline MainContext g_main;

#if !defined(CUDASIM_UCONTEXT)
// x86-64 System V: save the callee-saved registers, MXCSR and the x87 control word on the
// old stack, store its stack pointer, load the new one and restore the same frame from it.
// Weak + comdat so that every translation unit may carry a copy.
extern "C" void cudasim_switch_stack(void** save_sp, void* load_sp);
asm(R"(
  .pushsection .text.cudasim_switch_stack,"axG",@progbits,cudasim_switch_stack,comdat
  .weak cudasim_switch_stack
  .hidden cudasim_switch_stack
  .type cudasim_switch_stack,@function
cudasim_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cudasim_switch_stack, .-cudasim_switch_stack
  .popsection
)");
#endif

[[noreturn]] inline void fiber_entry();

// Prepare t to start fiber_entry on its own stack.
inline void fiber_init(Thread& t) {
  Stack* s = t.stack;
#if defined(CUDASIM_ASAN)
  // Frames that never returned (fiber_entry's, or a whole abandoned kernel) keep their
  // redzones poisoned; clear them before the stack is reused.
  const std::size_t used = s->dirty ? s->size : std::min<std::size_t>(s->size, 16384);
  __asan_unpoison_memory_region(s->lo + s->size - used, used);
#endif
  s->dirty = false;
#if defined(CUDASIM_UCONTEXT)
  getcontext(&t.uc);
  t.uc.uc_stack.ss_sp = s->lo;
  t.uc.uc_stack.ss_size = s->size;
  t.uc.uc_link = nullptr;
  makecontext(&t.uc, fiber_entry, 0);
#else
  auto top = reinterpret_cast<std::uintptr_t>(s->lo + s->size) & ~std::uintptr_t(15);
  auto* sp = reinterpret_cast<std::uint64_t*>(top);
  *--sp = 0;                                                  // fiber_entry's return address
  *--sp = reinterpret_cast<std::uint64_t>(&fiber_entry);      // popped by `ret`
  for (int i = 0; i < 6; ++i) *--sp = 0;                      // rbp rbx r12..r15
  std::uint32_t csr[2];
  asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(csr[0]), "=m"(csr[1]));
  *--sp = csr[0] | (std::uint64_t(csr[1] & 0xffff) << 32);
  t.sp = sp;
#endif
}

// Switch from the running context to `to` (nullptr = the launching thread). `leaving` says
// the current fiber will never be resumed (lets ASan drop its fake stack).
inline void switch_to(Thread* from, Thread* to, bool leaving = false) {
#if defined(CUDASIM_ASAN)
  void* fake = nullptr;
  const void* lo = to ? static_cast<const void*>(to->stack->lo) : g_main.stack_lo;
  std::size_t size = to ? to->stack->size : g_main.stack_size;
  __sanitizer_start_switch_fiber(leaving ? nullptr : &fake, lo, size);
#else
  (void)leaving;
#endif
  if (to) {
    g_self = to;
    threadIdx = to->tid;
  }
#if defined(CUDASIM_UCONTEXT)
  swapcontext(from ? &from->uc : &g_main.uc, to ? &to->uc : &g_main.uc);
#else
  cudasim_switch_stack(from ? &from->sp : &g_main.sp, to ? to->sp : g_main.sp);
#endif
#if defined(CUDASIM_ASAN)
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

// The current fiber cannot continue: run the next runnable one, or return to the launcher.
inline void fiber_yield(bool leaving) {
  Launch& L = *g_launch;
  Thread* cur = g_self;
  const unsigned n = (unsigned)L.threads.size();
  Thread* next = nullptr;
  if (L.runnable > 0 && !L.abort.load(std::memory_order_relaxed)) {
    for (unsigned k = 1; k <= n; ++k) {
      Thread& t = L.threads[(cur->linear + k) % n];
      if (!t.blocked && !t.exited) {
        next = &t;
        break;
      }
    }
  }
  if (!next && !L.abort.load(std::memory_order_relaxed) && L.block.live > 0) L.deadlock = true;
  switch_to(cur, next, leaving);
}
#endif  // !CUDASIM_THREADS

// ------------------------------------------------------------------------------------------
// Barriers
// ------------------------------------------------------------------------------------------
inline void check_abort() {
  if (g_launch->abort.load(std::memory_order_relaxed)) throw Abort{};
}

// Block until a completer releases this thread.
inline void wait_released(SyncDomain& d, Thread& me, Lock& lk) {
  me.blocked = true;
#if defined(CUDASIM_THREADS)
  Launch& L = *g_launch;
  L.idle.fetch_add(1, std::memory_order_relaxed);
  d.cv.wait(lk, [&] { return !me.blocked || L.abort.load(std::memory_order_relaxed); });
  if (me.blocked) throw Abort{};
#else
  (void)d;
  (void)lk;
  --g_launch->runnable;
  fiber_yield(false);
  // Only released fibers are resumed; an abandoned launch never comes back here.
#endif
}
inline void release(Thread& t) {
  if (!t.blocked) return;
  t.blocked = false;
#if defined(CUDASIM_THREADS)
  g_launch->idle.fetch_sub(1, std::memory_order_relaxed);
#else
  ++g_launch->runnable;
#endif
}
inline void notify(SyncDomain& d) {
#if defined(CUDASIM_THREADS)
  d.cv.notify_all();
#else
  (void)d;
#endif
}

// All live threads arrived at the block barrier: check they agree, publish, release.
inline void complete_block(Launch& L) {
  BlockSync& b = L.block;
  const Thread* first = nullptr;
  for (Thread& t : L.threads) {
    if (t.exited) continue;
    if (!first) {
      first = &t;
    } else if (t.block_kind != first->block_kind || t.site.line() != first->site.line() ||
               std::strcmp(t.site.file_name(), first->site.file_name()) != 0) {
      auto name = [](const Thread& x) {
        return std::string(x.block_kind == BlockKind::sync ? "__syncthreads" : "__syncthreads_count/and/or") +
               " at " + where(x.site);
      };
      throw Error("divergent __syncthreads: thread " + xyz(first->tid) + " waits in " + name(*first) +
                  ", thread " + xyz(t.tid) + " in " + name(t));
    }
  }
  b.result = b.accum;
  b.result_live = b.live;
  b.accum = 0;
  b.arrived = 0;
  for (Thread& t : L.threads)
    if (!t.exited && t.wait == Wait::block) {
      t.wait = Wait::none;
      release(t);
    }
  notify(b);
}

struct BarrierResult {
  int count;
  unsigned live;
};
inline BarrierResult block_barrier(BlockKind kind, int pred, const Site& site) {
  Launch& L = *g_launch;
  Thread& me = self();
  BlockSync& b = L.block;
  Lock lk = lock(b);
  check_abort();
  me.wait = Wait::block;
  me.block_kind = kind;
  me.site = site;
  b.accum += pred ? 1 : 0;
  if (++b.arrived == b.live) complete_block(L);
  else wait_released(b, me, lk);
  return {b.result, b.result_live};
}

// Complete every group of arrived lanes whose live members all arrived at the same
// collective with the same mask. Groups complete in any order, so lanes that ran ahead into
// the next collective do not block their slower neighbours. When every live lane waits and no
// group can complete, the lanes disagree: that is an error.
inline void try_complete_warp(Launch& L, unsigned w) {
  WarpSync& ws = L.warps[w];
  Thread* lanes = &L.threads[w * 32];
  for (;;) {
    const Thread* mismatch[2] = {nullptr, nullptr};
    bool completed = false;
    for (unsigned pending = ws.arrived; pending && !completed;) {
      const Thread& lead = lanes[__builtin_ctz(pending)];
      const unsigned members = lead.mask & ws.existing & ~ws.exited;
      pending &= ~(1u << lead.lane);
      if ((members & ~ws.arrived) != 0) continue;  // someone in the mask is still running
      void* args[32] = {};
      const Thread* odd = nullptr;
      for (unsigned m = members; m; m &= m - 1) {
        const Thread& t = lanes[__builtin_ctz(m)];
        if (t.op != lead.op || t.mask != lead.mask) {
          if (!odd) odd = &t;
        } else {
          pending &= ~(1u << t.lane);  // same group: no need to try it as a lead
        }
        args[t.lane] = t.args;
      }
      if (odd) {
        if (!mismatch[0]) mismatch[0] = &lead, mismatch[1] = odd;
        continue;
      }
      lead.op->run(args);
      ws.arrived &= ~members;
      for (unsigned m = members; m; m &= m - 1) {
        Thread& t = lanes[__builtin_ctz(m)];
        t.wait = Wait::none;
        release(t);
      }
      notify(ws);
      completed = true;
    }
    if (completed) continue;
    if (mismatch[0] && ws.arrived == (ws.existing & ~ws.exited)) {
      const Thread &a = *mismatch[0], &b = *mismatch[1];
      throw Error(std::string("mismatched warp collectives: lane ") + std::to_string(a.lane) + " in " + a.op->name +
                  "(mask " + hex(a.mask) + ") at " + where(a.site) + ", lane " + std::to_string(b.lane) + " in " +
                  b.op->name + "(mask " + hex(b.mask) + ") at " + where(b.site));
    }
    return;
  }
}

inline void warp_collective(const Op& op, unsigned mask, void* args, const Site& site) {
  Launch& L = *g_launch;
  Thread& me = self();
  WarpSync& ws = L.warps[me.warp];
  Lock lk = lock(ws);
  check_abort();
  if (!(mask >> me.lane & 1u))
    throw Error(std::string(op.name) + " at " + where(site) + ": lane " + std::to_string(me.lane) +
                " is not in its mask " + hex(mask));
  me.wait = Wait::warp;
  me.op = &op;
  me.args = args;
  me.mask = mask;
  me.site = site;
  ws.arrived |= 1u << me.lane;
  try_complete_warp(L, me.warp);
  if (me.wait == Wait::warp) wait_released(ws, me, lk);
}

// A thread returned from the kernel: it no longer takes part in any barrier.
inline void thread_exit(Thread& me) {
  Launch& L = *g_launch;
  {
    WarpSync& ws = L.warps[me.warp];
    [[maybe_unused]] Lock lk = lock(ws);
    ws.exited |= 1u << me.lane;
    try_complete_warp(L, me.warp);
  }
  BlockSync& b = L.block;
  [[maybe_unused]] Lock lk = lock(b);
  me.exited = true;
  me.copies.clear();
  --b.live;
  if (b.live > 0 && b.arrived == b.live) complete_block(L);
}

inline unsigned active_mask() {
  Launch& L = *g_launch;
  WarpSync& ws = L.warps[self().warp];
  [[maybe_unused]] Lock lk = lock(ws);
  return ws.existing & ~ws.exited;
}

// Describe what every thread waits for (called with all threads stopped).
inline std::string describe_deadlock(Launch& L) {
  struct Row {
    std::string what;
    unsigned count;
    uint3 first;
  };
  std::vector<Row> rows;
  unsigned exited = 0;
  for (Thread& t : L.threads) {
    if (t.exited) {
      ++exited;
      continue;
    }
    std::string what = t.wait == Wait::block
                           ? std::string(t.block_kind == BlockKind::sync ? "__syncthreads" : "__syncthreads_count") +
                                 " at " + where(t.site)
                       : t.wait == Wait::warp ? std::string(t.op->name) + "(mask " + hex(t.mask) + ") at " +
                                                    where(t.site)
                                              : std::string("running");
    auto it = std::find_if(rows.begin(), rows.end(), [&](const Row& r) { return r.what == what; });
    if (it == rows.end()) rows.push_back({what, 1, t.tid});
    else ++it->count;
  }
  std::string s = "deadlock: no thread of the block can proceed;";
  for (auto& r : rows)
    s += " " + std::to_string(r.count) + " thread(s) (first " + xyz(r.first) + ") wait in " + r.what + ";";
  s += " " + std::to_string(exited) + " thread(s) exited";
  return s;
}

// ------------------------------------------------------------------------------------------
// Running one block
// ------------------------------------------------------------------------------------------
inline void record_error(Launch& L, Thread* t) {
  std::string msg;
  try {
    throw;
  } catch (const std::exception& e) {
    msg = e.what();
  } catch (...) {
    msg = "unknown exception";
  }
  std::string ctx = std::string("cudasim: kernel ") + L.kernel_name + ", block " + xyz(blockIdx);
  if (t) ctx += ", thread " + xyz(t->tid);
  if (!L.error) L.error = std::make_exception_ptr(Error(ctx + ": " + msg));
  L.abort.store(true, std::memory_order_relaxed);
}

inline void reset_block(Launch& L) {
  const unsigned n = (unsigned)L.threads.size();
  L.block.live = n;
  L.block.arrived = 0;
  L.block.accum = L.block.result = 0;
  for (unsigned w = 0; w < L.warps.size(); ++w) {
    const unsigned lanes = std::min(32u, n - 32 * w);
    L.warps[w].existing = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    L.warps[w].exited = L.warps[w].arrived = 0;
  }
  for (Thread& t : L.threads) {
    t.blocked = t.exited = false;
    t.wait = Wait::none;
    t.copies.clear();
    t.open_group = 0;
  }
  poison_smem();
}

#if !defined(CUDASIM_THREADS)
[[noreturn]] inline void fiber_entry() {
#if defined(CUDASIM_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
  Launch& L = *g_launch;
  Thread& me = self();
  try {
    L.body(L.job);
    thread_exit(me);
  } catch (const Abort&) {
  } catch (...) {
    record_error(L, &me);
  }
  me.exited = true;
  --L.runnable;
  fiber_yield(true);
  __builtin_unreachable();
}

inline void run_blocks(Launch& L, unsigned nblocks) {
  const unsigned n = (unsigned)L.threads.size();
  for (unsigned i = 0; i < n; ++i) L.threads[i].stack = get_stack(i);
#if defined(CUDASIM_ASAN)
  {
    pthread_attr_t attr;
    void* lo = nullptr;
    std::size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      pthread_attr_getstack(&attr, &lo, &size);
      pthread_attr_destroy(&attr);
    }
    g_main.stack_lo = lo;
    g_main.stack_size = size;
  }
#endif
  for (unsigned b = 0; b < nblocks && !L.error; ++b) {
    blockIdx = unflatten(b, gridDim);
    reset_block(L);
    for (Thread& t : L.threads) fiber_init(t);
    L.runnable = n;
    L.deadlock = false;
    switch_to(nullptr, &L.threads[0]);
    g_self = nullptr;
    if (L.deadlock && !L.error) {
      try {
        throw Error(describe_deadlock(L));
      } catch (...) {
        record_error(L, nullptr);
      }
    }
    if (L.error)
      for (Thread& t : L.threads) t.stack->dirty = true;
  }
}
#else  // CUDASIM_THREADS
inline void run_blocks(Launch& L, unsigned nblocks) {
  const unsigned n = (unsigned)L.threads.size();
  struct Control {
    std::mutex mu;
    std::condition_variable start, done;
    unsigned generation = 0, finished = 0;
    bool quit = false;
  } c;
  // Every thread of a block passes this before running the kernel body. Without it, a thread
  // that finished (and took c.mu) before another one started would order its accesses before
  // the other's for ThreadSanitizer, hiding the very races this backend exists to find.
  std::barrier<> started((std::ptrdiff_t)n);
  auto worker = [&](unsigned i) {
    Thread& me = L.threads[i];
    g_self = &me;
    threadIdx = me.tid;
    tl_in_kernel = true;
    unsigned seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(c.mu);
        c.start.wait(lk, [&] { return c.quit || c.generation != seen; });
        if (c.quit) return;
        seen = c.generation;
      }
      started.arrive_and_wait();
      try {
        L.body(L.job);
        thread_exit(me);
      } catch (const Abort&) {
      } catch (...) {
        std::lock_guard<std::mutex> lk(c.mu);
        record_error(L, &me);
      }
      std::lock_guard<std::mutex> lk(c.mu);
      ++c.finished;
      L.idle.fetch_add(1, std::memory_order_relaxed);  // counted with `finished`, see the deadlock check
      c.done.notify_all();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(n);
  try {
    for (unsigned i = 0; i < n; ++i) pool.emplace_back(worker, i);
  } catch (...) {
    {
      std::lock_guard<std::mutex> lk(c.mu);
      c.quit = true;
    }
    c.start.notify_all();
    for (auto& t : pool) t.join();
    throw Error("cudasim: cannot start " + std::to_string(n) + " threads");
  }
  auto wake_all_waiters = [&] {
    for (auto& w : L.warps) {
      std::lock_guard<std::mutex> g(w.mu);
      w.cv.notify_all();
    }
    std::lock_guard<std::mutex> g(L.block.mu);
    L.block.cv.notify_all();
  };
  for (unsigned b = 0; b < nblocks; ++b) {
    std::unique_lock<std::mutex> lk(c.mu);
    if (L.error) break;
    blockIdx = unflatten(b, gridDim);
    reset_block(L);
    L.idle.store(0, std::memory_order_relaxed);
    c.finished = 0;
    ++c.generation;
    c.start.notify_all();
    while (c.finished < n) {
      c.done.wait_for(lk, std::chrono::milliseconds(20));
      if (c.finished == n) break;
      if (!L.abort.load(std::memory_order_relaxed) && L.idle.load(std::memory_order_relaxed) == n) {
        std::string msg;
        {
          std::vector<Lock> locks;
          for (auto& w : L.warps) locks.emplace_back(w.mu);
          locks.emplace_back(L.block.mu);
          msg = describe_deadlock(L);
        }
        try {
          throw Error(msg);
        } catch (...) {
          record_error(L, nullptr);
        }
      }
      if (L.abort.load(std::memory_order_relaxed)) {
        lk.unlock();
        wake_all_waiters();
        lk.lock();
      }
    }
  }
  {
    std::lock_guard<std::mutex> lk(c.mu);
    c.quit = true;
  }
  c.start.notify_all();
  for (auto& t : pool) t.join();
}
#endif

// ------------------------------------------------------------------------------------------
// Launch
// ------------------------------------------------------------------------------------------
inline void run_launch(const char* name, void (*body)(void*), void* job, dim3 grid, dim3 block,
                       std::size_t smem) {
  auto bad = [&](const std::string& why) {
    return Error(std::string("cudasim: invalid launch of ") + name + ": " + why);
  };
  if (tl_in_kernel) throw bad("launch from inside a kernel is not supported");
  const unsigned long long nt = (unsigned long long)block.x * block.y * block.z;
  const unsigned long long nb = (unsigned long long)grid.x * grid.y * grid.z;
  if (nt == 0 || nt > 1024 || block.z > 64)
    throw bad("block " + xyz(uint3{block.x, block.y, block.z}) + " (need 1..1024 threads, z <= 64)");
  if (nb == 0 || grid.y > 65535 || grid.z > 65535)
    throw bad("grid " + xyz(uint3{grid.x, grid.y, grid.z}) + " (need >= 1 block, y and z <= 65535)");
  if (smem > 227 * 1024) throw bad("dynamic shared memory " + std::to_string(smem) + " B > 227 KiB");

  std::lock_guard<std::mutex> guard(launch_mutex());
  Launch L;
  L.kernel_name = name;
  L.body = body;
  L.job = job;
  L.threads.resize((std::size_t)nt);
  L.warps = std::vector<WarpSync>((std::size_t)(nt + 31) / 32);
  for (unsigned i = 0; i < nt; ++i) {
    Thread& t = L.threads[i];
    t.linear = i;
    t.lane = i % 32;
    t.warp = i / 32;
    t.tid = unflatten(i, block);
  }
  struct SmemDeleter {
    void operator()(unsigned char* p) const { ::operator delete(p, std::align_val_t(128)); }
  };
  // Exactly `smem` bytes, so AddressSanitizer sees an overflow of dynamic shared memory.
  std::unique_ptr<unsigned char, SmemDeleter> dyn(
      static_cast<unsigned char*>(::operator new(smem, std::align_val_t(128))));
  L.dyn_smem = dyn.get();
  L.dyn_smem_bytes = smem;
  gridDim = grid;
  blockDim = block;
  g_launch = &L;
  struct Reset {
    ~Reset() {
      g_launch = nullptr;
      tl_in_kernel = false;
    }
  } reset;
  tl_in_kernel = true;
  run_blocks(L, (unsigned)nb);
  if (L.error) std::rethrow_exception(L.error);
}

template <class Kernel, class Args> struct Job {
  Kernel kernel;
  Args* args;
  static void body(void* p) {
    auto* j = static_cast<Job*>(p);
    std::apply(j->kernel, *j->args);  // parameters are by value: each thread gets copies
  }
};

template <class... P, class... A>
void launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, std::size_t smem, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "LAUNCH: wrong number of kernel arguments");
  using Args = std::tuple<std::decay_t<P>...>;
  Args values(std::forward<A>(args)...);
  Job<void (*)(P...), Args> job{kernel, &values};
  run_launch(name, &Job<void (*)(P...), Args>::body, &job, grid, block, smem);
}

// ------------------------------------------------------------------------------------------
// Warp collectives
// ------------------------------------------------------------------------------------------
enum class ShflMode : unsigned char { idx, up, down, bfly };
struct ShflArgs {
  std::uint64_t value, result;
  int arg, width;
  ShflMode mode;
};
inline void run_shfl(void* const* lanes) {
  for (int l = 0; l < 32; ++l) {
    auto* a = static_cast<ShflArgs*>(lanes[l]);
    if (!a) continue;
    const int w = a->width, base = l & ~(w - 1);
    int src = l;
    switch (a->mode) {
      case ShflMode::idx: src = base + (a->arg & (w - 1)); break;
      case ShflMode::up: src = l - a->arg >= base ? l - a->arg : l; break;
      case ShflMode::down: src = l + a->arg < base + w ? l + a->arg : l; break;
      case ShflMode::bfly: src = (l ^ a->arg) < base + w ? (l ^ a->arg) : l; break;
    }
    src &= 31;
    auto* s = static_cast<ShflArgs*>(lanes[src]);
    a->result = s ? s->value : ~std::uint64_t(0);  // a non-member lane reads as 0xFF bytes
  }
}
inline constexpr Op op_shfl{"__shfl_sync", run_shfl};
inline constexpr Op op_shfl_up{"__shfl_up_sync", run_shfl};
inline constexpr Op op_shfl_down{"__shfl_down_sync", run_shfl};
inline constexpr Op op_shfl_xor{"__shfl_xor_sync", run_shfl};

template <class T>
inline T shuffle(const Op& op, ShflMode mode, unsigned mask, T v, int arg, int width, const Site& site) {
  static_assert(sizeof(T) <= 8 && std::is_default_constructible_v<T>, "shuffled type must be 1..8 bytes");
  if (width < 1 || width > 32 || (width & (width - 1)))
    throw Error(std::string(op.name) + " at " + where(site) + ": width " + std::to_string(width) +
                " is not a power of two in [1, 32]");
  ShflArgs a{0, 0, arg, width, mode};
  std::memcpy(&a.value, static_cast<const void*>(&v), sizeof(T));  // __half2 is not trivially copyable
  warp_collective(op, mask, &a, site);
  T r;
  std::memcpy(static_cast<void*>(&r), &a.result, sizeof(T));
  return r;
}

struct VoteArgs {
  int pred;
  unsigned ballot, members;
};
inline void run_vote(void* const* lanes) {
  unsigned ballot = 0, members = 0;
  for (int l = 0; l < 32; ++l)
    if (auto* a = static_cast<VoteArgs*>(lanes[l])) {
      members |= 1u << l;
      if (a->pred) ballot |= 1u << l;
    }
  for (int l = 0; l < 32; ++l)
    if (auto* a = static_cast<VoteArgs*>(lanes[l])) a->ballot = ballot, a->members = members;
}
inline constexpr Op op_ballot{"__ballot_sync", run_vote};
inline constexpr Op op_any{"__any_sync", run_vote};
inline constexpr Op op_all{"__all_sync", run_vote};
inline constexpr Op op_syncwarp{"__syncwarp", [](void* const*) {}};

template <class T, class F> struct ReduceArgs {
  T value, result;
};
template <class T, class F> inline void run_reduce(void* const* lanes) {
  bool any = false;
  T acc{};
  for (int l = 0; l < 32; ++l)
    if (auto* a = static_cast<ReduceArgs<T, F>*>(lanes[l])) acc = any ? F{}(acc, a->value) : a->value, any = true;
  for (int l = 0; l < 32; ++l)
    if (auto* a = static_cast<ReduceArgs<T, F>*>(lanes[l])) a->result = acc;
}
struct Plus {
  template <class T> T operator()(T a, T b) const { return a + b; }
};
struct Min {
  template <class T> T operator()(T a, T b) const { return b < a ? b : a; }
};
struct Max {
  template <class T> T operator()(T a, T b) const { return a < b ? b : a; }
};
template <class T, class F> inline constexpr Op op_reduce{"__reduce_*_sync", run_reduce<T, F>};
template <class T, class F> inline T reduce(unsigned mask, T v, const Site& site) {
  ReduceArgs<T, F> a{v, T{}};
  warp_collective(op_reduce<T, F>, mask, &a, site);
  return a.result;
}

// ------------------------------------------------------------------------------------------
// cp.async bookkeeping (used by ptx.cuh): copies are performed at wait_group, not at issue,
// so a missing wait reads the 0xFF fill instead of the data.
// ------------------------------------------------------------------------------------------
inline void async_copy(void* dst, const void* src, unsigned bytes, bool zero_fill) {
  if (reinterpret_cast<std::uintptr_t>(dst) % bytes || reinterpret_cast<std::uintptr_t>(src) % bytes)
    throw Error("cp.async of " + std::to_string(bytes) + " bytes needs " + std::to_string(bytes) +
                "-byte aligned addresses");
  Thread& me = self();
  me.copies.push_back({dst, src, bytes, zero_fill, me.open_group});
}
inline void async_commit() { ++self().open_group; }
inline void async_wait(unsigned newest_pending) {
  Thread& me = self();
  const unsigned limit = me.open_group >= newest_pending ? me.open_group - newest_pending : 0;
  auto& q = me.copies;
  auto keep = q.begin();
  for (auto it = q.begin(); it != q.end(); ++it) {
    if (it->group < limit) {
      if (it->zero_fill) std::memset(it->dst, 0, it->bytes);
      else std::memcpy(it->dst, it->src, it->bytes);
    } else {
      *keep++ = *it;
    }
  }
  q.erase(keep, q.end());
}

template <class T> inline T poison() {
  T v;
  std::memset(&v, 0xFF, sizeof v);
  return v;
}

}  // namespace cudasim

// ==========================================================================================
// CUDA device API on the host
// ==========================================================================================
#define LAUNCH(kernel, grid, block, smem, stream, ...) \
  ((void)(stream), ::cudasim::launch(#kernel, kernel, (grid), (block), (smem)__VA_OPT__(, ) __VA_ARGS__))
#define DYN_SMEM(T, name) T* name = reinterpret_cast<T*>(::cudasim::dyn_smem())
#if defined(CUDASIM_CHECK_SMEM)
#define SMEM_ARRAY(T, name, ...)                                                                    \
  static ::cudasim::Checked<T, __VA_ARGS__> CUDASIM_CAT(name, _storage_);                             \
  [[maybe_unused]] static const bool CUDASIM_CAT(name, _registered_) =                              \
      ::cudasim::register_smem(&CUDASIM_CAT(name, _storage_), sizeof(CUDASIM_CAT(name, _storage_))); \
  auto name = ::cudasim::CheckedRef<T, __VA_ARGS__>{&CUDASIM_CAT(name, _storage_).data, #name}
#else
#define SMEM_ARRAY(T, name, ...)                       \
  alignas(16) static ::cudasim::array_t<T, __VA_ARGS__> name; \
  [[maybe_unused]] static const bool CUDASIM_CAT(name, _registered_) = ::cudasim::register_smem(&name, sizeof(name))
#endif

// ---- barriers and votes --------------------------------------------------------------------
inline void __syncthreads(cudasim::Site s = cudasim::Site::current()) {
  (void)cudasim::block_barrier(cudasim::BlockKind::sync, 0, s);
}
inline int __syncthreads_count(int pred, cudasim::Site s = cudasim::Site::current()) {
  return cudasim::block_barrier(cudasim::BlockKind::count, pred, s).count;
}
inline int __syncthreads_or(int pred, cudasim::Site s = cudasim::Site::current()) {
  return cudasim::block_barrier(cudasim::BlockKind::count, pred, s).count != 0;
}
inline int __syncthreads_and(int pred, cudasim::Site s = cudasim::Site::current()) {
  auto r = cudasim::block_barrier(cudasim::BlockKind::count, pred, s);
  return (unsigned)r.count == r.live;
}
inline void __syncwarp(unsigned mask = 0xffffffffu, cudasim::Site s = cudasim::Site::current()) {
  cudasim::warp_collective(cudasim::op_syncwarp, mask, nullptr, s);
}
inline unsigned __activemask() { return cudasim::active_mask(); }
inline unsigned __ballot_sync(unsigned mask, int pred, cudasim::Site s = cudasim::Site::current()) {
  cudasim::VoteArgs a{pred, 0, 0};
  cudasim::warp_collective(cudasim::op_ballot, mask, &a, s);
  return a.ballot;
}
inline int __any_sync(unsigned mask, int pred, cudasim::Site s = cudasim::Site::current()) {
  cudasim::VoteArgs a{pred, 0, 0};
  cudasim::warp_collective(cudasim::op_any, mask, &a, s);
  return a.ballot != 0;
}
inline int __all_sync(unsigned mask, int pred, cudasim::Site s = cudasim::Site::current()) {
  cudasim::VoteArgs a{pred, 0, 0};
  cudasim::warp_collective(cudasim::op_all, mask, &a, s);
  return a.ballot == a.members;
}
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = warpSize, cudasim::Site s = cudasim::Site::current()) {
  return cudasim::shuffle(cudasim::op_shfl, cudasim::ShflMode::idx, mask, v, src, width, s);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = warpSize,
                        cudasim::Site s = cudasim::Site::current()) {
  return cudasim::shuffle(cudasim::op_shfl_up, cudasim::ShflMode::up, mask, v, (int)d, width, s);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = warpSize,
                          cudasim::Site s = cudasim::Site::current()) {
  return cudasim::shuffle(cudasim::op_shfl_down, cudasim::ShflMode::down, mask, v, (int)d, width, s);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize,
                         cudasim::Site s = cudasim::Site::current()) {
  return cudasim::shuffle(cudasim::op_shfl_xor, cudasim::ShflMode::bfly, mask, v, lane_mask, width, s);
}
inline unsigned __reduce_add_sync(unsigned m, unsigned v, cudasim::Site s = cudasim::Site::current()) {
  return cudasim::reduce<unsigned, cudasim::Plus>(m, v, s);
}
inline int __reduce_add_sync(unsigned m, int v, cudasim::Site s = cudasim::Site::current()) {
  return (int)cudasim::reduce<unsigned, cudasim::Plus>(m, (unsigned)v, s);  // wraps like hardware
}
inline unsigned __reduce_min_sync(unsigned m, unsigned v, cudasim::Site s = cudasim::Site::current()) {
  return cudasim::reduce<unsigned, cudasim::Min>(m, v, s);
}
inline int __reduce_min_sync(unsigned m, int v, cudasim::Site s = cudasim::Site::current()) {
  return cudasim::reduce<int, cudasim::Min>(m, v, s);
}
inline unsigned __reduce_max_sync(unsigned m, unsigned v, cudasim::Site s = cudasim::Site::current()) {
  return cudasim::reduce<unsigned, cudasim::Max>(m, v, s);
}
inline int __reduce_max_sync(unsigned m, int v, cudasim::Site s = cudasim::Site::current()) {
  return cudasim::reduce<int, cudasim::Max>(m, v, s);
}

// ---- memory fences and loads ---------------------------------------------------------------
#if defined(__SANITIZE_THREAD__)
#define CUDASIM_FENCE std::atomic_signal_fence  // ThreadSanitizer does not model fences
#else
#define CUDASIM_FENCE std::atomic_thread_fence
#endif
inline void __threadfence_block() { CUDASIM_FENCE(std::memory_order_seq_cst); }
inline void __threadfence() { CUDASIM_FENCE(std::memory_order_seq_cst); }
inline void __threadfence_system() { CUDASIM_FENCE(std::memory_order_seq_cst); }
#undef CUDASIM_FENCE
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stwb(T* p, T v) { *p = v; }
inline void __nanosleep(unsigned) { std::this_thread::yield(); }
inline long long clock64() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
[[noreturn]] inline void __trap() { throw cudasim::Error("__trap() called"); }

// ---- atomics (return the old value) ---------------------------------------------------------
namespace cudasim {
template <class T> using atomic_value_t = std::enable_if_t<std::is_arithmetic_v<T>, T>;
template <class T, class F> inline T atomic_update(T* p, F f) {  // CAS loop for what atomic_ref lacks
  std::atomic_ref<T> r(*p);
  T old = r.load();
  while (!r.compare_exchange_weak(old, f(old))) {
  }
  return old;
}
// 16-bit floats: CAS on their bits.
template <class H> inline H atomic_add_16(H* p, H v) {
  std::atomic_ref<std::uint16_t> r(*reinterpret_cast<std::uint16_t*>(p));
  std::uint16_t old = r.load();
  while (!r.compare_exchange_weak(old, std::bit_cast<std::uint16_t>(H(float(std::bit_cast<H>(old)) + float(v))))) {
  }
  return std::bit_cast<H>(old);
}
}  // namespace cudasim
template <class T> inline cudasim::atomic_value_t<T> atomicAdd(T* p, std::type_identity_t<T> v) { return std::atomic_ref<T>(*p).fetch_add(v); }
template <class T> inline cudasim::atomic_value_t<T> atomicSub(T* p, std::type_identity_t<T> v) { return std::atomic_ref<T>(*p).fetch_sub(v); }
template <class T> inline cudasim::atomic_value_t<T> atomicExch(T* p, std::type_identity_t<T> v) { return std::atomic_ref<T>(*p).exchange(v); }
template <class T> inline cudasim::atomic_value_t<T> atomicCAS(T* p, std::type_identity_t<T> expected, std::type_identity_t<T> v) {
  std::atomic_ref<T>(*p).compare_exchange_strong(expected, v);
  return expected;
}
template <class T> inline cudasim::atomic_value_t<T> atomicMin(T* p, std::type_identity_t<T> v) {
  return cudasim::atomic_update(p, [v](T o) { return v < o ? v : o; });
}
template <class T> inline cudasim::atomic_value_t<T> atomicMax(T* p, std::type_identity_t<T> v) {
  return cudasim::atomic_update(p, [v](T o) { return o < v ? v : o; });
}
template <class T> inline std::enable_if_t<std::is_integral_v<T>, T> atomicAnd(T* p, std::type_identity_t<T> v) {
  return std::atomic_ref<T>(*p).fetch_and(v);
}
template <class T> inline std::enable_if_t<std::is_integral_v<T>, T> atomicOr(T* p, std::type_identity_t<T> v) {
  return std::atomic_ref<T>(*p).fetch_or(v);
}
template <class T> inline std::enable_if_t<std::is_integral_v<T>, T> atomicXor(T* p, std::type_identity_t<T> v) {
  return std::atomic_ref<T>(*p).fetch_xor(v);
}
inline __half atomicAdd(__half* p, __half v) { return cudasim::atomic_add_16(p, v); }
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) { return cudasim::atomic_add_16(p, v); }
#define CUDASIM_ATOMIC_SCOPED(name) \
  template <class... A> inline auto name##_block(A... a) { return name(a...); } \
  template <class... A> inline auto name##_system(A... a) { return name(a...); }
CUDASIM_ATOMIC_SCOPED(atomicAdd)
CUDASIM_ATOMIC_SCOPED(atomicExch)
CUDASIM_ATOMIC_SCOPED(atomicCAS)
CUDASIM_ATOMIC_SCOPED(atomicMax)
CUDASIM_ATOMIC_SCOPED(atomicMin)
#undef CUDASIM_ATOMIC_SCOPED

// ---- math intrinsics -----------------------------------------------------------------------
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline void __sincosf(float x, float* s, float* c) { *s = std::sin(x), *c = std::cos(x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __tanhf(float x) { return std::tanh(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float fdividef(float a, float b) { return a / b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __frsqrt_rn(float x) { return 1.0f / std::sqrt(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float __saturatef(float x) { return x > 0.f ? (x < 1.f ? x : 1.f) : 0.f; }  // NaN -> 0
inline int __float2int_rn(float x) { return (int)std::nearbyint(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)std::floor(x); }
inline int __float2int_ru(float x) { return (int)std::ceil(x); }
inline float __int2float_rn(int x) { return (float)x; }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
  return (x >> 16) | (x << 16);
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline int __mul24(int a, int b) { return a * b; }
inline unsigned __umul24(unsigned a, unsigned b) { return a * b; }
// CUDA's unqualified min/max overloads
#define CUDASIM_MINMAX(T)                                \
  inline T min(T a, T b) { return b < a ? b : a; }       \
  inline T max(T a, T b) { return a < b ? b : a; }
CUDASIM_MINMAX(int)
CUDASIM_MINMAX(unsigned)
CUDASIM_MINMAX(long long)
CUDASIM_MINMAX(unsigned long long)
#undef CUDASIM_MINMAX
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }


// ---- 16-bit float math that cuda_fp16.h / cuda_bf16.h declare for device code only ----------
#define CUDASIM_H_UNARY(name, expr)                                                                  \
  inline __half name(__half x) {                                                                     \
    const float v = __half2float(x);                                                                 \
    return __float2half(expr);                                                                       \
  }                                                                                                  \
  inline __nv_bfloat16 name(__nv_bfloat16 x) {                                                       \
    const float v = __bfloat162float(x);                                                             \
    return __float2bfloat16(expr);                                                                   \
  }
#define CUDASIM_H2_UNARY(name, scalar)                                                               \
  inline __half2 name(__half2 x) { return __halves2half2(scalar(__low2half(x)), scalar(__high2half(x))); } \
  inline __nv_bfloat162 name(__nv_bfloat162 x) {                                                     \
    return __halves2bfloat162(scalar(__low2bfloat16(x)), scalar(__high2bfloat16(x)));                \
  }
#define CUDASIM_H_MATH(h, h2, expr) CUDASIM_H_UNARY(h, expr) CUDASIM_H2_UNARY(h2, h)
CUDASIM_H_MATH(hexp, h2exp, std::exp(v))
CUDASIM_H_MATH(hexp2, h2exp2, std::exp2(v))
CUDASIM_H_MATH(hexp10, h2exp10, std::pow(10.0f, v))
CUDASIM_H_MATH(hlog, h2log, std::log(v))
CUDASIM_H_MATH(hlog2, h2log2, std::log2(v))
CUDASIM_H_MATH(hlog10, h2log10, std::log10(v))
CUDASIM_H_MATH(hsqrt, h2sqrt, std::sqrt(v))
CUDASIM_H_MATH(hrsqrt, h2rsqrt, 1.0f / std::sqrt(v))
CUDASIM_H_MATH(hrcp, h2rcp, 1.0f / v)
CUDASIM_H_MATH(hsin, h2sin, std::sin(v))
CUDASIM_H_MATH(hcos, h2cos, std::cos(v))
CUDASIM_H_MATH(htanh, h2tanh, std::tanh(v))
CUDASIM_H_MATH(hfloor, h2floor, std::floor(v))
CUDASIM_H_MATH(hceil, h2ceil, std::ceil(v))
CUDASIM_H_MATH(htrunc, h2trunc, std::trunc(v))
CUDASIM_H_MATH(hrint, h2rint, std::nearbyint(v))
#undef CUDASIM_H_MATH
#undef CUDASIM_H2_UNARY
#undef CUDASIM_H_UNARY
namespace cudasim {
template <class H> inline H hfma(H a, H b, H c, int clamp) {  // clamp: 0 none, 1 relu, 2 saturate
  float r = std::fma(float(a), float(b), float(c));
  if (clamp == 1) r = r > 0.f ? r : 0.f;
  if (clamp == 2) r = r > 0.f ? (r < 1.f ? r : 1.f) : 0.f;
  return H(r);
}
}  // namespace cudasim
#define CUDASIM_HFMA(name, name2, clamp)                                                             \
  inline __half name(__half a, __half b, __half c) { return cudasim::hfma(a, b, c, clamp); }        \
  inline __nv_bfloat16 name(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {                    \
    return cudasim::hfma(a, b, c, clamp);                                                           \
  }                                                                                                  \
  inline __half2 name2(__half2 a, __half2 b, __half2 c) {                                            \
    return __halves2half2(name(__low2half(a), __low2half(b), __low2half(c)),                          \
                          name(__high2half(a), __high2half(b), __high2half(c)));                      \
  }                                                                                                  \
  inline __nv_bfloat162 name2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {                \
    return __halves2bfloat162(name(__low2bfloat16(a), __low2bfloat16(b), __low2bfloat16(c)),          \
                              name(__high2bfloat16(a), __high2bfloat16(b), __high2bfloat16(c)));      \
  }
CUDASIM_HFMA(__hfma, __hfma2, 0)
CUDASIM_HFMA(__hfma_relu, __hfma2_relu, 1)
CUDASIM_HFMA(__hfma_sat, __hfma2_sat, 2)
#undef CUDASIM_HFMA

// ---- nvcuda::wmma, emulated with the whole tile in every thread ----------------------------
// Each lane's fragment holds the full tile, so kernels must not depend on which elements a
// lane owns (csrc/README.md). Loads and mma are per lane; a store is written once, by the
// warp's first live lane, between two __syncwarp so no lane reads the tile before it is there.
namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
}  // namespace precision
namespace detail {
template <class Use, int M, int N, int K> struct dims;
template <int M, int N, int K> struct dims<matrix_a, M, N, K> { static constexpr int r = M, c = K; };
template <int M, int N, int K> struct dims<matrix_b, M, N, K> { static constexpr int r = K, c = N; };
template <int M, int N, int K> struct dims<accumulator, M, N, K> { static constexpr int r = M, c = N; };
template <class T> struct storage { using type = T; };
template <> struct storage<precision::tf32> { using type = float; };
template <class T> inline float to_float(T v) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else return static_cast<float>(v);
}
template <class T> inline T from_float(float v) {
  if constexpr (std::is_same_v<T, __half>) return __float2half(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16(v);
  else return static_cast<T>(v);
}
}  // namespace detail
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  using element_type = typename detail::storage<T>::type;
  static constexpr int rows = detail::dims<Use, M, N, K>::r, cols = detail::dims<Use, M, N, K>::c;
  static constexpr int num_elements = rows * cols;
  element_type x[num_elements];
};
template <class Use, int M, int N, int K, class T, class L, class V>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
  for (auto& e : f.x) e = static_cast<typename fragment<Use, M, N, K, T, L>::element_type>(v);
}
template <class Use, int M, int N, int K, class T, class L, class P>
inline void load_tile(fragment<Use, M, N, K, T, L>& f, const P* p, unsigned ldm, bool row) {
  using F = fragment<Use, M, N, K, T, L>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      f.x[r * F::cols + c] = p[row ? size_t(r) * ldm + c : size_t(c) * ldm + r];
}
template <class Use, int M, int N, int K, class T, class P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, row_major>& f, const P* p, unsigned ldm) {
  load_tile(f, p, ldm, true);
}
template <class Use, int M, int N, int K, class T, class P>
inline void load_matrix_sync(fragment<Use, M, N, K, T, col_major>& f, const P* p, unsigned ldm) {
  load_tile(f, p, ldm, false);
}
template <int M, int N, int K, class T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm,
                             layout_t layout) {
  load_tile(f, p, ldm, layout == mem_row_major);
}
template <int M, int N, int K, class T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm,
                              layout_t layout) {
  __syncwarp(__activemask());
  if ((unsigned)__builtin_ctz(__activemask()) == cudasim::g_self->lane)
    for (int r = 0; r < M; ++r)
      for (int c = 0; c < N; ++c)
        p[layout == mem_row_major ? size_t(r) * ldm + c : size_t(c) * ldm + r] = f.x[r * N + c];
  __syncwarp(__activemask());
}
template <int M, int N, int K, class TA, class LA, class TB, class LB, class TC>
inline void mma_sync(fragment<accumulator, M, N, K, TC>& d,
                     const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b,
                     const fragment<accumulator, M, N, K, TC>& c) {
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = detail::to_float(c.x[i * N + j]);
      for (int k = 0; k < K; ++k)
        acc = std::fma(detail::to_float(a.x[i * K + k]), detail::to_float(b.x[k * N + j]), acc);
      out[i * N + j] = acc;
    }
  for (int e = 0; e < M * N; ++e) d.x[e] = detail::from_float<TC>(out[e]);
}
}  // namespace nvcuda::wmma

#endif  // !__CUDACC__
