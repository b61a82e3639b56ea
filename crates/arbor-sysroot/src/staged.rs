//! Staged deployments: `deploy --stage` checks out the new deployment now
//! and records it in `run/ostree/staged-deployment` (ostree's GVariant
//! `a{sv}`: `target` and `merge-deployment` as `{name, osname, bootcsum}`,
//! `kargs`, `locked`); [`finalize`], run at shutdown, merges /etc (so edits
//! made after staging are kept; [`finalize_with`] composes it with a
//! given [`EtcComposer`]) and writes the boot entries.

use std::os::fd::OwnedFd;

use anyhow::{bail, Context, Result};
use arbor_format::{Checksum, Metadata, Value};
use arbor_fs::failpoint::{self, hit};
use fn_error_context::context;

use crate::compose::EtcComposer;
use crate::deployment::{parse_dir_name, Deployment};
use crate::fsutil;
use crate::sysroot::{Sysroot, SysrootLock, STAGED_STATE};
use crate::write::{cleanup, WriteReport};

/// If this file exists, `finalize` does nothing (as ostree's).
pub const STAGED_LOCKED: &str = "run/ostree/staged-deployment-locked";

/// One deployment as the state file names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRef {
    /// Stateroot.
    pub stateroot: String,
    /// Commit.
    pub csum: Checksum,
    /// Serial.
    pub deployserial: u32,
    /// Boot checksum.
    pub bootcsum: String,
}

/// The content of the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedState {
    /// The staged deployment.
    pub target: DeploymentRef,
    /// Whose /etc is merged at finalization.
    pub merge: Option<DeploymentRef>,
    /// Kernel arguments.
    pub kargs: Vec<String>,
    /// Finalization locked.
    pub locked: bool,
    /// Checksums of overlay initrds (`/run/ostree/staged-initrds/CSUM`),
    /// as ostree's `--overlay-initrd` stages them; arbor does not install
    /// them and refuses to finalize such a record (see [`finalize`]).
    pub overlay_initrds: Vec<String>,
    /// Boot entry keys of other tools (`bootconfig-extra`, `a{ss}`, as
    /// ostree 2026.4 writes it, from the merge deployment's entry), given to
    /// the entry written at finalization.
    pub bootconfig_extra: Vec<(String, String)>,
}

/// Serializes an `a{ss}` in GVariant normal form.
fn encode_str_dict(pairs: &[(String, String)]) -> Vec<u8> {
    use gvariant::{gv, Marker};
    let items: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut out = Vec::new();
    gv!("a{ss}")
        .serialize(&items, &mut out)
        .expect("writing to a Vec cannot fail");
    out
}

/// Parses an `a{ss}` (`None` if it is not one in normal form).
fn decode_str_dict(data: &[u8]) -> Option<Vec<(String, String)>> {
    use gvariant::aligned_bytes::{copy_to_align, AsAligned, A8};
    use gvariant::{gv, Marker, Structure};
    let aligned = copy_to_align::<A8>(data);
    let d = gv!("a{ss}").cast(aligned.as_aligned());
    let pairs: Vec<(String, String)> = d
        .iter()
        .map(|e| {
            let (k, v) = e.to_tuple();
            (k.to_str().to_owned(), v.to_str().to_owned())
        })
        .collect();
    // The crate reads non-normal data leniently: accept only what
    // re-serializes to the same bytes.
    (encode_str_dict(&pairs) == data).then_some(pairs)
}

fn ref_to_dict(d: &DeploymentRef) -> Metadata {
    let mut m = Metadata::new();
    m.push("name", Value::Str(format!("{}.{}", d.csum, d.deployserial)));
    m.push("osname", Value::Str(d.stateroot.clone()));
    m.push("bootcsum", Value::Str(d.bootcsum.clone()));
    m
}

fn dict_to_ref(m: &Metadata) -> Result<DeploymentRef> {
    let get = |k: &str| {
        m.get_str(k)
            .with_context(|| format!("Staged deployment state: missing {k}"))
    };
    let (csum, deployserial) = parse_dir_name(get("name")?)?;
    Ok(DeploymentRef {
        stateroot: get("osname")?.to_string(),
        csum,
        deployserial,
        bootcsum: get("bootcsum")?.to_string(),
    })
}

impl StagedState {
    /// Serialises as ostree's `a{sv}`.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = Metadata::new();
        m.push("target", Value::Dict(ref_to_dict(&self.target)));
        if let Some(md) = &self.merge {
            m.push("merge-deployment", Value::Dict(ref_to_dict(md)));
        }
        m.push("kargs", Value::StrArray(self.kargs.clone()));
        if !self.bootconfig_extra.is_empty() {
            m.push(
                "bootconfig-extra",
                Value::Other {
                    type_str: "a{ss}".into(),
                    data: encode_str_dict(&self.bootconfig_extra),
                },
            );
        }
        if !self.overlay_initrds.is_empty() {
            m.push(
                "overlay-initrds",
                Value::StrArray(self.overlay_initrds.clone()),
            );
        }
        m.push("locked", Value::Bool(self.locked));
        m.encode()
    }

    /// Parses the state file.
    pub fn decode(data: &[u8]) -> Result<StagedState> {
        let m = Metadata::decode(data).context("Parsing the staged deployment state")?;
        let Some(Value::Dict(t)) = m.get("target") else {
            bail!("Staged deployment state: no target");
        };
        let merge = match m.get("merge-deployment") {
            Some(Value::Dict(d)) => Some(dict_to_ref(d)?),
            _ => None,
        };
        let kargs = match m.get("kargs") {
            Some(Value::StrArray(v)) => v.clone(),
            _ => Vec::new(),
        };
        Ok(StagedState {
            target: dict_to_ref(t)?,
            merge,
            kargs,
            locked: matches!(m.get("locked"), Some(Value::Bool(true))),
            overlay_initrds: match m.get("overlay-initrds") {
                Some(Value::StrArray(v)) => v.clone(),
                _ => Vec::new(),
            },
            bootconfig_extra: match m.get("bootconfig-extra") {
                Some(Value::Other { type_str, data }) if type_str == "a{ss}" => {
                    decode_str_dict(data)
                        .context("Staged deployment state: invalid bootconfig-extra")?
                }
                _ => Vec::new(),
            },
        })
    }
}

/// Reads [`STAGED_STATE`] below `sysroot`, if present.
pub fn read_state(sysroot: &OwnedFd) -> Result<Option<StagedState>> {
    match fsutil::read_optional(sysroot, STAGED_STATE)? {
        Some(b) => Ok(Some(StagedState::decode(&b)?)),
        None => Ok(None),
    }
}

/// Records `d` as staged (atomically replacing any previous record).
pub(crate) fn write_state(s: &Sysroot, d: &Deployment, merge: Option<&Deployment>) -> Result<()> {
    let r = |d: &Deployment| DeploymentRef {
        stateroot: d.stateroot.clone(),
        csum: d.csum,
        deployserial: d.deployserial,
        bootcsum: d.bootcsum.clone(),
    };
    let state = StagedState {
        target: r(d),
        merge: merge.map(r),
        kargs: d.kargs_without_ostree().args().to_vec(),
        locked: false,
        overlay_initrds: Vec::new(),
        // As ostree: the merge deployment's keys of other tools carry over.
        bootconfig_extra: merge
            .map(|m| {
                m.bootconfig
                    .extra_keys()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let dir = fsutil::ensure_dir_path(&s.fd, "run/ostree", 0o755)?;
    arbor_fs::atomic_write(&dir, "staged-deployment", &state.encode(), 0o644)?;
    fsutil::fsync_dir(&dir)
}

/// Locks or unlocks the finalization of what is (or will be) staged:
/// creates or removes [`STAGED_LOCKED`], durably (ostree's `admin
/// lock-finalization`). A locked staged deployment is not finalized at
/// shutdown: it is discarded, and the old default boots.
pub fn set_finalization_locked(s: &SysrootLock<'_>, locked: bool) -> Result<()> {
    let dir = fsutil::ensure_dir_path(&s.fd, "run/ostree", 0o755)?;
    let name = STAGED_LOCKED.rsplit('/').next().unwrap_or_default();
    if locked {
        arbor_fs::atomic_write(&dir, name, b"", 0o644)?;
    } else {
        match rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("Removing {STAGED_LOCKED}")),
        }
    }
    fsutil::fsync_dir(&dir)
}

/// Whether finalization is locked: [`STAGED_LOCKED`] exists (ostree's
/// rule; the record's `locked` is informational).
pub fn finalization_locked(s: &Sysroot) -> Result<bool> {
    Ok(fsutil::file_type(&s.fd, STAGED_LOCKED)?.is_some())
}

/// Removes the state file (ignoring its absence).
pub(crate) fn remove_state(s: &Sysroot) -> Result<()> {
    for p in [STAGED_STATE, STAGED_LOCKED] {
        match rustix::fs::unlinkat(&s.fd, p, rustix::fs::AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("Removing {p}")),
        }
    }
    Ok(())
}

/// What [`finalize`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finalized {
    /// No deployment was staged.
    Nothing,
    /// Finalization is locked; nothing was done.
    Locked,
    /// The staged deployment is now the default.
    Done {
        /// `CSUM.SERIAL`.
        deployment: String,
        /// The boot write.
        write: WriteReport,
    },
}

/// Where a failed finalization leaves its error, relative to `/boot`
/// (ostree's `ostree/finalize-failure.stamp`), for the next boot to report.
pub const FINALIZE_FAILURE_STAMP: &str = "ostree/finalize-failure.stamp";

/// Completes the staged deployment (`finalize_inner`: removes the record,
/// composes /etc, writes the boot entries, cleans up), recording a
/// failure in [`FINALIZE_FAILURE_STAMP`] (and removing an old stamp on
/// success), as ostree's `finalize-staged` does, so `boot-complete`
/// reports it on the next boot.
pub fn finalize(s: &mut SysrootLock<'_>) -> Result<Finalized> {
    finalize_with(s, &crate::compose::ThreeWayMerge)
}

/// [`finalize`], composing the staged deployment's `/etc` with `composer`
/// (which reads what the staged deployment's origin declares).
pub fn finalize_with(s: &mut SysrootLock<'_>, composer: &dyn EtcComposer) -> Result<Finalized> {
    let r = finalize_inner(s, composer);
    let boot = fsutil::open_dir(&s.fd, "boot")?;
    match &r {
        Err(e) => {
            fsutil::ensure_dir_path(&boot, "ostree", 0o755)?;
            let dir = fsutil::open_dir(&boot, "ostree")?;
            let stamp = FINALIZE_FAILURE_STAMP
                .rsplit('/')
                .next()
                .unwrap_or_default();
            if let Err(w) = arbor_fs::atomic_write(&dir, stamp, format!("{e:#}").as_bytes(), 0o644)
            {
                tracing::error!("writing /boot/{FINALIZE_FAILURE_STAMP}: {w:#}");
            }
        }
        Ok(_) => {
            match rustix::fs::unlinkat(&boot, FINALIZE_FAILURE_STAMP, rustix::fs::AtFlags::empty())
            {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e).context("Removing the finalize failure stamp"),
            }
        }
    }
    r
}

/// Run at boot (`boot-complete`): if the previous shutdown's finalization
/// failed, removes the stamp and returns its message as an error (once).
/// Takes no sysroot lock (as ostree's): it only removes its own stamp in
/// `/boot`, and the sysroot may be read-only at boot.
pub fn boot_complete(s: &Sysroot) -> Result<()> {
    let boot = fsutil::open_dir(&s.fd, "boot")?;
    let Some(msg) = fsutil::read_optional(&boot, FINALIZE_FAILURE_STAMP)? else {
        return Ok(());
    };
    let _ = rustix::fs::unlinkat(&boot, FINALIZE_FAILURE_STAMP, rustix::fs::AtFlags::empty());
    bail!(
        "Finalizing the staged deployment failed on the previous shutdown: {}",
        String::from_utf8_lossy(&msg).trim_end()
    )
}

/// Completes a staged deployment (run at shutdown): removes the record,
/// merges the merge deployment's /etc as it is now, then writes the
/// deployment list with it as the default, and cleans up without pruning.
/// A crash at any point boots the old list; the staged deployment is then
/// lost, and cleanup removes its directory (as with ostree).
#[context("Finalizing the staged deployment")]
fn finalize_inner(s: &mut SysrootLock<'_>, composer: &dyn EtcComposer) -> Result<Finalized> {
    s.load()?;
    let Some(state) = read_state(&s.fd)? else {
        return Ok(Finalized::Nothing);
    };
    // As ostree (since 2023.8): the lock file decides, whatever the
    // record's `locked` says (`admin lock-finalization --unlock` and
    // `rpm-ostree finalize-deployment` remove only the file).
    if fsutil::file_type(&s.fd, STAGED_LOCKED)?.is_some() {
        return Ok(Finalized::Locked);
    }
    if !state.overlay_initrds.is_empty() {
        // Left in place, so the tool that staged it can still finalize it.
        bail!(
            "The staged deployment has overlay initrds ({}), which arbor does not \
             install: finalize it with 'ostree admin finalize-staged'",
            state.overlay_initrds.join(", ")
        );
    }
    let Some(staged) = s.deployments.first().filter(|d| d.staged).cloned() else {
        bail!("A deployment is staged, but the system is not booted into this sysroot");
    };
    let merge = match &state.merge {
        Some(m) => Some(
            s.deployments
                .iter()
                .find(|d| {
                    !d.staged
                        && d.stateroot == m.stateroot
                        && d.csum == m.csum
                        && d.deployserial == m.deployserial
                })
                .cloned()
                .with_context(|| {
                    format!(
                        "Failed to find merge deployment {}.{} for staged",
                        m.csum, m.deployserial
                    )
                })?,
        ),
        None => None,
    };
    // The record goes first: a crash later must not finalize a
    // half-merged /etc on the next attempt.
    remove_state(s)?;
    hit(failpoint::FINALIZE_STATE_REMOVED);
    let root = s.deployment_dir(&staged)?;
    composer.compose(s, merge.as_ref(), &staged, &root)?;
    crate::deploy::remove_updated_stamps(s, &staged)?;
    crate::deploy::seal(s, &staged)?;
    hit(failpoint::FINALIZE_ETC_MERGED);
    // Take the staged deployment over (the write would discard it as
    // staged), as ostree's finalization does.
    s.deployments.remove(0);
    s.booted = s.booted.map(|b| b - 1);
    let mut new = staged.clone();
    new.staged = false;
    let mut list = crate::deploy::simple_list(s, &new, merge.as_ref(), false);
    // Probation for the new default (crate::bootcount), armed before the
    // switch: a crash in between leaves a token that no menu counts for.
    // Never fails the finalization (the update matters more than its
    // probation): a bad block is logged and the update is not counted.
    let token = if crate::bootcount::wanted(s, &root)? {
        let token = crate::bootcount::new_token(&new)?;
        match crate::bootcount::arm(s, &token) {
            Ok(Some(n)) => {
                tracing::info!("boot counter armed: the new deployment boots at most {n} times");
                Some(token)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!("Not counting the boots of the new deployment: {e:#}");
                None
            }
        }
    } else {
        None
    };
    if token.is_some() {
        // GRUB's fall-back boots entry 1: the deployment booted now.
        if let Some(b) = s.booted.map(|b| s.deployments[b].clone()) {
            if let Some(i) = list.iter().position(|d| d.same(&b)) {
                let d = list.remove(i);
                list.insert(1.min(list.len()), d);
            }
        }
    }
    let write = crate::write::write_deployments_with(s, list, false, token.as_deref())?;
    cleanup(s, false)?;
    Ok(Finalized::Done {
        deployment: staged.dir_name(),
        write,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootconfig_extra_is_a_normal_form_string_dict() {
        // {'ab': 'c'} as GVariant a{ss}: the entry "ab\0" "c\0" with the
        // first string's end (3) as its framing offset, then the array's
        // offset table (the entry ends at 6); all offsets one byte.
        let pairs = vec![("ab".to_string(), "c".to_string())];
        let bytes = encode_str_dict(&pairs);
        assert_eq!(bytes, b"ab\0c\0\x03\x06");
        assert_eq!(decode_str_dict(&bytes), Some(pairs));
        assert_eq!(decode_str_dict(&[]), Some(vec![]));
        // Not normal form (a wrong framing offset): refused.
        assert_eq!(decode_str_dict(b"ab\0c\0\x02\x06"), None);
        // Round trip through the whole record.
        let st = StagedState {
            target: DeploymentRef {
                stateroot: "os".into(),
                csum: Checksum::from_hex(&"ab".repeat(32)).unwrap(),
                deployserial: 0,
                bootcsum: "cd".repeat(32),
            },
            merge: None,
            kargs: vec!["quiet".into()],
            locked: false,
            overlay_initrds: vec![],
            bootconfig_extra: vec![
                ("x-options-source-tuned".into(), "a=1 b".into()),
                ("fdtdir".into(), "/x".into()),
            ],
        };
        assert_eq!(StagedState::decode(&st.encode()).unwrap(), st);
    }
}
