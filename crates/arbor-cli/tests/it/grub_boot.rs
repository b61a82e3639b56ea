//! Debian's BIOS GRUB reads arbor's boot configuration for real: QEMU
//! (software emulation) starts GRUB (`lnxboot.img` + a `core.img` made
//! with `grub-mkimage`, given as QEMU's `-kernel`) on a disk holding a
//! sysroot's `/boot` and the stub `grub/grub.cfg`; GRUB must load the
//! generated `loader/grub.cfg` and boot its default entry. With a real
//! kernel (`ARBOR_TEST_KERNEL`, or the one in the OS-tree cache of
//! `dist/os/mkdebian.sh`), the kernel's own `Command line:` must be the
//! entry's; without one (or with `ARBOR_TEST_KERNEL=` empty), GRUB must
//! have opened the entry's kernel file (a fake one, so it reports it too
//! short).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sysroot::needs_root;
use crate::sysroot_ops::{machine, sys_arbor};
use crate::util::{run_ok, s};

const GRUB_DIR: &str = "/usr/lib/grub/i386-pc";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A real x86-64 kernel image to boot, if this machine has one
/// (`ARBOR_TEST_KERNEL=` set empty: none).
fn real_kernel() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("ARBOR_TEST_KERNEL") {
        return (!k.is_empty()).then(|| k.into());
    }
    let mut found = Vec::new();
    for pattern in [
        "/var/cache/arbor-os/*/tree/boot/vmlinuz-*",
        "/boot/vmlinuz-*",
    ] {
        let out = Command::new("sh")
            .args(["-c", &format!("ls -1 {pattern} 2>/dev/null")])
            .output()
            .unwrap();
        found.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(PathBuf::from),
        );
    }
    found.into_iter().find(|p| p.is_file())
}

/// GRUB as a Linux-boot-protocol image whose prefix is `prefix`.
pub(crate) fn grub_image(dir: &Path, prefix: &str, extra: &[&str]) -> PathBuf {
    let core = dir.join("core.img");
    run_ok(
        Command::new("grub-mkimage")
            .args(["-O", "i386-pc", "-d", GRUB_DIR, "-p", prefix, "-o"])
            .arg(&core)
            .args([
                "biosdisk",
                "ext2",
                "normal",
                "configfile",
                "linux",
                "echo",
                "test",
                "serial",
                "terminal",
            ])
            .args(extra),
    );
    let mut img = std::fs::read(Path::new(GRUB_DIR).join("lnxboot.img")).unwrap();
    img.extend(std::fs::read(&core).unwrap());
    let out = dir.join("grub.lnx");
    std::fs::write(&out, img).unwrap();
    out
}

/// An unpartitioned ext4 disk with `content` (GRUB's `(hd0)`).
pub(crate) fn disk(dir: &Path, content: &Path) -> PathBuf {
    let out = dir.join("disk.img");
    run_ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "boot", "-d"])
            .arg(content)
            .arg(&out)
            .arg("128M"),
    );
    out
}

/// Removes terminal escape sequences and carriage returns.
fn plain(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\x1b' => {
                if it.peek() == Some(&'[') {
                    it.next();
                    for c in it.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Boots GRUB on `disk` in QEMU until `done` holds for the serial output
/// (or the timeout); returns that output.
pub(crate) fn run_qemu(lnx: &Path, disk: &Path, done: impl Fn(&str) -> bool) -> String {
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel", "tcg", "-m", "512", "-display", "none", "-monitor", "none",
        ])
        .args(["-serial", "stdio", "-no-reboot", "-kernel"])
        .arg(lnx)
        .arg("-drive")
        .arg(format!("file={},format=raw,if=ide", s(disk)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64");
    let buf = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let b = buf.clone();
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    let start = Instant::now();
    loop {
        let text = plain(&buf.lock().unwrap());
        if done(&text) || start.elapsed() > BOOT_TIMEOUT {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap();
    let text = plain(&buf.lock().unwrap());
    println!("booted in {:.1} s", start.elapsed().as_secs_f64());
    text
}

/// `(title, linux, options)` of the default entry of `boot/loader/entries`.
fn default_entry(sys: &Path) -> (String, String, String) {
    let mut best: Option<(u64, String)> = None;
    for e in std::fs::read_dir(sys.join("boot/loader/entries")).unwrap() {
        let p = e.unwrap().path();
        if p.extension() != Some("conf".as_ref()) {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap();
        let v: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("version "))
            .unwrap()
            .parse()
            .unwrap();
        if best.as_ref().is_none_or(|(b, _)| v > *b) {
            best = Some((v, text));
        }
    }
    let text = best.unwrap().1;
    let key = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} ")))
            .unwrap()
            .to_string()
    };
    (key("title"), key("linux"), key("options"))
}

#[test]
fn grub_boots_the_default_entry_through_the_stub() {
    if needs_root("grub_boots_the_default_entry_through_the_stub") {
        return;
    }
    for tool in ["qemu-system-x86_64", "grub-mkimage", "mkfs.ext4"] {
        assert!(
            have(tool),
            "{tool} is not installed (apt-get install qemu-system-x86 grub-pc-bin e2fsprogs, as .ci/run does)"
        );
    }
    let mut m = machine();
    let sys = m.sys.clone();
    m.src.release_v2();
    run_ok(&mut sys_arbor(&sys, &["upgrade"]));
    run_ok(&mut sys_arbor(
        &sys,
        &[
            "kargs",
            "--append",
            "console=ttyS0,115200n8",
            "--append",
            "x=\"a b\"",
        ],
    ));
    let kernel = real_kernel();
    match &kernel {
        Some(k) => println!("booting the real kernel {}", k.display()),
        None => println!("no real kernel here: GRUB is checked up to opening the entry's fake one"),
    }
    let (title, linux, options) = default_entry(&sys);
    // /boot as its own filesystem (arbor_boot empty), then as a directory
    // of the root filesystem (arbor_boot=/boot).
    for (layout, boot_dir, prefix, path_prefix) in [
        ("separate /boot", "", "(hd0)/grub", ""),
        ("/boot in /", "boot", "(hd0)/boot/grub", "/boot"),
    ] {
        let t = tempfile::tempdir().unwrap();
        let content = t.path().join("content");
        let boot = content.join(boot_dir);
        std::fs::create_dir_all(boot.parent().unwrap()).unwrap();
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(sys.join("boot"))
                .arg(&boot),
        );
        std::fs::create_dir(boot.join("grub")).unwrap();
        std::fs::write(boot.join("grub/grub.cfg"), arbor_sysroot::grub::grub_stub()).unwrap();
        if let Some(k) = &kernel {
            std::fs::copy(k, boot.join(linux.trim_start_matches('/'))).unwrap();
        }
        let lnx = grub_image(t.path(), prefix, &[]);
        let d = disk(t.path(), &content);
        println!("{layout}: GRUB with prefix {prefix}");
        let out = run_qemu(&lnx, &d, |o| {
            o.contains("Command line:") && o[o.find("Command line:").unwrap()..].contains('\n')
                || o.contains("Press any key to continue")
                // No menu: GRUB's shell.
                || o.contains("grub>")
        });
        assert!(
            out.contains(&format!("Booting `{title}'")),
            "{layout}: GRUB did not boot the default entry {title:?}:\n{out}"
        );
        let path = format!("{path_prefix}{linux}");
        match kernel {
            Some(_) => {
                let line = out
                    .lines()
                    .find_map(|l| l.split_once("Command line: ").map(|x| x.1))
                    .unwrap_or_else(|| panic!("{layout}: the kernel did not start:\n{out}"));
                // GRUB puts an argument with a space in double quotes.
                let want = format!(
                    "BOOT_IMAGE={path} {}",
                    options.replace("x=\"a b\"", "\"x=a b\"")
                );
                assert_eq!(line.trim(), want, "{layout}");
                println!("{layout}: kernel command line: {line}");
            }
            None => {
                // GRUB wraps its messages at 80 columns.
                let squeeze = |t: &str| t.split_whitespace().collect::<String>();
                assert!(
                    squeeze(&out).contains(&squeeze(&format!("premature end of file {path}"))),
                    "{layout}: GRUB did not open {path}:\n{out}"
                )
            }
        }
    }
}
