#!/usr/bin/env bash
# Builds the standalone kernel tests (tests/csrc: the GEMMs, the linear cross-entropy chunk loop
# and kernels called from several threads; no torch) into build/tests/ and runs them: once
# optimised, once under AddressSanitizer + UndefinedBehaviorSanitizer at -O1 (the GEMM on small
# shapes), and the threads test under ThreadSanitizer with one OpenMP thread per call (gcc's
# libgomp is not instrumented: the barrier of a parallel region would be reported as a race).
# SANITIZE=0 skips the sanitizer runs. CXX picks the compiler (default g++).
set -euo pipefail
cd "$(dirname "$0")/../.."

CXX=${CXX:-g++}
KERNELS=(csrc/cpu/kernels/gemm/*.cpp csrc/cpu/kernels/scratch.cpp csrc/cpu/kernels/cpu_features.cpp)
LOOP_KERNELS=("${KERNELS[@]}" csrc/cpu/kernels/loss*.cpp csrc/cpu/kernels/lce.cpp csrc/cpu/kernels/rnn*.cpp)
FLAGS=(-std=c++17 -fopenmp -Wall -Wno-psabi -I csrc)
mkdir -p build/tests

echo "== build/tests/test_gemm (-O2)"
"$CXX" "${FLAGS[@]}" -O2 tests/csrc/test_gemm.cpp "${KERNELS[@]}" -o build/tests/test_gemm
build/tests/test_gemm
echo "== build/tests/test_gemm_bf16 (-O2)"
"$CXX" "${FLAGS[@]}" -O2 tests/csrc/test_gemm_bf16.cpp "${KERNELS[@]}" -o build/tests/test_gemm_bf16
build/tests/test_gemm_bf16
echo "== build/tests/test_loops (-O2)"
"$CXX" "${FLAGS[@]}" -O2 tests/csrc/test_loops.cpp "${LOOP_KERNELS[@]}" -o build/tests/test_loops
build/tests/test_loops

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
  echo "== build/tests/test_loops_asan (-O1 -fsanitize=address,undefined)"
  "$CXX" "${FLAGS[@]}" -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
    -fno-sanitize-recover=undefined tests/csrc/test_loops.cpp "${LOOP_KERNELS[@]}" -o build/tests/test_loops_asan
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    build/tests/test_loops_asan
  echo "== build/tests/test_loops_tsan (-O1 -fsanitize=thread, OMP_NUM_THREADS=1)"
  "$CXX" "${FLAGS[@]}" -O1 -g -fsanitize=thread tests/csrc/test_loops.cpp "${LOOP_KERNELS[@]}" \
    -o build/tests/test_loops_tsan
  OMP_NUM_THREADS=1 TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:exitcode=66} build/tests/test_loops_tsan
fi
