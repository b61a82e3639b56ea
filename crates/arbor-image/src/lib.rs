//! arbor-image: bootable disk images built from a commit.
//!
//! [`build`] deploys the commit into a fresh sysroot (arbor-sysroot's own
//! deploy: the image's repository keeps the commit and its ref), then
//! makes the requested formats, in parallel where they are independent:
//!
//! ```text
//! deploy ──┬─ root fs (mkfs.ext4 -d) ──┐  (both made in place inside disk.raw)
//!          ├─ boot fs (mkfs.ext4 -d) ──┼─ disk.raw (GPT + GRUB) ── disk.qcow2 (qemu-img)
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
//! [`tools`], and `output` (the output directory: its lock, the umask,
//! publishing).

pub mod disk;
pub mod ext4;
pub mod ext4_times;
pub mod gpt;
pub mod grub;
mod output;
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

use output::{
    drop_default_acl, lock_output, publish, remove_stale_work_dirs, UmaskGuard, BUILDS,
    WORK_MARKER, WORK_PREFIX,
};

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
    /// Each stage's start and duration from the build's start (stages
    /// run in parallel, so they overlap), in the order they ended.
    pub stages: Vec<Stage>,
    /// The files written, in the output directory.
    pub files: Vec<PathBuf>,
}

/// One timed stage of a build.
#[derive(Debug, Clone)]
pub struct Stage {
    /// What it did.
    pub name: String,
    /// When it started, from the build's start.
    pub start: Duration,
    /// How long it took.
    pub took: Duration,
}

/// Records the stages of one build, from several threads.
#[derive(Debug)]
pub struct Stages {
    t0: Instant,
    done: std::sync::Mutex<Vec<Stage>>,
}

impl Stages {
    fn new(t0: Instant) -> Stages {
        Stages {
            t0,
            done: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` as the stage `name`.
    pub fn time<T>(&self, name: impl Into<String>, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let r = f();
        let s = Stage {
            name: name.into(),
            start: start.duration_since(self.t0),
            took: start.elapsed(),
        };
        self.done.lock().unwrap_or_else(|e| e.into_inner()).push(s);
        r
    }

    fn into_vec(self) -> Vec<Stage> {
        self.done.into_inner().unwrap_or_else(|e| e.into_inner())
    }
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
    // One build at a time in a process: the umask below is process-wide.
    let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    // Only the directory itself is created (with the caller's umask; and
    // removed again on an error if empty), never missing parents.
    let created = match std::fs::create_dir(&opts.output) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e).with_context(|| format!("Creating {}", opts.output.display())),
    };
    // Refused here, the directory is another build's: nothing is removed.
    let lock = lock_output(&opts.output)?;
    // Every file of the staged trees is created by this process: the
    // builder's umask must not reach their modes (`/var` 0700 under
    // umask 077 would be in the image). The images get the caller's.
    let umask = UmaskGuard::set(0o022);
    let r = build_in(opts, lock.is_some(), umask.previous());
    drop(umask);
    if r.is_err() && created {
        // The work directory is gone already; anything else is not ours.
        let _ = std::fs::remove_dir(&opts.output);
    }
    drop(lock);
    r
}

fn build_in(opts: &BuildOptions, locked: bool, umask: u32) -> Result<BuildReport> {
    let t0 = Instant::now();
    let stages = Stages::new(t0);
    if locked {
        remove_stale_work_dirs(&opts.output);
    }
    let work = tempfile::Builder::new()
        .prefix(WORK_PREFIX)
        .tempdir_in(&opts.output)
        .context("Creating the work directory")?;
    let w = work.path();
    std::fs::write(w.join(WORK_MARKER), b"").context("Marking the work directory")?;
    drop_default_acl(w)?;
    let (staged, commit) = match &opts.from_sysroot {
        Some(from) => stages.time("copy the sysroot", || stage::existing(from, w))?,
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
            (stage::fresh(&f, w, &stages)?, commit)
        }
    };
    let deploy = t0.elapsed();
    let epoch = commit_timestamp(&staged.root, &commit)?;
    let t1 = Instant::now();
    let per_format = make_formats(opts, &staged, &commit.to_hex(), epoch, w, &stages)?
        .into_iter()
        .map(|(f, t)| (f, t.duration_since(t1)))
        .collect::<Vec<_>>();
    let files = stages.time("publish (sync, rename)", || {
        publish(&opts.formats, w, &opts.output, 0o666 & !umask)
    })?;
    stages.time("remove the work directory", || drop(work));
    let total = t0.elapsed();
    Ok(BuildReport {
        commit: commit.to_hex(),
        timestamp: epoch,
        linked_objects: staged.linked,
        deployment: staged.name,
        deploy,
        per_format,
        total,
        stages: stages.into_vec(),
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
    stages: &Stages,
) -> Result<Vec<(Format, Instant)>> {
    let want = |f| opts.formats.contains(&f);
    let disk = want(Format::Raw) || want(Format::Qcow2);
    let mut done = Vec::new();
    let grub_dir = w.join("grub-i386-pc");
    if disk {
        grub::copy_platform(&grub::platform_dir(&st.deployment), &grub_dir)?;
    }
    let raw = w.join(Format::Raw.file_name());
    let (fs, erofs) = rayon::join(
        || -> Result<Option<gpt::Gpt>> {
            if !disk {
                return Ok(None);
            }
            make_disk_filesystems(opts, st, commit, epoch, w, &grub_dir, stages).map(Some)
        },
        || -> Result<Option<Instant>> {
            if !want(Format::Erofs) {
                return Ok(None);
            }
            stages.time("mkfs.erofs", || {
                make_erofs(
                    &st.deployment,
                    commit,
                    epoch,
                    &w.join(Format::Erofs.file_name()),
                )
            })?;
            Ok(Some(Instant::now()))
        },
    );
    let gpt = fs?;
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
    // of files takes seconds, so do it while the disk is finished.
    let (disks, cleanup) = rayon::join(
        || -> Result<Vec<(Format, Instant)>> {
            let mut done = Vec::new();
            if let Some(gpt) = &gpt {
                finish_disks(opts, gpt, w, &raw, &boot_img, &mut done, stages)?;
            }
            Ok(done)
        },
        || stages.time("remove the staged trees", || remove_staged(st, w)),
    );
    done.extend(disks?);
    cleanup?;
    done.sort();
    Ok(done)
}

/// Creates `disk.raw` in `w` (sparse) and makes the root and boot
/// filesystems in place at their partitions' offsets, in parallel; also
/// `core.img` (in `w`). Returns the partition table, written by [`finish_disks`].
fn make_disk_filesystems(
    opts: &BuildOptions,
    st: &stage::Staged,
    commit: &str,
    epoch: u64,
    w: &Path,
    grub_dir: &Path,
    stages: &Stages,
) -> Result<gpt::Gpt> {
    let raw = &w.join(Format::Raw.file_name());
    // The sizes first: the partition table places the filesystems.
    let (root_size, boot_size) = rayon::join(
        || -> Result<u64> {
            Ok(match opts.root_size {
                Some(s) => round_up(s, 1 << 20),
                None => stages.time("measure the root tree", || -> Result<u64> {
                    Ok(round_up(
                        2 * ext4::tree_bytes(&st.root)? + ROOT_EXTRA,
                        ROOT_ROUND,
                    ))
                })?,
            })
        },
        || stages.time("boot tree", || prepare_boot(st, grub_dir)),
    );
    let gpt = disk::layout(commit, boot_size?, root_size?);
    disk::create(&gpt, raw)?;
    let fs = |label: &str, src: &Path, i: usize| -> Result<()> {
        let fs = ext4::Ext4 {
            label,
            uuid: derived_uuid(&format!("{label}-fs"), commit),
            size: gpt.partitions[i].sectors * gpt::SECTOR,
            src,
            epoch,
        };
        let at = disk::offset(&gpt, i);
        stages.time(format!("mkfs.ext4 {label}"), || ext4::mkfs(&fs, raw, at, w))?;
        stages.time(format!("inode times {label}"), || {
            ext4_times::set_times(raw, at, epoch)
        })
    };
    // core.img while the root filesystem (the longest stage) is made.
    let (root, boot) = rayon::join(
        || fs("root", &st.root, 2),
        || -> Result<()> {
            fs("boot", &st.boot, 1)?;
            stages.time("core.img", || {
                grub::make_core(grub_dir, &w.join("core.img"))
            })
        },
    );
    root?;
    boot?;
    Ok(gpt)
}

/// The table and GRUB into `disk.raw`, then `disk.qcow2`.
fn finish_disks(
    opts: &BuildOptions,
    gpt: &gpt::Gpt,
    w: &Path,
    raw: &Path,
    boot_img: &[u8],
    done: &mut Vec<(Format, Instant)>,
    stages: &Stages,
) -> Result<()> {
    let want = |f| opts.formats.contains(&f);
    let core_img = std::fs::read(w.join("core.img")).context("Reading core.img")?;
    stages.time("partition table, GRUB", || {
        disk::finish(gpt, boot_img, &core_img, raw)
    })?;
    if want(Format::Raw) {
        done.push((Format::Raw, Instant::now()));
    }
    if want(Format::Qcow2) {
        stages.time("qemu-img convert", || {
            make_qcow2(raw, &w.join(Format::Qcow2.file_name()))
        })?;
        done.push((Format::Qcow2, Instant::now()));
    }
    Ok(())
}

/// Deletes the staged trees (both inside the work directory `w`), the
/// directories in parallel: tens of thousands of unlinks are the longest
/// stage after the filesystems are made, and they wait mostly on the
/// kernel's directory and journal locks, not on one CPU.
fn remove_staged(st: &stage::Staged, w: &Path) -> Result<()> {
    use rayon::prelude::*;
    for d in [&st.root, &st.boot] {
        anyhow::ensure!(d.starts_with(w), "{} is not a staged copy", d.display());
    }
    // A pool of its own: the build's pool has a thread waiting on qemu-img.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(REMOVE_THREADS)
        .build()
        .context("Starting the removal threads")?;
    pool.install(|| {
        [&st.root, &st.boot]
            .par_iter()
            .try_for_each(|d| remove_tree(d))
    })
}

/// Threads removing the staged trees.
const REMOVE_THREADS: usize = 4;

/// `rm -r` of `dir`, its subdirectories in parallel.
fn remove_tree(dir: &Path) -> Result<()> {
    use rayon::prelude::*;
    let mut dirs = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("Reading {}", dir.display()))? {
        let e = e?;
        if e.file_type()?.is_dir() {
            dirs.push(e.path());
        } else {
            std::fs::remove_file(e.path())
                .with_context(|| format!("Removing {}", e.path().display()))?;
        }
    }
    dirs.par_iter().try_for_each(|d| remove_tree(d))?;
    std::fs::remove_dir(dir).with_context(|| format!("Removing {}", dir.display()))
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// Completes the boot filesystem's tree: the sysroot's `/boot` plus
/// `grub/` (the stub and GRUB's i386-pc modules). Returns the boot
/// filesystem's size.
fn prepare_boot(st: &stage::Staged, grub_dir: &Path) -> Result<u64> {
    let g = st.boot.join("grub");
    // A `grub` a `--from-sysroot` source had is replaced whole: its files
    // (or a symbolic link, which would lead the writes below out of the
    // staged tree) are not for the GRUB this build installs.
    match std::fs::symlink_metadata(&g) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&g),
        Ok(_) => std::fs::remove_file(&g),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .context("Removing the sysroot's own boot/grub")?;
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
    // An empty environment block: boot counting is on
    // (arbor_sysroot::bootcount); GRUB can only rewrite a file that exists.
    let env = arbor_sysroot::bootcount::EnvBlock::default().encode()?;
    std::fs::write(g.join("grubenv"), env).context("Writing grub/grubenv")?;
    grub::write_loader_config(&st.boot)?;
    Ok(round_up(2 * ext4::tree_bytes(&st.boot)? + BOOT_EXTRA, 1 << 20).max(BOOT_MIN))
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
    // `-t unsafe`: no flush at the end (the same bytes); the file is
    // synced when it is published.
    cmd.args(["convert", "-t", "unsafe", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(out);
    tools::run("qemu-img", &mut cmd)?;
    Ok(())
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
