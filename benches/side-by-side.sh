#!/usr/bin/env bash
# maxmin and its peers side by side, on this machine, in one sitting: writes ONE table,
# benches/results/side_by_side.md (raw runs in benches/results/side_by_side/<group>.json).
#
# Usage: benches/side-by-side.sh [--quick] [GROUP ...]
#   GROUP: ppo      PPO CartPole-v1 (RL-Zoo hparams), 100k steps, wall     vs SB3 2.4.1
#          envs     vector CartPole steps/s, N = 16 / 256 / 4096            vs Gymnasium 1.0.0
#          estep    BT E-step, ≈ 1 M comparisons × 4 groups                 vs NumPy
#          logprob  fused log-prob + entropy (+ KL), N = 4096, V = 32k/50k  vs torch 2.x
#          lm       GPT-2-124M forward 1×256, 8×128, greedy generation      vs HF transformers 4.47
#                   on PyPI's torch 2.x and on Debian's torch 1.13
#          lmtrain  GPT-2-124M-shaped training step (fwd + bwd + Adam), 8×128  vs HF transformers 4.47 + AdamW
#          lmppo    LM PPO step (generation + training), gpt2-imdb-small    vs TRL 0.11.4 + peft
#   (none = all, ≈ 15–20 min on 2 cores); --quick: smaller shapes, one repeat, no thread search.
#
# Peers live in their own virtual environments, created here when missing (network: PyPI only):
#   .venv-sbs      Python 3 + PyPI torch, transformers, trl, peft, SB3, gymnasium (pinned; numpy
#                  1.26, the newest accelerate 1.0.1 allows; datasets 3.1 / pyarrow 18 for it)
#   .venv-sbs-np   Python 3 + gymnasium 1.0.0 + numpy 2.1.3 (the Gymnasium and NumPy peers)
#   .venv-sbs-deb  /usr/bin/python3 with Debian's python3-torch 1.13 (apt) + transformers 4.47.1
# SBS_PY / SBS_PY_DEB / SBS_PY_NP point at other interpreters; SBS_NO_INSTALL=1 skips the installs.
# Timed runs are not niced; run it when the machine is as idle as you can make it — the table
# records the load average of every group either way.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

for a in "$@"; do
    case $a in
        --quick | ppo | envs | estep | logprob | lm | lmtrain | lmppo | table) ;;
        *) echo "side-by-side.sh: unknown argument '$a' (groups: ppo envs estep logprob lm lmtrain lmppo; --quick)" >&2
           exit 2 ;;
    esac
done

PY_PYPI=${SBS_PY:-.venv-sbs/bin/python}
PY_DEB=${SBS_PY_DEB:-.venv-sbs-deb/bin/python}
PY_NP=${SBS_PY_NP:-.venv-sbs-np/bin/python}
if [[ -z ${SBS_NO_INSTALL:-} ]]; then
    if ! "$PY_PYPI" -c 'import torch, transformers, trl, peft, stable_baselines3, gymnasium' 2>/dev/null; then
        echo "== installing the PyPI peers into ${PY_PYPI%/bin/python}" >&2
        [[ -x $PY_PYPI ]] || python3 -m venv "${PY_PYPI%/bin/python}"
        "$PY_PYPI" -m pip install -q "torch==2.15.0" "transformers==4.47.1" \
            "trl==0.11.4" "peft==0.13.2" "accelerate==1.0.1" "datasets==3.1.0" "pyarrow==18.1.0" rich safetensors \
            "stable-baselines3==2.4.1" "gymnasium==1.0.0"
    fi
    if ! "$PY_NP" -c 'import gymnasium, numpy' 2>/dev/null; then
        echo "== installing Gymnasium and NumPy into ${PY_NP%/bin/python}" >&2
        [[ -x $PY_NP ]] || python3 -m venv "${PY_NP%/bin/python}"
        "$PY_NP" -m pip install -q "gymnasium==1.0.0" "numpy==2.1.3"
    fi
    if ! "$PY_DEB" -c 'import torch, transformers' 2>/dev/null; then
        if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
            echo "== Debian's torch: apt-get install python3-torch" >&2
            { apt-get install -y -q python3-torch >&2; } \
                || echo "side-by-side.sh: python3-torch did not install; the Debian-torch column is skipped" >&2
        fi
        if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
            echo "== installing transformers for Debian's torch into ${PY_DEB%/bin/python}" >&2
            [[ -x $PY_DEB ]] || /usr/bin/python3 -m venv --system-site-packages "${PY_DEB%/bin/python}"
            "$PY_DEB" -m pip install -q "transformers==4.47.1" safetensors
        fi
    fi
fi

echo "== building maxmin (release)" >&2
cargo build --release -q -p maxmin --bin maxmin
cargo build --release -q -p maxmin-envs --example bench_vec
cargo build --release -q -p maxmin-lm --example lm_bench --example ppo_bench
cargo build --release -q -p maxmin-imdb --example pretrain_bench

SBS_PY=$PY_PYPI SBS_PY_DEB=$PY_DEB SBS_PY_NP=$PY_NP "$PY_PYPI" benches/side_by_side.py "$@"
echo "side-by-side.sh: total $(( $(date +%s) - start )) s (installs and build included)" >&2
