"""Runs the rows of benches/side-by-side.sh and writes benches/results/side_by_side.md.

Called by benches/side-by-side.sh (which installs the peers and builds maxmin first); stdlib
only. Usage: side_by_side.py [--quick] [ROW ...]   ROW ∈ ppo envs estep logprob lm lmppo

Each row runs maxmin and its peer interleaved (ours, theirs, ours, theirs) in one sitting, the
peer at thread counts 1 and 2 first and again at its best, and keeps the best (minimum time /
maximum rate) of each side. Every run's command, output and the load average before and after
it go to benches/results/side_by_side/<row>.json; the table is rebuilt from all row files
present, so a subset run replaces only its own rows (each row states when it was measured).
"""
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RAW = os.path.join(ROOT, "benches/results/side_by_side")
TABLE = os.path.join(ROOT, "benches/results/side_by_side.md")
ROWS = ["ppo", "envs", "estep", "logprob", "lm", "lmtrain", "lmppo"]
PY = os.environ.get("SBS_PY", ".venv-sbs/bin/python")  # PyPI torch 2.x, SB3, TRL, …
PY_DEB = os.environ.get("SBS_PY_DEB", ".venv-sbs-deb/bin/python")  # Debian torch 1.13
PY_NP = os.environ.get("SBS_PY_NP", ".venv-sbs-np/bin/python")  # Gymnasium + NumPy 2 (no torch)
MAXMIN = "target/release/maxmin"
EX = "target/release/examples"
GPT2_RANDOM = "target/lm-bench/gpt2-124m-random"


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Row:
    """Runs of one row: each with its command, wall time, output and load averages."""

    def __init__(self, name, quick):
        self.name, self.quick, self.runs = name, quick, []
        self.started = datetime.datetime.now(datetime.timezone.utc)

    def run(self, side, cmd, env=None, parse="last_json"):
        envs = dict(env or {})
        shown = " ".join(f"{k}={v}" for k, v in envs.items())
        shown = (shown + " " if shown else "") + " ".join(shlex.quote(c) for c in cmd)
        print(f"[{self.name}] {side}: {shown}", file=sys.stderr, flush=True)
        la0 = loadavg()
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **envs}, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        la1 = loadavg()
        if p.returncode != 0:
            sys.exit(f"side_by_side: `{shown}` failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
        out = p.stdout
        lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")] if parse == "last_json" else []
        val = lines[-1] if parse == "last_json" else out
        rec = {"side": side, "cmd": shown, "wall_s": round(wall, 3), "load_before": la0,
               "load_after": la1, "result": val}
        if len(lines) > 1:
            rec["lines"] = lines[:-1]
        self.runs.append(rec)
        print(f"[{self.name}]   {wall:.1f} s, load {la0} -> {la1}", file=sys.stderr, flush=True)
        return rec

    def save(self, summary):
        os.makedirs(RAW, exist_ok=True)
        doc = {"row": self.name, "quick": self.quick,
               "started": self.started.strftime("%Y-%m-%d %H:%M UTC"),
               "seconds": round((datetime.datetime.now(datetime.timezone.utc) - self.started).total_seconds(), 1),
               "load_first": self.runs[0]["load_before"] if self.runs else "",
               "load_last": self.runs[-1]["load_after"] if self.runs else "",
               "commit": git_commit(), "machine": machine(), "summary": summary, "runs": self.runs}
        with open(os.path.join(RAW, f"{self.name}.json"), "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")


def git_commit():
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    # The results this script writes itself (an earlier group of the same invocation) do not count.
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benches/results"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return commit + ("+uncommitted" if dirty else "")


def py_version(py, mods):
    code = "import importlib;print(' '.join(m + ' ' + importlib.import_module(m).__version__ for m in %r))" % (mods,)
    if not os.path.exists(os.path.join(ROOT, py)):
        return "(not installed: its columns are skipped)"
    p = subprocess.run([py, "-c", code], cwd=ROOT, capture_output=True, text=True)
    return p.stdout.strip() or f"({py}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else 'unavailable'})"


# ---- rows ------------------------------------------------------------------------------------

def row_ppo(quick):
    """PPO CartPole-v1 RL-Zoo hyper-parameters, 100k steps: wall time; SB3 at 1 and 2 threads."""
    r = Row("ppo", quick)
    tmp = tempfile.mkdtemp(prefix="sbs-ppo-")
    seeds = [1] if quick else [1, 2, 3]
    ours, solved = [], []
    sb3 = {}

    def run_ours(seed):
        out = os.path.join(tmp, f"s{seed}")
        rec = r.run("maxmin", [MAXMIN, "run", "configs/cartpole__ppo.toml", "--seed", str(seed), "--out", out],
                    env={"RAYON_NUM_THREADS": "1", "RUST_LOG": "warn"}, parse="text")
        s = json.load(open(os.path.join(out, "summary.json")))
        rec["result"] = {"env_steps": s["env_steps"], "final_return": s["final_return"]}
        ours.append(rec["wall_s"])
        solved.append(s["final_return"] >= 475)

    def run_sb3(threads):
        rec = r.run(f"sb3 t{threads}", [PY, "benches/ppo_vs_sb3.py", "1", str(threads), "100000"])
        sb3.setdefault(threads, []).append(rec["result"]["wall_s"])

    plan = [("o", 1), ("s", 1)] if quick else [("o", 1), ("s", 1), ("o", 2), ("s", 2), ("o", 3), ("s", 0)]
    for kind, x in plan:
        if kind == "o":
            run_ours(x)
        else:
            run_sb3(x or min(sb3, key=lambda t: min(sb3[t])))
    best_t = min(sb3, key=lambda t: min(sb3[t]))
    peer, me = min(sb3[best_t]), min(ours)
    r.save({"rows": [{
        "measure": "PPO CartPole-v1, `configs/cartpole__ppo.toml` (RL-Zoo hparams), 100k env steps, wall s",
        "peer": f"SB3 `learn()`, {best_t} torch thread(s)", "peer_value": f"{peer:.1f} s",
        "ours": f"{me:.1f} s (1 thread; solved {sum(solved)}/{len(solved)} seeds)",
        "ratio": peer / me, "target": "≥ 5×, 3/3 seeds solved",
        "met": peer / me >= 5 and sum(solved) == 3 and len(solved) == 3,
        "note": "maxmin: whole command (start-up, evaluation); SB3: `model.learn` only; "
                + ", ".join(f"SB3 {t} thr: {', '.join(f'{x:.1f}' for x in v)} s" for t, v in sorted(sb3.items()))
                + f"; maxmin seeds {seeds}: {', '.join(f'{x:.1f}' for x in ours)} s"}]})


def row_envs(quick):
    """Vectorised CartPole-v1 steps/s vs Gymnasium 1.0's NumPy CartPoleVectorEnv (one thread: NumPy
    has no threads here). Ours at 1 and 2 rayon threads (it splits a step over threads from 2,048
    envs on), interleaved with the peer, best of each."""
    r = Row("envs", quick)
    fmt = lambda vs: ", ".join(f"{v / 1e6:.3g}" for v in vs)
    secs = "0.3" if quick else "1"
    reps = 1 if quick else 2
    rows = []
    for n in (16, 256, 4096):
        ours, gym = [], []
        for _ in range(reps):
            for t in (1, 2):
                rec = r.run(f"maxmin t{t}", [f"{EX}/bench_vec", secs, str(n)], env={"RAYON_NUM_THREADS": str(t)},
                            parse="text")
                ours.append((float(rec["result"].split()[-2]), t))
            rec = r.run("gymnasium", [PY_NP, "benches/envs_vs_gymnasium.py", secs, str(n)], parse="text")
            gym.append(float(rec["result"].split()[-1]))
        me, t = max(ours)
        ratio = me / max(gym)
        tgt = {256: 20, 4096: 5}.get(n)
        rows.append({"measure": f"vector CartPole-v1 env steps/s, N = {n}",
                     "peer": "Gymnasium `CartPoleVectorEnv` (NumPy, 1 thread)",
                     "peer_value": f"{max(gym) / 1e6:.3g} M/s",
                     "ours": f"{me / 1e6:.3g} M/s ({t} thread{'s' if t > 1 else ''})",
                     "ratio": ratio, "target": f"≥ {tgt}×" if tgt else "—",
                     "met": (ratio >= tgt) if tgt else None,
                     "note": f"N = {n}: maxmin 1 thread {fmt([v for v, tt in ours if tt == 1])}, "
                             f"2 threads {fmt([v for v, tt in ours if tt == 2])}; Gymnasium {fmt(gym)} (M/s)"})
    r.save({"rows": rows})


def row_estep(quick):
    """BT E-step, M = 1,048,576 comparisons × K = 4 (M/100 users) vs NumPy."""
    r = Row("estep", quick)
    tokens = 4096 if quick else 16384
    m = tokens * 64
    ours, peer, cand = [], [], []
    for _ in range(1 if quick else 2):
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            r.run("maxmin", [MAXMIN, "bench", "kernels", "--only", "bt_estep", "--tokens", str(tokens),
                             "--min-seconds", "1", "--json", f.name], parse="text")
            rep = json.load(open(f.name))
            r.runs[-1]["result"] = rep
        k = rep["results"][0]
        ours.append(k["fused"]["ms"])
        cand.append(k["baseline"]["ms"])
        rec = r.run("numpy", [PY_NP, "benches/estep_numpy.py", str(m), "4", "1"])
        peer.append(rec["result"]["ms"])
    me, np_ms = min(ours), min(peer)
    rate = lambda ms: m * 4 / (ms * 1e-3) / 1e6
    r.save({"rows": [{
        "measure": f"BT E-step, M = {m:,} comparisons × K = 4, {m // 100:,} users; comparisons×K/s",
        "peer": "NumPy `logaddexp` + `bincount` (f64, 1 thread)", "peer_value": f"{rate(np_ms):.0f} M/s ({np_ms:.1f} ms)",
        "ours": f"{rate(me):.0f} M/s ({me:.2f} ms, {rep['threads']} threads)", "ratio": np_ms / me,
        "target": "≥ 10×", "met": np_ms / me >= 10,
        "note": f"candle composition (index_add) in the same runs: {min(cand):.1f} ms"}]})


def row_logprob(quick):
    """Fused token log-prob + entropy (+ full KL) at N = 4096 vs torch's composition."""
    r = Row("logprob", quick)
    n = 1024 if quick else 4096
    vocabs = "32000,50257"
    ours_cmd = [MAXMIN, "bench", "kernels", "--only", "logprob_fwd_f32", "--tokens", str(n), "--vocab", vocabs,
                "--no-baseline", "--iters", "3", "--min-seconds", "0"]
    ours, torch_t = {}, {}
    peak = []

    def run_ours():
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            r.run("maxmin", ours_cmd + ["--json", f.name], parse="text")
            rep = json.load(open(f.name))
            r.runs[-1]["result"] = rep
        peak.append(rep["peak_gbs"])
        for k in rep["results"]:
            v = int(k["shape"].split("V=")[1])
            ours.setdefault((k["kernel"], v), []).append(k["fused"]["ms"])
        return rep

    def run_torch(threads):
        rec = r.run(f"torch t{threads}", [PY, "benches/logprob_torch.py", str(n), vocabs, str(threads), "3"])
        for k in rec["result"]["results"]:
            torch_t.setdefault((k["kernel"], k["v"]), {}).setdefault(threads, []).append(k["ms"])

    rep = run_ours()
    run_torch(1)
    if not quick:
        run_torch(2)
        run_ours()
        total = {t: sum(min(d.get(t, [1e99])) for d in torch_t.values()) for t in (1, 2)}
        run_torch(min(total, key=total.get))
    bw = max(peak)
    rows = []
    for (kern, v), ms in sorted(ours.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        refs = 2 if kern.endswith("_kl") else 1
        nbytes = n * v * 4 * refs + n * 4 + n * 8 * 4
        tt = torch_t[(kern, v)]
        bt = min(tt, key=lambda t: min(tt[t]))
        pms, me = min(tt[bt]), min(ms)
        gbs = nbytes / (me * 1e-3) / 1e9
        pct = 100 * gbs / bw
        ratio = pms / me
        what = "log-prob + entropy + full KL" if refs == 2 else "log-prob + entropy"
        rows.append({"measure": f"fused {what}, N = {n}, V = {v:,} (f32)",
                     "peer": f"torch `log_softmax`+`gather`+…, {bt} thread(s)",
                     "peer_value": f"{pms:.0f} ms ({nbytes / (pms * 1e-3) / 1e9:.2f} GB/s)",
                     "ours": f"{me:.0f} ms ({gbs:.2f} GB/s = {pct:.0f} % of {bw:.1f} GB/s read, {rep['threads']} threads)",
                     "ratio": ratio, "target": "≥ 3× and ≥ 50 % of read bandwidth",
                     "met": ratio >= 3 and pct >= 50, "note": ""})
    r.save({"rows": rows, "read_gbs": bw})


def flops_per_token(seq, layers=12, d=768, ff=3072, vocab=50257):
    # matmuls of the blocks and lm_head, plus QKᵀ and AV over the full S × S attention (HF and
    # maxmin compute it unmasked and mask afterwards); layer norms, softmax, GELU not counted.
    return 2 * layers * (4 * d * d + 2 * d * ff) + 2 * d * vocab + 4 * layers * seq * d


def row_lm(quick):
    """GPT-2-124M (random weights) forward tokens/s at 1×256 and 8×128, and greedy generation."""
    r = Row("lm", quick)
    if not os.path.exists(os.path.join(ROOT, GPT2_RANDOM, "config.json")):
        r.run("setup", [PY, "benches/lm_forward_hf.py", GPT2_RANDOM, "1", "8", "1", "4", "2", "1"])
        r.runs.pop()
    peers = [(label, py) for label, py in (("HF + PyPI torch", PY), ("HF + Debian torch", PY_DEB))
             if os.path.exists(os.path.join(ROOT, py))]
    gen_ours, gen_peer = [], {}
    rows = []
    for batch, seq, iters in ((1, 256, 2 if quick else 4), (8, 128, 1 if quick else 2)):
        args = [str(batch), str(seq), str(iters), "16", "16" if quick else "48"]
        ours, peer = [], {}

        def run_ours():
            rec = r.run("maxmin", [f"{EX}/lm_bench", GPT2_RANDOM] + args, env={"RAYON_NUM_THREADS": "2"})
            ours.append(rec["result"]["forward_tokens_per_s"])
            gen_ours.append(rec["result"]["generate_tokens_per_s"])

        def run_peer(label, py, threads):
            # Debian's torch (generic BLAS) is ~10× slower than PyPI's: one forward iteration
            # keeps the full run within ~20 minutes.
            a = args if label == "HF + PyPI torch" else [args[0], args[1], "1"] + args[3:]
            rec = r.run(f"{label} t{threads}", [py, "benches/lm_forward_hf.py", GPT2_RANDOM] + a + [str(threads)],
                        env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
            peer.setdefault(label, {}).setdefault(threads, []).append(rec["result"]["forward_tokens_per_s"])
            gen_peer.setdefault(label, {}).setdefault(threads, []).append(rec["result"]["generate_tokens_per_s"])
            peer[label]["impl"] = rec["result"]["impl"]

        run_ours()
        for label, py in peers:
            for t in ((2,) if quick else (1, 2)):
                run_peer(label, py, t)
        if not quick:
            run_ours()
            for label, py in peers[:1]:  # the repeat at the best setting: the target's peer only
                best = max((1, 2), key=lambda t: max(peer[label][t]))
                run_peer(label, py, best)
        me = max(ours)
        fl = flops_per_token(seq)
        for label, _ in peers:
            d = {t: v for t, v in peer[label].items() if t != "impl"}
            bt = max(d, key=lambda t: max(d[t]))
            pv = max(d[bt])
            fast = label == "HF + PyPI torch"
            rows.append({"measure": f"GPT-2-124M forward, {batch}×{seq} tokens/s (logits at every position)",
                         "peer": f"{peer[label]['impl']}, {bt} thread(s)",
                         "peer_value": f"{pv:.0f} tok/s ({pv * fl / 1e9:.0f} GFLOP/s)",
                         "ours": f"{me:.0f} tok/s ({me * fl / 1e9:.0f} GFLOP/s, 2 threads)",
                         "ratio": me / pv, "target": "≥ 1.0× (vs the faster torch)" if fast else "—",
                         "met": (me / pv >= 1.0) if fast else None, "note": ""})
    for label, _ in peers:
        d = {t: v for t, v in gen_peer[label].items()}
        bt = max(d, key=lambda t: max(d[t]))
        pv = max(d[bt])
        fast = label == "HF + PyPI torch"
        rows.append({"measure": "GPT-2-124M greedy generation, batch 1, prompt 16, KV cache; new tokens/s",
                     "peer": f"{label}, {bt} thread(s)", "peer_value": f"{pv:.1f} tok/s",
                     "ours": f"{max(gen_ours):.1f} tok/s (2 threads)", "ratio": max(gen_ours) / pv,
                     "target": "≥ 1.5× (vs the faster torch)" if fast else "—",
                     "met": (max(gen_ours) / pv >= 1.5) if fast else None, "note": ""})
    r.save({"rows": rows, "flops_per_token": {"1x256": flops_per_token(256), "8x128": flops_per_token(128)}})


def interleave_best(quick, run_ours, run_peer, ours, peer, cost):
    """Run both sides interleaved — `--quick`: each once at 2 threads; otherwise ours at 2, the peer
    at 1, ours at 1, the peer at 2, then each again at its best thread count — and return each
    side's best `(threads, record)`, best meaning the lowest `cost(record)`. `run_*(threads)`
    append their records to `ours` / `peer`, dicts from thread count to a list of records."""
    best = lambda d: min(d, key=lambda t: min(cost(x) for x in d[t]))
    if quick:
        run_ours(2)
        run_peer(2)
    else:
        run_ours(2)
        run_peer(1)
        run_ours(1)
        run_peer(2)
        run_ours(best(ours))
        run_peer(best(peer))
    bo, bp = best(ours), best(peer)
    return (bo, min(ours[bo], key=cost)), (bp, min(peer[bp], key=cost))


def row_lmtrain(quick):
    """GPT-2-124M-shaped full training step (forward + LM loss + backward + clip + Adam), 8×128."""
    r = Row("lmtrain", quick)
    shape = ["12", "768", "12", "8", "128", "50257"]
    steps = "1" if quick else "3"
    ours, hf = {}, {}

    def run_ours(t):
        rec = r.run(f"maxmin t{t}", [f"{EX}/pretrain_bench"] + shape + [steps], env={"RAYON_NUM_THREADS": str(t)})
        ours.setdefault(t, []).append(rec["result"])

    def run_hf(t):
        rec = r.run(f"HF t{t}", [PY, "benches/lm_train_hf.py"] + shape + [steps, str(t)],
                    env={"OMP_NUM_THREADS": str(t), "MKL_NUM_THREADS": str(t)})
        hf.setdefault(t, []).append(rec["result"])

    (bo, o), (bh, p) = interleave_best(quick, run_ours, run_hf, ours, hf, lambda x: x["step_s"])
    ratio = p["step_s"] / o["step_s"]
    r.save({"rows": [{
        "measure": "GPT-2-124M-shaped training step (random weights, 8×128 tokens, vocab 50,257): forward + LM loss + "
                   f"backward of every weight + clip + Adam; s/step, mean of {steps} after a warm-up",
        "peer": f"{p['impl']} ({p['attn']} attention), AdamW, {bh} thread(s)",
        "peer_value": f"{p['step_s']:.2f} s ({p['tokens_per_s']:.0f} tok/s, {p['gflops']:.0f} GFLOP/s)",
        "ours": f"{o['step_s']:.2f} s ({o['tokens_per_s']:.0f} tok/s, {o['gflops']:.0f} GFLOP/s, {bo} thread(s))",
        "ratio": ratio, "target": "measured (issue 14)", "met": None,
        "note": "maxmin's side is the pretraining trainer (`plugins/imdb/examples/pretrain_bench.rs`, the loop of "
                "`maxmin lm pretrain`), not the candle LoRA path of LM PPO; GFLOP/s counts 6 × dense parameters + "
                "attention per token on both sides"}]})


def row_lmppo(quick):
    """One LM PPO step (generation + scoring + 4 epochs) vs TRL 0.11 PPOTrainer + peft LoRA."""
    r = Row("lmppo", quick)
    model, prompts = "models/gpt2-imdb-small", "data/imdb/prompts.jsonl"
    steps = "3" if quick else "6"
    ours, trl = {}, {}

    def resp_len(rec):
        ls = [x["response_len"] for x in rec.get("lines", []) if x.get("step", 0) > 0 and "response_len" in x]
        return sum(ls) / len(ls) if ls else float("nan")

    def run_ours(t):
        rec = r.run(f"maxmin t{t}", [f"{EX}/ppo_bench", model, prompts, steps], env={"RAYON_NUM_THREADS": str(t)})
        ours.setdefault(t, []).append({**rec["result"], "response_len": resp_len(rec)})

    def run_trl(t):
        rec = r.run(f"trl t{t}", [PY, "benches/lm_ppo_trl.py", model, prompts, steps, str(t)],
                    env={"OMP_NUM_THREADS": str(t), "MKL_NUM_THREADS": str(t)})
        trl.setdefault(t, []).append({**rec["result"], "response_len": resp_len(rec)})

    (bo, o), (bt, p) = interleave_best(quick, run_ours, run_trl, ours, trl, lambda x: x["median_total_s"])
    ratio = p["median_total_s"] / o["median_total_s"]
    r.save({"rows": [{
        "measure": f"LM PPO step, `{model}`, 32 prompts, ≤ 32 sampled tokens, LoRA r 8, 4 epochs × 4 mini-batches; s/step (gen + train), median of steps 1–{int(steps) - 1}",
        "peer": f"TRL PPOTrainer ({p['torch']}), peft LoRA, {bt} thread(s)",
        "peer_value": f"{p['median_gen_s']:.2f} + {p['median_step_s']:.2f} = {p['median_total_s']:.2f} s",
        "ours": f"{o['median_gen_s']:.2f} + {o['median_score_s'] + o['median_train_s']:.2f} = {o['median_total_s']:.2f} s ({bo} thread(s))",
        "ratio": ratio, "target": "≥ 2× (issue 12)", "met": ratio >= 2,
        "note": "TRL's `step` covers maxmin's score + train; mean response length over the timed steps: "
                f"TRL {p['response_len']:.1f}, maxmin {o['response_len']:.1f} tokens (each side samples its own)"}]})


# ---- table -----------------------------------------------------------------------------------

def machine():
    p = subprocess.run(["lscpu"], capture_output=True, text=True)
    info = dict(l.split(":", 1) for l in p.stdout.splitlines() if ":" in l)
    model = info.get("Model name", platform.processor()).strip()
    return f"{model}, {info.get('CPU(s)', '?').strip()} logical CPUs"


def versions():
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return [f"maxmin {git_commit()} at the last invocation, {rustc}, release build",
            f"{PY}: " + py_version(PY, ["torch", "numpy", "gymnasium", "stable_baselines3", "transformers", "trl", "peft"]),
            f"{PY_DEB}: " + py_version(PY_DEB, ["torch", "numpy", "transformers"]),
            f"{PY_NP}: " + py_version(PY_NP, ["numpy", "gymnasium"])]


def write_table(total_s, ran):
    docs = []
    for name in ROWS:
        p = os.path.join(RAW, f"{name}.json")
        if os.path.exists(p):
            docs.append(json.load(open(p)))
    fmt_ratio = lambda x: "—" if x is None else f"{x:.2f}×"
    met = lambda m: "—" if m is None else ("**met**" if m else "**missed**")
    lines = ["# Side by side: maxmin and its peers, same machine, same sitting", "",
             "Written by `benches/side-by-side.sh`; do not edit by hand. Each row group ran its pair",
             "interleaved (maxmin, peer, maxmin, peer) in one sitting, the peer at 1 and 2 threads and",
             "again at its best; best (minimum time / maximum rate) of each side shown. Ratio = how many",
             "times faster maxmin is (peer time / maxmin time, or maxmin rate / peer rate).", "",
             f"- Machine at the last invocation: {machine()}; {os.cpu_count()} cores visible, **shared with other",
             "  jobs** (load averages below are the 1/5/15-minute `/proc/loadavg` at the first and last run of",
             "  each group). Sessions get different VMs, so each row names its own CPU; a ratio holds for the",
             "  machine it was measured on (both sides ran there, interleaved).",
             (f"- Last invocation: `benches/side-by-side.sh {' '.join(ran)}`, {total_s:.0f} s" if total_s is not None
              else "- Table rebuilt from the stored groups (`benches/side-by-side.sh table`); each row's own"
                   " sitting is in its last column."), ""]
    lines += ["- " + v for v in versions()]
    lines += ["", "| measure | peer (best setting) | peer | maxmin | ratio | target | target met | measured (UTC), commit, CPU; load avg first → last |",
              "|---|---|---|---|---|---|---|---|"]
    notes = []
    for d in docs:
        when = (f"{d['started']}{' `--quick`' if d['quick'] else ''}, maxmin {d.get('commit', '?')}, "
                f"{d.get('machine', 'CPU not recorded')}; {d['load_first']} → {d['load_last']}")
        for row in d["summary"]["rows"]:
            if row["ours"] == "not measured" and any(x["row"] == "lmtrain" for x in docs):
                continue  # the `lm` group's placeholder from before the `lmtrain` row existed
            lines.append(f"| {row['measure']} | {row['peer']} | {row['peer_value']} | {row['ours']} | "
                         f"{fmt_ratio(row['ratio'])} | {row['target']} | {met(row['met'])} | {when} |")
            if row.get("note"):
                notes.append(f"- {row['measure']}: {row['note']}")
    lines += ["", "## Notes", ""] + notes
    lines += ["", "## Commands, as run (each group's full output and load averages: `benches/results/side_by_side/<group>.json`)", ""]
    for d in docs:
        seen = []
        for run in d["runs"]:
            if run["cmd"] not in seen:
                seen.append(run["cmd"])
        lines += [f"**{d['row']}** ({d['seconds']:.0f} s):", "", "```"] + seen + ["```", ""]
    with open(TABLE, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


def main():
    args = sys.argv[1:]
    quick = "--quick" in args
    rows = [a for a in args if a != "--quick"]
    if rows == ["table"]:
        write_table(None, [])
        return
    bad = [a for a in rows if a not in ROWS]
    if bad:
        sys.exit(f"side_by_side: unknown row(s) {bad}; rows: {' '.join(ROWS)} (or --quick)")
    rows = rows or ROWS
    t0 = time.perf_counter()
    for name in rows:
        globals()[f"row_{name}"](quick)
    total = time.perf_counter() - t0
    write_table(total, args)
    print(f"side-by-side: {' '.join(rows)} took {total:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
