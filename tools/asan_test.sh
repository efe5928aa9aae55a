#!/usr/bin/env bash
# The op tests against the AddressSanitizer + UndefinedBehaviorSanitizer build of the extension
# (`make asan-build`: FUSEDOPS_ASAN=1, into build/asan/lib). The tests run in a copy of the
# package (build/asan/tree) that holds that build, so the checkout's own fusedops/_C stays as
# it is. Python and torch are not instrumented, so the sanitizer runtime is preloaded
# (LD_PRELOAD of gcc's libasan). Every report goes to build/asan/logs; any report of ours
# fails the run.
#   usage: tools/asan_test.sh [PYTHON] [pytest arguments...]   (default: the op tests, not slow)
# Settings and suppressions (each one torch's, none of ours):
#   detect_leaks=0             torch and CPython keep allocations alive until exit by design
#                              (interned objects, the dispatcher's registrations)
#   allocator_may_return_null=1  the bad-input matrix asks for 2**40-element tensors on purpose:
#                              torch must get NULL and raise, as with the plain allocator
#   detect_odr_violation=0     libtorch_cpu and libtorch_python define some globals twice
#   UBSan's vptr check is off at build time (setup.py): it reads torch's class type information
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
shift || true
SO=build/asan/lib/fusedops/_C.abi3.so
[[ -f $SO ]] || { echo "asan_test.sh: $SO missing: run make asan-build first"; exit 2; }
TREE=build/asan/tree
LOGS=$PWD/build/asan/logs
rm -rf "$TREE" "$LOGS"
mkdir -p "$TREE" "$LOGS"
cp -r fusedops tests pyproject.toml "$TREE"/
rm -f "$TREE"/fusedops/*.so
cp "$SO" "$TREE"/fusedops/
# libstdc++ preloaded beside libasan: the runtime intercepts __cxa_throw only if the C++
# library is there when it starts (else torch's first exception stops the process)
LIBASAN="$(${CXX:-g++} -print-file-name=libasan.so) $(${CXX:-g++} -print-file-name=libstdc++.so.6)"
TESTS=("$@")
if [[ ${#TESTS[@]} -eq 0 ]]; then
  TESTS=(-m "not slow" tests/test_activation.py tests/test_norm.py tests/test_loss.py tests/test_linear.py
         tests/test_matmul.py tests/test_conv.py tests/test_attention.py tests/test_rnn.py
         tests/test_optim.py tests/test_llama_ops.py tests/test_fuzz.py tests/test_bad_inputs.py)
fi
echo "asan_test.sh: LD_PRELOAD=$LIBASAN; reports to $LOGS"
(cd "$TREE" && env LD_PRELOAD="$LIBASAN" \
  ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:detect_odr_violation=0:log_path=$LOGS/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:log_path=$LOGS/ubsan" \
  "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}")
status=$?
reports=$(cat "$LOGS"/* 2>/dev/null | grep -cE "ERROR: AddressSanitizer|AddressSanitizer: CHECK failed|runtime error:")
echo "asan_test.sh: pytest exit status $status, sanitizer reports: $reports"
if [[ $reports -ne 0 ]]; then
  grep -hE -A12 "ERROR: AddressSanitizer|AddressSanitizer: CHECK failed|runtime error:" "$LOGS"/* | head -80
  exit 1
fi
exit $status
