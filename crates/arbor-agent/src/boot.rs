//! After each boot (`arbor health boot`, run by `arbor-health.service`):
//! greenboot's verdict on the boot, with arbor-sysroot's boot counting
//! ([`arbor_sysroot::bootcount`]).
//!
//! 1. If the boot loader fell back to the previous deployment (the new
//!    one used up its boots), the new default is recorded as rolled back
//!    ([`crate::state::record_rollback`]: the agent never stages it again)
//!    and the booted deployment is made the default again, as `arbor
//!    rollback` would; the counter is cleared.
//! 2. The health checks run ([`crate::health::run`]).
//! 3. All required checks passed: the boot is marked good (the counter
//!    cleared). Otherwise, while the deployment is on probation, the
//!    caller reboots: the next boot counts down, and the last one falls
//!    back. A deployment not on probation is only reported unhealthy.
//!
//! The verdict is written to [`crate::system::HEALTH_VERDICT`] for the
//! agent (which reports steady-state to FleetLock only after a good boot).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use arbor_sysroot::bootcount::{self, BootCount};
use arbor_sysroot::Sysroot;
use jiff::Timestamp;
use serde::Serialize;

use crate::health::{self, Outcome, Report};
use crate::state::{self, Release};
use crate::system::{state_root, Verdict, HEALTH_VERDICT};

/// What [`after_boot`] found and did.
#[derive(Debug, Clone, Serialize)]
pub struct AfterBoot {
    /// The boot counting state before anything was done.
    pub count: BootCount,
    /// The release rolled back by this boot (the boot loader fell back).
    pub rolled_back: Option<Release>,
    /// The health checks.
    pub report: Report,
    /// The boot was marked good.
    pub marked_good: bool,
    /// The caller must reboot: unhealthy while on probation.
    pub reboot: bool,
}

fn sysroot_dir(path: &Path) -> Result<std::os::fd::OwnedFd> {
    rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .with_context(|| format!("Opening {}", path.display()))
}

/// Makes the booted deployment the default again after a fall-back, and
/// records the release it replaces. `None` when the booted deployment is
/// already the default (nothing to roll back).
fn roll_back(s: &mut Sysroot, sysroot: &Path, now: Timestamp) -> Result<Option<Release>> {
    let mut l = s.lock()?;
    l.load()?;
    let Some(b) = l.booted() else {
        return Ok(None);
    };
    if b == 0 {
        return Ok(None);
    }
    let bad = l.deployments()[0].clone();
    let version = arbor_sysroot::status::status_entries(&l)[0].version.clone();
    let release = Release {
        checksum: bad.base_commit().to_hex(),
        version,
    };
    let root = state_root(sysroot, &bad.stateroot);
    // Recorded first: a crash before the rollback is written repeats it at
    // the next boot (the counter still says -1), and the record is kept
    // once.
    state::record_rollback(&root, release.clone(), now)?;
    arbor_sysroot::ops::rollback(&mut l)?;
    Ok(Some(release))
}

/// The verdict on this boot of the sysroot at `sysroot` (its checks
/// under `root`, each limited to `limit`). Writes the verdict file.
pub fn after_boot(
    open: &dyn Fn() -> Result<Sysroot>,
    sysroot: &Path,
    root: &Path,
    limit: Duration,
) -> Result<AfterBoot> {
    let dir = sysroot_dir(sysroot)?;
    let count = bootcount::state(&dir)?;
    let mut rolled_back = None;
    if count == BootCount::FellBack {
        let mut s = open()?;
        rolled_back = roll_back(&mut s, sysroot, Timestamp::now())?;
        bootcount::clear(&dir)?;
        match &rolled_back {
            Some(r) => tracing::warn!(
                event = "rolled-back",
                checksum = r.checksum.as_str(),
                "the boot loader fell back: {r} failed its boots and is rolled back"
            ),
            None => tracing::warn!(
                event = "fell-back",
                "the boot loader fell back, and the booted deployment is the default"
            ),
        }
    }
    let report = health::run(root, limit)?;
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !matches!(c.outcome, Outcome::Passed | Outcome::Disabled))
        .map(|c| format!("{:?} {}: {:?}", c.kind, c.name, c.outcome))
        .collect();
    let mut marked_good = false;
    let mut reboot = false;
    if report.healthy {
        bootcount::mark_good(&dir)?;
        marked_good = true;
        tracing::info!(
            event = "boot-good",
            "every required health check passed: boot marked good"
        );
    } else {
        let now = bootcount::state(&dir)?;
        reboot = matches!(now, BootCount::Counting { .. });
        tracing::error!(
            event = "boot-unhealthy",
            "required health checks failed: {}{}",
            failed.join("; "),
            if reboot {
                "; the deployment is on probation: rebooting"
            } else {
                ""
            }
        );
    }
    let verdict = Verdict {
        healthy: report.healthy,
        failed,
        when: Timestamp::now().to_string(),
    };
    write_verdict(sysroot, &verdict)?;
    Ok(AfterBoot {
        count,
        rolled_back,
        report,
        marked_good,
        reboot,
    })
}

fn write_verdict(sysroot: &Path, v: &Verdict) -> Result<()> {
    let p = sysroot.join(HEALTH_VERDICT);
    let dir = p.parent().context("verdict path")?;
    std::fs::create_dir_all(dir).with_context(|| format!("Creating {}", dir.display()))?;
    let mut data = serde_json::to_vec_pretty(v)?;
    data.push(b'\n');
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    // Readable by monitoring (a temporary file is 0600).
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    std::io::Write::write_all(&mut tmp, &data)?;
    tmp.persist(&p)
        .with_context(|| format!("Writing {}", p.display()))?;
    Ok(())
}
