//! `arbor pull` over HTTP from a test server: every repository mode,
//! incremental pulls, depth, commit-only and dry runs, retries; and a
//! hostile server: wrong, truncated, oversized and inflating bodies,
//! objects under another name, dirtrees with dangerous names, downgrades.
//! Each attack is refused naming the object, and afterwards the repository
//! is fsck-clean, the ref untouched and nothing written outside it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use arbor_format::{ArchiveHeader, Checksum, Commit, DirTree, DirTreeFile, Metadata};
use tempfile::TempDir;

use crate::testserver::{Reply, TestServer};
use crate::util::*;

/// A source archive repository with `os/main` at v1 then v2 (v2's parent is
/// v1), served by a [`TestServer`].
struct Fixture {
    td: TempDir,
    src: PathBuf,
    v1: String,
    v2: String,
    tree_v1: PathBuf,
    tree_v2: PathBuf,
    server: TestServer,
}

fn modify(t: &Path) {
    std::fs::write(t.join("README.txt"), "Hello, changed!\n").unwrap();
    std::fs::write(t.join("added.txt"), "new file\n").unwrap();
    std::fs::create_dir_all(t.join("newdir/sub")).unwrap();
    std::fs::write(t.join("newdir/sub/deep.txt"), vec![b'q'; 200_000]).unwrap();
}

const COMMON: &[&str] = &["--owner-uid=0", "--owner-gid=0", "--canonical-permissions"];

impl Fixture {
    fn new() -> Fixture {
        let td = TempDir::new().unwrap();
        let src = td.path().join("src");
        arbor_init(&src, "archive");
        let tree_v1 = td.path().join("tree-v1");
        make_vector_tree(&tree_v1);
        let v1 = arbor_commit(
            &src,
            &[COMMON, &["-b", "os/main", "--timestamp=@1600000000"]].concat(),
            &tree_v1,
        );
        let tree_v2 = td.path().join("tree-v2");
        make_vector_tree(&tree_v2);
        modify(&tree_v2);
        let v2 = arbor_commit(
            &src,
            &[COMMON, &["-b", "os/main", "--timestamp=@1700000000"]].concat(),
            &tree_v2,
        );
        let server = TestServer::start(&src);
        Fixture {
            td,
            src,
            v1,
            v2,
            tree_v1,
            tree_v2,
            server,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.td.path().join(name)
    }

    /// A fresh repository of `mode` with remote `origin` at the server.
    fn dest(&self, name: &str, mode: &str, extra: &[&str]) -> PathBuf {
        let d = self.path(name);
        arbor_init(&d, mode);
        run_ok(
            arbor()
                .args(["remote", "add", "--repo"])
                .arg(&d)
                .args(["--no-gpg-verify"])
                .args(extra)
                .arg("origin")
                .arg(self.server.url()),
        );
        d
    }

    /// Object requests (paths under objects/) made so far.
    fn object_requests(&self) -> Vec<String> {
        self.server
            .requests()
            .into_iter()
            .filter(|p| p.starts_with("/objects/"))
            .collect()
    }
}

fn pull(dest: &Path, args: &[&str]) -> std::process::Command {
    let mut c = arbor();
    c.args(["pull", "--repo"]).arg(dest).args(args);
    c
}

fn rev(repo: &Path, r: &str) -> Option<String> {
    let out = arbor()
        .args(["rev-parse", "--repo"])
        .arg(repo)
        .arg(r)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[track_caller]
fn assert_clean(repo: &Path, what: &str) {
    let (ok, report) = arbor_fsck_json(repo);
    assert!(ok, "{what}: arbor fsck: {report}");
    // A finished pull leaves no staging behind; a failed one may leave its
    // verified objects for the next run, but never a temporary file.
    for (dir, name) in staged(repo) {
        assert!(
            dir.len() == 2 && !name.starts_with('.') && name.contains('.'),
            "{what}: temporary file left: {dir}/{name}"
        );
    }
}

/// Files left in arbor's staging directories, as (XX, NAME).
fn staged(repo: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(repo.join("tmp")) else {
        return out;
    };
    for s in rd {
        let s = s.unwrap();
        if !s
            .file_name()
            .to_string_lossy()
            .starts_with("arbor-staging-")
        {
            continue;
        }
        for e in std::fs::read_dir(s.path()).unwrap() {
            let e = e.unwrap();
            let top = e.file_name().to_string_lossy().into_owned();
            if !e.file_type().unwrap().is_dir() {
                out.push((String::new(), top));
                continue;
            }
            for f in std::fs::read_dir(e.path()).unwrap() {
                out.push((
                    top.clone(),
                    f.unwrap().file_name().to_string_lossy().into_owned(),
                ));
            }
        }
    }
    out
}

/// The next transaction takes over a failed pull's staging: after any
/// successful transaction nothing is left in tmp/ and fsck is clean.
#[track_caller]
fn assert_leftovers_taken_over(repo: &Path, scratch: &Path) {
    std::fs::create_dir_all(scratch).unwrap();
    arbor_commit(repo, &["-b", "after-failure", "--timestamp=@1"], scratch);
    assert!(staged(repo).is_empty(), "{:?}", staged(repo));
    let left: Vec<String> = dir_names(&repo.join("tmp"))
        .into_iter()
        .filter(|n| n.starts_with("arbor-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let (ok, report) = arbor_fsck_json(repo);
    assert!(ok, "{report}");
}

fn checkout(repo: &Path, rev: &str, dest: &Path) {
    run_ok(
        arbor()
            .args(["checkout", "--repo"])
            .arg(repo)
            .arg(rev)
            .arg(dest),
    );
}

#[test]
fn pull_over_http_into_every_mode() {
    require_ostree();
    let f = Fixture::new();
    for mode in ["archive", "bare-user", "bare-user-only"] {
        let dest = f.dest(&format!("dest-{mode}"), mode, &[]);
        let out = run_ok(&mut pull(&dest, &["origin", "os/main"]));
        assert!(out.contains("content objects fetched"), "{out}");
        assert_eq!(rev(&dest, "origin:os/main").as_deref(), Some(f.v2.as_str()));
        // Remote refs land under refs/remotes/REMOTE/, not refs/heads/.
        assert!(dest.join("refs/remotes/origin/os/main").is_file());
        assert!(!dest.join("refs/heads/os/main").exists());
        assert_clean(&dest, mode);
        ostree_ok("fsck", &dest, &[]);
        let co = f.path(&format!("co-{mode}"));
        checkout(&dest, "origin:os/main", &co);
        assert_same_tree(&f.tree_v2, &co, false);
    }
    // Into an archive repository the .filez are kept byte for byte.
    let a = f.path("dest-archive");
    for obj in object_files(&f.src) {
        if obj.ends_with(".filez") && a.join("objects").join(&obj).exists() {
            assert_eq!(
                std::fs::read(f.src.join("objects").join(&obj)).unwrap(),
                std::fs::read(a.join("objects").join(&obj)).unwrap(),
                "{obj}"
            );
        }
    }
}

/// Every file under `objects/`, relative.
fn object_files(repo: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in std::fs::read_dir(repo.join("objects")).unwrap() {
        let d = d.unwrap();
        for o in std::fs::read_dir(d.path()).unwrap() {
            out.insert(format!(
                "{}/{}",
                d.file_name().to_string_lossy(),
                o.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    out
}

/// v1, then v1→v2: the second pull requests only objects it lacks, and no
/// object is ever requested twice.
#[test]
fn incremental_pull_fetches_only_missing_objects() {
    let f = Fixture::new();
    let dest = f.dest("dest", "bare-user", &[]);
    run_ok(&mut pull(&dest, &["origin", &f.v1]));
    assert_eq!(rev(&dest, &f.v1).as_deref(), Some(f.v1.as_str()));
    // Pulling a checksum moves no ref.
    assert_eq!(rev(&dest, "origin:os/main"), None);
    let first: Vec<String> = f.object_requests();
    let unique: BTreeSet<&String> = first.iter().collect();
    assert_eq!(unique.len(), first.len(), "an object was requested twice");
    let before = object_files(&dest);
    run_ok(&mut pull(&dest, &["origin", "os/main"]));
    let second: Vec<String> = f.object_requests()[first.len()..].to_vec();
    let after = object_files(&dest);
    // Requests of the second pull: exactly the new objects, plus the
    // commit's detached metadata (always re-fetched, as ostree does).
    let new: BTreeSet<String> = after.difference(&before).cloned().collect();
    let requested: BTreeSet<String> = second
        .iter()
        .filter(|p| !p.ends_with(".commitmeta"))
        .map(|p| p.trim_start_matches("/objects/").replace(".filez", ".file"))
        .collect();
    assert_eq!(requested, new);
    assert_eq!(second.len(), new.len() + 1, "{second:?}");
    assert_clean(&dest, "after v1 -> v2");
}

#[test]
fn depth_commit_metadata_only_and_dry_run() {
    let f = Fixture::new();
    // --dry-run: the objects and bytes of the real pull, nothing written.
    let dry = f.dest("dry", "bare-user", &[]);
    let out = run_ok(&mut pull(
        &dry,
        &["--json", "--dry-run", "origin", "os/main"],
    ));
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["dry_run"], true);
    // Plain http:// stays on HTTP/1.1 keep-alive.
    assert_eq!(d["protocols"], serde_json::json!(["HTTP/1.1"]), "{d}");
    assert!(object_files(&dry).is_empty(), "dry run wrote objects");
    assert_eq!(rev(&dry, "origin:os/main"), None);
    let out = run_ok(&mut pull(&dry, &["--json", "origin", "os/main"]));
    let real: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["metadata_fetched"], real["metadata_fetched"]);
    assert_eq!(d["content_fetched"], real["content_fetched"]);
    assert_eq!(d["content_bytes"], real["content_bytes"]);
    let human = run_ok(&mut pull(
        &f.dest("dry2", "archive", &[]),
        &["--dry-run", "origin", "os/main"],
    ));
    assert!(human.starts_with("Would fetch "), "{human}");

    // --depth=1 brings the parent with its tree.
    let deep = f.dest("deep", "archive", &[]);
    run_ok(&mut pull(&deep, &["--depth=1", "origin", "os/main"]));
    let co = f.path("co-v1");
    checkout(&deep, &f.v1, &co);
    assert_same_tree(&f.tree_v1, &co, false);
    assert_clean(&deep, "depth 1");
    // Depth beyond the history is fine.
    run_ok(&mut pull(&deep, &["--depth=-1", "origin", "os/main"]));

    // --commit-metadata-only: the commit, marked partial; fsck accepts it;
    // a full pull then completes it and drops the marker.
    let meta = f.dest("meta", "bare-user", &[]);
    run_ok(&mut pull(
        &meta,
        &["--commit-metadata-only", "origin", "os/main"],
    ));
    assert_eq!(rev(&meta, "origin:os/main").as_deref(), Some(f.v2.as_str()));
    let marker = meta.join(format!("state/{}.commitpartial", f.v2));
    assert!(marker.exists());
    assert_eq!(
        object_files(&meta).len(),
        1,
        "only the commit: {:?}",
        object_files(&meta)
    );
    assert_clean(&meta, "commit metadata only");
    run_ok(&mut pull(&meta, &["origin", "os/main"]));
    assert!(!marker.exists(), "partial marker left after a full pull");
    let co = f.path("co-meta");
    checkout(&meta, "origin:os/main", &co);
    assert_same_tree(&f.tree_v2, &co, false);
    assert_clean(&meta, "completed");
}

/// Transient server errors are retried with backoff; a server that keeps
/// failing gives a clear error once the retries are spent.
#[test]
fn transient_errors_are_retried_then_reported() {
    let f = Fixture::new();
    let commit_path = format!("objects/{}/{}.commit", &f.v2[..2], &f.v2[2..]);
    f.server.set(&commit_path, Reply::Status(503));
    let dest = f.dest("dest", "bare-user", &["--set=n-network-retries=2"]);
    let out = run_fail(&mut pull(&dest, &["origin", "os/main"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed after 3 attempts"), "{err}");
    assert!(err.contains(&f.v2), "{err}");
    let n = f
        .server
        .requests()
        .iter()
        .filter(|p| p.ends_with(".commit"))
        .count();
    assert_eq!(n, 3, "one try and two retries");
    assert_eq!(rev(&dest, "origin:os/main"), None);
    assert_clean(&dest, "after 503s");
    // 404 is final at once (not retried) and names the object.
    f.server.set(&commit_path, Reply::Status(404));
    let out = run_fail(&mut pull(&dest, &["origin", "os/main"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not found on the remote") && err.contains(&f.v2),
        "{err}"
    );
}

/// A checksum of one file object of `rev` in `repo`, with its bytes.
fn some_file(repo: &Path, rev: &str, path: &str) -> String {
    let ls: serde_json::Value = serde_json::from_str(&run_ok(
        arbor()
            .args(["ls", "--json", "-R", "--repo"])
            .arg(repo)
            .arg(rev),
    ))
    .unwrap();
    ls.as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == path)
        .and_then(|e| e["checksum"].as_str())
        .unwrap_or_else(|| panic!("{path} in {ls}"))
        .to_string()
}

fn filez_path(c: &str) -> String {
    format!("objects/{}/{}.filez", &c[..2], &c[2..])
}

/// Runs a pull that must fail; checks the error names `object` and that the
/// destination is clean, its ref unset, and nothing was written outside it.
#[track_caller]
fn refused(f: &Fixture, mode: &str, object: &str, expect: &str) {
    let name = format!("dest-{}", f.server.requests().len());
    let dest = f.dest(&name, mode, &["--set=n-network-retries=1"]);
    let outside_before = dir_names(f.td.path());
    // Any temporary file the pull made outside the repository would show.
    let tmpdir = f.path(&format!("{name}-TMPDIR"));
    std::fs::create_dir_all(&tmpdir).unwrap();
    let out = run_fail(pull(&dest, &["origin", "os/main"]).env("TMPDIR", &tmpdir));
    assert!(dir_names(&tmpdir).is_empty(), "wrote into $TMPDIR");
    std::fs::remove_dir(&tmpdir).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("REFUSED({mode}): {err}");
    assert!(err.contains(object), "error does not name {object}: {err}");
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    assert_eq!(rev(&dest, "origin:os/main"), None, "{err}");
    // Nothing reached objects/, and the refused object is not staged.
    assert!(object_files(&dest).is_empty(), "{:?}", object_files(&dest));
    assert!(
        !staged(&dest)
            .iter()
            .any(|(d, n)| format!("{d}{n}").starts_with(object)),
        "the refused object {object} was staged"
    );
    assert_clean(&dest, &err);
    assert_eq!(
        dir_names(f.td.path()),
        outside_before,
        "wrote outside the repo"
    );
    assert!(
        tree_size(&dest) < 4 << 20,
        "{} bytes in the repository after {expect}",
        tree_size(&dest)
    );
    assert_leftovers_taken_over(&dest, &f.path(&format!("{name}-empty")));
}

fn tree_size(p: &Path) -> u64 {
    let md = std::fs::symlink_metadata(p).unwrap();
    if md.is_dir() {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| tree_size(&e.unwrap().path()))
            .sum()
    } else {
        md.len()
    }
}

#[test]
fn hostile_object_bodies_are_refused() {
    let f = Fixture::new();
    let readme = some_file(&f.src, "os/main", "/README.txt");
    let deep = some_file(&f.src, "os/main", "/newdir/sub/deep.txt");
    let good = std::fs::read(f.src.join(filez_path(&readme))).unwrap();
    for mode in ["archive", "bare-user"] {
        // Wrong bytes: another object's valid .filez under this name.
        let other = std::fs::read(f.src.join(filez_path(&deep))).unwrap();
        f.server.set(&filez_path(&readme), Reply::Bytes(other));
        refused(&f, mode, &readme, "hashes to");
        // Flipped payload byte.
        let mut bad = good.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x55;
        f.server.set(&filez_path(&readme), Reply::Bytes(bad));
        refused(&f, mode, &readme, "hashes to");
        // A body cut short (retried, then reported).
        f.server.set(
            &filez_path(&readme),
            Reply::Truncated {
                declared: good.len() as u64,
                body: good[..good.len() / 2].to_vec(),
            },
        );
        refused(&f, mode, &readme, "failed after 2 attempts");
        // Far more than the object can be: a valid header, then an endless
        // stream of empty stored deflate blocks (no output, never ending).
        let (mut hdr, end) = ArchiveHeader::decode_prefixed(&good).unwrap();
        f.server.set(
            &filez_path(&readme),
            Reply::Flood {
                declared: None,
                prefix: good[..end].to_vec(),
                pattern: vec![0x00, 0x00, 0x00, 0xff, 0xff],
                len: 1 << 30,
            },
        );
        refused(&f, mode, &readme, "larger than");
        // A deflate bomb: the header says 2 bytes, the payload inflates to
        // 200 MiB.
        hdr.size = 2;
        let mut bomb = hdr.encode_prefixed();
        bomb.extend(deflate_zeros(200 << 20));
        f.server.set(&filez_path(&readme), Reply::Bytes(bomb));
        refused(&f, mode, &readme, "larger than");
        // A bomb inside the compressed-size bound: the header says 1 MiB,
        // ~0.5 MiB of deflate inflates to 512 MiB; inflating stops at 1 MiB.
        hdr.size = 1 << 20;
        let mut bomb = hdr.encode_prefixed();
        bomb.extend(deflate_zeros(512 << 20));
        assert!((bomb.len() as u64) < (1 << 20) + (1 << 20) / 1000 + 1024);
        f.server.set(&filez_path(&readme), Reply::Bytes(bomb));
        refused(&f, mode, &readme, "declared size");
        // A size near u64::MAX in the header.
        hdr.size = u64::MAX - 1;
        let mut huge = hdr.encode_prefixed();
        huge.extend_from_slice(&good[end..]);
        f.server.set(&filez_path(&readme), Reply::Bytes(huge));
        refused(&f, mode, &readme, "accepted");
        if mode == "archive" {
            // Bytes after the compressed content would be stored verbatim.
            let mut trailing = good.clone();
            trailing.extend_from_slice(b"ATTACKER-CONTROLLED-TRAILING-BYTES");
            f.server.set(&filez_path(&readme), Reply::Bytes(trailing));
            refused(&f, mode, &readme, "data after the end");
        }
        f.server
            .set(&filez_path(&readme), Reply::Bytes(good.clone()));
    }
    // Metadata: a commit announced as 1 GiB is refused before reading; one
    // streaming without end is cut at the metadata limit.
    let commit_path = format!("objects/{}/{}.commit", &f.v2[..2], &f.v2[2..]);
    f.server.set(
        &commit_path,
        Reply::Flood {
            declared: Some(1 << 30),
            prefix: vec![],
            pattern: vec![b'x'],
            len: 1 << 20,
        },
    );
    refused(&f, "bare-user", &f.v2, "more than");
    f.server.set(
        &commit_path,
        Reply::Flood {
            declared: None,
            prefix: vec![],
            pattern: vec![b'x'],
            len: 200 << 20,
        },
    );
    refused(&f, "bare-user", &f.v2, "larger than");
    // An object served under another checksum: v1's commit as v2's.
    let v1_bytes = std::fs::read(f.src.join(format!(
        "objects/{}/{}.commit",
        &f.v1[..2],
        &f.v1[2..]
    )))
    .unwrap();
    f.server.set(&commit_path, Reply::Bytes(v1_bytes));
    refused(&f, "bare-user", &f.v2, "hashes to");
}

/// A raw deflate stream of `total` zero bytes (multiple of 1 MiB).
fn deflate_zeros(total: usize) -> Vec<u8> {
    use flate2::{write::DeflateEncoder, Compression};
    use std::io::Write;
    const CHUNK: usize = 1 << 20;
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::best());
    enc.write_all(&vec![0u8; CHUNK]).unwrap();
    enc.flush().unwrap();
    let block = std::mem::take(enc.get_mut());
    let mut out = Vec::new();
    for _ in 0..total / CHUNK {
        out.extend_from_slice(&block);
    }
    out.extend_from_slice(&[0x03, 0x00]);
    out
}

fn write_object(repo: &Path, ext: &str, bytes: &[u8]) -> Checksum {
    let c = Checksum::digest(bytes);
    let hex = c.to_hex();
    let dir = repo.join("objects").join(&hex[..2]);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{}.{ext}", &hex[2..])), bytes).unwrap();
    c
}

/// Dirtrees naming `..`, `/x`, `a/b`, `.` or the empty string: the pull
/// refuses the dirtree (by checksum) before fetching what it references.
#[test]
fn hostile_dirtree_names_are_refused() {
    let f = Fixture::new();
    let readme = some_file(&f.src, "os/main", "/README.txt");
    let root_meta = {
        let show: serde_json::Value = serde_json::from_str(&run_ok(
            arbor()
                .args(["ls", "--json", "-R", "--repo"])
                .arg(&f.src)
                .args(["os/main"]),
        ))
        .unwrap();
        show.as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == "/")
            .and_then(|e| e["meta_checksum"].as_str())
            .unwrap()
            .to_string()
    };
    for name in ["..", "/x", "a/b", ".", ""] {
        let tree = DirTree {
            files: vec![DirTreeFile {
                name: name.into(),
                checksum: readme.parse().unwrap(),
            }],
            dirs: vec![],
        };
        let t = write_object(&f.src, "dirtree", &tree.encode());
        let commit = Commit {
            metadata: Metadata::new(),
            parent: None,
            related: vec![],
            subject: "hostile".into(),
            body: String::new(),
            timestamp: 1_800_000_000,
            root_tree: t,
            root_meta: root_meta.parse().unwrap(),
        };
        let c = write_object(&f.src, "commit", &commit.encode());
        std::fs::write(f.src.join("refs/heads/os/main"), format!("{c}\n")).unwrap();
        refused(&f, "bare-user", &t.to_hex(), "Invalid dirtree");
        let asked = f.server.requests();
        assert!(
            !asked.iter().any(|p| p.contains(&readme[2..])),
            "fetched a file of a refused dirtree"
        );
    }
}

/// A pull that would move a ref to an older commit is refused unless
/// --allow-downgrade.
#[test]
fn downgrade_is_refused_unless_allowed() {
    let f = Fixture::new();
    let dest = f.dest("dest", "bare-user", &[]);
    run_ok(&mut pull(&dest, &["origin", "os/main"]));
    assert_eq!(rev(&dest, "origin:os/main").as_deref(), Some(f.v2.as_str()));
    // The server now offers v1 (older) under the same ref.
    std::fs::write(f.src.join("refs/heads/os/main"), format!("{}\n", f.v1)).unwrap();
    let out = run_fail(&mut pull(&dest, &["origin", "os/main"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("downgrade") && err.contains(&f.v1), "{err}");
    assert_eq!(rev(&dest, "origin:os/main").as_deref(), Some(f.v2.as_str()));
    assert_clean(&dest, "after a refused downgrade");
    run_ok(&mut pull(
        &dest,
        &["--allow-downgrade", "origin", "os/main"],
    ));
    assert_eq!(rev(&dest, "origin:os/main").as_deref(), Some(f.v1.as_str()));
    assert_clean(&dest, "after an allowed downgrade");
}

/// Without `--no-gpg-verify` the remote asks for GPG, which arbor does not
/// check: refused with an explanation, never silently skipped.
#[test]
fn gpg_verification_is_not_silently_skipped() {
    let f = Fixture::new();
    let d = f.path("gpg");
    arbor_init(&d, "bare-user");
    run_ok(
        arbor()
            .args(["remote", "add", "--repo"])
            .arg(&d)
            .arg("origin")
            .arg(f.server.url()),
    );
    let out = run_fail(&mut pull(&d, &["origin", "os/main"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gpg-verify"), "{err}");
    assert!(f.server.requests().is_empty(), "fetched before refusing");
}

/// `file://` remotes work like HTTP ones (ostree supports them too).
#[test]
fn pull_from_a_file_url() {
    let f = Fixture::new();
    let d = f.path("file-dest");
    arbor_init(&d, "bare-user");
    let url = format!("file://{}", f.src.display());
    run_ok(arbor().args(["remote", "add", "--repo"]).arg(&d).args([
        "--no-gpg-verify",
        "local",
        &url,
    ]));
    run_ok(&mut pull(&d, &["--depth=1", "local", "os/main"]));
    assert_eq!(rev(&d, "local:os/main").as_deref(), Some(f.v2.as_str()));
    assert_eq!(rev(&d, &f.v1).as_deref(), Some(f.v1.as_str()));
    assert_clean(&d, "file://");
    assert!(f.server.requests().is_empty());
}

/// On a terminal the pull shows objects done/total, bytes and rate; off a
/// terminal, nothing on stderr.
#[test]
fn progress_bar_only_on_a_terminal() {
    let f = Fixture::new();
    // Enough objects for the pull to last a few redraws (20 per second).
    let big = f.path("big");
    for d in 0..12 {
        std::fs::create_dir_all(big.join(format!("d{d}"))).unwrap();
        for i in 0..100 {
            std::fs::write(
                big.join(format!("d{d}/{i}")),
                format!("{d} {i}\n").repeat(50),
            )
            .unwrap();
        }
    }
    arbor_commit(
        &f.src,
        &[COMMON, &["-b", "os/main", "--timestamp=@1800000000"]].concat(),
        &big,
    );
    let d = f.dest("tty", "bare-user", &[]);
    let cmd = format!(
        "{} pull --repo {} origin os/main",
        env!("CARGO_BIN_EXE_arbor"),
        d.display()
    );
    let out = run_ok(std::process::Command::new("script").args(["-qfec", &cmd, "/dev/null"]));
    assert!(out.contains("Receiving objects"), "{out:?}");
    assert!(out.contains("/s"), "no rate in {out:?}");
    assert!(out.contains("content objects fetched"), "{out:?}");
    let d2 = f.dest("notty", "bare-user", &[]);
    let o = pull(&d2, &["origin", "os/main"]).output().unwrap();
    assert!(o.status.success());
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// arbor's own server and puller together, as in the quickstart: every
/// request answered at once (no retry, no timeout), several times over.
/// (Under tiny_http some keep-alive requests waited for the 60 s timeout.)
#[test]
fn pull_from_arbor_serve_needs_no_retries() {
    let f = Fixture::new();
    let serve = ArborServe::start(&f.src);
    for i in 0..4 {
        let d = f.path(&format!("from-serve-{i}"));
        arbor_init(&d, "bare-user");
        run_ok(arbor().args(["remote", "add", "--repo"]).arg(&d).args([
            "--no-gpg-verify",
            "origin",
            serve.url(),
        ]));
        let started = std::time::Instant::now();
        let out = pull(&d, &["--depth=1", "origin", "os/main"])
            .env("ARBOR_LOG", "debug")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(!err.contains("retrying"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert_eq!(rev(&d, "origin:os/main").as_deref(), Some(f.v2.as_str()));
    }
}

/// ostree's binding rules: a commit bound to `os/main` is refused under
/// another ref name; a remote with a collection ID needs commits bound to
/// that collection (and carrying ref bindings).
#[test]
fn ref_and_collection_bindings_are_enforced() {
    let f = Fixture::new();
    // The same (os/main-bound) commit offered as os/other.
    std::fs::create_dir_all(f.src.join("refs/heads/os")).unwrap();
    std::fs::write(f.src.join("refs/heads/os/other"), format!("{}\n", f.v2)).unwrap();
    let d = f.dest("bind", "bare-user", &[]);
    let out = run_fail(&mut pull(&d, &["origin", "os/other"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not bound to ref 'os/other'") && err.contains(&f.v2),
        "{err}"
    );
    assert!(object_files(&d).is_empty());
    run_ok(&mut pull(&d, &["origin", "os/main"]));
    // A collection ID on the remote: these commits have none.
    let c = f.dest("coll", "bare-user", &["--set=collection-id=org.example.Os"]);
    let out = run_fail(&mut pull(&c, &["origin", "os/main"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no collection binding") && err.contains(&f.v2),
        "{err}"
    );
    // A repository made with that collection ID binds its commits: accepted.
    let src2 = f.path("src-coll");
    run_ok(
        arbor()
            .args([
                "init",
                "--mode",
                "archive",
                "--collection-id",
                "org.example.Os",
                "--repo",
            ])
            .arg(&src2),
    );
    let cc = arbor_commit(&src2, &["-b", "os/main", "--timestamp=@1"], &f.tree_v1);
    let server2 = TestServer::start(&src2);
    let ok = f.path("coll-ok");
    arbor_init(&ok, "bare-user");
    run_ok(
        arbor()
            .args(["remote", "add", "--repo"])
            .arg(&ok)
            .args([
                "--no-gpg-verify",
                "--set=collection-id=org.example.Os",
                "origin",
            ])
            .arg(server2.url()),
    );
    run_ok(&mut pull(&ok, &["origin", "os/main"]));
    assert_eq!(rev(&ok, "origin:os/main").as_deref(), Some(cc.as_str()));
    // ... and refused by a remote expecting another collection.
    let other = f.path("coll-other");
    arbor_init(&other, "bare-user");
    run_ok(
        arbor()
            .args(["remote", "add", "--repo"])
            .arg(&other)
            .args([
                "--no-gpg-verify",
                "--set=collection-id=org.example.Other",
                "origin",
            ])
            .arg(server2.url()),
    );
    let out = run_fail(&mut pull(&other, &["origin", "os/main"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bound to collection 'org.example.Os'"),
        "{err}"
    );
    // A commit without any binding, from a collection-id remote: refused
    // (ostree requires ref bindings there), by checksum too.
    let nb = arbor_commit(
        &src2,
        &["-b", "os/unbound", "--no-bindings", "--timestamp=@2"],
        &f.tree_v1,
    );
    let out = run_fail(&mut pull(&ok, &["origin", &nb]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has no ref binding") && err.contains(&nb),
        "{err}"
    );
}

/// A pull that fails (an object the server lacks) keeps what it verified:
/// run again once the server is fixed, it fetches only what it had not
/// stored, never an object twice.
#[test]
fn failed_pull_resumes_without_refetching() {
    let f = Fixture::new();
    let readme = some_file(&f.src, "os/main", "/README.txt");
    let good = std::fs::read(f.src.join(filez_path(&readme))).unwrap();
    f.server.set(&filez_path(&readme), Reply::Status(404));
    let d = f.dest("resume", "bare-user", &[]);
    let out = run_fail(&mut pull(&d, &["origin", "os/main"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&readme) && err.contains("not found"), "{err}");
    let first: Vec<String> = f.object_requests();
    assert!(first.len() > 10, "{first:?}");
    f.server.set(&filez_path(&readme), Reply::Bytes(good));
    run_ok(&mut pull(&d, &["origin", "os/main"]));
    let second: Vec<String> = f.object_requests()[first.len()..].to_vec();
    let unique: BTreeSet<&String> = second.iter().collect();
    assert_eq!(unique.len(), second.len(), "{second:?}");
    let again: Vec<&String> = second
        .iter()
        .filter(|p| first.contains(p) && !p.ends_with(".commitmeta"))
        .collect();
    assert_eq!(again, [&format!("/{}", filez_path(&readme))], "{second:?}");
    assert_clean(&d, "after resuming");
    assert!(staged(&d).is_empty());
    assert_eq!(rev(&d, "origin:os/main").as_deref(), Some(f.v2.as_str()));
}

/// pull-local completing a commit fetched with --commit-metadata-only
/// removes its partial marker (else fsck would skip checking it).
#[test]
fn pull_local_completes_a_partial_commit() {
    let f = Fixture::new();
    let d = f.dest("partial", "bare-user", &[]);
    run_ok(&mut pull(
        &d,
        &["--commit-metadata-only", "origin", "os/main"],
    ));
    let marker = d.join(format!("state/{}.commitpartial", f.v2));
    assert!(marker.exists());
    run_ok(
        arbor()
            .args(["pull-local", "--repo"])
            .arg(&d)
            .args(["--remote", "origin"])
            .arg(&f.src)
            .arg("os/main"),
    );
    assert!(!marker.exists());
    let (ok, report) = arbor_fsck_json(&d);
    assert!(ok, "{report}");
    assert_eq!(report["partial_commits"], 0, "{report}");
}
