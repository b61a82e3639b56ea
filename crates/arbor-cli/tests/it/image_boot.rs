//! The raw image boots in QEMU (TCG, serial console) through GRUB's
//! boot.img and core.img to the stub and arbor's generated menu: the
//! entry's title appears on the serial console, and GRUB's `linux` finds
//! the entry's (fake) kernel, which it then refuses as too short.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::image_build::{basic_tree, build_cmd, image_source};
use crate::util::{arbor, run_ok, s};

/// How long GRUB may take to show the menu and try the entry under TCG.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn raw_image_boots_grub_to_the_menu_in_qemu() {
    let (dir, repo, _) = image_source(basic_tree);
    let out = dir.path().join("out");
    run_ok(&mut build_cmd(&repo, "raw", &out, &[]));
    grub_reaches_the_entry(&out.join("disk.raw"));
}

/// The same from a sysroot `ostree admin deploy` made: the menu arbor
/// generated from ostree's entries.
#[test]
fn image_of_an_ostree_sysroot_boots_grub_to_the_menu_in_qemu() {
    let (dir, repo, _) = image_source(basic_tree);
    let sys = crate::image_interop::ostree_sysroot(dir.path(), &repo);
    let out = dir.path().join("out");
    run_ok(arbor().args([
        "image",
        "build",
        "--format",
        "raw",
        "--from-sysroot",
        s(&sys),
        "-o",
        s(&out),
    ]));
    grub_reaches_the_entry(&out.join("disk.raw"));
    crate::sysroot::unseal_all(dir.path());
}

/// Boots `disk` until GRUB shows the entry and its `linux` has read the
/// entry's fake kernel (or [`BOOT_TIMEOUT`]), then kills the VM.
fn grub_reaches_the_entry(disk: &Path) {
    eprintln!(
        "VM: booting {} under TCG (serial console), up to {BOOT_TIMEOUT:?}",
        disk.display()
    );
    let mut vm = Command::new("qemu-system-x86_64")
        .args([
            "-nographic",
            "-accel",
            "tcg",
            "-m",
            "512",
            "-no-reboot",
            "-drive",
        ])
        .arg(format!("file={},format=raw", s(disk)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting qemu-system-x86_64 (Debian package qemu-system-x86)");
    let mut stdout = vm.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut log = Vec::new();
    let (title, kernel_read) = ("TestOS 1 1.0 (ostree:0)", "premature end of file");
    while start.elapsed() < BOOT_TIMEOUT {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
            log.extend(chunk);
        }
        let text = String::from_utf8_lossy(&log);
        if text.contains(title) && text.contains(kernel_read) {
            break;
        }
    }
    let elapsed = start.elapsed();
    vm.kill().unwrap();
    vm.wait().unwrap();
    let text = String::from_utf8_lossy(&log);
    eprintln!(
        "VM: serial console after {elapsed:.1?} ({} bytes), tail:\n{}",
        log.len(),
        tail(&text)
    );
    assert!(
        text.contains(title),
        "GRUB's menu entry {title:?} never appeared"
    );
    assert!(!text.contains("not found"), "GRUB could not find a file");
    assert!(
        text.contains(kernel_read),
        "GRUB's linux did not read the entry's kernel (expected {kernel_read:?})"
    );
}

/// The last lines of the console, without terminal escapes.
fn tail(text: &str) -> String {
    let mut plain = String::new();
    let mut esc = false;
    for ch in text.chars() {
        match (esc, ch) {
            (false, '\u{1b}') => esc = true,
            (true, c) if c.is_ascii_alphabetic() => esc = false,
            (true, _) => {}
            (false, '\r') => {}
            (false, c) => plain.push(c),
        }
    }
    let lines: Vec<&str> = plain.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}
