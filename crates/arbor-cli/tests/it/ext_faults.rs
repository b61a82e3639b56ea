//! Crash safety of `extension add` (of a directory, so the import is
//! exercised too, and of a ref, whose first transaction is the composed
//! commit's) and of the re-composing `upgrade`: killed at every named
//! crash point they reach (extension, sysroot and repository transaction
//! points), the sysroot lists exactly the old or the new deployments
//! (commits included), the default deployment has an extension's files
//! exactly when it lists it, the refs keep every commit a deployment runs or lists,
//! `ostree admin status` reads it, both fscks pass, a rerun completes, and
//! after a cleanup no composed or extension ref is left that nothing uses.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use crate::config_apply::{ostree_reads, root_of};
use crate::ext_util::{both_fscks, ext_commit, layers, refs, Ext};
use crate::sysroot::{needs_root, unseal_all};
use crate::util::{arbor, run_ok, s};

/// What the sysroot lists: (checksum, base, `NAME:COMMIT`s) of each
/// deployment. The directory import is deterministic (owner 0:0,
/// timestamp 0), so the old and new states are exact, commits included.
type Layers = Vec<(String, String, Vec<String>)>;

/// The extensions the tests may add: the default deployment has
/// `/usr/bin/NAME-tool` exactly when it lists NAME.
const NAMES: &[&str] = &["alpha", "gamma", "beta", "delta"];

#[track_caller]
fn files_match_the_list(sys: &Path, now: &Layers, what: &str) {
    let root = root_of(sys, 0);
    for n in NAMES {
        let listed = now[0].2.iter().any(|e| e.starts_with(&format!("{n}:")));
        let there = root.join(format!("usr/bin/{n}-tool")).exists();
        assert_eq!(
            listed, there,
            "{what}: {n} listed: {listed}, its file in the default deployment: {there}"
        );
    }
}

/// Every deployment's composed commit, its base and its listed
/// extensions are held by their refs; with `exact`, no composed, base or
/// extension ref is left that no deployment uses.
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
        want.push(format!("arbor/bases/{base}"));
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
            .filter(|x| {
                ["arbor/composed/", "arbor/extensions/", "arbor/bases/"]
                    .iter()
                    .any(|p| x.starts_with(p))
            })
            .filter(|x| !want.contains(x))
            .collect();
        assert!(ours.is_empty(), "{what}: unused refs left: {ours:?}");
    }
}

/// Checks a sysroot after a crash or a rerun; returns which of `allowed`
/// it lists.
#[track_caller]
fn check(sys: &Path, allowed: &[Layers], what: &str) -> usize {
    let now = layers(sys);
    let which = allowed
        .iter()
        .position(|a| *a == now)
        .unwrap_or_else(|| panic!("{what}: deployments {now:?} are none of {allowed:?}"));
    files_match_the_list(sys, &now, what);
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
    // An extension committed by ostree into the sysroot repository: added
    // by ref there is no import, the first transaction is the composed
    // commit's.
    let d = e.tool_dir("delta");
    ext_commit(&e.srepo(), "exts/delta", &d, &[]);
    let template = e.dir.path().join("template");
    cp_a(&e.sys, &template);
    let before = layers(&template);
    // The upgrade's new base (add does not pull, so it does not see it).
    let v2 = e.release("v2\n", "1", "1577923200");
    const OPS: [&str; 3] = ["add", "add-ref", "upgrade"];
    let op_cmd = |op: &str, sys: &Path| {
        let mut c = arbor();
        match op {
            "add" => c.args(["extension", "add", "--sysroot", s(sys), s(&b)]),
            "add-ref" => c.args(["extension", "add", "--sysroot", s(sys), "exts/delta"]),
            _ => c.args(["upgrade", "--sysroot", s(sys)]),
        };
        c
    };
    let mut after_of = std::collections::BTreeMap::new();
    for op in OPS {
        let probe = e.dir.path().join(format!("probe-{op}"));
        cp_a(&template, &probe);
        run_ok(&mut op_cmd(op, &probe));
        let after = layers(&probe);
        assert_ne!(after, before, "{op} changed nothing");
        files_match_the_list(&probe, &after, op);
        after_of.insert(op, after);
        unseal_all(&probe);
    }
    assert_eq!(after_of["upgrade"][0].1, v2);
    let points: Vec<&str> = arbor_fs::failpoint::EXT_ALL
        .iter()
        .chain(arbor_fs::failpoint::SYSROOT_ALL)
        .chain(arbor_fs::failpoint::TXN_ALL)
        .copied()
        .collect();
    let mut reached: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    let mut cases = 0;
    for op in OPS {
        let after = &after_of[op];
        for point in &points {
            let what = format!("{op} killed at {point}");
            let sys = e.dir.path().join(format!("case-{cases}"));
            cases += 1;
            cp_a(&template, &sys);
            let run = |failpoint: Option<&str>| {
                let mut c = op_cmd(op, &sys);
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
    use arbor_fs::failpoint as fp;
    let must = [
        ("add", [fp::EXT_ALL, fp::TXN_ALL].concat()),
        (
            "add-ref",
            [
                &[fp::EXT_COMPOSED, fp::EXT_SWITCHED, fp::EXT_GC][..],
                fp::TXN_ALL,
            ]
            .concat(),
        ),
        (
            "upgrade",
            vec![
                fp::EXT_COMPOSED,
                fp::DEPLOY_CHECKED_OUT,
                fp::SWAPPED,
                fp::EXT_GC,
            ],
        ),
    ];
    for (op, points) in must {
        for p in points {
            assert!(
                reached.get(op).is_some_and(|v| v.contains(&p)),
                "{op} never reached {p}; reached: {reached:?}"
            );
        }
    }
}
