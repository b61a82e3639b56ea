//! The trees the images are made of: a fresh sysroot with the commit
//! deployed (or a copy of an existing one), split into the root
//! filesystem's tree (with an empty `/boot`) and the boot partition's.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use arbor_format::Checksum;
use arbor_repo::Repo;
use arbor_sysroot::deploy::{deploy, DeployOptions};
use arbor_sysroot::Sysroot;
use fn_error_context::context;

use crate::tools;

/// The staged trees.
#[derive(Debug)]
pub struct Staged {
    /// The root filesystem's contents (the physical sysroot, `/boot` empty).
    pub root: PathBuf,
    /// The boot partition's contents (`loader`, `loader.N/`, `ostree/`).
    pub boot: PathBuf,
    /// The default deployment's directory (what `/` is when booted).
    pub deployment: PathBuf,
    /// `STATEROOT/CSUM.SERIAL` of that deployment.
    pub name: String,
    /// Content objects hard-linked from the source repository (its tree
    /// objects are linked too, not counted).
    pub linked: usize,
}

/// What to deploy into a fresh sysroot.
#[derive(Debug)]
pub struct Fresh<'a> {
    /// The source repository.
    pub repo: &'a Path,
    /// The revision (ref or checksum) as given.
    pub rev: &'a str,
    /// The resolved commit.
    pub commit: &'a Checksum,
    /// The stateroot.
    pub stateroot: &'a str,
    /// The exact kernel arguments (without `ostree=`).
    pub kargs: Vec<String>,
}

/// Creates a sysroot at `work/sysroot`, pulls the commit (and its ref, if
/// `rev` is one) from the source repository, deploys it, and moves its
/// `/boot` contents to `work/boot`.
#[context("Deploying {} into a fresh sysroot", f.rev)]
pub fn fresh(f: &Fresh<'_>, work: &Path, stages: &crate::Stages) -> Result<Staged> {
    let sysroot = work.join("sysroot");
    arbor_sysroot::sysroot::init_fs(&sysroot)?;
    let mut s = Sysroot::open(&sysroot)?;
    // The image is never booted from this directory; its root filesystem
    // is made from it and then it is deleted, so leave it deletable.
    s.set_mutable_deployments(true);
    // Nor does a crash need to leave it consistent: an error removes it.
    // (In memory only: the image's repository config keeps core.fsync.)
    s.repo_mut().set_fsync(false);
    s.lock()?.os_init(f.stateroot)?;
    let linked;
    {
        let src = Repo::open(f.repo)?;
        linked = stages.time("link objects", || {
            seed_objects(&src, f.repo, &sysroot.join("ostree/repo"), f.commit)
        })?;
        let opts = arbor_pull::PullLocalOptions {
            refs: vec![f.rev.to_string()],
            ..Default::default()
        };
        stages.time("pull-local", || {
            arbor_pull::pull_local(
                &s.repo().lock(false)?,
                &src,
                &opts,
                &arbor_repo::progress::NullProgress,
            )
            .context("Pulling the commit into the image's repository")
        })?;
    }
    let opts = DeployOptions {
        stateroot: Some(f.stateroot.to_string()),
        revision: f.rev.to_string(),
        exact_kargs: Some(f.kargs.clone()),
        ..Default::default()
    };
    let r = stages.time("deploy", || deploy(&mut s.lock()?, &opts))?;
    ensure!(
        r.checksum == f.commit.to_hex(),
        "Deployed {} instead of {}",
        r.checksum,
        f.commit
    );
    let deployment = sysroot.join(format!(
        "ostree/deploy/{}/deploy/{}",
        r.stateroot, r.deployment
    ));
    let boot = work.join("boot");
    std::fs::rename(sysroot.join("boot"), &boot).context("Moving /boot aside")?;
    std::fs::create_dir(sysroot.join("boot")).context("Creating the empty /boot")?;
    Ok(Staged {
        root: sysroot,
        boot,
        deployment,
        name: format!("{}/{}", r.stateroot, r.deployment),
        linked,
    })
}

/// When the source and the image's repository are both `bare` on one
/// filesystem, hard-links the commit's content and tree objects into the image's
/// repository before the pull, which then copies only the commit: as
/// ostree's `pull-local` does for repositories of the same mode (a local
/// pull trusts its source). Nothing is ever written through these links
/// (the deployment's `/etc` is a copy), and deleting the temporary sysroot
/// then only drops link counts instead of freeing the blocks of a whole
/// OS tree. Any other case leaves everything to the pull. Returns how
/// many content objects it linked.
#[context("Linking the commit's objects from {}", src_path.display())]
fn seed_objects(src: &Repo, src_path: &Path, dest: &Path, commit: &Checksum) -> Result<usize> {
    use std::os::unix::fs::MetadataExt;
    let dest_repo = Repo::open(dest)?;
    let (so, dobj) = (src_path.join("objects"), dest.join("objects"));
    if src.mode() != arbor_format::RepoMode::Bare
        || dest_repo.mode() != arbor_format::RepoMode::Bare
        || std::fs::metadata(&so)?.dev() != std::fs::metadata(&dobj)?.dev()
    {
        return Ok(0);
    }
    let mut set = arbor_repo::reachable::ObjectSet::new();
    arbor_repo::reachable::add_commit(src, commit, 0, &mut set)?;
    // The trees too (the pull still reads each one to walk it, but
    // neither copies nor rewrites them); the commit is left to the pull,
    // which fetches it with its detached metadata and checks it as any
    // pull does.
    use arbor_format::ObjectType::{DirMeta, DirTree, File};
    let objects: Vec<(bool, String)> = set
        .into_iter()
        .filter(|(t, _)| matches!(t, File | DirTree | DirMeta))
        .map(|(t, c)| (t == File, src.object_relpath(t, &c)))
        .collect();
    let dirs: std::collections::BTreeSet<&str> = objects
        .iter()
        .filter_map(|(_, rel)| rel.rsplit_once('/').map(|(d, _)| d))
        .collect();
    for d in dirs {
        std::fs::create_dir_all(dobj.join(d))?;
    }
    // Thousands of links: several threads (they wait on directory locks
    // more than on a CPU).
    let link = |(file, rel): &(bool, String)| -> Result<usize> {
        match std::fs::hard_link(so.join(rel), dobj.join(rel)) {
            Ok(()) => Ok(usize::from(*file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(0),
            // Not linkable after all (another filesystem under objects/,
            // a protected hard link): the pull copies it.
            Err(e)
                if [rustix::io::Errno::XDEV, rustix::io::Errno::PERM]
                    .iter()
                    .any(|x| e.raw_os_error() == Some(x.raw_os_error())) =>
            {
                Ok(0)
            }
            Err(e) => Err(e).with_context(|| format!("Linking {rel}")),
        }
    };
    use rayon::prelude::*;
    rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .context("Starting the linking threads")?
        .install(|| objects.par_iter().map(link).sum())
}

/// The physical root at `from` without its `/boot` (often a filesystem
/// of its own) into the new directory `root`, with an empty `/boot`:
/// each entry as hard links (`cp -al`) where it is on the work
/// directory's filesystem and linking works, else as a copy ([`copy_cmd`]).
fn copy_root(from: &Path, root: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(from)?;
    std::fs::create_dir(root).with_context(|| format!("Creating {}", root.display()))?;
    std::os::unix::fs::chown(root, Some(m.uid()), Some(m.gid()))?;
    std::fs::set_permissions(root, m.permissions())?;
    let xattrs = arbor_repo::xattrs::read_path(from)
        .with_context(|| format!("Reading the extended attributes of {}", from.display()))?;
    arbor_repo::xattrs::set_path(root, &xattrs).context("Copying the extended attributes")?;
    let work_dev = std::fs::metadata(root)?.dev();
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dest) = (e.path(), root.join(e.file_name()));
        if e.file_name() == "boot" {
            continue;
        }
        let same_fs = std::fs::symlink_metadata(&src)?.dev() == work_dev;
        if same_fs && tools::run("cp", tools::command("cp").arg("-al").arg(&src).arg(&dest)).is_ok()
        {
            continue;
        }
        // Another filesystem (EXDEV), or one further down (a mount
        // point inside): copy the whole entry instead.
        if dest.symlink_metadata().is_ok() {
            remove_partial(&dest)?;
        }
        tools::run("cp", &mut copy_cmd(&src, &dest))?;
    }
    std::fs::create_dir(root.join("boot")).context("Creating the empty /boot")?;
    Ok(())
}

/// `cp` copying `src` to `dest` as `-a` does, but failing when it cannot
/// keep an owner or an extended attribute (`-a` alone ignores failures to
/// keep xattrs, and a non-root `cp` failures to keep owners: the image
/// would silently differ from the sysroot).
fn copy_cmd(src: &Path, dest: &Path) -> std::process::Command {
    let mut c = tools::command("cp");
    c.args([
        "--no-dereference",
        "--recursive",
        "--preserve=mode,ownership,timestamps,links,xattr",
    ])
    .arg(src)
    .arg(dest);
    c
}

/// Removes what a failed `cp` left at `p`.
fn remove_partial(p: &Path) -> Result<()> {
    let r = if p.symlink_metadata()?.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    };
    r.with_context(|| format!("Removing the partial copy {}", p.display()))
}

/// Copies the sysroot at `from` (made by `ostree admin deploy`, say): the
/// root tree as hard links where possible (`copy_root`), `/boot` as a copy, with
/// `loader.N/grub.cfg` generated when it is missing. It must have exactly
/// one `loader.N` with entries.
#[context("Copying the sysroot {}", from.display())]
pub fn existing(from: &Path, work: &Path) -> Result<(Staged, Checksum)> {
    let mut loaders = Vec::new();
    for e in std::fs::read_dir(from.join("boot")).context("Reading its /boot")? {
        let n = e?.file_name().to_string_lossy().into_owned();
        if n.starts_with("loader.") && from.join("boot").join(&n).join("entries").is_dir() {
            loaders.push(n);
        }
    }
    if loaders.len() != 1 {
        bail!(
            "{} must have exactly one boot/loader.N with entries, found {}",
            from.display(),
            if loaders.is_empty() {
                "none".to_string()
            } else {
                loaders.join(", ")
            }
        );
    }
    let s = Sysroot::open(from)?;
    let d = s
        .deployments()
        .first()
        .with_context(|| format!("{} has no deployment", from.display()))?
        .clone();
    let root = work.join("root");
    let boot = work.join("boot");
    copy_root(from, &root)?;
    tools::run("cp", &mut copy_cmd(&from.join("boot"), &boot))?;
    crate::grub::write_loader_config(&boot)?;
    Ok((
        Staged {
            deployment: root.join(d.relpath()),
            root,
            boot,
            name: format!("{}/{}", d.stateroot, d.dir_name()),
            linked: 0,
        },
        d.csum,
    ))
}
