"""Write golden trajectories of Gymnasium's classic-control environments for maxmin-envs' tests.

Run from the repository root (writes envs/tests/data/golden_<env>.json):

    python3 -m venv /tmp/gym-venv
    /tmp/gym-venv/bin/pip install gymnasium==1.0.0 numpy==2.1.3
    /tmp/gym-venv/bin/python envs/tests/data/gen_golden.py

Each trajectory: an env id with `gym.make` keyword arguments, the equivalent maxmin `[env]`
config, a seed, and a fixed action list. The environment is reset with the seed, then stepped
with the actions; when an episode ends it is reset *without* a seed (so the RNG stream continues)
and the reset observation is recorded. Actions come either from a seeded NumPy stream (random
policy) or from a simple hand-written controller that makes episodes end by termination or
reach the time limit; either way they are stored, so the Rust tests only replay them.
"""

import json
import math
import os
import sys

import gymnasium as gym
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def f32(x):
    # 9 significant digits round-trip any float32.
    return float(f"{float(x):.9g}")


def f64(x):
    return float(f"{float(x):.12g}")


def run(env_id, config, seed, n_steps, policy, kwargs=None, max_episode_steps=None, action_seed=0):
    kwargs = kwargs or {}
    make_kwargs = dict(kwargs)
    if max_episode_steps is not None:
        make_kwargs["max_episode_steps"] = max_episode_steps
    env = gym.make(env_id, **make_kwargs)
    act_rng = np.random.default_rng(action_seed)
    obs, _ = env.reset(seed=seed)
    traj = {
        "env_id": env_id,
        "gym_make_kwargs": make_kwargs,
        "config": config,
        "seed": seed,
        "reset_obs": [f32(v) for v in obs],
        "actions": [],
        "obs": [],
        "rewards": [],
        "terminated": [],
        "truncated": [],
        "resets": [],
    }
    for t in range(n_steps):
        a = policy(obs, act_rng, env)
        if isinstance(env.action_space, gym.spaces.Discrete):
            traj["actions"].append(int(a))
            step_action = int(a)
        else:
            a32 = np.float32(a)
            traj["actions"].append(float(a32))
            step_action = np.array([a32], dtype=np.float32)
        obs, reward, terminated, truncated, _ = env.step(step_action)
        assert not (terminated and truncated), "maxmin reports one end reason; pick other seeds"
        traj["obs"].append([f32(v) for v in obs])
        traj["rewards"].append(f64(reward))
        traj["terminated"].append(bool(terminated))
        traj["truncated"].append(bool(truncated))
        if terminated or truncated:
            obs, _ = env.reset()
            traj["resets"].append({"after_step": t, "obs": [f32(v) for v in obs]})
    ends = sum(traj["terminated"]), sum(traj["truncated"])
    print(f"{env_id} seed {seed}: {n_steps} steps, {ends[0]} terminated, {ends[1]} truncated",
          file=sys.stderr)
    return traj


def random_discrete(n):
    return lambda obs, rng, env: int(rng.integers(n))


def cartpole_balance(obs, rng, env):
    # Push towards the side the pole falls to, with a little cart-centring.
    x, x_dot, th, th_dot = obs
    return int(th + 0.5 * th_dot + 0.01 * x + 0.05 * x_dot > 0)


def mountain_car_energy(obs, rng, env):
    return 2 if obs[1] >= 0 else 0


def acrobot_pump(obs, rng, env):
    # Torque along the second joint's motion pumps energy in: episodes terminate.
    return 2 if obs[5] >= 0 else 0


def acrobot_hold(obs, rng, env):
    # Torque along the first joint's motion: never reaches the line, so the 500-step limit ends it.
    return 2 if obs[4] >= 0 else 0


def pendulum_random(obs, rng, env):
    # Beyond ±2 on purpose: Gymnasium clips the torque.
    return rng.uniform(-2.5, 2.5)


def main():
    files = {
        "cartpole": [
            run("CartPole-v1", {"type": "cartpole"}, 0, 120, random_discrete(2), action_seed=1),
            run("CartPole-v1", {"type": "cartpole"}, 42, 120, random_discrete(2), action_seed=2),
            run("CartPole-v1", {"type": "cartpole"}, 7, 510, cartpole_balance),
            run("CartPole-v1", {"type": "cartpole", "max-episode-steps": 30,
                                "sutton-barto-reward": True},
                3, 100, random_discrete(2), kwargs={"sutton_barto_reward": True},
                max_episode_steps=30, action_seed=7),
        ],
        "mountain_car": [
            run("MountainCar-v0", {"type": "mountain-car"}, 0, 230, random_discrete(3),
                action_seed=3),
            run("MountainCar-v0", {"type": "mountain-car"}, 5, 200, mountain_car_energy),
        ],
        "acrobot": [
            run("Acrobot-v1", {"type": "acrobot", "max-episode-steps": 100}, 3, 130,
                random_discrete(3), max_episode_steps=100, action_seed=4),
            run("Acrobot-v1", {"type": "acrobot"}, 1, 300, acrobot_pump),
            run("Acrobot-v1", {"type": "acrobot"}, 0, 505, acrobot_hold),
        ],
        "pendulum": [
            run("Pendulum-v1", {"type": "pendulum"}, 0, 215, pendulum_random, action_seed=5),
            run("Pendulum-v1", {"type": "pendulum", "g": 9.81, "max-episode-steps": 50}, 2, 60,
                pendulum_random, kwargs={"g": 9.81}, max_episode_steps=50, action_seed=6),
        ],
    }
    for name, trajs in files.items():
        doc = {
            "generator": "envs/tests/data/gen_golden.py",
            "gymnasium": gym.__version__,
            "numpy": np.__version__,
            "trajectories": trajs,
        }
        path = os.path.join(HERE, f"golden_{name}.json")
        with open(path, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {path} ({os.path.getsize(path)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
