// Intel's AMX tile unit (tdpbf16ps): the one tile configuration the bf16 kernels use, eight
// 16-row x 64-byte tiles. Include after a `#pragma GCC target` naming amx-tile and amx-bf16;
// a thread runs amx_begin() before its first tile instruction and _tile_release() after its last.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace fusedops::cpu::avx512bf16 {

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

inline void amx_begin() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) c.rows[t] = 16, c.colsb[t] = 64;
  _tile_loadconfig(&c);
}

}  // namespace fusedops::cpu::avx512bf16
