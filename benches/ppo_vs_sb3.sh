#!/usr/bin/env bash
# PPO end-to-end env steps/s on CartPole-v1: maxmin (release) vs Stable-Baselines3, same
# hyper-parameters (configs/cartpole__ppo.toml), same machine, same thread count: maxmin on
# seeds 1-3, SB3 on seed 1 (SB3 takes minutes per run here; set SB3_SEEDS="1 2 3" for all).
# Writes benches/results/ppo_vs_sb3.md. Usage: benches/ppo_vs_sb3.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
venv=.venv-bench
if ! "$venv/bin/python" -c "import stable_baselines3" 2>/dev/null; then
  python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q stable-baselines3==2.4.1 gymnasium==1.0.0 "numpy<2"
fi
cargo build --release -q
out=benches/results/ppo_vs_sb3.md
tmp=$(mktemp -d)
{
  echo "# PPO on CartPole-v1: maxmin vs Stable-Baselines3"
  echo
  echo "Command: \`benches/ppo_vs_sb3.sh $threads\` on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u +%F)."
  echo "Same hyper-parameters (configs/cartpole__ppo.toml: 8 envs × 32 steps, 20 epochs, 1 minibatch of 256,"
  echo "lr 1e-3 annealed, γ 0.98, λ 0.8), 64-64 tanh actor and critic, $threads threads (RAYON_NUM_THREADS / torch.set_num_threads)."
  echo
  echo "| impl | seed | env steps | wall s | env steps/s | final return (last 20 episodes) |"
  echo "|---|---|---|---|---|---|"
} > "$out"
ours=0; theirs=0
for seed in 1 2 3; do
  start=$(date +%s.%N)
  RAYON_NUM_THREADS=$threads RUST_LOG=warn target/release/maxmin run configs/cartpole__ppo.toml --seed "$seed" --out "$tmp/s$seed" > /dev/null
  end=$(date +%s.%N)
  python3 - "$tmp/s$seed/summary.json" "$start" "$end" "$seed" >> "$out" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); wall = float(sys.argv[3]) - float(sys.argv[2])
print(f"| maxmin | {sys.argv[4]} | {s['env_steps']} | {wall:.2f} | {s['env_steps']/wall:.0f} | {s['final_return']:.1f} |")
PY
  case " ${SB3_SEEDS:-1} " in *" $seed "*) ;; *) continue ;; esac
  "$venv/bin/python" benches/ppo_vs_sb3.py "$seed" "$threads" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
print(f"| sb3 {r[\"sb3\"]} (torch {r[\"torch\"]}) | {r[\"seed\"]} | {r[\"env_steps\"]} | {r[\"wall_s\"]:.2f} | {r[\"steps_per_s\"]:.0f} | {r[\"final_return\"]:.1f} |")' >> "$out"
done
python3 - "$out" >> "$out" <<'PY'
import re, sys
rows = [l.split("|") for l in open(sys.argv[1]) if l.startswith("| maxmin") or l.startswith("| sb3")]
ours = [float(r[5]) for r in rows if r[1].strip() == "maxmin"]
sb3 = [float(r[5]) for r in rows if r[1].strip().startswith("sb3")]
o, s = sum(ours) / len(ours), sum(sb3) / len(sb3)
print(f"\nMean env steps/s (wall time of the whole command, including start-up): maxmin {o:.0f}, SB3 {s:.0f}: **{o/s:.1f}×**.")
PY
cat "$out"
