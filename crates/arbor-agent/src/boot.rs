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

/// Makes the booted deployment the default again after a fall-back, and
/// records the release it replaces, if the default is the deployment on
/// probation (`token`'s). The booted deployment moves to the front, the
/// others keep their order (a pinned or older one never becomes the
/// default). `None` when there is nothing to roll back.
fn roll_back(
    l: &mut arbor_sysroot::sysroot::SysrootLock<'_>,
    sysroot: &Path,
    token: &str,
    now: Timestamp,
) -> Result<Option<Release>> {
    l.load()?;
    let Some(b) = l.booted() else {
        return Ok(None);
    };
    if b == 0 {
        return Ok(None);
    }
    let bad = l.deployments()[0].clone();
    if bad.staged || bad.dir_name() != bootcount::token_deployment(token) {
        tracing::warn!(
            "the boot loader fell back, but the default ({}) is not the deployment on \
             probation ({}): nothing rolled back",
            bad.dir_name(),
            bootcount::token_deployment(token)
        );
        return Ok(None);
    }
    let version = arbor_sysroot::status::status_entries(l)[0].version.clone();
    let release = Release {
        checksum: bad.base_commit().to_hex(),
        version,
    };
    // Recorded first: a crash before the switch repeats all of this at
    // the next boot (the block and the menu still say fall back), and the
    // record is kept once.
    state::record_rollback(&state_root(sysroot, &bad.stateroot), release.clone(), now)?;
    let mut list = l.deployments().to_vec();
    let booted = list.remove(b);
    list.insert(0, booted);
    // No cleanup here (it prunes): the block is cleared right after the
    // switch; the caller cleans up after that.
    arbor_sysroot::write::write_deployments(l, list, false)?;
    Ok(Some(release))
}

/// The counter GRUB left at the previous unhealthy boot of this
/// probation, to tell a GRUB that does not count (its menu is not arbor's,
/// or it cannot write the block) from one that does.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Seen {
    token: String,
    boot_id: String,
    left: u32,
}

const SEEN_FILE: &str = "probation-seen.json";

/// Whether GRUB counted this boot: the counter went down since the last
/// unhealthy boot of the same probation (or this is the first one seen).
/// Records this boot.
fn grub_counted(root: &Path, token: &str, left: u32) -> Result<bool> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string();
    let p = root.join(state::DIR).join(SEEN_FILE);
    let prev: Option<Seen> = std::fs::read(&p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let counted = match &prev {
        Some(s) if s.token == token && s.boot_id != boot_id => left < s.left,
        _ => true,
    };
    std::fs::create_dir_all(p.parent().context("state dir")?)?;
    let seen = Seen {
        token: token.to_string(),
        boot_id,
        left,
    };
    std::fs::write(&p, serde_json::to_vec(&seen)?)
        .with_context(|| format!("Writing {}", p.display()))?;
    Ok(counted)
}

/// The verdict on this boot of the sysroot at `sysroot` (its checks
/// under `root`, each limited to `limit`). Writes the verdict file.
pub fn after_boot(
    open: &dyn Fn() -> Result<Sysroot>,
    sysroot: &Path,
    root: &Path,
    limit: Duration,
) -> Result<AfterBoot> {
    let mut s = open()?;
    let (count, token) = bootcount::probation(&s)?.unwrap_or((BootCount::Off, None));
    let mut rolled_back = None;
    if count == BootCount::FellBack {
        let token = token.clone().unwrap_or_default();
        let mut l = s.lock()?;
        rolled_back = roll_back(&mut l, sysroot, &token, Timestamp::now())?;
        bootcount::clear(&l)?;
        if rolled_back.is_some() {
            if let Err(e) = arbor_sysroot::write::cleanup(&mut l, false) {
                tracing::warn!("Cleaning up after the rollback: {e:#}");
            }
        }
        drop(l);
        match &rolled_back {
            Some(r) => tracing::warn!(
                event = "rolled-back",
                checksum = r.checksum.as_str(),
                "the boot loader fell back: {r} failed its boots and is rolled back"
            ),
            None => tracing::warn!(
                event = "fell-back",
                "the boot loader fell back; nothing to roll back"
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
    s.load()?;
    let default_booted = s.booted() == Some(0);
    let stateroot = arbor_agent_stateroot(&s);
    let now_count = bootcount::probation(&s)?.unwrap_or((BootCount::Off, None));
    if report.healthy {
        // Only a boot of the deployment on probation ends it (a boot of
        // the previous one, picked by hand in the menu, does not).
        if default_booted || !matches!(now_count.0, BootCount::Counting { .. }) {
            bootcount::mark_good(&s)?;
            marked_good = true;
        }
        tracing::info!(event = "boot-good", "every required health check passed");
    } else {
        if let (BootCount::Counting { left }, Some(t)) = (now_count.0, &now_count.1) {
            if default_booted {
                let root = state_root(sysroot, &stateroot);
                reboot = grub_counted(&root, t, left)?;
                if !reboot {
                    tracing::error!(
                        event = "not-counting",
                        "the boot counter did not go down since the last boot: the boot loader \
                         does not count (not arbor's menu, or it cannot write \
                         /boot/grub/grubenv); not rebooting"
                    );
                }
            }
        }
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
        rolled_back: rolled_back.clone(),
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

fn arbor_agent_stateroot(s: &Sysroot) -> String {
    crate::system::stateroot_of(s).unwrap_or_else(|| "default".to_string())
}

fn write_verdict(sysroot: &Path, v: &Verdict) -> Result<()> {
    let p = sysroot.join(HEALTH_VERDICT);
    let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
        anyhow::bail!("Bad verdict path {}", p.display());
    };
    state::write_json_in(dir, name, v)
}
