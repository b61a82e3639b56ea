//! The sysroot commands: each calls `arbor_sysroot` and renders the result.

use std::io::Write;
use std::sync::Arc;

use std::process::ExitCode;

use anyhow::Result;
use arbor_config::apply::{keep_config, ConfigComposer};
use arbor_config::extensions::ops::ExtensionLayering;
use arbor_config::state::{deployment_state, DeploymentState};
use arbor_sysroot::deploy::{deploy as do_deploy, DeployOptions};
use arbor_sysroot::preview::{preview_layered, EtcPreview};
use arbor_sysroot::status::{status_entries, StatusEntry};
use arbor_sysroot::Sysroot;
use arbor_upgrade::{DeployUpdateOptions, SwitchOptions, UpgradeCheck, UpgradeOptions, Upgrader};

use crate::progress::Bar;

use crate::cli_sysroot::{
    AdminCmd, CleanupOpts, DeployOpts, FinalizeOpts, IndexOpts, KargsOpts, RollbackOpts,
    StatusOpts, SwitchOpts, UpgradeOpts,
};

/// Debug flags, comma-separated, as ostree's `OSTREE_SYSROOT_DEBUG`:
/// `mutable-deployments` leaves deployment roots without the immutable
/// flag (for throwaway sysroots such as the quickstart's).
pub const SYSROOT_DEBUG_ENV: &str = "ARBOR_SYSROOT_DEBUG";

/// Opens the sysroot at `path` with the debug flags of
/// [`SYSROOT_DEBUG_ENV`]: the CLI reads the environment, the library is
/// told.
pub fn open_sysroot(path: &std::path::Path) -> Result<Sysroot> {
    let mut s = Sysroot::open(path)?;
    let flags = std::env::var(SYSROOT_DEBUG_ENV).unwrap_or_default();
    s.set_mutable_deployments(flags.split(',').any(|f| f.trim() == "mutable-deployments"));
    Ok(s)
}

/// `admin init-fs`, `admin os-init`.
pub fn admin(c: AdminCmd, out: &mut impl Write) -> Result<()> {
    match c {
        AdminCmd::InitFs(o) => arbor_sysroot::sysroot::init_fs(&o.dir),
        AdminCmd::OsInit(o) => {
            let mut s = open_sysroot(&o.sysroot.sysroot)?;
            s.lock()?.os_init(&o.stateroot)?;
            writeln!(
                out,
                "ostree/deploy/{} initialized as OSTree root",
                o.stateroot
            )?;
            Ok(())
        }
        AdminCmd::GrubConfig(o) => {
            let mut s = open_sysroot(&o.sysroot.sysroot)?;
            let dir = arbor_sysroot::grub::regenerate(&s.lock()?)?;
            writeln!(out, "Wrote /boot/{dir}/grub.cfg")?;
            Ok(())
        }
        AdminCmd::LockFinalization(o) => {
            let mut s = open_sysroot(&o.sysroot.sysroot)?;
            let mut lock = s.lock()?;
            lock.load()?;
            if !lock.deployments().first().is_some_and(|d| d.staged) {
                anyhow::bail!("No deployment is staged");
            }
            arbor_sysroot::staged::set_finalization_locked(&lock, !o.unlock)?;
            let how = if o.unlock { "unlocked" } else { "locked" };
            writeln!(out, "Finalization of the staged deployment {how}")?;
            Ok(())
        }
    }
}

/// The labels of the state lines `status` adds to ostree's text, per
/// deployment, in order.
pub const STATE_LABELS: [&str; 4] = ["BaseCommit:", "Config:", "KernelArguments:", "State:"];

/// The label of the line `status` prints per extension of a deployment
/// (`Extension: NAME (COMMIT)`, after `BaseCommit:`), as `rpm-ostree
/// status` lists LayeredPackages.
pub const EXTENSION_LABEL: &str = "Extension:";

/// Renders `status` as `ostree admin status` does, plus, for each
/// deployment, the inputs of its state and its state checksum (lines that
/// ostree does not print: they follow ostree's lines, so stripping the
/// [`STATE_LABELS`] and [`EXTENSION_LABEL`] lines gives `ostree admin
/// status`'s text). A deployment of a composed commit shows its base
/// commit (`BaseCommit:`) and one [`EXTENSION_LABEL`] line per extension.
pub fn render_status(
    entries: &[StatusEntry],
    states: &[DeploymentState],
    out: &mut impl Write,
) -> std::io::Result<()> {
    if entries.is_empty() {
        return writeln!(out, "No deployments.");
    }
    for (i, e) in entries.iter().enumerate() {
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
        if let Some(st) = states.get(i) {
            let [base, config, kargs, state] = STATE_LABELS;
            writeln!(out, "    {base} {}", st.base)?;
            for e in &st.extensions {
                // NAME:COMMIT, as the state lists them.
                let (name, commit) = e.split_once(':').unwrap_or((e, ""));
                writeln!(out, "    {EXTENSION_LABEL} {name} ({commit})")?;
            }
            writeln!(out, "    {config} {}", st.config)?;
            writeln!(out, "    {kargs} {}", st.kernel_arguments.join(" "))?;
            writeln!(out, "    {state} {}", st.state)?;
        }
    }
    Ok(())
}

/// Collects the extension and composed refs and the stored
/// configurations no deployment uses any more. Runs after a switch that
/// has happened: nothing here fails the command (a lock that cannot be
/// taken is a warning; the next command collects).
fn collect_configs(s: &mut Sysroot) -> Result<Vec<String>> {
    match s.lock() {
        Ok(mut l) => {
            // Reads the deployments again: another command may have
            // deployed since this one released the lock.
            arbor_config::extensions::ops::collect_after_switch(&mut l);
            Ok(arbor_config::store::gc_after_switch(&l))
        }
        Err(e) => {
            tracing::warn!("Not collecting unused configurations: {e:#}");
            Ok(Vec::new())
        }
    }
}

/// `status`.
pub fn status(o: StatusOpts, out: &mut impl Write) -> Result<()> {
    let s = open_sysroot(&o.sysroot.sysroot)?;
    let entries = status_entries(&s);
    let empty = arbor_config::apply::empty_config_name();
    let states: Vec<DeploymentState> = s
        .deployments()
        .iter()
        .map(|d| deployment_state(d, &empty))
        .collect();
    if o.json {
        let mut list = Vec::new();
        for (e, st) in entries.iter().zip(&states) {
            let mut v = serde_json::to_value(e)?;
            if let (Some(m), serde_json::Value::Object(extra)) =
                (v.as_object_mut(), serde_json::to_value(st)?)
            {
                m.extend(extra);
            }
            list.push(v);
        }
        let mut v = serde_json::json!({ "deployments": list });
        if let Some(a) = crate::agent_cmds::agent_status(&s)? {
            v["agent"] = a;
        }
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
    } else {
        render_status(&entries, &states, out)?;
        if let Some(a) = crate::agent_cmds::agent_status(&s)? {
            crate::agent_cmds::render_agent_status(&a, out)?;
        }
    }
    Ok(())
}

/// The layering of `deploy` and `switch`: the extensions of what boots
/// next composed on the target's base, or (`--no-extensions`) the target
/// as it is, which must be a plain commit.
fn layering_of(no_extensions: bool) -> ExtensionLayering {
    if no_extensions {
        ExtensionLayering::plain()
    } else {
        ExtensionLayering::default()
    }
}

/// `deploy`.
pub fn deploy(o: DeployOpts, out: &mut impl Write) -> Result<()> {
    let mut s = open_sysroot(&o.sysroot.sysroot)?;
    // What the deploy deploys: the revision, or (by default) the
    // extensions of what boots next composed on its base.
    // With --no-extensions, a plain commit as it is (a composed one is
    // refused).
    let layering = layering_of(o.no_extensions);
    if o.dry_run {
        let p = preview_layered(
            &mut s.lock()?,
            o.stateroot.as_deref(),
            &o.revision,
            Some(&layering),
        )?;
        return render_preview(&p, o.json, out);
    }
    let mut opts = DeployOptions {
        stateroot: o.stateroot.clone(),
        revision: o.revision.clone(),
        origin: None,
        kargs: (!o.karg.is_empty()).then(|| o.karg.clone()),
        karg_append: o.karg_append.clone(),
        retain: o.retain,
        stage: o.stage,
        ..Default::default()
    };
    keep_config(&s, &mut opts)?;
    opts.layering = Some(Arc::new(layering));
    let r = do_deploy(&mut s.lock()?, &opts)?;
    collect_configs(&mut s)?;
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

/// Renders `deploy --dry-run`: per file, what the /etc merge would do.
fn render_preview(p: &EtcPreview, json: bool, out: &mut impl Write) -> Result<()> {
    let Some(merge) = &p.merge_deployment else {
        writeln!(
            out,
            "Would deploy {}: no merge deployment, /etc is the new default",
            p.commit
        )?;
        return Ok(());
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &p.plan)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "Would deploy {}, merging /etc from {merge}:", p.commit)?;
    for e in &p.plan {
        writeln!(
            out,
            "  {:8} /etc/{}: {}{}",
            e.change,
            e.path,
            e.action,
            if e.upstream_changed {
                " (its new default is ignored)"
            } else {
                ""
            }
        )?;
    }
    if p.plan.is_empty() {
        writeln!(out, "  no local changes: /etc takes the new defaults")?;
    }
    Ok(())
}

/// `cleanup`.
pub fn cleanup(o: CleanupOpts, out: &mut impl Write) -> Result<()> {
    let mut s = open_sysroot(&o.sysroot.sysroot)?;
    let mut s = s.lock()?;
    s.load()?;
    let r = arbor_sysroot::write::cleanup(&mut s, true)?;
    let configs = arbor_config::store::gc(&s)?;
    for d in &r.deployments {
        writeln!(out, "Removed deployment {d}")?;
    }
    for b in &r.boot_dirs {
        writeln!(out, "Removed /boot/ostree/{b}")?;
    }
    for c in &configs {
        writeln!(out, "Removed rendered configuration {c}")?;
    }
    writeln!(out, "Pruned {} objects", r.pruned_objects)?;
    Ok(())
}

/// `upgrade`: exit code 77 with `--check` when no update is available
/// (as `rpm-ostree upgrade --check`), 0 otherwise.
pub fn upgrade(o: UpgradeOpts, out: &mut impl Write) -> Result<ExitCode> {
    let mut s = open_sysroot(&o.sysroot.sysroot)?;
    let opts = UpgradeOptions {
        stateroot: o.os.stateroot,
        allow_downgrade: o.allow_downgrade,
    };
    let mut up = Upgrader::new(&mut s, opts)?;
    if o.check {
        return Ok(match up.check()? {
            UpgradeCheck::UpToDate { .. } => {
                writeln!(out, "No update available.")?;
                ExitCode::from(77)
            }
            UpgradeCheck::Available(u) => {
                writeln!(out, "Update available: {} -> {}", u.from(), u.to())?;
                ExitCode::SUCCESS
            }
        });
    }
    let update = match up.pull(&Bar::new())? {
        UpgradeCheck::UpToDate { .. } => {
            writeln!(out, "No update available.")?;
            return Ok(ExitCode::SUCCESS);
        }
        UpgradeCheck::Available(u) => u,
    };
    if o.download_only {
        writeln!(out, "Update downloaded: {} (not deployed)", update.to())?;
        return Ok(ExitCode::SUCCESS);
    }
    let r = up.deploy(
        &update,
        &DeployUpdateOptions {
            stage: o.stage,
            lock_finalization: o.lock_finalization,
            composer: Some(Arc::new(ConfigComposer::default())),
            layering: Some(Arc::new(ExtensionLayering::default())),
        },
    )?;
    let how = if o.stage { "Staged" } else { "Upgraded" };
    drop(up);
    collect_configs(&mut s)?;
    writeln!(
        out,
        "{how} {} to {} ({})",
        r.stateroot, r.checksum, r.deployment
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `switch`.
pub fn switch(o: SwitchOpts, out: &mut impl Write) -> Result<()> {
    let mut s = open_sysroot(&o.sysroot.sysroot)?;
    let opts = SwitchOptions {
        stateroot: o.os.stateroot,
        refspec: o.refspec,
        composer: Some(Arc::new(ConfigComposer::default())),
        layering: Some(Arc::new(layering_of(o.no_extensions))),
    };
    let r = arbor_upgrade::switch(&mut s, &opts, &Bar::new())?;
    collect_configs(&mut s)?;
    writeln!(
        out,
        "Switched {} to {} ({})",
        r.stateroot, opts.refspec, r.deployment
    )?;
    Ok(())
}

/// `rollback`.
pub fn rollback(o: RollbackOpts, out: &mut impl Write) -> Result<()> {
    let mut s = open_sysroot(&o.sysroot.sysroot)?;
    let (from, _) = arbor_sysroot::ops::rollback(&mut s.lock()?)?;
    let d = &s.deployments()[0];
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
    let mut s = open_sysroot(&o.sysroot.sysroot)?;
    let name = s
        .deployments()
        .get(o.index)
        .map(|d| d.dir_name())
        .unwrap_or_default();
    arbor_sysroot::ops::undeploy(&mut s.lock()?, o.index)?;
    collect_configs(&mut s)?;
    writeln!(out, "Deleted deployment {name}")?;
    Ok(())
}

/// `pin`, `unpin`.
pub fn pin(o: IndexOpts, pinned: bool, out: &mut impl Write) -> Result<()> {
    let mut s = open_sysroot(&o.sysroot.sysroot)?;
    let changed = arbor_sysroot::ops::set_pinned(&mut s.lock()?, o.index, pinned)?;
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
    let edit = arbor_sysroot::ops::KargsEdit {
        append: o.append,
        replace: o.replace,
        delete: o.delete,
    };
    // Made writable first by `dispatch` when there are edits.
    let mut s = open_sysroot(&o.sysroot.sysroot)?;
    let k = if edit.is_empty() {
        let Some(d) = s.deployments().get(o.index) else {
            anyhow::bail!("No deployment {}", o.index);
        };
        d.kargs_without_ostree()
    } else {
        arbor_sysroot::ops::edit_kargs(&mut s.lock()?, o.index, &edit)?
    };
    writeln!(out, "{k}")?;
    Ok(())
}

/// `finalize`.
pub fn finalize(o: FinalizeOpts, out: &mut impl Write) -> Result<()> {
    use arbor_sysroot::staged::Finalized;
    let mut s = open_sysroot(&o.sysroot.sysroot)?;
    let r = arbor_sysroot::staged::finalize_with(&mut s.lock()?, &ConfigComposer::default())?;
    collect_configs(&mut s)?;
    match r {
        Finalized::Nothing => writeln!(out, "No deployment staged.")?,
        Finalized::Locked => writeln!(out, "Not finalizing: the staged deployment is locked.")?,
        Finalized::Done { deployment, .. } => {
            writeln!(out, "Finalized {deployment}: it is the default boot entry.")?
        }
    }
    Ok(())
}

/// `prepare-root SYSROOT`: [`arbor_boot::prepare_root`] with the running
/// kernel's command line and `/run`.
pub fn prepare_root(o: crate::cli_sysroot::PrepareRootOpts, out: &mut impl Write) -> Result<()> {
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| anyhow::anyhow!("Reading /proc/cmdline: {e}"))?;
    let d = arbor_boot::prepare_root(&arbor_boot::PrepareRoot {
        sysroot: o.sysroot,
        cmdline,
        run_dir: arbor_boot::RUN_DIR.into(),
    })?;
    writeln!(
        out,
        "Booting {} (stateroot {}, sysroot {})",
        d.deployment.display(),
        d.stateroot,
        if d.readonly { "read-only" } else { "writable" }
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_the_base_and_each_extension() {
        let e = StatusEntry {
            index: 0,
            stateroot: "os".into(),
            checksum: "cc".repeat(32),
            deployserial: 0,
            booted: false,
            staged: false,
            pending: false,
            rollback: false,
            pinned: false,
            version: None,
            origin: Some("os:main".into()),
            has_origin: true,
            source_title: None,
            bootcsum: String::new(),
            kargs: String::new(),
        };
        let st = DeploymentState {
            base: "bb".repeat(32),
            extensions: vec![
                format!("tools:{}", "01".repeat(32)),
                format!("debug:{}", "02".repeat(32)),
            ],
            config: "rendered-x".into(),
            kernel_arguments: vec!["quiet".into()],
            state: format!("state-{}", "ee".repeat(32)),
        };
        let mut out = Vec::new();
        render_status(&[e], &[st], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let want = format!(
            "    BaseCommit: {}\n    Extension: tools ({})\n    Extension: debug ({})\n    \
             Config: rendered-x\n",
            "bb".repeat(32),
            "01".repeat(32),
            "02".repeat(32)
        );
        assert!(text.contains(&want), "{text}");
        // One representation: no second list of the extensions.
        assert_eq!(text.matches("tools").count(), 1, "{text}");
    }
}
