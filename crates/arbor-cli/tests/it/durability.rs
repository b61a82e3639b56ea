//! Sync barriers, observed with strace: SIGKILL tests (faults.rs) cannot
//! tell whether data is made durable before it is published, because the
//! page cache survives a killed process. Power loss does not forgive that,
//! so these tests check the order of the syscalls themselves:
//! data synced → objects renamed into `objects/` → synced → ref replaced →
//! ref directory synced; and for prune: commits unlinked → synced → the
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
fn traced(repo: &Path, calls: &str, args: &[&str]) -> Vec<Ev> {
    let ok = Command::new("strace")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "strace is required for the durability tests (apt-get install strace)"
    );
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
    assert!(
        evs[r..].contains(&Ev::RefDirSync),
        "ref directory not synced after the ref: {evs:?}"
    );
}

#[test]
fn barrier_checker_rejects_wrong_orders() {
    use Ev::*;
    assert_commit_order(&[Sync, Publish, Publish, Sync, RefReplace, RefDirSync]);
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
