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

/// Makes the `fs.size` bytes at byte `offset` of the existing file `out`
/// (a partition of a disk image, or a whole file of that size) an ext4
/// filesystem holding `fs.src` (`mke2fs -E offset=`, so a disk image gets
/// its filesystems without a copy); `work` is a scratch directory for the
/// configuration. Nothing outside that range is written, nothing synced.
/// The inode times are the source's: [`crate::ext4_times::set_times`]
/// sets them afterwards.
#[context("Making the {} filesystem", fs.label)]
pub fn mkfs(fs: &Ext4<'_>, out: &Path, offset: u64, work: &Path) -> Result<()> {
    let conf = work.join(format!("mke2fs-{}.conf", fs.label));
    std::fs::write(&conf, MKE2FS_CONF).context("Writing the mke2fs configuration")?;
    let len = std::fs::metadata(out)
        .with_context(|| format!("Reading {}", out.display()))?
        .len();
    anyhow::ensure!(
        fs.size.is_multiple_of(BLOCK) && offset + fs.size <= len,
        "{} bytes at {offset} do not fit in {} ({len} bytes)",
        fs.size,
        out.display()
    );
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
            "hash_seed={uuid},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=1,nodiscard,\
             offset={offset}"
        ))
        .arg("-d")
        .arg(fs.src)
        .arg(out)
        // In KiB: a bare number would count -b blocks.
        .arg(format!("{}k", fs.size / 1024));
    tools::run("mkfs.ext4", &mut cmd)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// A filesystem made at an offset of a larger file: the bytes around
    /// it stay as they were, and the range alone is a valid ext4 holding
    /// the tree, every inode time the epoch.
    #[test]
    fn mkfs_at_an_offset_writes_only_its_range() {
        mkfs_at_an_offset(1_000_000_000, "2001");
    }

    /// Times from 2038 on take the `_extra` fields' epoch bits (written
    /// wrong, they read back as 1901 or 1970).
    #[test]
    fn times_after_2038_read_back_as_written() {
        mkfs_at_an_offset((1 << 31) + 5, "2038");
        mkfs_at_an_offset(4_400_000_000, "2109");
        // Epoch bits 2.
        mkfs_at_an_offset(7_258_118_400, "2200");
    }

    fn mkfs_at_an_offset(epoch: u64, year: &str) {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/f"), vec![7u8; 100_000]).unwrap();
        let img = t.path().join("disk");
        let (at, size, tail) = (3 << 20, 32 << 20, 2 << 20);
        let f = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&img)
            .unwrap();
        f.set_len(at + size + tail).unwrap();
        let (head_mark, tail_mark) = (vec![0xa5u8; at as usize], vec![0x5au8; tail as usize]);
        f.write_all_at(&head_mark, 0).unwrap();
        f.write_all_at(&tail_mark, at + size).unwrap();
        let fs = Ext4 {
            label: "t",
            uuid: [1; 16],
            size,
            src: &src,
            epoch,
        };
        mkfs(&fs, &img, at, t.path()).unwrap();
        crate::ext4_times::set_times(&img, at, fs.epoch).unwrap();
        let mut b = vec![0u8; at as usize];
        f.read_exact_at(&mut b, 0).unwrap();
        assert!(b == head_mark, "bytes before the filesystem changed");
        let mut b = vec![0u8; tail as usize];
        f.read_exact_at(&mut b, at + size).unwrap();
        assert!(b == tail_mark, "bytes after the filesystem changed");
        assert_eq!(f.metadata().unwrap().len(), at + size + tail);
        // The range alone.
        let part = t.path().join("part");
        let mut p = vec![0u8; size as usize];
        f.read_exact_at(&mut p, at).unwrap();
        std::fs::write(&part, &p).unwrap();
        let out = tools::command("e2fsck")
            .arg("-fn")
            .arg(&part)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let (lo, hi) = crate::ext4_times::encode_time(epoch);
        for ino in ["/d/f", "/d", "/"] {
            let out = tools::command("debugfs")
                .env("TZ", "UTC")
                .args(["-R", &format!("stat {ino}")])
                .arg(&part)
                .output()
                .unwrap();
            let stat = String::from_utf8_lossy(&out.stdout);
            if ino == "/d/f" {
                assert!(stat.contains("Size: 100000"), "{stat}");
            }
            for field in ["ctime", "atime", "mtime", "crtime"] {
                let line = stat
                    .lines()
                    .find(|l| l.trim_start().starts_with(&format!("{field}:")))
                    .unwrap_or_else(|| panic!("no {field} in {stat}"));
                assert!(
                    line.contains(&format!("0x{lo:08x}:{hi:08x}")) && line.ends_with(year),
                    "{ino} {field}: {line}"
                );
            }
        }
    }
}
