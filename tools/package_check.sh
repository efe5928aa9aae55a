#!/usr/bin/env bash
# The package as a user gets it (`make package-check`; CI runs it):
#   1. a source distribution, `python setup.py sdist`, from a clean export of HEAD
#      (git archive: no build outputs, nothing uncommitted); it must carry every header
#      (.h, .cuh) under csrc/;
#   2. a wheel built from that sdist, without build isolation, against PYTHON's torch;
#   3. a fresh virtual environment that sees PYTHON's packages (torch, numpy) but not its
#      fusedops; the wheel installed there, imported from outside the checkout, one op run
#      against torch, and build_info() printed; the benchmarks' command runs from there too.
# Usage: tools/package_check.sh [PYTHON]   (default .venv/bin/python: torch, setuptools, wheel,
# ninja installed, as `make setup` leaves it). Outputs go to build/package/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(realpath "${1:-.venv/bin/python}")
out=$PWD/build/package
rm -rf "$out"
mkdir -p "$out/export" "$out/dist" "$out/wheel"

echo "== sdist from a clean export of $(git rev-parse --short HEAD)"
git archive HEAD | tar -x -C "$out/export"
(cd "$out/export" && "$PY" setup.py -q sdist -d "$out/dist" >"$out/sdist.log" 2>&1) || {
  cat "$out/sdist.log"; echo "package-check: sdist failed"; exit 1; }
sdist=$(ls "$out"/dist/fusedops-*.tar.gz)
tar -tzf "$sdist" | sed 's|^[^/]*/||' | sort >"$out/sdist-files.txt"
missing=$(cd "$out/export" && find csrc -name '*.h' -o -name '*.cuh' | sort | comm -23 - "$out/sdist-files.txt")
if [ -n "$missing" ]; then
  echo "package-check: the sdist lacks these headers:"; echo "$missing"; exit 1
fi
echo "$(basename "$sdist"): $(wc -l <"$out/sdist-files.txt") files, every header under csrc/ among them"

echo "== wheel from the sdist (no build isolation: against $("$PY" -c 'import torch; print("torch", torch.__version__)'))"
t0=$(date +%s)
"$PY" -m pip --disable-pip-version-check wheel -q --no-build-isolation --no-deps -w "$out/wheel" "$sdist" \
  >"$out/wheel.log" 2>&1 || { tail -n 40 "$out/wheel.log"; echo "package-check: wheel build failed"; exit 1; }
wheel=$(ls "$out"/wheel/fusedops-*.whl)
echo "$(basename "$wheel") built in $(($(date +%s) - t0)) s"

echo "== the wheel in a fresh environment"
"$PY" -m venv "$out/env"
# torch and numpy from PYTHON's package folders; a path line in a .pth file does not run the
# .pth files of that folder, so an editable fusedops installed there stays invisible
"$PY" -c 'import sys; print("\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))))' \
  >"$("$out/env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/base_packages.pth"
"$out/env/bin/python" -m pip --disable-pip-version-check install -q --no-deps "$wheel"
cd "$out"  # away from the checkout, whose fusedops/ would shadow the installed one
"$out/env/bin/python" - "$out/env" <<'PY'
import os, sys
import torch
import fusedops

env = os.path.realpath(sys.argv[1])
where = os.path.realpath(fusedops.__file__)
assert where.startswith(env + os.sep), f"fusedops imported from {where}, not from the fresh environment"
torch.manual_seed(0)
x, w, b = torch.randn(8, 32), torch.randn(16, 32), torch.randn(16)
y = fusedops.ops.linear(x, w, b, activation="gelu")
ref = torch.nn.functional.gelu(torch.nn.functional.linear(x, w, b))
assert torch.allclose(y, ref, rtol=1e-5, atol=1e-5), (y - ref).abs().max()
print(f"fusedops {fusedops.__version__} from {os.path.dirname(where)}: linear+gelu matches torch;",
      fusedops.build_info())
PY
# the benchmarks ship in the wheel and run from here, outside the checkout
"$out/env/bin/python" -m fusedops.benchmarks matmul --quick --list -k "square 256" | grep -q "square 256" || {
  echo "package-check: python -m fusedops.benchmarks does not run from the installed wheel"; exit 1; }
echo "python -m fusedops.benchmarks runs from the installed wheel"
echo "package-check: ok"
