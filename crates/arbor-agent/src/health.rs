//! Health checks, greenboot's model: executables in
//! `required.d/` and `wanted.d/` of `/usr/lib/arbor/health.d` (the OS's)
//! and `/etc/arbor/health.d` (the machine's), run after boot in file-name
//! order. A boot is good when every required check passes; a failing
//! wanted check is only reported. A check in `/etc` replaces the one of
//! the same name in `/usr/lib` (as systemd's unit directories do), so a
//! machine can override or, with an empty non-executable file, disable
//! one of the OS's checks.
//!
//! Each check runs with its working directory `/`, stdin closed, and a
//! time limit; the last 4 KiB of its output are kept for the report.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
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
                if name.starts_with('.') {
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
    let mut checks = Vec::new();
    for (kind, name, path) in find(root)? {
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

fn run_one(path: &Path, limit: Duration) -> (Outcome, String) {
    let executable =
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if !executable {
        return (Outcome::Disabled, String::new());
    }
    let mut log = match tempfile::tempfile() {
        Ok(f) => f,
        Err(e) => {
            return (
                Outcome::NotRun {
                    error: format!("A log file: {e}"),
                },
                String::new(),
            )
        }
    };
    let spawn = || {
        log.try_clone().and_then(|out| {
            let err = out.try_clone()?;
            Command::new(path)
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
        })
    };
    // ETXTBSY: a script just written may still be open for writing in a
    // child another thread is forking; that passes within moments.
    let mut spawned = spawn();
    for _ in 0..10 {
        match &spawned {
            Err(e) if e.raw_os_error() == Some(26) => {
                std::thread::sleep(Duration::from_millis(20));
                spawned = spawn();
            }
            _ => break,
        }
    }
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
    let deadline = Instant::now() + limit;
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => break Outcome::Passed,
            Ok(Some(st)) => {
                break Outcome::Failed {
                    status: st.to_string(),
                }
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Outcome::TimedOut;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                break Outcome::NotRun {
                    error: e.to_string(),
                }
            }
        }
    };
    (outcome, tail(&mut log))
}

/// The last [`KEEP`] bytes of `f`, as text.
fn tail(f: &mut std::fs::File) -> String {
    let len = f.seek(SeekFrom::End(0)).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(KEEP)));
    let mut buf = Vec::new();
    let _ = f.take(KEEP).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
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
        put(
            r,
            "etc/arbor/health.d/required.d/40-hang",
            "#!/bin/sh\nsleep 30\n",
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
