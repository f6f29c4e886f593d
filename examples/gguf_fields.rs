//! Per ggml type of a GGUF file: bytes, and the order-0 entropy bound of the block coder's
//! fields (lanes), from one histogram per lane per tensor (so the bound owes nothing to chunking
//! and carries no table cost: the ideal for this field split). Optionally writes each type's
//! tensor bytes, concatenated in data order, to DIR/<TYPE>.bin (for zstd / lmz on the same bytes).
//! Used by scripts/bench_gguf.sh.
//!
//! usage: cargo run --release --example gguf_fields -- FILE.gguf [DIR]
//! prints one JSON object per type: {"type", "tensors", "bytes", "bound", "lanes": [[name, bytes, bound]]}

use std::collections::BTreeMap;
use std::io::Write;

use upg::codec::block;
use upg::gguf::Gguf;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: gguf_fields FILE.gguf [DIR]");
    let dump = args.get(2);
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: read-only map of a file nobody modifies during the run.
    let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    let g = Gguf::parse(&map, map.len() as u64).unwrap();
    #[derive(Default)]
    struct Acc {
        tensors: u64,
        bytes: u64,
        bound: f64,
        lanes: BTreeMap<usize, (&'static str, u64, f64)>,
    }
    let mut per: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut files: BTreeMap<&str, std::fs::File> = BTreeMap::new();
    for (s, e, t) in g.spans() {
        let data = &map[s as usize..e as usize];
        let a = per.entry(t.ty.name).or_default();
        a.tensors += 1;
        a.bytes += data.len() as u64;
        if let Some(lay) = block::layout(t.ty.id as u8) {
            let (b, lanes) = block::order0_bound(lay, data);
            a.bound += b;
            for (i, (name, n, lb)) in lanes.into_iter().enumerate() {
                let l = a.lanes.entry(i).or_insert((name, 0, 0.0));
                l.1 += n as u64;
                l.2 += lb;
            }
        }
        if let Some(d) = dump {
            let out = files.entry(t.ty.name).or_insert_with(|| {
                std::fs::File::create(format!("{d}/{}.bin", t.ty.name)).unwrap()
            });
            out.write_all(data).unwrap();
        }
    }
    for (ty, a) in per {
        let lanes: Vec<_> = a
            .lanes
            .values()
            .map(|(n, b, lb)| serde_json::json!([n, b, lb.round()]))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "type": ty, "tensors": a.tensors, "bytes": a.bytes,
                "bound": if a.lanes.is_empty() { serde_json::Value::Null } else { a.bound.round().into() },
                "lanes": lanes,
            })
        );
    }
}
