//! Shared by arbor-boot's and arbor-cli's prepare-root tests: run a
//! prepare-root command in a private mount namespace made to look like an
//! initramfs (`in-boot-namespace.sh`), and check the root it set up.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use arbor_boot::mountinfo::{self, MountInfo};

/// `in-boot-namespace.sh`.
pub fn ns_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../arbor-boot/tests/in-boot-namespace.sh")
}

/// Runs `cmd SYSROOT` with `cmdline` as /proc/cmdline in a private mount
/// namespace; returns the script's output sections, or the failure output.
pub fn run_in_boot_namespace(
    sysroot: &Path,
    cmdline: &str,
    cmd: &[&str],
) -> Result<BTreeMap<String, String>, String> {
    run_in_boot_namespace_env(sysroot, cmdline, cmd, &[])
}

/// [`run_in_boot_namespace`] with environment variables for the script
/// (`BOOT_NS_READONLY_COPY_OF`) and the command.
pub fn run_in_boot_namespace_env(
    sysroot: &Path,
    cmdline: &str,
    cmd: &[&str],
    env: &[(&str, &Path)],
) -> Result<BTreeMap<String, String>, String> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), cmdline).unwrap();
    let out = Command::new("unshare")
        .envs(env.iter().copied())
        .args(["--mount", "--propagation", "private", "sh"])
        .arg(ns_script())
        .arg(sysroot)
        .arg(file.path())
        .args(cmd)
        .output()
        .expect("running unshare");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        ));
    }
    eprintln!("{stderr}");
    let mut sections = BTreeMap::new();
    let mut name = String::new();
    for line in stdout.lines() {
        if let Some(n) = line.strip_prefix("== ") {
            name = n.to_string();
            sections.insert(name.clone(), String::new());
        } else if let Some(s) = sections.get_mut(&name) {
            s.push_str(line);
            s.push('\n');
        }
    }
    assert!(sections.contains_key("end"), "incomplete output:\n{stdout}");
    Ok(sections)
}

/// What a booted root must look like.
pub struct Expect<'a> {
    pub sysroot: &'a Path,
    /// `ostree/deploy/STATEROOT/deploy/CSUM.SERIAL`.
    pub deployment: &'a str,
    pub stateroot: &'a str,
    pub readonly: bool,
}

/// Checks the mounts, writability and root of a prepared root; returns
/// (the root's (dev, ino), the bytes of /run/ostree-booted).
pub fn check_prepared(s: &BTreeMap<String, String>, e: &Expect<'_>) -> ((u64, u64), Vec<u8>) {
    let sys = e.sysroot.to_str().unwrap();
    // The last mount on each point is the visible one.
    let mut mounts: BTreeMap<String, MountInfo> = BTreeMap::new();
    for m in mountinfo::parse(&s["mountinfo"]) {
        mounts.insert(m.mount_point.clone(), m);
    }
    let at = |rel: &str| -> &MountInfo {
        let p = if rel.is_empty() {
            sys.to_string()
        } else {
            format!("{sys}/{rel}")
        };
        mounts
            .get(&p)
            .unwrap_or_else(|| panic!("no mount on {p}:\n{}", s["mountinfo"]))
    };
    let root = at("");
    assert!(
        root.root.ends_with(&format!("/{}", e.deployment)),
        "{root:?}"
    );
    assert!(!root.is_readonly(), "{root:?}");
    let usr = at("usr");
    assert!(
        usr.root.ends_with(&format!("/{}/usr", e.deployment)),
        "{usr:?}"
    );
    assert!(usr.is_readonly(), "{usr:?}");
    let var = at("var");
    let var_dir = format!("/ostree/deploy/{}/var", e.stateroot);
    assert!(var.root.ends_with(&var_dir), "{var:?}");
    assert!(!var.is_readonly(), "{var:?}");
    let phys = at("sysroot");
    assert!(sys.ends_with(phys.root.trim_end_matches('/')), "{phys:?}");
    assert_eq!(phys.is_readonly(), e.readonly, "{phys:?}");
    let etc = mounts.get(&format!("{sys}/etc"));
    if e.readonly {
        let etc = etc.expect("/etc is its own writable mount when /sysroot is read-only");
        assert!(
            etc.root.ends_with(&format!("/{}/etc", e.deployment)),
            "{etc:?}"
        );
        assert!(!etc.is_readonly(), "{etc:?}");
    } else {
        assert!(etc.is_none(), "{etc:?}");
    }
    // ostree's generator reads the first (/var is mounted), ostree ≤ 2022's
    // ostree-remount the second.
    let stamps = if e.readonly {
        "ostree/initramfs-mount-var\nostree-sysroot-ro.stamp\n"
    } else {
        "ostree/initramfs-mount-var\n"
    };
    assert_eq!(s["stamps"], stamps);
    let sysroot_state = if e.readonly { "ro" } else { "rw" };
    assert_eq!(
        s["writable"],
        format!("etc rw\nvar rw\nusr ro\nsysroot {sysroot_state}\n")
    );
    let (dev, ino) = s["root"].trim().split_once(' ').unwrap();
    let hex = s["booted"].trim();
    let booted = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    ((dev.parse().unwrap(), ino.parse().unwrap()), booted)
}

pub const KVER: &str = "6.1.0-test";

pub fn put(p: &Path, content: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

#[track_caller]
pub fn run_ok(cmd: &mut Command) -> String {
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
pub fn ostree_sysroot(top: &Path, conf: Option<&str>) -> (PathBuf, String, String) {
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
        .map(|e| e.unwrap().path())
        .find(|p| p.extension() == Some("conf".as_ref()))
        .unwrap();
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

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The static arbor-prepare-root, built once per test process with the
/// documented command into its own target directory.
pub fn static_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
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
        target.join("release/arbor-prepare-root")
    })
    .clone()
}
