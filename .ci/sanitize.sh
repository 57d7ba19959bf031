#!/usr/bin/env bash
# CI: build the C++ engine with AddressSanitizer + UndefinedBehaviorSanitizer and run the test suite
# under it (without the torch comparisons and the slow soak). Any finding aborts the run.
#
#   bash .ci/sanitize.sh [extra pytest arguments]
#
# - The build lives apart from the normal one: venv .venv-asan, CMake build folder build/asan
#   (incremental on a second run), one instruction-set level only.
# - Debug build type at -O1: NDEBUG is not defined, so Eigen's own bounds and size asserts are on
#   too, and so are libstdc++'s (_GLIBCXX_ASSERTIONS). Every UB finding is fatal
#   (-fno-sanitize-recover=all).
# - Python is not instrumented, so libasan must be the first library loaded (LD_PRELOAD); libstdc++
#   is preloaded with it so that ASan's interceptor of __cxa_throw finds the real one (pybind11
#   turns C++ exceptions into ValueError and friends all the time). PYTHONMALLOC=malloc sends
#   Python's own allocations through ASan too, so a C++ write past a NumPy buffer is caught.
#   Leak checking is off: CPython does not free everything at exit.
# - Tests that measure the process's RSS (tests/test_memory.py) are left out: ASan's quarantine and
#   shadow memory make RSS meaningless there.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
start=$(date +%s)

if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then isa=avx2; else isa=baseline; fi
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
venv=.venv-asan

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q \
  -Cbuild-dir=build/asan \
  -Ccmake.build-type=Debug \
  "-Ccmake.define.CMAKE_CXX_FLAGS=$san -D_GLIBCXX_ASSERTIONS" \
  "-Ccmake.define.CMAKE_CXX_FLAGS_DEBUG=-O1 -g" \
  "-Ccmake.define.CMAKE_MODULE_LINKER_FLAGS=-fsanitize=address,undefined" \
  "-Ccmake.define.CMAKE_SHARED_LINKER_FLAGS=-fsanitize=address,undefined" \
  "-Ccmake.define.TBPTT_ISA_LEVELS=$isa" \
  ".[test]"
built=$(date +%s)

libasan=$(gcc -print-file-name=libasan.so)
libstdcxx=$(gcc -print-file-name=libstdc++.so)
for lib in "$libasan" "$libstdcxx"; do
  [ -f "$lib" ] || { echo "sanitize.sh: $lib not found (gcc -print-file-name)" >&2; exit 1; }
done

export LD_PRELOAD="$libasan $libstdcxx"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONMALLOC=malloc
export TBPTT_ISA=$isa TBPTT_NUM_THREADS=${TBPTT_NUM_THREADS:-2}
export HYPOTHESIS_PROFILE=dev  # the 200-example run is the uninstrumented one; ASan is ~10x slower

# The engine under test must be the instrumented one (not a normal build found elsewhere).
"$venv/bin/python" - <<'EOF'
import os, subprocess, tbptt
info = tbptt.build_info()
module = __import__(info["module"], fromlist=["_"]).__file__
libs = subprocess.run(["ldd", module], capture_output=True, text=True).stdout
assert "libasan" in libs and "libubsan" in libs, f"{module} is not instrumented:\n{libs}"
print(f"sanitize.sh: testing {module} ({info['isa']}, {info['compiler']})")
EOF

# Left out besides: tests that never enter the C++ engine (the NumPy reference's own gradient
# checks) and the orchestration layers above it (CLI, fit, sweep, forecasts), whose calls into the
# engine are the same as those of the engine's own tests; they doubled the instrumented run.
status=0
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests \
  --ignore=tests/test_torch.py --ignore=tests/test_memory.py \
  --ignore=tests/test_reference.py --ignore=tests/test_cli.py --ignore=tests/test_fit.py \
  --ignore=tests/test_sweep.py --ignore=tests/test_forecast.py "$@" || status=$?
end=$(date +%s)
echo "sanitize.sh: build/install $((built - start)) s, tests $((end - built)) s, total $((end - start)) s"
exit $status
