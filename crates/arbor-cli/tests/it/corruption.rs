//! Corrupted repositories: `arbor fsck` must fail and name the damaged
//! object; `ostree fsck` confirms that each fixture really is broken.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::util::*;

const README: &str = "d54de4d5e87b6e23a70888c184728279c0e3a0d9ed8d4bb4fe2151e05f9599e8";
const DATA_BIN: &str = "3241e024a29e5bda32a4159e3109cee164c2db0288a8a5098f3759c820d3ae7b";
const XATTR_FILE: &str = "1f5505173fc2d755c852aa0780128b5dc483d47e9d94e31f5901fa9430384cff";
/// Dirtree of `/usr/share`.
const USR_SHARE_TREE: &str = "34380b51218035b0ecfdd4f31cd8c19366c6d98e97f59750ee3c7e832e0bb43f";
/// Dirmeta of `/private` (mode 0700).
const PRIVATE_META: &str = "84641b0a39d8c873690da8f32aea21cf5d6fff354f85e045f6f5ecdc8e7758d0";
/// Dirmeta shared by every 0755 directory, the root included.
const DIR_META: &str = "446a0ef11b7cc167f3b603e585c7eeeeb675faa412d5ec73f62988eb0b6c5488";

/// A fresh repository of `mode` holding the vector commit.
struct Fixture {
    _tmp: TempDir,
    repo: PathBuf,
    mode: &'static str,
}

impl Fixture {
    fn new(mode: &'static str) -> Fixture {
        let tmp = TempDir::new().unwrap();
        let tree = tmp.path().join("tree");
        make_vector_tree(&tree);
        let repo = tmp.path().join("repo");
        arbor_init(&repo, mode);
        assert_eq!(arbor_commit_vector(&repo, &tree, &[]), VECTOR_COMMIT);
        run_ok(arbor().args(["fsck", "--repo"]).arg(&repo));
        Fixture {
            _tmp: tmp,
            repo,
            mode,
        }
    }

    /// Path of a loose object; `ext` is the metadata type, or `file` for
    /// file objects (`.filez` in archive mode).
    fn object(&self, csum: &str, ext: &str) -> PathBuf {
        let ext = if ext == "file" && self.mode == "archive" {
            "filez"
        } else {
            ext
        };
        self.repo
            .join(format!("objects/{}/{}.{ext}", &csum[..2], &csum[2..]))
    }

    /// Runs `arbor fsck`: asserts failure, that every `names` string occurs
    /// in an error line, and that `--json` reports exactly the same errors.
    #[track_caller]
    fn assert_fsck_names(&self, names: &[&str]) -> String {
        let out = run_fail(arbor().args(["fsck", "--repo"]).arg(&self.repo));
        assert_eq!(out.status.code(), Some(1), "fsck exit code");
        let text = String::from_utf8(out.stdout).unwrap();
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error: ")).collect();
        assert!(
            !errors.is_empty(),
            "{}: no error lines in:\n{text}",
            self.mode
        );
        for n in names {
            assert!(
                errors.iter().any(|l| l.contains(n)),
                "{}: fsck does not name {n}:\n{text}",
                self.mode
            );
        }
        let (ok, json) = arbor_fsck_json(&self.repo);
        assert!(!ok, "fsck --json exited 0");
        let from_json: BTreeSet<String> = json["errors"]
            .as_array()
            .expect("errors array")
            .iter()
            .map(|e| {
                format!(
                    "error: {}: {}",
                    e["object"].as_str().unwrap(),
                    e["message"].as_str().unwrap()
                )
            })
            .collect();
        let from_text: BTreeSet<String> = errors.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            from_json, from_text,
            "{}: --json and text disagree",
            self.mode
        );
        text
    }

    /// Asserts the real ostree also finds the repository corrupt.
    #[track_caller]
    fn assert_ostree_fsck_fails(&self) {
        require_ostree();
        run_fail(
            ostree()
                .arg("fsck")
                .arg(format!("--repo={}", self.repo.display())),
        );
    }
}

fn flip_byte(p: &Path, at_from_end: usize) {
    let mut b = std::fs::read(p).unwrap();
    let i = b.len() - at_from_end;
    b[i] ^= 0x55;
    std::fs::write(p, b).unwrap();
}

fn truncate_half(p: &Path) {
    let b = std::fs::read(p).unwrap();
    // Rewrite in place so a bare-user object keeps its user.ostreemeta.
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.set_len(b.len() as u64 / 2).unwrap();
}

const CORRUPTIBLE_MODES: &[&str] = &["archive", "bare-user"];

#[test]
fn flipped_file_payload_is_named() {
    for mode in CORRUPTIBLE_MODES {
        let fx = Fixture::new(mode);
        // Last bytes: compressed payload (archive) or plain content.
        flip_byte(&fx.object(DATA_BIN, "file"), 3);
        let text = fx.assert_fsck_names(&[&format!("{DATA_BIN}.file")]);
        assert_eq!(
            text.lines().filter(|l| l.starts_with("error: ")).count(),
            1,
            "{text}"
        );
        fx.assert_ostree_fsck_fails();
    }
}

#[test]
fn truncated_file_object_is_named() {
    for mode in CORRUPTIBLE_MODES {
        let fx = Fixture::new(mode);
        truncate_half(&fx.object(DATA_BIN, "file"));
        fx.assert_fsck_names(&[&format!("{DATA_BIN}.file")]);
        fx.assert_ostree_fsck_fails();
        if *mode != "archive" {
            // Bare modes store no separate size, so (like ostree) checkout
            // cannot tell; only fsck can.
            continue;
        }
        // A .filez declares its size: checkout fails rather than writing a
        // short file silently.
        let dest = fx.repo.parent().unwrap().join("co");
        let out = run_fail(
            arbor()
                .args(["checkout", "-U", "--repo"])
                .arg(&fx.repo)
                .arg(VECTOR_REF)
                .arg(&dest),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(DATA_BIN), "{mode}: {err}");
    }
}

#[test]
fn deleted_dirtree_is_named() {
    for mode in CORRUPTIBLE_MODES {
        let fx = Fixture::new(mode);
        std::fs::remove_file(fx.object(USR_SHARE_TREE, "dirtree")).unwrap();
        let text = fx.assert_fsck_names(&[&format!("{USR_SHARE_TREE}.dirtree")]);
        assert!(
            text.contains("missing") && text.contains("/usr/share"),
            "{text}"
        );
        fx.assert_ostree_fsck_fails();
    }
}

#[test]
fn flipped_dirmeta_is_named() {
    for mode in CORRUPTIBLE_MODES {
        for meta in [PRIVATE_META, DIR_META] {
            let fx = Fixture::new(mode);
            flip_byte(&fx.object(meta, "dirmeta"), 1);
            fx.assert_fsck_names(&[&format!("{meta}.dirmeta")]);
            fx.assert_ostree_fsck_fails();
        }
    }
}

#[test]
fn flipped_commit_is_named() {
    for mode in CORRUPTIBLE_MODES {
        let fx = Fixture::new(mode);
        // A byte of the subject text: still a valid GVariant, wrong hash.
        let p = fx.object(VECTOR_COMMIT, "commit");
        let mut b = std::fs::read(&p).unwrap();
        let at = b
            .windows(4)
            .position(|w| w == b"Test")
            .expect("subject in commit");
        b[at] = b'B';
        std::fs::write(&p, &b).unwrap();
        fx.assert_fsck_names(&[&format!("{VECTOR_COMMIT}.commit")]);
        fx.assert_ostree_fsck_fails();
        // And a structural break (last byte: the framing offset).
        let fx = Fixture::new(mode);
        flip_byte(&fx.object(VECTOR_COMMIT, "commit"), 1);
        fx.assert_fsck_names(&[&format!("{VECTOR_COMMIT}.commit")]);
    }
}

#[test]
fn corrupt_bare_user_meta_xattr_is_named() {
    let name = c"user.ostreemeta";
    let set = |p: &Path, v: &[u8]| {
        rustix::fs::lsetxattr(p, name, v, rustix::fs::XattrFlags::empty()).expect("lsetxattr");
    };
    // Garbage: not a (uuua(ayay)) at all.
    let fx = Fixture::new("bare-user");
    set(&fx.object(README, "file"), b"\x01\x02garbage");
    fx.assert_fsck_names(&[&format!("{README}.file")]);
    fx.assert_ostree_fsck_fails();
    // Well-formed but wrong: mode 0755 instead of 0644.
    let fx = Fixture::new("bare-user");
    let meta = arbor_format::bare_user_meta_encode(0, 0, 0o100755, &[]);
    set(&fx.object(README, "file"), &meta);
    fx.assert_fsck_names(&[&format!("{README}.file")]);
    fx.assert_ostree_fsck_fails();
    // Dropped user xattrs of the xattr-carrying file.
    let fx = Fixture::new("bare-user");
    let meta = arbor_format::bare_user_meta_encode(0, 0, 0o100644, &[]);
    set(&fx.object(XATTR_FILE, "file"), &meta);
    fx.assert_fsck_names(&[&format!("{XATTR_FILE}.file")]);
    // Removed entirely.
    let fx = Fixture::new("bare-user");
    rustix::fs::lremovexattr(fx.object(README, "file"), name).unwrap();
    fx.assert_fsck_names(&[&format!("{README}.file")]);
}

#[test]
fn ref_to_missing_commit_is_named() {
    for mode in CORRUPTIBLE_MODES {
        let fx = Fixture::new(mode);
        let missing = "ab".repeat(32);
        std::fs::create_dir_all(fx.repo.join("refs/heads/broken")).unwrap();
        std::fs::write(
            fx.repo.join("refs/heads/broken/ref"),
            format!("{missing}\n"),
        )
        .unwrap();
        fx.assert_fsck_names(&["broken/ref", &missing]);
        fx.assert_ostree_fsck_fails();
    }
}

#[test]
fn deleted_commit_behind_ref_and_missing_file_are_named() {
    let fx = Fixture::new("archive");
    // Two independent problems are both listed.
    std::fs::remove_file(fx.object(README, "file")).unwrap();
    std::fs::remove_file(fx.object(PRIVATE_META, "dirmeta")).unwrap();
    let text = fx.assert_fsck_names(&[
        &format!("{README}.file"),
        &format!("{PRIVATE_META}.dirmeta"),
    ]);
    assert!(
        text.contains("/README.txt") && text.contains("/private"),
        "{text}"
    );
    fx.assert_ostree_fsck_fails();
    let fx = Fixture::new("bare-user");
    std::fs::remove_file(fx.object(VECTOR_COMMIT, "commit")).unwrap();
    fx.assert_fsck_names(&[VECTOR_REF, VECTOR_COMMIT]);
}
