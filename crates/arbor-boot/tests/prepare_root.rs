//! arbor-prepare-root on sysroots that `ostree admin deploy` made, in a
//! private mount namespace; the static build; errors before any mount.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{check_prepared, run_in_boot_namespace, Expect};

const KVER: &str = "6.1.0-test";

fn put(p: &Path, content: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

#[track_caller]
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawning");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A bootable OS tree as the image build lays it out: kernel, os-release,
/// /usr/etc, and the ostree conventions `sysroot/` and `ostree -> sysroot/ostree`.
pub fn os_tree(dir: &Path, prepare_root_conf: Option<&str>) {
    put(
        &dir.join(format!("usr/lib/modules/{KVER}/vmlinuz")),
        "KERNEL\n",
    );
    put(
        &dir.join(format!("usr/lib/modules/{KVER}/initramfs.img")),
        "INITRD\n",
    );
    put(&dir.join("usr/lib/os-release"), "ID=testos\nNAME=TestOS\n");
    put(&dir.join("usr/etc/hostname"), "testos\n");
    if let Some(c) = prepare_root_conf {
        put(&dir.join("usr/lib/ostree/prepare-root.conf"), c);
    }
    for d in ["sysroot", "var", "run", "proc"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::os::unix::fs::symlink("sysroot/ostree", dir.join("ostree")).unwrap();
}

/// A sysroot deployed by `ostree admin deploy`: (sysroot, deployment
/// relpath, the kernel command line of its boot entry).
fn ostree_sysroot(top: &Path, conf: Option<&str>) -> (PathBuf, String, String) {
    let tree = top.join("tree");
    os_tree(&tree, conf);
    let sys = top.join("sys");
    std::fs::create_dir_all(&sys).unwrap();
    run_ok(Command::new("ostree").args(["admin", "init-fs"]).arg(&sys));
    run_ok(
        Command::new("ostree")
            .args(["admin", "os-init", "testos"])
            .arg(format!("--sysroot={}", sys.display())),
    );
    run_ok(
        Command::new("ostree")
            .arg(format!("--repo={}/ostree/repo", sys.display()))
            .args([
                "commit",
                "-b",
                "testos/stable",
                "--owner-uid=0",
                "--owner-gid=0",
                "-s",
                "v1",
            ])
            .arg(format!("--tree=dir={}", tree.display())),
    );
    run_ok(
        Command::new("ostree")
            .env("OSTREE_SYSROOT_DEBUG", "mutable-deployments")
            .args([
                "admin",
                "deploy",
                "--os=testos",
                "--karg=root=LABEL=root",
                "--karg=rw",
            ])
            .arg(format!("--sysroot={}", sys.display()))
            .arg("testos/stable"),
    );
    let (deployment, cmdline) = boot_entry(&sys, "testos");
    (sys, deployment, cmdline)
}

/// The only deployment of `stateroot` and its boot entry's options.
pub fn boot_entry(sys: &Path, stateroot: &str) -> (String, String) {
    let deploy_dir = sys.join(format!("ostree/deploy/{stateroot}/deploy"));
    let name = std::fs::read_dir(&deploy_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| !n.ends_with(".origin"))
        .unwrap();
    let entries = sys.join("boot/loader/entries");
    let entry = std::fs::read_dir(&entries)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(entry).unwrap();
    let options = text
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .unwrap()
        .to_string();
    (
        format!("ostree/deploy/{stateroot}/deploy/{name}"),
        format!("BOOT_IMAGE=/vmlinuz {options} console=ttyS0\n"),
    )
}

fn decode_booted(data: &[u8]) -> arbor_format::Metadata {
    arbor_format::Metadata::decode(data).expect("/run/ostree-booted is an a{sv}")
}

fn check_booted_state(root: (u64, u64), booted: &[u8], readonly: bool) {
    let m = decode_booted(booted);
    assert_eq!(
        m.get("sysroot-ro"),
        Some(&arbor_format::Value::Bool(readonly))
    );
    let mut devino = root.0.to_ne_bytes().to_vec();
    devino.extend(root.1.to_ne_bytes());
    assert_eq!(
        m.get("backing-root-device-inode"),
        Some(&arbor_format::Value::Other {
            type_str: "(tt)".into(),
            data: devino
        })
    );
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn an_ostree_deployed_sysroot_boots_with_a_read_only_sysroot() {
    assert!(
        is_root(),
        "prepare-root tests mount (in a private namespace): run as root"
    );
    let t = tempfile::tempdir().unwrap();
    let (sys, deployment, cmdline) = ostree_sysroot(t.path(), None);
    let bin = env!("CARGO_BIN_EXE_arbor-prepare-root");
    let s = run_in_boot_namespace(&sys, &cmdline, &[bin]).unwrap();
    let e = Expect {
        sysroot: &sys,
        deployment: &deployment,
        stateroot: "testos",
        readonly: true,
    };
    let (root, booted) = check_prepared(&s, &e);
    check_booted_state(root, &booted, true);
}

/// Whether an ELF executable asks for a dynamic loader (PT_INTERP).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
    })
}

#[test]
fn the_static_build_runs_and_boots_a_writable_sysroot() {
    assert!(
        is_root(),
        "prepare-root tests mount (in a private namespace): run as root"
    );
    // The documented command, into its own target directory.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("static-prepare-root");
    run_ok(
        Command::new(option_env!("CARGO").unwrap_or("cargo"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", &target)
            .args([
                "rustc",
                "--release",
                "-p",
                "arbor-boot",
                "--bin",
                "arbor-prepare-root",
            ])
            .args(["--", "-C", "target-feature=+crt-static"]),
    );
    let bin = target.join("release/arbor-prepare-root");
    let elf = std::fs::read(&bin).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert!(
        !has_interpreter(&elf),
        "the static build asks for a dynamic loader"
    );
    assert!(has_interpreter(
        &std::fs::read(env!("CARGO_BIN_EXE_arbor-prepare-root")).unwrap()
    ));
    eprintln!("static arbor-prepare-root: {} bytes", elf.len());
    let v = run_ok(Command::new(&bin).arg("--version"));
    assert!(v.starts_with("arbor-prepare-root "), "{v}");
    // sysroot.readonly=false from the deployment's prepare-root.conf.
    let t = tempfile::tempdir().unwrap();
    let conf = "[sysroot]\nreadonly=false\n";
    let (sys, deployment, cmdline) = ostree_sysroot(t.path(), Some(conf));
    let s = run_in_boot_namespace(&sys, &cmdline, &[bin.to_str().unwrap()]).unwrap();
    let e = Expect {
        sysroot: &sys,
        deployment: &deployment,
        stateroot: "testos",
        readonly: false,
    };
    let (root, booted) = check_prepared(&s, &e);
    check_booted_state(root, &booted, false);
}

#[test]
fn bad_command_lines_fail_before_any_mount() {
    let t = tempfile::tempdir().unwrap();
    let (sys, _, _) = ostree_sysroot(t.path(), None);
    let bin = env!("CARGO_BIN_EXE_arbor-prepare-root");
    for (cmdline, want) in [
        (
            "root=LABEL=root rw",
            "No ostree= argument on the kernel command line",
        ),
        (
            "ostree=/ostree/boot.0/testos/x/0",
            "Finding the boot link ostree=/ostree/boot.0/testos/x/0",
        ),
        ("ostree=/ostree/deploy", "the target is not a symbolic link"),
    ] {
        let out = Command::new(bin).arg(&sys).arg(cmdline).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmdline}");
        assert!(err.contains(want), "{cmdline}: {err}");
    }
    let out = Command::new(bin).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage: arbor-prepare-root SYSROOT"));
}
