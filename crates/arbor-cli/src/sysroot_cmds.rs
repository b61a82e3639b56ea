//! The sysroot commands: each calls `arbor_sysroot` and renders the result.

use std::io::Write;

use anyhow::{Context, Result};
use arbor_sysroot::deploy::{deploy as do_deploy, etc_changes, resolve_commit, DeployOptions};
use arbor_sysroot::Sysroot;
use serde::Serialize;

use crate::cli_sysroot::{
    AdminCmd, CleanupOpts, DeployOpts, FinalizeOpts, IndexOpts, KargsOpts, RollbackOpts,
    StatusOpts, SwitchOpts, UpgradeOpts,
};

/// `admin init-fs`, `admin os-init`.
pub fn admin(c: AdminCmd, out: &mut impl Write) -> Result<()> {
    match c {
        AdminCmd::InitFs(o) => arbor_sysroot::sysroot::init_fs(&o.dir),
        AdminCmd::OsInit(o) => {
            let s = Sysroot::open(&o.sysroot.sysroot)?;
            s.os_init(&o.stateroot)?;
            writeln!(
                out,
                "ostree/deploy/{} initialized as OSTree root",
                o.stateroot
            )?;
            Ok(())
        }
    }
}

/// One deployment as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusEntry {
    /// Position in the boot order (0 = default).
    pub index: usize,
    /// Stateroot.
    pub stateroot: String,
    /// Commit.
    pub checksum: String,
    /// Deployment serial.
    pub deployserial: u32,
    /// The running deployment.
    pub booted: bool,
    /// Staged, waiting for finalization at shutdown.
    pub staged: bool,
    /// Will boot next (before the booted one in the list).
    pub pending: bool,
    /// The one after the booted deployment.
    pub rollback: bool,
    /// Pinned: never removed by a deploy.
    pub pinned: bool,
    /// The commit's `version`.
    pub version: Option<String>,
    /// `origin.refspec`.
    pub origin: Option<String>,
    /// Whether the deployment has an origin file at all (one without a
    /// refspec shows as `<unknown origin type>`, as in ostree).
    #[serde(skip)]
    pub has_origin: bool,
    /// The commit's `ostree.source-title` (e.g. what it was built from).
    pub source_title: Option<String>,
    /// Kernel checksum.
    pub bootcsum: String,
    /// Kernel arguments (without `ostree=`).
    pub kargs: String,
}

/// The status entries of a loaded sysroot.
pub fn status_entries(s: &Sysroot) -> Vec<StatusEntry> {
    // As ostree (`query_deployments_for(NULL)`): pending and rollback are
    // those of the booted stateroot, relative to the booted deployment; a
    // staged deployment is the pending one. Nothing is booted: neither.
    let (pending, rollback) = match s.booted {
        Some(b) => s.pending_and_rollback(&s.deployments[b].stateroot),
        None => (None, None),
    };
    s.deployments
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let source_title = arbor_repo::objects::load_commit(&s.repo, &d.csum)
                .ok()
                .and_then(|c| {
                    c.metadata
                        .get_str("ostree.source-title")
                        .map(str::to_string)
                });
            StatusEntry {
                index: i,
                stateroot: d.stateroot.clone(),
                checksum: d.csum.to_hex(),
                deployserial: d.deployserial,
                booted: s.booted == Some(i),
                staged: d.staged,
                pending: pending == Some(i),
                rollback: rollback == Some(i),
                pinned: d.pinned(),
                version: d.version.clone(),
                origin: d.refspec().map(str::to_string),
                has_origin: d.origin.is_some(),
                source_title,
                bootcsum: d.bootcsum.clone(),
                kargs: d.kargs_without_ostree().to_string(),
            }
        })
        .collect()
}

/// Renders `status` as `ostree admin status` does.
pub fn render_status(entries: &[StatusEntry], out: &mut impl Write) -> std::io::Result<()> {
    if entries.is_empty() {
        return writeln!(out, "No deployments.");
    }
    for e in entries {
        let state = if e.staged {
            " (staged)"
        } else if e.pending {
            " (pending)"
        } else if e.rollback {
            " (rollback)"
        } else {
            ""
        };
        let mark = if e.booted { '*' } else { ' ' };
        writeln!(
            out,
            "{mark} {} {}.{}{state}",
            e.stateroot, e.checksum, e.deployserial
        )?;
        if let Some(v) = &e.version {
            writeln!(out, "    Version: {v}")?;
        }
        if e.pinned {
            writeln!(out, "    Pinned: yes")?;
        }
        match (&e.origin, e.has_origin) {
            (Some(o), _) => writeln!(out, "    origin refspec: {o}")?,
            (None, true) => writeln!(out, "    origin: <unknown origin type>")?,
            (None, false) => writeln!(out, "    origin: none")?,
        }
        if let (true, Some(t)) = (e.has_origin, &e.source_title) {
            writeln!(out, "    `- {t}")?;
        }
    }
    Ok(())
}

/// `status`.
pub fn status(o: StatusOpts, out: &mut impl Write) -> Result<()> {
    let s = Sysroot::open(&o.sysroot.sysroot)?;
    let entries = status_entries(&s);
    if o.json {
        serde_json::to_writer_pretty(&mut *out, &serde_json::json!({ "deployments": entries }))?;
        writeln!(out)?;
    } else {
        render_status(&entries, out)?;
    }
    Ok(())
}

/// `deploy`.
pub fn deploy(o: DeployOpts, out: &mut impl Write) -> Result<()> {
    let mut s = Sysroot::open(&o.sysroot.sysroot)?;
    if o.dry_run {
        return deploy_preview(&mut s, &o, out);
    }
    let opts = DeployOptions {
        stateroot: o.stateroot.clone(),
        revision: o.revision.clone(),
        origin: None,
        kargs: (!o.karg.is_empty()).then(|| o.karg.clone()),
        karg_append: o.karg_append.clone(),
        retain: o.retain,
        stage: o.stage,
    };
    let r = do_deploy(&mut s, &opts)?;
    if o.json {
        serde_json::to_writer_pretty(&mut *out, &r)?;
        writeln!(out)?;
        return Ok(());
    }
    if let Some(e) = &r.etc {
        writeln!(
            out,
            "Copying /etc changes: {} modified, {} removed, {} added",
            e.modified.len(),
            e.removed.len(),
            e.added.len()
        )?;
    }
    if o.stage {
        writeln!(
            out,
            "Staged {} {}: it becomes the default at shutdown",
            r.stateroot, r.deployment
        )?;
        return Ok(());
    }
    writeln!(
        out,
        "Deployed {} {} as the default{}",
        r.stateroot,
        r.deployment,
        if r.bootswap {
            " (new boot entries)"
        } else {
            ""
        }
    )?;
    Ok(())
}

/// `deploy --dry-run`: per file, what the /etc merge would do.
fn deploy_preview(s: &mut Sysroot, o: &DeployOpts, out: &mut impl Write) -> Result<()> {
    // Locked: the merge deployment is read while nothing changes it, and
    // no other preview's scratch directory is live.
    let _lock = s.lock()?;
    s.load()?;
    let s = &*s;
    let stateroot = s.default_stateroot(o.stateroot.as_deref())?;
    let csum = resolve_commit(s, &o.revision)?;
    let Some(m) = s.merge_deployment(&stateroot) else {
        writeln!(
            out,
            "Would deploy {csum}: no merge deployment, /etc is the new default"
        )?;
        return Ok(());
    };
    let merge = &s.deployments[m];
    // The new defaults: the commit's /usr/etc (or /etc of an old-style tree).
    // The merge runs for real on a scratch copy of them, so the preview
    // shows what the deploy will do, or fails as it would.
    let tmp = tempdir_in(s)?;
    let result = (|| {
        std::fs::create_dir_all(tmp.join("result"))?;
        let scratch = arbor_sysroot::fsutil::open_dir(
            rustix::fs::CWD,
            &tmp.join("result").to_string_lossy(),
        )?;
        let defaults = export_etc(s, &csum, &tmp.join("defaults"))?;
        let (_, plan) = etc_changes(s, merge, defaults.as_ref().map(|d| (d, &scratch)))?;
        anyhow::Ok(plan)
    })();
    std::fs::remove_dir_all(&tmp).ok();
    let plan = result?;
    if o.json {
        serde_json::to_writer_pretty(&mut *out, &plan)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "Would deploy {csum}, merging /etc from {}:",
        merge.dir_name()
    )?;
    for p in &plan {
        writeln!(
            out,
            "  {:8} /etc/{}: {}{}",
            p.change,
            p.path,
            p.action,
            if p.upstream_changed {
                " (its new default is ignored)"
            } else {
                ""
            }
        )?;
    }
    if plan.is_empty() {
        writeln!(out, "  no local changes: /etc takes the new defaults")?;
    }
    Ok(())
}

/// The preview's scratch directory, after removing those of earlier
/// previews that were killed (they hold copies of /etc, secrets included;
/// with the sysroot lock held, none is in use).
fn tempdir_in(s: &Sysroot) -> Result<std::path::PathBuf> {
    arbor_sysroot::deploy::remove_stale_previews(s)?;
    Ok(s.path().join(format!(
        "ostree/repo/tmp/{}{}",
        arbor_sysroot::deploy::PREVIEW_PREFIX,
        std::process::id()
    )))
}

/// Checks out the default /etc of `csum` into `dir` for the preview.
fn export_etc(
    s: &Sysroot,
    csum: &arbor_format::Checksum,
    dir: &std::path::Path,
) -> Result<Option<std::os::fd::OwnedFd>> {
    for sub in ["/usr/etc", "/etc"] {
        let opts = arbor_repo::checkout::CheckoutOptions {
            hardlink: false,
            require_hardlinks: false,
            // Owners, modes and xattrs as the deployment will have them:
            // the same mode as the deploy's checkout.
            user_mode: s.repo.mode() != arbor_format::RepoMode::Bare,
            union: false,
            subpath: Some(sub.to_string()),
        };
        match arbor_repo::checkout::checkout(&s.repo, csum, dir, &opts, &arbor_repo::NullProgress) {
            Ok(_) => {
                return Ok(Some(arbor_sysroot::fsutil::open_dir(
                    rustix::fs::CWD,
                    &dir.to_string_lossy(),
                )?))
            }
            Err(e) if arbor_repo::reachable::is_not_found(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// `cleanup`.
pub fn cleanup(o: CleanupOpts, out: &mut impl Write) -> Result<()> {
    let mut s = Sysroot::open(&o.sysroot.sysroot)?;
    let _lock = s.lock()?;
    s.load()?;
    let r = arbor_sysroot::write::cleanup(&mut s, true)?;
    for d in &r.deployments {
        writeln!(out, "Removed deployment {d}")?;
    }
    for b in &r.boot_dirs {
        writeln!(out, "Removed /boot/ostree/{b}")?;
    }
    writeln!(out, "Pruned {} objects", r.pruned_objects)?;
    Ok(())
}

/// Pulls `refspec` into the system repository if it names a remote ref;
/// returns the commit it resolves to.
fn fetch(s: &Sysroot, refspec: &str, allow_downgrade: bool) -> Result<arbor_format::Checksum> {
    if let Some((remote, name)) = refspec.split_once(':') {
        let opts = arbor_pull::PullOptions {
            refs: vec![name.to_string()],
            allow_downgrade,
            ..Default::default()
        };
        arbor_pull::pull(&s.repo, remote, &opts, &crate::progress::Bar::new())?;
    }
    resolve_commit(s, refspec)
}

/// `upgrade`: exit code 77 with `--check` when no update is available
/// (as `rpm-ostree upgrade --check`), 0 otherwise.
pub fn upgrade(o: UpgradeOpts, out: &mut impl Write) -> Result<std::process::ExitCode> {
    let mut s = Sysroot::open(&o.sysroot.sysroot)?;
    let stateroot = s.default_stateroot(o.os.stateroot.as_deref())?;
    let Some(m) = s.merge_deployment(&stateroot) else {
        anyhow::bail!("No deployment of {stateroot} to upgrade");
    };
    let merge = s.deployments[m].clone();
    let Some(refspec) = merge.refspec().map(str::to_string) else {
        anyhow::bail!("Deployment {} has no origin refspec", merge.dir_name());
    };
    // As ostree's upgrader: an image can ship an origin that must be
    // configured (e.g. registered) before it can be upgraded.
    if let Some(u) = merge
        .origin
        .as_ref()
        .and_then(|o| o.get("origin", "unconfigured-state"))
    {
        anyhow::bail!("origin unconfigured-state: {u}");
    }
    if arbor_format::is_hex_checksum(&refspec) {
        anyhow::bail!(
            "The origin is a commit ({refspec}), not a ref: use 'switch' to follow a ref"
        );
    }
    if o.check {
        let target = match refspec.split_once(':') {
            Some((remote, name)) => arbor_pull::pull::remote_refs(&s.repo, remote)?
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, c)| c)
                .with_context(|| format!("The remote {remote} has no ref {name}"))?,
            None => resolve_commit(&s, &refspec)?,
        };
        let pending = s.pending_and_rollback(&stateroot).0;
        if target == merge.csum || pending.is_some_and(|p| s.deployments[p].csum == target) {
            writeln!(out, "No update available.")?;
            return Ok(std::process::ExitCode::from(77));
        }
        writeln!(out, "Update available: {} -> {target}", merge.csum)?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let target = fetch(&s, &refspec, o.allow_downgrade)?;
    // Already the merge (booted) deployment, or already deployed as pending.
    let pending = s.pending_and_rollback(&stateroot).0;
    if target == merge.csum || pending.is_some_and(|p| s.deployments[p].csum == target) {
        writeln!(out, "No update available.")?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    // As ostree's upgrader: never older than the deployed commit (the pull
    // only compares with the ref's previous value, and a local ref with
    // nothing).
    if !o.allow_downgrade {
        let load = |c| arbor_repo::objects::load_commit(&s.repo, c);
        let (new, old) = (load(&target)?, load(&merge.csum)?);
        if new.timestamp < old.timestamp {
            anyhow::bail!(
                "Refusing to upgrade to {target} (timestamp {}): older than the deployed \
                 {} (timestamp {}); use --allow-downgrade",
                new.timestamp,
                merge.csum,
                old.timestamp
            );
        }
    }
    if o.download_only {
        writeln!(out, "Update downloaded: {target} (not deployed)")?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let opts = DeployOptions {
        stateroot: Some(stateroot),
        revision: target.to_hex(),
        origin: Some(arbor_sysroot::deploy::carried_origin(&merge, None)),
        stage: o.stage,
        ..Default::default()
    };
    let r = do_deploy(&mut s, &opts)?;
    let how = if o.stage { "Staged" } else { "Upgraded" };
    writeln!(
        out,
        "{how} {} to {} ({})",
        r.stateroot, r.checksum, r.deployment
    )?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// `switch`.
pub fn switch(o: SwitchOpts, out: &mut impl Write) -> Result<()> {
    let mut s = Sysroot::open(&o.sysroot.sysroot)?;
    let stateroot = s.default_stateroot(o.os.stateroot.as_deref())?;
    let target = fetch(&s, &o.refspec, false)?;
    let origin = match s.merge_deployment(&stateroot) {
        Some(m) => arbor_sysroot::deploy::carried_origin(&s.deployments[m], Some(&o.refspec)),
        None => {
            let mut k = arbor_repo::config::KeyFile::default();
            k.set("origin", "refspec", &o.refspec)?;
            k
        }
    };
    let opts = DeployOptions {
        stateroot: Some(stateroot),
        revision: target.to_hex(),
        origin: Some(origin),
        ..Default::default()
    };
    let r = do_deploy(&mut s, &opts)?;
    writeln!(
        out,
        "Switched {} to {} ({})",
        r.stateroot, o.refspec, r.deployment
    )?;
    Ok(())
}

/// `rollback`.
pub fn rollback(o: RollbackOpts, out: &mut impl Write) -> Result<()> {
    let mut s = Sysroot::open(&o.sysroot.sysroot)?;
    let (from, _) = arbor_sysroot::ops::rollback(&mut s)?;
    let d = &s.deployments[0];
    writeln!(
        out,
        "Deployment {from} is now the default: {} {}",
        d.stateroot,
        d.dir_name()
    )?;
    Ok(())
}

/// `undeploy`.
pub fn undeploy(o: IndexOpts, out: &mut impl Write) -> Result<()> {
    let mut s = Sysroot::open(&o.sysroot.sysroot)?;
    let name = s
        .deployments
        .get(o.index)
        .map(|d| d.dir_name())
        .unwrap_or_default();
    arbor_sysroot::ops::undeploy(&mut s, o.index)?;
    writeln!(out, "Deleted deployment {name}")?;
    Ok(())
}

/// `pin`, `unpin`.
pub fn pin(o: IndexOpts, pinned: bool, out: &mut impl Write) -> Result<()> {
    let mut s = Sysroot::open(&o.sysroot.sysroot)?;
    let changed = arbor_sysroot::ops::set_pinned(&mut s, o.index, pinned)?;
    let state = if pinned { "pinned" } else { "unpinned" };
    if changed {
        writeln!(out, "Deployment {} is now {state}", o.index)?;
    } else {
        writeln!(out, "Deployment {} is already {state}", o.index)?;
    }
    Ok(())
}

/// `kargs`: without edits, prints the arguments.
pub fn kargs(o: KargsOpts, out: &mut impl Write) -> Result<()> {
    let mut s = Sysroot::open(&o.sysroot.sysroot)?;
    let edit = arbor_sysroot::ops::KargsEdit {
        append: o.append,
        replace: o.replace,
        delete: o.delete,
    };
    let k = if edit.is_empty() {
        let Some(d) = s.deployments.get(o.index) else {
            anyhow::bail!("No deployment {}", o.index);
        };
        d.kargs_without_ostree()
    } else {
        arbor_sysroot::ops::edit_kargs(&mut s, o.index, &edit)?
    };
    writeln!(out, "{k}")?;
    Ok(())
}

/// `finalize`.
pub fn finalize(o: FinalizeOpts, out: &mut impl Write) -> Result<()> {
    use arbor_sysroot::staged::Finalized;
    let mut s = Sysroot::open(&o.sysroot.sysroot)?;
    match arbor_sysroot::staged::finalize(&mut s)? {
        Finalized::Nothing => writeln!(out, "No deployment staged.")?,
        Finalized::Locked => writeln!(out, "Not finalizing: the staged deployment is locked.")?,
        Finalized::Done { deployment, .. } => {
            writeln!(out, "Finalized {deployment}: it is the default boot entry.")?
        }
    }
    Ok(())
}
