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

/// The mounts of a prepare-root run's mountinfo section, the last on each
/// point winning: mount point → root of the mount.
fn mounts(
    s: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    arbor_boot::mountinfo::parse(&s["mountinfo"])
        .map(|m| (m.mount_point, m.root))
        .collect()
}

#[test]
fn a_stateroot_var_symlink_is_refused_before_any_mount() {
    assert!(
        is_root(),
        "prepare-root tests mount (in a private namespace): run as root"
    );
    let bin = env!("CARGO_BIN_EXE_arbor-prepare-root");
    for target in ["../../..", "/etc"] {
        let t = tempfile::tempdir().unwrap();
        let (sys, _, cmdline) = ostree_sysroot(t.path(), None);
        let var = sys.join("ostree/deploy/testos/var");
        std::fs::remove_dir_all(&var).unwrap();
        std::os::unix::fs::symlink(target, &var).unwrap();
        let err = run_in_boot_namespace(&sys, &cmdline, &[bin]).unwrap_err();
        assert!(
            err.contains("ostree/deploy/testos/var is a symbolic link"),
            "var -> {target}: {err}"
        );
    }
}

#[test]
fn the_boot_directory_is_bound_only_when_both_are_real_directories() {
    assert!(
        is_root(),
        "prepare-root tests mount (in a private namespace): run as root"
    );
    let bin = env!("CARGO_BIN_EXE_arbor-prepare-root");
    // ostree admin deploy leaves /boot on the physical root (boot/loader a
    // symlink there): a real boot/ in the deployment gets it bound.
    let t = tempfile::tempdir().unwrap();
    let (sys, deployment, cmdline) = ostree_sysroot(t.path(), None);
    std::fs::create_dir(sys.join(&deployment).join("boot")).unwrap();
    let s = run_in_boot_namespace(&sys, &cmdline, &[bin]).unwrap();
    let m = mounts(&s);
    let boot = &m[&format!("{}/boot", sys.display())];
    assert!(boot.ends_with("/sys/boot"), "{boot}");
    // A deployment whose boot is a symlink (out of it, or onto its /usr):
    // nothing is bound through it.
    for target in ["/etc", "usr"] {
        let t = tempfile::tempdir().unwrap();
        let (sys, deployment, cmdline) = ostree_sysroot(t.path(), None);
        std::os::unix::fs::symlink(target, sys.join(&deployment).join("boot")).unwrap();
        let s = run_in_boot_namespace(&sys, &cmdline, &[bin]).unwrap();
        let on_boot: Vec<_> = mounts(&s)
            .into_iter()
            .filter(|(_, root)| root.ends_with("/sys/boot"))
            .collect();
        assert!(on_boot.is_empty(), "boot -> {target}: {on_boot:?}");
        let e = Expect {
            sysroot: &sys,
            deployment: &deployment,
            stateroot: "testos",
            readonly: true,
        };
        check_prepared(&s, &e);
    }
}

#[test]
fn config_symlinks_resolve_inside_the_deployment() {
    assert!(
        is_root(),
        "prepare-root tests mount (in a private namespace): run as root"
    );
    // etc/ostree/prepare-root.conf -> /usr/lib/arbor-test.conf names the
    // deployment's file, not one of the initramfs (which has none).
    let t = tempfile::tempdir().unwrap();
    let (sys, deployment, cmdline) = ostree_sysroot(t.path(), None);
    let d = sys.join(&deployment);
    common::put(
        &d.join("usr/lib/arbor-test.conf"),
        "[sysroot]\nreadonly=false\n",
    );
    std::fs::create_dir_all(d.join("etc/ostree")).unwrap();
    std::os::unix::fs::symlink(
        "/usr/lib/arbor-test.conf",
        d.join("etc/ostree/prepare-root.conf"),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_arbor-prepare-root");
    let s = run_in_boot_namespace(&sys, &cmdline, &[bin]).unwrap();
    let e = Expect {
        sysroot: &sys,
        deployment: &deployment,
        stateroot: "testos",
        readonly: false,
    };
    check_prepared(&s, &e);
}

#[test]
fn a_read_only_physical_root_is_remounted_writable() {
    assert!(
        is_root(),
        "prepare-root tests mount (in a private namespace): run as root"
    );
    // initramfs-tools mounts the root read-only without `rw`: /etc and /var
    // must still be writable, /sysroot read-only per mount.
    let t = tempfile::tempdir().unwrap();
    let (sys, deployment, cmdline) = ostree_sysroot(t.path(), None);
    let cmdline = cmdline.replace(" rw ", " ");
    let ro = t.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let bin = env!("CARGO_BIN_EXE_arbor-prepare-root");
    let s = common::run_in_boot_namespace_env(
        &ro,
        &cmdline,
        &[bin],
        &[("BOOT_NS_READONLY_COPY_OF", &sys)],
    )
    .unwrap();
    let e = Expect {
        sysroot: &ro,
        deployment: &deployment,
        stateroot: "testos",
        readonly: true,
    };
    check_prepared(&s, &e);
}
