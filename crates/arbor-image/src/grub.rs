//! BIOS GRUB without `grub-install` and without loop devices: `core.img`
//! from `grub-mkimage`, GRUB's `boot.img` in the MBR's boot code area, and
//! `core.img` embedded in the BIOS boot partition with its first blocklist
//! pointing at the sectors after its first one, as `grub-setup` does when
//! it embeds (GRUB's `util/setup.c`, `grub-core/boot/i386/pc/boot.S` and
//! `diskboot.S`, `include/grub/i386/pc/boot.h`).
//!
//! Also the GRUB configuration: arbor-sysroot's static stub on the boot
//! partition, and `loader.N/grub.cfg` for sysroots whose deploy did not
//! write one (ostree's: [`write_loader_config`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use fn_error_context::context;

use crate::gpt::SECTOR;
use crate::tools;

/// Where GRUB's `i386-pc` platform files live in an OS tree and on the host.
pub const I386_PC: &str = "usr/lib/grub/i386-pc";
/// GRUB's prefix: the `grub` directory of partition 2 (the boot
/// partition) of the drive the BIOS booted from (no drive named: GRUB
/// fills in the boot drive, so the disk need not be the first one).
pub const PREFIX: &str = "(,gpt2)/grub";
/// The modules built into `core.img`: enough to read GPT and ext4, load
/// the stub and the generated configuration, and boot Linux.
pub const CORE_MODULES: &[&str] = &[
    "biosdisk",
    "part_gpt",
    "ext2",
    "normal",
    "configfile",
    "linux",
    "echo",
    "test",
    "serial",
    "terminal",
    "search",
    "search_fs_uuid",
    "search_label",
    "boot",
];

/// `boot.img`: the kernel sector field (u64 LE, first sector of core.img).
const KERNEL_SECTOR: usize = 0x5c;
/// `boot.img`: the boot drive (0xff: the drive the BIOS booted from).
const BOOT_DRIVE: usize = 0x64;
/// `boot.img`: the jump over the boot-drive check, NOP'd for hard disks.
const DRIVE_CHECK: usize = 0x66;
/// The MBR's disk signature: from here on the existing MBR is kept.
const WINDOWS_NT_MAGIC: usize = 0x1b8;
/// A blocklist entry of diskboot.img: start (u64), len (u16), segment (u16).
const LIST_SIZE: usize = 12;
/// Segment the first blocklist loads to (`GRUB_BOOT_MACHINE_KERNEL_SEG + 0x20`).
const FIRST_SEGMENT: u16 = 0x820;

/// Sectors of `core.img` that the BIOS boot code can load: from GRUB's
/// link address 0x9000 up to 0x78000 (`util/setup.c` caps the embedding
/// area there).
pub const MAX_CORE_SECTORS: u64 = (0x78000 - 0x9000) / SECTOR;

/// The directory of GRUB's i386-pc files: the OS tree's when it ships them
/// (so the boot code matches the tree's GRUB), else the host's. The
/// tree's counts only as real directories and files: a symbolic link
/// anywhere on the way is a link on the build host, and the commit must
/// not make the build read the host's files.
pub fn platform_dir(tree: &Path) -> PathBuf {
    let real = |p: &Path, dir: bool| {
        std::fs::symlink_metadata(p).is_ok_and(|m| if dir { m.is_dir() } else { m.is_file() })
    };
    let mut own = tree.to_path_buf();
    let mut ok = true;
    for c in Path::new(I386_PC).components() {
        own.push(c);
        ok = ok && real(&own, true);
    }
    if ok && real(&own.join("boot.img"), false) && real(&own.join("moddep.lst"), false) {
        own
    } else {
        Path::new("/").join(I386_PC)
    }
}

/// Copies the regular files of GRUB's platform directory `from` (see
/// [`platform_dir`]) to the new directory `to`, leaving out symbolic
/// links and anything else: `grub-mkimage` then reads only those.
#[context("Copying GRUB's files from {}", from.display())]
pub fn copy_platform(from: &Path, to: &Path) -> Result<()> {
    ensure!(
        from.join("moddep.lst").is_file(),
        "GRUB's i386-pc modules are missing ({}): install the Debian package grub-pc-bin",
        from.display()
    );
    std::fs::create_dir(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))
                .with_context(|| format!("Copying {:?}", e.file_name()))?;
        }
    }
    Ok(())
}

/// Builds `core.img` at `out` from the modules in `dir`.
#[context("Making GRUB's core.img")]
pub fn make_core(dir: &Path, out: &Path) -> Result<()> {
    ensure!(
        dir.join("moddep.lst").is_file(),
        "GRUB's i386-pc modules are missing ({}): install the Debian package grub-pc-bin",
        dir.display()
    );
    let mut cmd = tools::command("grub-mkimage");
    cmd.args(["-O", "i386-pc", "-p", PREFIX, "-d"])
        .arg(dir)
        .arg("-o")
        .arg(out)
        .args(CORE_MODULES);
    tools::run("grub-mkimage", &mut cmd)?;
    Ok(())
}

/// The MBR sector and the patched `core.img` for a BIOS boot partition at
/// `first_lba` of `sectors` sectors: `boot_img`'s code over `mbr` (whose
/// disk signature and partition table are kept), `core`'s first blocklist
/// set to the sectors after its first.
pub fn embed(
    mbr: &[u8; 512],
    boot_img: &[u8],
    core: &[u8],
    first_lba: u64,
    sectors: u64,
) -> Result<([u8; 512], Vec<u8>)> {
    ensure!(
        boot_img.len() == 512,
        "GRUB's boot.img is {} bytes, not 512",
        boot_img.len()
    );
    let nsec = (core.len() as u64).div_ceil(SECTOR);
    ensure!(
        nsec >= 2 && nsec <= sectors,
        "GRUB's core.img ({} bytes) does not fit the BIOS boot partition ({} bytes)",
        core.len(),
        sectors * SECTOR
    );
    ensure!(
        nsec <= MAX_CORE_SECTORS,
        "GRUB's core.img ({} bytes) is larger than the boot code can load ({} bytes)",
        core.len(),
        MAX_CORE_SECTORS * SECTOR
    );
    let mut m = *mbr;
    m[..WINDOWS_NT_MAGIC].copy_from_slice(&boot_img[..WINDOWS_NT_MAGIC]);
    // grub-setup keeps the existing BIOS parameter block (ours: zeros).
    m[0x3..0x5a].copy_from_slice(&mbr[0x3..0x5a]);
    m[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&first_lba.to_le_bytes());
    m[BOOT_DRIVE] = 0xff;
    m[DRIVE_CHECK] = 0x90;
    m[DRIVE_CHECK + 1] = 0x90;

    let mut c = core.to_vec();
    c.resize((nsec * SECTOR) as usize, 0);
    let first = 512 - LIST_SIZE;
    let seg = u16::from_le_bytes([c[first + 10], c[first + 11]]);
    if seg != FIRST_SEGMENT {
        bail!("GRUB's core.img has an unexpected first blocklist (segment {seg:#x}): not an i386-pc core.img?");
    }
    // Clear every blocklist (from the first, downwards, up to the
    // terminator), then write the one run of sectors and its terminator.
    let mut at = first;
    while at >= LIST_SIZE && c[at + 8..at + 10] != [0, 0] {
        c[at..at + LIST_SIZE].fill(0);
        at -= LIST_SIZE;
    }
    c[first..first + 8].copy_from_slice(&(first_lba + 1).to_le_bytes());
    c[first + 8..first + 10].copy_from_slice(&u16::try_from(nsec - 1)?.to_le_bytes());
    c[first + 10..first + 12].copy_from_slice(&FIRST_SEGMENT.to_le_bytes());
    c[first - LIST_SIZE..first].fill(0);
    Ok((m, c))
}

/// The static `/grub/grub.cfg` of the boot partition (arbor-sysroot's
/// stub: serial console, then `loader/grub.cfg`).
pub fn stub() -> &'static str {
    arbor_sysroot::grub::grub_stub()
}

/// Writes `boot/loader.N/grub.cfg` (the directory `loader` points to)
/// from its entries, with arbor-sysroot's generator, unless arbor wrote
/// it for these entries (arbor's deploy writes it with its marker
/// `entries/.arbor-grub-menu`; ostree's writes neither, and may leave an
/// older menu whose marker is gone).
#[context("Writing the GRUB configuration of {}", boot.display())]
pub fn write_loader_config(boot: &Path) -> Result<()> {
    let target = std::fs::read_link(boot.join("loader")).context("Reading the loader symlink")?;
    let Some(name) = target.to_str().filter(|n| !n.contains('/')) else {
        bail!("Unexpected loader symlink target {}", target.display());
    };
    // Written into below: a symbolic link would lead out of the tree.
    ensure!(
        std::fs::symlink_metadata(boot.join(name)).is_ok_and(|m| m.is_dir()),
        "boot/{name} is not a directory"
    );
    let current = boot.join(name).join(arbor_sysroot::grub::GRUB_CFG).exists()
        && boot
            .join(name)
            .join("entries")
            .join(arbor_sysroot::grub::MENU_STAMP)
            .exists();
    if current {
        return Ok(());
    }
    let dir = std::fs::File::open(boot).context("Opening the boot directory")?;
    arbor_sysroot::grub::write_grub_config(&dir, name, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_patches_the_boot_sector_and_the_first_blocklist() {
        let mut mbr = [0u8; 512];
        mbr[0x1be] = 0x11;
        mbr[510] = 0x55;
        let boot = [0xabu8; 512];
        let mut core = vec![0u8; 3 * 512 + 7];
        // diskboot's default first list: start 2, len 4, segment 0x820.
        core[500..508].copy_from_slice(&2u64.to_le_bytes());
        core[508..510].copy_from_slice(&4u16.to_le_bytes());
        core[510..512].copy_from_slice(&0x820u16.to_le_bytes());
        let (m, c) = embed(&mbr, &boot, &core, 2048, 2048).unwrap();
        assert_eq!(m[..3], [0xab; 3]);
        assert_eq!(m[3..0x5a], [0; 0x57]);
        assert_eq!(m[0x5c..0x64], 2048u64.to_le_bytes());
        assert_eq!(m[0x64], 0xff);
        assert_eq!(m[0x66..0x68], [0x90, 0x90]);
        assert_eq!(m[0x1be], 0x11);
        assert_eq!(m[510], 0x55);
        assert_eq!(c.len(), 4 * 512);
        assert_eq!(c[500..508], 2049u64.to_le_bytes());
        assert_eq!(c[508..510], 3u16.to_le_bytes());
        assert_eq!(c[488..500], [0; 12]);
        assert!(embed(&mbr, &boot, &core, 2048, 3).is_err());
        // 888 sectors load; 889 would overrun the real-mode area.
        assert_eq!(MAX_CORE_SECTORS, 888);
        core.resize(888 * 512, 0);
        assert!(embed(&mbr, &boot, &core, 2048, 2048).is_ok());
        core.resize(888 * 512 + 1, 0);
        let e = embed(&mbr, &boot, &core, 2048, 2048).unwrap_err();
        assert!(
            e.to_string().contains("larger than the boot code can load"),
            "{e}"
        );
        assert!(embed(&mbr, &boot[..100], &core, 2048, 2048).is_err());
    }
}
