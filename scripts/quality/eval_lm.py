#!/usr/bin/env python3
"""Perplexity / KL / top-1 agreement of candidate LMs against the original.

usage: eval_lm.py ORIG_DIR CANDIDATE_DIR [CANDIDATE_DIR ...] [--tokens N] [--window W]
                  [--device cpu|cuda] [--json out.json]

Text: /work/shared/data/wikitext-2-raw-test.txt, tokenized once, cut into non-overlapping
windows of W tokens (the first N tokens; --tokens 0 = the whole text, meant for a GPU).
Per window, every position but the first is scored. PPL = exp(mean NLL); KL is
KL(candidate || original) of the next-token distributions, mean over scored positions (nats);
top-1 = share of positions where both argmaxes agree. Candidates are only read through
transformers' from_pretrained, so a FUSE mount works the same as a plain directory.
On CPU the weights are upcast to float32 (exact for BF16/F16 values); on CUDA they are
used as stored.
"""
import argparse
import os
import json
import math
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

TEXT = os.environ.get("UPG_WIKITEXT", "/work/shared/data/wikitext-2-raw-test.txt")


def load(d, device):
    dtype = torch.float32 if device == "cpu" else "auto"
    m = AutoModelForCausalLM.from_pretrained(d, dtype=dtype)
    return m.to(device).eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("orig_dir")
    ap.add_argument("cand_dirs", nargs="+")
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(a.orig_dir)
    with open(TEXT, encoding="utf-8") as f:
        ids = tok(f.read(), return_tensors="pt").input_ids[0]
    if a.tokens:
        ids = ids[: a.tokens]
    nwin = len(ids) // a.window
    wins = ids[: nwin * a.window].view(nwin, a.window)
    orig = load(a.orig_dir, a.device)
    cands = [(d, load(d, a.device)) for d in a.cand_dirs]
    acc = {d: {"nll": 0.0, "kl": 0.0, "agree": 0} for d in [a.orig_dir] + a.cand_dirs}
    npos = 0
    t0 = time.time()
    with torch.inference_mode():
        for w in wins:
            x = w.unsqueeze(0).to(a.device)
            tgt = x[0, 1:]
            lo = torch.log_softmax(orig(x).logits[0, :-1].float(), -1)
            acc[a.orig_dir]["nll"] += -lo.gather(1, tgt[:, None]).sum().item()
            acc[a.orig_dir]["agree"] += len(tgt)
            top_o = lo.argmax(-1)
            for d, m in cands:
                lc = torch.log_softmax(m(x).logits[0, :-1].float(), -1)
                acc[d]["nll"] += -lc.gather(1, tgt[:, None]).sum().item()
                acc[d]["kl"] += (lc.exp() * (lc - lo)).sum().item()
                acc[d]["agree"] += (lc.argmax(-1) == top_o).sum().item()
            npos += len(tgt)
    base_ppl = math.exp(acc[a.orig_dir]["nll"] / npos)
    rows = []
    print(f"# {npos} scored tokens in {nwin} windows of {a.window}, device {a.device}, {time.time() - t0:.0f}s")
    print(f"{'model':<40} {'ppl':>9} {'dppl%':>8} {'KL':>9} {'top1%':>7}")
    for d in [a.orig_dir] + a.cand_dirs:
        ppl = math.exp(acc[d]["nll"] / npos)
        r = {
            "model": d,
            "ppl": ppl,
            "dppl_pct": 100 * (ppl / base_ppl - 1),
            "kl": acc[d]["kl"] / npos,
            "top1_pct": 100 * acc[d]["agree"] / npos,
            "tokens": npos,
            "device": a.device,
        }
        rows.append(r)
        print(f"{d:<40} {ppl:9.4f} {r['dppl_pct']:8.3f} {r['kl']:9.5f} {r['top1_pct']:7.2f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
