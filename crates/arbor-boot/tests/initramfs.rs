//! dist/initramfs-tools with Debian's real mkinitramfs: the initramfs holds
//! arbor-prepare-root and the local-bottom script (listed in its ORDER), and
//! that script, run by the initramfs's own shell in a chroot of the unpacked
//! image, turns /root into the deployment.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{is_root, ostree_sysroot, run_ok};

/// A kernel version with no modules anywhere: mkinitramfs only warns.
const KVER: &str = "6.1.0-arbor-test";

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/initramfs-tools")
}

/// mkinitramfs -d CONFDIR (the host's initramfs.conf plus arbor's hook and
/// script), in a private mount namespace whose /boot holds the kernel config
/// mkinitramfs checks for its compressor (a CI machine has none).
fn mkinitramfs(dir: &Path, binary: &Path) -> PathBuf {
    let (out, initrd) = mkinitramfs_output(dir, binary, false);
    assert!(
        out.status.success(),
        "mkinitramfs: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    initrd
}

/// [`mkinitramfs`]'s run, whatever its outcome; with `booted`, the
/// namespace's /run has an `ostree-booted` (a machine booted into a
/// deployment).
fn mkinitramfs_output(dir: &Path, binary: &Path, booted: bool) -> (std::process::Output, PathBuf) {
    let conf = dir.join("conf");
    std::fs::create_dir_all(conf.join("scripts/local-bottom")).unwrap();
    std::fs::create_dir_all(conf.join("hooks")).unwrap();
    std::fs::copy(
        "/etc/initramfs-tools/initramfs.conf",
        conf.join("initramfs.conf"),
    )
    .unwrap();
    std::fs::copy(dist().join("hooks/arbor"), conf.join("hooks/arbor")).unwrap();
    std::fs::copy(
        dist().join("scripts/local-bottom/arbor"),
        conf.join("scripts/local-bottom/arbor"),
    )
    .unwrap();
    let initrd = dir.join("initrd.img");
    let script = r#"set -e
mount -t tmpfs tmpfs /boot
printf 'CONFIG_RD_GZIP=y\nCONFIG_RD_ZSTD=y\n' > "/boot/config-$1"
mount -t tmpfs tmpfs /run
if [ "$4" = booted ]; then : >/run/ostree-booted; fi
mkinitramfs -d "$2" -o "$3" "$1"
"#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            KVER,
        ])
        .arg(&conf)
        .arg(&initrd)
        .arg(if booted { "booted" } else { "not-booted" })
        .env("ARBOR_PREPARE_ROOT", binary)
        .output()
        .expect("running unshare");
    (out, initrd)
}

#[test]
fn a_missing_binary_fails_the_hook_only_on_a_booted_deployment() {
    assert!(
        is_root(),
        "mkinitramfs in a private mount namespace: run as root"
    );
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("no-such-arbor-prepare-root");
    // An ordinary machine: a warning, an initramfs without arbor.
    let (out, initrd) = mkinitramfs_output(&t.path().join("a"), &missing, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("W: arbor:") && err.contains("is missing"),
        "{err}"
    );
    let list = run_ok(Command::new("lsinitramfs").arg(&initrd));
    assert!(
        !list.lines().any(|l| l == "usr/bin/arbor-prepare-root"),
        "{list}"
    );
    // A machine booted into a deployment: the initramfs could not boot it.
    let (out, _) = mkinitramfs_output(&t.path().join("b"), &missing, true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("E: arbor:"), "{err}");
}

#[test]
fn mkinitramfs_takes_the_hook_and_the_script_boots_a_deployment() {
    assert!(
        is_root(),
        "mkinitramfs in a private mount namespace: run as root"
    );
    let t = tempfile::tempdir().unwrap();
    let bin = common::static_binary();
    let initrd = mkinitramfs(t.path(), &bin);
    let list = run_ok(Command::new("lsinitramfs").arg(&initrd));
    for want in [
        "usr/bin/arbor-prepare-root",
        "scripts/local-bottom/arbor",
        "scripts/local-bottom/ORDER",
    ] {
        assert!(
            list.lines().any(|l| l == want),
            "{want} not in the initramfs:\n{list}"
        );
    }
    let x = t.path().join("x");
    run_ok(Command::new("unmkinitramfs").arg(&initrd).arg(&x));
    let x = if x.join("main").is_dir() {
        x.join("main")
    } else {
        x
    };
    let order = std::fs::read_to_string(x.join("scripts/local-bottom/ORDER")).unwrap();
    assert!(
        order.contains("/scripts/local-bottom/arbor \"$@\""),
        "{order}"
    );
    assert_eq!(
        std::fs::read(x.join("usr/bin/arbor-prepare-root")).unwrap(),
        std::fs::read(&bin).unwrap()
    );

    // Boot-time: the initramfs's sh runs the script with rootmnt=/root, the
    // physical root mounted there and ostree= on the command line; its /
    // a mount, as the initramfs's rootfs is. `panic` is left unset, so
    // that a failure ends the script (`${panic?}`) instead of opening a
    // shell; a PID namespace keeps a `reboot -f` from reaching the host.
    let (sys, deployment, cmdline) = ostree_sysroot(t.path(), None);
    let cmdline_file = t.path().join("cmdline");
    let script = r#"set -e
x=$1 sys=$2 cmdline=$3
for d in root run proc dev; do mkdir -p "$x/$d"; done
mount --bind "$x" "$x"
mount --rbind /dev "$x/dev"
mount -t proc proc "$x/proc"
mount --bind "$cmdline" "$x/proc/cmdline"
mount -t tmpfs tmpfs "$x/run"
mount --bind "$sys" "$x/root"
st=0
chroot "$x" /bin/sh -c 'export rootmnt=/root quiet=y; /scripts/local-bottom/arbor' >"$x/run/script.out" 2>&1 || st=$?
echo "status $st"
stat -c '%d %i' "$x/root"
stat -c '%d %i' "$x/root/sysroot/$4" 2>/dev/null || echo "no deployment under /root/sysroot"
if test -s "$x/run/ostree-booted"; then echo booted; fi
echo "== output"
cat "$x/run/script.out"
"#;
    // A boot link that resolves to nothing: the script calls initramfs-tools'
    // panic (which, with `panic` unset here, ends the shell with an error
    // instead of opening the emergency shell).
    let broken = "root=LABEL=root rw ostree=/ostree/boot.1/testos/nothing/0";
    std::fs::write(&cmdline_file, broken).unwrap();
    let out = run_ok(
        Command::new("unshare")
            .args(["--mount", "--pid", "--fork", "--propagation", "private"])
            .args(["sh", "-c", script, "sh"])
            .args([&x, &sys, &cmdline_file])
            .arg(&deployment),
    );
    let (head, output) = out.split_once("== output\n").unwrap();
    assert!(!head.starts_with("status 0\n"), "{out}");
    assert!(!head.contains("booted"), "{out}");
    assert!(
        output.contains("arbor-prepare-root: error: Finding the boot link")
            && output.contains("arbor-prepare-root failed"),
        "the script did not panic with the error: {out}"
    );
    for (line, booted) in [(cmdline.as_str(), true), ("root=LABEL=root rw", false)] {
        std::fs::write(&cmdline_file, line).unwrap();
        let out = run_ok(
            Command::new("unshare")
                .args(["--mount", "--pid", "--fork", "--propagation", "private"])
                .args(["sh", "-c", script, "sh"])
                .args([&x, &sys, &cmdline_file])
                .arg(&deployment),
        );
        let l: Vec<&str> = out.lines().collect();
        assert_eq!(l[0], "status 0", "{out}");
        if booted {
            // /root is the deployment, itself visible under /root/sysroot.
            assert_eq!(l[1], l[2], "{out}");
            assert_eq!(l.get(3), Some(&"booted"), "{out}");
        } else {
            // Without ostree=, the script leaves /root alone.
            assert_eq!(l[2], "no deployment under /root/sysroot", "{out}");
            assert_eq!(l.get(3), Some(&"== output"), "{out}");
        }
    }
}
