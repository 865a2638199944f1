#!/usr/bin/env python3
"""HF transformers side of the `lmtrain` row of benches/side-by-side.sh: one full training step of
a GPT-2-shaped model — forward with the language-model loss, backward through every weight,
gradient clipping at norm 1 and an AdamW step — at the shapes maxmin's
`plugins/imdb/examples/pretrain_bench.rs` times (random weights, random tokens, no dropout).

Usage: lm_train_hf.py LAYERS HIDDEN HEADS BATCH CONTEXT VOCAB STEPS THREADS
Prints one JSON line: seconds per step (mean of STEPS after one warm-up step), tokens/s and the
GFLOP/s of the same count maxmin's bench uses (6 × dense parameters + attention, per token).
"""
import json
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    layers, hidden, heads, batch, context, vocab, steps, threads = map(int, sys.argv[1:9])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads, n_positions=context, vocab_size=vocab,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (batch, context + 1), generator=g)
    # Inputs are the first `context` tokens, targets the next ones: `context` predictions per row,
    # as in maxmin's trainer (HF's own `labels=` shift would predict only context − 1).
    x, y = ids[:, :-1], ids[:, 1:]

    def step():
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    secs = (time.perf_counter() - t) / steps
    n_params = sum(p.numel() for p in model.parameters())
    dense = n_params - context * hidden
    tokens = batch * context
    flops = tokens * (6.0 * dense + 12.0 * layers * context * hidden)
    print(json.dumps({"impl": "transformers " + __import__("transformers").__version__ + " / torch " + torch.__version__,
                      "attn": model.config._attn_implementation, "params": n_params,
                      "step_s": round(secs, 4), "tokens_per_s": round(tokens / secs, 1),
                      "gflops": round(flops / secs / 1e9, 2), "threads": threads}))


if __name__ == "__main__":
    main()
