#!/usr/bin/env bash
# E-step throughput of the BT mixture (comparisons × K per second) on CPU: maxmin's
# `ops::bt_estep` (the E-step `maxmin_core::prefs::em` runs) vs a NumPy implementation of the same
# computation — ll[u, k] = Σ_{i: user(i) = u} log σ(r_k(chosen_i) − r_k(rejected_i)) — on the same
# shape (M comparisons, K = 4, M/100 users), side by side.
# Usage: benches/em_estep_vs_numpy.sh [TOKENS]   (M = 64 × TOKENS; default 512 → M = 32768)
# Needs `cargo build --release -p maxmin` and a Python with NumPy (PYTHON=…; `pip install numpy`).
set -euo pipefail
cd "$(dirname "$0")/.."
tokens=${1:-512}
py=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
target/release/maxmin bench kernels --tokens "$tokens" --vocab 1000 --min-seconds 0.5 --json "$tmp/k.json" >/dev/null
"$py" - "$tmp/k.json" "$tokens" <<'PY'
import json, sys, time
import numpy as np
rep = json.load(open(sys.argv[1]))
row = next(r for r in rep["results"] if r["kernel"] == "bt_estep")
k, m = 4, int(sys.argv[2]) * 64
users = max(m // 100, 1)
rng = np.random.default_rng(0)
a = rng.uniform(-4, 4, (m, k)).astype(np.float32)
b = rng.uniform(-4, 4, (m, k)).astype(np.float32)
u = rng.integers(0, users, m)

def estep(a, b, u):
    d = (a - b).astype(np.float64)
    ls = -np.logaddexp(0.0, -d)  # stable log σ(d)
    return np.stack([np.bincount(u, weights=ls[:, j], minlength=users) for j in range(k)], axis=1)

estep(a, b, u)
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < 0.5 or n < 3:
    estep(a, b, u)
    n += 1
np_ms = (time.perf_counter() - t0) / n * 1e3
rs_ms = row["fused"]["ms"]
print(f"shape {row['shape']}; threads {rep.get('threads')}; NumPy {np.__version__}")
print("| implementation | ms per E-step | comparisons × K per second |")
print("|---|---|---|")
for name, ms in [("maxmin ops::bt_estep (CPU, Rust)", rs_ms),
                 (f"{row['baseline_name']} (candle)", row["baseline"]["ms"]),
                 ("NumPy (logaddexp + bincount, f64)", np_ms)]:
    print(f"| {name} | {ms:.3f} | {m * k / (ms / 1e3) / 1e6:.1f} M |")
print(f"\nmaxmin vs NumPy: {np_ms / rs_ms:.2f}x")
PY
