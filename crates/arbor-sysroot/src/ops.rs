//! Operations on the deployment list: rollback, undeploy, pin, kernel
//! arguments. Each takes the sysroot lock, reloads, and writes the new
//! list with [`write_deployments`] (atomic, see there).

use anyhow::{bail, Context, Result};

use crate::fsutil;
use crate::kargs::Kargs;
use crate::sysroot::{Sysroot, SysrootLock};
use crate::write::{write_deployments, WriteReport};

fn check_index(s: &Sysroot, index: usize) -> Result<()> {
    if index >= s.deployments.len() {
        bail!(
            "Out of range deployment index {index}, expected < {}",
            s.deployments.len()
        );
    }
    Ok(())
}

/// Makes the rollback deployment the default: the first deployment after
/// the booted one (of its stateroot), or, when nothing is booted, the
/// second in the list. The previous default stays, right after it.
pub fn rollback(s: &mut SysrootLock<'_>) -> Result<(usize, WriteReport)> {
    s.load()?;
    let target = match s.booted {
        Some(b) => {
            let root = s.deployments[b].stateroot.clone();
            match s.pending_and_rollback(&root) {
                (_, Some(r)) => r,
                // Booted into an older one with a pending newer default:
                // make the booted deployment the default again.
                (Some(_), None) => b,
                (None, None) => bail!("No rollback deployment"),
            }
        }
        None if s.deployments.len() >= 2 => 1,
        None => bail!("No rollback deployment"),
    };
    if target == 0 {
        bail!("The rollback deployment is already the default");
    }
    let mut list = s.deployments.clone();
    let d = list.remove(target);
    list.insert(0, d);
    let r = write_deployments(s, list, true)?;
    Ok((target, r))
}

/// Removes the deployment at `index` (never the booted one).
pub fn undeploy(s: &mut SysrootLock<'_>, index: usize) -> Result<WriteReport> {
    s.load()?;
    check_index(s, index)?;
    if s.booted == Some(index) {
        bail!("Cannot undeploy currently booted deployment {index}");
    }
    let mut list = s.deployments.clone();
    list.remove(index);
    write_deployments(s, list, true)
}

/// Pins (never removed by a deploy) or unpins the deployment at `index`:
/// `[libostree-transient] pinned` in its origin, rewritten atomically.
pub fn set_pinned(s: &mut SysrootLock<'_>, index: usize, pinned: bool) -> Result<bool> {
    s.load()?;
    check_index(s, index)?;
    let d = &s.deployments[index];
    if d.staged {
        bail!("Cannot pin staged deployment {index}: it is replaced or finalized at shutdown");
    }
    if d.pinned() == pinned {
        return Ok(false);
    }
    let mut origin = d.origin.clone().unwrap_or_default();
    if pinned {
        origin.set("libostree-transient", "pinned", "true")?;
    } else {
        origin.remove_key("libostree-transient", "pinned");
    }
    let dir = fsutil::open_dir(&s.fd, &format!("ostree/deploy/{}/deploy", d.stateroot))?;
    arbor_fs::atomic_write(
        &dir,
        &format!("{}.origin", d.dir_name()),
        origin.to_text().as_bytes(),
        0o644,
    )
    .context("Writing the origin")?;
    rustix::fs::fsync(&dir)?;
    s.load()?;
    Ok(true)
}

/// Kernel-argument edits, applied in order: appends, replacements, deletions.
#[derive(Debug, Clone, Default)]
pub struct KargsEdit {
    /// Appended (`KEY=VALUE` or `KEY`).
    pub append: Vec<String>,
    /// Replacing every argument with the same key.
    pub replace: Vec<String>,
    /// Deleted (`KEY=VALUE`, or a `KEY` present once).
    pub delete: Vec<String>,
}

impl KargsEdit {
    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.append.is_empty() && self.replace.is_empty() && self.delete.is_empty()
    }
}

/// Changes the kernel arguments of the deployment at `index` (the same
/// tree, new boot entries); returns the new arguments.
pub fn edit_kargs(s: &mut SysrootLock<'_>, index: usize, edit: &KargsEdit) -> Result<Kargs> {
    s.load()?;
    check_index(s, index)?;
    for a in edit.append.iter().chain(&edit.replace).chain(&edit.delete) {
        Kargs::validate_arg(a)?;
        if a.split_once('=').map_or(a.as_str(), |(k, _)| k) == "ostree" {
            bail!("Invalid kernel argument {a:?}: ostree= is managed by arbor");
        }
    }
    if s.deployments[index].staged {
        bail!("Deployment {index} is staged: its kernel arguments are set when it is staged");
    }
    let mut list = s.deployments.clone();
    let k = &mut list[index].kargs;
    for a in &edit.append {
        k.append(a);
    }
    for a in &edit.replace {
        k.replace(a);
    }
    for a in &edit.delete {
        k.delete(a)?;
    }
    let out = list[index].kargs_without_ostree();
    write_deployments(s, list, true)?;
    Ok(out)
}
