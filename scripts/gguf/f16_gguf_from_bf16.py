#!/usr/bin/env python3
"""Write an F16 GGUF of a BF16 safetensors model the way convert_hf_to_gguf.py --outtype f16 does
(2-D tensors BF16 -> F32 -> F16, 1-D tensors F32), with gguf-py; for docs/CODEC.md's F16-as-BF16
measurement where llama.cpp is not built.  usage: f16_gguf_from_bf16.py MODEL_DIR OUT.gguf"""
import sys, json, struct, numpy as np, gguf
src, out = sys.argv[1], sys.argv[2]
b = open(src + '/model.safetensors', 'rb').read()
n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8+n]); base = 8 + n
w = gguf.GGUFWriter(out, 'llama')
for k, v in h.items():
    if k == '__metadata__': continue
    s, e = v['data_offsets']
    raw = np.frombuffer(b[base+s:base+e], dtype=np.uint16)
    f32 = (raw.astype(np.uint32) << 16).view(np.float32).reshape(v['shape'])
    w.add_tensor(k, f32.astype(np.float16) if f32.ndim > 1 else f32)
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
