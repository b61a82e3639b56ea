//! `arbor pull` over HTTP from a test server: every repository mode,
//! incremental pulls, depth, commit-only and dry runs, retries; and a
//! hostile server: wrong, truncated, oversized and inflating bodies,
//! objects under another name, dirtrees with dangerous names, downgrades.
//! Each attack is refused naming the object, and afterwards the repository
//! is fsck-clean, the ref untouched and nothing written outside it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::testserver::{Reply, TestServer};
use crate::util::*;
use crate::util::{pull_cmd as pull, rev_opt as rev};

/// A source archive repository with `os/main` at v1 then v2 (v2's parent is
/// v1), served by a [`TestServer`].
pub(crate) struct Fixture {
    pub(crate) td: TempDir,
    pub(crate) src: PathBuf,
    pub(crate) v1: String,
    pub(crate) v2: String,
    pub(crate) tree_v1: PathBuf,
    pub(crate) tree_v2: PathBuf,
    pub(crate) server: TestServer,
}

fn modify(t: &Path) {
    std::fs::write(t.join("README.txt"), "Hello, changed!\n").unwrap();
    std::fs::write(t.join("added.txt"), "new file\n").unwrap();
    std::fs::create_dir_all(t.join("newdir/sub")).unwrap();
    std::fs::write(t.join("newdir/sub/deep.txt"), vec![b'q'; 200_000]).unwrap();
}

pub(crate) const COMMON: &[&str] = &["--owner-uid=0", "--owner-gid=0", "--canonical-permissions"];

impl Fixture {
    pub(crate) fn new() -> Fixture {
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

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.td.path().join(name)
    }

    /// A fresh repository of `mode` with remote `origin` at the server.
    pub(crate) fn dest(&self, name: &str, mode: &str, extra: &[&str]) -> PathBuf {
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
    pub(crate) fn object_requests(&self) -> Vec<String> {
        self.server
            .requests()
            .into_iter()
            .filter(|p| p.starts_with("/objects/"))
            .collect()
    }
}

#[track_caller]
pub(crate) fn assert_clean(repo: &Path, what: &str) {
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
pub(crate) fn staged(repo: &Path) -> Vec<(String, String)> {
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
pub(crate) fn assert_leftovers_taken_over(repo: &Path, scratch: &Path) {
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
pub(crate) fn object_files(repo: &Path) -> BTreeSet<String> {
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
pub(crate) fn some_file(repo: &Path, rev: &str, path: &str) -> String {
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

pub(crate) fn filez_path(c: &str) -> String {
    format!("objects/{}/{}.filez", &c[..2], &c[2..])
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
