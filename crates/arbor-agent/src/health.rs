//! Health checks, greenboot's model: executables in
//! `required.d/` and `wanted.d/` of `/usr/lib/arbor/health.d` (the OS's)
//! and `/etc/arbor/health.d` (the machine's), run after boot in file-name
//! order. A boot is good when every required check passes; a failing
//! wanted check is only reported. A check in `/etc` replaces the one of
//! the same name in `/usr/lib` (as systemd's unit directories do), so a
//! machine can override one of the OS's checks, or disable it with an
//! empty file or a link to `/dev/null`. A check that cannot run (not
//! executable, a broken link) fails.
//!
//! Each check runs with its working directory `/`, stdin closed, in a
//! process group of its own that is killed when it ends or at its time
//! limit; the last 4 KiB of its output are kept for the report.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

/// Where checks are found, lowest precedence first (relative to a root).
pub const DIRS: &[&str] = &["usr/lib/arbor/health.d", "etc/arbor/health.d"];
/// Output kept per check.
const KEEP: u64 = 4096;

/// Names that are not checks: hidden files and what editors and package
/// managers leave behind.
fn is_leftover(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || [
            ".rpmnew",
            ".rpmsave",
            ".rpmorig",
            ".dpkg-old",
            ".dpkg-new",
            ".dpkg-dist",
            ".dpkg-tmp",
            ".ucf-old",
            ".ucf-new",
            ".ucf-dist",
        ]
        .iter()
        .any(|s| name.ends_with(s))
}

/// Required or wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Must pass for the boot to be good.
    Required,
    /// Reported when it fails.
    Wanted,
}

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Outcome {
    /// Exit status 0.
    Passed,
    /// Another exit status, or killed by a signal.
    Failed {
        /// What ended it.
        status: String,
    },
    /// Still running at the time limit: killed.
    TimedOut,
    /// Could not be started.
    NotRun {
        /// Why.
        error: String,
    },
    /// Present but not executable (a way to disable a check of the OS).
    Disabled,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Required or wanted.
    pub kind: Kind,
    /// Its file name.
    pub name: String,
    /// The file run.
    pub path: PathBuf,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// How long it ran.
    pub millis: u128,
    /// The end of its output (stdout and stderr together).
    pub output: String,
}

/// All checks of a boot.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every required check passed.
    pub healthy: bool,
    /// In the order run: required ones first.
    pub checks: Vec<CheckResult>,
}

/// The checks under `root`, by kind, in the order they run: each name
/// once, from the directory of highest precedence that has it.
pub fn find(root: &Path) -> Result<Vec<(Kind, String, PathBuf)>> {
    let mut out = Vec::new();
    for (kind, sub) in [(Kind::Required, "required.d"), (Kind::Wanted, "wanted.d")] {
        let mut by_name = BTreeMap::new();
        for d in DIRS {
            let dir = root.join(d).join(sub);
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("Reading {}", dir.display())),
            };
            for e in entries {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                if is_leftover(&name) {
                    continue;
                }
                by_name.insert(name, e.path());
            }
        }
        out.extend(by_name.into_iter().map(|(n, p)| (kind, n, p)));
    }
    Ok(out)
}

/// Runs the checks under `root`, each for at most `limit`.
pub fn run(root: &Path, limit: Duration) -> Result<Report> {
    // Absolute: the checks run with `/` as their working directory.
    let root = std::path::absolute(root).context("Resolving the root")?;
    let mut checks = Vec::new();
    for (kind, name, path) in find(&root)? {
        let t0 = Instant::now();
        let (outcome, output) = run_one(&path, limit);
        checks.push(CheckResult {
            kind,
            name,
            path,
            outcome,
            millis: t0.elapsed().as_millis(),
            output,
        });
    }
    let healthy = checks.iter().all(|c| {
        c.kind == Kind::Wanted || matches!(c.outcome, Outcome::Passed | Outcome::Disabled)
    });
    Ok(Report { healthy, checks })
}

/// Whether `path` masks a check: an empty file or a symbolic link to
/// `/dev/null` (systemd's way).
fn is_mask(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::read_link(path).is_ok_and(|t| t == Path::new("/dev/null"))
        }
        Ok(m) => m.is_file() && m.len() == 0,
        Err(_) => false,
    }
}

/// Runs one check in a process group of its own, its output through a
/// pipe of which only the last [`KEEP`] bytes are kept; at the time
/// limit, and after it ends, the whole group is killed (what it started
/// in the background too).
fn run_one(path: &Path, limit: Duration) -> (Outcome, String) {
    use std::os::unix::process::CommandExt;
    if is_mask(path) {
        return (Outcome::Disabled, String::new());
    }
    let runnable = std::fs::metadata(path)
        .map_err(|e| e.to_string())
        .and_then(|m| {
            if !m.is_file() {
                Err("not a regular file".to_string())
            } else if m.permissions().mode() & 0o111 == 0 {
                Err(
                    "not executable (an empty file or a link to /dev/null disables a check)"
                        .to_string(),
                )
            } else {
                Ok(())
            }
        });
    if let Err(error) = runnable {
        return (Outcome::NotRun { error }, String::new());
    }
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            return (
                Outcome::NotRun {
                    error: format!("A pipe: {e}"),
                },
                String::new(),
            )
        }
    };
    let spawn = || {
        let out = writer.try_clone()?;
        let err = writer.try_clone()?;
        Command::new(path)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
    };
    // ETXTBSY: a script just written may still be open for writing in a
    // child another thread is forking; that passes within moments.
    let busy_until = Instant::now() + Duration::from_secs(2);
    let mut spawned = spawn();
    while matches!(&spawned, Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy)
        && Instant::now() < busy_until
    {
        std::thread::sleep(Duration::from_millis(20));
        spawned = spawn();
    }
    drop(writer);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return (
                Outcome::NotRun {
                    error: e.to_string(),
                },
                String::new(),
            )
        }
    };
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let done = {
        let kept = kept.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = reader;
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut k = kept.lock().unwrap_or_else(|e| e.into_inner());
                k.extend_from_slice(&buf[..n]);
                let over = k.len().saturating_sub(KEEP as usize);
                k.drain(..over);
            }
            let _ = tx.send(());
        });
        rx
    };
    let deadline = Instant::now() + limit;
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => break Outcome::Passed,
            Ok(Some(st)) => {
                break Outcome::Failed {
                    status: st.to_string(),
                }
            }
            Ok(None) if Instant::now() >= deadline => break Outcome::TimedOut,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                break Outcome::NotRun {
                    error: e.to_string(),
                }
            }
        }
    };
    // The group: the check itself if it still runs, and anything it left.
    if let Some(pgid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
    let _ = child.wait();
    // The output ends when the last writer is gone (a process that left
    // the group may keep it open: then take what came so far).
    let _ = done.recv_timeout(Duration::from_secs(1));
    let out = kept.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (outcome, String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, script: &str, mode: u32) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn required_wanted_overrides_and_limits() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        put(
            r,
            "usr/lib/arbor/health.d/required.d/10-ok",
            "#!/bin/sh\necho fine\n",
            0o755,
        );
        put(
            r,
            "usr/lib/arbor/health.d/required.d/20-os-check",
            "#!/bin/sh\nexit 3\n",
            0o755,
        );
        // The machine disables the OS's failing check.
        put(r, "etc/arbor/health.d/required.d/20-os-check", "", 0o644);
        put(
            r,
            "etc/arbor/health.d/wanted.d/50-flaky",
            "#!/bin/sh\necho nope >&2\nexit 1\n",
            0o755,
        );
        let rep = run(r, Duration::from_secs(5)).unwrap();
        assert!(rep.healthy, "{rep:#?}");
        let names: Vec<_> = rep
            .checks
            .iter()
            .map(|c| (c.kind, c.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (Kind::Required, "10-ok"),
                (Kind::Required, "20-os-check"),
                (Kind::Wanted, "50-flaky")
            ]
        );
        assert_eq!(rep.checks[0].outcome, Outcome::Passed);
        assert_eq!(rep.checks[0].output, "fine\n");
        assert_eq!(rep.checks[1].outcome, Outcome::Disabled);
        assert!(rep.checks[1].path.starts_with(r.join("etc")));
        assert!(
            matches!(&rep.checks[2].outcome, Outcome::Failed { status } if status.contains('1'))
        );
        assert_eq!(rep.checks[2].output, "nope\n");

        // A required check that fails, one that hangs.
        put(
            r,
            "etc/arbor/health.d/required.d/30-bad",
            "#!/bin/sh\nexit 2\n",
            0o755,
        );
        let pidfile = r.join("bg.pid");
        put(
            r,
            "etc/arbor/health.d/required.d/40-hang",
            &format!(
                "#!/bin/sh\nsleep 60 &\necho $! > {}\nsleep 30\n",
                pidfile.display()
            ),
            0o755,
        );
        let t0 = Instant::now();
        let rep = run(r, Duration::from_millis(500)).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(!rep.healthy);
        let by: BTreeMap<_, _> = rep
            .checks
            .iter()
            .map(|c| (c.name.as_str(), &c.outcome))
            .collect();
        assert!(matches!(by["30-bad"], Outcome::Failed { .. }));
        assert_eq!(by["40-hang"], &Outcome::TimedOut);
        let j = serde_json::to_value(&rep).unwrap();
        assert_eq!(j["checks"][3]["result"], "timed_out");
        // The background process went with the check's process group.
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .to_string();
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
                st.rsplit(')')
                    .next()
                    .is_some_and(|s| !s.trim_start().starts_with('Z'))
            })
        };
        let t0 = Instant::now();
        while alive() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(), "the check's background process {pid} survived it");
    }

    #[test]
    fn masks_broken_checks_leftovers_and_long_output() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        // Not executable but not empty: an error, not a disabled check.
        put(
            r,
            "usr/lib/arbor/health.d/required.d/10-noexec.sh",
            "exit 0\n",
            0o644,
        );
        let rep = run(r, Duration::from_secs(5)).unwrap();
        assert!(!rep.healthy);
        assert!(
            matches!(&rep.checks[0].outcome, Outcome::NotRun { error } if error.contains("not executable")),
            "{rep:?}"
        );
        // Masked in /etc by a link to /dev/null.
        std::fs::create_dir_all(r.join("etc/arbor/health.d/required.d")).unwrap();
        std::os::unix::fs::symlink(
            "/dev/null",
            r.join("etc/arbor/health.d/required.d/10-noexec.sh"),
        )
        .unwrap();
        // Left behind by a package manager or an editor: not run.
        put(
            r,
            "usr/lib/arbor/health.d/required.d/20-x.rpmnew",
            "#!/bin/sh\nexit 1\n",
            0o755,
        );
        put(
            r,
            "usr/lib/arbor/health.d/required.d/20-x~",
            "#!/bin/sh\nexit 1\n",
            0o755,
        );
        // About a megabyte of output: the last 4 KiB kept.
        put(
            r,
            "usr/lib/arbor/health.d/wanted.d/30-chatty",
            "#!/bin/sh\ni=0\nwhile [ $i -lt 20000 ]; do echo \"line $i of many words to fill the pipe\"; i=$((i+1)); done\necho last line\n",
            0o755,
        );
        // A relative root works as an absolute one.
        let cwd = std::env::current_dir().unwrap();
        let rel = pathdiff(r, &cwd);
        let rep = run(&rel, Duration::from_secs(30)).unwrap();
        assert!(rep.healthy, "{rep:#?}");
        let names: Vec<_> = rep.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["10-noexec.sh", "30-chatty"]);
        assert_eq!(rep.checks[0].outcome, Outcome::Disabled);
        let out = &rep.checks[1].output;
        assert_eq!(out.len(), KEEP as usize);
        assert!(out.ends_with("last line\n"), "{out}");
    }

    /// `to` relative to `from` (both absolute), with `..` as needed.
    fn pathdiff(to: &Path, from: &Path) -> PathBuf {
        let (t, f): (Vec<_>, Vec<_>) = (to.components().collect(), from.components().collect());
        let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
        let mut p = PathBuf::new();
        for _ in common..f.len() {
            p.push("..");
        }
        for c in &t[common..] {
            p.push(c);
        }
        p
    }

    #[test]
    fn no_checks_is_healthy_and_a_broken_one_is_not_run() {
        let t = tempfile::tempdir().unwrap();
        assert!(run(t.path(), Duration::from_secs(1)).unwrap().healthy);
        put(
            t.path(),
            "etc/arbor/health.d/required.d/10-nointerp",
            "#!/nonexistent/sh\n",
            0o755,
        );
        let rep = run(t.path(), Duration::from_secs(1)).unwrap();
        assert!(!rep.healthy);
        assert!(
            matches!(rep.checks[0].outcome, Outcome::NotRun { .. }),
            "{rep:?}"
        );
    }
}
