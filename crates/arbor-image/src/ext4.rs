//! ext4 filesystems built from a directory with `mkfs.ext4 -d` (no loop
//! mounts), reproducibly: a fixed mke2fs configuration of our own
//! (`MKE2FS_CONFIG`, so the host's defaults do not leak in), fixed UUID
//! and hash seed, `E2FSPROGS_FAKE_TIME` for the times mke2fs itself sets,
//! and a pass setting every inode's times to the commit timestamp
//! ([`crate::ext4_times`]): e2fsprogs 1.47.0 (Debian bookworm) copies
//! atime, mtime and ctime from the source files, and a ctime cannot be set
//! from userspace.
//! mke2fs walks each directory in `alphasort` order, so the inode order
//! does not depend on the source filesystem's readdir order.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use fn_error_context::context;

use crate::tools;
use crate::uuid::format_uuid;

/// Block size of every filesystem.
pub const BLOCK: u64 = 4096;

/// The mke2fs configuration: Debian bookworm's ext4 defaults, written out
/// so a host with other defaults builds the same bytes. No
/// `metadata_csum_seed` and no `orphan_file`: GRUB 2.06 refuses the first
/// and kernels before 5.15 the second.
const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 0
[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// One filesystem to make.
#[derive(Debug)]
pub struct Ext4<'a> {
    /// Volume label.
    pub label: &'a str,
    /// Filesystem UUID (also the directory hash seed).
    pub uuid: [u8; 16],
    /// Size in bytes (a multiple of [`BLOCK`]).
    pub size: u64,
    /// The directory whose contents become the filesystem's.
    pub src: &'a Path,
    /// Every inode's atime, mtime and ctime (and mke2fs's clock).
    pub epoch: u64,
}

/// Bytes the tree at `root` occupies in 4 KiB blocks, each inode counted
/// once (the sysroot's deployments are hard links to the repository's
/// objects, and mke2fs keeps them as links).
#[context("Measuring {}", root.display())]
pub fn tree_bytes(root: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("Reading {}", dir.display()))? {
            let e = e?;
            let m = e.path().symlink_metadata()?;
            if m.is_dir() {
                stack.push(e.path());
            } else if !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            total += m.size().div_ceil(BLOCK) * BLOCK + 256;
        }
    }
    Ok(total)
}

/// Makes `out` (created, `fs.size` bytes, sparse) an ext4 filesystem
/// holding `fs.src`; `work` is a scratch directory for the configuration.
#[context("Making the {} filesystem", fs.label)]
pub fn mkfs(fs: &Ext4<'_>, out: &Path, work: &Path) -> Result<()> {
    let conf = work.join(format!("mke2fs-{}.conf", fs.label));
    std::fs::write(&conf, MKE2FS_CONF).context("Writing the mke2fs configuration")?;
    let f = std::fs::File::create(out).with_context(|| format!("Creating {}", out.display()))?;
    f.set_len(fs.size)
        .with_context(|| format!("Sizing {}", out.display()))?;
    drop(f);
    let uuid = format_uuid(&fs.uuid);
    let epoch = fs.epoch.to_string();
    let mut cmd = tools::command("mkfs.ext4");
    cmd.env("MKE2FS_CONFIG", &conf)
        .env("E2FSPROGS_FAKE_TIME", &epoch)
        .env("SOURCE_DATE_EPOCH", &epoch)
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-L"])
        .arg(fs.label)
        .arg("-U")
        .arg(&uuid)
        .arg("-E")
        .arg(format!(
            "hash_seed={uuid},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard"
        ))
        .arg("-d")
        .arg(fs.src)
        .arg(out);
    tools::run("mkfs.ext4", &mut cmd)?;
    crate::ext4_times::set_times(out, fs.epoch)
}
