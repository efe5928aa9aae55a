#!/usr/bin/env bash
# Build and run the CUDA simulator tests (tests/sim/sim_tests.cu) without a GPU and without the
# CUDA toolkit: every kernel compiles with the host compiler, the simulator header and the
# project's headers alone (-include csrc/sim/cuda_sim.h -Icsrc).
#   plain   fibers, -O2
#   asan    fibers, AddressSanitizer + UBSan, bounds-checked SMEM_ARRAY; and the deliberate
#           out-of-bounds kernel, which AddressSanitizer must report
#   tsan    one OS thread per CUDA thread, ThreadSanitizer; and the deliberately racy
#           kernel, which ThreadSanitizer must report
#   gemm    tests/sim/gemm_tests.cu (GEMM and bias/activation backward kernels): fibers -O2 on
#           every case, and ASan+UBSan on a few small shapes per variant (--quick)
#   grid    tests/sim/grid_tests.cu (conv and attention blocks numbered over grid.y and z, with
#           the plans' limit lowered): fibers -O2, and ASan+UBSan
#   loop    tests/sim/loop_tests.cu (the host loops over kernels: linear cross-entropy chunks,
#           RNN time steps, against double references): fibers -O2, and ASan+UBSan
# Two steps use the CUDA toolkit where there is one, and are skipped, saying so, where not:
#   fp16    tests/sim/fp16_tests.cu: the simulator's __half and __nv_bfloat16 against CUDA's
#           own headers, bit for bit
#   nvcc    the same kernels compiled by nvcc for sm_80 and sm_90
# The toolkit is found through CUDA_HOME, else nvcc on PATH, else /usr/local/cuda.
# --no-toolkit: behave as on a machine without it (neither step runs; nothing is looked up).
# Build outputs and logs go to build/sim/. Exit status 0 only if every step passed.
set -u
cd "$(dirname "$0")/../.."
OUT=build/sim
mkdir -p "$OUT"
CXX=${CXX:-g++}
NO_TOOLKIT=0
for arg in "$@"; do
  case $arg in
    --no-toolkit) NO_TOOLKIT=1 ;;
    *) echo "run.sh: unknown argument $arg (only --no-toolkit)"; exit 2 ;;
  esac
done

# ---- the CUDA toolkit, for the fp16 and nvcc steps only ------------------------------------
NVCC=""
CUDA_INC=""
if ((NO_TOOLKIT == 0)); then
  if [[ -n "${CUDA_HOME:-}" ]]; then
    [[ -x "$CUDA_HOME/bin/nvcc" ]] && NVCC="$CUDA_HOME/bin/nvcc"
    [[ -f "$CUDA_HOME/include/cuda_fp16.h" ]] && CUDA_INC="$CUDA_HOME/include"
  elif command -v nvcc >/dev/null; then
    NVCC=nvcc
    # nvcc may be a wrapper script; its dry run prints the real toolkit paths
    dry=$(nvcc -v --dryrun -x cu -c /dev/null -o /dev/null 2>&1)
    inc=$(sed -n 's/^#\$ INCLUDES="-I\([^"]*\)".*/\1/p' <<<"$dry" | head -1)
    top=$(sed -n 's/^#\$ TOP=\(.*\)$/\1/p' <<<"$dry" | head -1)
    if [[ -n "$inc" && -f "$inc/cuda_fp16.h" ]]; then CUDA_INC=$inc
    elif [[ -n "$top" && -f "$top/include/cuda_fp16.h" ]]; then CUDA_INC=$top/include
    fi
  elif [[ -f /usr/local/cuda/include/cuda_fp16.h ]]; then
    CUDA_INC=/usr/local/cuda/include
    [[ -x /usr/local/cuda/bin/nvcc ]] && NVCC=/usr/local/cuda/bin/nvcc
  fi
fi
if [[ -n "$CUDA_INC" ]]; then echo "CUDA headers: $CUDA_INC (for the fp16 comparison only)"; fi

SIM_FLAGS=(-std=c++20 -pthread -Wall -Wextra -Werror -Icsrc -x c++ -include csrc/sim/cuda_sim.h)
SRC=tests/sim/sim_tests.cu

# ---- step bookkeeping --------------------------------------------------------------------
passed=0
failed=0
report() {  # report NAME STATUS(0=ok) LOG SECONDS
  if [[ $2 -eq 0 ]]; then
    passed=$((passed + 1))
    printf 'ok    %-28s %5.1fs\n' "$1" "$4"
  else
    failed=$((failed + 1))
    printf 'FAIL  %-28s %5.1fs  (log: %s)\n' "$1" "$4" "$3"
    tail -n 25 "$3" | sed 's/^/      /'
  fi
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---- builds, two at a time -----------------------------------------------------------------
declare -A BUILD_CMD
BUILD_CMD[plain]="$CXX ${SIM_FLAGS[*]@Q} -O2 $SRC -o $OUT/sim_tests_plain"
BUILD_CMD[asan]="$CXX ${SIM_FLAGS[*]@Q} -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
  -fno-sanitize-recover=undefined -DCUDASIM_CHECK_SMEM -DCUDASIM_SELFTEST_OOB $SRC -o $OUT/sim_tests_asan"
BUILD_CMD[tsan]="$CXX ${SIM_FLAGS[*]@Q} -O1 -g -fsanitize=thread -DCUDASIM_SELFTEST_RACE $SRC -o $OUT/sim_tests_tsan"
# GEMM / bias-activation-backward kernels (tests/sim/gemm_tests.cu): fibers -O2 (every case) and
# AddressSanitizer + UBSan with bounds-checked SMEM_ARRAY (--quick: a few small shapes per variant)
GEMM_SRC=tests/sim/gemm_tests.cu
BUILD_CMD[gemm_plain]="$CXX ${SIM_FLAGS[*]@Q} -O2 $GEMM_SRC -o $OUT/gemm_tests_plain"
BUILD_CMD[gemm_asan]="$CXX ${SIM_FLAGS[*]@Q} -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
  -fno-sanitize-recover=undefined -DCUDASIM_CHECK_SMEM $GEMM_SRC -o $OUT/gemm_tests_asan"
# Kernels whose blocks go on along grid.z past grid.y's limit (tests/sim/grid_tests.cu)
GRID_SRC=tests/sim/grid_tests.cu
BUILD_CMD[grid_plain]="$CXX ${SIM_FLAGS[*]@Q} -O2 $GRID_SRC -o $OUT/grid_tests_plain"
# (without CUDASIM_CHECK_SMEM: attention.cuh indexes its shared arrays by int64_t, which the
# bounds-checked arrays' operator[] takes ambiguously)
BUILD_CMD[grid_asan]="$CXX ${SIM_FLAGS[*]@Q} -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
  -fno-sanitize-recover=undefined $GRID_SRC -o $OUT/grid_tests_asan"
# Host loops over the kernels (tests/sim/loop_tests.cu: linear cross-entropy chunks, RNN time loops)
LOOP_SRC=tests/sim/loop_tests.cu
BUILD_CMD[loop_plain]="$CXX ${SIM_FLAGS[*]@Q} -O2 $LOOP_SRC -o $OUT/loop_tests_plain"
BUILD_CMD[loop_asan]="$CXX ${SIM_FLAGS[*]@Q} -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
  -fno-sanitize-recover=undefined $LOOP_SRC -o $OUT/loop_tests_asan"
BUILDS=(tsan asan gemm_asan plain gemm_plain grid_plain grid_asan loop_plain loop_asan)
if [[ -n "$CUDA_INC" ]]; then
  BUILD_CMD[fp16]="$CXX -std=c++20 -O2 -Wall -Wextra -Werror -isystem ${CUDA_INC@Q} -Icsrc -x c++ \
    tests/sim/fp16_tests.cu -o $OUT/fp16_tests"
  BUILDS+=(fp16)
else
  echo "no CUDA toolkit: skipping the bit-for-bit check of __half and __nv_bfloat16 against CUDA's headers"
fi
if [[ -n "$NVCC" ]]; then
  for arch in sm_80 sm_90; do
    BUILD_CMD[nvcc_$arch]="${NVCC@Q} -std=c++20 -arch=$arch -Werror all-warnings -c tests/sim/nvcc_check.cu \
      -o $OUT/nvcc_check_$arch.o"
    BUILDS+=("nvcc_$arch")
  done
else
  echo "no nvcc: skipping the nvcc compile check of the simulator's test kernels"
fi

t_all=$(now)
declare -A PID START
for b in "${BUILDS[@]}"; do
  while (($(jobs -rp | wc -l) >= 2)); do wait -n; done
  START[$b]=$(now)
  bash -c "${BUILD_CMD[$b]}" >"$OUT/build_$b.log" 2>&1 &
  PID[$b]=$!
done
for b in "${BUILDS[@]}"; do
  wait "${PID[$b]}"
  report "build $b" $? "$OUT/build_$b.log" "$(elapsed "${START[$b]}")"
done

# ---- test runs -----------------------------------------------------------------------------
run_tests() {  # run_tests MODE: all tests must pass, no sanitizer report
  local bin="$OUT/sim_tests_$1" log="$OUT/run_$1.log" t
  t=$(now)
  if [[ ! -x "$bin" ]]; then report "tests $1" 1 "$log" 0; return; fi
  ASAN_OPTIONS=detect_leaks=1 TSAN_OPTIONS=halt_on_error=0 "$bin" >"$log" 2>&1
  local rc=$?
  report "tests $1: $(tail -n 1 "$log")" $rc "$log" "$(elapsed "$t")"
}
expect_report() {  # expect_report MODE FLAG PATTERN...: the run must fail with every PATTERN in its output
  local mode=$1 flag=$2 bin="$OUT/sim_tests_$1" log="$OUT/run_$1$2.log" t rc=0
  shift 2
  t=$(now)
  if [[ ! -x "$bin" ]]; then report "$mode $flag reported" 1 "$log" 0; return; fi
  "$bin" "$flag" >"$log" 2>&1 && rc=1  # passing silently is the failure here
  for p in "$@"; do grep -q -- "$p" "$log" || { echo "missing in output: $p" >>"$log"; rc=1; }; done
  report "$mode $flag reported" $rc "$log" "$(elapsed "$t")"
}

run_tests plain
run_tests asan
expect_report asan --oob "ERROR: AddressSanitizer: heap-buffer-overflow" "in sim_selftest::out_of_bounds" \
  "sim_selftest.cuh:"
run_tests tsan
expect_report tsan --race "WARNING: ThreadSanitizer: data race" "sim_selftest::racy_reverse" "sim_selftest.cuh:"

run_kernel_tests() {  # run_kernel_tests SUITE MODE [ARGS...]: SUITE gemm, grid or loop
  local suite=$1 mode=$2 bin="$OUT/$1_tests_$2" log="$OUT/run_$1_$2.log" t
  shift 2
  t=$(now)
  if [[ ! -x "$bin" ]]; then report "$suite tests $mode" 1 "$log" 0; return; fi
  ASAN_OPTIONS=detect_leaks=1 "$bin" "$@" >"$log" 2>&1
  local rc=$?
  report "$suite $mode: $(tail -n 1 "$log")" $rc "$log" "$(elapsed "$t")"
}
run_kernel_tests gemm plain
run_kernel_tests gemm asan --quick
run_kernel_tests grid plain
run_kernel_tests grid asan
run_kernel_tests loop plain
run_kernel_tests loop asan
if [[ -n "$CUDA_INC" ]]; then
  t=$(now)
  "$OUT/fp16_tests" >"$OUT/run_fp16.log" 2>&1
  report "fp16 vs CUDA: $(tail -n 1 "$OUT/run_fp16.log")" $? "$OUT/run_fp16.log" "$(elapsed "$t")"
fi

echo "run.sh: $passed passed, $failed failed ($(elapsed "$t_all")s)"
((failed == 0))
