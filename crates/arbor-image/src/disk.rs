//! Assembling `disk.raw`: the GPT of the layout (BIOS boot, boot, root),
//! GRUB's boot code and core.img; the two filesystems are made in place
//! at their partitions' offsets.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::Result;
use fn_error_context::context;

use crate::gpt::{Gpt, Partition, SECTOR};
use crate::uuid::{derived_uuid, parse_uuid};

/// The BIOS boot partition's type GUID.
pub const BIOS_BOOT_TYPE: &str = "21686148-6449-6e6f-744e-656564454649";
/// Linux filesystem data.
pub const LINUX_FS_TYPE: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
/// The x86-64 root partition (Discoverable Partitions Specification).
pub const ROOT_X86_64_TYPE: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
/// 1 MiB in sectors: the alignment, and the BIOS boot partition's size.
const MIB_SECTORS: u64 = 1024 * 1024 / SECTOR;

/// The partition table for a boot filesystem of `boot` bytes and a root
/// one of `root` bytes (both multiples of 1 MiB), for `commit`.
pub fn layout(commit: &str, boot: u64, root: u64) -> Gpt {
    let ty = |s: &str| parse_uuid(s).expect("a valid constant GUID");
    let (boot_s, root_s) = (boot / SECTOR, root / SECTOR);
    let p = |type_guid, label, first_lba, sectors| Partition {
        type_guid,
        guid: derived_uuid(label, commit),
        first_lba,
        sectors,
        name: label.to_string(),
    };
    let partitions = vec![
        p(ty(BIOS_BOOT_TYPE), "bios", MIB_SECTORS, MIB_SECTORS),
        p(ty(LINUX_FS_TYPE), "boot", 2 * MIB_SECTORS, boot_s),
        p(
            ty(ROOT_X86_64_TYPE),
            "root",
            2 * MIB_SECTORS + boot_s,
            root_s,
        ),
    ];
    Gpt {
        disk_guid: derived_uuid("disk", commit),
        // A 1 MiB tail holds the backup table.
        disk_sectors: 3 * MIB_SECTORS + boot_s + root_s,
        partitions,
    }
}

/// Creates `out`: a sparse file of the disk's size, into whose
/// partitions the filesystems are then made in place ([`crate::ext4::mkfs`]
/// at each partition's offset).
#[context("Creating {}", out.display())]
pub fn create(gpt: &Gpt, out: &Path) -> Result<()> {
    let f = File::create(out)?;
    f.set_len(gpt.disk_sectors * SECTOR)?;
    Ok(())
}

/// The byte offset of partition `i` (0: bios, 1: boot, 2: root).
pub fn offset(gpt: &Gpt, i: usize) -> u64 {
    gpt.partitions[i].first_lba * SECTOR
}

/// Writes the table, the MBR with GRUB's boot code and core.img in the
/// BIOS boot partition into the disk `out` made by [`create`] (after its
/// filesystems: nothing else is written). Not synced: the caller syncs
/// the file it publishes.
#[context("Writing the partition table and GRUB into {}", out.display())]
pub fn finish(gpt: &Gpt, boot_img: &[u8], core_img: &[u8], out: &Path) -> Result<()> {
    let f = File::options().write(true).open(out)?;
    anyhow::ensure!(
        f.metadata()?.len() == gpt.disk_sectors * SECTOR,
        "{} is not the disk's size",
        out.display()
    );
    for c in gpt.chunks() {
        f.write_all_at(&c.data, c.offset)?;
    }
    let bios = &gpt.partitions[0];
    let (mbr, core) = crate::grub::embed(
        &gpt.protective_mbr(),
        boot_img,
        core_img,
        bios.first_lba,
        bios.sectors,
    )?;
    f.write_all_at(&mbr, 0)?;
    f.write_all_at(&core, bios.first_lba * SECTOR)?;
    Ok(())
}
