#!/usr/bin/env python3
"""usage: e2e_compare_models.py ORIG_DIR MOUNTED_DIR: SHA-256 of every file, then from_pretrained of both
(BF16) and every tensor and the logits of one prompt compared. Used by scripts/e2e_remote_s3.sh."""
import sys, hashlib, os, torch
from transformers import AutoModelForCausalLM
orig, mnt = sys.argv[1], sys.argv[2]
for f in sorted(os.listdir(orig)):
    a = hashlib.sha256(open(os.path.join(orig, f), 'rb').read()).hexdigest()
    b = hashlib.sha256(open(os.path.join(mnt, f), 'rb').read()).hexdigest()
    print(f, 'sha256 equal' if a == b else 'DIFFERENT')
m1 = AutoModelForCausalLM.from_pretrained(orig, dtype=torch.bfloat16)
m2 = AutoModelForCausalLM.from_pretrained(mnt, dtype=torch.bfloat16)
s1, s2 = m1.state_dict(), m2.state_dict()
same = all(torch.equal(s1[k], s2[k]) for k in s1) and s1.keys() == s2.keys()
print('from_pretrained through s3:// mount: %d tensors, all equal: %s' % (len(s1), same))
ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])
print('logits equal:', torch.equal(m1(ids).logits, m2(ids).logits))
