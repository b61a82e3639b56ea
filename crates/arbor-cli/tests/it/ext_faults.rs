//! Crash safety of `extension add` (a directory source, so the import is
//! exercised too) and of the re-composing `upgrade`: killed at every named
//! crash point they reach, the sysroot lists exactly the old or the new
//! deployments, the refs keep every commit a deployment runs or lists,
//! `ostree admin status` reads it, both fscks pass, a rerun completes, and
//! after a cleanup no composed or extension ref is left that nothing uses.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use crate::config_apply::ostree_reads;
use crate::ext_basic::{both_fscks, layers, refs, Ext};
use crate::sysroot::{needs_root, unseal_all};
use crate::util::{arbor, run_ok, s};

/// (base, extension names) of each deployment: the directory import's
/// commit may differ between runs, what the sysroot lists may not.
fn lists(sys: &Path) -> Vec<(String, Vec<String>)> {
    layers(sys)
        .into_iter()
        .map(|(_, base, exts)| {
            let names = exts
                .iter()
                .map(|e| e.split_once(':').unwrap().0.to_string())
                .collect();
            (base, names)
        })
        .collect()
}

/// Every deployment's composed commit and listed extensions are held by
/// their refs; with `exact`, no composed or extension ref is left that no
/// deployment uses.
#[track_caller]
fn refs_hold_deployments(sys: &Path, exact: bool, what: &str) {
    let r = refs(&sys.join("ostree/repo"));
    let mut want = Vec::new();
    for (checksum, base, exts) in layers(sys) {
        if exts.is_empty() {
            assert_eq!(checksum, base, "{what}");
            continue;
        }
        want.push(format!("arbor/composed/{checksum}"));
        for e in exts {
            let (name, commit) = e.split_once(':').unwrap();
            want.push(format!("arbor/extensions/{name}/{commit}"));
        }
    }
    for w in &want {
        assert!(r.contains(w), "{what}: ref {w} missing from {r:?}");
    }
    if exact {
        let ours: Vec<&String> = r
            .iter()
            .filter(|x| x.starts_with("arbor/composed/") || x.starts_with("arbor/extensions/"))
            .filter(|x| !want.contains(x))
            .collect();
        assert!(ours.is_empty(), "{what}: unused refs left: {ours:?}");
    }
}

/// Checks a sysroot after a crash or a rerun; returns which of `allowed`
/// it lists.
#[track_caller]
fn check(sys: &Path, allowed: &[Vec<(String, Vec<String>)>], what: &str) -> usize {
    let now = lists(sys);
    let which = allowed
        .iter()
        .position(|a| *a == now)
        .unwrap_or_else(|| panic!("{what}: deployments {now:?} are none of {allowed:?}"));
    ostree_reads(sys);
    both_fscks(sys);
    refs_hold_deployments(sys, false, what);
    which
}

fn cp_a(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

#[test]
fn every_crash_point_of_extension_add_and_upgrade_leaves_old_or_new() {
    if needs_root("every_crash_point_of_extension_add_and_upgrade_leaves_old_or_new") {
        return;
    }
    let e = Ext::new();
    // Two deployments with extensions, so that each operation drops one
    // (alpha alone) whose composed ref must then be collected.
    let a = e.tool_dir("alpha");
    e.ok("add", &[s(&a)]);
    let g = e.tool_dir("gamma");
    e.ok("add", &[s(&g)]);
    let b = e.tool_dir("beta");
    let template = e.dir.path().join("template");
    cp_a(&e.sys, &template);
    let before = lists(&template);
    // The upgrade's new base (add does not pull, so it does not see it).
    let v2 = e.release("v2\n", "1", "1577923200");
    let add_cmd = |sys: &Path| {
        let mut c = arbor();
        c.args(["extension", "add", "--sysroot", s(sys), s(&b)]);
        c
    };
    let upgrade_cmd = |sys: &Path| {
        let mut c = arbor();
        c.args(["upgrade", "--sysroot", s(sys)]);
        c
    };
    let mut after_of = std::collections::BTreeMap::new();
    for op in ["add", "upgrade"] {
        let probe = e.dir.path().join(format!("probe-{op}"));
        cp_a(&template, &probe);
        let mut c = if op == "add" {
            add_cmd(&probe)
        } else {
            upgrade_cmd(&probe)
        };
        run_ok(&mut c);
        let after = lists(&probe);
        assert_ne!(after, before, "{op} changed nothing");
        after_of.insert(op, after);
        unseal_all(&probe);
    }
    assert_eq!(after_of["upgrade"][0].0, v2);
    let points: Vec<&str> = arbor_fs::failpoint::EXT_ALL
        .iter()
        .chain(arbor_fs::failpoint::SYSROOT_ALL)
        .copied()
        .collect();
    let mut reached: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    let mut cases = 0;
    for op in ["add", "upgrade"] {
        let after = &after_of[op];
        for point in &points {
            let what = format!("{op} killed at {point}");
            let sys = e.dir.path().join(format!("case-{cases}"));
            cases += 1;
            cp_a(&template, &sys);
            let run = |failpoint: Option<&str>| {
                let mut c = if op == "add" {
                    add_cmd(&sys)
                } else {
                    upgrade_cmd(&sys)
                };
                if let Some(p) = failpoint {
                    c.env("ARBOR_FAILPOINT", p);
                }
                c.output().unwrap()
            };
            let out = run(Some(point));
            if out.status.signal() == Some(9) {
                reached.entry(op).or_default().push(point);
                let which = check(&sys, &[before.clone(), after.clone()], &what);
                if which == 0 {
                    let out = run(None);
                    assert!(out.status.success(), "{what}: rerun: {out:?}");
                }
            } else {
                assert!(
                    out.status.success(),
                    "{what}: not killed, and failed: {out:?}"
                );
            }
            check(&sys, std::slice::from_ref(after), &format!("{what}, rerun"));
            run_ok(arbor().args(["cleanup", "--sysroot", s(&sys)]));
            check(
                &sys,
                std::slice::from_ref(after),
                &format!("{what}, cleanup"),
            );
            refs_hold_deployments(&sys, true, &format!("{what}, cleanup"));
            unseal_all(&sys);
            std::fs::remove_dir_all(&sys).unwrap();
        }
    }
    eprintln!("{cases} crash cases; points reached: {reached:?}");
    for p in arbor_fs::failpoint::EXT_ALL {
        assert!(
            reached.get("add").is_some_and(|v| v.contains(p)),
            "extension add never reached {p}"
        );
    }
    for p in [
        arbor_fs::failpoint::DEPLOY_CHECKED_OUT,
        arbor_fs::failpoint::SWAPPED,
    ] {
        assert!(
            reached.get("upgrade").is_some_and(|v| v.contains(&p)),
            "the re-composing upgrade never reached {p}"
        );
    }
}
