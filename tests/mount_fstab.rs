//! `mount -t fuse.upg-mount` and an fstab line, through mount(8) and Debian's `mount.fuse3`, as
//! an administrator would use them (docs/MOUNT.md, issue 14).
//!
//! mount(8) runs its helper with a sanitized environment (PATH reset to
//! `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`, checked with a helper script
//! that logs its PATH), so a tempdir prepended to the caller's PATH is not seen. Instead the
//! test runs in a private mount namespace (`unshare -m`) where a tempdir holding an `upg-mount`
//! symlink to the binary under test is bind-mounted over `/usr/local/sbin`: the system is left
//! untouched and the FUSE mount lives and dies in that namespace.
//!
//! Needs root, /dev/fuse, `unshare` and `mount.fuse3`; without them it prints SKIP and why.
//! With `CI=true` a missing `mount.fuse3` is installed with `apt-get install fuse3` instead.

mod common;

use std::path::Path;
use std::process::Command;

use common::mount::skip_fuse;
use common::*;
use upg::synth::Rng;

const BIN: &str = env!("CARGO_BIN_EXE_upg-mount");

fn have_mount_fuse3() -> bool {
    ["/sbin/mount.fuse3", "/usr/sbin/mount.fuse3"]
        .iter()
        .any(|p| Path::new(p).exists())
}

/// True (after saying why) when the test cannot run here.
fn skip() -> bool {
    if skip_fuse() {
        return true;
    }
    if Command::new("unshare").arg("--help").output().is_err() {
        eprintln!("SKIP mount_fstab: no unshare(1) (util-linux) for a private mount namespace");
        return true;
    }
    if !have_mount_fuse3() {
        if std::env::var("CI").as_deref() != Ok("true") {
            eprintln!(
                "SKIP mount_fstab: mount.fuse3 is missing (Debian: apt-get install fuse3; with \
                 CI=true the test installs it)"
            );
            return true;
        }
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !apt(&["install", "-y", "-q", "fuse3"]) {
            assert!(apt(&["update", "-q"]), "CI=true: apt-get update failed");
            assert!(
                apt(&["install", "-y", "-q", "fuse3"]),
                "CI=true: apt-get install fuse3 failed"
            );
        }
        assert!(have_mount_fuse3(), "fuse3 installed but no mount.fuse3");
    }
    false
}

#[test]
fn mount_t_fuse_upg_mount_and_an_fstab_line() {
    if skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(21);
    let model = model_dir(
        tmp.path(),
        &[tensor(
            &mut rng,
            "w",
            safetensors::Dtype::BF16,
            vec![512, 256],
        )],
    );
    let archive = tmp.path().join("m.upg");
    pack_dir(&model, &archive, 64 << 10);
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("upg-mount")).unwrap();
    let mnt = tmp.path().join("mnt");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(out.join("t")).unwrap();
    std::fs::create_dir_all(out.join("fstab")).unwrap();
    let (log1, log2) = (tmp.path().join("t.log"), tmp.path().join("fstab.log"));
    let fstab = tmp.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# an fstab line as docs/MOUNT.md shows it\n{} {} fuse.upg-mount defaults,nofail,cache_size=96M,log_file={} 0 0\n",
            archive.display(),
            mnt.display(),
            log2.display()
        ),
    )
    .unwrap();
    // Over /usr/local/sbin (first on mount(8)'s PATH) when it exists, else /usr/local/bin.
    let over = if Path::new("/usr/local/sbin").is_dir() {
        "/usr/local/sbin"
    } else {
        "/usr/local/bin"
    };
    // Each step prints a marker line; `set -e` stops at the first failure, whose stderr the
    // assertion shows. Files are copied out of the mount to compare with the originals.
    let script = r#"
set -eu
mount --make-rprivate /
mount --bind "$BIN_DIR" "$OVER"
echo "== mount -t"; echo "== mount -t" >&2
mount -t fuse.upg-mount "$ARCHIVE" "$MNT" -o ro,cache_size=128M,log_file="$LOG1"
echo "flags: $(awk -v m="$MNT" '$5 == m {print $6}' /proc/self/mountinfo)"
cp "$MNT/model.safetensors" "$MNT/config.json" "$OUT/t/"
upg-mount --status "$MNT"
umount "$MNT"
echo "== fstab"; echo "== fstab" >&2
mount --fstab "$FSTAB" "$MNT"
echo "flags: $(awk -v m="$MNT" '$5 == m {print $6}' /proc/self/mountinfo)"
cp "$MNT/model.safetensors" "$MNT/sub/notes.txt" "$OUT/fstab/"
umount "$MNT"
echo "== done"; echo "== done" >&2
"#;
    let o = Command::new("unshare")
        .args(["-m", "sh", "-c", script])
        .env("BIN_DIR", &bin)
        .env("OVER", over)
        .env("ARCHIVE", &archive)
        .env("MNT", &mnt)
        .env("OUT", &out)
        .env("LOG1", &log1)
        .env("FSTAB", &fstab)
        .output()
        .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "stdout:\n{so}\nstderr:\n{se}");
    assert!(so.ends_with("== done\n"), "{so}\n{se}");
    // Both mounts read-only, nosuid, nodev.
    let flags: Vec<&str> = so
        .lines()
        .filter_map(|l| l.strip_prefix("flags: "))
        .collect();
    assert_eq!(flags.len(), 2, "{so}");
    for f in &flags {
        for want in ["ro", "nosuid", "nodev"] {
            assert!(f.split(',').any(|x| x == want), "{want} missing in {f}");
        }
    }
    // The fstab line's `defaults` reaches upg-mount as `rw` (mount.fuse3 adds dev,suid): it
    // mounts read-only anyway and says so.
    let fstab_part = se.split("== fstab").nth(1).unwrap_or_default();
    assert!(
        fstab_part.contains("mounting read-only, nosuid, nodev anyway (given: rw"),
        "stderr:\n{se}"
    );
    // The -o options took effect: the log files named are the daemon's.
    assert!(so.contains(&format!("log: {}", log1.display())), "{so}");
    assert!(log1.exists() && log2.exists(), "{so}\n{se}");
    // What was read through the mounts is what was packed.
    for (d, f) in [
        ("t", "model.safetensors"),
        ("t", "config.json"),
        ("fstab", "model.safetensors"),
        ("fstab", "notes.txt"),
    ] {
        let orig = if f == "notes.txt" {
            model.join("sub").join(f)
        } else {
            model.join(f)
        };
        assert_eq!(
            std::fs::read(out.join(d).join(f)).unwrap(),
            std::fs::read(orig).unwrap(),
            "{d}/{f}"
        );
    }
    // Nothing is left mounted in this namespace (the mounts were in the private one).
    assert!(!common::mount::is_mounted(&mnt));
}
