//! Upgrades re-compose the listed extensions on the new base (or stop,
//! changing nothing, when one no longer fits), and `cleanup` keeps exactly
//! what the deployments need: an extension's commit, its composed commits
//! and the objects only they used go when nothing lists them.

use std::path::{Path, PathBuf};

use crate::config_apply::{boot_snapshot, deployments, read, root_of};
use crate::ext_util::{
    both_fscks, commit_of, compose_cli, ext_base_tree, layers, refs, release_commit, Ext,
};
use crate::sysroot::needs_root;
use crate::util::{arbor, ostree, run_fail, run_ok, s};

fn upgrade(sys: &Path) -> std::process::Command {
    let mut c = arbor();
    c.args(["upgrade", "--sysroot", s(sys)]);
    c
}

/// The checksum `ostree ls -C` prints for `path` in `rev`.
pub(crate) fn object_of(repo: &Path, rev: &str, path: &str, dir: bool) -> String {
    let mut c = ostree();
    c.args(["ls", &format!("--repo={}", s(repo)), "-C"]);
    if dir {
        c.arg("-d");
    }
    let out = run_ok(c.args([rev, path]));
    out.split_whitespace()
        .find(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no checksum in {out:?}"))
        .to_string()
}

/// The loose object file of `checksum` (`.file`, `.dirtree`, ...).
pub(crate) fn object_path(repo: &Path, checksum: &str, kind: &str) -> PathBuf {
    repo.join(format!(
        "objects/{}/{}.{kind}",
        &checksum[..2],
        &checksum[2..]
    ))
}

/// `arbor pull` of the origin's `testos/stable` into the sysroot
/// repository: the ref moves on, no deployment changes.
fn pull(e: &Ext) {
    run_ok(arbor().args(["pull", "--repo", s(&e.srepo()), "origin", "testos/stable"]));
}

fn has_commit(repo: &Path, c: &str) -> bool {
    object_path(repo, c, "commit").exists()
}

#[test]
fn upgrade_recomposes_the_extensions_on_the_new_base() {
    if needs_root("upgrade_recomposes_the_extensions_on_the_new_base") {
        return;
    }
    let e = Ext::new();
    let dir = e.tool_dir("tools");
    e.ok("add", &[s(&dir)]);
    let before = layers(&e.sys);
    let ext = commit_of(&before[0].2, "tools");
    // Nothing new upstream: no new deployment (the composed commit is not
    // the ref's commit, its base is).
    let out = run_ok(&mut upgrade(&e.sys));
    assert!(out.contains("No update available."), "{out}");
    assert_eq!(layers(&e.sys), before);
    let v2 = e.release("v2\n", "1", "1577923200");
    run_ok(&mut upgrade(&e.sys));
    let l = layers(&e.sys);
    assert_eq!(l.len(), 2, "{l:?}");
    assert_eq!(l[0].1, v2, "BaseCommit is the new base");
    assert_eq!(l[0].2, [format!("tools:{ext}")], "the same extension");
    assert_eq!(l[1], before[0]);
    let root = root_of(&e.sys, 0);
    assert_eq!(read(&root.join("usr/share/marker")), "v2\n");
    assert_eq!(
        read(&root.join("usr/bin/tools-tool")),
        "#!/bin/sh\necho tools\n"
    );
    let text = run_ok(arbor().args(["status", "--sysroot", s(&e.sys)]));
    assert!(text.contains(&format!("BaseCommit: {v2}")), "{text}");
    assert!(
        text.contains(&format!("Extension: tools ({ext})")),
        "{text}"
    );
    // The same commit `extension compose` makes of the new base.
    assert_eq!(
        compose_cli(&e.srepo(), &v2, &[format!("tools={ext}")]),
        l[0].0
    );
    let v: serde_json::Value = serde_json::from_str(&run_ok(arbor().args([
        "status",
        "--json",
        "--sysroot",
        s(&e.sys),
    ])))
    .unwrap();
    assert_eq!(v["deployments"][0]["version"], "v2", "{v:#}");
    crate::config_apply::ostree_reads(&e.sys);
    both_fscks(&e.sys);
    // Upgrading again: nothing new.
    let out = run_ok(&mut upgrade(&e.sys));
    assert!(out.contains("No update available."), "{out}");
    assert_eq!(layers(&e.sys), l);
}

#[test]
fn an_extension_that_no_longer_fits_stops_the_upgrade() {
    if needs_root("an_extension_that_no_longer_fits_stops_the_upgrade") {
        return;
    }
    let e = Ext::new();
    let dir = e.tool_dir("tools");
    e.ok("add", &[s(&dir)]);
    let before = layers(&e.sys);
    let boot = boot_snapshot(&e.sys);
    let state = crate::sysroot::boot_state(&e.sys);
    // The new base is VERSION_ID=2; the extension says 1.
    let v2 = e.release("v2\n", "2", "1577923200");
    let err = run_fail(&mut upgrade(&e.sys));
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(msg.contains("tools"), "{msg}");
    assert!(msg.contains("VERSION_ID"), "{msg}");
    assert_eq!(layers(&e.sys), before);
    assert_eq!(boot_snapshot(&e.sys), boot);
    // The refs and links the boot depends on are as they were (the pulled
    // commit aside).
    let local = |mut m: std::collections::BTreeMap<String, String>| {
        let refs = m.remove("(refs)").unwrap();
        let kept: Vec<&str> = refs.lines().filter(|r| !r.contains(':')).collect();
        m.insert("(refs)".into(), kept.join("\n"));
        m
    };
    assert_eq!(local(crate::sysroot::boot_state(&e.sys)), local(state));
    // No composed commit of v2 was left behind.
    assert!(
        !refs(&e.srepo())
            .iter()
            .any(|r| r.starts_with("arbor/composed/") && !r.ends_with(&before[0].0)),
        "{:?}",
        refs(&e.srepo())
    );
    both_fscks(&e.sys);
    // Removing the extension lets the upgrade through.
    e.ok("remove", &["tools"]);
    run_ok(&mut upgrade(&e.sys));
    let l = layers(&e.sys);
    assert_eq!(l[0], (v2.clone(), v2, vec![]));
}

#[test]
fn cleanup_keeps_what_deployments_need_and_removes_the_rest() {
    if needs_root("cleanup_keeps_what_deployments_need_and_removes_the_rest") {
        return;
    }
    let e = Ext::new();
    let repo = e.srepo();
    let tools = e.tool_dir("tools");
    e.ok("add", &[s(&tools)]);
    let only_tools = layers(&e.sys)[0].clone();
    let c_tools = commit_of(&only_tools.2, "tools");
    let net = e.tool_dir("net");
    e.ok("add", &[s(&net)]);
    let both = layers(&e.sys)[0].clone();
    let c_net = commit_of(&both.2, "net");
    let tool_file = object_of(&repo, &c_tools, "/usr/bin/tools-tool", false);
    let tool_bin = object_of(&repo, &c_tools, "/usr/bin", true);
    let net_file = object_of(&repo, &c_net, "/usr/bin/net-tool", false);
    assert!(object_path(&repo, &tool_file, "file").exists());
    // tools goes; the deployment listing both stays as the rollback.
    e.ok("remove", &["tools"]);
    let l = layers(&e.sys);
    assert_eq!(l[0].2, [format!("net:{c_net}")]);
    assert_eq!(l[1], both);
    run_ok(arbor().args(["cleanup", "--sysroot", s(&e.sys)]));
    // Still listed by the rollback deployment: kept.
    assert!(has_commit(&repo, &c_tools));
    assert!(refs(&repo).contains(&format!("arbor/extensions/tools/{c_tools}")));
    assert!(refs(&repo).contains(&format!("arbor/composed/{}", both.0)));
    // The one-extension deployment of tools is gone: so is its ref and commit.
    assert!(!deployments(&e.sys)
        .iter()
        .any(|d| d["checksum"] == only_tools.0.as_str()));
    assert!(!refs(&repo).contains(&format!("arbor/composed/{}", only_tools.0)));
    assert!(
        !has_commit(&repo, &only_tools.0),
        "unused composed commit kept"
    );
    // Now nothing lists tools.
    run_ok(arbor().args(["undeploy", "--sysroot", s(&e.sys), "1"]));
    run_ok(arbor().args(["cleanup", "--sysroot", s(&e.sys)]));
    let r = refs(&repo);
    assert!(
        !r.iter().any(|x| x.starts_with("arbor/extensions/tools/")),
        "{r:?}"
    );
    assert!(!r.contains(&format!("arbor/composed/{}", both.0)), "{r:?}");
    for c in [&c_tools, &both.0, &only_tools.0] {
        assert!(!has_commit(&repo, c), "commit {c} kept");
    }
    assert!(
        !object_path(&repo, &tool_file, "file").exists(),
        "tools' file kept"
    );
    assert!(
        !object_path(&repo, &tool_bin, "dirtree").exists(),
        "tools' dirtree kept"
    );
    // What the remaining deployment needs is there.
    let l = layers(&e.sys);
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(
        r.contains(&format!("arbor/extensions/net/{c_net}")),
        "{r:?}"
    );
    assert!(r.contains(&format!("arbor/composed/{}", l[0].0)), "{r:?}");
    assert!(has_commit(&repo, &c_net) && has_commit(&repo, &l[0].0) && has_commit(&repo, &e.v1));
    assert!(object_path(&repo, &net_file, "file").exists());
    both_fscks(&e.sys);
    // ostree's own prune keeps it too (the refs hold it), even once the
    // origin ref no longer names the base and only the refs themselves
    // count (depth 0: no parents).
    let v2 = e.release("v2\n", "1", "1577923200");
    pull(&e);
    assert!(!deployments(&e.sys)
        .iter()
        .any(|d| d["checksum"] == e.v1.as_str()));
    run_ok(ostree().args([
        "prune",
        &format!("--repo={}", s(&repo)),
        "--refs-only",
        "--depth=0",
    ]));
    both_fscks(&e.sys);
    assert!(has_commit(&repo, &c_net) && has_commit(&repo, &l[0].0));
    assert!(
        has_commit(&repo, &e.v1),
        "the base of the composed deployment was pruned"
    );
    // And the deployment still upgrades with net on a new base.
    run_ok(&mut upgrade(&e.sys));
    assert_eq!(layers(&e.sys)[0].1, v2);
    assert_eq!(layers(&e.sys)[0].2, [format!("net:{c_net}")]);
}

/// A new base that ships a path an extension provides, with different
/// content: the upgrade stops naming the path and both sources, and the
/// boot state is as it was.
#[test]
fn a_new_base_clashing_with_an_extension_stops_the_upgrade() {
    if needs_root("a_new_base_clashing_with_an_extension_stops_the_upgrade") {
        return;
    }
    let e = Ext::new();
    let dir = e.tool_dir("tools");
    e.ok("add", &[s(&dir)]);
    let before = layers(&e.sys);
    let boot = boot_snapshot(&e.sys);
    let t = e.fresh("release");
    ext_base_tree(&t, "v2\n", "1");
    crate::sysroot::put(&t.join("usr/bin/tools-tool"), "#!/bin/sh\necho base\n");
    let v2 = release_commit(&e.repo, "testos/stable", &t, "v2", "1577923200");
    let err = run_fail(&mut upgrade(&e.sys));
    let msg = String::from_utf8_lossy(&err.stderr);
    for w in ["usr/bin/tools-tool", "base", "extension tools"] {
        assert!(msg.contains(w), "{w} missing from: {msg}");
    }
    assert_eq!(layers(&e.sys), before);
    assert_eq!(boot_snapshot(&e.sys), boot);
    assert!(
        !refs(&e.srepo())
            .iter()
            .any(|r| r.starts_with("arbor/composed/") && !r.ends_with(&before[0].0)),
        "{:?}",
        refs(&e.srepo())
    );
    assert!(!deployments(&e.sys).iter().any(|d| d["base"] == v2.as_str()));
    both_fscks(&e.sys);
}

/// After the origin ref moved on, the old base is only the base of
/// composed deployments; ostree's own cleanup (and a depth-0 prune) keep
/// it (`arbor/bases/HEX`), so rolling back and then removing or adding an
/// extension, which compose on that base, still work.
#[test]
fn ostree_cleanup_keeps_the_base_of_composed_deployments_after_the_ref_moved() {
    if needs_root("ostree_cleanup_keeps_the_base_of_composed_deployments_after_the_ref_moved") {
        return;
    }
    let e = Ext::new();
    let repo = e.srepo();
    let tools = e.tool_dir("tools");
    e.ok("add", &[s(&tools)]);
    let net = e.tool_dir("net");
    e.ok("add", &[s(&net)]);
    let l = layers(&e.sys);
    assert!(
        l.iter()
            .all(|(c, b, x)| c != &e.v1 && b == &e.v1 && !x.is_empty()),
        "every deployment is composed on v1: {l:?}"
    );
    e.release("v2\n", "1", "1577923200");
    pull(&e);
    run_ok(ostree().args(["admin", "cleanup", &format!("--sysroot={}", s(&e.sys))]));
    run_ok(ostree().args([
        "prune",
        &format!("--repo={}", s(&repo)),
        "--refs-only",
        "--depth=0",
    ]));
    assert!(has_commit(&repo, &e.v1), "the base v1 was pruned");
    assert!(
        refs(&repo).contains(&format!("arbor/bases/{}", e.v1)),
        "{:?}",
        refs(&repo)
    );
    both_fscks(&e.sys);
    run_ok(arbor().args(["rollback", "--sysroot", s(&e.sys)]));
    let l = layers(&e.sys);
    assert_eq!(l[0].2.len(), 1, "{l:?}");
    e.ok("remove", &["tools"]);
    assert_eq!(layers(&e.sys)[0], (e.v1.clone(), e.v1.clone(), vec![]));
    let root = root_of(&e.sys, 0);
    assert_eq!(read(&root.join("usr/share/marker")), "v1\n");
    assert!(!root.join("usr/bin/tools-tool").exists());
    both_fscks(&e.sys);
    e.ok("add", &[s(&net)]);
    let l = layers(&e.sys);
    assert_eq!(l[0].1, e.v1);
    commit_of(&l[0].2, "net");
    assert!(root_of(&e.sys, 0).join("usr/bin/net-tool").is_file());
    crate::config_apply::ostree_reads(&e.sys);
    both_fscks(&e.sys);
}
