#!/usr/bin/env bash
# Compile-checks every CUDA source (csrc/**/*.cu, and each kernel header csrc/cuda/kernels/*.cuh
# on its own) with nvcc for sm_80 and
# sm_90 in one invocation per file: compile only, warnings as errors for project code, and
# the --resource-usage figures (registers, shared memory, spills) of every kernel.
#
# Files that include torch headers need a CUDA build's headers (the CPU wheel lacks
# c10/cuda/impl/cuda_cmake_macros.h): they come from a CUDA torch wheel, unpacked once into
# build/torch-cuda-include (FUSEDOPS_TORCH_CUDA_WHEEL=<version> picks the wheel).
# Usage: tools/cuda_check.sh [FILE...]   (default: every CUDA source) The
# extension itself is only ever built against the installed torch.
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-nvcc}
if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "cuda-check: nvcc not found, nothing compiled"
  exit 0
fi
if [ $# -gt 0 ]; then  # the files named on the command line only
  files=("$@")
else
  mapfile -t files < <(find csrc -name '*.cu' 2>/dev/null | sort)
  # A kernel header that a binding includes is compiled (and its resource usage printed) there.
  for h in csrc/cuda/kernels/*.cuh; do
    [ -e "$h" ] || continue
    grep -qs "kernels/$(basename "$h")" csrc/cuda/*.cu csrc/cuda/*.h || files+=("$h")
  done
fi
if [ ${#files[@]} -eq 0 ]; then
  echo "cuda-check: no .cu files"
  exit 0
fi

# The toolkit root as nvcc itself reports it (nvcc may be a wrapper script on PATH).
top=$("$NVCC" -v --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -1)
cuda_inc="${top:+$top/include}"

out=build/cuda_check
mkdir -p "$out"
torch_inc=build/torch-cuda-include
need_torch() { grep -qE '#include *[<"](torch|ATen|c10)/' "$1"; }
prepare_torch_headers() {
  [ -f "$torch_inc/.done" ] && return
  local ver=${FUSEDOPS_TORCH_CUDA_WHEEL:-2.14.1} dl=build/torch-cuda-wheel
  echo "cuda-check: unpacking torch $ver (CUDA build) headers into $torch_inc"
  python3 -m pip download -q --no-deps "torch==$ver" -d "$dl"
  rm -rf "$torch_inc" && mkdir -p "$torch_inc"
  python3 - "$dl" "$torch_inc" <<'PY'
import glob, sys, zipfile
wheel = sorted(glob.glob(sys.argv[1] + "/torch-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("torch/include/")]
    z.extractall(sys.argv[2], names)
PY
  touch "$torch_inc/.done"
}

# Every file compiles in its own nvcc process, CUDA_CHECK_JOBS at a time (default: one per
# CPU); the logs are printed afterwards in file order.
jobs_max=${CUDA_CHECK_JOBS:-$(nproc 2>/dev/null || echo 1)}
for f in "${files[@]}"; do need_torch "$f" && { prepare_torch_headers; break; }; done
compile() {  # compile FILE INDEX: writes $out/INDEX.log and $out/INDEX.rc
  local f=$1 i=$2 src=$1
  if [[ $f == *.cuh ]]; then  # a header alone: through a one-line translation unit
    src="$out/$(basename "$f").cu"
    printf '#include "%s"\n' "$PWD/$f" >"$src"
  fi
  local flags=(-std=c++20 -c "$src" -o "$out/$(basename "$f").o"
               -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
               --resource-usage -Werror all-warnings -Xcompiler -Wall -I csrc)
  [ -n "$cuda_inc" ] && flags+=(-isystem "$cuda_inc")
  if need_torch "$f"; then
    flags+=(-isystem "$torch_inc/torch/include" -isystem "$torch_inc/torch/include/torch/csrc/api/include")
  fi
  local rc=0
  "$NVCC" "${flags[@]}" >"$out/$i.log" 2>&1 || rc=$?
  echo $rc >"$out/$i.rc"
}
for i in "${!files[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do sleep 1; done
  compile "${files[$i]}" "$i" &
done
wait
fail=0
for i in "${!files[@]}"; do
  f=${files[$i]}
  echo "== $f"
  sed -E 's/^ptxas info *: //' "$out/$i.log"
  rc=$(cat "$out/$i.rc" 2>/dev/null || echo 1)
  [ "$rc" -eq 0 ] || { echo "cuda-check: $f failed (exit $rc)"; fail=1; }
done
if [ $fail -ne 0 ]; then echo "cuda-check: FAILED"; exit 1; fi
echo "cuda-check: ${#files[@]} files compiled for sm_80 and sm_90 ($jobs_max at a time)"
