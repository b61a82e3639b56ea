//! upgrade, switch, rollback, undeploy, pin and kargs on a sysroot fed by
//! `arbor serve`.

use std::path::{Path, PathBuf};

use crate::sysroot::{booted_root, deployment_dir, needs_root, source, status_json, Source};
use crate::util::{arbor, ostree, run_fail, run_ok, s, ArborServe};

/// A sysroot whose stateroot `testos` follows `origin:testos/stable`,
/// served by `arbor serve` from the source repository, with v1 deployed.
pub(crate) struct Machine {
    pub src: Source,
    pub sys: PathBuf,
    pub server: ArborServe,
}

pub(crate) fn machine() -> Machine {
    let src = source();
    let sys = src.dir.path().join("sysroot");
    let server = ArborServe::start(&src.repo);
    run_ok(arbor().args(["admin", "init-fs"]).arg(&sys));
    run_ok(arbor().args(["admin", "os-init", "--sysroot", s(&sys), "testos"]));
    let repo = sys.join("ostree/repo");
    run_ok(arbor().args([
        "remote",
        "add",
        "--repo",
        s(&repo),
        "--no-gpg-verify",
        "origin",
        server.url(),
    ]));
    run_ok(arbor().args(["pull", "--repo", s(&repo), "origin", "testos/stable"]));
    run_ok(arbor().args([
        "deploy",
        "--sysroot",
        s(&sys),
        "--os",
        "testos",
        "--karg=root=LABEL=rootfs",
        "origin:testos/stable",
    ]));
    Machine { src, sys, server }
}

pub(crate) fn sys_arbor(sys: &Path, args: &[&str]) -> std::process::Command {
    let mut c = arbor();
    let (sub, rest) = args.split_first().unwrap();
    c.arg(sub).arg("--sysroot").arg(sys).args(rest);
    c
}

pub(crate) fn checksums(sys: &Path) -> Vec<String> {
    status_json(sys, None)["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{}.{}", d["checksum"].as_str().unwrap(), d["deployserial"]))
        .collect()
}

#[test]
fn upgrade_check_download_and_deploy() {
    if needs_root("upgrade_check_download_and_deploy") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    // Nothing new: --check exits 77, upgrade is a no-op.
    let out = sys_arbor(&sys, &["upgrade", "--check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("No update available."));
    assert!(run_ok(&mut sys_arbor(&sys, &["upgrade"])).contains("No update available."));
    // Pin v1, then v2 is released.
    run_ok(&mut sys_arbor(&sys, &["pin", "0"]));
    m.src.release_v2();
    let out = run_ok(&mut sys_arbor(&sys, &["upgrade", "--check"]));
    assert!(out.contains(&format!("-> {}", m.src.v2)), "{out}");
    assert_eq!(checksums(&sys), [format!("{}.0", m.src.v1)]);
    // --download-only: in the repository, not deployed.
    run_ok(&mut sys_arbor(&sys, &["upgrade", "--download-only"]));
    let repo = sys.join("ostree/repo");
    let head = run_ok(arbor().args(["rev-parse", "--repo", s(&repo), "origin:testos/stable"]));
    assert_eq!(head.trim(), m.src.v2);
    assert_eq!(checksums(&sys), [format!("{}.0", m.src.v1)]);
    // An origin marked unconfigured (as a vendor image ships it) is refused
    // with its message, as ostree's upgrader does.
    let v1_origin = PathBuf::from(format!(
        "{}.origin",
        deployment_dir(&sys, &m.src.v1, 0).display()
    ));
    let pinned = std::fs::read_to_string(&v1_origin).unwrap();
    assert!(pinned.contains("pinned=true"), "{pinned}");
    std::fs::write(
        &v1_origin,
        pinned.replace(
            "refspec=origin:testos/stable\n",
            "refspec=origin:testos/stable\nunconfigured-state=Register this machine first\n",
        ),
    )
    .unwrap();
    for args in [&["upgrade"][..], &["upgrade", "--check"]] {
        let err = run_fail(&mut sys_arbor(&sys, args));
        assert!(
            String::from_utf8_lossy(&err.stderr)
                .contains("origin unconfigured-state: Register this machine first"),
            "{err:?}"
        );
    }
    assert_eq!(checksums(&sys), [format!("{}.0", m.src.v1)]);
    // A commit override (rpm-ostree deploy CHECKSUM) is dropped by an
    // upgrade, which follows the ref again, as rpm-ostree upgrade does.
    std::fs::write(
        &v1_origin,
        pinned.replace(
            "refspec=origin:testos/stable\n",
            &format!(
                "refspec=origin:testos/stable\noverride-commit={}\n",
                m.src.v1
            ),
        ),
    )
    .unwrap();
    // The upgrade deploys v2 with the origin carried forward, kernel
    // arguments kept and the pin (transient state) not copied.
    run_ok(&mut sys_arbor(&sys, &["upgrade"]));
    assert_eq!(
        checksums(&sys),
        [format!("{}.0", m.src.v2), format!("{}.0", m.src.v1)]
    );
    let v = status_json(&sys, None);
    let d = v["deployments"].as_array().unwrap();
    assert_eq!(d[0]["origin"], "origin:testos/stable");
    assert_eq!(d[0]["kargs"], "root=LABEL=rootfs");
    assert_eq!(
        (d[0]["pinned"].clone(), d[1]["pinned"].clone()),
        (false.into(), true.into())
    );
    let origin = std::fs::read_to_string(format!(
        "{}.origin",
        deployment_dir(&sys, &m.src.v2, 0).display()
    ))
    .unwrap();
    assert_eq!(origin, "[origin]\nrefspec=origin:testos/stable\n");
    // Upgrading again: nothing to do.
    assert!(run_ok(&mut sys_arbor(&sys, &["upgrade"])).contains("No update available."));
    drop(m.server);
}

#[test]
fn rollback_undeploy_pin_and_kargs() {
    if needs_root("rollback_undeploy_pin_and_kargs") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    m.src.release_v2();
    run_ok(&mut sys_arbor(&sys, &["upgrade"]));
    let (v1, v2) = (format!("{}.0", m.src.v1), format!("{}.0", m.src.v2));
    assert_eq!(checksums(&sys), [v2.clone(), v1.clone()]);
    // Rollback (nothing booted: the second becomes the default), and back.
    let out = run_ok(&mut sys_arbor(&sys, &["rollback"]));
    assert!(out.contains("Deployment 1 is now the default"), "{out}");
    assert_eq!(checksums(&sys), [v1.clone(), v2.clone()]);
    assert!(
        std::fs::read_to_string(sys.join("boot/loader/entries/ostree-2-testos.conf"))
            .unwrap()
            .contains("title TestOS 1 1.0 (ostree:0)")
    );
    // Booted into v2 (now index 1): rollback makes the booted one the default.
    let on_v2 = booted_root(&sys, 1);
    let mut c = sys_arbor(&sys, &["rollback"]);
    c.env("ARBOR_TEST_ROOT", &on_v2);
    run_ok(&mut c);
    assert_eq!(checksums(&sys), [v2.clone(), v1.clone()]);
    // Booted into v2 (index 0): rollback to v1, undeploying it refused
    // only while it is booted.
    let on_v2 = booted_root(&sys, 0);
    let mut c = sys_arbor(&sys, &["undeploy", "0"]);
    c.env("ARBOR_TEST_ROOT", &on_v2);
    let err = run_fail(&mut c);
    assert!(String::from_utf8_lossy(&err.stderr).contains("Cannot undeploy currently booted"));
    run_fail(&mut sys_arbor(&sys, &["undeploy", "5"]));
    // Pin and unpin.
    run_ok(&mut sys_arbor(&sys, &["pin", "1"]));
    assert_eq!(status_json(&sys, None)["deployments"][1]["pinned"], true);
    assert!(run_ok(&mut sys_arbor(&sys, &["pin", "1"])).contains("already pinned"));
    // ostree sees the pin too.
    let ost = run_ok(ostree().args(["admin", "status", &format!("--sysroot={}", s(&sys))]));
    assert!(ost.contains("Pinned: yes"), "{ost}");
    run_ok(&mut sys_arbor(&sys, &["unpin", "1"]));
    assert_eq!(status_json(&sys, None)["deployments"][1]["pinned"], false);
    // Kernel arguments: append, replace, delete; new entries each time.
    assert_eq!(
        run_ok(&mut sys_arbor(&sys, &["kargs"])).trim(),
        "root=LABEL=rootfs"
    );
    let k = run_ok(&mut sys_arbor(
        &sys,
        &["kargs", "--append", "console=ttyS0", "--append", "quiet"],
    ));
    assert_eq!(k.trim(), "root=LABEL=rootfs console=ttyS0 quiet");
    let k = run_ok(&mut sys_arbor(
        &sys,
        &["kargs", "--replace", "console=hvc0", "--delete", "quiet"],
    ));
    assert_eq!(k.trim(), "root=LABEL=rootfs console=hvc0");
    let entry =
        std::fs::read_to_string(sys.join("boot/loader/entries/ostree-2-testos.conf")).unwrap();
    let options = entry
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .unwrap();
    // ostree= keeps its position, as ostree keeps it.
    let words: Vec<&str> = options.split(' ').collect();
    assert_eq!(words.len(), 3, "{options}");
    assert!(words[1].starts_with("ostree=/ostree/boot."), "{options}");
    assert_eq!((words[0], words[2]), ("root=LABEL=rootfs", "console=hvc0"));
    // The other deployment's arguments did not change.
    assert_eq!(
        run_ok(&mut sys_arbor(&sys, &["kargs", "--index", "1"])).trim(),
        "root=LABEL=rootfs"
    );
    for bad in [
        ["--delete", "nope"],
        ["--append", "ostree=/x"],
        ["--append", "a b"],
    ] {
        let mut a = vec!["kargs"];
        a.extend(bad);
        run_fail(&mut sys_arbor(&sys, &a));
    }
    // Undeploy the rollback; the deployment directory goes with cleanup.
    run_ok(&mut sys_arbor(&sys, &["undeploy", "1"]));
    assert_eq!(checksums(&sys), std::slice::from_ref(&v2));
    assert!(!deployment_dir(&sys, &m.src.v1, 0).exists());
    // Both fscks are clean and ostree lists the same deployment.
    let repo = sys.join("ostree/repo");
    run_ok(arbor().args(["fsck", "--repo", s(&repo)]));
    run_ok(ostree().args(["fsck", &format!("--repo={}", s(&repo))]));
    let ost = run_ok(ostree().args(["admin", "status", &format!("--sysroot={}", s(&sys))]));
    assert!(ost.contains(&format!("testos {v2}")), "{ost}");
}

#[test]
fn switch_follows_another_ref() {
    if needs_root("switch_follows_another_ref") {
        return;
    }
    let m = machine();
    let sys = m.sys.clone();
    // A second branch upstream, pointing at a commit with other contents.
    let tree = m.src.dir.path().join("tree-testing");
    crate::sysroot::os_tree(&tree, &[("testing.conf", "t=1\n")]);
    run_ok(ostree().args([
        &format!("--repo={}", s(&m.src.repo)),
        "commit",
        "-b",
        "testos/testing",
        "--owner-uid=0",
        "--owner-gid=0",
        "--add-metadata-string=version=3.0",
        s(&tree),
    ]));
    run_ok(ostree().args(["summary", "-u", &format!("--repo={}", s(&m.src.repo))]));
    let out = run_ok(&mut sys_arbor(&sys, &["switch", "origin:testos/testing"]));
    assert!(
        out.contains("Switched testos to origin:testos/testing"),
        "{out}"
    );
    let v = status_json(&sys, None);
    let d = &v["deployments"][0];
    assert_eq!(d["origin"], "origin:testos/testing");
    assert_eq!(d["version"], "3.0");
    let c = d["checksum"].as_str().unwrap();
    assert!(deployment_dir(&sys, c, 0)
        .join("etc/testing.conf")
        .is_file());
    // From now on, upgrade follows the new ref.
    let out = sys_arbor(&sys, &["upgrade", "--check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    run_fail(&mut sys_arbor(
        &sys,
        &["switch", "origin:testos/nonexistent"],
    ));
}

/// Every file below `dir` with its inode, mode and content.
fn inode_snapshot(dir: &Path) -> Vec<(String, u64, u32, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let content = if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            Vec::new()
        } else if md.file_type().is_symlink() {
            std::fs::read_link(&p)
                .unwrap()
                .to_string_lossy()
                .as_bytes()
                .to_vec()
        } else {
            std::fs::read(&p).unwrap()
        };
        let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
        out.push((rel, md.ino(), md.mode(), content));
    }
    out.sort();
    out
}

#[test]
fn var_is_shared_and_usr_is_never_modified() {
    if needs_root("var_is_shared_and_usr_is_never_modified") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    // State the running system wrote to /var (the stateroot's, bind-mounted
    // at boot): it must survive every operation.
    let var = sys.join("ostree/deploy/testos/var");
    std::fs::write(var.join("lib/state.db"), "precious\n").unwrap();
    let v1_usr = deployment_dir(&sys, &m.src.v1, 0).join("usr");
    let before = inode_snapshot(&v1_usr);
    // systemd's update stamps: a new deployment must look updated.
    std::fs::write(var.join(".updated"), "").unwrap();
    std::fs::write(deployment_dir(&sys, &m.src.v1, 0).join("etc/.updated"), "").unwrap();
    // A local ref under ostree/ that is not a deployment ref survives cleanup.
    let repo = sys.join("ostree/repo");
    run_ok(arbor().args([
        "refs",
        "--repo",
        s(&repo),
        "--create",
        "ostree/devel",
        &m.src.v1,
    ]));
    m.src.release_v2();
    run_ok(&mut sys_arbor(&sys, &["upgrade"]));
    run_ok(&mut sys_arbor(
        &sys,
        &["kargs", "--index", "1", "--append", "quiet"],
    ));
    run_ok(&mut sys_arbor(&sys, &["rollback"]));
    run_ok(&mut sys_arbor(&sys, &["cleanup"]));
    // v1's /usr: the same inodes (hardlinks into the repository, never
    // rewritten), modes and contents.
    assert_eq!(inode_snapshot(&v1_usr), before);
    assert_eq!(
        std::fs::read_to_string(var.join("lib/state.db")).unwrap(),
        "precious\n"
    );
    assert!(
        !var.join(".updated").exists(),
        "stateroot var/.updated not removed"
    );
    assert!(!deployment_dir(&sys, &m.src.v2, 0)
        .join("etc/.updated")
        .exists());
    let refs = run_ok(arbor().args(["refs", "--repo", s(&repo)]));
    assert!(refs.contains("ostree/devel"), "{refs}");
    // Deployments have no /var of their own that would shadow the shared one.
    for c in [&m.src.v1, &m.src.v2] {
        let d = deployment_dir(&sys, c, 0);
        assert!(!d.join("var/lib/state.db").exists());
    }
    // Each deployment's /usr files are hardlinks of repository objects.
    use std::os::unix::fs::MetadataExt;
    let tool = std::fs::metadata(deployment_dir(&sys, &m.src.v2, 0).join("usr/bin/tool")).unwrap();
    assert!(tool.nlink() >= 2, "usr/bin/tool is not a hardlink");
}

#[test]
fn retain_keeps_every_deployment() {
    if needs_root("retain_keeps_every_deployment") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    m.src.release_v2();
    run_ok(&mut sys_arbor(&sys, &["upgrade"]));
    // Without --retain, a third deploy keeps only the new one and the merge
    // deployment (the old default); with it, every deployment stays.
    run_ok(&mut sys_arbor(&sys, &["deploy", "--retain", &m.src.v1]));
    assert_eq!(
        checksums(&sys),
        [
            format!("{}.1", m.src.v1),
            format!("{}.0", m.src.v2),
            format!("{}.0", m.src.v1)
        ]
    );
    run_ok(&mut sys_arbor(&sys, &["deploy", &m.src.v2]));
    assert_eq!(
        checksums(&sys),
        [format!("{}.1", m.src.v2), format!("{}.1", m.src.v1)]
    );
    assert!(!deployment_dir(&sys, &m.src.v1, 0).exists());
}

#[test]
fn upgrade_never_deploys_an_older_commit_without_allow_downgrade() {
    if needs_root("upgrade_never_deploys_an_older_commit_without_allow_downgrade") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    m.src.release_v2();
    let repo = sys.join("ostree/repo");
    run_ok(arbor().args(["pull", "--repo", s(&repo), "origin", "testos/stable"]));
    // Follow a local ref (no pull, so no pull-time check), deploy v2, then
    // the ref goes back to v1.
    run_ok(ostree().args([
        &format!("--repo={}", s(&repo)),
        "refs",
        "--create=testos/local",
        &m.src.v2,
    ]));
    run_ok(&mut sys_arbor(&sys, &["switch", "testos/local"]));
    run_ok(ostree().args([
        &format!("--repo={}", s(&repo)),
        "reset",
        "testos/local",
        &m.src.v1,
    ]));
    let err = run_fail(&mut sys_arbor(&sys, &["upgrade"]));
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(msg.contains("older than the deployed"), "{msg}");
    assert_eq!(checksums(&sys)[0], format!("{}.0", m.src.v2));
    run_ok(&mut sys_arbor(&sys, &["upgrade", "--allow-downgrade"]));
    assert_eq!(checksums(&sys)[0], format!("{}.1", m.src.v1));
}

#[test]
fn a_failed_cleanup_says_the_switch_is_done() {
    if needs_root("a_failed_cleanup_says_the_switch_is_done") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    m.src.release_v2();
    // A leftover deployment directory holding a file nobody may delete
    // (chattr +i below its root): cleanup cannot finish.
    let stale = sys.join(format!("ostree/deploy/testos/deploy/{}.9", m.src.v1));
    std::fs::create_dir_all(stale.join("usr")).unwrap();
    std::fs::write(stale.join("usr/stuck"), "x").unwrap();
    run_ok(
        std::process::Command::new("chattr")
            .arg("+i")
            .arg(stale.join("usr/stuck")),
    );
    let err = run_fail(&mut sys_arbor(&sys, &["upgrade"]));
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(
        msg.contains("The new boot configuration is in place, but the final cleanup failed"),
        "{msg}"
    );
    // The switch did happen.
    assert_eq!(
        checksums(&sys),
        [format!("{}.0", m.src.v2), format!("{}.0", m.src.v1)]
    );
    run_ok(
        std::process::Command::new("chattr")
            .arg("-i")
            .arg(stale.join("usr/stuck")),
    );
    run_ok(&mut sys_arbor(&sys, &["cleanup"]));
    assert!(!stale.exists());
}

#[test]
fn reordering_identical_entries_swaps_only_the_bootlinks() {
    if needs_root("reordering_identical_entries_swaps_only_the_bootlinks") {
        return;
    }
    let m = machine();
    let sys = m.sys.clone();
    // v1.1 and v1.0: same kernel, arguments and version.
    run_ok(&mut sys_arbor(&sys, &["deploy", "--retain", &m.src.v1]));
    let link = |p: &str| {
        std::fs::read_link(sys.join(p))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let entries = || {
        let dir = sys.join("boot/loader/entries");
        let mut v: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let (loader, entries_before) = (link("boot/loader"), entries());
    let b = loader.trim_start_matches("loader.").to_string();
    let sub_before = link(&format!("ostree/boot.{b}"));
    let out = run_ok(&mut sys_arbor(&sys, &["rollback"]));
    assert!(out.contains("is now the default"), "{out}");
    assert_eq!(
        checksums(&sys),
        [format!("{}.0", m.src.v1), format!("{}.1", m.src.v1)]
    );
    // The boot loader's entries are untouched; only boot.B -> boot.B.S'
    // moved, and the entries' ostree= links now lead to the other order.
    assert_eq!((link("boot/loader"), entries()), (loader, entries_before));
    let sub_after = link(&format!("ostree/boot.{b}"));
    assert_ne!(sub_after, sub_before);
    assert!(
        !sys.join("ostree").join(&sub_before).exists(),
        "{sub_before}"
    );
    let ost = run_ok(ostree().args(["admin", "status", &format!("--sysroot={}", s(&sys))]));
    let first = ost
        .lines()
        .find(|l| l.contains("testos "))
        .unwrap_or_default();
    assert!(first.contains(&format!("{}.0", m.src.v1)), "{ost}");
}

#[test]
fn works_through_the_ostree_symlink_of_a_booted_system() {
    if needs_root("works_through_the_ostree_symlink_of_a_booted_system") {
        return;
    }
    // A booted system's / has /ostree -> sysroot/ostree and /boot mounted.
    let mut m = machine();
    m.src.release_v2();
    let view = m.src.dir.path().join("view");
    std::fs::create_dir_all(view.join("boot")).unwrap();
    std::os::unix::fs::symlink(m.sys.join("ostree"), view.join("ostree")).unwrap();
    run_ok(
        std::process::Command::new("mount")
            .arg("--bind")
            .arg(m.sys.join("boot"))
            .arg(view.join("boot")),
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(view.join("boot"));
    let repo = m.sys.join("ostree/repo");
    run_ok(arbor().args(["pull", "--repo", s(&repo), "origin", "testos/stable"]));
    run_ok(&mut sys_arbor(&view, &["deploy", "origin:testos/stable"]));
    run_ok(&mut sys_arbor(&view, &["cleanup"]));
    assert_eq!(
        checksums(&view),
        [format!("{}.0", m.src.v2), format!("{}.0", m.src.v1)]
    );
    assert_eq!(checksums(&m.sys), checksums(&view));
}

#[test]
fn cleanup_removes_temporary_names_a_killed_write_left() {
    if needs_root("cleanup_removes_temporary_names_a_killed_write_left") {
        return;
    }
    let m = machine();
    let sys = m.sys.clone();
    // What a process killed between creating a temporary name and renaming
    // it into place leaves (arbor_fs's `.NAME.tmp-PID-N`): a bootlink, an
    // origin file, and a legacy fixed-name bootlink.
    let ostree_dir = sys.join("ostree");
    let deploy_dir = sys.join("ostree/deploy/testos/deploy");
    let leftovers = [
        ostree_dir.join(".boot.1.tmp-4242-0"),
        ostree_dir.join("boot.1.tmp"),
        deploy_dir.join(format!(".{}.0.origin.tmp-4242-1", m.src.v1)),
        // Of /boot/ostree/finalize-failure.stamp.
        sys.join("boot/ostree/.finalize-failure.stamp.tmp-4242-2"),
    ];
    std::os::unix::fs::symlink("boot.1.0", &leftovers[0]).unwrap();
    std::os::unix::fs::symlink("boot.1.0", &leftovers[1]).unwrap();
    std::fs::write(&leftovers[2], "[origin]\n").unwrap();
    std::fs::create_dir_all(sys.join("boot/ostree")).unwrap();
    std::fs::write(&leftovers[3], "error").unwrap();
    // Not ours: kept.
    let foreign = deploy_dir.join(".keep.tmp-x-1");
    std::fs::write(&foreign, "").unwrap();
    run_ok(&mut sys_arbor(&sys, &["cleanup"]));
    for l in &leftovers {
        assert!(
            l.symlink_metadata().is_err(),
            "{} survived cleanup",
            l.display()
        );
    }
    assert!(foreign.exists());
    assert_eq!(checksums(&sys), [format!("{}.0", m.src.v1)]);
}
