#!/usr/bin/env bash
# The device check: everything this project verifies on a GPU, in one run on one H100/H200
# (docs/gpu.md, "GPU check"). Two commands:
#
#   bash scripts/build-cuda.sh      here (no GPU): the CUDA build, packed as
#                                   gpu-dist/maxmin-cuda.tar.xz (`benches/gpu-check.sh --prepare`
#                                   runs the same script)
#   bash benches/gpu-check.sh       on the GPU machine, in the repository root, with that tarball
#                                   carried (no Rust there): unpacks it, prints nvidia-smi, checks
#                                   every library the binaries need, runs the GPU tests and
#                                   benchmarks; writes $OUT/gpu-check.json and $OUT/gpu-check.log
#
# Fails at once (exit 1, `FAIL: …` as the last line, the JSON saying which check) when there is
# no GPU, no driver or a missing library. After the checks every step runs under its own
# timeout and is recorded pass / fail / timeout / missing; exit 1 if any step did not pass.
# The step timeouts add up to < 8 minutes.
#
# Environment: OUT (default ./gpu-results), MAXMIN_GPU_TARBALL (default
# gpu-dist/maxmin-cuda.tar.xz), MAXMIN_BENCH_TOKENS (16384), MAXMIN_MAIN_JOB_TIMEOUT (170 s).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    exec bash scripts/build-cuda.sh
fi

OUT=${OUT:-./gpu-results}
TARBALL=${MAXMIN_GPU_TARBALL:-gpu-dist/maxmin-cuda.tar.xz}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu-check.log
JSON=$OUT/gpu-check.json
exec > >(tee "$LOG") 2>&1
start=$(date +%s)
steps=()   # JSON objects, one per step

jstr() { # JSON string literal of $1
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\t'/ }
    s=$(printf '%s' "$s" | tr -d '\000-\010\013-\037')
    printf '"%s"' "$s"
}
record() { # record <name> <status> <seconds> <detail>
    steps+=("{\"name\": $(jstr "$1"), \"status\": $(jstr "$2"), \"seconds\": $3, \"detail\": $(jstr "$4")}")
}
write_json() { # write_json <overall status> <message>
    local device commit
    device=$(cat "$OUT/device.txt" 2> /dev/null || echo none)
    commit=$(cat "$DIST/COMMIT" 2> /dev/null || git rev-parse HEAD 2> /dev/null || echo unknown)
    {
        printf '{\n  "check": "maxmin gpu-check",\n  "date": "%s",\n' "$(date -u +%FT%TZ)"
        printf '  "status": %s,\n  "message": %s,\n' "$(jstr "$1")" "$(jstr "$2")"
        printf '  "device": %s,\n  "commit": %s,\n' "$(jstr "$device")" "$(jstr "$commit")"
        printf '  "seconds": %d,\n  "steps": [' "$(( $(date +%s) - start ))"
        local i
        for i in "${!steps[@]}"; do
            ((i > 0)) && printf ','
            printf '\n    %s' "${steps[$i]}"
        done
        printf '\n  ]\n}\n'
    } > "$JSON"
}
fail() { # fail <check> <message>: stop now, non-zero
    record "$1" fail 0 "$2"
    write_json fail "$2"
    echo "FAIL: $2"
    exit 1
}

DIST=gpu-dist/maxmin-cuda
echo "== maxmin gpu-check $(date -u +%FT%TZ) on $(hostname)"

# ---- checks that stop the run at once --------------------------------------------------------
echo "== nvidia-smi"
command -v nvidia-smi > /dev/null \
    || fail nvidia-smi "nvidia-smi not found: no NVIDIA driver on this machine (this check needs a GPU)"
nvidia-smi || fail nvidia-smi "nvidia-smi failed: no usable GPU or driver"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    | head -1 | tee "$OUT/device.txt"
record nvidia-smi pass 0 "$(cat "$OUT/device.txt")"

echo "== unpack $TARBALL"
[[ -f $TARBALL ]] || fail unpack "missing $TARBALL: build it on a development machine with \
\`bash scripts/build-cuda.sh\` and carry it"
rm -rf "$DIST"
tar -C gpu-dist -xJf "$TARBALL" || fail unpack "could not unpack $TARBALL"
cat "$DIST/BUILD.txt"
for f in maxmin maxmin-core-tests maxmin-tests; do
    [[ -x $DIST/bin/$f ]] || fail unpack "missing $DIST/bin/$f in the tarball"
done
record unpack pass 0 "commit $(cat "$DIST/COMMIT")"

echo "== libraries"
libdirs=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 \
         /usr/local/cuda-13*/targets/x86_64-linux/lib; do
    [[ -d $d ]] && libdirs+=("$d")
done
for py in python3 /usr/bin/python3; do
    sp=$("$py" -c 'import site; print(" ".join(site.getsitepackages()))' 2> /dev/null) || continue
    for d in $sp; do
        for l in "$d"/nvidia/*/lib; do [[ -d $l ]] && libdirs+=("$l"); done
    done
done
LD_LIBRARY_PATH=$(IFS=:; echo "${libdirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
find_lib() {
    local name=$1 d
    for d in ${LD_LIBRARY_PATH//:/ }; do [[ -e $d/$name ]] && { echo "$d/$name"; return 0; }; done
    ldconfig -p 2> /dev/null | awk -v n="$name" '$1 == n { print $NF; found = 1; exit } END { exit !found }'
}
missing=()
for lib in libcuda.so.1 libnvrtc.so.13 libnvrtc-builtins.so.13.0 libcudart.so.13 libcublas.so.13 \
           libcublasLt.so.13 libcurand.so.10; do
    if p=$(find_lib "$lib"); then echo "$lib -> $p"; else missing+=("$lib"); fi
done
if ((${#missing[@]})); then
    echo "found instead:"
    for d in ${LD_LIBRARY_PATH//:/ }; do ls "$d" 2> /dev/null | grep -E '^lib(cublas|curand|nvrtc|cudart)' | sed "s|^|  $d/|"; done
    fail libraries "not found: ${missing[*]} (the CUDA build links CUDA 13 sonames)"
fi
for f in "$DIST"/bin/*; do
    nf=$(ldd "$f" 2>&1 | grep "not found")
    [[ -z $nf ]] || fail libraries "$(basename "$f"): $nf"
done
record libraries pass 0 "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

# ---- steps: each under a timeout, all recorded -------------------------------------------------
failed=0
step() { # step <name> <timeout s> <command>...
    local name=$1 limit=$2 t0 rc status
    shift 2
    echo "== $name (timeout ${limit} s): $*"
    t0=$(date +%s)
    timeout "$limit" "$@"
    rc=$?
    case $rc in
        0) status=pass ;;
        124) status=timeout ;;
        *) status=fail ;;
    esac
    [[ $status == pass ]] || failed=1
    record "$name" "$status" "$(( $(date +%s) - t0 ))" "exit $rc: $*"
    echo "== $name: $status ($(( $(date +%s) - t0 )) s)"
}

# Kernel parity, GPU vs CPU (f32 ≤ 1e-5 relative; bf16 tolerances in the tests), launched both
# through maxmin's own device and on candle's CUDA storage (custom ops, forward + backward).
step parity-kernels 60 "$DIST/bin/maxmin-core-tests" ops:: --ignored --test-threads=1 --nocapture
# GPT-2 logits GPU vs CPU (f32 ≤ 1e-4): the shipped model and a 124M-shaped random model.
step parity-models 90 "$DIST/bin/maxmin-tests" gpu:: --ignored --test-threads=1 --nocapture
# Fused log-prob fwd/bwd GB/s and % of peak vs the unfused composition, V = 50,257 and 32,000.
step bench-kernels 90 "$DIST/bin/maxmin" bench kernels --device cuda \
    --tokens "${MAXMIN_BENCH_TOKENS:-16384}" --json "$OUT/kernels_gpu.json"
# README's main job on the GPU: wall time and report table (the seconds are in the JSON).
step main-job "${MAXMIN_MAIN_JOB_TIMEOUT:-170}" "$DIST/bin/maxmin" run \
    configs/gpt2-imdb__maxmin.toml --set model.device=cuda --out "$OUT/main-job"
[[ -f $OUT/main-job/report.md ]] && cp "$OUT/main-job/report.md" "$OUT/main-job-report.md"
# One LoRA PPO step of a Llama-2-7B-shaped policy (random bf16 weights): peak memory, s/step,
# tokens/s. Needs `maxmin bench ppo`, which this build may not have yet.
if "$DIST/bin/maxmin" bench --help 2> /dev/null | grep -qw ppo; then
    step llama7b-lora-ppo 120 "$DIST/bin/maxmin" bench ppo --device cuda --shape llama-2-7b \
        --dtype bf16 --json "$OUT/ppo_llama7b.json"
else
    echo "== llama7b-lora-ppo: missing (this build has no \`maxmin bench ppo\`)"
    record llama7b-lora-ppo missing 0 "this build has no \`maxmin bench ppo\`"
    failed=1
fi

if ((failed)); then
    write_json fail "one or more steps did not pass"
    echo "== done in $(( $(date +%s) - start )) s: FAIL (see $JSON)"
    exit 1
fi
write_json pass "every step passed"
echo "== done in $(( $(date +%s) - start )) s: PASS; results in $OUT"
