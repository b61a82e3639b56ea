//! arbor-image: bootable disk images built from a commit.
//!
//! [`build`] deploys the commit into a fresh sysroot (arbor-sysroot's own
//! deploy: the image's repository keeps the commit and its ref), then
//! makes the requested formats, in parallel where they are independent:
//!
//! ```text
//! deploy ──┬─ root.img (mkfs.ext4 -d)  ─┐
//!          ├─ boot.img (mkfs.ext4 -d) ──┼─ disk.raw (GPT + GRUB) ── disk.qcow2 (qemu-img)
//!          └─ root.erofs (mkfs.erofs)   │
//! ```
//!
//! `disk.raw` (512-byte sectors, 1 MiB aligned):
//!
//! ```text
//! LBA 0      protective MBR with GRUB's boot.img code
//! LBA 1-33   GPT header and entries
//! 1 MiB      p1 "bios"  BIOS boot partition: GRUB's core.img
//! 2 MiB      p2 "boot"  ext4 label boot: loader -> loader.N/{entries,grub.cfg}, ostree/, grub/
//!            p3 "root"  ext4 label root: the physical sysroot (ostree/repo, ostree/deploy), /boot empty
//! end        backup GPT entries and header (in a 1 MiB tail)
//! ```
//!
//! Reproducible: UUIDs derived from the commit ([`derived_uuid`]), every
//! timestamp the commit's, mke2fs's configuration our own. Everything is
//! written under a temporary directory inside the output directory and
//! renamed into place at the end: an error leaves the output directory as
//! it was.
//!
//! Modules: [`uuid`], [`gpt`], [`grub`], [`ext4`], [`ext4_times`], [`disk`], [`stage`],
//! [`tools`].

pub mod disk;
pub mod ext4;
pub mod ext4_times;
pub mod gpt;
pub mod grub;
pub mod stage;
pub mod tools;
pub mod uuid;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arbor_format::Checksum;
use arbor_repo::Repo;
use fn_error_context::context;

pub use uuid::{derived_uuid, format_uuid};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// `disk.raw`: a whole disk, GPT, BIOS GRUB.
    Raw,
    /// `disk.qcow2`: the same disk as qcow2.
    Qcow2,
    /// `root.erofs`: the deployment's tree (what `/` is when booted).
    Erofs,
}

impl Format {
    /// The file the format is written to.
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Raw => "disk.raw",
            Format::Qcow2 => "disk.qcow2",
            Format::Erofs => "root.erofs",
        }
    }

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Erofs => "erofs",
        }
    }

    /// Parses a comma-separated list (`raw,qcow2`), without duplicates.
    pub fn parse_list(s: &str) -> Result<Vec<Format>> {
        let mut v: Vec<Format> = s.split(',').map(str::parse).collect::<Result<_>>()?;
        v.sort();
        v.dedup();
        Ok(v)
    }
}

impl FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Format> {
        Ok(match s.trim() {
            "raw" => Format::Raw,
            "qcow2" => Format::Qcow2,
            "erofs" => Format::Erofs,
            other => bail!("Unknown image format {other:?}: the formats are raw, qcow2 and erofs"),
        })
    }
}

/// How the kernel command line names the root filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RootBy {
    /// `root=UUID=<derived root-fs uuid>`.
    #[default]
    Uuid,
    /// `root=LABEL=root`.
    Label,
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The source repository.
    pub repo: PathBuf,
    /// The ref or commit checksum to build.
    pub rev: String,
    /// The formats (at least one).
    pub formats: Vec<Format>,
    /// Kernel arguments (default `rw console=ttyS0,115200n8`); a `root=`
    /// is added first unless one is given.
    pub kargs: Vec<String>,
    /// How `root=` names the root filesystem.
    pub root_by: RootBy,
    /// Stateroot (default: the commit's `arbor.stateroot`, else `default`).
    pub stateroot: Option<String>,
    /// Use this sysroot instead of deploying into a fresh one.
    pub from_sysroot: Option<PathBuf>,
    /// Size of the root filesystem in bytes (default: from its content).
    pub root_size: Option<u64>,
    /// The output directory (created if missing; its parent must exist).
    pub output: PathBuf,
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The commit built.
    pub commit: String,
    /// Its timestamp (every timestamp in the images).
    pub timestamp: u64,
    /// `STATEROOT/CSUM.SERIAL` of the deployment in the image.
    pub deployment: String,
    /// Time to deploy (or copy) the sysroot.
    pub deploy: Duration,
    /// Content objects hard-linked from a bare source repository on the
    /// same filesystem instead of copied.
    pub linked_objects: usize,
    /// Per format, the time from the end of the deploy until its file was
    /// complete (formats are built in parallel).
    pub per_format: Vec<(Format, Duration)>,
    /// The whole build.
    pub total: Duration,
    /// The files written, in the output directory.
    pub files: Vec<PathBuf>,
}

/// The default kernel arguments after `root=`.
pub const DEFAULT_KARGS: &[&str] = &["rw", "console=ttyS0,115200n8"];
/// Boot partition: the smallest size, and headroom over its content.
const BOOT_MIN: u64 = 384 << 20;
const BOOT_EXTRA: u64 = 64 << 20;
/// Root filesystem: headroom over its content, and the rounding.
const ROOT_EXTRA: u64 = 512 << 20;
const ROOT_ROUND: u64 = 64 << 20;

/// The kernel arguments of the deployment.
pub fn kargs_for(opts: &BuildOptions, commit: &str) -> Vec<String> {
    let mut k: Vec<String> = if opts.kargs.is_empty() {
        DEFAULT_KARGS.iter().map(|s| s.to_string()).collect()
    } else {
        opts.kargs.clone()
    };
    if !k.iter().any(|a| a.starts_with("root=")) {
        let root = match opts.root_by {
            RootBy::Uuid => format!(
                "root=UUID={}",
                format_uuid(&derived_uuid("root-fs", commit))
            ),
            RootBy::Label => "root=LABEL=root".to_string(),
        };
        k.insert(0, root);
    }
    k
}

/// Builds the images (see the crate documentation).
pub fn build(opts: &BuildOptions) -> Result<BuildReport> {
    let what = match &opts.from_sysroot {
        Some(s) => s.display().to_string(),
        None => opts.rev.clone(),
    };
    build_checked(opts).with_context(|| format!("Building images of {what}"))
}

fn build_checked(opts: &BuildOptions) -> Result<BuildReport> {
    if opts.formats.is_empty() {
        bail!("No image format requested");
    }
    // Only the directory itself is created (and removed again on an
    // error), never missing parents.
    let created = match std::fs::create_dir(&opts.output) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e).with_context(|| format!("Creating {}", opts.output.display())),
    };
    let r = build_in(opts);
    if r.is_err() && created {
        let _ = std::fs::remove_dir_all(&opts.output);
    }
    r
}

fn build_in(opts: &BuildOptions) -> Result<BuildReport> {
    let t0 = Instant::now();
    let work = tempfile::Builder::new()
        .prefix(".arbor-image-")
        .tempdir_in(&opts.output)
        .context("Creating the work directory")?;
    let w = work.path();
    let (staged, commit) = match &opts.from_sysroot {
        Some(from) => stage::existing(from, w)?,
        None => {
            let src = Repo::open(&opts.repo)?;
            let commit = arbor_repo::refs::resolve_rev(&src, &opts.rev)
                .with_context(|| format!("Resolving {}", opts.rev))?;
            let stateroot = match &opts.stateroot {
                Some(s) => s.clone(),
                None => arbor_repo::objects::load_commit(&src, &commit)?
                    .metadata
                    .get_str("arbor.stateroot")
                    .unwrap_or("default")
                    .to_string(),
            };
            let f = stage::Fresh {
                repo: &opts.repo,
                rev: &opts.rev,
                commit: &commit,
                stateroot: &stateroot,
                kargs: kargs_for(opts, &commit.to_hex()),
            };
            (stage::fresh(&f, w)?, commit)
        }
    };
    let deploy = t0.elapsed();
    let epoch = commit_timestamp(&staged.root, &commit)?;
    let t1 = Instant::now();
    let per_format = make_formats(opts, &staged, &commit.to_hex(), epoch, w)?
        .into_iter()
        .map(|(f, t)| (f, t.duration_since(t1)))
        .collect::<Vec<_>>();
    let files = publish(&opts.formats, w, &opts.output)?;
    Ok(BuildReport {
        commit: commit.to_hex(),
        timestamp: epoch,
        linked_objects: staged.linked,
        deployment: staged.name,
        deploy,
        per_format,
        total: t0.elapsed(),
        files,
    })
}

/// The commit's timestamp, from the staged sysroot's repository.
fn commit_timestamp(root: &Path, commit: &Checksum) -> Result<u64> {
    let repo = Repo::open(&root.join("ostree/repo"))?;
    Ok(arbor_repo::objects::load_commit(&repo, commit)?.timestamp)
}

/// Makes every requested format in `w`; returns when each was complete.
fn make_formats(
    opts: &BuildOptions,
    st: &stage::Staged,
    commit: &str,
    epoch: u64,
    w: &Path,
) -> Result<Vec<(Format, Instant)>> {
    let want = |f| opts.formats.contains(&f);
    let disk = want(Format::Raw) || want(Format::Qcow2);
    let mut done = Vec::new();
    let grub_dir = grub::platform_dir(&st.deployment);
    let (fs, erofs) = rayon::join(
        || -> Result<()> {
            if !disk {
                return Ok(());
            }
            let (root, boot) = rayon::join(
                || make_root_fs(opts, st, commit, epoch, w),
                || make_boot_fs(st, commit, epoch, w, &grub_dir),
            );
            root?;
            boot
        },
        || -> Result<Option<Instant>> {
            if !want(Format::Erofs) {
                return Ok(None);
            }
            make_erofs(
                &st.deployment,
                commit,
                epoch,
                &w.join(Format::Erofs.file_name()),
            )?;
            Ok(Some(Instant::now()))
        },
    );
    fs?;
    if let Some(t) = erofs? {
        done.push((Format::Erofs, t));
    }
    // Read before the staged trees (which may hold GRUB's files) go.
    let boot_img = if disk {
        std::fs::read(grub_dir.join("boot.img")).context("Reading GRUB's boot.img")?
    } else {
        Vec::new()
    };
    // The staged trees are no longer needed: deleting tens of thousands
    // of files takes seconds, so do it while the disk is assembled.
    let (disks, cleanup) = rayon::join(
        || -> Result<Vec<(Format, Instant)>> {
            let mut done = Vec::new();
            if disk {
                assemble_disks(opts, commit, w, &boot_img, &mut done)?;
            }
            Ok(done)
        },
        || remove_staged(st, w),
    );
    done.extend(disks?);
    cleanup?;
    done.sort();
    Ok(done)
}

/// `disk.raw` from the two filesystems and GRUB, then `disk.qcow2`.
fn assemble_disks(
    opts: &BuildOptions,
    commit: &str,
    w: &Path,
    boot_img: &[u8],
    done: &mut Vec<(Format, Instant)>,
) -> Result<()> {
    let want = |f| opts.formats.contains(&f);
    let boot_len = std::fs::metadata(w.join("boot.img"))?.len();
    let root_len = std::fs::metadata(w.join("root.img"))?.len();
    let gpt = disk::layout(commit, boot_len, root_len);
    let core_img = std::fs::read(w.join("core.img")).context("Reading core.img")?;
    let raw = w.join(Format::Raw.file_name());
    disk::assemble(
        &gpt,
        boot_img,
        &core_img,
        &w.join("boot.img"),
        &w.join("root.img"),
        &raw,
    )?;
    std::fs::remove_file(w.join("root.img"))?;
    if want(Format::Raw) {
        done.push((Format::Raw, Instant::now()));
    }
    if want(Format::Qcow2) {
        make_qcow2(&raw, &w.join(Format::Qcow2.file_name()))?;
        done.push((Format::Qcow2, Instant::now()));
    }
    Ok(())
}

/// Deletes the staged trees (both inside the work directory `w`).
fn remove_staged(st: &stage::Staged, w: &Path) -> Result<()> {
    for d in [&st.root, &st.boot] {
        anyhow::ensure!(d.starts_with(w), "{} is not a staged copy", d.display());
        std::fs::remove_dir_all(d).with_context(|| format!("Removing {}", d.display()))?;
    }
    Ok(())
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

fn make_root_fs(
    opts: &BuildOptions,
    st: &stage::Staged,
    commit: &str,
    epoch: u64,
    w: &Path,
) -> Result<()> {
    let size = match opts.root_size {
        Some(s) => round_up(s, 1 << 20),
        None => round_up(2 * ext4::tree_bytes(&st.root)? + ROOT_EXTRA, ROOT_ROUND),
    };
    let fs = ext4::Ext4 {
        label: "root",
        uuid: derived_uuid("root-fs", commit),
        size,
        src: &st.root,
        epoch,
    };
    ext4::mkfs(&fs, &w.join("root.img"), w)
}

/// The boot filesystem: the sysroot's `/boot` plus `grub/` (the stub and
/// GRUB's i386-pc modules); also `core.img`.
fn make_boot_fs(
    st: &stage::Staged,
    commit: &str,
    epoch: u64,
    w: &Path,
    grub_dir: &Path,
) -> Result<()> {
    grub::make_core(grub_dir, &w.join("core.img"))?;
    let g = st.boot.join("grub");
    let mods = g.join("i386-pc");
    std::fs::create_dir_all(&mods).context("Creating grub/i386-pc")?;
    for e in std::fs::read_dir(grub_dir).context("Reading GRUB's modules")? {
        let e = e?;
        let n = e.file_name();
        let keep = n
            .to_str()
            .is_some_and(|n| n.ends_with(".mod") || n.ends_with(".lst") || n.ends_with(".o"));
        if keep && e.file_type()?.is_file() {
            std::fs::copy(e.path(), mods.join(&n)).with_context(|| format!("Copying {n:?}"))?;
        }
    }
    std::fs::write(g.join("grub.cfg"), grub::stub()).context("Writing grub/grub.cfg")?;
    grub::write_loader_config(&st.boot)?;
    let size = round_up(2 * ext4::tree_bytes(&st.boot)? + BOOT_EXTRA, 1 << 20).max(BOOT_MIN);
    let fs = ext4::Ext4 {
        label: "boot",
        uuid: derived_uuid("boot-fs", commit),
        size,
        src: &st.boot,
        epoch,
    };
    ext4::mkfs(&fs, &w.join("boot.img"), w)
}

/// `root.erofs`: the deployment's tree, every timestamp `epoch`.
#[context("Making root.erofs")]
fn make_erofs(tree: &Path, commit: &str, epoch: u64, out: &Path) -> Result<()> {
    let mut cmd = tools::command("mkfs.erofs");
    // Every inode's time is -T's (--ignore-mtime; SOURCE_DATE_EPOCH must
    // not be set, mkfs.erofs 1.5 then clamps instead): by default source
    // mtimes older than -T are kept, and those differ with how the
    // objects got into the repository (a symlink's, say).
    cmd.env_remove("SOURCE_DATE_EPOCH")
        .arg("--quiet")
        .arg("--ignore-mtime")
        .arg(format!("-T{epoch}"))
        .arg(format!("-U{}", format_uuid(&derived_uuid("erofs", commit))))
        .arg(out)
        .arg(tree);
    tools::run("mkfs.erofs", &mut cmd)?;
    Ok(())
}

#[context("Converting to qcow2")]
fn make_qcow2(raw: &Path, out: &Path) -> Result<()> {
    let mut cmd = tools::command("qemu-img");
    cmd.args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(out);
    tools::run("qemu-img", &mut cmd)?;
    Ok(())
}

/// Syncs the requested files and renames them from `w` into `out`; on an
/// error, those already renamed are removed again.
#[context("Moving the images into {}", out.display())]
fn publish(formats: &[Format], w: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    for f in formats {
        std::fs::File::open(w.join(f.file_name()))?
            .sync_all()
            .with_context(|| format!("Syncing {}", f.file_name()))?;
    }
    let mut done = Vec::new();
    for f in formats {
        let to = out.join(f.file_name());
        if let Err(e) = std::fs::rename(w.join(f.file_name()), &to) {
            for p in &done {
                let _ = std::fs::remove_file(p);
            }
            return Err(e).with_context(|| format!("Renaming {}", f.file_name()));
        }
        done.push(to);
    }
    std::fs::File::open(out)?
        .sync_all()
        .context("Syncing the output directory")?;
    Ok(done)
}

/// Writes the `formats`' files of `dir` as a tar stream to `out`: mode
/// 0644, owner 0:0, mtime `mtime`, in the order given.
pub fn write_tar(dir: &Path, formats: &[Format], mtime: u64, out: impl Write) -> Result<()> {
    let mut b = tar::Builder::new(out);
    for f in formats {
        let p = dir.join(f.file_name());
        let mut file =
            std::fs::File::open(&p).with_context(|| format!("Opening {}", p.display()))?;
        let mut h = tar::Header::new_gnu();
        h.set_size(file.metadata()?.len());
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, f.file_name(), &mut file)
            .with_context(|| format!("Writing {} to the tar stream", f.file_name()))?;
    }
    b.into_inner()?.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_lists() {
        assert_eq!(
            Format::parse_list("qcow2,raw,raw").unwrap(),
            vec![Format::Raw, Format::Qcow2]
        );
        let e = Format::parse_list("raw,vmdk").unwrap_err().to_string();
        assert!(
            e.contains("\"vmdk\"") && e.contains("raw, qcow2 and erofs"),
            "{e}"
        );
    }

    #[test]
    fn kargs_get_a_root() {
        let c = "ab".repeat(32);
        let mut o = BuildOptions::default();
        let k = kargs_for(&o, &c);
        assert_eq!(k[1..], ["rw", "console=ttyS0,115200n8"]);
        assert_eq!(
            k[0],
            format!("root=UUID={}", format_uuid(&derived_uuid("root-fs", &c)))
        );
        o.root_by = RootBy::Label;
        o.kargs = vec!["quiet".into()];
        assert_eq!(kargs_for(&o, &c), ["root=LABEL=root", "quiet"]);
        o.kargs = vec!["root=/dev/sda3".into()];
        assert_eq!(kargs_for(&o, &c), ["root=/dev/sda3"]);
    }
}
