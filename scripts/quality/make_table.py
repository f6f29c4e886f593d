#!/usr/bin/env python3
"""Join ref_table.sh's sizes.jsonl (bits/weight per candidate) with eval_lm.py's lm.json.

usage: make_table.py WORK_DIR   -> markdown table on stdout, WORK_DIR/table.json
Rows sorted by family, then by bits/weight (descending). The original is the first row of lm.json.
"""
import json
import os
import sys


def main():
    work = sys.argv[1]
    with open(os.path.join(work, "lm.json")) as f:
        lm = json.load(f)
    sizes = [json.loads(line) for line in open(os.path.join(work, "sizes.jsonl")) if line.strip()]
    by_dir = {r["model"]: r for r in lm}
    orig = lm[0]
    rows = []
    for s in sizes:
        r = by_dir.get(s["dir"])
        if r is None:
            continue
        rows.append({**s, **{k: r[k] for k in ("ppl", "dppl_pct", "kl", "top1_pct", "tokens", "device")}})
    order = {"gguf-f16": 0, "upg": 1, "gguf-k": 2, "gguf-legacy": 3}
    rows.sort(key=lambda r: (order.get(r["family"], 9), -r["bpw_file"]))
    with open(os.path.join(work, "table.json"), "w") as f:
        json.dump({"original": orig, "rows": rows}, f, indent=1)
    print(f"{orig['tokens']} scored tokens, device {orig['device']}; bits/weight = file bytes x 8 / "
          f"{rows[0]['weights'] if rows else 0} weights\n")
    print("| method | bits/weight (file) | ppl | Δppl % | KL (nats/token) | top-1 % |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| original BF16 | 16 | {orig['ppl']:.3f} | 0 | 0 | 100 |")
    for r in rows:
        print(f"| {r['label']} | {r['bpw_file']:.3f} | {r['ppl']:.3f} | {r['dppl_pct']:+.3f} | "
              f"{r['kl']:.5f} | {r['top1_pct']:.2f} |")


if __name__ == "__main__":
    main()
