//! What the agent writes down for monitoring and for itself, under
//! `/var/lib/arbor/agent` (in `/var`: shared by every deployment, so it
//! survives updates and rollbacks):
//!
//! - `state.json` ([`State`]): the agent's last check, staged update, what
//!   its reboot waits for, its last error; rewritten atomically at every
//!   change, by the agent only;
//! - `rolled-back.json` ([`RolledBack`]): the releases that failed their
//!   health checks and were rolled back, written at boot by the health
//!   unit (`arbor health boot`), read by the agent, which never stages
//!   them again.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The directory, relative to the root.
pub const DIR: &str = "var/lib/arbor/agent";
/// The agent's state file, in [`DIR`].
pub const STATE_FILE: &str = "state.json";
/// The rolled-back releases, in [`DIR`].
pub const ROLLED_BACK_FILE: &str = "rolled-back.json";

/// A release: a commit that the origin offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The commit.
    pub checksum: String,
    /// Its `version` metadata, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{} ({})", v, self.checksum),
            None => f.write_str(&self.checksum),
        }
    }
}

/// Where the agent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Starting: reporting a good boot, reading what is staged.
    #[default]
    Starting,
    /// Up to date (or nothing it may take): waiting for the next check.
    Idle,
    /// An update is staged, its reboot waits for the health checks'
    /// verdict on this boot.
    WaitingForHealth,
    /// An update is staged, its reboot waits for a maintenance window.
    WaitingForWindow,
    /// An update is staged, its reboot waits for the FleetLock slot.
    WaitingForLock,
    /// The reboot into the staged update was requested.
    Rebooting,
}

/// The agent's state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct State {
    /// The reboot strategy (`immediate`, `periodic`, `fleet_lock`).
    pub strategy: String,
    /// Where the agent is.
    pub phase: Phase,
    /// When it last checked for an update (RFC 3339).
    pub last_check: Option<String>,
    /// What that check found.
    pub last_check_result: Option<String>,
    /// When it checks next.
    pub next_check: Option<String>,
    /// The update staged for the next boot (finalization locked until the
    /// reboot is allowed).
    pub staged: Option<Release>,
    /// What the reboot waits for, in words.
    pub waiting_for: Option<String>,
    /// Whether this boot was reported good to the FleetLock server
    /// (steady-state); `None` with another strategy.
    pub steady_state_reported: Option<bool>,
    /// Releases it skips: they were rolled back.
    pub rolled_back: Vec<Release>,
    /// The last error, until a step succeeds.
    pub last_error: Option<String>,
    /// When this file was written.
    pub updated: String,
}

/// Releases that were rolled back, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RolledBack {
    /// The releases, each with when it was rolled back.
    pub releases: Vec<RolledBackRelease>,
}

/// One rolled-back release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledBackRelease {
    /// The release.
    #[serde(flatten)]
    pub release: Release,
    /// When (RFC 3339).
    pub when: String,
}

fn path(root: &Path, name: &str) -> PathBuf {
    root.join(DIR).join(name)
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> Result<Option<T>> {
    match std::fs::read(p) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("Parsing {}", p.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("Reading {}", p.display())),
    }
}

/// Writes `value` as `name` in [`DIR`] under `root`: a temporary file,
/// fsync, rename, fsync of the directory.
fn write_json<T: Serialize>(root: &Path, name: &str, value: &T) -> Result<()> {
    write_json_in(&root.join(DIR), name, value)
}

/// Writes `value` as JSON to `dir/name` (created as needed), mode 0644
/// (monitoring reads it): a temporary file, fsync, rename, fsync of the
/// directory.
pub(crate) fn write_json_in<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("Creating {}", dir.display()))?;
    let mut data = serde_json::to_vec_pretty(value)?;
    data.push(b'\n');
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    // A temporary file is 0600.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    std::io::Write::write_all(&mut tmp, &data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dir.join(name))
        .with_context(|| format!("Writing {}", dir.join(name).display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Reads the state file (`None` before the agent's first run).
pub fn read_state(root: &Path) -> Result<Option<State>> {
    read_json(&path(root, STATE_FILE))
}

/// Writes the state file.
pub fn write_state(root: &Path, state: &State) -> Result<()> {
    write_json(root, STATE_FILE, state)
}

/// The rolled-back releases (none without the file).
pub fn rolled_back(root: &Path) -> Result<RolledBack> {
    Ok(read_json(&path(root, ROLLED_BACK_FILE))?.unwrap_or_default())
}

/// Adds `release` to the rolled-back releases (once).
pub fn record_rollback(root: &Path, release: Release, when: jiff::Timestamp) -> Result<()> {
    let mut all = rolled_back(root)?;
    if all
        .releases
        .iter()
        .any(|r| r.release.checksum == release.checksum)
    {
        return Ok(());
    }
    all.releases.push(RolledBackRelease {
        release,
        when: when.to_string(),
    });
    write_json(root, ROLLED_BACK_FILE, &all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_rollbacks_are_recorded_once() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(read_state(t.path()).unwrap(), None);
        let st = State {
            strategy: "periodic".into(),
            phase: Phase::WaitingForWindow,
            staged: Some(Release {
                checksum: "ab".repeat(32),
                version: Some("2".into()),
            }),
            updated: "2026-12-06T00:00:00Z".into(),
            ..Default::default()
        };
        write_state(t.path(), &st).unwrap();
        assert_eq!(read_state(t.path()).unwrap(), Some(st));
        let text = std::fs::read_to_string(t.path().join(DIR).join(STATE_FILE)).unwrap();
        assert!(text.contains("\"phase\": \"waiting-for-window\""), "{text}");
        let r = Release {
            checksum: "cd".repeat(32),
            version: None,
        };
        let now = jiff::Timestamp::UNIX_EPOCH;
        record_rollback(t.path(), r.clone(), now).unwrap();
        record_rollback(t.path(), r.clone(), now).unwrap();
        let all = rolled_back(t.path()).unwrap();
        assert_eq!(all.releases.len(), 1);
        assert_eq!(all.releases[0].release, r);
        std::fs::write(t.path().join(DIR).join(ROLLED_BACK_FILE), "{").unwrap();
        let e = format!("{:#}", rolled_back(t.path()).unwrap_err());
        assert!(e.contains("rolled-back.json"), "{e}");
    }
}
