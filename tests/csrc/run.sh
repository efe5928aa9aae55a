#!/usr/bin/env bash
# Builds the standalone GEMM tests (tests/csrc/test_gemm.cpp, test_gemm_bf16.cpp; no torch) into build/tests/ and
# runs it: once optimised on every shape, once under AddressSanitizer + UndefinedBehaviorSanitizer
# at -O1 on small shapes (SANITIZE=0 skips that run). CXX picks the compiler (default g++).
set -euo pipefail
cd "$(dirname "$0")/../.."

CXX=${CXX:-g++}
KERNELS=(csrc/cpu/kernels/gemm/*.cpp csrc/cpu/kernels/scratch.cpp csrc/cpu/kernels/cpu_features.cpp)
FLAGS=(-std=c++17 -fopenmp -Wall -Wno-psabi -I csrc)
mkdir -p build/tests

echo "== build/tests/test_gemm (-O2)"
"$CXX" "${FLAGS[@]}" -O2 tests/csrc/test_gemm.cpp "${KERNELS[@]}" -o build/tests/test_gemm
build/tests/test_gemm
echo "== build/tests/test_gemm_bf16 (-O2)"
"$CXX" "${FLAGS[@]}" -O2 tests/csrc/test_gemm_bf16.cpp "${KERNELS[@]}" -o build/tests/test_gemm_bf16
build/tests/test_gemm_bf16

if [ "${SANITIZE:-1}" != 0 ]; then
  echo "== build/tests/test_gemm_asan (-O1 -fsanitize=address,undefined, small shapes)"
  "$CXX" "${FLAGS[@]}" -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
    -fno-sanitize-recover=undefined tests/csrc/test_gemm.cpp "${KERNELS[@]}" -o build/tests/test_gemm_asan
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    build/tests/test_gemm_asan --small
  echo "== build/tests/test_gemm_bf16_asan (-O1 -fsanitize=address,undefined)"
  "$CXX" "${FLAGS[@]}" -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
    -fno-sanitize-recover=undefined tests/csrc/test_gemm_bf16.cpp "${KERNELS[@]}" -o build/tests/test_gemm_bf16_asan
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    build/tests/test_gemm_bf16_asan
fi
