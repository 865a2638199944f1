"""torch peer of maxmin's fused token log-prob kernels (`maxmin bench kernels --only
logprob_fwd_f32`), for benches/side-by-side.sh.

Per row of [N, V] f32 logits z (and reference logits w): the target token's log-probability and
the entropy (`logprob_fwd_f32`), plus the full KL(p_z ‖ p_w) (`logprob_fwd_f32_kl`), composed as
a user writes them in torch: `log_softmax`, `gather`, `exp`, products and row sums, under
`torch.inference_mode()`. GB/s charges the same minimum bytes as maxmin's report (logits read
once, targets read, 8 f32 stats per row written).

Usage: logprob_torch.py N VOCABS THREADS [MIN_ITERS]     (VOCABS comma-separated)
Prints one JSON line with the median ms of each kernel and vocabulary.
"""
import json
import sys
import time

import torch


def timed(f, min_iters):
    f()
    times = []
    for _ in range(min_iters):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    n = int(sys.argv[1])
    vocabs = [int(v) for v in sys.argv[2].split(",")]
    threads = int(sys.argv[3])
    min_iters = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    if n <= 0 or threads <= 0 or min(vocabs) <= 0:
        sys.exit("logprob_torch.py: N, vocabulary sizes and THREADS must be positive")
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    for v in vocabs:
        z = torch.randn(n, v, generator=g) * 3
        w = torch.randn(n, v, generator=g) * 3
        t = torch.randint(0, v, (n, 1), generator=g)

        def fwd():
            lp = torch.log_softmax(z, -1)
            tok = lp.gather(1, t).squeeze(1)
            ent = -(lp.exp() * lp).sum(-1)
            return tok, ent

        def fwd_kl():
            lp = torch.log_softmax(z, -1)
            lq = torch.log_softmax(w, -1)
            tok = lp.gather(1, t).squeeze(1)
            p = lp.exp()
            ent = -(p * lp).sum(-1)
            kl = (p * (lp - lq)).sum(-1)
            return tok, ent, kl

        with torch.inference_mode():
            for name, f, refs in (("logprob_fwd_f32", fwd, 1), ("logprob_fwd_f32_kl", fwd_kl, 2)):
                ms = timed(f, min_iters)
                nbytes = n * v * 4 * refs + n * 4 + n * 8 * 4
                rows.append({"kernel": name, "v": v, "ms": ms, "gbs": nbytes / (ms * 1e-3) / 1e9})
        del z, w
    print(json.dumps({"impl": f"torch {torch.__version__}", "threads": threads, "n": n,
                      "results": rows}))


if __name__ == "__main__":
    main()
