//! Hostile inputs: tar members, dirtree names and symlinks that try to make
//! arbor write outside the repository or the checkout destination.
//!
//! Every test works in an [`Arena`]: a repository, a destination and a
//! sentinel directory side by side. Afterwards the arena must hold exactly
//! the same top-level names and the sentinel exactly the same content.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use arbor_format::{Checksum, Commit, DirTree, DirTreeDir, DirTreeFile, Metadata};
use tempfile::TempDir;

use crate::util::*;

struct Arena {
    tmp: TempDir,
    repo: PathBuf,
    dest: PathBuf,
    sentinel: PathBuf,
    before: BTreeMap<PathBuf, Node>,
}

impl Arena {
    fn new(mode: &str) -> Arena {
        let tmp = TempDir::new().unwrap();
        let repo = tmp.path().join("repo");
        arbor_init(&repo, mode);
        let sentinel = tmp.path().join("sentinel");
        std::fs::create_dir(&sentinel).unwrap();
        std::fs::write(sentinel.join("keep"), "original\n").unwrap();
        let before = snapshot(&sentinel, true);
        Arena {
            dest: tmp.path().join("dest"),
            tmp,
            repo,
            sentinel,
            before,
        }
    }

    /// A scratch path that is neither repo, dest nor sentinel.
    fn input(&self, name: &str) -> PathBuf {
        self.tmp.path().join(format!("input-{name}"))
    }

    /// Nothing outside repo and dest changed: no new names next to them,
    /// nothing in the sentinel changed, nothing appeared in its parent's parent.
    #[track_caller]
    fn assert_untouched(&self) {
        let names: Vec<String> = dir_names(self.tmp.path())
            .into_iter()
            .filter(|n| !n.starts_with("input-") && n != "dest")
            .collect();
        assert_eq!(
            names,
            ["repo", "sentinel"],
            "something was written next to the destination"
        );
        assert_eq!(
            snapshot(&self.sentinel, true),
            self.before,
            "the sentinel directory changed"
        );
        let escaped = self.tmp.path().parent().unwrap().join("escape");
        assert!(!escaped.exists(), "{} was created", escaped.display());
    }

    fn commit_dir(&self, dir: &Path, branch: &str) -> String {
        arbor_commit(&self.repo, &["-b", branch, "--timestamp=@0"], dir)
    }

    fn checkout(&self, flags: &[&str], rev: &str) -> Output {
        arbor()
            .args(["checkout", "--repo"])
            .arg(&self.repo)
            .args(flags)
            .arg(rev)
            .arg(&self.dest)
            .output()
            .unwrap()
    }

    fn refs(&self) -> String {
        run_ok(arbor().args(["refs", "--repo"]).arg(&self.repo))
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A raw tar member: name, type, content, link name.
type Member<'a> = (&'a str, tar::EntryType, &'a [u8], &'a str);

/// A tar stream whose member names and link names are written raw into the
/// header, bypassing the `tar` crate's path checks.
fn raw_tar(entries: &[Member<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn commit_tar(a: &Arena, tar: &[u8]) -> Output {
    let p = a.input("hostile.tar");
    std::fs::write(&p, tar).unwrap();
    arbor()
        .args(["commit", "--repo"])
        .arg(&a.repo)
        .args(["-b", "hostile", "--tar"])
        .arg(&p)
        .output()
        .unwrap()
}

#[test]
fn tar_path_traversal_is_refused() {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let cases: &[(&str, &[Member<'_>])] = &[
        (
            "../escape",
            &[
                ("ok.txt", Regular, b"fine\n", ""),
                ("../escape", Regular, b"pwned\n", ""),
            ],
        ),
        (
            "a/../../escape",
            &[
                ("a/", Directory, b"", ""),
                ("a/../../escape", Regular, b"pwned\n", ""),
            ],
        ),
        ("/abs/path", &[("/abs/path", Regular, b"pwned\n", "")]),
        ("..", &[("..", Directory, b"", "")]),
        (
            "./../escape",
            &[
                ("./", Directory, b"", ""),
                ("./../escape", Regular, b"x", ""),
            ],
        ),
        // A hard link whose target climbs out.
        ("hl", &[("hl", Link, b"", "../../escape")]),
        // A file "through" a symlink member of the same stream.
        (
            "link",
            &[
                ("link", Symlink, b"", "/tmp"),
                ("link/escape", Regular, b"x", ""),
            ],
        ),
    ];
    for (needle, entries) in cases {
        let a = Arena::new("archive");
        let out = commit_tar(&a, &raw_tar(entries));
        assert!(!out.status.success(), "{needle}: commit succeeded");
        let err = stderr(&out);
        assert!(
            err.contains(needle),
            "{needle}: error does not name the member: {err}"
        );
        assert_eq!(a.refs(), "", "{needle}: a ref was created");
        run_ok(arbor().args(["fsck", "--repo"]).arg(&a.repo));
        a.assert_untouched();
    }
}

#[test]
fn tar_special_files_are_refused() {
    use tar::EntryType::{Block, Char, Fifo, Regular};
    for (kind, name, what) in [
        (Char, "dev/null", "character device"),
        (Block, "dev/sda", "block device"),
        (Fifo, "run/fifo", "fifo"),
    ] {
        let a = Arena::new("archive");
        let out = commit_tar(
            &a,
            &raw_tar(&[("ok.txt", Regular, b"fine\n", ""), (name, kind, b"", "")]),
        );
        assert!(!out.status.success(), "{name}: commit succeeded");
        let err = stderr(&out);
        assert!(err.contains(name) && err.contains(what), "{name}: {err}");
        assert_eq!(a.refs(), "");
        run_ok(arbor().args(["fsck", "--repo"]).arg(&a.repo));
        a.assert_untouched();
    }
}

#[test]
fn special_files_in_directory_are_refused() {
    let a = Arena::new("archive");
    let dir = a.input("tree");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("ok.txt"), "fine\n").unwrap();
    run_ok(std::process::Command::new("mkfifo").arg(dir.join("sub/my-fifo")));
    let out = arbor()
        .args(["commit", "--repo"])
        .arg(&a.repo)
        .args(["-b", "x"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("sub/my-fifo") && err.contains("fifo"), "{err}");
    assert_eq!(a.refs(), "");
    if !needs_root("committing a device node (mknod)") {
        std::fs::remove_file(dir.join("sub/my-fifo")).unwrap();
        run_ok(
            std::process::Command::new("mknod")
                .arg(dir.join("sub/null"))
                .args(["c", "1", "3"]),
        );
        let out = arbor()
            .args(["commit", "--repo"])
            .arg(&a.repo)
            .args(["-b", "x"])
            .arg(&dir)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(
            !out.status.success() && err.contains("sub/null") && err.contains("character device"),
            "{err}"
        );
    }
    run_ok(arbor().args(["fsck", "--repo"]).arg(&a.repo));
    a.assert_untouched();
}

/// Checksums (from `arbor ls --json`) of a payload commit: `/pwned` and a
/// directory `/sentinel` holding `pwned`, i.e. what a `..` entry would
/// drop next to the destination.
struct Payload {
    file: Checksum,
    root_tree: Checksum,
    root_meta: Checksum,
}

fn payload(a: &Arena) -> Payload {
    let dir = a.input("payload");
    std::fs::create_dir_all(dir.join("sentinel")).unwrap();
    std::fs::write(dir.join("pwned"), "pwned\n").unwrap();
    std::fs::write(dir.join("sentinel/pwned"), "pwned\n").unwrap();
    a.commit_dir(&dir, "payload");
    let ls: serde_json::Value = serde_json::from_str(&run_ok(
        arbor()
            .args(["ls", "--json", "-R", "--repo"])
            .arg(&a.repo)
            .arg("payload"),
    ))
    .unwrap();
    let get = |path: &str, key: &str| -> Checksum {
        let e = ls
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == path)
            .unwrap_or_else(|| panic!("{path} in {ls}"));
        e[key].as_str().unwrap().parse().unwrap()
    };
    Payload {
        file: get("/pwned", "checksum"),
        root_tree: get("/", "checksum"),
        root_meta: get("/", "meta_checksum"),
    }
}

pub(crate) fn write_object(repo: &Path, ext: &str, bytes: &[u8]) -> Checksum {
    let c = Checksum::digest(bytes);
    let hex = c.to_hex();
    let dir = repo.join("objects").join(&hex[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{}.{ext}", &hex[2..])), bytes).unwrap();
    c
}

/// Writes a commit whose root dirtree has the single entry `name` (a file
/// or a directory holding the payload), and a ref `branch` to it.
/// Returns the hostile dirtree's checksum.
fn hostile_commit(a: &Arena, p: &Payload, name: &str, as_dir: bool, branch: &str) -> Checksum {
    let mut tree = DirTree::default();
    if as_dir {
        tree.dirs.push(DirTreeDir {
            name: name.into(),
            tree: p.root_tree,
            meta: p.root_meta,
        });
    } else {
        tree.files.push(DirTreeFile {
            name: name.into(),
            checksum: p.file,
        });
    }
    // encode() does not validate: this is exactly what a hostile server sends.
    assert!(tree.validate().is_err(), "{name:?} should be invalid");
    let t = write_object(&a.repo, "dirtree", &tree.encode());
    let commit = Commit {
        metadata: Metadata::new(),
        parent: None,
        related: vec![],
        subject: "hostile".into(),
        body: String::new(),
        timestamp: 0,
        root_tree: t,
        root_meta: p.root_meta,
    };
    let c = write_object(&a.repo, "commit", &commit.encode());
    std::fs::write(a.repo.join("refs/heads").join(branch), format!("{c}\n")).unwrap();
    t
}

#[test]
fn hostile_dirtree_names_are_refused() {
    let long = "x".repeat(300);
    for name in ["..", ".", "a/b", "", long.as_str(), "../sentinel", "/tmp"] {
        for as_dir in [false, true] {
            let a = Arena::new("archive");
            let p = payload(&a);
            let t = hostile_commit(&a, &p, name, as_dir, "hostile");
            for union in [false, true] {
                std::fs::create_dir_all(&a.dest).unwrap();
                let flags: &[&str] = if union { &["--union"] } else { &[] };
                let out = a.checkout(flags, "hostile");
                let err = stderr(&out);
                assert!(
                    !out.status.success(),
                    "{name:?} dir={as_dir} union={union}: checkout succeeded"
                );
                assert!(
                    err.contains(&t.to_hex()) && err.contains("dirtree"),
                    "{name:?}: unclear error: {err}"
                );
                assert_eq!(
                    dir_names(&a.dest),
                    Vec::<String>::new(),
                    "{name:?}: wrote into dest"
                );
                a.assert_untouched();
            }
            // ls and cat refuse it as well.
            let ls = arbor()
                .args(["ls", "-R", "--repo"])
                .arg(&a.repo)
                .arg("hostile")
                .output()
                .unwrap();
            assert!(!ls.status.success(), "{name:?}: ls listed a hostile tree");
            let out = run_fail(arbor().args(["fsck", "--repo"]).arg(&a.repo));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.lines()
                    .any(|l| l.starts_with("error: ") && l.contains(&format!("{t}.dirtree"))),
                "{name:?}: fsck does not name the dirtree:\n{text}"
            );
            a.assert_untouched();
        }
    }
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[test]
fn symlink_in_commit_is_not_written_through() {
    let a = Arena::new("archive");
    let dir = a.input("tree");
    std::fs::create_dir(&dir).unwrap();
    symlink(&a.sentinel, &dir.join("link"));
    symlink(&a.sentinel.join("keep"), &dir.join("keep-link"));
    a.commit_dir(&dir, "links");
    for flags in [&[][..], &["--union"][..], &["-U", "--union"][..]] {
        let out = a.checkout(flags, "links");
        assert!(out.status.success(), "{flags:?}: {}", stderr(&out));
        assert_eq!(std::fs::read_link(a.dest.join("link")).unwrap(), a.sentinel);
        assert_eq!(
            std::fs::read_link(a.dest.join("keep-link")).unwrap(),
            a.sentinel.join("keep")
        );
        a.assert_untouched();
    }
    // A later commit with a directory `link/` over the checked-out symlink.
    let dir2 = a.input("tree2");
    std::fs::create_dir_all(dir2.join("link")).unwrap();
    std::fs::write(dir2.join("link/pwned"), "pwned\n").unwrap();
    std::fs::write(dir2.join("keep-link"), "replaced\n").unwrap();
    a.commit_dir(&dir2, "dirs");
    let out = a.checkout(&["--union"], "dirs");
    if out.status.success() {
        assert!(std::fs::symlink_metadata(a.dest.join("link"))
            .unwrap()
            .is_dir());
    }
    a.assert_untouched();
}

fn union_over_symlinks(mode: &str, flags: &[&str]) {
    // (b) DEST/sub -> sentinel, commit has sub/file.
    let a = Arena::new(mode);
    let dir = a.input("tree");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/file"), "pwned\n").unwrap();
    std::fs::write(dir.join("file"), "from commit\n").unwrap();
    std::fs::write(dir.join("keep"), "from commit\n").unwrap();
    a.commit_dir(&dir, "main");
    std::fs::create_dir(&a.dest).unwrap();
    symlink(&a.sentinel, &a.dest.join("sub"));
    let out = a.checkout(&[flags, &["--union"]].concat(), "main");
    if out.status.success() {
        assert!(
            std::fs::symlink_metadata(a.dest.join("sub"))
                .unwrap()
                .is_dir(),
            "{mode}: sub still a symlink"
        );
    } else {
        assert!(stderr(&out).contains("sub"), "{mode}: {}", stderr(&out));
    }
    a.assert_untouched();

    // (c) DEST/file -> sentinel/x (absent), DEST/keep -> sentinel/keep
    // (present): union replaces both links with the commit's files.
    std::fs::remove_dir_all(&a.dest).unwrap();
    std::fs::create_dir(&a.dest).unwrap();
    symlink(&a.sentinel.join("x"), &a.dest.join("file"));
    symlink(&a.sentinel.join("keep"), &a.dest.join("keep"));
    std::fs::create_dir(a.dest.join("sub")).unwrap();
    let out = a.checkout(&[flags, &["--union"]].concat(), "main");
    assert!(out.status.success(), "{mode}: {}", stderr(&out));
    for f in ["file", "keep"] {
        let p = a.dest.join(f);
        assert!(
            std::fs::symlink_metadata(&p).unwrap().is_file(),
            "{mode}: {f} is still a symlink"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "from commit\n");
    }
    assert_eq!(
        std::fs::read_to_string(a.dest.join("sub/file")).unwrap(),
        "pwned\n"
    );
    a.assert_untouched();
}

#[test]
fn union_over_symlinks_archive_copy() {
    union_over_symlinks("archive", &[]);
}

#[test]
fn union_over_symlinks_bare_user_hardlink() {
    union_over_symlinks("bare-user", &["-H", "-U"]);
}

#[test]
fn non_empty_destination_needs_union() {
    let a = Arena::new("archive");
    let dir = a.input("tree");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("new"), "new\n").unwrap();
    a.commit_dir(&dir, "main");
    std::fs::create_dir(&a.dest).unwrap();
    std::fs::write(a.dest.join("existing"), "mine\n").unwrap();
    let out = a.checkout(&[], "main");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(dir_names(&a.dest), ["existing"]);
    assert_eq!(
        std::fs::read_to_string(a.dest.join("existing")).unwrap(),
        "mine\n"
    );
    // A file as destination is refused too, and left alone.
    let f = a.input("file-dest");
    std::fs::write(&f, "file\n").unwrap();
    let out = arbor()
        .args(["checkout", "--repo"])
        .arg(&a.repo)
        .arg("main")
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "file\n");
    // With --union it works and keeps the existing file.
    let out = a.checkout(&["--union"], "main");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(dir_names(&a.dest), ["existing", "new"]);
    a.assert_untouched();
}

#[test]
fn subpath_with_dotdot_is_refused() {
    let a = Arena::new("archive");
    let dir = a.input("tree");
    std::fs::create_dir_all(dir.join("usr")).unwrap();
    std::fs::write(dir.join("usr/f"), "f\n").unwrap();
    a.commit_dir(&dir, "main");
    for sp in ["..", "../..", "/usr/../..", "usr/../usr"] {
        let out = a.checkout(&["--subpath", sp], "main");
        assert!(!out.status.success(), "--subpath {sp} succeeded");
        assert!(stderr(&out).contains(sp), "{sp}: {}", stderr(&out));
        a.assert_untouched();
    }
    let out = a.checkout(&["--subpath", "/usr"], "main");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(dir_names(&a.dest), ["f"]);
}

/// A raw deflate stream of `total` zero bytes (a multiple of 1 MiB), about
/// 1 KiB per MiB: one sync-flushed 1 MiB block (byte-aligned, not final,
/// only distance-1 back-references) repeated, then an empty final block.
pub(crate) fn deflate_zeros(total: usize) -> Vec<u8> {
    use flate2::{write::DeflateEncoder, Compression};
    use std::io::Write;
    const CHUNK: usize = 1 << 20;
    assert_eq!(total % CHUNK, 0);
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::best());
    enc.write_all(&vec![0u8; CHUNK]).unwrap();
    enc.flush().unwrap(); // Z_SYNC_FLUSH: ends on a byte boundary
    let block = std::mem::take(enc.get_mut());
    let mut out = Vec::with_capacity(block.len() * (total / CHUNK) + 2);
    for _ in 0..total / CHUNK {
        out.extend_from_slice(&block);
    }
    out.extend_from_slice(&[0x03, 0x00]); // final, fixed Huffman, end-of-block
    out
}

/// Total size of the regular files under `p` (0 if it does not exist).
fn tree_bytes(p: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if md.is_dir() {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| tree_bytes(&e.unwrap().path()))
            .sum()
    } else {
        md.len()
    }
}

/// An archive object whose header declares 2 bytes but whose payload
/// inflates to 200 MiB: checkout and cat stop reading at the declared size
/// (no 200 MiB file, no 200 MiB on stdout), checkout removes the partial
/// file, and all three name the object.
#[test]
fn inflating_object_is_cut_off() {
    use arbor_format::ArchiveHeader;
    const BOMB: usize = 200 << 20;
    const LIMIT: u64 = 1 << 20;
    let a = Arena::new("archive");
    let dir = a.input("tree");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("two"), "hi").unwrap();
    std::fs::write(dir.join("other.txt"), "fine\n").unwrap();
    a.commit_dir(&dir, "bomb");
    let ls: serde_json::Value = serde_json::from_str(&run_ok(
        arbor()
            .args(["ls", "--json", "-R", "--repo"])
            .arg(&a.repo)
            .arg("bomb"),
    ))
    .unwrap();
    let hex = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/two")
        .and_then(|e| e["checksum"].as_str())
        .unwrap_or_else(|| panic!("/two in {ls}"))
        .to_string();
    let obj = a
        .repo
        .join(format!("objects/{}/{}.filez", &hex[..2], &hex[2..]));
    let orig = std::fs::read(&obj).unwrap();
    let (h, end) = ArchiveHeader::decode_prefixed(&orig).unwrap();
    assert_eq!(h.size, 2);
    let mut bomb = orig[..end].to_vec();
    let payload = deflate_zeros(BOMB);
    assert!(payload.len() < 1 << 20, "bomb is {} bytes", payload.len());
    // The payload really is a well-formed stream inflating far past 2 bytes
    // (checked on a prefix: the stream repeats one block).
    let mut prefix = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(flate2::read::DeflateDecoder::new(&payload[..]), 3 << 20),
        &mut prefix,
    )
    .unwrap();
    assert!(prefix.len() == 3 << 20 && prefix.iter().all(|b| *b == 0));
    bomb.extend_from_slice(&payload);
    std::fs::remove_file(&obj).unwrap();
    std::fs::write(&obj, &bomb).unwrap();

    // Under a file size limit of 2 MiB (`ulimit -f` counts 512- or
    // 1024-byte blocks): writing past it kills with SIGXFSZ, so an
    // unbounded copy cannot pass for a clean error.
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -f 2048 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_arbor"))
        .args(["checkout", "-U", "--repo"])
        .arg(&a.repo)
        .arg("bomb")
        .arg(&a.dest)
        .env_remove("ARBOR_FAILPOINT")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "checkout of the bomb: {}; {}",
        out.status,
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&hex),
        "checkout error does not name the object: {}",
        stderr(&out)
    );
    assert!(
        std::fs::symlink_metadata(a.dest.join("two")).is_err(),
        "the partial file was left in the destination"
    );
    let written = tree_bytes(&a.dest);
    assert!(written < LIMIT, "checkout wrote {written} bytes");
    a.assert_untouched();

    let out = arbor()
        .args(["cat", "--repo"])
        .arg(&a.repo)
        .args(["bomb", "/two"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "cat of the bomb succeeded");
    assert!(
        (out.stdout.len() as u64) < LIMIT,
        "cat wrote {} bytes",
        out.stdout.len()
    );
    assert!(stderr(&out).contains(&hex), "cat: {}", stderr(&out));

    let (ok, report) = arbor_fsck_json(&a.repo);
    assert!(!ok, "fsck accepted the bomb: {report}");
    let errors = report["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e.to_string().contains(&hex)),
        "fsck does not name {hex}: {report}"
    );
    a.assert_untouched();
}
