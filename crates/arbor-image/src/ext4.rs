//! ext4 filesystems built from a directory with `mkfs.ext4 -d` (no loop
//! mounts), reproducibly: a fixed mke2fs configuration of our own
//! (`MKE2FS_CONFIG`, so the host's defaults do not leak in), fixed UUID
//! and hash seed, `E2FSPROGS_FAKE_TIME` for the times mke2fs itself sets,
//! and a `debugfs` pass setting every inode's times to the commit
//! timestamp: e2fsprogs 1.47.0 (Debian bookworm) copies atime, mtime and
//! ctime from the source files, and a ctime cannot be set from userspace.
//! mke2fs walks each directory in `alphasort` order, so the inode order
//! does not depend on the source filesystem's readdir order.

use std::collections::HashSet;
use std::fmt::Write as _;
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
    fix_times(out, fs.epoch, work, fs.label)
}

/// Sets atime, mtime and ctime of every inode in use (the root and those
/// from the first non-reserved one on) to `epoch`, with one `debugfs -w`.
fn fix_times(img: &Path, epoch: u64, work: &Path, label: &str) -> Result<()> {
    let mut cmd = tools::command("dumpe2fs");
    cmd.env("E2FSPROGS_FAKE_TIME", epoch.to_string()).arg(img);
    let listing = String::from_utf8_lossy(&tools::run("dumpe2fs", &mut cmd)?).into_owned();
    let used = used_inodes(&listing).context("Reading dumpe2fs's inode bitmap listing")?;
    let mut script = String::new();
    for ino in used {
        for field in ["atime", "mtime", "ctime"] {
            writeln!(script, "sif <{ino}> {field} @{epoch}").expect("writing to a String");
        }
    }
    let path = work.join(format!("debugfs-{label}.cmds"));
    std::fs::write(&path, script).context("Writing the debugfs script")?;
    let mut cmd = tools::command("debugfs");
    cmd.env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .arg("-w")
        .arg("-f")
        .arg(&path)
        .arg(img);
    tools::run("debugfs", &mut cmd)?;
    Ok(())
}

/// The inodes in use according to dumpe2fs's listing (per group
/// `Free inodes: a-b, c`), limited to the root directory (2) and the
/// non-reserved ones.
fn used_inodes(listing: &str) -> Result<Vec<u64>> {
    let field = |name: &str| -> Result<u64> {
        listing
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().parse::<u64>())
            .transpose()?
            .with_context(|| format!("No {name:?} in the dumpe2fs listing"))
    };
    let per_group = field("Inodes per group:")?;
    let first = field("First inode:")?;
    let mut used = Vec::new();
    let mut group = 0u64;
    for l in listing.lines() {
        let Some(free) = l.trim().strip_prefix("Free inodes:") else {
            continue;
        };
        let (lo, hi) = (group * per_group + 1, (group + 1) * per_group);
        let mut is_free = HashSet::new();
        for r in free.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            for i in a.parse::<u64>()?..=b.parse::<u64>()? {
                is_free.insert(i);
            }
        }
        used.extend((lo..=hi).filter(|i| !is_free.contains(i) && (*i == 2 || *i >= first)));
        group += 1;
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_inodes_from_a_listing() {
        let l = "Inodes per group:         16\nFirst inode:              11\n\
                 Group 0: (Blocks 0-9)\n  Free inodes: 14-16\n\
                 Group 1: (Blocks 10-19)\n  Free inodes: 17, 19-32\n\
                 Group 2: (Blocks 20-29)\n  Free inodes: \n";
        let u = used_inodes(l).unwrap();
        let mut want = vec![2, 11, 12, 13, 18];
        want.extend(33..=48);
        assert_eq!(u, want);
    }
}
