#!/usr/bin/env python3
"""HF transformers side of benches/lm_vs_transformers.sh.

Usage: lm_forward_hf.py DIR BATCH SEQ ITERS GEN_PROMPT GEN_TOKENS THREADS [DTYPE]
DTYPE is the torch dtype the weights are loaded in (default float32, the side-by-side rows;
bfloat16 for the note in docs/lm.md). Creates DIR (a randomly initialised GPT-2-124M-shaped checkpoint, seed 0) when it has no
config.json, then prints one JSON line: forward tokens/s (logits at every position, no cache) and
greedy generation tokens/s with the KV cache, on the same token ids the Rust example uses.
"""
import json
import os
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    d, batch, seq, iters, gen_prompt, gen_tokens, threads = sys.argv[1:8]
    dtype = sys.argv[8] if len(sys.argv) > 8 else "float32"
    batch, seq, iters, gen_prompt, gen_tokens, threads = map(int, (batch, seq, iters, gen_prompt, gen_tokens, threads))
    torch.set_num_threads(threads)
    if not os.path.exists(os.path.join(d, "config.json")):
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config()).save_pretrained(d, safe_serialization=True)
    model = GPT2LMHeadModel.from_pretrained(d, torch_dtype=getattr(torch, dtype)).eval()
    vocab = model.config.vocab_size
    ids = torch.tensor([[(b * 7919 + i * 104729) % vocab for i in range(seq)] for b in range(batch)])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
        t = time.perf_counter()
        for _ in range(iters):
            model(input_ids=ids, attention_mask=mask).logits
        fwd = time.perf_counter() - t
        prompt = torch.tensor([[(i * 104729) % vocab for i in range(gen_prompt)]])

        def greedy(steps):
            # The KV-cache loop `generate` runs, written out: Debian's torch 1.13 cannot import the
            # FSDP module that transformers 4.47's `generate` touches.
            out, past, x = [], None, prompt
            for _ in range(steps):
                o = model(input_ids=x, past_key_values=past, use_cache=True)
                past = o.past_key_values
                x = o.logits[:, -1:].argmax(-1)
                out.append(int(x))
            return out

        greedy(2)
        t = time.perf_counter()
        n = len(greedy(gen_tokens))
        gen = time.perf_counter() - t
    print(json.dumps({"impl": "transformers " + __import__("transformers").__version__ + " / torch " + torch.__version__,
                      "dtype": dtype,
                      "attn": model.config._attn_implementation,
                      "forward_tokens_per_s": round(batch * seq * iters / fwd, 1),
                      "generate_tokens_per_s": round(n / gen, 2), "generated": n}))


if __name__ == "__main__":
    main()
