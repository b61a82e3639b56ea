//! One function per subcommand; each parses its inputs, calls the library
//! and renders the result. Data goes to stdout, diagnostics to stderr.

use std::io::{self, BufWriter, Read, Write};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use arbor_format::{Checksum, ObjectType, RefName, RepoMode};
use arbor_repo::checkout::CheckoutOptions;
use arbor_repo::commit::{CommitOptions, CommitSource};
use arbor_repo::objects::{load_commit, load_dirmeta, load_dirtree, open_file_object};
use arbor_repo::prune::PruneOptions;
use arbor_repo::refs::{resolve_rev, RefSpec, RefUpdate};
use arbor_repo::sign;
use arbor_repo::tree::{resolve_path, TreeEntry};
use arbor_repo::Repo;

use crate::cli::*;
use crate::progress::Bar;
use crate::render::{self, CommitJson, LsEntry};

/// Runs a parsed command.
pub fn run(opt: Opt) -> Result<ExitCode> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let code = dispatch(opt, &mut out)?;
    match out.flush() {
        Ok(()) => Ok(code),
        // A command's own failure status (drift found, an error) wins over
        // output that could not be written.
        Err(_) if code != ExitCode::SUCCESS => Ok(code),
        Err(e) => Err(e.into()),
    }
}

/// Runs a parsed command, writing its output to `out`.
pub fn dispatch(opt: Opt, out: &mut dyn Write) -> Result<ExitCode> {
    let mut out = out;
    let out = &mut out;
    // On a booted machine `/sysroot` (and `/ostree/repo` on it) is
    // read-only: a command that writes there gets a private namespace
    // where it is writable, before anything is opened.
    use crate::access::{access, Access};
    match access(&opt.cmd) {
        Access::Reads => {}
        Access::WritesRepo(repo) => arbor_sysroot::writable::ensure_repo_writable(repo)?,
        Access::WritesSysroot(sysroot) => arbor_sysroot::writable::ensure_writable(sysroot)?,
    }
    let code = match opt.cmd {
        Cmd::Init(o) => init(o).map(|_| ExitCode::SUCCESS),
        Cmd::Commit(o) => commit(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Checkout(o) => checkout(o).map(|_| ExitCode::SUCCESS),
        Cmd::Log(o) => log(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Show(o) => show(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Ls(o) => ls(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Cat(o) => cat(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Export(o) => crate::export_cmd::export(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Refs(o) => refs(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::RevParse(o) => rev_parse(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Diff(o) => diff(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Fsck(o) => fsck(o, out),
        Cmd::Prune(o) => prune(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::PullLocal(o) => pull_local(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Pull(o) => pull(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Remote(r) => remote(r, out).map(|_| ExitCode::SUCCESS),
        Cmd::Serve(o) => crate::serve::serve(&o.repo.repo, &o.addr, out).map(|_| ExitCode::SUCCESS),
        Cmd::Sign(o) => sign(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Summary(o) => summary(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Quickstart(o) => crate::quickstart::run(&o.dir, out).map(|_| ExitCode::SUCCESS),
        Cmd::Admin(c) => crate::sysroot_cmds::admin(c, out).map(|_| ExitCode::SUCCESS),
        Cmd::Deploy(o) => crate::sysroot_cmds::deploy(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Status(o) => crate::sysroot_cmds::status(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Cleanup(o) => crate::sysroot_cmds::cleanup(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Upgrade(o) => crate::sysroot_cmds::upgrade(o, out),
        Cmd::Switch(o) => crate::sysroot_cmds::switch(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Rollback(o) => crate::sysroot_cmds::rollback(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Undeploy(o) => crate::sysroot_cmds::undeploy(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Pin(o) => crate::sysroot_cmds::pin(o, true, out).map(|_| ExitCode::SUCCESS),
        Cmd::Unpin(o) => crate::sysroot_cmds::pin(o, false, out).map(|_| ExitCode::SUCCESS),
        Cmd::Kargs(o) => crate::sysroot_cmds::kargs(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::Config(c) => crate::config_cmds::config(c, out).map(|_| ExitCode::SUCCESS),
        Cmd::Extension(c) => crate::extension_cmds::extension(c, out).map(|_| ExitCode::SUCCESS),
        Cmd::Drift(o) => Ok(crate::drift_cmd::run(o, out)),
        Cmd::Finalize(o) => crate::sysroot_cmds::finalize(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::PrepareRoot(o) => crate::sysroot_cmds::prepare_root(o, out).map(|_| ExitCode::SUCCESS),
        Cmd::BootComplete(o) => {
            let s = crate::sysroot_cmds::open_sysroot(&o.sysroot.sysroot)?;
            arbor_sysroot::staged::boot_complete(&s).map(|_| ExitCode::SUCCESS)
        }
        Cmd::Image(c) => crate::image_cmds::image(c, out).map(|_| ExitCode::SUCCESS),
        Cmd::Fleetlock(c) => crate::fleetlock_cmds::fleetlock(c, out),
        Cmd::Agent(c) => crate::agent_cmds::agent(c, out).map(|_| ExitCode::SUCCESS),
        Cmd::Health(c) => crate::health_cmds::health(c, out),
        Cmd::Generate(c) => crate::generate::generate(c, out).map(|_| ExitCode::SUCCESS),
    }?;
    Ok(code)
}

fn json_out(w: &mut impl Write, v: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer_pretty(&mut *w, v)?;
    writeln!(w)?;
    Ok(())
}

fn init(o: InitOpts) -> Result<()> {
    let mode: RepoMode = o.mode.parse().map_err(|e| anyhow!("{e}"))?;
    Repo::init_with(&o.repo.repo, mode, o.collection_id.as_deref())?;
    Ok(())
}

fn commit(o: CommitOpts, out: &mut impl Write) -> Result<()> {
    let mut repo = Repo::open(&o.repo.repo)?;
    if let Some(f) = o.fsync {
        repo.set_fsync(f);
    }
    let mut metadata_strings = Vec::new();
    for kv in &o.add_metadata_string {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("Invalid --add-metadata-string '{kv}': expected KEY=VALUE"))?;
        if k.is_empty() {
            bail!("Invalid --add-metadata-string '{kv}': empty key");
        }
        metadata_strings.push((k.to_string(), v.to_string()));
    }
    let opts = CommitOptions {
        branch: o.branch.map(RefName::new).transpose()?,
        subject: o.subject.unwrap_or_default(),
        body: o.body.unwrap_or_default(),
        timestamp: match o.timestamp.as_deref() {
            Some(t) => Some(crate::time::parse_timestamp(t)?),
            None => crate::time::source_date_epoch()?,
        },
        metadata_strings,
        metadata_values: Vec::new(),
        owner_uid: o.owner_uid,
        owner_gid: o.owner_gid,
        canonical_permissions: o.canonical_permissions,
        parent: None,
        no_bindings: o.no_bindings,
        sign_keys: secret_keys(&o.sign_type, &o.sign_key, None)?,
    };
    let (tar, path) = match o.tree.as_deref().map(|t| t.split_once('=')) {
        None => (o.tar, o.path),
        Some(Some(("dir", p))) => (None, Some(p.into())),
        Some(Some(("tar", f))) => (Some(f.into()), None),
        Some(_) => bail!("Invalid --tree: expected dir=PATH or tar=FILE"),
    };
    let bar = Bar::new();
    let c = match (&tar, &path) {
        (Some(t), _) if t.as_os_str() == "-" => {
            let mut stdin = io::stdin().lock();
            let mut r: &mut dyn Read = &mut stdin;
            arbor_repo::commit::commit(&repo.lock(false)?, CommitSource::Tar(&mut r), &opts, &bar)?
        }
        (Some(t), _) => {
            let mut f =
                std::fs::File::open(t).with_context(|| format!("Opening {}", t.display()))?;
            arbor_repo::commit::commit(&repo.lock(false)?, CommitSource::Tar(&mut f), &opts, &bar)?
        }
        (None, Some(p)) => {
            arbor_repo::commit::commit(&repo.lock(false)?, CommitSource::Dir(p), &opts, &bar)?
        }
        (None, None) => bail!("Nothing to commit: give a directory or --tar"),
    };
    writeln!(out, "{c}")?;
    Ok(())
}

fn checkout(o: CheckoutOpts) -> Result<()> {
    let repo = Repo::open(&o.repo.repo)?;
    let c = resolve_rev(&repo, &o.rev)?;
    let opts = CheckoutOptions {
        hardlink: o.hardlink,
        require_hardlinks: o.hardlink,
        user_mode: o.user_mode,
        union: o.union,
        subpath: o.subpath,
    };
    arbor_repo::checkout::checkout(&repo, &c, &o.dest, &opts, &Bar::new())?;
    Ok(())
}

fn log(o: RevOpts, out: &mut impl Write) -> Result<()> {
    let repo = Repo::open(&o.repo.repo)?;
    let mut cur = Some(resolve_rev(&repo, &o.rev)?);
    let mut all = Vec::new();
    while let Some(c) = cur {
        let commit = match load_commit(&repo, &c) {
            Ok(cm) => cm,
            Err(e) if arbor_repo::reachable::is_not_found(&e) && !all.is_empty() => {
                if !o.json {
                    writeln!(out, "<< History beyond this commit not fetched >>")?;
                }
                break;
            }
            Err(e) => return Err(e),
        };
        if o.json {
            all.push(CommitJson::new(&c, &commit));
        } else {
            render::commit(out, &c, &commit)?;
            all.push(CommitJson::new(&c, &commit));
        }
        cur = commit.parent;
    }
    if o.json {
        json_out(out, &all)?;
    }
    Ok(())
}

fn show(o: RevOpts, out: &mut impl Write) -> Result<()> {
    let repo = Repo::open(&o.repo.repo)?;
    let c = resolve_rev(&repo, &o.rev)?;
    let commit = load_commit(&repo, &c)?;
    if o.json {
        json_out(out, &CommitJson::new(&c, &commit))
    } else {
        render::commit(out, &c, &commit)?;
        if let Some(meta) = arbor_repo::objects::load_commitmeta(&repo, &c)? {
            for (k, v) in meta.iter() {
                writeln!(out, "Detached metadata: {k} = {}", v.to_display())?;
            }
        }
        Ok(())
    }
}

fn ls_entry(repo: &Repo, path: &str, e: &TreeEntry) -> Result<LsEntry> {
    Ok(match e {
        TreeEntry::Dir { tree, meta } => {
            let m = load_dirmeta(repo, meta)?;
            LsEntry {
                kind: 'd',
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                size: 0,
                checksum: tree.to_hex(),
                meta_checksum: Some(meta.to_hex()),
                path: path.to_string(),
                target: None,
            }
        }
        TreeEntry::File(c) => {
            let f = open_file_object(repo, c)?;
            let h = f.header;
            LsEntry {
                kind: if h.is_symlink() { 'l' } else { '-' },
                mode: h.mode,
                uid: h.uid,
                gid: h.gid,
                size: f.size,
                checksum: c.to_hex(),
                meta_checksum: None,
                target: h.is_symlink().then(|| h.symlink_target.clone()),
                path: path.to_string(),
            }
        }
    })
}

/// Lists `tree` (at `path`), and with `recursive` everything below it, in
/// `ostree ls -R` order. Iterative (a stack of directories and one path
/// buffer), so any depth works.
fn ls_dir(
    repo: &Repo,
    path: &str,
    tree: &Checksum,
    recursive: bool,
    acc: &mut Vec<LsEntry>,
) -> Result<()> {
    let mut base = path.trim_end_matches('/').to_string();
    // Per directory entered: its path's length in `base`, and its
    // subdirectories still to list.
    let mut stack = Vec::new();
    let mut next = Some(*tree);
    loop {
        if let Some(tree) = next.take() {
            let dt = load_dirtree(repo, &tree)?;
            for f in &dt.files {
                acc.push(ls_entry(
                    repo,
                    &format!("{base}/{}", f.name),
                    &TreeEntry::File(f.checksum),
                )?);
            }
            stack.push((base.len(), dt.dirs.into_iter()));
        }
        let Some((len, dirs)) = stack.last_mut() else {
            return Ok(());
        };
        base.truncate(*len);
        let Some(d) = dirs.next() else {
            stack.pop();
            continue;
        };
        base.push('/');
        base.push_str(&d.name);
        acc.push(ls_entry(
            repo,
            &base,
            &TreeEntry::Dir {
                tree: d.tree,
                meta: d.meta,
            },
        )?);
        if recursive {
            next = Some(d.tree);
        }
    }
}

fn ls(o: LsOpts, out: &mut impl Write) -> Result<()> {
    let repo = Repo::open(&o.repo.repo)?;
    let c = resolve_rev(&repo, &o.rev)?;
    let paths = if o.paths.is_empty() {
        vec!["/".to_string()]
    } else {
        o.paths
    };
    let mut acc = Vec::new();
    for p in &paths {
        let e = resolve_path(&repo, &c, p)?;
        let shown = if p.starts_with('/') {
            p.clone()
        } else {
            format!("/{p}")
        };
        acc.push(ls_entry(&repo, &shown, &e)?);
        if let TreeEntry::Dir { tree, .. } = e {
            ls_dir(&repo, &shown, &tree, o.recursive, &mut acc)?;
        }
    }
    if o.json {
        return json_out(out, &acc);
    }
    for e in &acc {
        render::ls_line(out, e, o.checksum)?;
    }
    Ok(())
}

fn cat(o: CatOpts, out: &mut impl Write) -> Result<()> {
    let repo = Repo::open(&o.repo.repo)?;
    let c = resolve_rev(&repo, &o.rev)?;
    for p in &o.paths {
        match resolve_path(&repo, &c, p)? {
            TreeEntry::File(f) => {
                let mut obj = open_file_object(&repo, &f)?;
                if obj.header.is_symlink() {
                    bail!("{p} is a symlink to {}", obj.header.symlink_target);
                }
                // Bounded: a hostile object cannot inflate past its size.
                let n = io::copy(
                    &mut (&mut obj.content).take(obj.size.saturating_add(1)),
                    out,
                )?;
                if n != obj.size {
                    bail!(
                        "Corrupted file object {f}: content does not match its declared {} bytes",
                        obj.size
                    );
                }
            }
            TreeEntry::Dir { .. } => bail!("{p} is a directory"),
        }
    }
    Ok(())
}

fn refs(o: RefsOpts, out: &mut impl Write) -> Result<()> {
    let repo = Repo::open(&o.repo.repo)?;
    if let Some(name) = &o.create {
        let [rev] = o.rev.as_slice() else {
            bail!("--create takes exactly one revision");
        };
        let target = resolve_rev(&repo, rev)?;
        let spec = RefSpec::parse(name)?;
        if arbor_repo::refs::read_ref(&repo, &spec)?.is_some() {
            bail!("Ref '{spec}' already exists");
        }
        // `expecting(None)`: fails if another process created it meanwhile.
        return arbor_repo::refs::update_refs(
            &repo.lock(false)?,
            &[RefUpdate::set(spec, target).expecting(None)],
        );
    }
    if o.delete {
        if o.rev.is_empty() {
            bail!("--delete needs at least one ref");
        }
        // All or nothing: every ref must exist (and still have the value
        // read here when the deletions are applied).
        let mut updates = Vec::new();
        for r in &o.rev {
            let spec = RefSpec::parse(r)?;
            let cur = arbor_repo::refs::read_ref(&repo, &spec)?
                .ok_or_else(|| anyhow!("Refspec '{spec}' not found"))?;
            updates.push(RefUpdate::delete(spec).expecting(Some(cur)));
        }
        return arbor_repo::refs::update_refs(&repo.lock(false)?, &updates);
    }
    let all = arbor_repo::refs::list_refs(&repo)?;
    let shown: Vec<_> = all
        .into_iter()
        .filter(|(n, _)| o.rev.is_empty() || o.rev.iter().any(|p| n.starts_with(p.as_str())))
        .collect();
    if o.json {
        let m: serde_json::Map<String, serde_json::Value> = shown
            .into_iter()
            .map(|(n, c)| (n, c.to_hex().into()))
            .collect();
        return json_out(out, &m);
    }
    for (n, _) in shown {
        writeln!(out, "{n}")?;
    }
    Ok(())
}

fn rev_parse(o: RevOpts, out: &mut impl Write) -> Result<()> {
    let repo = Repo::open(&o.repo.repo)?;
    let c = resolve_rev(&repo, &o.rev)?;
    if o.json {
        return json_out(
            out,
            &serde_json::json!({ "rev": o.rev, "checksum": c.to_hex() }),
        );
    }
    writeln!(out, "{c}")?;
    Ok(())
}

fn diff(o: DiffOpts, out: &mut impl Write) -> Result<()> {
    let repo = Repo::open(&o.repo.repo)?;
    let a = resolve_rev(&repo, &o.from)?;
    let b = resolve_rev(&repo, &o.to)?;
    let d = arbor_repo::diff::diff_commits(&repo, &a, &b)?;
    if o.json {
        return json_out(out, &d);
    }
    render::diff(out, &d)?;
    Ok(())
}

fn fsck(o: FsckOpts, out: &mut impl Write) -> Result<ExitCode> {
    let repo = Repo::open(&o.repo.repo)?;
    let report = arbor_repo::fsck::fsck(&repo, &Bar::new())?;
    if o.json {
        json_out(out, &report)?;
    } else if !(o.quiet && report.errors.is_empty()) {
        render::fsck(out, &report)?;
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn prune(o: PruneOpts, out: &mut impl Write) -> Result<()> {
    let repo = Repo::open(&o.repo.repo)?;
    let keep_younger_than = o
        .keep_younger_than
        .as_deref()
        .map(|d| crate::time::parse_date(d, crate::time::now()))
        .transpose()?;
    let opts = PruneOptions {
        refs_only: o.refs_only,
        depth: o.depth,
        keep_younger_than,
        dry_run: o.no_prune,
    };
    // --no-prune deletes nothing: the shared lock will do.
    let r = arbor_repo::prune::prune(&repo.lock(!o.no_prune)?, &opts)?;
    if o.json {
        return json_out(out, &r);
    }
    writeln!(out, "Total objects: {}", r.total)?;
    if r.deleted == 0 {
        writeln!(out, "No unreachable objects")?;
    } else if o.no_prune {
        // As ostree words it.
        writeln!(
            out,
            "Would delete: {} objects, freeing {} bytes",
            r.deleted, r.freed_bytes
        )?;
    } else {
        writeln!(
            out,
            "Deleted {} objects, {} bytes freed",
            r.deleted, r.freed_bytes
        )?;
    }
    Ok(())
}

fn remote(cmd: RemoteCmd, out: &mut impl Write) -> Result<()> {
    use arbor_repo::remotes;
    match cmd {
        RemoteCmd::Add(o) => {
            let repo = Repo::open(&o.repo.repo)?;
            let set = o
                .set
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| anyhow!("Invalid --set '{kv}': expected KEY=VALUE"))
                })
                .collect::<Result<Vec<_>>>()?;
            let opts = remotes::RemoteAddOptions {
                no_gpg_verify: o.no_gpg_verify,
                no_sign_verify: o.no_sign_verify,
                sign_verify: o.sign_verify,
                set,
                if_not_exists: o.if_not_exists,
                force: o.force,
            };
            remotes::add_remote(&repo.lock(false)?, &o.name, &o.url, &opts)
        }
        RemoteCmd::List(o) => {
            let repo = Repo::open(&o.repo.repo)?;
            let mut all = remotes::list_remotes(&repo);
            all.sort_by(|a, b| a.name.cmp(&b.name));
            if o.json {
                return json_out(out, &all);
            }
            let width = all.iter().map(|r| r.name.len()).max().unwrap_or(0);
            for r in &all {
                if o.show_urls {
                    writeln!(out, "{:width$}  {}", r.name, r.url)?;
                } else {
                    writeln!(out, "{}", r.name)?;
                }
            }
            Ok(())
        }
        RemoteCmd::Show(o) => {
            let repo = Repo::open(&o.repo.repo)?;
            let r = remotes::get_remote(&repo, &o.name)?;
            if o.json {
                return json_out(out, &r);
            }
            for (k, v) in &r.options {
                writeln!(out, "{k}={v}")?;
            }
            Ok(())
        }
        RemoteCmd::ShowUrl(o) => {
            let repo = Repo::open(&o.repo.repo)?;
            let r = remotes::get_remote(&repo, &o.name)?;
            if o.json {
                return json_out(out, &serde_json::json!({ "name": r.name, "url": r.url }));
            }
            writeln!(out, "{}", r.url)?;
            Ok(())
        }
        RemoteCmd::Delete(o) => {
            let repo = Repo::open(&o.repo.repo)?;
            remotes::delete_remote(&repo.lock(false)?, &o.name, o.if_exists)
        }
        RemoteCmd::Refs(o) => {
            let repo = Repo::open(&o.repo.repo)?;
            let refs = arbor_pull::pull::remote_refs(&repo, &o.name)?;
            if o.json {
                let v: Vec<_> = refs
                    .iter()
                    .map(|(n, c)| serde_json::json!({ "ref": n, "checksum": c.to_hex() }))
                    .collect();
                return json_out(out, &v);
            }
            for (n, _) in refs {
                writeln!(out, "{}:{n}", o.name)?;
            }
            Ok(())
        }
    }
}

fn pull_local(o: PullLocalOpts, out: &mut impl Write) -> Result<()> {
    let repo = Repo::open(&o.repo.repo)?;
    let src = Repo::open(&o.src)?;
    let opts = arbor_pull::PullLocalOptions {
        refs: o.refs,
        remote: o.remote,
        depth: depth_from_flag(o.depth)?,
        disable_verify_bindings: o.disable_verify_bindings,
        ..Default::default()
    };
    let stats = arbor_pull::pull_local(&repo.lock(false)?, &src, &opts, &Bar::new())?;
    if o.json {
        return json_out(out, &stats);
    }
    render::pull_local_stats(out, &stats)?;
    Ok(())
}

/// `--depth` as ostree takes it (-1 = the whole history) to the library's
/// `Option<u32>` (`None` = the whole history).
fn depth_from_flag(depth: i64) -> Result<Option<u32>> {
    match depth {
        -1 => Ok(None),
        n => u32::try_from(n)
            .map(Some)
            .map_err(|_| anyhow!("Invalid --depth {n}: use -1 (all parents) or a count")),
    }
}

/// Secret keys from inline base64 arguments and an optional key file,
/// for signature type `sign_type`.
fn secret_keys(
    sign_type: &str,
    inline: &[String],
    file: Option<&std::path::Path>,
) -> Result<Vec<sign::SigningKey>> {
    sign::check_sign_type(sign_type)?;
    let mut keys = Vec::new();
    for (i, k) in inline.iter().enumerate() {
        keys.push(sign::parse_secret_key(k).with_context(|| format!("Key argument {}", i + 1))?);
    }
    if let Some(f) = file {
        keys.extend(sign::read_secret_keys_file(f)?);
    }
    Ok(keys)
}

fn sign(o: SignOpts, out: &mut impl Write) -> Result<()> {
    let repo = Repo::open(&o.repo.repo)?;
    let c = resolve_rev(&repo, &o.commit)?;
    if !o.verify {
        let keys = secret_keys(&o.sign_type, &o.keys, o.keys_file.as_deref())?;
        if keys.is_empty() {
            bail!("Need at least one KEY to sign with (or --keys-file)");
        }
        sign::sign_commit_with_keys(&repo.lock(false)?, &c, &keys)?;
        return Ok(());
    }
    sign::check_sign_type(&o.sign_type)?;
    let mut keys = Vec::new();
    for (i, k) in o.keys.iter().enumerate() {
        keys.push(sign::parse_public_key(k).with_context(|| format!("Key argument {}", i + 1))?);
    }
    if let Some(f) = &o.keys_file {
        keys.extend(sign::read_public_keys_file(f)?);
    }
    // As ostree: with no key given, the system trust store.
    let trusted = if keys.is_empty() {
        let dirs: Vec<std::path::PathBuf> = match &o.keys_dir {
            Some(d) => vec![d.clone()],
            None => sign::SYSTEM_KEY_DIRS.iter().map(Into::into).collect(),
        };
        sign::TrustedKeys::from_key_dirs(&dirs)?
    } else {
        sign::TrustedKeys::new(keys)?
    };
    let commit = arbor_repo::objects::read_metadata(&repo, ObjectType::Commit, &c)?;
    let meta = arbor_repo::objects::read_metadata_optional(&repo, ObjectType::CommitMeta, &c)?;
    let key = sign::verify_commit_key(&commit, meta.as_deref(), &trusted)?;
    writeln!(
        out,
        "ed25519: Signature verified successfully with key '{}'",
        sign::key_hex(&key)
    )?;
    Ok(())
}

fn summary(o: SummaryOpts, out: &mut impl Write) -> Result<()> {
    use arbor_format::summary::{decode_collection_map, COLLECTION_MAP_KEY};
    use arbor_repo::summary as sm;
    let repo = Repo::open(&o.repo.repo)?;
    if o.update {
        let mut additional_metadata = arbor_format::Metadata::new();
        for kv in &o.add_metadata {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("Missing '=' in KEY=VALUE metadata '{kv}'"))?;
            if k.is_empty() {
                bail!("Invalid metadata '{kv}': empty key");
            }
            additional_metadata.push(k, crate::gvtext::parse_value(v)?);
        }
        let opts = sm::SummaryOptions {
            additional_metadata,
            sign_keys: secret_keys(&o.sign_type, &o.sign_key, o.keys_file.as_deref())?,
            last_modified: None,
        };
        let r = sm::update_summary(&repo.lock(false)?, &opts)?;
        if o.json {
            return json_out(out, &r);
        }
        return Ok(());
    }
    if !o.view {
        bail!("No option specified; use -u to update the summary or -v to view it");
    }
    if !o.sign_key.is_empty() || o.keys_file.is_some() || !o.add_metadata.is_empty() {
        bail!("--sign-key, --keys-file and --add-metadata only apply to -u");
    }
    let bytes = sm::read_summary(&repo)?
        .ok_or_else(|| anyhow!("No summary in {}", o.repo.repo.display()))?;
    let s = arbor_format::Summary::decode(&bytes).context("Parsing summary")?;
    let map = match s.metadata.get(COLLECTION_MAP_KEY) {
        Some(v) => decode_collection_map(v).context("Parsing the collection map")?,
        None => Vec::new(),
    };
    if o.json {
        let signatures = match sm::read_summary_sig(&repo)? {
            Some(b) => match arbor_format::Metadata::decode(&b)
                .context("Parsing summary.sig")?
                .get(sign::ED25519_KEY)
            {
                Some(arbor_format::Value::BytesArray(v)) => v.len(),
                _ => 0,
            },
            None => 0,
        };
        return json_out(out, &render::SummaryJson::new(&s, &map, signatures));
    }
    render::summary(out, &s, &map)?;
    Ok(())
}

fn pull(o: PullOpts, out: &mut impl Write) -> Result<()> {
    let repo = Repo::open(&o.repo.repo)?;
    let opts = arbor_pull::PullOptions {
        refs: o.refs,
        depth: depth_from_flag(o.depth)?,
        commit_metadata_only: o.commit_metadata_only,
        mirror: o.mirror,
        dry_run: o.dry_run,
        allow_downgrade: o.allow_downgrade,
        disable_verify_bindings: o.disable_verify_bindings,
        workers: usize::from(o.jobs),
    };
    let started = std::time::Instant::now();
    let stats = arbor_pull::pull(&repo.lock(false)?, &o.remote, &opts, &Bar::new())?;
    if o.json {
        return json_out(out, &stats);
    }
    render::pull_stats(out, &stats, started.elapsed())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_flag_follows_ostree() {
        for (flag, want) in [(-1, Some(None)), (0, Some(Some(0))), (3, Some(Some(3)))] {
            assert_eq!(depth_from_flag(flag).ok(), want, "{flag}");
        }
        for bad in [-2, i64::from(u32::MAX) + 1] {
            assert!(depth_from_flag(bad).is_err(), "{bad}");
        }
    }
}
