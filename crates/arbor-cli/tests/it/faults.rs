//! Crash safety of commit transactions: a commit killed at every named
//! failpoint, and at random instants, must leave a repository that both
//! `arbor fsck` and `ostree fsck` accept, with the branch at exactly its old
//! or its new commit, and the same commit must then succeed when rerun.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arbor_fs::failpoint::{self, TXN_ALL as ALL};
use tempfile::TempDir;

use crate::util::{arbor, make_vector_tree, ostree, require_ostree, run_ok};

const BRANCH: &str = "os/main";

/// The commit under test, identical in every run so checksums can be compared.
fn commit_cmd(repo: &Path, tree: &Path, timestamp: &str) -> Command {
    let mut c = arbor();
    c.arg("commit")
        .arg("--repo")
        .arg(repo)
        .args(["-b", BRANCH, "-s", "Fault test", "--body", "Body."])
        .args(["--add-metadata-string", "version=7"])
        .args(["--owner-uid=0", "--owner-gid=0"])
        .arg(format!("--timestamp={timestamp}"))
        .arg(tree);
    c
}

fn commit_ok(repo: &Path, tree: &Path, timestamp: &str) -> String {
    let out = run_ok(&mut commit_cmd(repo, tree, timestamp));
    let c = out.trim().to_string();
    assert_eq!(c.len(), 64, "commit printed {out:?}");
    c
}

fn cp_a(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

fn read_branch(repo: &Path) -> String {
    let p = repo.join("refs/heads").join(BRANCH);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim_end()
        .to_string()
}

fn staging_dirs(repo: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(repo.join("tmp")) else {
        return Vec::new();
    };
    rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(arbor_repo::txn::STAGING_PREFIX))
        .collect()
}

/// Every file under `objects/`, as relative paths.
fn object_files(repo: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in std::fs::read_dir(repo.join("objects")).unwrap() {
        let d = d.unwrap();
        for f in std::fs::read_dir(d.path()).unwrap() {
            let f = f.unwrap();
            out.insert(format!(
                "{}/{}",
                d.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            ));
        }
    }
    out
}

#[track_caller]
fn assert_fsck_clean(repo: &Path, with_ostree: bool, what: &str) {
    let out = arbor()
        .args(["fsck", "--json", "--repo"])
        .arg(repo)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: arbor fsck failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["errors"], serde_json::json!([]), "{what}");
    if with_ostree {
        let out = ostree()
            .arg("fsck")
            .arg(format!("--repo={}", repo.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: ostree fsck failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn parent_of(repo: &Path, rev: &str) -> Option<String> {
    let out = run_ok(
        arbor()
            .args(["show", "--json", "--repo"])
            .arg(repo)
            .arg(rev),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["parent"].as_str().map(str::to_string)
}

/// Changes, adds and deletes files, and adds a new subdirectory.
fn modify_vector_tree(t: &Path) {
    std::fs::write(t.join("README.txt"), "Hello, changed OSTree!\n").unwrap();
    std::fs::write(t.join("usr/etc/example.conf"), "key=other\n").unwrap();
    std::fs::remove_file(t.join("data.bin")).unwrap();
    std::fs::remove_file(t.join("link-to-readme")).unwrap();
    std::fs::remove_dir_all(t.join("usr/share")).unwrap();
    std::fs::write(t.join("added.txt"), "new file\n").unwrap();
    std::fs::create_dir_all(t.join("newdir/sub")).unwrap();
    std::fs::write(t.join("newdir/sub/deep.txt"), "deep\n").unwrap();
    std::fs::write(t.join("newdir/top.txt"), vec![b'x'; 300_000]).unwrap();
}

fn failpoints_in(mode: &str) {
    require_ostree();
    let td = TempDir::new().unwrap();
    let base = td.path();
    let (tree_a, tree_b) = (base.join("tree-a"), base.join("tree-b"));
    make_vector_tree(&tree_a);
    make_vector_tree(&tree_b);
    modify_vector_tree(&tree_b);
    let template = base.join("template");
    run_ok(
        arbor()
            .args(["init", "--mode", mode, "--repo"])
            .arg(&template),
    );
    let a = commit_ok(&template, &tree_a, "@1600000000");
    // The expected new commit, made without any crash in a copy.
    let scratch = base.join("scratch");
    cp_a(&template, &scratch);
    let expected = commit_ok(&scratch, &tree_b, "@1700000000");
    assert_ne!(a, expected);
    assert_eq!(parent_of(&scratch, &expected).as_deref(), Some(a.as_str()));
    let expected_objects = object_files(&scratch);
    // Points reached before the ref update must leave the old ref.
    let before_refs = [
        failpoint::TXN_OBJECTS_STAGED,
        failpoint::TXN_AFTER_SYNC,
        failpoint::TXN_MID_PUBLISH,
        failpoint::TXN_AFTER_PUBLISH,
        failpoint::TXN_AFTER_OBJECTS_SYNCED,
    ];
    assert!(ALL.len() >= 6, "failpoint list shrank: {ALL:?}");
    for (i, point) in ALL.iter().enumerate() {
        let what = format!("{mode} repo, failpoint {point}");
        let repo = base.join(format!("repo-{i}"));
        cp_a(&template, &repo);
        let out = commit_cmd(&repo, &tree_b, "@1700000000")
            .env(failpoint::ENV, point)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{what}: not killed by SIGKILL ({}); stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout.is_empty(),
            "{what}: printed a checksum before dying"
        );
        // The crash left its staging directory behind (nothing cleaned it).
        assert_eq!(staging_dirs(&repo).len(), 1, "{what}");
        assert_fsck_clean(&repo, true, &format!("{what}, after crash"));
        // A ref staged under a temporary name (the transaction writes them
        // before its last object sync) is no ref, for arbor and ostree.
        for out in [
            run_ok(arbor().args(["refs", "--repo"]).arg(&repo)),
            run_ok(ostree().args(["refs", "--repo"]).arg(&repo)),
        ] {
            assert_eq!(out.trim(), BRANCH, "{what}: refs listed");
        }
        let r = read_branch(&repo);
        if *point == failpoint::TXN_AFTER_REFS {
            assert_eq!(r, expected, "{what}: ref must be the new commit");
        } else if before_refs.contains(point) {
            assert_eq!(r, a, "{what}: ref must be the old commit");
        } else {
            assert!(r == a || r == expected, "{what}: ref is {r}");
        }
        // Reading the branch works whatever state it is in.
        let log = run_ok(
            arbor()
                .args(["log", "--json", "--repo"])
                .arg(&repo)
                .arg(BRANCH),
        );
        let log: serde_json::Value = serde_json::from_str(&log).unwrap();
        assert_eq!(log[0]["checksum"].as_str(), Some(r.as_str()), "{what}");
        if r == expected {
            // Put the branch back so the rerun has the same parent.
            run_ok(
                arbor()
                    .args(["refs", "--delete", "--repo"])
                    .arg(&repo)
                    .arg(BRANCH),
            );
            run_ok(
                arbor()
                    .args(["refs", "--repo"])
                    .arg(&repo)
                    .args(["--create", BRANCH, &a]),
            );
        }
        let again = commit_ok(&repo, &tree_b, "@1700000000");
        assert_eq!(again, expected, "{what}: rerun gave another commit");
        assert_eq!(read_branch(&repo), expected, "{what}");
        assert_eq!(
            staging_dirs(&repo),
            Vec::<String>::new(),
            "{what}: stale staging left"
        );
        assert_fsck_clean(&repo, true, &format!("{what}, after rerun"));
        // No half-written leftovers: exactly the objects of a clean run.
        assert_eq!(object_files(&repo), expected_objects, "{what}");
        // A prune removes the temporaries a crash left among the refs.
        run_ok(arbor().args(["prune", "--refs-only", "--repo"]).arg(&repo));
        let mut dirs = vec![repo.join("refs")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                assert!(
                    !arbor_fs::is_temporary_name(&name),
                    "{what}: {name} left in {}",
                    d.display()
                );
                if e.file_type().unwrap().is_dir() {
                    dirs.push(e.path());
                }
            }
        }
    }
}

#[test]
fn failpoints_archive() {
    failpoints_in("archive");
}

#[test]
fn failpoints_bare_user() {
    failpoints_in("bare-user");
}

#[test]
fn failpoints_bare_user_only() {
    failpoints_in("bare-user-only");
}

#[test]
fn failpoints_bare() {
    if crate::util::needs_root("failpoints in bare mode (writing bare repos)") {
        return;
    }
    failpoints_in("bare");
}

/// Deterministic xorshift64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        // Text-like (compressible) so archive commits stay fast in debug builds.
        (0..n).map(|_| b'a' + (self.next() % 16) as u8).collect()
    }
}

const DIRS: usize = 20;
const FILES_PER_DIR: usize = 100;
const BIG: usize = 3;

fn small_path(t: &Path, n: usize) -> std::path::PathBuf {
    t.join(format!("d{:02}/f{:03}", n % DIRS, n / DIRS))
}

fn generate_tree(t: &Path, rng: &mut Rng) {
    for d in 0..DIRS {
        std::fs::create_dir_all(t.join(format!("d{d:02}"))).unwrap();
    }
    for n in 0..DIRS * FILES_PER_DIR {
        let len = 16 + (rng.next() % 600) as usize;
        std::fs::write(small_path(t, n), rng.bytes(len)).unwrap();
    }
    for b in 0..BIG {
        std::fs::write(t.join(format!("big{b}")), rng.bytes(1 << 20)).unwrap();
    }
}

/// Iteration `i`: rewrites a tenth of the small files and one big file,
/// swaps an added file and an added directory for new ones.
fn mutate_tree(t: &Path, i: usize, rng: &mut Rng) {
    for n in (i % 10..DIRS * FILES_PER_DIR).step_by(10) {
        let mut data = format!("iteration {i}\n").into_bytes();
        let len = 16 + (rng.next() % 200) as usize;
        data.extend(rng.bytes(len));
        std::fs::write(small_path(t, n), data).unwrap();
    }
    std::fs::write(t.join(format!("big{}", i % BIG)), rng.bytes(1 << 20)).unwrap();
    if i > 0 {
        std::fs::remove_file(t.join(format!("added-{}", i - 1))).unwrap();
        std::fs::remove_dir_all(t.join(format!("dir-{}", i - 1))).unwrap();
    }
    std::fs::write(t.join(format!("added-{i}")), format!("{i}\n")).unwrap();
    std::fs::create_dir_all(t.join(format!("dir-{i}/sub"))).unwrap();
    std::fs::write(t.join(format!("dir-{i}/sub/x")), rng.bytes(100)).unwrap();
}

#[test]
fn random_kills_leave_repo_consistent() {
    require_ostree();
    const ITERATIONS: usize = 15;
    let started = Instant::now();
    let td = TempDir::new().unwrap();
    let base = td.path();
    let tree = base.join("tree");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    generate_tree(&tree, &mut rng);
    let repo = base.join("repo");
    run_ok(
        arbor()
            .args(["init", "--mode", "bare-user", "--repo"])
            .arg(&repo),
    );
    commit_ok(&repo, &tree, "@1000000000");
    // The shadow repository gets every commit without crashes; it yields
    // the expected checksum of each iteration's commit.
    let shadow = base.join("shadow");
    cp_a(&repo, &shadow);
    let (mut killed, mut finished, mut landed_old, mut published) = (0, 0, 0, 0);
    for i in 0..ITERATIONS {
        let what = format!("iteration {i}");
        let old = read_branch(&repo);
        assert_eq!(read_branch(&shadow), old, "{what}: shadow out of step");
        mutate_tree(&tree, i, &mut rng);
        let ts = format!("@{}", 1_000_000_001 + i);
        let t0 = Instant::now();
        let shadow_out = run_ok(commit_cmd(&shadow, &tree, &ts).arg("--fsync=false"));
        let expected = shadow_out.trim().to_string();
        let clean_time = t0.elapsed();
        // 0-300 ms, scaled to this machine's commit time so that most
        // kills land inside the transaction.
        let window = (clean_time.as_millis() as u64 * 3 / 2).clamp(20, 300);
        let delay = Duration::from_millis(rng.next() % (window + 1));
        let mut child = commit_cmd(&repo, &tree, &ts)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL; fails harmlessly if it already exited
        let out = child.wait_with_output().unwrap();
        eprintln!(
            "{what}: clean commit {clean_time:?}, killed after {delay:?}: {}",
            out.status
        );
        if out.status.signal() == Some(9) {
            killed += 1;
            let obj = format!("objects/{}/{}.commit", &expected[..2], &expected[2..]);
            published += usize::from(repo.join(obj).exists());
        } else {
            assert!(
                out.status.success(),
                "{what}: commit failed on its own ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            finished += 1;
        }
        assert_fsck_clean(&repo, i % 4 == 0, &what);
        let r = read_branch(&repo);
        assert!(
            r == old || r == expected,
            "{what}: ref is {r}, neither {old} nor {expected}"
        );
        if out.status.success() {
            assert_eq!(
                r, expected,
                "{what}: commit exited 0 without moving the ref"
            );
        }
        if r == old {
            landed_old += 1;
            assert_eq!(commit_ok(&repo, &tree, &ts), expected, "{what}: rerun");
            assert_eq!(staging_dirs(&repo), Vec::<String>::new(), "{what}");
        }
        assert_eq!(read_branch(&repo), expected, "{what}");
    }
    // Exactly the objects of the crash-free history: no stray or partial ones.
    assert_eq!(object_files(&repo), object_files(&shadow));
    assert_fsck_clean(&repo, true, "after all iterations");
    // The next transaction removes any staging left by the last crash.
    run_ok(&mut commit_cmd(&repo, &tree, "@2000000000"));
    assert_eq!(staging_dirs(&repo), Vec::<String>::new());
    assert_fsck_clean(&repo, false, "final");
    eprintln!(
        "random kills: {killed} killed ({published} after publishing the commit), \
         {finished} finished, {landed_old} left the old ref, {:?}",
        started.elapsed()
    );
    assert!(killed >= 3, "too few commits were interrupted ({killed})");
}

/// Inode of every staged object file (`XX/REST.EXT`) in `tmp/DIR`. Each
/// also gets a hard link under `keep/` so its inode cannot be freed and
/// reused by a rewrite.
fn staged_inodes(repo: &Path, dir: &str, keep: &Path) -> std::collections::BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    for d in std::fs::read_dir(repo.join("tmp").join(dir)).unwrap() {
        let d = d.unwrap();
        if !d.file_type().unwrap().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(d.path()).unwrap() {
            let f = f.unwrap();
            let rel = format!(
                "{}/{}",
                d.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            );
            std::fs::create_dir_all(keep).unwrap();
            std::fs::hard_link(f.path(), keep.join(rel.replace('/', "_"))).unwrap();
            out.insert(rel, f.metadata().unwrap().ino());
        }
    }
    out
}

/// A transaction killed after staging leaves complete, verified objects;
/// the next transaction of the same boot adopts them (a resumed pull
/// needs this) and publishes its file and tree objects without rewriting
/// them, but never the crashed transaction's commit unless it makes that
/// commit itself. Staging of another boot is deleted, not adopted.
#[test]
fn crashed_staging_is_adopted_within_a_boot_only() {
    use std::os::unix::fs::MetadataExt;
    let td = TempDir::new().unwrap();
    let base = td.path();
    let (tree_a, tree_b) = (base.join("tree-a"), base.join("tree-b"));
    make_vector_tree(&tree_a);
    make_vector_tree(&tree_b);
    modify_vector_tree(&tree_b);
    let template = base.join("template");
    run_ok(
        arbor()
            .args(["init", "--mode", "bare-user", "--repo"])
            .arg(&template),
    );
    let a = commit_ok(&template, &tree_a, "@1600000000");
    let scratch = base.join("scratch");
    cp_a(&template, &scratch);
    let b = commit_ok(&scratch, &tree_b, "@1700000000");
    let b_path = format!("{}/{}.commit", &b[..2], &b[2..]);

    let crash = |repo: &Path| -> String {
        cp_a(&template, repo);
        let out = commit_cmd(repo, &tree_b, "@1700000000")
            .env(failpoint::ENV, failpoint::TXN_OBJECTS_STAGED)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(9));
        let dirs = staging_dirs(repo);
        assert_eq!(dirs.len(), 1);
        dirs[0].clone()
    };

    // 1. Same boot, unrelated transaction: the staged commit of tree-b must
    //    not be published (its ref never moved), the rest may be.
    let repo = base.join("unrelated");
    let dir = crash(&repo);
    let staged = staged_inodes(&repo, &dir, &base.join("keep1"));
    assert!(staged.contains_key(&b_path), "{staged:?}");
    run_ok(
        arbor()
            .args(["refs", "--repo"])
            .arg(&repo)
            .args(["--create", "other", &a]),
    );
    commit_ok(&repo, &tree_a, "@1650000000");
    assert!(!repo.join("objects").join(&b_path).exists());
    assert_eq!(staging_dirs(&repo), Vec::<String>::new());
    assert_fsck_clean(&repo, true, "after an unrelated commit adopted staging");

    // 2. Same boot, the same commit again: every staged object is published
    //    as the very file the crashed run wrote (same inode).
    let repo = base.join("same");
    let dir = crash(&repo);
    let staged = staged_inodes(&repo, &dir, &base.join("keep2"));
    assert_eq!(commit_ok(&repo, &tree_b, "@1700000000"), b);
    for (rel, ino) in &staged {
        let m = std::fs::metadata(repo.join("objects").join(rel)).unwrap();
        assert_eq!(m.ino(), *ino, "{rel} was rewritten, not adopted");
    }
    assert_eq!(staging_dirs(&repo), Vec::<String>::new());
    assert_fsck_clean(&repo, true, "after adopting the same commit");

    // 3. Another boot: nothing is adopted (bytes never synced may be lost),
    //    the directory is deleted.
    let repo = base.join("reboot");
    let dir = crash(&repo);
    let staged = staged_inodes(&repo, &dir, &base.join("keep3"));
    let rest = &dir[arbor_repo::txn::STAGING_PREFIX.len() + 32..];
    let other = format!(
        "{}{}{rest}",
        arbor_repo::txn::STAGING_PREFIX,
        "0".repeat(32)
    );
    std::fs::rename(repo.join("tmp").join(&dir), repo.join("tmp").join(&other)).unwrap();
    assert_eq!(commit_ok(&repo, &tree_b, "@1700000000"), b);
    for (rel, ino) in &staged {
        let m = std::fs::metadata(repo.join("objects").join(rel)).unwrap();
        assert_ne!(m.ino(), *ino, "{rel} adopted from another boot");
    }
    assert_eq!(staging_dirs(&repo), Vec::<String>::new());
    assert_fsck_clean(&repo, true, "after discarding another boot's staging");
}
