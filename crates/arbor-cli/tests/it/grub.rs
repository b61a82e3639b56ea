//! The GRUB menu `boot/loader.N/grub.cfg` arbor generates from the BLS
//! entries beside it, with every boot-entry switch.

use std::path::Path;

use crate::sysroot::{booted_root, needs_root};
use crate::sysroot_ops::{checksums, machine, sys_arbor};
use crate::util::{ostree, run_ok, s};

/// `(file stem, linux, options)` of the entries in `boot/loader/entries`,
/// default first (by `version`, highest first).
fn entries(sys: &Path) -> Vec<(String, String, String)> {
    let mut v: Vec<(u64, String, String, String)> = Vec::new();
    for e in std::fs::read_dir(sys.join("boot/loader/entries")).unwrap() {
        let p = e.unwrap().path();
        if p.extension() != Some("conf".as_ref()) {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let key = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k} ")))
                .unwrap_or_default()
                .to_string()
        };
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        v.push((
            key("version").parse().unwrap(),
            stem,
            key("linux"),
            key("options"),
        ));
    }
    v.sort_by_key(|e| std::cmp::Reverse(e.0));
    v.into_iter().map(|(_, a, b, c)| (a, b, c)).collect()
}

/// `boot/loader/grub.cfg` offers exactly the entries of `boot/loader/entries`,
/// in order, with their kernel and options; no `grub.cfg` exists in the
/// sysroot outside `boot/loader.N/`.
#[track_caller]
pub(crate) fn assert_grub_matches_entries(sys: &Path, what: &str) {
    let cfg = std::fs::read_to_string(sys.join("boot/loader/grub.cfg"))
        .unwrap_or_else(|e| panic!("{what}: no boot/loader/grub.cfg: {e}"));
    let mut menu = Vec::new();
    let mut lines = cfg.lines();
    while let Some(l) = lines.next() {
        let Some(rest) = l.strip_prefix("menuentry ") else {
            continue;
        };
        let id = rest
            .split(" --id ")
            .nth(1)
            .and_then(|r| r.strip_suffix(" {"))
            .unwrap_or_else(|| panic!("{what}: menuentry without --id: {l}"));
        let linux = lines.next().unwrap_or_default();
        let linux = linux
            .strip_prefix("\tlinux ${arbor_boot}")
            .unwrap_or_else(|| panic!("{what}: {id}: no linux line: {linux}"));
        let (path, opts) = linux.split_once(' ').unwrap_or((linux, ""));
        menu.push((id.to_string(), path.to_string(), opts.to_string()));
    }
    assert_eq!(menu, entries(sys), "{what}: grub.cfg\n{cfg}");
    let active = std::fs::read_link(sys.join("boot/loader")).unwrap();
    let mut found = Vec::new();
    let mut stack = vec![sys.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_name() == "grub.cfg" {
                found.push(e.path().strip_prefix(sys).unwrap().to_path_buf());
            }
        }
    }
    // The stamp that keeps the menu on is beside the entries.
    assert!(
        sys.join("boot/loader/entries")
            .join(arbor_sysroot::grub::MENU_STAMP)
            .is_file(),
        "{what}: no menu stamp"
    );
    // A crash may leave the inactive loader.N (cleanup removes it).
    let mine = Path::new("boot").join(active).join("grub.cfg");
    assert!(found.contains(&mine), "{what}: {found:?}");
    for f in &found {
        assert!(
            ["loader.0", "loader.1"]
                .iter()
                .any(|l| *f == Path::new("boot").join(l).join("grub.cfg")),
            "{what}: {f:?} outside boot/loader.N"
        );
    }
}

#[test]
fn grub_cfg_follows_every_boot_switch() {
    if needs_root("grub_cfg_follows_every_boot_switch") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    assert_grub_matches_entries(&sys, "deploy");
    m.src.release_v2();
    run_ok(&mut sys_arbor(&sys, &["upgrade"]));
    assert_eq!(checksums(&sys).len(), 2);
    assert_grub_matches_entries(&sys, "upgrade");
    let before = std::fs::read_to_string(sys.join("boot/loader/grub.cfg")).unwrap();
    run_ok(&mut sys_arbor(&sys, &["rollback"]));
    assert_grub_matches_entries(&sys, "rollback");
    let after = std::fs::read_to_string(sys.join("boot/loader/grub.cfg")).unwrap();
    assert_ne!(before, after, "rollback reorders the menu");
    run_ok(&mut sys_arbor(
        &sys,
        &["kargs", "--append", "console=ttyS0,115200n8"],
    ));
    assert_grub_matches_entries(&sys, "kargs");
    assert!(std::fs::read_to_string(sys.join("boot/loader/grub.cfg"))
        .unwrap()
        .contains(" console=ttyS0,115200n8"));
    run_ok(&mut sys_arbor(&sys, &["undeploy", "1"]));
    assert_eq!(checksums(&sys).len(), 1);
    assert_grub_matches_entries(&sys, "undeploy");
    run_ok(&mut sys_arbor(&sys, &["cleanup"]));
    assert_grub_matches_entries(&sys, "cleanup");
    let loaders = crate::util::dir_names(&sys.join("boot"));
    assert!(
        loaders.iter().filter(|n| n.starts_with("loader.")).count() == 1,
        "{loaders:?}"
    );
    // ostree reads such a sysroot as before, and writes its own next
    // loader.N on top of it (with no bootloader configured, entries only);
    // arbor's next switch generates the menu again.
    let ost = run_ok(ostree().args(["admin", "status", &format!("--sysroot={}", s(&sys))]));
    assert!(ost.contains("testos"), "{ost}");
    let root = booted_root(&sys, 0);
    assert!(Path::new(&root).is_dir());
    run_ok(ostree().args([
        "admin",
        "deploy",
        &format!("--sysroot={}", s(&sys)),
        "--os=testos",
        "--retain",
        &m.src.v2,
    ]));
    assert!(!sys.join("boot/loader/grub.cfg").exists());
    // What an image build does with a sysroot ostree deployed: the menu
    // of its active loader.N, from the library.
    let active = std::fs::read_link(sys.join("boot/loader")).unwrap();
    let boot = std::fs::File::open(sys.join("boot")).unwrap();
    arbor_sysroot::grub::write_grub_config(&boot, active.to_str().unwrap(), None).unwrap();
    assert_grub_matches_entries(&sys, "write_grub_config after ostree admin deploy");
    assert_eq!(entries(&sys).len(), 2);
    std::fs::remove_file(sys.join("boot/loader/grub.cfg")).unwrap();
    run_ok(&mut sys_arbor(&sys, &["rollback"]));
    assert_grub_matches_entries(&sys, "rollback after ostree admin deploy");
}

/// A crash right after arbor's switch leaves the old `loader.N` with its
/// menu; ostree's next write (entries only, `sysroot.bootloader none`)
/// reuses that directory and recreates only `entries/`. The old menu must
/// not offer itself beside ostree's entries: it sees its stamp gone and
/// offers nothing (a message says what to run); `arbor admin grub-config`
/// regenerates the menu of the entries.
#[test]
fn a_menu_left_beside_ostree_entries_is_off_until_regenerated() {
    if needs_root("a_menu_left_beside_ostree_entries_is_off_until_regenerated") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    m.src.release_v2();
    run_ok(&mut sys_arbor(&sys, &["upgrade"]));
    let out = sys_arbor(&sys, &["deploy", "--retain", &m.src.v1])
        .env("ARBOR_FAILPOINT", arbor_fs::failpoint::SWAPPED)
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    assert_eq!(checksums(&sys).len(), 3);
    let repo = sys.join("ostree/repo");
    run_ok(ostree().args([
        "config",
        &format!("--repo={}", s(&repo)),
        "set",
        "sysroot.bootloader",
        "none",
    ]));
    run_ok(ostree().args(["admin", "undeploy", &format!("--sysroot={}", s(&sys)), "1"]));
    assert_eq!(entries(&sys).len(), 2);
    let stamp = sys
        .join("boot/loader/entries")
        .join(arbor_sysroot::grub::MENU_STAMP);
    assert!(!stamp.exists());
    // The menu ostree left in place (the crash kept it) is off.
    let cfg = std::fs::read_to_string(sys.join("boot/loader/grub.cfg")).unwrap();
    let guard = format!(
        "if [ -f ${{arbor_boot}}/loader/entries/{} ]; then\n",
        arbor_sysroot::grub::MENU_STAMP
    );
    let (before, menu) = cfg.split_once(&guard).expect("a guarded menu");
    assert!(!before.contains("menuentry"), "{cfg}");
    assert!(
        menu.contains("else\n  echo \"arbor: /boot/loader/grub.cfg is stale"),
        "{cfg}"
    );
    let grub_config =
        || run_ok(crate::util::arbor().args(["admin", "grub-config", "--sysroot", s(&sys)]));
    let o = grub_config();
    assert!(o.contains("grub.cfg"), "{o}");
    assert_grub_matches_entries(&sys, "admin grub-config after ostree admin undeploy");
    // Without a left-over menu: ostree's write leaves none, and the stub
    // says so instead of stopping silently at the GRUB prompt.
    run_ok(&mut sys_arbor(&sys, &["rollback"]));
    let inactive = std::fs::read_link(sys.join("boot/loader")).unwrap();
    let inactive = if inactive == Path::new("loader.0") {
        "loader.1"
    } else {
        "loader.0"
    };
    assert!(!sys.join("boot").join(inactive).join("grub.cfg").exists());
    run_ok(ostree().args(["admin", "undeploy", &format!("--sysroot={}", s(&sys)), "1"]));
    assert!(!sys.join("boot/loader/grub.cfg").exists());
    assert!(arbor_sysroot::grub::grub_stub()
        .contains("else\n  echo \"arbor: no boot menu: /boot/loader/grub.cfg is missing"));
    grub_config();
    assert_grub_matches_entries(&sys, "admin grub-config after a second undeploy");
}
