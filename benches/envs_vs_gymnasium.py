"""Steps per second of Gymnasium's NumPy-vectorised CartPole-v1 (`CartPoleVectorEnv`), the
baseline for maxmin's `envs/examples/bench_vec.rs`.

    python3 -m venv /tmp/gym-venv && /tmp/gym-venv/bin/pip install gymnasium==1.0.0 numpy==2.1.3
    /tmp/gym-venv/bin/python benches/envs_vs_gymnasium.py [SECONDS_PER_SIZE [SIZES...]]

Actions are uniform random, drawn before timing (a pool of 64 steps the timed loop cycles
through), as in the Rust benchmark. Prints `num_envs steps_per_s` per size.
"""

import sys
import time

import gymnasium as gym
import numpy as np

POOL_STEPS = 64


def measure(n, seconds):
    env = gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point")
    env.reset(seed=0)
    pool = np.random.default_rng(0).integers(0, 2, size=(POOL_STEPS, n))
    for t in range(200):
        env.step(pool[t % POOL_STEPS])
    steps = 0
    start = time.perf_counter()
    while True:
        for a in pool:
            env.step(a)
        steps += POOL_STEPS
        el = time.perf_counter() - start
        if el >= seconds:
            env.close()
            return steps * n / el


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    sizes = [int(s) for s in sys.argv[2:]] or [1, 8, 64, 1024]
    print("num_envs steps_per_s")
    for n in sizes:
        print(f"{n} {measure(n, seconds):.0f}", flush=True)


if __name__ == "__main__":
    main()
