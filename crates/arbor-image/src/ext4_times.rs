//! Setting every used inode's timestamps of an ext4 image to one value,
//! in place, with the inode checksums recomputed: what a `debugfs -w`
//! script of `set_inode_field` commands does, in a fraction of the time
//! (one pass over the inode tables instead of a command per field).
//!
//! Layout (the kernel's `fs/ext4/ext4.h`, e2fsprogs' `lib/ext2fs/ext2_fs.h`):
//! superblock at byte 1024; group descriptors in the block after the
//! superblock's; per group an inode bitmap and an inode table. Inode
//! checksum (`metadata_csum`): CRC32C seeded with CRC32C(~0, uuid), then
//! the little-endian inode number and generation, then the inode with its
//! two checksum fields zeroed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, ensure, Result};
use fn_error_context::context;

const SUPERBLOCK: u64 = 1024;
const MAGIC: u16 = 0xef53;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const BG_INODE_UNINIT: u16 = 0x1;
/// The root directory's inode.
const ROOT_INO: u64 = 2;
/// The end of the original 128-byte inode, where `i_extra_isize` starts.
const GOOD_OLD_INODE_SIZE: usize = 128;

/// CRC32C (Castagnoli), without the final inversion (as ext4 chains it).
pub fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// What the pass needs from the superblock.
#[derive(Debug)]
struct Geometry {
    block: u64,
    groups: u64,
    inodes_per_group: u64,
    inode_size: usize,
    first_ino: u64,
    desc_size: usize,
    gdt: u64,
    is_64bit: bool,
    /// The checksum seed, when inodes carry checksums.
    csum_seed: Option<u32>,
}

fn geometry(sb: &[u8]) -> Result<Geometry> {
    ensure!(u16_at(sb, 0x38) == MAGIC, "Not an ext4 filesystem");
    let block = 1024u64 << u32_at(sb, 0x18);
    let inodes = u64::from(u32_at(sb, 0x0));
    let inodes_per_group = u64::from(u32_at(sb, 0x28));
    let incompat = u32_at(sb, 0x60);
    let ro_compat = u32_at(sb, 0x64);
    let is_64bit = incompat & INCOMPAT_64BIT != 0;
    let csum_seed = (ro_compat & RO_COMPAT_METADATA_CSUM != 0).then(|| {
        if incompat & INCOMPAT_CSUM_SEED != 0 {
            u32_at(sb, 0x270)
        } else {
            crc32c(!0, &sb[0x68..0x78])
        }
    });
    ensure!(
        inodes_per_group > 0,
        "A superblock with no inodes per group"
    );
    // With meta_bg the group descriptors are spread over the disk instead
    // of following the superblock (mke2fs sets it only when asked).
    ensure!(
        incompat & INCOMPAT_META_BG == 0,
        "The meta_bg feature is not supported"
    );
    Ok(Geometry {
        block,
        groups: inodes.div_ceil(inodes_per_group),
        inodes_per_group,
        inode_size: usize::from(u16_at(sb, 0x58)),
        first_ino: u64::from(u32_at(sb, 0x54)),
        desc_size: if is_64bit {
            usize::from(u16_at(sb, 0xfe))
        } else {
            32
        },
        gdt: (u64::from(u32_at(sb, 0x14)) + 1) * block,
        is_64bit,
        csum_seed,
    })
}

/// The last second stored here: 32 signed bits plus the two epoch bits
/// of the `_extra` fields reach 2446, but e2fsck (pass 1, until 2242)
/// takes epoch 3 with bit 31 set, from 2310-04-04 on, for a badly
/// encoded date before 1970 and rewrites it. So: 2310-04-04.
pub const MAX_TIME: u64 = (3 << 32) - (1 << 31) - 1;

/// An ext4 timestamp (`fs/ext4/ext4.h`, `ext4_encode_extra_time`): the
/// low 32 bits of the seconds, read back as signed, and the `_extra`
/// field whose two low bits extend them (nanoseconds zero): for
/// 1970..2038 the epoch bits are 0, for 2038..2106 they are 1.
pub fn encode_time(secs: u64) -> (u32, u32) {
    let low = secs as u32;
    let epoch = ((secs as i64 - i64::from(low as i32)) >> 32) & 3;
    (low, epoch as u32)
}

/// Sets `i_atime`, `i_ctime`, `i_mtime` and `i_crtime` (their extra
/// fields: epoch bits, nanoseconds zero) of the root directory and of every used
/// non-reserved inode of the ext4 filesystem at byte `offset` of `img`
/// (a partition of a disk image) to `epoch`. Nothing is synced: the
/// caller syncs the file it publishes.
#[context("Setting the inode times of {}", img.display())]
pub fn set_times(img: &Path, offset: u64, epoch: u64) -> Result<()> {
    if epoch > MAX_TIME {
        bail!("Timestamp {epoch} is past what ext4 can store here (2310-04-04)");
    }
    let t = encode_time(epoch);
    let f = File::options().read(true).write(true).open(img)?;
    let mut sb = vec![0u8; 1024];
    f.read_exact_at(&mut sb, offset + SUPERBLOCK)?;
    let g = geometry(&sb)?;
    ensure!(
        g.inode_size >= GOOD_OLD_INODE_SIZE,
        "Inodes of {} bytes",
        g.inode_size
    );
    let mut gdt = vec![0u8; usize::try_from(g.groups)? * g.desc_size];
    f.read_exact_at(&mut gdt, offset + g.gdt)?;
    for group in 0..g.groups {
        let d = &gdt[usize::try_from(group)? * g.desc_size..][..g.desc_size];
        if u16_at(d, 0x12) & BG_INODE_UNINIT != 0 {
            continue;
        }
        let hi = |o: usize| {
            if g.is_64bit {
                u64::from(u32_at(d, o)) << 32
            } else {
                0
            }
        };
        let bitmap_at = offset + (u64::from(u32_at(d, 0x4)) | hi(0x24)) * g.block;
        let table_at = offset + (u64::from(u32_at(d, 0x8)) | hi(0x28)) * g.block;
        let mut bitmap = vec![0u8; usize::try_from(g.inodes_per_group.div_ceil(8))?];
        f.read_exact_at(&mut bitmap, bitmap_at)?;
        let mut table = vec![0u8; usize::try_from(g.inodes_per_group)? * g.inode_size];
        f.read_exact_at(&mut table, table_at)?;
        let mut changed = false;
        for i in 0..g.inodes_per_group {
            let ino = group * g.inodes_per_group + i + 1;
            let used = bitmap[usize::try_from(i / 8)?] & (1 << (i % 8)) != 0;
            if !used || (ino != ROOT_INO && ino < g.first_ino) {
                continue;
            }
            let at = usize::try_from(i)? * g.inode_size;
            set_inode_times(&mut table[at..at + g.inode_size], ino, t, g.csum_seed)?;
            changed = true;
        }
        if changed {
            f.write_all_at(&table, table_at)?;
        }
    }
    Ok(())
}

/// One inode: the times (`t` as [`encode_time`] gives it), then its
/// checksum. Without room for the `_extra` fields (128-byte inodes) only
/// times before 2038 can be stored.
fn set_inode_times(
    inode: &mut [u8],
    ino: u64,
    (t, hi): (u32, u32),
    csum_seed: Option<u32>,
) -> Result<()> {
    let extra = if inode.len() > GOOD_OLD_INODE_SIZE {
        usize::from(u16_at(inode, 0x80))
    } else {
        0
    };
    let end = (GOOD_OLD_INODE_SIZE + extra).min(inode.len());
    let fits = |o: usize, len: usize| o + len <= end;
    ensure!(
        hi == 0 || fits(0x84, 12),
        "Inode {ino} has no room for times from 2038 on"
    );
    for o in [0x8, 0xc, 0x10] {
        inode[o..o + 4].copy_from_slice(&t.to_le_bytes());
    }
    // i_ctime_extra, i_mtime_extra, i_atime_extra, i_crtime, i_crtime_extra.
    for (o, v) in [(0x84, hi), (0x88, hi), (0x8c, hi), (0x90, t), (0x94, hi)] {
        if fits(o, 4) {
            inode[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    let Some(seed) = csum_seed else {
        return Ok(());
    };
    let has_hi = fits(0x82, 2);
    inode[0x7c..0x7e].fill(0);
    if has_hi {
        inode[0x82..0x84].fill(0);
    }
    let ino32 = u32::try_from(ino).expect("ext4 inode numbers are 32 bits");
    let mut c = crc32c(seed, &ino32.to_le_bytes());
    c = crc32c(c, &inode[0x64..0x68]);
    c = crc32c(c, inode);
    inode[0x7c..0x7e].copy_from_slice(&(c as u16).to_le_bytes());
    if has_hi {
        inode[0x82..0x84].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_2038_on_use_the_epoch_bits() {
        assert_eq!(encode_time(0), (0, 0));
        assert_eq!(encode_time(1_577_836_800), (1_577_836_800, 0));
        assert_eq!(encode_time((1 << 31) - 1), (0x7fff_ffff, 0));
        assert_eq!(encode_time(1 << 31), (0x8000_0000, 1));
        assert_eq!(encode_time((1 << 32) - 1), (0xffff_ffff, 1));
        assert_eq!(encode_time(1 << 32), (0, 1));
        assert_eq!(encode_time((1 << 32) + (1 << 31)), (0x8000_0000, 2));
        assert_eq!(encode_time(MAX_TIME), (0x7fff_ffff, 2));
        assert_eq!(encode_time((1 << 34) - (1 << 31) - 1), (0x7fff_ffff, 3));
        // Decoded as the kernel does: signed low bits plus epoch << 32.
        for s in [
            0,
            1 << 31,
            4_400_000_000,
            MAX_TIME,
            (1 << 34) - (1 << 31) - 1,
        ] {
            let (lo, hi) = encode_time(s);
            assert_eq!(i64::from(lo as i32) + (i64::from(hi & 3) << 32), s as i64);
        }
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }
}
