//! Assembling `disk.raw`: the GPT of the layout (BIOS boot, boot, root),
//! GRUB's boot code and core.img, and the two filesystem images copied in
//! without their holes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};
use fn_error_context::context;
use rustix::fs::SeekFrom;

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

/// Copies `src` into `out` at byte `offset`, data extents only (holes stay
/// holes: a mostly empty filesystem image costs only its data).
#[context("Copying {} into the disk image", src.display())]
pub fn copy_sparse(src: &Path, out: &File, offset: u64) -> Result<()> {
    let f = File::open(src)?;
    let len = f.metadata()?.len();
    let mut pos = 0u64;
    while pos < len {
        let data = match rustix::fs::seek(&f, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e).context("Seeking to data"),
        };
        let hole = rustix::fs::seek(&f, SeekFrom::Hole(data)).context("Seeking to a hole")?;
        let (mut from, mut to) = (data, offset + data);
        while from < hole {
            let want = usize::try_from(hole - from)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            let n = rustix::fs::copy_file_range(&f, Some(&mut from), out, Some(&mut to), want)
                .context("copy_file_range")?;
            anyhow::ensure!(n > 0, "Short copy from {}", src.display());
        }
        pos = hole;
    }
    Ok(())
}

/// Writes `disk.raw` at `out`: the table, the MBR with GRUB's boot code,
/// core.img in the BIOS boot partition, and the two filesystems.
#[context("Assembling {}", out.display())]
pub fn assemble(
    gpt: &Gpt,
    boot_img: &[u8],
    core_img: &[u8],
    boot_fs: &Path,
    root_fs: &Path,
    out: &Path,
) -> Result<()> {
    let f = File::create(out)?;
    f.set_len(gpt.disk_sectors * SECTOR)?;
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
    copy_sparse(boot_fs, &f, gpt.partitions[1].first_lba * SECTOR)?;
    copy_sparse(root_fs, &f, gpt.partitions[2].first_lba * SECTOR)?;
    f.sync_all().context("Syncing")?;
    Ok(())
}
