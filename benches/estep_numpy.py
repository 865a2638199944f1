"""NumPy peer of maxmin's BT E-step (`maxmin bench kernels --only bt_estep`), for
benches/side-by-side.sh.

ll[u, k] = Σ_{i: user(i) = u} log σ(r_k(chosen_i) − r_k(rejected_i)) over M comparisons, K groups
and M/100 users (the shape `maxmin bench kernels` uses: M = 64 × --tokens), rewards uniform in
[−4, 4). The composition: one `logaddexp` over the [M, K] differences (stable log σ) and one
`bincount` per group, in f64 as maxmin accumulates. NumPy runs these single-threaded.

Usage: estep_numpy.py M [K] [MIN_SECONDS]
Prints one JSON line: median ms per E-step over at least 3 timed calls and MIN_SECONDS.
"""
import json
import sys
import time

import numpy as np


def main():
    m = int(sys.argv[1])
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    min_s = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    if m <= 0 or k <= 0:
        sys.exit("estep_numpy.py: M and K must be positive")
    users = max(m // 100, 1)
    rng = np.random.default_rng(0)
    a = rng.uniform(-4, 4, (m, k)).astype(np.float32)
    b = rng.uniform(-4, 4, (m, k)).astype(np.float32)
    u = rng.integers(0, users, m)

    def estep():
        d = (a - b).astype(np.float64)
        ls = -np.logaddexp(0.0, -d)  # stable log σ(d)
        return np.stack([np.bincount(u, weights=ls[:, j], minlength=users) for j in range(k)], axis=1)

    estep()
    times, t0 = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - t0 < min_s:
        t = time.perf_counter()
        estep()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(json.dumps({"impl": f"numpy {np.__version__}", "m": m, "k": k, "users": users,
                      "ms": times[len(times) // 2], "iters": len(times)}))


if __name__ == "__main__":
    main()
