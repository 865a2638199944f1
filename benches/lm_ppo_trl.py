"""Seconds per PPO step of TRL's PPOTrainer at the shapes of `configs/gpt2-imdb__maxmin.toml`,
the peer of `cargo run --release -p maxmin-lm --example ppo_bench` (docs/lm-rlhf.md, "Speed").

Same model (models/gpt2-imdb-tiny, loaded from the directory), same prompts file, LoRA r = 8,
alpha 16 on c_attn, c_proj, c_fc (peft), value head (trl), batch 32, mini-batch 8, 4 PPO epochs,
lr 5e-4, early stopping at target KL 0.1, sampling with top_k = 0, top_p = 1, up to 32 new tokens
stopping at EOS, seeded random scores. `gen_s` times `PPOTrainer.generate`; `step_s` times
`PPOTrainer.step`, which covers what ppo_bench splits into `score_s` (old and reference
log-probabilities, values) and `train_s` (the epochs).

Usage: benches/lm_ppo_trl.py [MODEL_DIR] [PROMPTS] [STEPS] [THREADS]
Needs torch, transformers, peft and trl==0.11.4 (a git-ignored .venv*, see docs/lm-rlhf.md).
"""
import json
import random
import sys
import time

import torch
from peft import LoraConfig
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast
from trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else "models/gpt2-imdb-tiny"
    prompts_file = sys.argv[2] if len(sys.argv) > 2 else "data/imdb/prompts.jsonl"
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    random.seed(1)
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json")
    cfg = json.load(open(f"{model_dir}/config.json"))
    eos = cfg["eos_token_id"]
    tok.pad_token_id = eos
    tok.eos_token_id = eos
    pool = []
    for line in open(prompts_file):
        if line.strip():
            ids = tok.encode(json.loads(line)["prompt"])
            if ids:
                pool.append(torch.tensor(ids))
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["c_attn", "c_proj", "c_fc"],
        fan_in_fan_out=True,
        task_type="CAUSAL_LM",
    )
    base = GPT2LMHeadModel.from_pretrained(model_dir)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(base, peft_config=lora)
    ppo_cfg = PPOConfig(
        batch_size=32,
        mini_batch_size=8,
        ppo_epochs=4,
        learning_rate=5e-4,
        early_stopping=True,
        target_kl=0.1,
        seed=1,
        log_with=None,
    )
    trainer = PPOTrainer(ppo_cfg, model, ref_model=None, tokenizer=tok)
    gen = dict(
        max_new_tokens=32,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        pad_token_id=eos,
        eos_token_id=eos,
    )
    g_all, s_all = [], []
    for k in range(steps):
        queries = [pool[random.randrange(len(pool))] for _ in range(32)]
        t = time.perf_counter()
        responses = trainer.generate(queries, batch_size=32, return_prompt=False, **gen)
        gen_s = time.perf_counter() - t
        scores = [torch.tensor(random.uniform(-1, 1)) for _ in range(32)]
        t = time.perf_counter()
        stats = trainer.step(queries, list(responses), scores)
        step_s = time.perf_counter() - t
        rlen = sum(len(r) for r in responses) / len(responses)
        print(json.dumps({"step": k, "gen_s": round(gen_s, 4), "step_s": round(step_s, 4),
                          "response_len": rlen, "kl": float(stats["objective/kl"])}), flush=True)
        if k > 0:
            g_all.append(gen_s)
            s_all.append(step_s)
    med = lambda v: sorted(v)[len(v) // 2] if v else 0.0
    print(json.dumps({"impl": "trl", "torch": torch.__version__, "threads": threads,
                      "median_gen_s": round(med(g_all), 4), "median_step_s": round(med(s_all), 4),
                      "median_total_s": round(med(g_all) + med(s_all), 4)}))


if __name__ == "__main__":
    main()
