//! Operations refused before anything changes: a read-only sysroot, a
//! commit ostree could not write boot entries for.

use std::path::{Path, PathBuf};

use crate::sysroot::{
    assert_same_map, boot_state, deploy, needs_root, ostree_commit, prepare, source, status_json,
    Tool,
};
use crate::sysroot_ops::{machine, sys_arbor};
use crate::util::{arbor, ostree, require_ostree, run_fail, run_ok, s};

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_sysroot_is_refused_before_anything_changes() {
    if needs_root("a_read_only_sysroot_is_refused_before_anything_changes") {
        return;
    }
    let m = machine();
    let view = m.src.dir.path().join("ro-view");
    std::fs::create_dir(&view).unwrap();
    run_ok(
        std::process::Command::new("mount")
            .arg("--bind")
            .arg(&m.sys)
            .arg(&view),
    );
    let _guard = Mounted(view.clone());
    run_ok(
        std::process::Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&view),
    );
    let before = run_ok(&mut sys_arbor(&view, &["status"]));
    for args in [
        &["deploy", "--os", "testos", m.src.v1.as_str()][..],
        &["undeploy", "0"],
        &["cleanup"],
        &["kargs", "--append", "quiet"],
    ] {
        let err = run_fail(&mut sys_arbor(&view, args));
        let msg = String::from_utf8_lossy(&err.stderr);
        assert!(msg.contains("is mounted read-only"), "{args:?}: {msg}");
    }
    assert_eq!(run_ok(&mut sys_arbor(&view, &["status"])), before);
}

#[test]
fn a_commit_without_os_release_is_refused_as_ostree_refuses_it() {
    if needs_root("a_commit_without_os_release_is_refused_as_ostree_refuses_it") {
        return;
    }
    let m = machine();
    let sys = m.sys.clone();
    // Upstream publishes a tree without usr/lib/os-release or etc/os-release.
    let tree = m.src.dir.path().join("tree-noname");
    crate::sysroot::os_tree(&tree, &[("a.conf", "a=1\n")]);
    std::fs::remove_file(tree.join("usr/lib/os-release")).unwrap();
    let bad = ostree_commit(&m.src.repo, &tree, "9.0", "1578009600");
    run_ok(ostree().args(["summary", "-u", &format!("--repo={}", s(&m.src.repo))]));
    let before_status = status_json(&sys, None);
    let before_boot = boot_state(&sys);
    let err = run_fail(&mut sys_arbor(&sys, &["upgrade"]));
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(
        msg.contains("the deployment has no /usr/lib/os-release or /etc/os-release"),
        "{msg}"
    );
    // The machine boots as before; the repository is clean.
    assert_eq!(status_json(&sys, None), before_status);
    assert_eq!(boot_state(&sys), before_boot);
    run_ok(arbor().args(["fsck", "--repo", s(&sys.join("ostree/repo"))]));
    // An os-release without PRETTY_NAME or ID: refused too, naming the file.
    std::fs::write(tree.join("usr/lib/os-release"), "NAME=x\n").unwrap();
    ostree_commit(&m.src.repo, &tree, "9.1", "1578096000");
    run_ok(ostree().args(["summary", "-u", &format!("--repo={}", s(&m.src.repo))]));
    let err = run_fail(&mut sys_arbor(&sys, &["upgrade"]));
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(
        msg.contains("No PRETTY_NAME or ID in /usr/lib/os-release"),
        "{msg}"
    );
    assert_eq!(boot_state(&sys), before_boot);
    // The refused checkouts were removed again (their .origin files too,
    // which boot_state covers).
    assert_eq!(deployment_names(&sys), before_names(&before_status));
    let _ = bad;
}

/// The `CSUM.SERIAL` directories of stateroot testos.
fn deployment_names(sys: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(sys.join("ostree/deploy/testos/deploy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".origin"))
        .collect();
    v.sort();
    v
}

fn before_names(status: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = status["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{}.{}", d["checksum"].as_str().unwrap(), d["deployserial"]))
        .collect();
    v.sort();
    v
}

fn previews(sys: &Path) -> Vec<String> {
    std::fs::read_dir(sys.join("ostree/repo/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("arbor-etc-preview-"))
        .collect()
}

#[test]
fn a_failed_merge_leaves_no_checkout_and_previews_leave_no_copy_of_etc() {
    if needs_root("a_failed_merge_leaves_no_checkout_and_previews_leave_no_copy_of_etc") {
        return;
    }
    let m = machine();
    let sys = m.sys.clone();
    let dep = sys.join(format!("ostree/deploy/testos/deploy/{}.0", m.src.v1));
    std::fs::write(dep.join("etc/modified-by-admin.conf"), "b=ADMIN\n").unwrap();
    // Upstream makes the admin's modified file a directory: ostree's
    // "newly defaults to directory" refusal.
    let tree = m.src.dir.path().join("tree-dir");
    crate::sysroot::os_tree(&tree, &[("modified-by-admin.conf/inner", "i\n")]);
    let bad = ostree_commit(&m.src.repo, &tree, "5.0", "1578009600");
    run_ok(ostree().args(["summary", "-u", &format!("--repo={}", s(&m.src.repo))]));
    let before_status = status_json(&sys, None);
    let before_boot = boot_state(&sys);
    // The preview fails as the deploy will, and leaves no copy of /etc.
    run_ok(&mut sys_arbor(&sys, &["upgrade", "--download-only"]));
    let err = run_fail(&mut sys_arbor(
        &sys,
        &["deploy", "--dry-run", "--os", "testos", &bad],
    ));
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(msg.contains("The /etc merge would fail"), "{msg}");
    assert!(
        msg.contains("newly defaults to directory 'modified-by-admin.conf'"),
        "{msg}"
    );
    assert!(previews(&sys).is_empty(), "{:?}", previews(&sys));
    let err = run_fail(&mut sys_arbor(&sys, &["upgrade"]));
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(msg.contains("newly defaults to directory"), "{msg}");
    assert_eq!(status_json(&sys, None), before_status);
    assert_eq!(boot_state(&sys), before_boot);
    assert_eq!(deployment_names(&sys), before_names(&before_status));
    // A preview killed midway leaves its copy of /etc (secrets included)
    // in the repository's tmp/: cleanup removes it, as does the next preview.
    let stale = sys.join("ostree/repo/tmp/arbor-etc-preview-4242/result");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("shadow"), "root:secret\n").unwrap();
    run_ok(&mut sys_arbor(&sys, &["cleanup"]));
    assert!(previews(&sys).is_empty(), "{:?}", previews(&sys));
    std::fs::create_dir_all(&stale).unwrap();
    run_ok(&mut sys_arbor(
        &sys,
        &["deploy", "--dry-run", "--os", "testos", &m.src.v1],
    ));
    assert!(previews(&sys).is_empty(), "{:?}", previews(&sys));
}

#[test]
fn os_release_only_in_etc_is_read_as_ostree_reads_it() {
    require_ostree();
    if needs_root("os_release_only_in_etc_is_read_as_ostree_reads_it") {
        return;
    }
    let src = source();
    // A tree with its os-release only among the /etc defaults.
    let tree = src.dir.path().join("tree-etc-only");
    crate::sysroot::os_tree(&tree, &[("a.conf", "a=1\n")]);
    std::fs::remove_file(tree.join("usr/lib/os-release")).unwrap();
    std::fs::write(
        tree.join("usr/etc/os-release"),
        "ID=etconly\nPRETTY_NAME=\"EtcOnly 7\"\n",
    )
    .unwrap();
    ostree_commit(&src.repo, &tree, "7.0", "1578009600");
    run_ok(ostree().args(["summary", "-u", &format!("--repo={}", s(&src.repo))]));
    let base = src.dir.path().to_path_buf();
    let (sa, so) = (base.join("arbor-sysroot"), base.join("ostree-sysroot"));
    for (tool, sys) in [(Tool::Arbor, &sa), (Tool::Ostree, &so)] {
        prepare(tool, sys, &src);
        deploy(tool, sys, &["testos/stable"]);
    }
    let a = boot_state(&sa);
    assert_same_map("boot state", &a, &boot_state(&so));
    let entry = a
        .iter()
        .find(|(k, _)| k.contains("/entries/"))
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(
        entry.starts_with("title EtcOnly 7 7.0 (ostree:0)\n"),
        "{entry}"
    );
}
