//! The agent's [`Host`] on a real machine ([`SystemHost`]): its sysroot
//! (check, pull, stage with the finalization locked, unlock), the
//! FleetLock server, the state files and `systemctl reboot`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arbor_config::apply::ConfigComposer;
use arbor_config::extensions::ops::ExtensionLayering;
use arbor_sysroot::Sysroot;
use arbor_upgrade::{DeployUpdateOptions, UpgradeCheck, UpgradeOptions, Upgrader};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::agent::{BootHealth, Host};
use crate::fleetlock::client::{Answer, Client};
use crate::state::{self, Release, State};

/// Where `arbor health boot` leaves its verdict on this boot, relative to
/// the sysroot (`/run`: gone at the next boot).
pub const HEALTH_VERDICT: &str = "run/arbor/health.json";

/// The verdict file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Every required check passed.
    pub healthy: bool,
    /// The checks that did not pass (name and outcome, in words).
    pub failed: Vec<String>,
    /// The release this boot rolled back (the boot loader fell back).
    #[serde(default)]
    pub rolled_back: Option<Release>,
    /// When the checks ended (RFC 3339).
    pub when: String,
}

/// Opens the sysroot (the CLI's way: with its debug flags).
pub type OpenSysroot = Box<dyn Fn() -> Result<Sysroot>>;

/// The directory whose `var/lib/arbor/agent` holds the agent's files for
/// `stateroot` of the sysroot at `sysroot`: `/` for the booted system's
/// own sysroot (its `/var`), else the stateroot's directory (whose `var`
/// is the one the deployments share).
pub fn state_root(sysroot: &Path, stateroot: &str) -> PathBuf {
    if sysroot == Path::new("/") {
        PathBuf::from("/")
    } else {
        sysroot.join("ostree/deploy").join(stateroot)
    }
}

/// The stateroot the agent acts on: the booted deployment's, else the
/// default's.
pub fn stateroot_of(s: &Sysroot) -> Option<String> {
    let d = s.deployments();
    s.booted()
        .map(|b| d[b].stateroot.clone())
        .or_else(|| d.first().map(|x| x.stateroot.clone()))
}

/// The agent's host on this machine.
pub struct SystemHost {
    open: OpenSysroot,
    sysroot: PathBuf,
    stateroot: Option<String>,
    state_root: PathBuf,
    fleetlock: Option<Client>,
    reboot_command: Vec<String>,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for SystemHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemHost")
            .field("sysroot", &self.sysroot)
            .field("state_root", &self.state_root)
            .finish_non_exhaustive()
    }
}

impl SystemHost {
    /// A host for the sysroot at `sysroot` (opened with `open`), its
    /// FleetLock client if the strategy is `fleet_lock`, rebooting with
    /// `reboot_command` (program and arguments).
    pub fn new(
        open: OpenSysroot,
        sysroot: &Path,
        fleetlock: Option<Client>,
        reboot_command: Vec<String>,
    ) -> Result<SystemHost> {
        if reboot_command.is_empty() {
            bail!("The reboot command is empty");
        }
        let s = open()?;
        let stateroot = stateroot_of(&s);
        let state_root = state_root(sysroot, stateroot.as_deref().unwrap_or("default"));
        Ok(SystemHost {
            open,
            sysroot: sysroot.to_path_buf(),
            stateroot,
            state_root,
            fleetlock,
            reboot_command,
            rng: ring::rand::SystemRandom::new(),
        })
    }

    /// Where the state files are (see [`state_root`]).
    pub fn state_root(&self) -> &Path {
        &self.state_root
    }

    fn options(&self) -> UpgradeOptions {
        UpgradeOptions {
            stateroot: self.stateroot.clone(),
            allow_downgrade: false,
        }
    }

    fn client(&self) -> Result<&Client> {
        self.fleetlock
            .as_ref()
            .context("No FleetLock server configured")
    }
}

fn release_of(u: &arbor_upgrade::Update) -> Release {
    Release {
        checksum: u.to().to_hex(),
        version: u.version().map(str::to_string),
    }
}

impl Host for SystemHost {
    fn now(&mut self) -> Timestamp {
        Timestamp::now()
    }

    fn random(&mut self) -> u64 {
        let mut b = [0u8; 8];
        if ring::rand::SecureRandom::fill(&self.rng, &mut b).is_err() {
            // Machines must still spread out: the clock's nanoseconds.
            tracing::warn!("No random numbers from the system: jitter from the clock");
            return Timestamp::now().subsec_nanosecond().unsigned_abs().into();
        }
        u64::from_le_bytes(b)
    }

    fn check(&mut self) -> Result<Option<Release>> {
        let mut s = (self.open)()?;
        let up = Upgrader::new(&mut s, self.options())?;
        Ok(match up.check()? {
            UpgradeCheck::UpToDate { .. } => None,
            UpgradeCheck::Available(u) => Some(release_of(&u)),
        })
    }

    fn rollback_commit(&mut self) -> Result<Option<String>> {
        let s = (self.open)()?;
        Ok(arbor_sysroot::status::status_entries(&s)
            .iter()
            .find(|e| e.rollback)
            .map(|e| s.deployments()[e.index].base_commit().to_hex()))
    }

    fn staged(&mut self) -> Result<Option<Release>> {
        let s = (self.open)()?;
        Ok(s.deployments()
            .first()
            .filter(|d| d.staged)
            .map(|d| Release {
                checksum: d.base_commit().to_hex(),
                version: None,
            }))
    }

    fn stage(&mut self, release: &Release) -> Result<Release> {
        let mut s = (self.open)()?;
        let mut up = Upgrader::new(&mut s, self.options())?;
        let update = match up.pull(&arbor_repo::progress::NullProgress)? {
            UpgradeCheck::UpToDate { .. } => {
                bail!("The origin no longer offers {release}")
            }
            UpgradeCheck::Available(u) => u,
        };
        // Only what was checked (against the rolled-back releases) is
        // staged: the origin may have moved since.
        if update.to().to_hex() != release.checksum {
            bail!(
                "The origin moved from {} to {} since the check: checking again",
                release.checksum,
                update.to()
            );
        }
        up.deploy(
            &update,
            &DeployUpdateOptions {
                stage: true,
                lock_finalization: true,
                composer: Some(Arc::new(ConfigComposer::default())),
                layering: Some(Arc::new(ExtensionLayering::default())),
            },
        )?;
        drop(up);
        // The extension and configuration refs no deployment uses any
        // more, as after `arbor upgrade`.
        if let Ok(mut l) = s.lock() {
            arbor_config::extensions::ops::collect_after_switch(&mut l);
            arbor_config::store::gc_after_switch(&l);
        }
        Ok(release_of(&update))
    }

    fn reboot(&mut self, release: &Release) -> Result<()> {
        let mut s = (self.open)()?;
        {
            let mut l = s.lock()?;
            l.load()?;
            match l.deployments().first().filter(|d| d.staged) {
                Some(d) if d.base_commit().to_hex() == release.checksum => {}
                Some(d) => bail!(
                    "The staged deployment is {} (staged by someone else), not {release}: \
                     not rebooting",
                    d.dir_name()
                ),
                None => bail!("Nothing is staged any more: not rebooting"),
            }
            arbor_sysroot::staged::set_finalization_locked(&l, false)?;
        }
        let r = std::process::Command::new(&self.reboot_command[0])
            .args(&self.reboot_command[1..])
            .status()
            .with_context(|| format!("Running {}", self.reboot_command.join(" ")))
            .and_then(|st| {
                if st.success() {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!(
                        "{} failed: {st}",
                        self.reboot_command.join(" ")
                    ))
                }
            });
        if let Err(e) = r {
            // Locked again: no other reboot may finalize it meanwhile.
            if let Err(e2) = s
                .lock()
                .and_then(|l| arbor_sysroot::staged::set_finalization_locked(&l, true))
            {
                tracing::error!("Locking the finalization again: {e2:#}");
            }
            return Err(e);
        }
        Ok(())
    }

    fn pre_reboot(&mut self) -> Result<Answer> {
        self.client()?.pre_reboot()
    }

    fn steady_state(&mut self) -> Result<Answer> {
        self.client()?.steady_state()
    }

    fn boot_health(&mut self) -> Result<Option<BootHealth>> {
        let p = self.sysroot.join(HEALTH_VERDICT);
        match std::fs::read(&p) {
            Ok(b) => {
                let v: Verdict = serde_json::from_slice(&b)
                    .with_context(|| format!("Parsing {}", p.display()))?;
                Ok(Some(BootHealth {
                    healthy: v.healthy,
                    rolled_back: v.rolled_back.is_some(),
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("Reading {}", p.display())),
        }
    }

    fn rolled_back(&mut self) -> Result<Vec<Release>> {
        Ok(state::rolled_back(&self.state_root)?
            .releases
            .into_iter()
            .map(|r| r.release)
            .collect())
    }

    fn save(&mut self, st: &State) -> Result<()> {
        state::write_state(&self.state_root, st)
    }
}
