//! Crash safety of `config apply` (and of the staged apply's
//! finalization): killed at every named crash point, or at random
//! instants, the sysroot boots exactly the old or exactly the new state,
//! `ostree admin status` reads it, both fscks pass, a rerun completes, and
//! after a cleanup nothing is left over (no deployment, document or
//! temporary that nothing names).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config_apply::{file, ign, mc_kargs, ostree_reads, root_of, stored, Cfg};
use crate::sysroot::{needs_root, unseal_all};
use crate::util::Rng;
use crate::util::{arbor, ostree, run_ok, s};

/// Configuration `n`; the third declares an extension (`exts/tools`,
/// committed into the sysroot's repository by [`templates`]), so applying
/// it composes, and every crash point of the extension part is covered.
fn config(n: &str) -> Vec<(&'static str, Vec<u8>)> {
    let mut v = vec![
        (
            "10.ign",
            ign(json!({
                "storage": { "files": [ file("/etc/chrony.conf", &format!("server {n}.example\n")) ] },
                "passwd": { "users": [ { "name": format!("user{n}") } ] },
            })),
        ),
        ("20.json", mc_kargs(&[&format!("k={n}")])),
    ];
    if n == "3" {
        v.push((
            "30.json",
            serde_json::to_vec(&json!({
                "apiVersion": "machineconfiguration.openshift.io/v1",
                "kind": "MachineConfig",
                "metadata": { "name": "60-ext" },
                "spec": { "extensions": ["exts/tools"] }
            }))
            .unwrap(),
        ));
    }
    v
}

/// Commits the extension `exts/tools` (a tool and its unit) into the
/// sysroot's repository.
fn commit_extension(dir: &Path, sys: &Path) {
    let tree = dir.join("ext-tools");
    std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
    std::fs::create_dir_all(tree.join("usr/lib/systemd/system")).unwrap();
    std::fs::write(tree.join("usr/bin/tools"), "#!/bin/sh\n").unwrap();
    std::fs::write(
        tree.join("usr/lib/systemd/system/tools.service"),
        "[Service]\nExecStart=/usr/bin/tools\n",
    )
    .unwrap();
    run_ok(ostree().args([
        "commit",
        &format!("--repo={}", s(&sys.join("ostree/repo"))),
        "-b",
        "exts/tools",
        "--owner-uid=0",
        "--owner-gid=0",
        "--no-bindings",
        "-s",
        "tools",
        &format!("--tree=dir={}", s(&tree)),
    ]));
}

fn with_root(mut c: Command, root: Option<&Path>) -> Command {
    if let Some(r) = root {
        c.env("ARBOR_TEST_ROOT", r);
    }
    c
}

/// (state, staged) of each deployment, in order.
fn states(sys: &Path, root: Option<&Path>) -> Vec<(String, bool)> {
    let mut c = with_root(arbor(), root);
    c.args(["status", "--json", "--sysroot", s(sys)]);
    let v: Value = serde_json::from_str(&run_ok(&mut c)).unwrap();
    v["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["state"].as_str().unwrap().to_string(),
                d["staged"] == true,
            )
        })
        .collect()
}

fn cp_a(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// Checks a sysroot after a crash or a rerun; returns which of `allowed`
/// its deployment states are.
#[track_caller]
fn check(sys: &Path, root: Option<&Path>, allowed: &[Vec<(String, bool)>], what: &str) -> usize {
    let now = states(sys, root);
    let which = allowed
        .iter()
        .position(|a| *a == now)
        .unwrap_or_else(|| panic!("{what}: states {now:?} are none of {allowed:?}"));
    ostree_reads(sys);
    let repo = sys.join("ostree/repo");
    let fsck = arbor().args(["fsck", "--repo", s(&repo)]).output().unwrap();
    assert!(fsck.status.success(), "{what}: arbor fsck: {fsck:?}");
    run_ok(ostree().args(["fsck", &format!("--repo={}", s(&repo))]));
    // Every deployment's recorded document is there.
    let mut c = with_root(arbor(), root);
    c.args(["status", "--json", "--sysroot", s(sys)]);
    let v: Value = serde_json::from_str(&run_ok(&mut c)).unwrap();
    for d in v["deployments"].as_array().unwrap() {
        let name = d["config"].as_str().unwrap();
        let doc = sys.join(format!("ostree/deploy/testos/arbor/rendered/{name}.json"));
        assert!(doc.is_file(), "{what}: {name} is missing");
    }
    which
}

/// After a cleanup: no deployment directory, origin, document or
/// temporary that nothing names.
#[track_caller]
fn no_leftovers(sys: &Path, root: Option<&Path>, what: &str) {
    let mut c = with_root(arbor(), root);
    c.args(["status", "--json", "--sysroot", s(sys)]);
    let v: Value = serde_json::from_str(&run_ok(&mut c)).unwrap();
    let list = v["deployments"].as_array().unwrap();
    let mut want: Vec<String> = list
        .iter()
        .flat_map(|d| {
            let n = format!("{}.{}", d["checksum"].as_str().unwrap(), d["deployserial"]);
            [format!("{n}.origin"), n]
        })
        .collect();
    want.sort();
    assert_eq!(
        crate::util::dir_names(&sys.join("ostree/deploy/testos/deploy")),
        want,
        "{what}: deployment leftovers"
    );
    let mut docs: Vec<String> = list
        .iter()
        .map(|d| format!("{}.json", d["config"].as_str().unwrap()))
        .filter(|f| {
            sys.join("ostree/deploy/testos/arbor/rendered")
                .join(f)
                .exists()
        })
        .collect();
    docs.sort();
    docs.dedup();
    assert_eq!(stored(sys), docs, "{what}: unnamed documents");
    // Composed and extension refs: exactly those the deployments use.
    let mut want_refs: Vec<String> = list
        .iter()
        .flat_map(|d| {
            let exts = d["extensions"].as_array().unwrap();
            let composed = (!exts.is_empty())
                .then(|| format!("arbor/composed/{}", d["checksum"].as_str().unwrap()));
            exts.iter()
                .map(|e| {
                    let (n, c) = e.as_str().unwrap().split_once(':').unwrap();
                    format!("arbor/extensions/{n}/{c}")
                })
                .chain(composed)
                .collect::<Vec<_>>()
        })
        .collect();
    want_refs.sort();
    want_refs.dedup();
    let refs = run_ok(ostree().args(["refs", &format!("--repo={}", s(&sys.join("ostree/repo")))]));
    let mut refs: Vec<String> = refs
        .lines()
        .filter(|r| r.starts_with("arbor/composed/") || r.starts_with("arbor/extensions/"))
        .map(str::to_string)
        .collect();
    refs.sort();
    assert_eq!(refs, want_refs, "{what}: unused extension refs");
    let tmp = Command::new("find")
        .arg(sys.join("ostree"))
        .arg(sys.join("boot"))
        .args(["-name", "*.tmp*", "-o", "-name", "arbor-etc-preview-*"])
        .output()
        .unwrap();
    assert!(
        tmp.stdout.is_empty(),
        "{what}: temporaries left: {}",
        String::from_utf8_lossy(&tmp.stdout)
    );
}

/// Templates: `two` = v1 with config 1 then config 2 applied; `staged` =
/// the same, booted into the default, with config 3 staged.
struct Templates {
    c: Cfg,
    two: PathBuf,
    staged: PathBuf,
    booted: String,
}

fn templates() -> Templates {
    let c = Cfg::new();
    commit_extension(c.dir.path(), &c.sys);
    c.apply(&config("1"));
    c.apply(&config("2"));
    let base = c.dir.path().to_path_buf();
    let (two, staged) = (base.join("two"), base.join("staged"));
    cp_a(&c.sys, &two);
    cp_a(&c.sys, &staged);
    let booted = root_of(&staged, 0);
    let mut st = c.apply_cmd(&staged, &["--stage"], &config("3"));
    st.env("ARBOR_TEST_ROOT", &booted);
    run_ok(&mut st);
    let booted = booted.file_name().unwrap().to_string_lossy().into_owned();
    Templates {
        c,
        two,
        staged,
        booted,
    }
}

#[test]
fn every_crash_point_of_config_apply_leaves_old_or_new() {
    if needs_root("every_crash_point_of_config_apply_leaves_old_or_new") {
        return;
    }
    let t = templates();
    let before = states(&t.two, None);
    // The expected result, from an uninterrupted apply.
    let probe = t.c.dir.path().join("probe");
    cp_a(&t.two, &probe);
    t.c.apply_on(&probe, &[], &config("3"));
    let after = states(&probe, None);
    assert_eq!(after[1], before[0]);
    let composed = &crate::config_apply::status(&probe)["deployments"][0];
    assert_eq!(
        composed["extensions"].as_array().unwrap().len(),
        1,
        "{composed}"
    );
    assert_ne!(composed["checksum"], composed["base"], "{composed}");
    let staged_root = t
        .staged
        .join(format!("ostree/deploy/testos/deploy/{}", t.booted));
    let staged_before = states(&t.staged, Some(&staged_root));
    // The extension part: composing, and collecting refs after the switch.
    let ext_points = [
        arbor_fs::failpoint::EXT_COMPOSED,
        arbor_fs::failpoint::EXT_GC,
    ];
    let points: Vec<&str> = arbor_fs::failpoint::CONFIG_ALL
        .iter()
        .chain(&ext_points)
        .chain(arbor_fs::failpoint::SYSROOT_ALL)
        .chain(arbor_fs::failpoint::TXN_ALL)
        .copied()
        .collect();
    let mut reached = std::collections::BTreeSet::new();
    let mut cases = 0;
    for op in ["apply", "stage", "finalize"] {
        for point in &points {
            let what = format!("{op} killed at {point}");
            let sys = t.c.dir.path().join(format!("case-{cases}"));
            cases += 1;
            cp_a(if op == "finalize" { &t.staged } else { &t.two }, &sys);
            let root = (op != "apply")
                .then(|| sys.join(format!("ostree/deploy/testos/deploy/{}", t.booted)));
            let root = root.as_deref();
            let run = |failpoint: Option<&str>| {
                let mut c = match op {
                    "finalize" => {
                        let mut c = arbor();
                        c.args(["finalize", "--sysroot", s(&sys)]);
                        c
                    }
                    "stage" => t.c.apply_cmd(&sys, &["--stage"], &config("3")),
                    _ => t.c.apply_cmd(&sys, &[], &config("3")),
                };
                let mut c = with_root(std::mem::replace(&mut c, arbor()), root);
                if let Some(p) = failpoint {
                    c.env("ARBOR_FAILPOINT", p);
                }
                c.output().unwrap()
            };
            // What each operation goes from and to (a staged deployment is
            // listed first while booted; finalize makes it the default and
            // keeps the booted one; a finalization that lost its staged
            // deployment boots the old list).
            let staged_after = vec![
                (after[0].0.clone(), true),
                before[0].clone(),
                before[1].clone(),
            ];
            let finalized = after.clone();
            let (from, to, also) = match op {
                "apply" => (before.clone(), after.clone(), vec![]),
                "stage" => (before.clone(), staged_after.clone(), vec![]),
                _ => (
                    staged_before.clone(),
                    finalized.clone(),
                    vec![before.clone()],
                ),
            };
            let out = run(Some(point));
            let killed = out.status.signal() == Some(9);
            let mut allowed = vec![from.clone(), to.clone()];
            allowed.extend(also.iter().cloned());
            if !killed {
                assert!(
                    out.status.success(),
                    "{what}: not killed, and failed: {out:?}"
                );
                check(&sys, root, std::slice::from_ref(&to), &what);
            } else {
                reached.insert(*point);
                let which = check(&sys, root, &allowed, &what);
                if which == 0 {
                    let out = run(None);
                    assert!(out.status.success(), "{what}: rerun: {out:?}");
                }
                let mut c = with_root(arbor(), root);
                c.args(["cleanup", "--sysroot", s(&sys)]);
                run_ok(&mut c);
                let mut finals = vec![to.clone()];
                finals.extend(also.iter().cloned());
                check(&sys, root, &finals, &format!("{what}, rerun"));
            }
            no_leftovers(&sys, root, &what);
            unseal_all(&sys);
            std::fs::remove_dir_all(&sys).unwrap();
        }
    }
    for p in arbor_fs::failpoint::CONFIG_ALL.iter().chain(&ext_points) {
        assert!(reached.contains(p), "crash point {p} was never reached");
    }
    eprintln!("{cases} crash cases, {} points reached", reached.len());
    unseal_all(&probe);
}

#[test]
fn random_kills_of_config_apply_leave_old_or_new() {
    if needs_root("random_kills_of_config_apply_leave_old_or_new") {
        return;
    }
    let t = templates();
    let before = states(&t.two, None);
    let full = (0..3)
        .map(|i| {
            let probe = t.c.dir.path().join(format!("probe-{i}"));
            cp_a(&t.two, &probe);
            let start = Instant::now();
            t.c.apply_on(&probe, &[], &config("3"));
            start.elapsed()
        })
        .min()
        .unwrap();
    let after = states(&t.c.dir.path().join("probe-0"), None);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("random kills: seed {seed}, an apply takes {full:?}");
    let mut rng = Rng(seed);
    let iterations = 30;
    let (mut outcomes, mut completed) = ([0usize; 2], 0);
    for i in 0..iterations {
        let sys = t.c.dir.path().join(format!("random-{i}"));
        cp_a(&t.two, &sys);
        let delay = Duration::from_micros(rng.next() % (full.as_micros() as u64 * 3 / 2 + 1));
        let mut child =
            t.c.apply_cmd(&sys, &[], &config("3"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let what = format!("apply killed after {delay:?} (seed {seed}, iteration {i})");
        let which = check(&sys, None, &[before.clone(), after.clone()], &what);
        if status.signal() == Some(9) {
            outcomes[which] += 1;
        } else {
            completed += 1;
        }
        t.c.apply_on(&sys, &[], &config("3"));
        run_ok(arbor().args(["cleanup", "--sysroot", s(&sys)]));
        check(
            &sys,
            None,
            std::slice::from_ref(&after),
            &format!("{what}, rerun"),
        );
        no_leftovers(&sys, None, &what);
        unseal_all(&sys);
        std::fs::remove_dir_all(&sys).unwrap();
    }
    eprintln!(
        "random kills: {} left the old state, {} the new; {completed} completed before the kill",
        outcomes[0], outcomes[1]
    );
    assert!(
        outcomes[0] + outcomes[1] >= iterations / 4,
        "too few kills landed during the apply: the test probes little"
    );
}
