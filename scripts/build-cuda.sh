#!/usr/bin/env bash
# The CUDA build of maxmin, from one command, on a machine without a GPU or CUDA toolkit
# (docs/gpu.md, "The CUDA build"). Run from anywhere:
#
#   bash scripts/build-cuda.sh
#
# 1. installs the pinned CUDA 13.0 compiler wheels from PyPI when missing (nvcc, NVVM, CRT,
#    runtime, CCCL, NVRTC; ≈ 200 MB, into $MAXMIN_CUDA_ROOT, default ~/.cache/maxmin/cuda-13.0);
# 2. writes link stubs for the libraries that come only with a driver or a full toolkit
#    (libcuda, libcublas, libcublasLt, libcurand: empty functions named after every symbol
#    cudarc declares) and links libnvrtc / libcudart to the wheels' real ones;
# 3. builds with the `cuda` feature of every crate (candle's CUDA backend for sm_90, one
#    dynamically linked cudarc) into its own target dir, in one cargo invocation: the release
#    `maxmin` and the test binaries that hold the GPU tests (`#[ignore = "needs a GPU: …"]`, run with `--ignored`);
# 4. lays out $MAXMIN_GPU_DIST (default gpu-dist/): maxmin-cuda/{bin/*, COMMIT, BUILD.txt},
#    stripped, and gpu-dist/maxmin-cuda.tar.xz — the one file to carry to the GPU machine, where
#    `benches/gpu-check.sh` unpacks it. Checks the tarball plus every tracked file ≤ 64 MiB.
#
# The default build (`cargo build`, README's commands, CI) is untouched by all of this and needs
# no CUDA. The first run took ≈ 75 min on 2 busy shared cores (candle-kernels' nvcc compile
# ≈ 25 min of it; the test binaries rebuild part of the tree with dev-dependency features);
# a rerun after a source change rebuilds only the workspace crates.
#
# Environment: MAXMIN_CUDA_ROOT, MAXMIN_CUDA_TARGET (default target-cuda), MAXMIN_GPU_DIST,
# CARGO_BUILD_JOBS (passed to cargo), CUDAFORGE_THREADS (parallel nvcc jobs, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CUDA_ROOT=${MAXMIN_CUDA_ROOT:-$HOME/.cache/maxmin/cuda-13.0}
TARGET=${MAXMIN_CUDA_TARGET:-$ROOT/target-cuda}
DIST=${MAXMIN_GPU_DIST:-$ROOT/gpu-dist}
WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88)
CARRY_LIMIT=$((64 * 1024 * 1024))

fail() { echo "build-cuda: FAIL: $*" >&2; exit 1; }
say() { echo "== build-cuda: $*"; }
t0=$(date +%s)

for tool in cargo python3 gcc strip xz tar git; do
    command -v "$tool" > /dev/null || fail "$tool not found"
done

# ---- 1. compiler wheels ---------------------------------------------------------------------
CU=$CUDA_ROOT/nvidia/cu13
if [[ -x $CU/bin/nvcc && -e $CU/lib/libnvrtc.so.13 && -e $CU/lib/libcudart.so.13 \
      && -e $CU/include/cuda_runtime.h ]]; then
    say "CUDA 13.0 wheels present in $CUDA_ROOT"
else
    say "installing ${WHEELS[*]} into $CUDA_ROOT"
    python3 -m pip install -q --disable-pip-version-check --target "$CUDA_ROOT" "${WHEELS[@]}" \
        || fail "pip install of the CUDA 13.0 wheels failed"
fi
[[ -x $CU/bin/nvcc ]] || fail "no nvcc at $CU/bin/nvcc after the install"
"$CU/bin/nvcc" --version | grep -q "release 13.0" \
    || fail "$CU/bin/nvcc is not CUDA 13.0: $("$CU/bin/nvcc" --version | tail -1)"

# ---- 2. link stubs ---------------------------------------------------------------------------
# cudarc's build script (dynamic-linking, CUDA_HOME set) adds $CU/lib/stubs to the link search,
# like a real toolkit's lib64/stubs. Only the sonames matter at run time, where the real driver
# and toolkit libraries are loaded.
STUBS=$CU/lib/stubs
mkdir -p "$STUBS"
ln -sf ../libnvrtc.so.13 "$STUBS/libnvrtc.so"
ln -sf ../libcudart.so.13 "$STUBS/libcudart.so"
cudarc_src=$(cargo metadata --format-version 1 --features cuda 2> /dev/null | python3 -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "cudarc":
        print(os.path.dirname(p["manifest_path"]))
        break')
[[ -d $cudarc_src/src/driver/sys ]] || fail "could not locate the cudarc sources (cargo metadata)"
stub() { # stub <lib name> <soname> <cudarc sys module>...
    local name=$1 soname=$2 c=$STUBS/$1.stub.c
    shift 2
    local mods=()
    for m in "$@"; do mods+=("$cudarc_src/src/$m/sys/mod.rs"); done
    grep -ohE '\bfn (cu|nvrtc)[A-Za-z0-9_]*\(' "${mods[@]}" | sed -E 's/^fn ([A-Za-z0-9_]+)\(/\1/' \
        | sort -u | awk '{ print "void " $1 "(void) {}" }' > "$c"
    [[ -s $c ]] || fail "no symbols found for the $name stub"
    gcc -shared -fPIC -o "$STUBS/$name.so" -Wl,-soname,"$soname" "$c"
    echo "   stub $name.so ($soname): $(wc -l < "$c") symbols"
}
say "writing link stubs into $STUBS"
stub libcuda libcuda.so.1 driver
stub libcublas libcublas.so.13 cublas
stub libcublasLt libcublasLt.so.13 cublaslt
stub libcurand libcurand.so.10 curand

# ---- 3. build --------------------------------------------------------------------------------
export PATH=$CU/bin:$PATH CUDA_HOME=$CU CUDA_PATH=$CU CUDA_ROOT=$CU CUDA_TOOLKIT_ROOT_DIR=$CU
export CUDA_COMPUTE_CAP=90 CUDARC_CUDA_VERSION=13000
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}
export LIBRARY_PATH=$STUBS${LIBRARY_PATH:+:$LIBRARY_PATH}
export CARGO_TARGET_DIR=$TARGET
# One cargo invocation for the binary and the test binaries: a separate `cargo build` would
# resolve other features (no dev-dependencies) and compile the whole tree, candle included, twice.
# The test binaries hold the GPU tests: maxmin-core's lib tests (ops::gpu_tests) and the
# workspace integration tests (tests/gpu.rs).
say "cargo test --release --features cuda --no-run -p maxmin -p maxmin-core --lib --test tests"
say "(target dir $TARGET)"
artifacts=$(cargo test --release --features cuda --no-run -p maxmin -p maxmin-core --lib \
        --test tests --message-format=json-render-diagnostics \
    | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        kind = "test" if m["profile"]["test"] else "bin"
        print(kind, m["target"]["name"], m["executable"])') || fail "cargo build with --features cuda"
pick() { awk -v k="$1" -v n="$2" '$1 == k && $2 == n { print $3 }' <<< "$artifacts"; }
maxmin_bin=$(pick bin maxmin)
core_tests=$(pick test maxmin_core)
int_tests=$(pick test tests)
[[ -n $maxmin_bin && -n $core_tests && -n $int_tests ]] \
    || fail "missing build outputs (maxmin: '$maxmin_bin', core tests: '$core_tests', tests: '$int_tests')"

# ---- 4. lay out and pack ---------------------------------------------------------------------
say "laying out $DIST/maxmin-cuda"
rm -rf "$DIST/maxmin-cuda" "$DIST/maxmin-cuda.tar.xz"
mkdir -p "$DIST/maxmin-cuda/bin"
cp "$maxmin_bin" "$DIST/maxmin-cuda/bin/maxmin"
cp "$core_tests" "$DIST/maxmin-cuda/bin/maxmin-core-tests"
cp "$int_tests" "$DIST/maxmin-cuda/bin/maxmin-tests"
strip "$DIST/maxmin-cuda/bin/"*
commit=$(git rev-parse HEAD)
dirty=$(git status --porcelain --untracked-files=no | head -1)
echo "$commit${dirty:+ (with uncommitted changes)}" > "$DIST/maxmin-cuda/COMMIT"
{
    echo "maxmin CUDA build, $(date -u +%FT%TZ), commit $(cat "$DIST/maxmin-cuda/COMMIT")"
    echo "features: cuda (candle CUDA backend, cudarc dynamic-linking), sm_90, CUDA 13.0"
    echo "rustc: $(rustc --version)"
    echo "nvcc: $("$CU/bin/nvcc" --version | tail -1)"
    for b in "$DIST/maxmin-cuda/bin/"*; do
        echo "$(basename "$b"): $(stat -c %s "$b") bytes; needs:" \
            $(readelf -d "$b" | awk '/NEEDED/ { gsub(/[][]/, "", $5); print $5 }')
    done
} > "$DIST/maxmin-cuda/BUILD.txt"
cat "$DIST/maxmin-cuda/BUILD.txt"
# -9: a 64 MiB window, so the three binaries' common code is stored once
XZ_OPT="-9 -T0" tar -C "$DIST" -cJf "$DIST/maxmin-cuda.tar.xz" maxmin-cuda
tarball=$(stat -c %s "$DIST/maxmin-cuda.tar.xz")
tracked=$(git ls-files -z | xargs -0 stat -c %s 2> /dev/null | awk '{ s += $1 } END { print s + 0 }')
total=$((tarball + tracked))
awk -v a="$tarball" -v b="$tracked" -v c="$total" 'BEGIN {
    printf "   tarball %.1f MiB + tracked files %.1f MiB = %.1f MiB (limit 64 MiB)\n",
        a / 1048576, b / 1048576, c / 1048576 }'
((total <= CARRY_LIMIT)) || fail "the carry would be over 64 MiB"
say "done in $(( $(date +%s) - t0 )) s. Carry gpu-dist/maxmin-cuda.tar.xz; on the GPU machine:"
echo "   bash benches/gpu-check.sh"
