//! arbor-prepare-root on sysroots that `ostree admin deploy` made, in a
//! private mount namespace; the static build; errors before any mount.

mod common;

use std::process::Command;

use common::{check_prepared, is_root, ostree_sysroot, run_in_boot_namespace, run_ok, Expect};

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
    let bin = common::static_binary();
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
