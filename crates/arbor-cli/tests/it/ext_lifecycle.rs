//! `extension add|remove` over time: replacing a name, removing every
//! file of an extension, rolling back to the previous list, `/etc`
//! content and drift; deploys and switches that re-compose the list or
//! opt out.

use serde_json::Value;

use crate::config_apply::{ostree_reads, read, root_of};
use crate::ext_util::{both_fscks, checkout, commit_of, layers, paths, stderr, tool_files, Ext};
use crate::sysroot::{needs_root, put};
use crate::util::{arbor, ostree, run_fail, run_ok, s};

#[test]
fn replacing_a_name_keeps_its_place_and_drops_its_old_files() {
    if needs_root("replacing_a_name_keeps_its_place_and_drops_its_old_files") {
        return;
    }
    let e = Ext::new();
    let a1 = e.ext_dir("a", &[("usr/share/a/one", "1\n")], Some("1"));
    let b = e.ext_dir("b", &[("usr/share/b/file", "b\n")], Some("1"));
    e.ok("add", &[s(&a1), s(&b)]);
    let before = layers(&e.sys)[0].2.clone();
    assert_eq!(before.len(), 2);
    assert!(
        before[0].starts_with("a:") && before[1].starts_with("b:"),
        "{before:?}"
    );
    let a2 = e.ext_dir("a", &[("usr/share/a/two", "2\n")], Some("1"));
    e.ok("add", &[s(&a2)]);
    let after = layers(&e.sys)[0].2.clone();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after[0].starts_with("a:"), "replaced in place: {after:?}");
    assert_ne!(after[0], before[0]);
    assert_eq!(after[1], before[1]);
    let root = root_of(&e.sys, 0);
    assert!(!root.join("usr/share/a/one").exists());
    assert_eq!(read(&root.join("usr/share/a/two")), "2\n");
    assert_eq!(read(&root.join("usr/share/b/file")), "b\n");
}

#[test]
fn remove_removes_every_file_of_the_extension() {
    if needs_root("remove_removes_every_file_of_the_extension") {
        return;
    }
    let e = Ext::new();
    // Files in new directories, in existing deep ones, and a symlink.
    let dir = e.ext_dir(
        "big",
        &[
            ("usr/share/big/a/b/c/deep", "deep\n"),
            ("usr/lib/systemd/system/big.service", "[Unit]\n"),
            ("usr/lib/modules/6.1.0-test/extra/big.ko", "KO\n"),
            ("usr/bin/big", "#!/bin/sh\n"),
            ("opt/big/data", "opt\n"),
        ],
        Some("1"),
    );
    std::os::unix::fs::symlink("big", dir.join("usr/bin/big-link")).unwrap();
    e.ok("add", &[s(&dir)]);
    let small = e.tool_dir("small");
    e.ok("add", &[s(&small)]);
    assert!(root_of(&e.sys, 0)
        .join("usr/share/big/a/b/c/deep")
        .is_file());
    e.ok("remove", &["big"]);
    let l = layers(&e.sys);
    assert_eq!(l[0].1, e.v1);
    assert_eq!(l[0].2.len(), 1, "{l:?}");
    commit_of(&l[0].2, "small");
    // The deployment's /usr is the base's plus `small`'s files, nothing else.
    let root = root_of(&e.sys, 0);
    let expected = checkout(&e, &e.v1);
    for (p, c) in tool_files("small") {
        put(&expected.join(p), c);
    }
    put(
        &expected.join("usr/lib/extension-release.d/extension-release.small"),
        "ID=testos\nVERSION_ID=1\n",
    );
    assert_eq!(paths(&root.join("usr")), paths(&expected.join("usr")));
    assert!(!root.join("opt/big").exists());
    // Removing the last one deploys the base itself.
    e.ok("remove", &["small"]);
    let l = layers(&e.sys);
    assert_eq!(l[0], (e.v1.clone(), e.v1.clone(), vec![]));
    let root = root_of(&e.sys, 0);
    let base = checkout(&e, &e.v1);
    crate::util::assert_same_tree(&base.join("usr"), &root.join("usr"), true);
    let text = run_ok(arbor().args(["status", "--sysroot", s(&e.sys)]));
    let first: Vec<&str> = text.lines().take_while(|l| !l.contains("State:")).collect();
    assert!(!first.iter().any(|l| l.contains("Extension: ")), "{text}");
    both_fscks(&e.sys);
}

#[test]
fn removing_an_unknown_name_lists_the_known_ones() {
    if needs_root("removing_an_unknown_name_lists_the_known_ones") {
        return;
    }
    let e = Ext::new();
    let a = e.tool_dir("alpha");
    let b = e.tool_dir("beta");
    e.ok("add", &[s(&a), s(&b)]);
    let before = crate::config_apply::boot_snapshot(&e.sys);
    let err = run_fail(&mut e.cmd("remove", &["gamma"]));
    let msg = stderr(&err);
    for w in ["gamma", "alpha", "beta"] {
        assert!(msg.contains(w), "{w} missing from: {msg}");
    }
    // A known name with an unknown one: nothing removed.
    run_fail(&mut e.cmd("remove", &["alpha", "gamma"]));
    assert_eq!(crate::config_apply::boot_snapshot(&e.sys), before);
}

#[test]
fn rollback_restores_the_previous_list() {
    if needs_root("rollback_restores_the_previous_list") {
        return;
    }
    let e = Ext::new();
    let a = e.tool_dir("alpha");
    e.ok("add", &[s(&a)]);
    let one = layers(&e.sys)[0].clone();
    let b = e.tool_dir("beta");
    e.ok("add", &[s(&b)]);
    let two = layers(&e.sys)[0].clone();
    assert_eq!(two.2.len(), 2);
    run_ok(arbor().args(["rollback", "--sysroot", s(&e.sys)]));
    let l = layers(&e.sys);
    assert_eq!(
        l[0], one,
        "rollback puts the one-extension deployment first"
    );
    assert_eq!(l[1], two);
    let root = root_of(&e.sys, 0);
    assert!(root.join("usr/bin/alpha-tool").is_file());
    assert!(!root.join("usr/bin/beta-tool").exists());
    let text = run_ok(arbor().args(["status", "--sysroot", s(&e.sys)]));
    let first: String = text
        .lines()
        .take_while(|l| !l.contains("State:"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(first.contains("Extension: alpha ("), "{text}");
    assert!(!first.contains("Extension: beta ("), "{text}");
    // The list shows what boots next.
    let list = e.ok("list", &[]);
    assert!(list.contains("alpha"), "{list}");
    ostree_reads(&e.sys);
}

/// An extension's `etc/` is composed into `usr/etc` (the OS defaults), so
/// the /etc merge brings its files to the new deployment's /etc; removing
/// the extension removes them from both. A file the admin edited in /etc
/// is the admin's from then on: the /etc merge keeps the edited copy when
/// the extension (its default) goes away, as it keeps any modified file
/// whose default was removed.
#[test]
fn etc_content_goes_to_usr_etc_and_leaves_with_the_extension() {
    if needs_root("etc_content_goes_to_usr_etc_and_leaves_with_the_extension") {
        return;
    }
    let e = Ext::new();
    let dir = e.ext_dir(
        "conf",
        &[
            ("etc/foo.conf", "foo=1\n"),
            ("etc/edited.conf", "edited=1\n"),
            ("usr/share/conf/x", "x\n"),
        ],
        Some("1"),
    );
    e.ok("add", &[s(&dir)]);
    let root = root_of(&e.sys, 0);
    assert_eq!(read(&root.join("usr/etc/foo.conf")), "foo=1\n");
    assert_eq!(read(&root.join("etc/foo.conf")), "foo=1\n");
    assert_eq!(read(&root.join("etc/edited.conf")), "edited=1\n");
    // Nothing at the top level: etc/ is not a root directory of the commit.
    let composed = &layers(&e.sys)[0].0;
    let top = run_ok(ostree().args(["ls", &format!("--repo={}", s(&e.srepo())), composed, "/"]));
    assert!(!top.contains(" /etc"), "{top}");
    // The admin edits one of them.
    std::fs::write(root.join("etc/edited.conf"), "edited=ADMIN\n").unwrap();
    e.ok("remove", &["conf"]);
    let root = root_of(&e.sys, 0);
    assert!(!root.join("usr/etc/foo.conf").exists());
    assert!(!root.join("etc/foo.conf").exists());
    assert!(!root.join("usr/etc/edited.conf").exists());
    assert_eq!(read(&root.join("etc/edited.conf")), "edited=ADMIN\n");
    assert!(!root.join("usr/share/conf").exists());
}

#[test]
fn drift_compares_usr_with_the_composed_commit() {
    if needs_root("drift_compares_usr_with_the_composed_commit") {
        return;
    }
    let e = Ext::new();
    let dir = e.tool_dir("tools");
    e.ok("add", &[s(&dir)]);
    let drift = |args: &[&str]| {
        arbor()
            .args(["drift", "--sysroot", s(&e.sys), "--json"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = drift(&[]);
    assert_eq!(out.status.code(), Some(0), "drift after add: {out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["usr"], Value::Array(vec![]), "{r:#}");
    let root = root_of(&e.sys, 0);
    let tool = root.join("usr/bin/tools-tool");
    crate::config_drift::replace(&tool, "#!/bin/sh\necho evil\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = drift(&[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        crate::config_drift::changes(&r, "usr"),
        crate::config_drift::want(&[("/usr/bin/tools-tool", &["modified"])]),
        "{r:#}"
    );
}

#[test]
fn deploy_dry_run_previews_the_composed_commit_and_no_extensions_opts_out() {
    if needs_root("deploy_dry_run_previews_the_composed_commit_and_no_extensions_opts_out") {
        return;
    }
    let e = Ext::new();
    let dir = e.tool_dir("tools");
    e.ok("add", &[s(&dir)]);
    let l = layers(&e.sys);
    let composed = l[0].0.clone();
    assert_eq!(l[0].1, e.v1);
    let sys_cmd = |args: &[&str]| {
        let mut c = arbor();
        c.arg(args[0])
            .args(["--sysroot", s(&e.sys), "--os", "testos"])
            .args(&args[1..]);
        c
    };
    // The preview shows what the deploy deploys: the list re-composed on
    // the revision's base (the same composed commit), unless opted out.
    let out = run_ok(&mut sys_cmd(&[
        "deploy",
        "--dry-run",
        "origin:testos/stable",
    ]));
    assert!(out.contains(&format!("Would deploy {composed}")), "{out}");
    let out = run_ok(&mut sys_cmd(&[
        "deploy",
        "--dry-run",
        "--no-extensions",
        "origin:testos/stable",
    ]));
    assert!(out.contains(&format!("Would deploy {}", e.v1)), "{out}");
    assert_eq!(layers(&e.sys), l, "a dry run changes nothing");
    // switch: re-composes by default, deploys the ref's commit as it is
    // with --no-extensions.
    run_ok(ostree().args([
        &format!("--repo={}", s(&e.srepo())),
        "refs",
        "--create=testos/local",
        &e.v1,
    ]));
    run_ok(&mut sys_cmd(&["switch", "testos/local"]));
    let tools = commit_of(&l[0].2, "tools");
    assert_eq!(
        layers(&e.sys)[0],
        (
            composed.clone(),
            e.v1.clone(),
            vec![format!("tools:{tools}")]
        )
    );
    run_ok(&mut sys_cmd(&[
        "switch",
        "--no-extensions",
        "origin:testos/stable",
    ]));
    assert_eq!(layers(&e.sys)[0], (e.v1.clone(), e.v1.clone(), vec![]));
    assert!(!root_of(&e.sys, 0).join("usr/bin/tools-tool").exists());
    // deploy: the same.
    e.ok("add", &[s(&dir)]);
    assert_eq!(layers(&e.sys)[0].0, composed);
    run_ok(&mut sys_cmd(&[
        "deploy",
        "--no-extensions",
        "origin:testos/stable",
    ]));
    assert_eq!(layers(&e.sys)[0], (e.v1.clone(), e.v1.clone(), vec![]));
    run_ok(&mut sys_cmd(&["deploy", "testos/local"]));
    assert_eq!(layers(&e.sys)[0], (e.v1.clone(), e.v1.clone(), vec![]));
    ostree_reads(&e.sys);
    both_fscks(&e.sys);
}
