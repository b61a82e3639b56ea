//! Operations refused before anything changes: a read-only sysroot, a
//! commit ostree could not write boot entries for.

use std::path::PathBuf;

use crate::sysroot::{boot_state, needs_root, ostree_commit, status_json};
use crate::sysroot_ops::{machine, sys_arbor};
use crate::util::{arbor, ostree, run_fail, run_ok, s};

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
    // The refused checkout was removed again (its .origin too, which
    // boot_state covers).
    let leftovers: Vec<_> = std::fs::read_dir(sys.join("ostree/deploy/testos/deploy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&bad))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
