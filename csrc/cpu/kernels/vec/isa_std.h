// The standard headers every per-instruction-set translation unit may use, included by the
// isa_*.h selectors BEFORE `#pragma GCC target`: headers compiled after the pragma would give
// their inline functions the wider instruction set, and the linker could pick those copies for
// callers on CPUs without it.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <memory>
#include <vector>

#include <omp.h>

#include "../bf16.h"
#include "../parallel.h"
#include "../scratch.h"
#if defined(__x86_64__)
#include <immintrin.h>
#endif
