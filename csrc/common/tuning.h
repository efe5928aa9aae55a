// Run-time settings the bindings of both backends read, each kept in one place: set from the
// environment once at load and changeable from Python (fusedops._C) by the tests, instead of
// an environment variable read on every call.
#pragma once
#include <atomic>
#include <cstdint>
#include <cstdlib>

namespace fusedops {

// Rows per chunk of linear_cross_entropy's logits (FUSEDOPS_LCE_CHUNK_ROWS; _set_lce_chunk_rows);
// 0, the default, leaves it to each backend's rule (cpu/kernels/lce.h, cuda/loss_impl.h).
inline std::atomic<int64_t>& lce_chunk_rows_setting() {
  static std::atomic<int64_t> rows{[] {
    const char* e = std::getenv("FUSEDOPS_LCE_CHUNK_ROWS");
    const long long v = e ? std::atoll(e) : 0;
    return int64_t(v > 0 ? v : 0);
  }()};
  return rows;
}

}  // namespace fusedops
