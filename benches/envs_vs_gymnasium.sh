#!/usr/bin/env bash
# Vectorised CartPole-v1 steps per second: maxmin-envs (Rust, structure of arrays) against
# Gymnasium 1.0.0's NumPy CartPoleVectorEnv, same sizes, same kind of actions.
# Writes benches/results/envs_vs_gymnasium.md.
#
# Usage (from the repository root):
#   PYTHON=/tmp/gym-venv/bin/python benches/envs_vs_gymnasium.sh [SECONDS_PER_SIZE]
# where PYTHON has `pip install gymnasium==1.0.0 numpy==2.1.3`.
set -euo pipefail

SECS="${1:-2}"
PYTHON="${PYTHON:-python3}"
SIZES=(1 8 64 1024)
OUT=benches/results/envs_vs_gymnasium.md

# BENCH_VEC_BIN: an already built bench_vec binary (skips the cargo build).
if [[ -z "${BENCH_VEC_BIN:-}" ]]; then
    cargo build --release -p maxmin-envs --example bench_vec
fi
BIN="${BENCH_VEC_BIN:-${CARGO_TARGET_DIR:-target}/release/examples/bench_vec}"

# Alternate the two programs size by size, so machine load drifts affect both alike.
declare -A RUST_SOA RUST_SYNC GYM
for n in "${SIZES[@]}"; do
    read -r _ soa sync < <("$BIN" "$SECS" "$n" | tail -n 1)
    RUST_SOA[$n]=$soa
    RUST_SYNC[$n]=$sync
    read -r _ gym < <("$PYTHON" benches/envs_vs_gymnasium.py "$SECS" "$n" | tail -n 1)
    GYM[$n]=$gym
    echo "num_envs=$n maxmin-soa=$soa maxmin-sync=$sync gymnasium=$gym" >&2
done

fmt() { printf "%'.0f" "$1"; }
{
    echo "# Vectorised CartPole-v1: maxmin-envs vs Gymnasium"
    echo
    echo "Environment steps per second (num_envs × vector steps / wall time), uniform random"
    echo "actions drawn before timing, same-step autoreset in maxmin (Gymnasium's vector env"
    echo "resets the step after an episode ends). ${SECS} s per measurement, one run each."
    echo
    echo "| num_envs | maxmin CartPoleVecEnv | maxmin SyncVecEnv | Gymnasium CartPoleVectorEnv | CartPoleVecEnv / Gymnasium |"
    echo "|---:|---:|---:|---:|---:|"
    for n in "${SIZES[@]}"; do
        ratio=$(awk -v a="${RUST_SOA[$n]}" -v b="${GYM[$n]}" 'BEGIN { printf "%.1f", a / b }')
        echo "| $n | $(fmt "${RUST_SOA[$n]}") | $(fmt "${RUST_SYNC[$n]}") | $(fmt "${GYM[$n]}") | ${ratio}× |"
    done
    echo
    echo "## Machine"
    echo
    echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -sm)"
    echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) logical cores"
    echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (a shared machine: other builds may have been running)"
    echo "- $(rustc --version); $("$PYTHON" -c 'import sys, gymnasium, numpy; print(f"Python {sys.version.split()[0]}, gymnasium {gymnasium.__version__}, numpy {numpy.__version__}")')"
    echo
    echo "## Commands"
    echo
    echo '```'
    echo "${BENCH_VEC_BIN:+BENCH_VEC_BIN=$BENCH_VEC_BIN }PYTHON=$PYTHON benches/envs_vs_gymnasium.sh $SECS"
    echo "# which runs, per size N:"
    echo "$BIN $SECS N"
    echo "$PYTHON benches/envs_vs_gymnasium.py $SECS N"
    echo '```'
} > "$OUT"
cat "$OUT"
