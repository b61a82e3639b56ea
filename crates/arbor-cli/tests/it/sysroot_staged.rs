//! Staged deployments on a sysroot fed by `arbor serve`: finalized at
//! shutdown by the unit's command, discarded by a new deployment, and seen
//! by `upgrade --check`.

use std::path::Path;

use crate::sysroot::{booted_root, deployment_dir, is_immutable, needs_root, status_json};
use crate::sysroot_ops::{machine, sys_arbor};
use crate::util::{arbor, ostree, run_fail, run_ok, s};

/// The command `dist/systemd/arbor-finalize-staged.service` runs at
/// shutdown, pointed at the built binary and at `sys`.
fn unit_exec_stop(sys: &Path) -> std::process::Command {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../dist/systemd/arbor-finalize-staged.service"),
    )
    .unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStop="))
        .expect("the unit has an ExecStop= line");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "/usr/bin/arbor", "{line}");
    let mut c = arbor();
    for w in &words[1..] {
        // The unit acts on the running system, "/"; the test on `sys`.
        c.arg(if *w == "/" {
            sys.as_os_str()
        } else {
            std::ffi::OsStr::new(w)
        });
    }
    c
}

#[test]
fn staged_upgrade_is_finalized_at_shutdown() {
    if needs_root("staged_upgrade_is_finalized_at_shutdown") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    m.src.release_v2();
    // Staging needs a booted system.
    let err = run_fail(&mut sys_arbor(&sys, &["upgrade", "--stage"]));
    assert!(String::from_utf8_lossy(&err.stderr).contains("not booted"));
    let booted = booted_root(&sys, 0);
    let with_boot = |args: &[&str]| {
        let mut c = sys_arbor(&sys, args);
        c.env("ARBOR_TEST_ROOT", &booted);
        c
    };
    let entries = || {
        std::fs::read_dir(sys.join("boot/loader/entries"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("conf".as_ref()))
            .count()
    };
    let loader = || std::fs::read_link(sys.join("boot/loader")).unwrap();
    // Another tool's key in the booted entry (bootc's x-options-source-*):
    // recorded with the stage (bootconfig-extra, as ostree 2026.4) and
    // written into the finalized entry.
    let booted_entry = sys.join("boot/loader/entries/ostree-1-testos.conf");
    let mut text = std::fs::read_to_string(&booted_entry).unwrap();
    text.push_str("x-options-source-test quiet\n");
    std::fs::write(&booted_entry, text).unwrap();
    let loader_before = loader();
    let out = run_ok(&mut with_boot(&["upgrade", "--stage"]));
    assert!(out.contains("Staged testos"), "{out}");
    let rec = arbor_sysroot::staged::StagedState::decode(
        &std::fs::read(sys.join("run/ostree/staged-deployment")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        rec.bootconfig_extra,
        [("x-options-source-test".to_string(), "quiet".to_string())]
    );
    // Staged: listed first, no boot entry yet, the record in run/ostree.
    let v = status_json(&sys, Some(&booted));
    let d = v["deployments"].as_array().unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(
        (d[0]["staged"].clone(), d[0]["checksum"].clone()),
        (true.into(), m.src.v2.clone().into())
    );
    assert_eq!(d[1]["booted"], true);
    let human = run_ok(&mut with_boot(&["status"]));
    assert!(
        human.contains(&format!("  testos {}.0 (staged)", m.src.v2)),
        "{human}"
    );
    assert_eq!((entries(), loader()), (1, loader_before.clone()));
    assert!(sys.join("run/ostree/staged-deployment").is_file());
    // Not sealed yet: finalization still writes its /etc.
    assert!(!is_immutable(&deployment_dir(&sys, &m.src.v2, 0)));
    // Its kernel arguments cannot be edited silently.
    let err = run_fail(&mut with_boot(&["kargs", "--append", "x=1"]));
    assert!(String::from_utf8_lossy(&err.stderr).contains("staged"));
    // Nor pinned (as ostree refuses it).
    let err = run_fail(&mut with_boot(&["pin", "0"]));
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("Cannot pin staged deployment"),
        "{err:?}"
    );
    // The admin edits /etc after staging: finalization must keep it.
    let etc = deployment_dir(&sys, &m.src.v1, 0).join("etc");
    std::fs::write(etc.join("modified-by-admin.conf"), "b=AFTER-STAGING\n").unwrap();
    // A locked staged deployment is not finalized.
    std::fs::write(sys.join("run/ostree/staged-deployment-locked"), "").unwrap();
    let mut c = unit_exec_stop(&sys);
    c.env("ARBOR_TEST_ROOT", &booted);
    assert!(run_ok(&mut c).contains("locked"));
    assert_eq!(loader(), loader_before);
    std::fs::remove_file(sys.join("run/ostree/staged-deployment-locked")).unwrap();
    // A record staged with overlay initrds (ostree's --overlay-initrd) is
    // refused, and left in place for the tool that staged it.
    let record = sys.join("run/ostree/staged-deployment");
    let original = std::fs::read(&record).unwrap();
    let mut st = arbor_sysroot::staged::StagedState::decode(&original).unwrap();
    st.overlay_initrds = vec!["ab".repeat(32)];
    std::fs::write(&record, st.encode()).unwrap();
    let mut c = unit_exec_stop(&sys);
    c.env("ARBOR_TEST_ROOT", &booted);
    let err = run_fail(&mut c);
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("overlay initrds"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );
    assert_eq!(std::fs::read(&record).unwrap(), st.encode());
    assert_eq!(loader(), loader_before);
    std::fs::write(&record, &original).unwrap();
    // The failure is left for the next boot, which reports it once.
    let stamp = sys.join("boot/ostree/finalize-failure.stamp");
    assert!(std::fs::read_to_string(&stamp)
        .unwrap()
        .contains("overlay initrds"));
    let err = run_fail(&mut sys_arbor(&sys, &["boot-complete"]));
    assert!(
        String::from_utf8_lossy(&err.stderr)
            .contains("failed on the previous shutdown: Finalizing the staged deployment"),
        "{err:?}"
    );
    assert!(!stamp.exists());
    run_ok(&mut sys_arbor(&sys, &["boot-complete"]));
    // A successful finalization removes an old stamp.
    std::fs::write(&stamp, "an older failure").unwrap();
    // Shutdown: the unit's command finalizes.
    let mut c = unit_exec_stop(&sys);
    c.env("ARBOR_TEST_ROOT", &booted);
    assert!(run_ok(&mut c).contains("Finalized"));
    assert!(!sys.join("run/ostree/staged-deployment").exists());
    assert!(!stamp.exists());
    let v = status_json(&sys, Some(&booted));
    let d = v["deployments"].as_array().unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(
        (d[0]["staged"].clone(), d[0]["checksum"].clone()),
        (false.into(), m.src.v2.clone().into())
    );
    assert_eq!(
        (d[0]["pending"].clone(), d[1]["booted"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(entries(), 2);
    assert!(is_immutable(&deployment_dir(&sys, &m.src.v2, 0)));
    let new_entry =
        std::fs::read_to_string(sys.join("boot/loader/entries/ostree-2-testos.conf")).unwrap();
    assert!(
        new_entry.ends_with("\nx-options-source-test quiet\n"),
        "{new_entry}"
    );
    let merged = deployment_dir(&sys, &m.src.v2, 0).join("etc/modified-by-admin.conf");
    assert_eq!(
        std::fs::read_to_string(merged).unwrap(),
        "b=AFTER-STAGING\n"
    );
    // Nothing staged any more.
    let mut c = unit_exec_stop(&sys);
    c.env("ARBOR_TEST_ROOT", &booted);
    assert!(run_ok(&mut c).contains("No deployment staged"));
    // ostree reads the result.
    let ost = run_ok(ostree().args(["admin", "status", &format!("--sysroot={}", s(&sys))]));
    assert!(ost.contains(&format!("testos {}.0", m.src.v2)), "{ost}");
}

#[test]
fn a_new_deployment_discards_the_staged_one() {
    if needs_root("a_new_deployment_discards_the_staged_one") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    m.src.release_v2();
    let booted = booted_root(&sys, 0);
    let mut c = sys_arbor(&sys, &["upgrade", "--stage"]);
    c.env("ARBOR_TEST_ROOT", &booted);
    run_ok(&mut c);
    assert!(deployment_dir(&sys, &m.src.v2, 0).is_dir());
    // Deploying v1 again (not staged) drops the staged v2, as ostree does.
    let mut c = sys_arbor(&sys, &["deploy", &m.src.v1]);
    c.env("ARBOR_TEST_ROOT", &booted);
    run_ok(&mut c);
    assert!(!sys.join("run/ostree/staged-deployment").exists());
    assert!(!deployment_dir(&sys, &m.src.v2, 0).exists());
    let v = status_json(&sys, Some(&booted));
    let d = v["deployments"].as_array().unwrap();
    assert_eq!(d.len(), 2);
    assert!(d
        .iter()
        .all(|x| x["checksum"] == m.src.v1.as_str() && x["staged"] == false));
}

#[test]
fn upgrade_check_finds_nothing_once_the_update_is_staged() {
    if needs_root("upgrade_check_finds_nothing_once_the_update_is_staged") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    m.src.release_v2();
    let booted = booted_root(&sys, 0);
    let with_boot = |args: &[&str]| {
        let mut c = sys_arbor(&sys, args);
        c.env("ARBOR_TEST_ROOT", &booted);
        c
    };
    run_ok(&mut with_boot(&["upgrade", "--stage"]));
    // Booted in v1 (the merge deployment), v2 staged: nothing to do.
    let out = with_boot(&["upgrade", "--check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("No update available."));
    let out = run_ok(&mut with_boot(&["upgrade"]));
    assert!(out.contains("No update available."), "{out}");
    let v = status_json(&sys, Some(&booted));
    let d = v["deployments"].as_array().unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0]["staged"], true);
}
