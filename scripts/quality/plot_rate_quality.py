#!/usr/bin/env python3
"""Rate-quality plot: mean KL (log scale) against bits/weight (file bytes x 8 / weights), one line per
family (upg, llama.cpp k-quants, legacy GGUF), from ref_table.sh's table.json.

usage: plot_rate_quality.py WORK_DIR/table.json OUT.png [--title TEXT]   (needs matplotlib)
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"upg": ("upg (ECSQ presets)", "o-", "C0"), "upg-bits": ("upg --bits", "s--", "C3"),
         "gguf-k": ("llama.cpp k-quants", "^-", "C1"), "gguf-legacy": ("legacy GGUF", "v-", "C2")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("table")
    ap.add_argument("png")
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    t = json.load(open(a.table))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    fams = {}
    for r in t["rows"]:
        fam = r["family"]
        if fam == "upg" and r["label"].startswith("upg-bits"):
            fam = "upg-bits"
        fams.setdefault(fam, []).append(r)
    for fam, rs in fams.items():
        if fam not in STYLE or not rs:
            continue
        rs.sort(key=lambda r: r["bpw_file"])
        name, fmt, col = STYLE[fam]
        ax.plot([r["bpw_file"] for r in rs], [max(r["kl"], 1e-7) for r in rs], fmt, color=col, label=name)
        for r in rs:
            ax.annotate(r["label"].replace("GGUF ", "").replace("upg-", ""), (r["bpw_file"], max(r["kl"], 1e-7)),
                        textcoords="offset points", xytext=(4, 4), fontsize=7, color=col)
    ax.set_yscale("log")
    ax.set_xlabel("bits/weight (file bytes x 8 / weights)")
    ax.set_ylabel("mean KL(candidate || original), nats/token")
    o = t["original"]
    ax.set_title(a.title or f"{o['tokens']} tokens, {o['device']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.png, dpi=120)


if __name__ == "__main__":
    main()
