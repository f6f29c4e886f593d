//! `upg demo`: it ends with what to try next, and `--keep-mounted` leaves a mount (a `upg mount`
//! daemon) that serves the demo model after the demo exits.

mod common;

use std::process::Command;

use common::mount::{Guard, is_mounted, skip_fuse, umount};

fn demo(args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_upg"))
        .arg("demo")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn demo_ends_with_next_steps_and_can_stay_mounted() {
    let h = demo(&["--help"]).1;
    assert!(
        h.contains("--keep-mounted") && h.contains("umount DIR/mnt"),
        "{h}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("demo");
    let w = work.to_str().unwrap();
    // Without the flag: the verdict, then the next steps, the flag among them.
    let (code, out, err) = demo(&["--dir", w]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let tail = out
        .split("demo OK: every file read back")
        .nth(1)
        .unwrap_or_else(|| panic!("no verdict:\n{out}"));
    assert!(tail.contains("\nnext, try:\n"), "{out}");
    for want in [
        "upg pack ./your-model -o model.upg",
        "--preset q8",
        "upg-mount model.upg",
        "from_pretrained",
        "upg demo --keep-mounted",
    ] {
        assert!(tail.contains(want), "{want} missing:\n{out}");
    }
    if skip_fuse() {
        let (code, out, _) = demo(&["--dir", w, "--keep-mounted"]);
        assert_eq!(code, Some(0));
        assert!(out.contains("--keep-mounted: no mount to keep"), "{out}");
        return;
    }
    let mnt = work.join("mnt");
    let _g = Guard {
        mnt: mnt.clone(),
        child: None,
    };
    assert!(!is_mounted(&mnt));
    let (code, out, err) = demo(&["--dir", w, "--keep-mounted"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("and it stays up"), "{out}");
    assert!(
        out.contains(&format!("umount {} when done", mnt.display())),
        "{out}"
    );
    // The demo has exited; its model is still served, byte-identical.
    assert!(is_mounted(&mnt), "{out}\n{err}");
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        assert_eq!(
            std::fs::read(mnt.join(f)).unwrap(),
            std::fs::read(work.join("model").join(f)).unwrap(),
            "{f}"
        );
    }
    umount(&mnt);
    assert!(!is_mounted(&mnt));
}
