//! BIOS GRUB without `grub-install` and without loop devices: `core.img`
//! from `grub-mkimage`, GRUB's `boot.img` in the MBR's boot code area, and
//! `core.img` embedded in the BIOS boot partition with its first blocklist
//! pointing at the sectors after its first one, as `grub-setup` does when
//! it embeds (GRUB's `util/setup.c`, `grub-core/boot/i386/pc/boot.S` and
//! `diskboot.S`, `include/grub/i386/pc/boot.h`).
//!
//! Also the GRUB configuration: the static stub on the boot partition and,
//! until arbor-sysroot writes it on every boot switch, `loader.N/grub.cfg`
//! generated from the BLS entries ([`write_loader_config`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use fn_error_context::context;

use crate::gpt::SECTOR;
use crate::tools;

/// Where GRUB's `i386-pc` platform files live in an OS tree and on the host.
pub const I386_PC: &str = "usr/lib/grub/i386-pc";
/// GRUB's prefix: the `grub` directory of partition 2 (the boot partition).
pub const PREFIX: &str = "(hd0,gpt2)/grub";
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

/// The directory of GRUB's i386-pc files: the OS tree's when it ships them
/// (so the boot code matches the tree's GRUB), else the host's.
pub fn platform_dir(tree: &Path) -> PathBuf {
    let own = tree.join(I386_PC);
    if own.join("boot.img").is_file() && own.join("moddep.lst").is_file() {
        own
    } else {
        Path::new("/").join(I386_PC)
    }
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

/// The static `/grub/grub.cfg` of the boot partition: serial and VGA
/// console, then the configuration arbor keeps in `loader/` (the symlink
/// to the current `loader.N`). `arbor_boot` is the prefix of boot file
/// paths: empty when `/boot` is its own partition (this image), `/boot`
/// when the loader directory is found under `/boot`.
pub fn stub() -> &'static str {
    "# Written by arbor image build: reads arbor's loader/grub.cfg.\n\
     set timeout=3\n\
     export timeout\n\
     serial --unit=0 --speed=115200\n\
     terminal_input serial console\n\
     terminal_output serial console\n\
     if [ -f /loader/grub.cfg ]; then\n\
     \x20 set arbor_boot=\n\
     \x20 export arbor_boot\n\
     \x20 configfile /loader/grub.cfg\n\
     else\n\
     \x20 set arbor_boot=/boot\n\
     \x20 export arbor_boot\n\
     \x20 configfile /boot/loader/grub.cfg\n\
     fi\n"
}

/// Quotes `s` for GRUB's shell-like syntax when it needs it.
fn quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "=,./:_+-@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The GRUB menu for BLS entries (file stem, text), the default first.
pub fn loader_config(entries: &[(String, arbor_sysroot::bls::BootEntry)]) -> String {
    let mut out = String::from("# Generated by arbor from loader/entries.\nset default=0\n");
    for (stem, e) in entries {
        let title = e.get("title").unwrap_or(stem);
        out.push_str(&format!(
            "menuentry {} --id {} {{\n",
            quote(title),
            quote(stem)
        ));
        if let Some(l) = e.get("linux") {
            let opts: Vec<String> = e
                .get("options")
                .unwrap_or_default()
                .split_whitespace()
                .map(quote)
                .collect();
            out.push_str(&format!(
                "  linux ${{arbor_boot}}{} {}\n",
                quote(l),
                opts.join(" ")
            ));
        }
        if let Some(i) = e.get("initrd") {
            out.push_str(&format!("  initrd ${{arbor_boot}}{}\n", quote(i)));
        }
        if let Some(d) = e.get("devicetree") {
            out.push_str(&format!("  devicetree ${{arbor_boot}}{}\n", quote(d)));
        }
        out.push_str("}\n");
    }
    out
}

/// Writes `boot/loader.N/grub.cfg` (the directory `loader` points to)
/// from its entries unless it exists. Entries are ordered as ostree
/// orders them, the highest `version` (the default) first.
#[context("Writing the GRUB configuration of {}", boot.display())]
pub fn write_loader_config(boot: &Path) -> Result<()> {
    let target = std::fs::read_link(boot.join("loader")).context("Reading the loader symlink")?;
    let dir = boot.join(target);
    if dir.join("grub.cfg").exists() {
        return Ok(());
    }
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir.join("entries")).context("Reading the boot entries")? {
        let p = e?.path();
        let Some(stem) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".conf"))
        else {
            continue;
        };
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("Reading {}", p.display()))?;
        entries.push((
            stem.to_string(),
            arbor_sysroot::bls::BootEntry::parse(&text)?,
        ));
    }
    ensure!(!entries.is_empty(), "No boot entries in {}", dir.display());
    entries.sort_by(|(a, x), (b, y)| {
        arbor_sysroot::bls::vercmp(
            y.get("version").unwrap_or(""),
            x.get("version").unwrap_or(""),
        )
        .then_with(|| a.cmp(b))
    });
    std::fs::write(dir.join("grub.cfg"), loader_config(&entries)).context("Writing grub.cfg")
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
        assert!(embed(&mbr, &boot[..100], &core, 2048, 2048).is_err());
    }

    #[test]
    fn menu_quotes_what_grub_would_split() {
        let e = arbor_sysroot::bls::BootEntry::parse(
            "title It's $HOME\nversion 1\nlinux /ostree/a/vmlinuz\ninitrd /ostree/a/initramfs.img\noptions root=UUID=x rw a=b;c ostree=/ostree/boot.1/d/e/0\n",
        )
        .unwrap();
        let t = loader_config(&[("ostree-1-d".into(), e)]);
        assert!(
            t.contains("menuentry 'It'\\''s $HOME' --id ostree-1-d {"),
            "{t}"
        );
        assert!(t.contains("  linux ${arbor_boot}/ostree/a/vmlinuz root=UUID=x rw 'a=b;c' ostree=/ostree/boot.1/d/e/0\n"), "{t}");
        assert!(
            t.contains("  initrd ${arbor_boot}/ostree/a/initramfs.img\n"),
            "{t}"
        );
    }
}
