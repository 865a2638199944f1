#!/usr/bin/env bash
# GPU check of the custom kernels (see docs/gpu.md and docs/gpu.md).
#
#   benches/gpu-check.sh --prepare   on a development machine (no GPU needed): builds the
#                                    release `maxmin` binary and maxmin-core's test binary,
#                                    stripped, into target/gpu-bin/ (< 64 MiB together).
#   benches/gpu-check.sh             on the GPU machine (no Rust there): prints nvidia-smi,
#                                    sets LD_LIBRARY_PATH, runs every kernel's GPU-vs-CPU
#                                    parity test, then `maxmin bench kernels --device cuda`;
#                                    writes gpu-check.log and kernels_gpu.json into $OUT
#                                    (or ./gpu-results). Stops at the first failure.
#
# Environment: MAXMIN_GPU_BIN (default target/gpu-bin), OUT, MAXMIN_BENCH_TOKENS (16384).
set -euo pipefail

BIN=${MAXMIN_GPU_BIN:-target/gpu-bin}

if [[ "${1:-}" == "--prepare" ]]; then
    # the workspace's release profile (line tables) is kept so this reuses the normal release
    # build; the copies are stripped to fit the 64 MiB carry limit
    mkdir -p "$BIN"
    cargo build --release -p maxmin
    cp target/release/maxmin "$BIN/maxmin"
    strip "$BIN/maxmin"
    # the lib test binary of maxmin-core holds ops::gpu_tests
    exe=$(cargo test --release -p maxmin-core --lib --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "maxmin_core":
        print(m["executable"])')
    [[ -n "$exe" ]] || { echo "FAIL: could not find the maxmin-core test binary" >&2; exit 1; }
    cp "$exe" "$BIN/maxmin-core-tests"
    strip "$BIN/maxmin-core-tests"
    git rev-parse HEAD > "$BIN/COMMIT" 2>/dev/null || echo unknown > "$BIN/COMMIT"
    du -ch "$BIN"/maxmin "$BIN"/maxmin-core-tests
    echo "carry: $BIN   run: bash benches/gpu-check.sh"
    exit 0
fi

OUT=${OUT:-./gpu-results}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
start=$(date +%s)
fail() { echo "FAIL: $*"; exit 1; }

echo "== maxmin gpu-check $(date -u +%FT%TZ), commit $(cat "$BIN/COMMIT" 2>/dev/null || echo unknown)"
for f in maxmin maxmin-core-tests; do
    [[ -x "$BIN/$f" ]] || fail "missing $BIN/$f (build it with: bash benches/gpu-check.sh --prepare)"
done

echo "== nvidia-smi"
command -v nvidia-smi > /dev/null || fail "nvidia-smi not found: no NVIDIA driver on this machine"
nvidia-smi || fail "nvidia-smi failed"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"

echo "== libraries"
libdirs=(/usr/local/cuda/lib64)
for py in python3 /usr/bin/python3; do
    sp=$("$py" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) || continue
    for d in $sp; do
        for l in "$d"/nvidia/*/lib; do [[ -d "$l" ]] && libdirs+=("$l"); done
    done
done
LD_LIBRARY_PATH=$(IFS=:; echo "${libdirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
find_lib() {
    local name=$1 d
    for d in ${LD_LIBRARY_PATH//:/ }; do [[ -e "$d/$name" ]] && { echo "$d/$name"; return 0; }; done
    ldconfig -p 2>/dev/null | awk -v n="$name" '$1 == n { print $NF; found=1; exit } END { exit !found }'
}
for lib in libcuda.so.1 libnvrtc.so.13 libnvrtc-builtins.so.13.0; do
    p=$(find_lib "$lib") || fail "$lib not found on LD_LIBRARY_PATH or in ldconfig (needed by the kernels)"
    echo "$lib -> $p"
done

echo "== GPU parity tests (GPU vs CPU, every kernel)"
"$BIN/maxmin-core-tests" ops::gpu_tests --ignored --test-threads=1 --nocapture \
    || fail "GPU parity tests"

echo "== kernel benchmarks"
timeout 240 "$BIN/maxmin" bench kernels --device cuda --tokens "${MAXMIN_BENCH_TOKENS:-16384}" \
    --json "$OUT/kernels_gpu.json" || fail "maxmin bench kernels --device cuda"

echo "== done in $(( $(date +%s) - start )) s: PASS; results in $OUT"
