#!/usr/bin/env python3
"""Generate the tiny language-model fixtures that pin maxmin-lm's GPT-2 and Llama to HF transformers.

Install (works offline on the project machines, Debian 12):
    apt-get install -y python3-torch
    /usr/bin/python3 -m pip install --break-system-packages transformers==4.47.1 "numpy<2" safetensors
Run from the repository root:
    /usr/bin/python3 tests/data/lm/gen_fixtures.py

Writes, next to this script:
    tokenizer.json            tiny byte-level BPE (GPT-2 pre-tokenizer regex), trained on a few lines
    gpt2-prefix/              GPT-2, keys `transformer.h.0...`, f32, single file, tied lm_head
    gpt2-noprefix/            GPT-2, keys `h.0...` (as the original `gpt2` hub checkpoint), stored f16
    llama-mha/                Llama-2 layout, multi-head attention, f32, single file
    llama-gqa-sharded/        Llama-2 layout, grouped-query attention (4 heads, 2 kv heads), f32,
                              sharded into model-0000N-of-0000M.safetensors + index
    reference.json            for every fixture: input ids, HF logits at every position, and the
                              greedy continuation computed by HF (argmax, no cache, EOS ignored)
Every model is randomly initialised with a fixed seed; weights get extra noise so that biases and
norm gains are not their trivial init values (a bug that ignores them must fail the tests).
"""
import json
import os
import shutil

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = 288
EOS = 0  # `<|endoftext|>` is the first special token of the tokenizer below
TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "a movie review: this film was great, the acting was good and the story was fun",
    "a movie review: this film was bad, the plot was thin and the ending was slow",
    "reinforcement learning from human feedback with diverse preferences",
    "the max min objective helps the worst off group of users",
]


def noisy_(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def write_tokenizer():
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(TEXT, vocab_size=VOCAB, min_frequency=2,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    path = os.path.join(HERE, "tokenizer.json")
    tok.save(path)
    assert tok.get_vocab_size() <= VOCAB, tok.get_vocab_size()
    return path


def reference(model, ids, steps=10):
    """Logits at every position for `ids`, and a greedy continuation (full recompute each step)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
        seq = list(ids)
        margins = []
        for _ in range(steps):
            last = model(torch.tensor([seq])).logits[0, -1]
            top = torch.topk(last, 2).values
            margins.append(float(top[0] - top[1]))
            seq.append(int(torch.argmax(last)))
    # A near tie would make the greedy comparison depend on float rounding, not on correctness.
    assert min(margins) > 1e-3, margins
    return {
        "ids": ids,
        "logits": [[float("%.7g" % v) for v in row] for row in logits.tolist()],
        "greedy_prompt": ids[:4],
        "greedy_new_tokens": None,
        "_greedy_full": seq,
    }


def greedy(model, prompt, steps=10):
    with torch.no_grad():
        seq = list(prompt)
        for _ in range(steps):
            seq.append(int(torch.argmax(model(torch.tensor([seq])).logits[0, -1])))
    return seq[len(prompt):]


def finish(name, model_cls, ids, refs):
    """Reload the saved directory with HF (as a user would) and record its outputs."""
    d = os.path.join(HERE, name)
    shutil.copy(os.path.join(HERE, "tokenizer.json"), os.path.join(d, "tokenizer.json"))
    model = model_cls.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager").eval()
    r = reference(model, ids)
    r["greedy_new_tokens"] = greedy(model, r["greedy_prompt"])
    del r["_greedy_full"]
    refs[name] = r


def fresh_dir(name):
    d = os.path.join(HERE, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def main():
    torch.manual_seed(0)
    write_tokenizer()
    refs = {}
    ids = [5, 77, 140, 3, 250, 31, 9]

    gcfg = dict(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                initializer_range=0.2, bos_token_id=EOS, eos_token_id=EOS)

    # GPT-2 with the `transformer.` prefix, as GPT2LMHeadModel.save_pretrained writes it.
    torch.manual_seed(1)
    m = GPT2LMHeadModel(GPT2Config(**gcfg)).eval()
    noisy_(m, 1)
    d = fresh_dir("gpt2-prefix")
    m.save_pretrained(d, safe_serialization=True)
    finish("gpt2-prefix", GPT2LMHeadModel, ids, refs)

    # GPT-2 without the prefix (the layout of the original `gpt2` checkpoint), stored in f16.
    torch.manual_seed(2)
    m = GPT2LMHeadModel(GPT2Config(**gcfg)).eval()
    noisy_(m, 2)
    d = fresh_dir("gpt2-noprefix")
    m.config.save_pretrained(d)
    sd = {k[len("transformer."):]: v.to(torch.float16).contiguous()
          for k, v in m.state_dict().items() if k.startswith("transformer.") and not k.endswith(".attn.bias")
          and not k.endswith(".attn.masked_bias")}
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    finish("gpt2-noprefix", GPT2LMHeadModel, ids, refs)

    lcfg = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5,
                rope_theta=10000.0, tie_word_embeddings=False, initializer_range=0.2,
                bos_token_id=1, eos_token_id=EOS)

    torch.manual_seed(3)
    m = LlamaForCausalLM(LlamaConfig(num_key_value_heads=4, **lcfg)).eval()
    noisy_(m, 3)
    d = fresh_dir("llama-mha")
    m.save_pretrained(d, safe_serialization=True)
    finish("llama-mha", LlamaForCausalLM, ids, refs)

    torch.manual_seed(4)
    m = LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, **lcfg)).eval()
    noisy_(m, 4)
    d = fresh_dir("llama-gqa-sharded")
    m.save_pretrained(d, safe_serialization=True, max_shard_size="60KB")
    assert os.path.exists(os.path.join(d, "model.safetensors.index.json")), os.listdir(d)
    finish("llama-gqa-sharded", LlamaForCausalLM, ids, refs)

    for name in list(refs):
        for f in os.listdir(os.path.join(HERE, name)):
            if f == "generation_config.json":
                os.remove(os.path.join(HERE, name, f))
    with open(os.path.join(HERE, "reference.json"), "w") as f:
        json.dump({"generator": "tests/data/lm/gen_fixtures.py", "torch": torch.__version__,
                   "fixtures": refs}, f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
