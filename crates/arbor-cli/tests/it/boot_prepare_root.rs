//! `arbor prepare-root` on a sysroot arbor deployed, in a private mount
//! namespace made to look like an initramfs; and the writing commands on a
//! booted system whose `/sysroot` is read-only (`arbor_sysroot::writable`).

#[path = "../../../arbor-boot/tests/common/mod.rs"]
mod boot_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use boot_common::{check_prepared, run_in_boot_namespace, Expect};

use crate::sysroot::{needs_root, os_tree};
use crate::util::{arbor, run_ok, s};

/// A sysroot with one arbor deployment of a tree that follows the ostree
/// conventions (`sysroot/`, `ostree -> sysroot/ostree`): (sysroot, tree).
fn arbor_sysroot(top: &Path) -> (PathBuf, PathBuf) {
    let tree = top.join("tree");
    os_tree(&tree, &[("hostname", "testos\n")]);
    for d in ["sysroot", "var", "run"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::os::unix::fs::symlink("sysroot/ostree", tree.join("ostree")).unwrap();
    let sys = top.join("sys");
    run_ok(arbor().args(["admin", "init-fs"]).arg(&sys));
    run_ok(arbor().args(["admin", "os-init", "--sysroot", s(&sys), "testos"]));
    let repo = sys.join("ostree/repo");
    run_ok(
        arbor()
            .args([
                "commit",
                "--repo",
                s(&repo),
                "--branch=testos/stable",
                "--subject=v1",
            ])
            .arg(&tree),
    );
    deploy(&sys, &[]).unwrap();
    (sys, tree)
}

fn deploy(sys: &Path, env: &[(&str, &Path)]) -> Result<String, String> {
    let mut c = arbor();
    c.env("ARBOR_SYSROOT_DEBUG", "mutable-deployments");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c
        .args(["deploy", "--sysroot", s(sys), "--os", "testos"])
        .args(["--karg=root=LABEL=root", "--karg=rw", "testos/stable"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The default deployment's directory and its boot entry's options line.
fn default_entry(sys: &Path) -> (String, String) {
    let st = crate::sysroot::status_json(sys, None);
    let d = &st["deployments"][0];
    let dir = format!(
        "ostree/deploy/testos/deploy/{}.{}",
        d["checksum"].as_str().unwrap(),
        d["deployserial"]
    );
    let entries = sys.join("boot/loader/entries");
    let mut names: Vec<_> = std::fs::read_dir(&entries)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let text = std::fs::read_to_string(names.last().unwrap()).unwrap();
    let options = text
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .unwrap()
        .to_string();
    (dir, options)
}

#[test]
fn prepare_root_boots_an_arbor_deployment() {
    if needs_root("prepare_root_boots_an_arbor_deployment") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (sys, _) = arbor_sysroot(t.path());
    let (deployment, options) = default_entry(&sys);
    let cmdline = format!("BOOT_IMAGE=/vmlinuz {options} quiet\n");
    let sections = run_in_boot_namespace(
        &sys,
        &cmdline,
        &[env!("CARGO_BIN_EXE_arbor"), "prepare-root"],
    )
    .unwrap();
    let e = Expect {
        sysroot: &sys,
        deployment: &deployment,
        stateroot: "testos",
        readonly: true,
    };
    let (root, booted) = check_prepared(&sections, &e);
    // What arbor status reads on the booted machine names this root.
    assert_eq!(
        arbor_sysroot::sysroot::backing_root_devino(&booted).unwrap(),
        Some(root)
    );
    // Without ostree= nothing is mounted and the error says why.
    let err = run_in_boot_namespace(
        &sys,
        "root=LABEL=root rw\n",
        &[env!("CARGO_BIN_EXE_arbor"), "prepare-root"],
    )
    .unwrap_err();
    assert!(
        err.contains("No ostree= argument on the kernel command line"),
        "{err}"
    );
}

#[test]
fn writing_commands_remount_a_read_only_sysroot_in_their_own_namespace() {
    if needs_root("writing_commands_remount_a_read_only_sysroot_in_their_own_namespace") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (sys, _) = arbor_sysroot(t.path());
    // In a test namespace: the sysroot read-only, as /sysroot on a booted
    // machine. A plain sysroot is still refused; one that is the booted
    // system's (here: named by the test switch) is deployed to, and the
    // namespace of the caller still sees it read-only afterwards.
    let script = r#"
set -u
sys=$1 arbor=$2
mount --bind "$sys" "$sys" && mount -o remount,bind,ro "$sys" || exit 2
deploy() { "$arbor" deploy --sysroot "$sys" --os testos --karg=root=LABEL=root --karg=rw testos/stable; }
export ARBOR_SYSROOT_DEBUG=mutable-deployments
if deploy 2>/tmp/err.$$; then echo "plain: deployed"; else echo "plain: $(cat /tmp/err.$$)"; fi
rm -f /tmp/err.$$
if ARBOR_TEST_PHYSICAL_ROOT="$sys" deploy >/dev/null; then echo "booted: deployed"; else echo "booted: failed"; fi
if touch "$sys/probe" 2>/dev/null; then echo "after: writable"; else echo "after: read-only"; fi
"$arbor" status --sysroot "$sys" --json
"#;
    let out = run_ok(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&sys)
            .arg(env!("CARGO_BIN_EXE_arbor")),
    );
    let (report, json) = out.split_at(out.find('{').unwrap());
    eprintln!("{report}");
    let lines: Vec<&str> = report.lines().collect();
    assert!(
        lines[0].starts_with("plain: ") && lines[0].contains("is mounted read-only"),
        "{report}"
    );
    assert_eq!(
        lines[1..],
        ["booted: deployed", "after: read-only"],
        "{report}"
    );
    let st: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(st["deployments"].as_array().unwrap().len(), 2, "{json}");
}
