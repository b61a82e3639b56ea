//! Tests of finding and installing boot files.

use super::*;
use crate::fsutil;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::{symlink, PermissionsExt};

const KVER: &str = "6.1.0-test";

fn root(t: &Path) -> OwnedFd {
    fsutil::open_dir(rustix::fs::CWD, &t.to_string_lossy()).unwrap()
}

fn put(p: &Path, content: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// SHA-256 of the files' concatenation, by coreutils (not this code).
fn sha256sum(files: &[PathBuf]) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", "cat \"$@\" | sha256sum", "sh"])
        .args(files)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn modules(t: &Path) -> PathBuf {
    t.join(format!("usr/lib/modules/{KVER}"))
}

#[test]
fn bootcsum_is_the_specs_and_missing_kernels_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let err = find_kernel(&root(t.path())).unwrap_err();
    assert!(
        format!("{err:#}").contains("Failed to find kernel in /usr/lib/modules"),
        "{err:#}"
    );
    let m = modules(t.path());
    std::fs::create_dir_all(&m).unwrap();
    assert!(find_kernel(&root(t.path())).is_err());
    put(&m.join("vmlinuz"), "FAKE KERNEL\n");
    put(&m.join("initramfs.img"), "FAKE INITRAMFS\n");
    let k = find_kernel(&root(t.path())).unwrap();
    // §8.4's example: sha256(vmlinuz || initramfs.img).
    assert_eq!(
        k.bootcsum,
        "166ace07e5846366508186963b5030d981163988f4dda918aa18bdfc9b5465f6"
    );
    assert_eq!(k.initramfs.unwrap().dest, format!("initramfs-{KVER}.img"));
    // A symlinked vmlinuz resolves inside the tree only: /etc/passwd of
    // the host is never a kernel.
    std::fs::remove_file(m.join("vmlinuz")).unwrap();
    symlink("/etc/passwd", m.join("vmlinuz")).unwrap();
    assert!(find_kernel(&root(t.path())).is_err());
    // ... while an in-tree link is followed, as ostree follows it.
    put(&t.path().join("boot/vmlinuz-real"), "LINKED KERNEL\n");
    std::fs::remove_file(m.join("vmlinuz")).unwrap();
    symlink("/boot/vmlinuz-real", m.join("vmlinuz")).unwrap();
    let k = find_kernel(&root(t.path())).unwrap();
    assert_eq!(
        k.bootcsum,
        sha256sum(&[t.path().join("boot/vmlinuz-real"), m.join("initramfs.img")])
    );
}

#[test]
fn modules_layout_hashes_kernel_initramfs_devicetree_only() {
    let t = tempfile::tempdir().unwrap();
    let m = modules(t.path());
    put(&m.join("vmlinuz"), "K\n");
    put(&m.join("initramfs"), "I (no .img)\n");
    put(&m.join("devicetree"), "DT\n");
    put(&m.join(".vmlinuz.hmac"), "HMAC\n");
    put(&m.join("aboot.img"), "ABOOT\n");
    put(&m.join("aboot.cfg"), "ABOOTCFG\n");
    // A dtb/ directory is ignored when devicetree exists.
    put(&m.join("dtb/x.dtb"), "X\n");
    let k = find_kernel(&root(t.path())).unwrap();
    assert_eq!(
        k.bootcsum,
        sha256sum(&[m.join("vmlinuz"), m.join("initramfs"), m.join("devicetree")])
    );
    let names: Vec<(&str, &str)> = k
        .files()
        .into_iter()
        .map(|f| (f.src.as_str(), f.dest.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("vmlinuz", "vmlinuz-6.1.0-test"),
            ("initramfs", "initramfs-6.1.0-test.img"),
            ("devicetree", "devicetree-6.1.0-test"),
            (".vmlinuz.hmac", ".vmlinuz-6.1.0-test.hmac"),
            ("aboot.img", "aboot-6.1.0-test.img"),
        ]
    );
    // initramfs.img wins over initramfs.
    put(&m.join("initramfs.img"), "I.img\n");
    let k = find_kernel(&root(t.path())).unwrap();
    assert_eq!(k.initramfs.unwrap().src, "initramfs.img");
    assert_eq!(
        k.bootcsum,
        sha256sum(&[
            m.join("vmlinuz"),
            m.join("initramfs.img"),
            m.join("devicetree")
        ])
    );
    // Only vmlinuz: its hash alone.
    for f in ["initramfs", "initramfs.img", "devicetree"] {
        std::fs::remove_file(m.join(f)).unwrap();
    }
    std::fs::remove_dir_all(m.join("dtb")).unwrap();
    let k = find_kernel(&root(t.path())).unwrap();
    assert_eq!(k.bootcsum, sha256sum(&[m.join("vmlinuz")]));
    assert_eq!((k.initramfs, k.devicetree), (None, None));
}

/// A dtb/ tree with subdirectories, names that sort differently by
/// byte and by locale, and symlinks (in-tree, absolute, dangling, and
/// one escaping the tree).
fn dtb_tree(t: &Path) -> Vec<PathBuf> {
    let m = modules(t);
    put(&m.join("vmlinuz"), "K\n");
    put(&m.join("initramfs.img"), "I\n");
    let d = m.join("dtb");
    put(&d.join("b.dtb"), "b\n");
    put(&d.join("B.dtb"), "B\n");
    put(&d.join("a/y.dtb"), "a/y\n");
    put(&d.join("a/x.dtb"), "a/x\n");
    put(&d.join("a-z.dtb"), "a-z\n");
    std::fs::set_permissions(d.join("a/x.dtb"), std::fs::Permissions::from_mode(0o600)).unwrap();
    symlink("a/x.dtb", d.join("c-rel")).unwrap();
    symlink(
        format!("/usr/lib/modules/{KVER}/dtb/b.dtb"),
        d.join("d-abs"),
    )
    .unwrap();
    symlink("nowhere", d.join("e-dangling")).unwrap();
    // Outside the tree: never read.
    put(&t.parent().unwrap().join("outside.dtb"), "HOST FILE\n");
    symlink("../../../../../../../../outside.dtb", d.join("f-escape")).unwrap();
    // strcmp order of names: B.dtb, a (x.dtb, y.dtb), a-z.dtb, b.dtb,
    // c-rel, d-abs, e-dangling (nothing), f-escape (nothing). A path
    // sort would put a-z.dtb before a/x.dtb.
    vec![
        m.join("vmlinuz"),
        m.join("initramfs.img"),
        d.join("B.dtb"),
        d.join("a/x.dtb"),
        d.join("a/y.dtb"),
        d.join("a-z.dtb"),
        d.join("b.dtb"),
        d.join("a/x.dtb"),
        d.join("b.dtb"),
    ]
}

#[test]
fn dtb_directory_is_hashed_sorted_recursively_inside_the_tree() {
    let base = tempfile::tempdir().unwrap();
    let t = base.path().join("deploy");
    let expected = dtb_tree(&t);
    let k = find_kernel(&root(&t)).unwrap();
    assert_eq!(k.devicetree, Some(Devicetree::Dir("dtb".into())));
    assert_eq!(k.bootcsum, sha256sum(&expected));
    // A symlink to a directory inside dtb/ cannot be read: an error, as
    // in ostree (which fails reading it).
    symlink("a", modules(&t).join("dtb/g-dir")).unwrap();
    assert!(find_kernel(&root(&t)).is_err());
}

#[test]
fn install_copies_everything_atomically_and_only_once() {
    let base = tempfile::tempdir().unwrap();
    let t = base.path().join("deploy");
    dtb_tree(&t);
    let m = modules(&t);
    put(&m.join(".vmlinuz.hmac"), "HMAC\n");
    // An in-tree symlink as initramfs: its target's content is installed.
    std::fs::rename(m.join("initramfs.img"), t.join("initrd-real")).unwrap();
    symlink("../../../../initrd-real", m.join("initramfs.img")).unwrap();
    let boot_dir = base.path().join("boot");
    std::fs::create_dir(&boot_dir).unwrap();
    let k = find_kernel(&root(&t)).unwrap();
    let dest = boot_dir.join(format!("ostree/os-{}", k.bootcsum));
    // Leftovers of an interrupted install are replaced.
    put(&dest.join(".dtb.tmp/stale"), "stale\n");
    put(&dest.join(format!(".vmlinuz-{KVER}.tmp")), "stale\n");
    install(&k, &root(&t), &root(&boot_dir), "os").unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".vmlinuz-6.1.0-test.hmac",
            "dtb",
            "initramfs-6.1.0-test.img",
            "vmlinuz-6.1.0-test"
        ]
    );
    let read = |p: &str| std::fs::read_to_string(dest.join(p)).unwrap();
    assert_eq!(read("vmlinuz-6.1.0-test"), "K\n");
    assert_eq!(read("initramfs-6.1.0-test.img"), "I\n");
    assert!(
        !std::fs::symlink_metadata(dest.join("initramfs-6.1.0-test.img"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // Same file system: the kernel is a hardlink of the tree's file.
    assert_eq!(
        std::fs::metadata(dest.join("vmlinuz-6.1.0-test"))
            .unwrap()
            .ino(),
        std::fs::metadata(m.join("vmlinuz")).unwrap().ino()
    );
    // dtb/: the same tree, symlinks as symlinks, modes kept.
    assert_eq!(read("dtb/a/x.dtb"), "a/x\n");
    assert_eq!(read("dtb/B.dtb"), "B\n");
    let md = std::fs::metadata(dest.join("dtb/a/x.dtb")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o600);
    assert_eq!(
        md.mtime(),
        std::fs::metadata(m.join("dtb/a/x.dtb")).unwrap().mtime()
    );
    assert_eq!(
        std::fs::metadata(dest.join("dtb/a")).unwrap().mode() & 0o7777,
        std::fs::metadata(m.join("dtb/a")).unwrap().mode() & 0o7777
    );
    for (l, target) in [
        ("c-rel", "a/x.dtb".to_string()),
        ("d-abs", format!("/usr/lib/modules/{KVER}/dtb/b.dtb")),
        ("e-dangling", "nowhere".to_string()),
    ] {
        assert_eq!(
            std::fs::read_link(dest.join("dtb").join(l)).unwrap(),
            PathBuf::from(target)
        );
    }
    assert!(!dest.join("dtb/stale").exists());
    // Present names are never rewritten.
    std::fs::write(dest.join("dtb/B.dtb"), "kept\n").unwrap();
    install(&k, &root(&t), &root(&boot_dir), "os").unwrap();
    assert_eq!(read("dtb/B.dtb"), "kept\n");
}

#[test]
fn legacy_layouts_take_the_checksum_from_the_names() {
    let t = tempfile::tempdir().unwrap();
    let c = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let other = "f".repeat(64);
    let b = t.path().join("boot");
    put(&b.join(format!("vmlinuz-5.10-{c}")), "K\n");
    put(&b.join(format!("initramfs-5.10.img-{c}")), "I\n");
    // Not checksums: ignored.
    put(&b.join("vmlinuz-5.10"), "plain\n");
    put(&b.join(format!("vmlinuz-{}", c.to_uppercase())), "upper\n");
    put(&b.join(format!("vmlinuz-{}", &c[1..])), "short\n");
    let k = find_kernel(&root(t.path())).unwrap();
    assert_eq!(k.bootcsum, c);
    assert_eq!(k.dir, "boot");
    assert_eq!(k.kernel.dest, "vmlinuz-5.10");
    assert_eq!(k.initramfs.as_ref().unwrap().dest, "initramfs-5.10.img");
    assert_eq!(k.devicetree, None);
    // usr/lib/ostree-boot, when it exists, is the only one looked at.
    let u = t.path().join("usr/lib/ostree-boot");
    put(&u.join(format!("vmlinuz-{other}")), "K2\n");
    put(&u.join(format!("devicetree-imx-{other}")), "DT\n");
    let k = find_kernel(&root(t.path())).unwrap();
    assert_eq!(
        (k.dir.as_str(), k.bootcsum.as_str()),
        ("usr/lib/ostree-boot", other.as_str())
    );
    assert_eq!(k.kernel.dest, "vmlinuz");
    assert_eq!(
        k.devicetree,
        Some(Devicetree::File(BootFile {
            src: format!("devicetree-imx-{other}"),
            dest: "devicetree-imx".into()
        }))
    );
    assert_eq!(k.initramfs, None);
    // Checksums must agree.
    put(&u.join(format!("initramfs-{c}")), "I\n");
    let err = find_kernel(&root(t.path())).unwrap_err();
    assert!(format!("{err:#}").contains("Mismatched kernel checksum vs initrd"));
    // An empty usr/lib/ostree-boot hides boot/.
    std::fs::remove_dir_all(&u).unwrap();
    std::fs::create_dir(&u).unwrap();
    assert!(find_kernel(&root(t.path())).is_err());
}

#[test]
fn module_layout_wins_unless_only_legacy_has_an_initramfs() {
    let t = tempfile::tempdir().unwrap();
    let c = "a".repeat(64);
    let m = modules(t.path());
    put(&m.join("vmlinuz"), "K\n");
    let u = t.path().join("usr/lib/ostree-boot");
    put(&u.join(format!("vmlinuz-{KVER}-{c}")), "K\n");
    // Neither has an initramfs: modules.
    assert_eq!(find_kernel(&root(t.path())).unwrap().dir, m_rel());
    // Only legacy has one: legacy (rpm-ostree's Fedora layout).
    put(&u.join(format!("initramfs-{KVER}.img-{c}")), "I\n");
    let k = find_kernel(&root(t.path())).unwrap();
    assert_eq!(
        (k.dir.as_str(), k.bootcsum.as_str()),
        ("usr/lib/ostree-boot", c.as_str())
    );
    // Both have one: modules.
    put(&m.join("initramfs.img"), "I\n");
    assert_eq!(find_kernel(&root(t.path())).unwrap().dir, m_rel());
}

fn m_rel() -> String {
    format!("usr/lib/modules/{KVER}")
}

#[test]
fn several_kernels_are_refused_unless_the_bootcsum_decides() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("usr/lib/modules");
    put(&m.join("6.1/vmlinuz"), "K61\n");
    put(&m.join("6.2/vmlinuz"), "K62\n");
    // Directories without vmlinuz, symlinks and files do not count.
    put(&m.join("6.3-extra/modules.dep"), "\n");
    symlink("6.1", m.join("latest")).unwrap();
    put(&m.join("README"), "\n");
    let err = find_kernel(&root(t.path())).unwrap_err();
    assert!(
        format!("{err:#}").contains("Several kernels in usr/lib/modules (6.1, 6.2)"),
        "{err:#}"
    );
    let want = sha256sum(&[m.join("6.2/vmlinuz")]);
    let k = find_kernel_for(&root(t.path()), &want).unwrap();
    assert_eq!((k.kernel.dest.as_str(), k.bootcsum), ("vmlinuz-6.2", want));
    assert!(find_kernel_for(&root(t.path()), &"0".repeat(64)).is_err());
    // Legacy: the same rule; the initramfs is the one with the kernel's
    // checksum.
    std::fs::remove_dir_all(&m).unwrap();
    let (c1, c2) = ("1".repeat(64), "2".repeat(64));
    let b = t.path().join("boot");
    for c in [&c1, &c2] {
        put(&b.join(format!("vmlinuz-{c}")), "K\n");
        put(&b.join(format!("initramfs-{c}")), "I\n");
    }
    let err = find_kernel(&root(t.path())).unwrap_err();
    assert!(format!("{err:#}").contains("Several vmlinuz"), "{err:#}");
    let k = find_kernel_for(&root(t.path()), &c2).unwrap();
    assert_eq!(k.bootcsum, c2);
    assert_eq!(k.initramfs.unwrap().src, format!("initramfs-{c2}"));
}
