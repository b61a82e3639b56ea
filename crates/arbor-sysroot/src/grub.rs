//! A GRUB menu generated from the BLS entries of a `loader.N` directory,
//! for GRUBs that do not read BLS entries themselves (Debian's `grub-pc`).
//!
//! ```text
//! /boot/grub/grub.cfg            static stub (grub_stub): serial console,
//!                                timeout, finds loader/ and sets arbor_boot
//! /boot/loader -> loader.N       swapped atomically by arbor
//! /boot/loader.N/entries/*.conf  the BLS entries (BLS-native loaders read these)
//! /boot/loader.N/grub.cfg        generated here from those entries
//! ```
//!
//! `loader.N/grub.cfg` lives inside the directory that the boot switch
//! swaps, so GRUB always sees the menu of the entries it sits beside: the
//! switch stays one rename. ostree's grub2 backend also writes
//! `boot/loader.N/grub.cfg` (through `grub2-mkconfig` and its
//! `15_ostree` script); its format differs, but a sysroot that ostree
//! later writes gets its own.
//!
//! Paths in the menu are prefixed with the GRUB variable `arbor_boot`,
//! which the stub sets to the empty string when `/boot` is its own
//! partition (GRUB's root is that partition) and to `/boot` when it is a
//! directory of the root filesystem.

use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use fn_error_context::context;

use crate::bls::BootEntry;
use crate::fsutil;
use crate::kargs::Kargs;

/// Name of the generated menu inside `loader.N/`.
pub const GRUB_CFG: &str = "grub.cfg";

/// Name of the file, inside `loader.N/entries/`, that [`write_grub_config`]
/// writes beside the entries it generated the menu from. ostree's writes
/// remove and recreate `entries/` (and leave a `grub.cfg` in place), so a
/// menu whose marker is gone no longer describes its entries: the menu
/// then offers nothing and says so. Not a `.conf` name: no boot loader
/// reads it as an entry.
pub const MENU_STAMP: &str = ".arbor-grub-menu";

/// What the generated menu runs when its [`MENU_STAMP`] is missing.
const STALE_MENU: &str = "else
  echo \"arbor: /boot/loader/grub.cfg is stale: the boot entries beside it were\"
  echo \"rewritten by another tool (e.g. ostree). Boot an entry of\"
  echo \"/boot/loader/entries by hand (linux, initrd, boot), then run\"
  echo \"'arbor admin grub-config' on the machine.\"
fi
";

/// Timeout of the menu when whoever loads it set none (seconds).
const FALLBACK_TIMEOUT: u32 = 5;

/// The static `/boot/grub/grub.cfg` an image writes once: a serial and
/// local console, a 3-second timeout, then the menu of the active
/// `loader/` (arbor's [`GRUB_CFG`]) with `arbor_boot` set to where `/boot`
/// is as GRUB sees it. Never changes with upgrades.
pub fn grub_stub() -> &'static str {
    "\
# Written by arbor when the image was built; it never changes.
# The menu is /boot/loader/grub.cfg, which arbor generates from the
# BLS entries in /boot/loader/entries with every boot-entry switch.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=3
export timeout
if [ -d /loader/entries ]; then
  set arbor_boot=
else
  set arbor_boot=/boot
fi
export arbor_boot
if [ -f ${arbor_boot}/loader/grub.cfg ]; then
  configfile ${arbor_boot}/loader/grub.cfg
else
  echo \"arbor: no boot menu: /boot/loader/grub.cfg is missing (the boot entries\"
  echo \"were written by another tool, e.g. ostree). Boot an entry of\"
  echo \"/boot/loader/entries by hand (linux, initrd, boot), then run\"
  echo \"'arbor admin grub-config' on the machine.\"
fi
"
}

/// Characters that stand for themselves in a GRUB word.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_./,:=+@%".contains(c)
}

/// `s` as one GRUB script word whose value is exactly `s`: as is when
/// every character is plain, else in single quotes (inside which GRUB
/// expands nothing), a `'` written as `'\''`.
pub fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(is_plain) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A kernel argument as GRUB must receive it: GRUB joins its `linux`
/// arguments into the kernel command line, wrapping one that contains a
/// space in double quotes and backslash-escaping `"`, `'` and `\`. The
/// kernel's own double quotes (`key="a b"`) are therefore dropped here
/// and GRUB adds them back (`"key=a b"`, which the kernel reads as the
/// same `key`, value `a b`).
fn grub_karg(arg: &str) -> String {
    quote(&arg.replace('"', ""))
}

/// `${arbor_boot}` followed by `path`.
fn boot_path(path: &str) -> String {
    let q = quote(path);
    format!("${{arbor_boot}}{q}")
}

/// The menu for `entries` (`(file name, entry)`, default first): `set
/// default=0` (or 1, when the boot counting of `probation` falls back,
/// see [`crate::bootcount`]), then one `menuentry` per entry, its id the file name
/// without `.conf`; all of it only while `entries/` holds the
/// [`MENU_STAMP`], else a message.
pub fn generate(entries: &[(String, BootEntry)], probation: Option<&str>) -> Result<String> {
    let mut out = String::from(
        "# Generated by arbor from the BLS entries in entries/ beside this file;\n\
         # rewritten with every new loader directory: do not edit.\n",
    );
    out.push_str(&format!(
        "if [ -f ${{arbor_boot}}/loader/entries/{MENU_STAMP} ]; then\n"
    ));
    out.push_str(&format!(
        "set default=0\nif [ -z \"${{timeout}}\" ]; then\n  set timeout={FALLBACK_TIMEOUT}\nfi\n"
    ));
    // Boot counting (crate::bootcount), for the probation this switch
    // starts only: may pick entry 1 instead.
    if let Some(token) = probation {
        out.push_str(&crate::bootcount::grub_snippet(token));
    }
    for (name, e) in entries {
        let id = name.strip_suffix(".conf").unwrap_or(name);
        let title = e.get("title").unwrap_or("(Untitled)");
        let linux = e
            .get("linux")
            .with_context(|| format!("Entry {name}: no \"linux\" key"))?;
        out.push_str(&format!(
            "\nmenuentry {} --id {} {{\n",
            quote(title),
            quote(id)
        ));
        let mut line = format!("\tlinux {}", boot_path(linux));
        for a in Kargs::parse(e.get("options").unwrap_or_default()).args() {
            line.push(' ');
            line.push_str(&grub_karg(a));
        }
        out.push_str(&line);
        out.push('\n');
        if let Some(i) = e.get("initrd") {
            let mut line = format!("\tinitrd {}", boot_path(i));
            for o in &e.overlay_initrds {
                line.push(' ');
                line.push_str(&boot_path(o));
            }
            out.push_str(&line);
            out.push('\n');
        }
        if let Some(d) = e.get("devicetree") {
            out.push_str(&format!("\tdevicetree {}\n", boot_path(d)));
        }
        out.push_str("}\n");
    }
    out.push_str(STALE_MENU);
    Ok(out)
}

/// Reads the `ostree-*.conf` entries of `loader_dir/entries` (as ostree
/// and [`crate::Sysroot`] read them: regular files, default first) and
/// writes `loader_dir/grub.cfg` from them atomically, then the
/// [`MENU_STAMP`] beside the entries (in that order: a crash between the
/// two leaves a menu that offers nothing, never a stale one). `boot` is
/// the `/boot` directory, `loader_dir` e.g. `loader.1`. Used by the boot
/// switch, by `arbor admin grub-config` (the active `loader.N`, after
/// ostree wrote it) and by image builds of sysroots that ostree deployed.
///
/// `probation`: the token of the boot counting this switch starts
/// ([`crate::bootcount`]), written into the menu and beside it as
/// [`crate::bootcount::PROBATION_FILE`]; `None` (any other write) makes a
/// menu that counts nothing, so an old probation never applies to it.
#[context("Writing {loader_dir}/grub.cfg")]
pub fn write_grub_config(boot: impl AsFd, loader_dir: &str, probation: Option<&str>) -> Result<()> {
    if !(loader_dir == "loader.0" || loader_dir == "loader.1") {
        bail!("Not a loader directory: {loader_dir:?}");
    }
    let dir = fsutil::open_dir(boot.as_fd(), loader_dir)?;
    let entries_dir = fsutil::open_dir_optional(&dir, "entries")?;
    let entries = match &entries_dir {
        Some(e) => crate::bls::read_entries(e)?,
        None => Vec::new(),
    };
    let text = generate(&entries, probation)?;
    match probation {
        Some(t) => {
            arbor_fs::atomic_write(&dir, crate::bootcount::PROBATION_FILE, t.as_bytes(), 0o644)?
        }
        None => match rustix::fs::unlinkat(
            &dir,
            crate::bootcount::PROBATION_FILE,
            rustix::fs::AtFlags::empty(),
        ) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e).context("Removing the probation token"),
        },
    }
    arbor_fs::atomic_write(&dir, GRUB_CFG, text.as_bytes(), 0o644)?;
    if let Some(e) = &entries_dir {
        arbor_fs::atomic_write(
            e,
            MENU_STAMP,
            b"arbor: ../grub.cfg was generated from these entries\n",
            0o644,
        )?;
        arbor_fs::fsync_dir(e)?;
    }
    arbor_fs::fsync_dir(&dir)?;
    Ok(())
}

/// Regenerates the menu of the active `boot/loader -> loader.N` from its
/// entries (`arbor admin grub-config`): after a tool that writes entries
/// only (ostree, `sysroot.bootloader none`) switched the boot
/// configuration of a machine that boots through [`grub_stub`]. Atomic
/// (see [`write_grub_config`]) and durable when it returns; the sysroot
/// lock keeps arbor's own writers out meanwhile. Returns `loader.N`.
#[context("Regenerating boot/loader/grub.cfg")]
pub fn regenerate(s: &crate::sysroot::SysrootLock<'_>) -> Result<String> {
    let boot = fsutil::open_dir(&s.fd, "boot")?;
    let target = rustix::fs::readlinkat(&boot, "loader", Vec::new())
        .context("Reading the boot/loader symlink")?;
    let target = target.to_string_lossy().into_owned();
    write_grub_config(&boot, &target, None)?;
    rustix::fs::syncfs(&boot).context("Syncing /boot")?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits one line of GRUB script into words, as GRUB's lexer does
    /// for the forms [`generate`] emits: single quotes (literal), double
    /// quotes and bare text (`\` escapes, `$var`/`${var}` expanded from
    /// `vars`). Panics on an unterminated quote.
    fn grub_words(line: &str, vars: &[(&str, &str)]) -> Vec<String> {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut started = false;
        let mut it = line.chars().peekable();
        let var = |it: &mut std::iter::Peekable<std::str::Chars>| {
            let mut name = String::new();
            if it.peek() == Some(&'{') {
                it.next();
                for c in it.by_ref() {
                    if c == '}' {
                        break;
                    }
                    name.push(c);
                }
            } else {
                while let Some(&c) = it.peek() {
                    if !(c.is_ascii_alphanumeric() || c == '_') {
                        break;
                    }
                    name.push(c);
                    it.next();
                }
            }
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        };
        while let Some(c) = it.next() {
            match c {
                ' ' | '\t' => {
                    if started {
                        words.push(std::mem::take(&mut cur));
                        started = false;
                    }
                }
                '\'' => {
                    started = true;
                    loop {
                        match it.next().expect("unterminated '") {
                            '\'' => break,
                            c => cur.push(c),
                        }
                    }
                }
                '"' => {
                    started = true;
                    loop {
                        match it.next().expect("unterminated \"") {
                            '"' => break,
                            '\\' => cur.push(it.next().unwrap()),
                            '$' => cur.push_str(&var(&mut it)),
                            c => cur.push(c),
                        }
                    }
                }
                '\\' => {
                    started = true;
                    cur.push(it.next().unwrap());
                }
                '$' => {
                    started = true;
                    cur.push_str(&var(&mut it));
                }
                ';' | '|' | '&' | '<' | '>' => panic!("unquoted {c} in {line}"),
                c => {
                    started = true;
                    cur.push(c);
                }
            }
        }
        if started {
            words.push(cur);
        }
        words
    }

    fn entry(title: &str, options: &str, linux: &str) -> BootEntry {
        let mut e = BootEntry::default();
        e.set("title", title);
        e.set("version", "1");
        e.set("options", options);
        e.set("linux", linux);
        e.set("initrd", "/ostree/os-b/initramfs-6.1.img");
        e
    }

    /// `grub-script-check` (Debian's grub2-common) accepts `text`.
    fn grub_script_check(text: &str) {
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(t.path(), text).unwrap();
        match std::process::Command::new("grub-script-check")
            .arg(t.path())
            .output()
        {
            Ok(o) => assert!(
                o.status.success(),
                "grub-script-check refused:\n{text}\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("grub-script-check not installed (grub2-common): syntax not checked")
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn one_and_two_entries_golden() {
        let a = entry(
            "Debian GNU/Linux 12 (bookworm) (ostree:0)",
            "root=UUID=1234 rw console=ttyS0,115200n8 ostree=/ostree/boot.1/os/b/0",
            "/ostree/os-b/vmlinuz-6.1",
        );
        let one = generate(&[("ostree-1-os.conf".into(), a.clone())], Some("T")).unwrap();
        assert_eq!(
            one,
            "# Generated by arbor from the BLS entries in entries/ beside this file;\n\
             # rewritten with every new loader directory: do not edit.\n\
             if [ -f ${arbor_boot}/loader/entries/.arbor-grub-menu ]; then\n\
             set default=0\n\
             if [ -z \"${timeout}\" ]; then\n  set timeout=5\nfi\n"
                .to_string()
                + &crate::bootcount::grub_snippet("T")
                + "\n\
             menuentry 'Debian GNU/Linux 12 (bookworm) (ostree:0)' --id ostree-1-os {\n\
             \tlinux ${arbor_boot}/ostree/os-b/vmlinuz-6.1 root=UUID=1234 rw console=ttyS0,115200n8 ostree=/ostree/boot.1/os/b/0\n\
             \tinitrd ${arbor_boot}/ostree/os-b/initramfs-6.1.img\n\
             }\n\
             else\n  \
             echo \"arbor: /boot/loader/grub.cfg is stale: the boot entries beside it were\"\n  \
             echo \"rewritten by another tool (e.g. ostree). Boot an entry of\"\n  \
             echo \"/boot/loader/entries by hand (linux, initrd, boot), then run\"\n  \
             echo \"'arbor admin grub-config' on the machine.\"\n\
             fi\n"
        );
        grub_script_check(&one);
        let one = one.strip_suffix(STALE_MENU).unwrap();
        let mut b = entry(
            "Debian GNU/Linux 12 (bookworm) (ostree:1)",
            "root=UUID=1234 ostree=/ostree/boot.1/os/c/0",
            "/ostree/os-c/vmlinuz-6.1",
        );
        b.set("devicetree", "/ostree/os-c/devicetree-6.1");
        b.overlay_initrds
            .push("/ostree/initramfs-overlays/x.img".into());
        let two = generate(
            &[
                ("ostree-2-os.conf".into(), a),
                ("ostree-1-os.conf".into(), b),
            ],
            Some("T"),
        )
        .unwrap();
        assert!(two.starts_with(&one.replace("ostree-1-os", "ostree-2-os")));
        grub_script_check(&two);
        let two = two.strip_suffix(STALE_MENU).unwrap().to_string() + "else\n";
        assert!(two.ends_with(
            "\nmenuentry 'Debian GNU/Linux 12 (bookworm) (ostree:1)' --id ostree-1-os {\n\
             \tlinux ${arbor_boot}/ostree/os-c/vmlinuz-6.1 root=UUID=1234 ostree=/ostree/boot.1/os/c/0\n\
             \tinitrd ${arbor_boot}/ostree/os-b/initramfs-6.1.img ${arbor_boot}/ostree/initramfs-overlays/x.img\n\
             \tdevicetree ${arbor_boot}/ostree/os-c/devicetree-6.1\n\
             }\n\
             else\n"
        ));
        // Parsed back: the entries in order, each line's words as meant,
        // with /boot's prefix applied.
        let ids: Vec<Vec<String>> = two
            .lines()
            .filter(|l| l.starts_with("menuentry "))
            .map(|l| grub_words(l, &[]))
            .collect();
        assert_eq!(ids[0][1], "Debian GNU/Linux 12 (bookworm) (ostree:0)");
        assert_eq!(ids[0][2..4], ["--id", "ostree-2-os"]);
        assert_eq!(ids[1][3], "ostree-1-os");
        let linux: Vec<Vec<String>> = two
            .lines()
            .filter(|l| l.trim_start().starts_with("linux "))
            .map(|l| grub_words(l, &[("arbor_boot", "/boot")]))
            .collect();
        assert_eq!(
            linux[1],
            [
                "linux",
                "/boot/ostree/os-c/vmlinuz-6.1",
                "root=UUID=1234",
                "ostree=/ostree/boot.1/os/c/0"
            ]
        );
    }

    #[test]
    fn hostile_titles_and_options_are_quoted() {
        let title = "it's $HOME; echo pwned } {";
        let opts = r#"a=$x;reboot b='q' c="two words" d=\e ${arbor_boot} # e|f&g"#;
        let linux = "/ostree/os b/vmlinuz-'6'";
        let text = generate(
            &[("ostree-1-os'x.conf".into(), entry(title, opts, linux))],
            None,
        )
        .unwrap();
        grub_script_check(&text);
        let lines: Vec<&str> = text.lines().collect();
        let menu = lines.iter().find(|l| l.starts_with("menuentry")).unwrap();
        assert!(menu.ends_with(" {"), "{menu}");
        let w = grub_words(menu.trim_end_matches(" {"), &[("HOME", "/root")]);
        assert_eq!(w, ["menuentry", title, "--id", "ostree-1-os'x"]);
        let l = lines.iter().find(|l| l.contains("linux")).unwrap();
        let w = grub_words(l, &[("arbor_boot", ""), ("x", "EXPANDED")]);
        assert_eq!(
            w,
            [
                "linux",
                "/ostree/os b/vmlinuz-'6'",
                "a=$x;reboot",
                "b='q'",
                "c=two words",
                r"d=\e",
                "${arbor_boot}",
                "#",
                "e|f&g"
            ]
        );
        // Nothing else escaped the entry: one menuentry, one closing brace.
        assert_eq!(lines.iter().filter(|l| **l == "}").count(), 1);
    }

    #[test]
    fn missing_linux_is_refused_and_title_defaults() {
        let mut e = BootEntry::default();
        e.set("options", "x");
        assert!(generate(&[("ostree-1-os.conf".into(), e.clone())], None).is_err());
        e.set("linux", "/k");
        let t = generate(&[("ostree-1-os.conf".into(), e)], None).unwrap();
        assert!(
            t.contains("menuentry '(Untitled)' --id ostree-1-os {\n\tlinux ${arbor_boot}/k x\n}\n")
        );
    }

    #[test]
    fn stub_is_valid_grub_script() {
        grub_script_check(grub_stub());
        assert!(grub_stub().contains(
            "if [ -f ${arbor_boot}/loader/grub.cfg ]; then\n  \
             configfile ${arbor_boot}/loader/grub.cfg\nelse\n  \
             echo \"arbor: no boot menu"
        ));
    }

    #[test]
    fn writes_only_inside_the_loader_directory() {
        let t = tempfile::tempdir().unwrap();
        let boot = t.path();
        std::fs::create_dir_all(boot.join("loader.1/entries")).unwrap();
        let e = entry("T", "ostree=/ostree/boot.1/os/b/0", "/k");
        for (n, v) in [("ostree-2-os.conf", "2"), ("ostree-10-os.conf", "10")] {
            let mut e = e.clone();
            e.set("version", v);
            std::fs::write(boot.join("loader.1/entries").join(n), e.to_text()).unwrap();
        }
        // Not ours to list: other names and non-regular files.
        std::fs::write(boot.join("loader.1/entries/other.conf"), e.to_text()).unwrap();
        std::fs::create_dir(boot.join("loader.1/entries/ostree-9-x.conf")).unwrap();
        let fd = fsutil::open_dir(rustix::fs::CWD, &boot.to_string_lossy()).unwrap();
        write_grub_config(&fd, "loader.1", None).unwrap();
        let cfg = std::fs::read_to_string(boot.join("loader.1/grub.cfg")).unwrap();
        let ids: Vec<&str> = cfg
            .lines()
            .filter_map(|l| l.strip_prefix("menuentry T --id "))
            .collect();
        assert_eq!(ids, ["ostree-10-os {", "ostree-2-os {"]);
        let mut names: Vec<String> = std::fs::read_dir(boot.join("loader.1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["entries", "grub.cfg"]);
        // The stamp that keeps the menu on: beside the entries, not an
        // entry (read_entries skips it).
        assert!(boot.join("loader.1/entries").join(MENU_STAMP).is_file());
        let entries = fsutil::open_dir(&fd, "loader.1/entries").unwrap();
        assert_eq!(crate::bls::read_entries(&entries).unwrap().len(), 2);
        for bad in ["loader", "../x", "loader.2", "grub"] {
            assert!(write_grub_config(&fd, bad, None).is_err(), "{bad}");
        }
        // A loader directory without entries: an empty menu.
        std::fs::create_dir(boot.join("loader.0")).unwrap();
        write_grub_config(&fd, "loader.0", None).unwrap();
        assert!(!std::fs::read_to_string(boot.join("loader.0/grub.cfg"))
            .unwrap()
            .contains("menuentry"));
    }
}
