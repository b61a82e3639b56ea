//! Boot files beyond vmlinuz + initramfs: a `dtb/` directory, the FIPS
//! `.vmlinuz.hmac`, and ostree's legacy `usr/lib/ostree-boot` layout,
//! deployed by arbor and by `ostree admin deploy` side by side.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::sysroot::{
    assert_same_map, boot_state, deploy, needs_root, os_tree, ostree_commit, prepare, pull, put,
    tree, Source, Tool, KVER,
};
use crate::util::{arbor, ostree, require_ostree, run_ok, s};

/// A bootcsum of the legacy layout (any 64 lowercase hex digits).
const LEGACY: &str = "5a1e000000000000000000000000000000000000000000000000000000000abc";

/// usr/lib/modules/KVER with an initramfs, a dtb/ tree (nested
/// directories, modes, names whose byte order differs from a path sort)
/// and an HMAC; with `links`, also an in-tree and a dangling symlink in
/// dtb/.
fn dtb_tree(dir: &Path, links: bool) {
    os_tree(dir, &[("a.conf", "a=1\n")]);
    let m = dir.join(format!("usr/lib/modules/{KVER}"));
    put(&m.join(".vmlinuz.hmac"), "HMAC of the kernel\n");
    let d = m.join("dtb");
    put(&d.join("vendor/board-a.dtb"), "board a\n");
    put(&d.join("vendor/board-b.dtb"), "board b\n");
    put(&d.join("vendor-z.dtb"), "z\n");
    put(&d.join("Top.dtb"), "top\n");
    put(&d.join("overlays/deep/o.dtbo"), "overlay\n");
    std::fs::set_permissions(
        d.join("vendor/board-b.dtb"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(d.join("overlays"), std::fs::Permissions::from_mode(0o750)).unwrap();
    if links {
        symlink("vendor/board-a.dtb", d.join("default.dtb")).unwrap();
        symlink("missing.dtb", d.join("dangling.dtb")).unwrap();
    }
}

/// An archive repository with `tree` committed as v1 of `testos/stable`.
fn source_with(tree: impl FnOnce(&Path)) -> Source {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    run_ok(ostree().args(["init", "--mode=archive", &format!("--repo={}", s(&repo))]));
    let t1 = dir.path().join("tree1");
    tree(&t1);
    let v1 = ostree_commit(&repo, &t1, "1.0", "1577836800");
    Source {
        repo,
        v1,
        v2: String::new(),
        dir,
    }
}

/// Both sysroots, each with v1 deployed by its tool.
fn deployed_pair(src: &Source) -> (PathBuf, PathBuf) {
    let base = src.dir.path();
    let (sa, so) = (base.join("arbor-sysroot"), base.join("ostree-sysroot"));
    for (tool, sys) in [(Tool::Arbor, &sa), (Tool::Ostree, &so)] {
        prepare(tool, sys, src);
        deploy(tool, sys, &["--karg=root=LABEL=rootfs", "testos/stable"]);
    }
    (sa, so)
}

/// v2: a kernel without initramfs in usr/lib/modules, and the legacy
/// layout with one (and a devicetree): ostree takes the legacy layout.
fn legacy_tree(dir: &Path) {
    os_tree(dir, &[("a.conf", "a=2\n")]);
    std::fs::remove_file(dir.join(format!("usr/lib/modules/{KVER}/initramfs.img"))).unwrap();
    let b = dir.join("usr/lib/ostree-boot");
    put(
        &b.join(format!("vmlinuz-{KVER}-{LEGACY}")),
        "LEGACY KERNEL\n",
    );
    put(
        &b.join(format!("initramfs-{KVER}.img-{LEGACY}")),
        "LEGACY INITRAMFS\n",
    );
    put(
        &b.join(format!("devicetree-{KVER}-{LEGACY}")),
        "LEGACY DT\n",
    );
    put(&b.join("vmlinuz-not-a-checksum"), "ignored\n");
}

/// Every entry under boot/ostree with type, owner, mode, mtime (regular
/// files: ostree copies dtb/ files with their times) and content.
fn boot_files(sysroot: &Path) -> BTreeMap<String, String> {
    let root = sysroot.join("boot/ostree");
    tree(&root)
        .into_iter()
        .map(|(k, v)| {
            let p = root.join(&k);
            let md = std::fs::symlink_metadata(&p).unwrap();
            let v = if md.is_file() {
                format!("{v} mtime={}", md.mtime())
            } else {
                v
            };
            (k, v)
        })
        .collect()
}

fn entry(state: &BTreeMap<String, String>, index: usize) -> String {
    state
        .iter()
        .find(|(k, v)| k.contains("/entries/") && v.contains(&format!("(ostree:{index})")))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no entry {index} in {state:?}"))
}

#[test]
fn dtb_with_symlinks_matches_ostree_admin_deploy() {
    require_ostree();
    if needs_root("dtb_with_symlinks_matches_ostree_admin_deploy") {
        return;
    }
    let src = source_with(|t| dtb_tree(t, true));
    let (sa, so) = deployed_pair(&src);
    let state = boot_state(&sa);
    assert_same_map("boot state with dtb/", &state, &boot_state(&so));
    assert_same_map("/boot/ostree with dtb/", &boot_files(&sa), &boot_files(&so));
    // What was compared is what was meant to be tested.
    let e = entry(&state, 0);
    let fdtdir = e
        .lines()
        .find_map(|l| l.strip_prefix("fdtdir "))
        .unwrap_or_else(|| panic!("no fdtdir in {e}"));
    assert!(fdtdir.ends_with("/dtb"), "{e}");
    // BLS paths are relative to /boot.
    let kdir = sa.join("boot").join(fdtdir.trim_start_matches('/'));
    let kdir = kdir.parent().unwrap();
    assert_eq!(
        std::fs::read_to_string(kdir.join(format!(".vmlinuz-{KVER}.hmac"))).unwrap(),
        "HMAC of the kernel\n"
    );
    assert_eq!(
        std::fs::read_link(kdir.join("dtb/default.dtb")).unwrap(),
        Path::new("vendor/board-a.dtb")
    );
    assert_eq!(
        std::fs::read_to_string(kdir.join("dtb/overlays/deep/o.dtbo")).unwrap(),
        "overlay\n"
    );
    // Any later write reinstalls every deployment's boot files. ostree
    // (2022.7 and today's libglnx) then fails: it copies dtb/ over itself
    // and symlinkat() refuses the existing links ("File exists"). arbor
    // keeps the complete dtb/ it finds.
    let before = boot_files(&sa);
    deploy(Tool::Arbor, &sa, &[&src.v1]);
    let after = boot_files(&sa);
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{k} changed on redeploy");
    }
}

#[test]
fn dtb_hmac_and_legacy_layouts_match_ostree_admin_deploy() {
    require_ostree();
    if needs_root("dtb_hmac_and_legacy_layouts_match_ostree_admin_deploy") {
        return;
    }
    let mut src = source_with(|t| dtb_tree(t, false));
    let (sa, so) = deployed_pair(&src);
    assert_same_map("boot state with dtb/", &boot_state(&sa), &boot_state(&so));
    assert_same_map("/boot/ostree with dtb/", &boot_files(&sa), &boot_files(&so));
    // The legacy layout wins over a module layout without initramfs.
    let t2 = src.dir.path().join("tree2");
    legacy_tree(&t2);
    src.v2 = ostree_commit(&src.repo, &t2, "2.0", "1577923200");
    for (tool, sys) in [(Tool::Arbor, &sa), (Tool::Ostree, &so)] {
        pull(tool, sys, &src);
        deploy(tool, sys, &["testos/stable"]);
    }
    let second = boot_state(&sa);
    assert_same_map(
        "boot state with the legacy layout",
        &second,
        &boot_state(&so),
    );
    assert_same_map(
        "/boot/ostree with the legacy layout",
        &boot_files(&sa),
        &boot_files(&so),
    );
    let e = entry(&second, 0);
    for want in [
        format!("linux /ostree/testos-{LEGACY}/vmlinuz-{KVER}\n"),
        format!("initrd /ostree/testos-{LEGACY}/initramfs-{KVER}.img\n"),
        format!("devicetree /ostree/testos-{LEGACY}/devicetree-{KVER}\n"),
    ] {
        assert!(e.contains(&want), "{want:?} not in {e}");
    }
    assert!(entry(&second, 1).contains("\nfdtdir /ostree/testos-"));
    // Each tool reads the other's sysroot the same way, and each can
    // rewrite the other's boot entries (arbor recomputes every boot
    // checksum, and must find ostree's).
    for sys in [&sa, &so] {
        assert_eq!(
            crate::util::ostree_view_of_status(&run_ok(arbor().args([
                "status",
                "--sysroot",
                s(sys)
            ]))),
            run_ok(
                ostree()
                    .args(["admin", "status"])
                    .arg(format!("--sysroot={}", s(sys)))
            )
        );
    }
    deploy(Tool::Arbor, &so, &[&src.v1]);
    deploy(Tool::Ostree, &sa, &[&src.v1]);
    assert_same_map(
        "boot state after crossing the tools",
        &boot_state(&sa),
        &boot_state(&so),
    );
    assert_same_map(
        "/boot/ostree after crossing the tools",
        &boot_files(&sa),
        &boot_files(&so),
    );
}
