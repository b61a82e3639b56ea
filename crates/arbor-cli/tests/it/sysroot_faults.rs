//! Crash safety of sysroot operations: each operation killed at every
//! named crash point it reaches (and `arbor upgrade` at random instants)
//! must leave a sysroot whose boot entries select exactly the old or
//! exactly the new deployment list, every file they reference present,
//! the repository fsck-clean; running the operation again completes.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::sysroot::needs_root;
use crate::sysroot_ops::{machine, sys_arbor, Machine};
use crate::util::Rng;
use crate::util::{arbor, ostree, run_ok, s};

/// `arbor SUB --sysroot SYS ARGS`, booted into `root` (a deployment
/// directory) when given.
fn cmd(sys: &Path, root: Option<&Path>, args: &[&str]) -> Command {
    let mut c = sys_arbor(sys, args);
    if let Some(r) = root {
        c.env("ARBOR_TEST_ROOT", r);
    }
    c
}

/// The deployment list as `CSUM.SERIAL`, a staged one marked `*`.
fn listing(sys: &Path, root: Option<&Path>) -> Vec<String> {
    let out = run_ok(&mut cmd(sys, root, &["status", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let star = if d["staged"] == true { "*" } else { "" };
            format!(
                "{}.{}{star}",
                d["checksum"].as_str().unwrap(),
                d["deployserial"]
            )
        })
        .collect()
}

/// Paths below /usr of `commit`, as `ostree ls -R` lists them.
fn commit_usr(repo: &Path, commit: &str) -> BTreeSet<String> {
    let out = run_ok(ostree().args(["ls", "-R", &format!("--repo={}", s(repo)), commit, "/usr"]));
    out.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| p.trim_start_matches('/').to_string())
        .collect()
}

fn tree_usr(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.join("usr")];
    while let Some(p) = stack.pop() {
        out.insert(p.strip_prefix(root).unwrap().to_string_lossy().to_string());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

/// Checks the sysroot after a crash; returns which of `allowed` the
/// deployment list is.
#[track_caller]
fn check_consistent(sys: &Path, root: Option<&Path>, allowed: &[Vec<String>], what: &str) -> usize {
    // Commits, in boot order: a rerun after a crash may use the next
    // serial, because the leftover directory held the first (as in ostree).
    let commits = |l: &[String]| -> Vec<String> {
        l.iter()
            .map(|d| {
                let (c, rest) = d.split_once('.').unwrap();
                format!("{c}{}", if rest.ends_with('*') { "*" } else { "" })
            })
            .collect()
    };
    let list = listing(sys, root);
    // A staged deployment has no boot entry yet, but a complete tree.
    let repo = sys.join("ostree/repo");
    for st in list.iter().filter_map(|d| d.strip_suffix('*')) {
        let dir = sys.join("ostree/deploy/testos/deploy").join(st);
        let commit = st.split('.').next().unwrap();
        assert_eq!(
            tree_usr(&dir),
            commit_usr(&repo, commit),
            "{what}: staged {st} incomplete"
        );
    }
    // Exact lists first; the serial-free comparison only where the commits
    // alone tell the lists apart (not for two deployments of one commit).
    let distinct = |l: &[String]| l.iter().collect::<BTreeSet<_>>().len() == l.len();
    let which = allowed
        .iter()
        .position(|a| *a == list)
        .or_else(|| {
            allowed
                .iter()
                .position(|a| distinct(&commits(a)) && commits(a) == commits(&list))
        })
        .unwrap_or_else(|| panic!("{what}: deployments {list:?} are none of {allowed:?}"));
    // ostree judges too: `ostree admin status` reads the same boot
    // entries and must list exactly the unstaged deployments, in order
    // (a staged one is known only from /run on a booted system).
    let st = run_ok(ostree().args(["admin", &format!("--sysroot={}", s(sys)), "status"]));
    let theirs: Vec<String> = st
        .lines()
        .filter_map(|l| {
            let mut w = l.trim_start_matches(['*', ' ']).split_whitespace();
            (w.next() == Some("testos")).then(|| w.next().unwrap_or_default().to_string())
        })
        .collect();
    let unstaged: Vec<String> = list.iter().filter(|d| !d.ends_with('*')).cloned().collect();
    assert_eq!(theirs, unstaged, "{what}: ostree admin status says\n{st}");
    let entries = std::fs::read_dir(sys.join("boot/loader/entries"))
        .unwrap_or_else(|e| panic!("{what}: no boot/loader/entries: {e}"));
    let mut n = 0;
    for e in entries {
        let p = e.unwrap().path();
        if p.extension() != Some("conf".as_ref()) {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap();
        n += 1;
        for l in text.lines() {
            let (k, v) = l.split_once(' ').unwrap();
            match k {
                "linux" | "initrd" => assert!(
                    sys.join("boot").join(v.trim_start_matches('/')).is_file(),
                    "{what}: {k} {v} is missing"
                ),
                "options" => {
                    let link = v
                        .split(' ')
                        .find_map(|a| a.strip_prefix("ostree="))
                        .unwrap_or_else(|| panic!("{what}: no ostree= in {v}"));
                    let dir = sys.join(link.trim_start_matches('/'));
                    let target = std::fs::canonicalize(&dir)
                        .unwrap_or_else(|e| panic!("{what}: {link} does not resolve: {e}"));
                    let name = target.file_name().unwrap().to_string_lossy().to_string();
                    let commit = name.split('.').next().unwrap();
                    assert_eq!(
                        tree_usr(&target),
                        commit_usr(&repo, commit),
                        "{what}: {name} is not a complete checkout"
                    );
                    assert!(
                        target.join("etc/unchanged.conf").is_file(),
                        "{what}: {name} has no /etc"
                    );
                    assert!(
                        target.with_file_name(format!("{name}.origin")).is_file(),
                        "{what}: {name} has no origin"
                    );
                }
                _ => {}
            }
        }
    }
    let unstaged = list.iter().filter(|d| !d.ends_with('*')).count();
    assert_eq!(n, unstaged, "{what}: one entry per deployment");
    // GRUB's menu sits beside the entries and offers exactly them.
    crate::grub::assert_grub_matches_entries(sys, what);
    let fsck = arbor().args(["fsck", "--repo", s(&repo)]).output().unwrap();
    assert!(fsck.status.success(), "{what}: fsck: {fsck:?}");
    which
}

/// The deployment directories on disk (leftovers included).
fn deployment_dirs(sys: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(sys.join("ostree/deploy/testos/deploy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| !n.ends_with(".origin"))
        .collect();
    v.sort();
    v
}

fn cp_a(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// One operation under test: its arguments, and the list before and after.
struct Op {
    name: &'static str,
    args: Vec<String>,
    before: Vec<String>,
    after: Vec<String>,
    /// Other lists a crash may leave (a finalization that lost its staged
    /// deployment boots the old list without it), also valid at the end.
    also: Vec<Vec<String>>,
    /// The booted deployment directory name, if the operation needs one.
    booted: Option<String>,
}

/// Template sysroots: `one` has v1 deployed and v2 released upstream;
/// `staged` has v2 staged while booted into v1; `two` has [v2, v1].
struct Templates {
    m: Machine,
    one: PathBuf,
    staged: PathBuf,
    two: PathBuf,
    twins: PathBuf,
}

fn templates() -> Templates {
    let mut m = machine();
    m.src.release_v2();
    let base = m.src.dir.path().to_path_buf();
    let (one, staged, two) = (base.join("one"), base.join("staged"), base.join("two"));
    cp_a(&m.sys, &one);
    cp_a(&m.sys, &staged);
    let root = staged.join(format!("ostree/deploy/testos/deploy/{}.0", m.src.v1));
    run_ok(&mut cmd(&staged, Some(&root), &["upgrade", "--stage"]));
    run_ok(&mut sys_arbor(&m.sys, &["upgrade"]));
    cp_a(&m.sys, &two);
    // Two deployments of v2 with the same kernel, arguments and version
    // first: reordering them only swaps the bootlinks (sub-boot version).
    let twins = base.join("twins");
    cp_a(&m.sys, &twins);
    run_ok(&mut sys_arbor(
        &twins,
        &["deploy", "--os", "testos", "--retain", &m.src.v2],
    ));
    Templates {
        m,
        one,
        staged,
        two,
        twins,
    }
}

fn ops(t: &Templates) -> Vec<(Op, PathBuf)> {
    let (v1, v2) = (format!("{}.0", t.m.src.v1), format!("{}.0", t.m.src.v2));
    let v2_1 = format!("{}.1", t.m.src.v2);
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        (
            Op {
                name: "upgrade",
                args: a(&["upgrade"]),
                before: vec![v1.clone()],
                after: vec![v2.clone(), v1.clone()],
                also: vec![],
                booted: None,
            },
            t.one.clone(),
        ),
        (
            Op {
                name: "upgrade-booted",
                args: a(&["upgrade"]),
                before: vec![v1.clone()],
                after: vec![v2.clone(), v1.clone()],
                also: vec![],
                booted: Some(v1.clone()),
            },
            t.one.clone(),
        ),
        (
            Op {
                name: "rollback-booted",
                args: a(&["rollback"]),
                before: vec![v2.clone(), v1.clone()],
                after: vec![v1.clone(), v2.clone()],
                also: vec![],
                booted: Some(v1.clone()),
            },
            t.two.clone(),
        ),
        (
            Op {
                name: "stage",
                args: a(&["upgrade", "--stage"]),
                before: vec![v1.clone()],
                after: vec![format!("{v2}*"), v1.clone()],
                also: vec![],
                booted: Some(v1.clone()),
            },
            t.one.clone(),
        ),
        (
            Op {
                name: "finalize",
                args: a(&["finalize"]),
                before: vec![format!("{v2}*"), v1.clone()],
                after: vec![v2.clone(), v1.clone()],
                also: vec![vec![v1.clone()]],
                booted: Some(v1.clone()),
            },
            t.staged.clone(),
        ),
        (
            Op {
                name: "rollback",
                args: a(&["rollback"]),
                before: vec![v2.clone(), v1.clone()],
                after: vec![v1.clone(), v2.clone()],
                also: vec![],
                booted: None,
            },
            t.two.clone(),
        ),
        (
            Op {
                name: "rollback-twins",
                args: a(&["rollback"]),
                before: vec![v2_1.clone(), v2.clone(), v1.clone()],
                after: vec![v2.clone(), v2_1.clone(), v1.clone()],
                also: vec![],
                booted: None,
            },
            t.twins.clone(),
        ),
        (
            Op {
                name: "undeploy",
                args: a(&["undeploy", "1"]),
                before: vec![v2.clone(), v1.clone()],
                after: vec![v2.clone()],
                also: vec![],
                booted: None,
            },
            t.two.clone(),
        ),
        (
            Op {
                name: "kargs",
                args: a(&["kargs", "--append", "quiet"]),
                before: vec![v2.clone(), v1.clone()],
                after: vec![v2.clone(), v1.clone()],
                also: vec![],
                booted: None,
            },
            t.two.clone(),
        ),
        (
            Op {
                name: "cleanup",
                args: a(&["cleanup"]),
                before: vec![v2.clone(), v1.clone()],
                after: vec![v2.clone(), v1.clone()],
                also: vec![],
                booted: None,
            },
            t.two.clone(),
        ),
    ]
}

#[test]
fn every_crash_point_leaves_old_or_new() {
    if needs_root("every_crash_point_leaves_old_or_new") {
        return;
    }
    let t = templates();
    let points: Vec<&str> = arbor_fs::failpoint::SYSROOT_ALL
        .iter()
        .chain(arbor_fs::failpoint::TXN_ALL)
        .copied()
        .collect();
    let mut reached: BTreeSet<&str> = BTreeSet::new();
    let mut cases = 0;
    for (op, template) in ops(&t) {
        for point in &points {
            let what = format!("{} killed at {point}", op.name);
            let sys = t.m.src.dir.path().join(format!("case-{cases}"));
            cases += 1;
            cp_a(&template, &sys);
            if op.name == "cleanup" {
                // Something to clean: a leftover deployment directory and an
                // unused kernel directory, as a crashed deploy leaves them.
                cp_a(
                    &sys.join(format!("ostree/deploy/testos/deploy/{}", op.before[1])),
                    &sys.join(format!("ostree/deploy/testos/deploy/{}.7", t.m.src.v1)),
                );
                std::fs::create_dir_all(sys.join(format!("boot/ostree/testos-{}", "0".repeat(64))))
                    .unwrap();
            }
            let root = op
                .booted
                .as_ref()
                .map(|b| sys.join("ostree/deploy/testos/deploy").join(b));
            let root = root.as_deref();
            let args: Vec<&str> = op.args.iter().map(String::as_str).collect();
            let out = cmd(&sys, root, &args)
                .env("ARBOR_FAILPOINT", point)
                .output()
                .unwrap();
            let killed = out.status.signal() == Some(9);
            let mut finals = vec![op.after.clone()];
            finals.extend(op.also.iter().cloned());
            if !killed {
                assert!(
                    out.status.success(),
                    "{what}: not killed, and failed: {out:?}"
                );
                check_consistent(&sys, root, std::slice::from_ref(&op.after), &what);
                crate::sysroot::unseal_all(&sys);
                std::fs::remove_dir_all(&sys).unwrap();
                continue;
            }
            reached.insert(point);
            let mut states = vec![op.before.clone(), op.after.clone()];
            states.extend(op.also.iter().cloned());
            let which = check_consistent(&sys, root, &states, &what);
            // Not done yet: run it again. Done (killed after the switch):
            // cleanup completes it (rollback or kargs again would repeat it).
            let done = match op.name {
                "kargs" => run_ok(&mut cmd(&sys, root, &["kargs"])).contains("quiet"),
                _ => which >= 1 && op.before != op.after,
            };
            if done {
                run_ok(&mut cmd(&sys, root, &["cleanup"]));
            } else {
                run_ok(&mut cmd(&sys, root, &args));
                // A finalization that lost its staged deployment did nothing:
                // its leftovers go with the next cleanup.
                run_ok(&mut cmd(&sys, root, &["cleanup"]));
            }
            if op.name == "kargs" {
                let k = run_ok(&mut cmd(&sys, root, &["kargs"]));
                assert_eq!(k.matches("quiet").count(), 1, "{what}: {k}");
            }
            check_consistent(&sys, root, &finals, &format!("{what}, rerun"));
            let mut listed: Vec<String> = listing(&sys, root)
                .into_iter()
                .map(|d| d.trim_end_matches('*').to_string())
                .collect();
            listed.sort();
            assert_eq!(
                deployment_dirs(&sys),
                listed,
                "{what}: leftovers after the rerun"
            );
            let repo = sys.join("ostree/repo");
            run_ok(ostree().args(["fsck", &format!("--repo={}", s(&repo))]));
            crate::sysroot::unseal_all(&sys);
            std::fs::remove_dir_all(&sys).unwrap();
        }
    }
    // Every sysroot crash point is reached by some operation.
    for p in arbor_fs::failpoint::SYSROOT_ALL {
        assert!(reached.contains(p), "crash point {p} was never reached");
    }
    eprintln!("{cases} crash cases, {} points reached", reached.len());
}

#[test]
fn random_kills_of_upgrade_leave_old_or_new() {
    if needs_root("random_kills_of_upgrade_leave_old_or_new") {
        return;
    }
    let t = templates();
    let (v1, v2) = (format!("{}.0", t.m.src.v1), format!("{}.0", t.m.src.v2));
    let before = vec![v1.clone()];
    let after = vec![v2.clone(), v1.clone()];
    // How long an uninterrupted upgrade takes here.
    let full = (0..3)
        .map(|i| {
            let probe = t.m.src.dir.path().join(format!("probe-{i}"));
            cp_a(&t.one, &probe);
            let start = Instant::now();
            run_ok(&mut sys_arbor(&probe, &["upgrade"]));
            start.elapsed()
        })
        .min()
        .unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("random kills: seed {seed}, an upgrade takes {full:?}");
    let mut rng = Rng(seed);
    let iterations = 40;
    let (mut outcomes, mut completed) = ([0usize; 2], 0);
    for i in 0..iterations {
        let sys = t.m.src.dir.path().join(format!("random-{i}"));
        cp_a(&t.one, &sys);
        // Up to 1.5 times the usual duration: the system's load varies, and
        // some kills should land after the switch.
        let delay = Duration::from_micros(rng.next() % (full.as_micros() as u64 * 3 / 2 + 1));
        let mut child = sys_arbor(&sys, &["upgrade"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let what = format!("upgrade killed after {delay:?} (seed {seed}, iteration {i})");
        let which = check_consistent(&sys, None, &[before.clone(), after.clone()], &what);
        if status.signal() == Some(9) {
            outcomes[which] += 1;
        } else {
            completed += 1;
        }
        run_ok(&mut sys_arbor(&sys, &["upgrade"]));
        check_consistent(
            &sys,
            None,
            std::slice::from_ref(&after),
            &format!("{what}, rerun"),
        );
        let mut listed = listing(&sys, None);
        listed.sort();
        assert_eq!(deployment_dirs(&sys), listed, "{what}: leftovers");
        crate::sysroot::unseal_all(&sys);
        std::fs::remove_dir_all(&sys).unwrap();
    }
    eprintln!(
        "random kills: {} left the old list, {} the new; {completed} completed before the kill",
        outcomes[0], outcomes[1]
    );
    assert!(
        outcomes[0] + outcomes[1] >= iterations / 4,
        "too few kills landed during the upgrade: the test probes little"
    );
}
