"""Stable-Baselines3 PPO on CartPole-v1 with the hyper-parameters of configs/cartpole__ppo.toml.

Setup (what benches/ppo_vs_sb3.sh does):
    python3 -m venv --system-site-packages .venv-bench
    .venv-bench/bin/pip install stable-baselines3==2.4.1 gymnasium==1.0.0 "numpy<2"
Prints one JSON line: env steps, wall seconds, env steps/s, mean return of the last 20 episodes.
"""
import json
import sys
import time

import gymnasium as gym
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
total = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
torch.set_num_threads(threads)

env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
model = PPO(
    "MlpPolicy",
    env,
    n_steps=32,
    batch_size=256,
    n_epochs=20,
    gamma=0.98,
    gae_lambda=0.8,
    learning_rate=lambda frac: 1e-3 * frac,  # linear annealing to 0, as anneal-lr
    clip_range=0.2,
    ent_coef=0.0,
    vf_coef=0.5,
    max_grad_norm=0.5,
    policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh),
    device="cpu",
    seed=seed,
    verbose=0,
)
t0 = time.perf_counter()
model.learn(total_timesteps=total)
wall = time.perf_counter() - t0
eps = [e["r"] for e in model.ep_info_buffer][-20:]
print(json.dumps({
    "impl": "sb3",
    "sb3": __import__("stable_baselines3").__version__,
    "torch": torch.__version__,
    "threads": threads,
    "seed": seed,
    "env_steps": model.num_timesteps,
    "wall_s": round(wall, 2),
    "steps_per_s": round(model.num_timesteps / wall, 1),
    "final_return": sum(eps) / max(len(eps), 1),
}))
