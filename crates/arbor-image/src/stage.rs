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
    /// Content objects hard-linked from the source repository.
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
pub fn fresh(f: &Fresh<'_>, work: &Path) -> Result<Staged> {
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
        linked = seed_file_objects(&src, f.repo, &sysroot.join("ostree/repo"), f.commit)?;
        let opts = arbor_pull::PullLocalOptions {
            refs: vec![f.rev.to_string()],
            ..Default::default()
        };
        arbor_pull::pull_local(
            &s.repo().lock(false)?,
            &src,
            &opts,
            &arbor_repo::progress::NullProgress,
        )
        .context("Pulling the commit into the image's repository")?;
    }
    let opts = DeployOptions {
        stateroot: Some(f.stateroot.to_string()),
        revision: f.rev.to_string(),
        exact_kargs: Some(f.kargs.clone()),
        ..Default::default()
    };
    let r = deploy(&mut s.lock()?, &opts)?;
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
/// filesystem, hard-links the commit's content objects into the image's
/// repository before the pull, which then copies only the metadata: as
/// ostree's `pull-local` does for repositories of the same mode (a local
/// pull trusts its source). Nothing is ever written through these links
/// (the deployment's `/etc` is a copy), and deleting the temporary sysroot
/// then only drops link counts instead of freeing the blocks of a whole
/// OS tree. Any other case leaves everything to the pull.
#[context("Linking the commit's objects from {}", src_path.display())]
fn seed_file_objects(src: &Repo, src_path: &Path, dest: &Path, commit: &Checksum) -> Result<usize> {
    use std::os::unix::fs::MetadataExt;
    let dest_repo = Repo::open(dest)?;
    let (so, dobj) = (src_path.join("objects"), dest.join("objects"));
    if src.mode() != arbor_format::RepoMode::Bare
        || dest_repo.mode() != arbor_format::RepoMode::Bare
        || std::fs::metadata(&so)?.dev() != std::fs::metadata(&dobj)?.dev()
    {
        return Ok(0);
    }
    let mut linked = 0;
    let mut set = arbor_repo::reachable::ObjectSet::new();
    arbor_repo::reachable::add_commit(src, commit, 0, &mut set)?;
    for (t, c) in set {
        if t != arbor_format::ObjectType::File {
            continue;
        }
        let rel = src.object_relpath(t, &c);
        let to = dobj.join(&rel);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::hard_link(so.join(&rel), &to) {
            Ok(()) => linked += 1,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            // Not linkable after all (another filesystem under objects/,
            // a protected hard link): the pull copies the rest.
            Err(e)
                if [rustix::io::Errno::XDEV, rustix::io::Errno::PERM]
                    .iter()
                    .any(|x| e.raw_os_error() == Some(x.raw_os_error())) =>
            {
                return Ok(linked)
            }
            Err(e) => return Err(e).with_context(|| format!("Linking {rel}")),
        }
    }
    Ok(linked)
}

/// Copies the sysroot at `from` (made by `ostree admin deploy`, say): the
/// root tree as hard links (`cp -al`), `/boot` as a copy, with
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
    let mut cmd = tools::command("cp");
    cmd.arg("-al").arg(from).arg(&root);
    tools::run("cp", &mut cmd)?;
    std::fs::remove_dir_all(root.join("boot")).context("Emptying the copy's /boot")?;
    std::fs::create_dir(root.join("boot")).context("Creating the empty /boot")?;
    let mut cmd = tools::command("cp");
    cmd.arg("-a").arg(from.join("boot")).arg(&boot);
    tools::run("cp", &mut cmd)?;
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
