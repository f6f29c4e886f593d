//! `upg inspect`: the catalog of an archive, a model directory or one safetensors file, without
//! decoding tensor data (for archives only the small header segments are decoded).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::CliError;
use crate::archive::reader::DEFAULT_CACHE_BYTES;
use crate::archive::writer::TensorQuality;
use crate::archive::{Archive, ArchiveError, ArchiveMeta};
use crate::format::SegmentKind;
use crate::st::{Layout, StError};

#[derive(Debug, Serialize)]
pub struct TensorRow {
    pub file: String,
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub params: u64,
    pub bytes: u64,
    /// Archive only: stored bytes and codec.
    pub stored: Option<u64>,
    pub codec: Option<String>,
    /// Lossy archives: the preset and error figures stored at pack time.
    pub quality: Option<TensorQuality>,
}

#[derive(Debug, Serialize)]
pub struct FileRow {
    pub path: String,
    pub size: u64,
    pub stored: Option<u64>,
    pub sha256: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Catalog {
    pub source: String,
    pub kind: &'static str,
    pub files: Vec<FileRow>,
    pub tensors: Vec<TensorRow>,
    pub params: u64,
    pub bytes: u64,
    pub archive_bytes: Option<u64>,
    pub lossless: Option<bool>,
    pub meta: Option<ArchiveMeta>,
    /// GGUF files' metadata key/values: (file, key, value as `inspect` prints it).
    pub gguf_metadata: Vec<(String, String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The archive could not be opened or read.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// A safetensors file is malformed.
    #[error("{0}: {1}")]
    St(String, StError),
    /// The path does not exist or is of an unsupported kind.
    #[error("{0}")]
    Input(String),
    /// A GGUF file's header is malformed.
    #[error("{0}: malformed GGUF: {1}")]
    Gguf(String, crate::gguf::GgufError),
}

/// Does the file at `p` start with the GGUF magic? Only regular files are opened (opening a FIFO
/// would block; anything else goes on to the archive reader, which refuses it by name).
fn file_is_gguf(p: &Path) -> bool {
    use std::io::Read;
    if !std::fs::metadata(p).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut b = [0u8; 4];
    // open_regular: a FIFO or device must not block here (issue 13 item 3).
    crate::storage::open_regular(p)
        .and_then(|(mut f, _)| f.read_exact(&mut b))
        .is_ok()
        && crate::gguf::is_gguf(&b)
}

/// Parse a GGUF file on disk (mapped; only the header pages are touched).
fn read_gguf(p: &Path) -> Result<crate::gguf::Gguf, InspectError> {
    let src = p.display().to_string();
    let (f, _) =
        crate::storage::open_regular(p).map_err(|e| InspectError::Input(format!("{src}: {e}")))?;
    // SAFETY: read-only map, used only during this call.
    let map = unsafe { memmap2::Mmap::map(&f) }
        .map_err(|e| InspectError::Input(format!("{src}: {e}")))?;
    crate::gguf::Gguf::parse(&map, map.len() as u64).map_err(|e| InspectError::Gguf(src, e))
}

/// Tensor rows of a GGUF file in data order (the order of its tensor segments in an archive),
/// shapes in ggml order (`[ne0, ne1, ...]`, as llama.cpp prints them).
fn gguf_rows(
    file: &str,
    g: &crate::gguf::Gguf,
    stored: Option<&[(u64, String)]>,
) -> Vec<TensorRow> {
    g.spans()
        .into_iter()
        .enumerate()
        .map(|(i, (start, end, t))| TensorRow {
            file: file.to_string(),
            name: t.name.clone(),
            dtype: t.ty.name.to_string(),
            shape: t.dims.iter().map(|&d| d as usize).collect(),
            params: t.elems,
            bytes: end - start,
            stored: stored.and_then(|s| s.get(i)).map(|s| s.0),
            codec: stored.and_then(|s| s.get(i)).map(|s| s.1.clone()),
            quality: None,
        })
        .collect()
}

fn gguf_meta(file: &str, g: &crate::gguf::Gguf) -> Vec<(String, String, String)> {
    g.kvs
        .iter()
        .map(|(k, v)| (file.to_string(), k.clone(), v.to_string()))
        .collect()
}

pub fn catalog(path: &Path) -> Result<Catalog, InspectError> {
    let src = path.display().to_string();
    if path.is_dir() {
        return catalog_dir(path);
    }
    if !path.exists() {
        return Err(InspectError::Input(format!("{src} does not exist")));
    }
    if path.extension().and_then(|e| e.to_str()) == Some("safetensors") {
        let layout = Layout::read(path).map_err(|e| InspectError::St(src.clone(), e))?;
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tensors = rows(&name, &layout, None);
        return Ok(finish(
            src,
            "safetensors",
            vec![FileRow {
                path: name,
                size,
                stored: None,
                sha256: None,
            }],
            tensors,
            None,
        ));
    }
    if file_is_gguf(path) {
        let g = read_gguf(path)?;
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut c = finish(
            src,
            "GGUF",
            vec![FileRow {
                path: name.clone(),
                size,
                stored: None,
                sha256: None,
            }],
            gguf_rows(&name, &g, None),
            None,
        );
        c.gguf_metadata = gguf_meta(&name, &g);
        return Ok(c);
    }
    let a = Archive::open(path)?;
    catalog_archive(&a)
}

fn rows(file: &str, layout: &Layout, stored: Option<&[(u64, String)]>) -> Vec<TensorRow> {
    layout
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| TensorRow {
            file: file.to_string(),
            name: t.name.clone(),
            dtype: format!("{:?}", t.dtype),
            shape: t.shape.clone(),
            params: t.numel,
            bytes: t.end - t.start,
            stored: stored.and_then(|s| s.get(i)).map(|s| s.0),
            codec: stored.and_then(|s| s.get(i)).map(|s| s.1.clone()),
            quality: None,
        })
        .collect()
}

fn finish(
    source: String,
    kind: &'static str,
    files: Vec<FileRow>,
    tensors: Vec<TensorRow>,
    a: Option<&Archive>,
) -> Catalog {
    Catalog {
        source,
        kind,
        params: tensors.iter().map(|t| t.params).sum(),
        bytes: files.iter().map(|f| f.size).sum(),
        files,
        tensors,
        archive_bytes: a.map(|a| a.archive_len()),
        lossless: a.map(|a| a.is_lossless()),
        meta: a.map(|a| a.meta().clone()),
        gguf_metadata: Vec::new(),
    }
}

fn catalog_dir(dir: &Path) -> Result<Catalog, InspectError> {
    let mut files = Vec::new();
    let mut tensors = Vec::new();
    let mut gguf_metadata = Vec::new();
    // Exactly what `pack` would store: the same walk, default excludes and cache-repository
    // snapshot, with the same notes.
    let (listing, notes) = crate::archive::writer::input::listing(dir, &Default::default())
        .map_err(|e| InspectError::Input(e.to_string()))?;
    for n in notes {
        eprintln!("note: {n}");
    }
    for (rel, p, size) in listing {
        if rel.ends_with(".safetensors") {
            let layout =
                Layout::read(&p).map_err(|e| InspectError::St(p.display().to_string(), e))?;
            tensors.extend(rows(&rel, &layout, None));
        } else if file_is_gguf(&p) {
            // A directory catalog lists what it can; a GGUF that does not parse is listed
            // as a file without tensors, as pack stores it.
            if let Ok(g) = read_gguf(&p) {
                tensors.extend(gguf_rows(&rel, &g, None));
                gguf_metadata.extend(gguf_meta(&rel, &g));
            }
        }
        files.push(FileRow {
            path: rel,
            size,
            stored: None,
            sha256: None,
        });
    }
    let mut c = finish(dir.display().to_string(), "directory", files, tensors, None);
    c.gguf_metadata = gguf_metadata;
    Ok(c)
}

pub fn catalog_archive(a: &Archive) -> Result<Catalog, InspectError> {
    let mut files = Vec::new();
    let mut tensors = Vec::new();
    let mut gguf_metadata = Vec::new();
    for (fi, f) in a.files().iter().enumerate() {
        let segs = a.segment_sizes(fi);
        files.push(FileRow {
            path: f.path.clone(),
            size: f.size,
            stored: Some(segs.iter().map(|s| s.2).sum()),
            sha256: Some(hex::encode(f.sha256)),
        });
        if segs.first().map(|s| s.0) == Some(SegmentKind::GgufHeader) {
            let mut header = vec![0u8; segs[0].1 as usize];
            a.read_at(fi, 0, &mut header)?;
            let g = crate::gguf::Gguf::parse(&header, f.size)
                .map_err(|e| InspectError::Gguf(f.path.clone(), e))?;
            let stored: Vec<(u64, String)> = segs
                .iter()
                .filter(|s| s.0 == SegmentKind::Tensor)
                .map(|s| (s.2, s.3.map(|c| c.name()).unwrap_or_else(|| "empty".into())))
                .collect();
            tensors.extend(gguf_rows(&f.path, &g, Some(&stored)));
            gguf_metadata.extend(gguf_meta(&f.path, &g));
            continue;
        }
        if segs.first().map(|s| s.0) != Some(SegmentKind::StHeader) {
            continue;
        }
        let hlen = segs[0].1;
        let mut header = vec![0u8; hlen as usize];
        a.read_at(fi, 0, &mut header)?;
        let layout = Layout::from_header_json(header.get(8..).unwrap_or(&[]), hlen)
            .map_err(|e| InspectError::St(f.path.clone(), e))?;
        let stored: Vec<(u64, String)> = segs[1..]
            .iter()
            .map(|s| (s.2, s.3.map(|c| c.name()).unwrap_or_else(|| "empty".into())))
            .collect();
        let mut r = rows(&f.path, &layout, Some(&stored));
        for t in &mut r {
            t.quality = a.meta().tensor(&f.path, &t.name).cloned();
        }
        tensors.extend(r);
    }
    let mut c = finish(
        a.path().display().to_string(),
        "archive",
        files,
        tensors,
        Some(a),
    );
    c.gguf_metadata = gguf_metadata;
    Ok(c)
}

pub fn print(c: &Catalog, show_tensors: bool) {
    use super::{human, ratio};
    use crate::text::escaped;
    println!("{} ({})", escaped(&c.source), c.kind);
    if let Some(ab) = c.archive_bytes {
        let mode = if c.lossless == Some(true) {
            "lossless"
        } else {
            "lossy"
        };
        println!(
            "  {} served, archive {} ({}), {mode}",
            human(c.bytes),
            human(ab),
            ratio(c.bytes, ab)
        );
        if let Some(n) = super::expansion_note(c.bytes, ab) {
            println!("  note: {n}");
        }
        if let Some(m) = &c.meta
            && let Some(t) = &m.lossy_total
        {
            println!(
                "  preset {}: {} quantized tensors, {} (other tensors lossless)",
                escaped(m.preset.as_deref().unwrap_or("?")),
                m.lossy.len(),
                quality_text(t)
            );
        }
    }
    println!(
        "  {}, {}, {}",
        super::count(c.files.len() as u64, "file"),
        super::count(c.tensors.len() as u64, "tensor"),
        super::count(c.params, "parameter")
    );
    println!("  {:>12} {:>12}  path", "size", "stored");
    for f in &c.files {
        println!(
            "  {:>12} {:>12}  {}",
            human(f.size),
            f.stored.map(human).unwrap_or_else(|| "-".into()),
            escaped(&f.path)
        );
    }
    let mut by_dtype: std::collections::BTreeMap<&str, (u64, u64, u64, Option<u64>)> =
        Default::default();
    for t in &c.tensors {
        let e = by_dtype.entry(&t.dtype).or_default();
        e.0 += 1;
        e.1 += t.params;
        e.2 += t.bytes;
        if let Some(s) = t.stored {
            *e.3.get_or_insert(0) += s;
        }
    }
    for (d, (n, p, b, s)) in &by_dtype {
        let r = s
            .map(|s| format!("  stored {} ({})", human(s), ratio(*b, s)))
            .unwrap_or_default();
        println!(
            "  {:<6} {n:>5} tensors {p:>13} params {:>12}{r}",
            escaped(d),
            human(*b)
        );
    }
    if !c.gguf_metadata.is_empty() {
        println!("  GGUF metadata ({} keys):", c.gguf_metadata.len());
        for (file, k, v) in &c.gguf_metadata {
            let file = if c.files.len() > 1 {
                format!("{}: ", escaped(file))
            } else {
                String::new()
            };
            println!("    {file}{} = {}", escaped(k), escaped(v));
        }
    }
    if show_tensors {
        println!(
            "  {:<60} {:<6} {:<18} {:>11} {:>11} {:>8}  codec",
            "tensor", "dtype", "shape", "bytes", "stored", "ratio"
        );
        for t in &c.tensors {
            let shape = format!("{:?}", t.shape);
            let (stored, r) = match t.stored {
                Some(s) if s > 0 => (human(s), format!("{:.3}", t.bytes as f64 / s as f64)),
                _ => ("-".into(), "-".into()),
            };
            println!(
                "  {:<60} {:<6} {:<18} {:>11} {:>11} {:>8}  {}",
                escaped(&t.name),
                escaped(&t.dtype),
                shape,
                human(t.bytes),
                stored,
                r,
                escaped(t.codec.as_deref().unwrap_or("-")),
            );
            if let Some(q) = &t.quality {
                println!(
                    "      {} {}",
                    escaped(if q.preset.is_empty() { "?" } else { &q.preset }),
                    quality_text(q)
                );
            }
        }
    }
}

fn quality_text(q: &TensorQuality) -> String {
    format!(
        "{:.3} bits/weight, SNR {:.2} dB, rel. RMS {:.5}, max abs err {:.3e}",
        q.bits_per_weight, q.snr_db, q.rel_rms, q.max_abs_err
    )
}

// Arguments of `upg inspect`. No doc comment on the struct: the subcommand's about is the
// doc comment of the binary's `Cmd::Inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// A .upg archive (a path, s3://BUCKET/KEY.upg or https://HOST/PATH.upg), a model
    /// directory, a .safetensors or a GGUF file.
    pub path: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// List every tensor.
    #[arg(long)]
    pub tensors: bool,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
}

/// `upg inspect`: the catalog of an archive, a model directory or a tensor file.
pub fn run(args: InspectArgs) -> Result<u8, CliError> {
    let InspectArgs {
        path,
        json,
        tensors,
        remote,
    } = args;
    let c = if crate::storage::Location::parse(path.as_os_str())
        .map_err(|e| super::CliError::Usage(e.to_string()))?
        .is_remote()
    {
        let a = super::remote::open_archive(&path, &remote, DEFAULT_CACHE_BYTES)?;
        super::inspect::catalog_archive(&a)?
    } else {
        super::inspect::catalog(&path)?
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        super::inspect::print(&c, tensors);
    }
    Ok(0)
}
