//! Sync barriers, observed with strace: SIGKILL tests (faults.rs) cannot
//! tell whether data is made durable before it is published, because the
//! page cache survives a killed process. Power loss does not forgive that,
//! so these tests check the order of the syscalls themselves:
//! data synced → objects renamed into `objects/` → synced → ref replaced →
//! ref directory (or the filesystem) synced; and for prune: commits unlinked → synced → the
//! rest unlinked.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use crate::util::{arbor, make_vector_tree, run_ok};

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Ev {
    Sync,
    Publish,
    RefReplace,
    RefDirSync,
    UnlinkCommit,
    UnlinkOther,
}

/// Runs arbor under `strace -f -y` for `calls`, returning the successful
/// calls classified, in order.
fn require_strace() {
    // Tracing itself must work (ptrace may be blocked in some containers).
    let ok = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "strace is required and must be able to trace (apt-get install strace)"
    );
}

fn traced(repo: &Path, calls: &str, args: &[&str]) -> Vec<Ev> {
    require_strace();
    let log = repo.with_extension("strace");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-y", "-e", &format!("trace={calls}"), "-o"])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_arbor"))
        .args(args);
    run_ok(&mut cmd);
    let text = std::fs::read_to_string(&log).unwrap();
    let mut evs = Vec::new();
    for line in text.lines() {
        if line.contains("= -1") || line.contains("resumed>") || line.contains("+++") {
            continue;
        }
        let call = line.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
        if call.starts_with("syncfs(") {
            evs.push(Ev::Sync);
        } else if call.starts_with("renameat") && call.contains("/objects>, \"") {
            evs.push(Ev::Publish);
        } else if call.starts_with("renameat(") && call.contains("/refs/heads") {
            evs.push(Ev::RefReplace);
        } else if call.starts_with("fsync(")
            && call.contains("/refs/heads")
            && !call.contains("(deleted)")
        {
            evs.push(Ev::RefDirSync);
        } else if call.starts_with("unlinkat(") && call.contains("/objects>") {
            evs.push(if call.contains(".commit\"") {
                Ev::UnlinkCommit
            } else {
                Ev::UnlinkOther
            });
        }
    }
    evs
}

fn first(evs: &[Ev], e: Ev) -> usize {
    evs.iter()
        .position(|x| *x == e)
        .unwrap_or_else(|| panic!("no {e:?} in {evs:?}"))
}

fn last(evs: &[Ev], e: Ev) -> usize {
    evs.iter()
        .rposition(|x| *x == e)
        .unwrap_or_else(|| panic!("no {e:?} in {evs:?}"))
}

/// Asserts the commit barrier order on a classified trace.
fn assert_commit_order(evs: &[Ev]) {
    let (p0, p1) = (first(evs, Ev::Publish), last(evs, Ev::Publish));
    let r = first(evs, Ev::RefReplace);
    assert!(
        evs[..p0].contains(&Ev::Sync),
        "objects published before any sync: {evs:?}"
    );
    assert!(
        evs[p1..r].contains(&Ev::Sync),
        "ref replaced before published objects were synced: {evs:?}"
    );
    // Its directory's fsync, or a syncfs of the filesystem (a transaction
    // renames its staged refs, then syncs once).
    assert!(
        evs[r..].contains(&Ev::RefDirSync) || evs[r..].contains(&Ev::Sync),
        "ref directory not synced after the ref: {evs:?}"
    );
}

#[test]
fn barrier_checker_rejects_wrong_orders() {
    use Ev::*;
    assert_commit_order(&[Sync, Publish, Publish, Sync, RefReplace, RefDirSync]);
    assert_commit_order(&[Sync, Publish, Publish, Sync, RefReplace, Sync]);
    for bad in [
        vec![Publish, Sync, RefReplace, RefDirSync],
        vec![Sync, Publish, RefReplace, Sync, RefDirSync],
        vec![Sync, Publish, Sync, RefReplace],
    ] {
        let r = std::panic::catch_unwind(|| assert_commit_order(&bad));
        assert!(r.is_err(), "{bad:?} accepted");
    }
}

#[test]
fn commit_syncs_before_publishing_and_before_the_ref() {
    for mode in ["archive", "bare-user", "bare-user-only"] {
        let td = TempDir::new().unwrap();
        let repo = td.path().join("repo");
        let tree = td.path().join("tree");
        make_vector_tree(&tree);
        run_ok(
            arbor()
                .args(["init", "--repo"])
                .arg(&repo)
                .args(["--mode", mode]),
        );
        let r = repo.to_str().unwrap();
        let t = tree.to_str().unwrap();
        run_ok(arbor().args(["commit", "--repo", r, "-b", "os/main", t]));
        std::fs::write(tree.join("new-file"), "new\n").unwrap();
        let evs = traced(
            &repo,
            "syncfs,fsync,rename,renameat,renameat2",
            &["commit", "--repo", r, "-b", "os/main", t],
        );
        assert_commit_order(&evs);
    }
}

#[test]
fn prune_makes_commit_removal_durable_first() {
    let td = TempDir::new().unwrap();
    let repo = td.path().join("repo");
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    let r = repo.to_str().unwrap();
    let t = tree.to_str().unwrap();
    run_ok(arbor().args(["init", "--repo", r, "--mode", "archive"]));
    run_ok(arbor().args(["commit", "--repo", r, "-b", "os/main", "--timestamp=@1", t]));
    std::fs::write(tree.join("README.txt"), "changed\n").unwrap();
    run_ok(arbor().args(["commit", "--repo", r, "-b", "os/main", "--timestamp=@2", t]));
    let evs = traced(
        &repo,
        "unlinkat,syncfs",
        &["prune", "--repo", r, "--refs-only", "--depth=0"],
    );
    let (c1, o0) = (last(&evs, Ev::UnlinkCommit), first(&evs, Ev::UnlinkOther));
    assert!(
        c1 < o0,
        "a tree or file was unlinked before the commit: {evs:?}"
    );
    assert!(
        evs[c1..o0].contains(&Ev::Sync),
        "no sync between commit and tree removal: {evs:?}"
    );
    // The old README object and the old root dirtree are gone; the tip works.
    run_ok(arbor().args(["fsck", "--repo", r]));
}

/// Two commits race to one branch: the first reads the branch, then is
/// slowed down (strace delays its syncfs calls by 2 s each); the second
/// commits and moves the branch meanwhile. The first must then refuse to
/// overwrite the branch instead of silently dropping the second commit.
#[test]
fn racing_commits_never_lose_one() {
    require_strace();
    let td = TempDir::new().unwrap();
    let repo = td.path().join("repo");
    let (t1, t2) = (td.path().join("t1"), td.path().join("t2"));
    make_vector_tree(&t1);
    make_vector_tree(&t2);
    std::fs::write(t1.join("slow"), "slow\n").unwrap();
    std::fs::write(t2.join("fast"), "fast\n").unwrap();
    let r = repo.to_str().unwrap();
    run_ok(arbor().args(["init", "--repo", r, "--mode", "archive"]));
    let base = run_ok(
        arbor()
            .args(["commit", "--repo", r, "-b", "main", "--timestamp=@1"])
            .arg(&t1),
    );
    let slow = Command::new("strace")
        .args([
            "-f",
            "-o",
            "/dev/null",
            "-e",
            "trace=syncfs",
            "-e",
            "inject=syncfs:delay_enter=2000000",
        ])
        .arg(env!("CARGO_BIN_EXE_arbor"))
        .args(["commit", "--repo", r, "-b", "main", "--timestamp=@2"])
        .arg(&t1)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let the slow commit read the branch and reach its first sync.
    std::thread::sleep(std::time::Duration::from_millis(800));
    let fast = run_ok(
        arbor()
            .args(["commit", "--repo", r, "-b", "main", "--timestamp=@3"])
            .arg(&t2),
    );
    let out = slow.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the slow commit overwrote the branch"
    );
    assert!(err.contains("changed concurrently"), "{err}");
    let head = run_ok(arbor().args(["rev-parse", "--repo", r, "main"]));
    assert_eq!(head.trim(), fast.trim());
    let log = run_ok(arbor().args(["log", "--repo", r, "main"]));
    assert!(
        log.contains(base.trim()),
        "the fast commit's parent is not the base:\n{log}"
    );
    run_ok(arbor().args(["fsck", "--repo", r]));
}
