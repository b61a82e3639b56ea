//! `arbor image build` on a small synthetic commit with a fake kernel:
//! the GPT (as sfdisk and sgdisk read it), both ext4 filesystems (e2fsck,
//! debugfs), GRUB's boot code and core.img, the erofs image against the
//! deployment, byte-identical rebuilds, and the tar stream of `-o -`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use arbor_image::{derived_uuid, format_uuid};

use crate::sysroot::{os_tree, put};
use crate::util::{arbor, assert_same_tree, dir_names, ostree, run_ok, s};

/// The commit's timestamp (2020-01-01).
pub(crate) const TS: u64 = 1577836800;

/// An archive repository with `tree` (after the OS basics of
/// [`os_tree`]) committed on `testos/stable`; returns (dir, repo, commit).
pub(crate) fn image_source(tree: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    run_ok(ostree().args(["init", "--mode=archive", &format!("--repo={}", s(&repo))]));
    let t = dir.path().join("tree");
    tree(&t);
    // Not `--bootable`: ostree would refuse the trees of the bad-input
    // tests itself; finding the kernel is the image build's job.
    let c = run_ok(ostree().args([
        &format!("--repo={}", s(&repo)),
        "commit",
        "-b",
        "testos/stable",
        "--add-metadata-string=version=1.0",
        &format!("--timestamp=@{TS}"),
        "--owner-uid=0",
        "--owner-gid=0",
        "-s",
        "1.0",
        s(&t),
    ]))
    .trim()
    .to_string();
    (dir, repo, c)
}

/// The usual tree: a fake kernel, /usr/etc, a symlink, a setuid file.
pub(crate) fn basic_tree(t: &Path) {
    os_tree(t, &[("hostname", "testos\n"), ("sub/x.conf", "x=1\n")]);
    put(&t.join("usr/bin/suid"), "#!/bin/sh\n");
    std::fs::set_permissions(
        t.join("usr/bin/suid"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::symlink("../bin/tool", t.join("usr/lib/tool-link")).unwrap();
}

/// `arbor image build --repo R --format F -o OUT [extra...] testos/stable`.
pub(crate) fn build_cmd(repo: &Path, formats: &str, out: &Path, extra: &[&str]) -> Command {
    let mut c = arbor();
    c.args([
        "image",
        "build",
        "--repo",
        s(repo),
        "--format",
        formats,
        "-o",
        s(out),
    ])
    .args(extra)
    .arg("testos/stable");
    c
}

/// A partition as `sfdisk --json` reports it.
#[derive(Debug)]
pub(crate) struct Part {
    pub start: u64,
    pub size: u64,
    pub type_guid: String,
    pub uuid: String,
    pub name: String,
}

pub(crate) fn partitions(disk: &Path) -> (String, Vec<Part>) {
    let j: serde_json::Value =
        serde_json::from_str(&run_ok(Command::new("sfdisk").arg("--json").arg(disk))).unwrap();
    let t = &j["partitiontable"];
    assert_eq!(t["label"], "gpt");
    let parts = t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Part {
            start: p["start"].as_u64().unwrap(),
            size: p["size"].as_u64().unwrap(),
            type_guid: p["type"].as_str().unwrap().to_lowercase(),
            uuid: p["uuid"].as_str().unwrap().to_lowercase(),
            name: p["name"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    (t["id"].as_str().unwrap().to_lowercase(), parts)
}

/// Copies partition `p` of `disk` to `dest` (sparse).
pub(crate) fn extract(disk: &Path, p: &Part, dest: &Path) {
    run_ok(Command::new("dd").args([
        &format!("if={}", s(disk)),
        &format!("of={}", s(dest)),
        "bs=512",
        &format!("skip={}", p.start),
        &format!("count={}", p.size),
        "conv=sparse",
        "status=none",
    ]));
}

/// What `sgdisk -v` finds wrong with the GPT of `disk`: `None` when it
/// finds nothing and warns of nothing (it reports "No problems found"
/// even after falling back to a valid backup of a corrupt header).
pub(crate) fn gpt_problems(disk: &Path) -> Option<String> {
    let o = Command::new("sgdisk").arg("-v").arg(disk).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let bad = [
        "Caution", "Warning", "ERROR", "corrupt", "Problem", "problem:",
    ];
    let clean = o.status.success()
        && text.contains("No problems found")
        && !bad.iter().any(|b| text.contains(b));
    (!clean).then_some(text)
}

/// `debugfs -R CMD IMG`'s output.
pub(crate) fn debugfs(img: &Path, cmd: &str) -> String {
    run_ok(Command::new("debugfs").args(["-R", cmd]).arg(img))
}

/// The sysroot in `disk` as the booted machine has it at `/sysroot`:
/// the root filesystem with the boot one on its `/boot` (both checked
/// clean by `e2fsck`), loop-mounted
/// read-only in a private mount namespace and copied (`cp -a`) to `dest`.
pub(crate) fn dump_sysroot(disk: &Path, work: &Path, dest: &Path) {
    let (_, parts) = partitions(disk);
    let (boot, root, mnt) = (
        work.join("dump-boot.img"),
        work.join("dump-root.img"),
        work.join("dump-mnt"),
    );
    extract(disk, &parts[1], &boot);
    extract(disk, &parts[2], &root);
    for img in [&boot, &root] {
        run_ok(Command::new("e2fsck").arg("-fn").arg(img));
    }
    std::fs::create_dir_all(&mnt).unwrap();
    run_ok(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
        "set -e; mount -o loop,ro {root} {m}; mount -o loop,ro {boot} {m}/boot; cp -a {m} {dest}",
        root = s(&root),
        boot = s(&boot),
        m = s(&mnt),
        dest = s(dest)
    )),
    );
    for p in [boot, root] {
        std::fs::remove_file(p).unwrap();
    }
}

/// The tree in an erofs image, mounted read-only by the kernel in a
/// private mount namespace and copied (`cp -a`) to `dest`
/// (`fsck.erofs --extract` 1.5 drops setuid bits: it chowns after chmod).
pub(crate) fn dump_erofs(img: &Path, work: &Path, dest: &Path) {
    let mnt = work.join("erofs-mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    run_ok(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "set -e; mount -t erofs -o loop,ro {img} {m}; cp -a {m} {dest}",
                img = s(img),
                m = s(&mnt),
                dest = s(dest)
            )),
    );
}

pub(crate) fn sha256(p: &Path) -> String {
    run_ok(Command::new("sha256sum").arg(p))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn raw_disk_has_the_layout_the_filesystems_and_grub() {
    let (dir, repo, c) = image_source(basic_tree);
    let out = dir.path().join("out");
    let text = run_ok(&mut build_cmd(&repo, "raw", &out, &[]));
    assert!(
        text.contains(&format!("Built {c}")) && text.contains("raw: "),
        "{text}"
    );
    assert_eq!(dir_names(&out), ["disk.raw"]);
    let disk = out.join("disk.raw");
    assert_eq!(gpt_problems(&disk), None);
    // The check sees a bad header on either side (sgdisk itself says
    // "No problems found" after loading the other copy).
    let len = std::fs::metadata(&disk).unwrap().len();
    for (what, at) in [("main", 512), ("backup", len - 512)] {
        let bad = dir.path().join(format!("bad-{what}.raw"));
        run_ok(
            Command::new("cp")
                .arg("--sparse=always")
                .arg(&disk)
                .arg(&bad),
        );
        let f = std::fs::OpenOptions::new().write(true).open(&bad).unwrap();
        // The first usable LBA, covered by the header's CRC.
        std::os::unix::fs::FileExt::write_all_at(&f, &[0xff], at + 0x28).unwrap();
        let p = gpt_problems(&bad).unwrap_or_else(|| panic!("{what} header damage not seen"));
        assert!(
            p.contains(&format!(
                "{}header: ERROR",
                if what == "main" { "Main " } else { "Backup " }
            )),
            "{p}"
        );
        std::fs::remove_file(&bad).unwrap();
    }

    // The table: three partitions, types, names and GUIDs as derived.
    let (disk_id, parts) = partitions(&disk);
    assert_eq!(disk_id, format_uuid(&derived_uuid("disk", &c)));
    let want = [
        ("bios", "21686148-6449-6e6f-744e-656564454649"),
        ("boot", "0fc63daf-8483-4772-8e79-3d69d8477de4"),
        ("root", "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),
    ];
    assert_eq!(parts.len(), 3);
    for (p, (name, ty)) in parts.iter().zip(want) {
        assert_eq!((p.name.as_str(), p.type_guid.as_str()), (name, ty));
        assert_eq!(p.uuid, format_uuid(&derived_uuid(name, &c)));
        assert_eq!(p.start % 2048, 0, "{name} is not 1 MiB aligned");
    }
    assert_eq!((parts[0].start, parts[0].size), (2048, 2048));
    assert!(parts[1].size * 512 >= 384 << 20);

    // Both filesystems are clean, labelled, with the derived UUIDs.
    let (boot, root) = (dir.path().join("boot.img"), dir.path().join("root.img"));
    extract(&disk, &parts[1], &boot);
    extract(&disk, &parts[2], &root);
    for (img, label) in [(&boot, "boot"), (&root, "root")] {
        run_ok(Command::new("e2fsck").arg("-fn").arg(img));
        let sb = run_ok(Command::new("dumpe2fs").arg("-h").arg(img));
        assert!(
            sb.contains(&format!("Filesystem volume name:   {label}")),
            "{sb}"
        );
        let uuid = format_uuid(&derived_uuid(&format!("{label}-fs"), &c));
        assert!(
            sb.contains(&format!("Filesystem UUID:          {uuid}")),
            "{sb}"
        );
    }

    // The boot filesystem: loader -> loader.N with the entry and the
    // generated menu, the GRUB stub and modules.
    let loader = debugfs(&boot, "stat /loader");
    assert!(loader.contains("Fast link dest: \"loader.1\""), "{loader}");
    let entries = debugfs(&boot, "ls /loader.1/entries");
    assert!(entries.contains("ostree-1-default.conf"), "{entries}");
    let menu = debugfs(&boot, "cat /loader.1/grub.cfg");
    let root_uuid = format_uuid(&derived_uuid("root-fs", &c));
    assert!(
        menu.contains("menuentry 'TestOS 1 1.0 (ostree:0)'"),
        "{menu}"
    );
    assert!(
        menu.contains(&format!(
            "root=UUID={root_uuid} rw console=ttyS0,115200n8 ostree=/ostree/boot.1/default/"
        )),
        "{menu}"
    );
    let stub = debugfs(&boot, "cat /grub/grub.cfg");
    assert!(
        stub.contains("loader/grub.cfg") && stub.contains("configfile") && stub.contains("serial"),
        "{stub}"
    );
    assert!(debugfs(&boot, "ls /grub/i386-pc").contains("normal.mod"));
    let kernel_dir = debugfs(&boot, "ls /ostree");
    assert!(kernel_dir.contains("default-"), "{kernel_dir}");

    // The root filesystem: the physical sysroot, /boot empty, the
    // deployment hard-linked to the repository's objects, the ref kept.
    assert_eq!(
        debugfs(&root, "ls /boot")
            .split_whitespace()
            .filter(|n| !n.starts_with('(') && !n.chars().all(|c| c.is_ascii_digit()))
            .collect::<Vec<_>>(),
        [".", ".."]
    );
    let deploy = format!("/ostree/deploy/default/deploy/{c}.0");
    let tool = debugfs(&root, &format!("stat {deploy}/usr/bin/tool"));
    assert!(
        tool.contains("Links: 2"),
        "not hard-linked to its object: {tool}"
    );
    let suid = debugfs(&root, &format!("stat {deploy}/usr/bin/suid"));
    assert!(suid.contains("Mode:  04755"), "{suid}");
    assert_eq!(
        debugfs(&root, "cat /ostree/repo/refs/heads/testos/stable").trim(),
        c
    );
    assert!(debugfs(&root, &format!("cat {deploy}/etc/hostname")).contains("testos"));

    // GRUB: boot.img's code in the MBR pointing at core.img in partition
    // 1, whose first blocklist covers the sectors after its first.
    let bytes = std::fs::read(&disk).unwrap();
    let boot_img = std::fs::read("/usr/lib/grub/i386-pc/boot.img").unwrap();
    assert_eq!(bytes[..3], boot_img[..3]);
    assert_eq!(bytes[0x5a..0x5c], boot_img[0x5a..0x5c]);
    assert_eq!(bytes[0x68..0x1b8], boot_img[0x68..0x1b8]);
    assert_eq!(bytes[0x5c..0x64], 2048u64.to_le_bytes());
    assert_eq!(bytes[0x1c2], 0xee, "the protective MBR's partition is kept");
    assert_eq!(bytes[510..512], [0x55, 0xaa]);
    let core = &bytes[2048 * 512..4096 * 512];
    let diskboot = std::fs::read("/usr/lib/grub/i386-pc/diskboot.img").unwrap();
    assert_eq!(core[..0x1e8], diskboot[..0x1e8]);
    assert_eq!(core[0x1f4..0x1fc], 2049u64.to_le_bytes());
    let len = u16::from_le_bytes([core[0x1fc], core[0x1fd]]) as usize;
    assert!(len > 10 && len < 2047, "core.img length {len}");
    assert!(core[512 * (len + 1)..].iter().all(|&b| b == 0));
    assert!(core[512 * len..512 * (len + 1)].iter().any(|&b| b != 0));
}

#[test]
fn erofs_holds_the_deployment_and_rebuilds_are_byte_identical() {
    let (dir, repo, c) = image_source(basic_tree);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    run_ok(&mut build_cmd(&repo, "raw,qcow2,erofs", &a, &[]));
    // Past a second boundary: ctimes in the sysroot differ from the first build's.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    run_ok(&mut build_cmd(&repo, "erofs,qcow2,raw", &b, &[]));
    assert_eq!(dir_names(&a), ["disk.qcow2", "disk.raw", "root.erofs"]);
    for f in dir_names(&a) {
        assert_eq!(
            sha256(&a.join(&f)),
            sha256(&b.join(&f)),
            "{f} differs between builds"
        );
    }
    // qcow2 holds the same disk.
    run_ok(
        Command::new("qemu-img")
            .args(["compare", "-f", "qcow2", "-F", "raw"])
            .arg(a.join("disk.qcow2"))
            .arg(a.join("disk.raw")),
    );

    // root.erofs is the deployment's tree, as the root filesystem holds it.
    run_ok(Command::new("fsck.erofs").arg(a.join("root.erofs")));
    let dump = run_ok(Command::new("dump.erofs").arg(a.join("root.erofs")));
    assert!(
        dump.contains(&format_uuid(&derived_uuid("erofs", &c))),
        "{dump}"
    );
    let ex = dir.path().join("erofs-tree");
    dump_erofs(&a.join("root.erofs"), dir.path(), &ex);
    let sys = dir.path().join("sys");
    dump_sysroot(&a.join("disk.raw"), dir.path(), &sys);
    let dep = sys.join(format!("ostree/deploy/default/deploy/{c}.0"));
    assert_same_tree(&dep, &ex, true);
    // ...whose /usr is the commit's.
    let co = dir.path().join("co");
    run_ok(ostree().args([
        &format!("--repo={}", s(&repo)),
        "checkout",
        "--subpath=/usr",
        &c,
        s(&co),
    ]));
    assert_same_tree(&co, &ex.join("usr"), true);
    let suid = std::fs::symlink_metadata(ex.join("usr/bin/suid")).unwrap();
    assert_eq!(suid.permissions().mode() & 0o7777, 0o4755);
}

/// `image build -o -` into a pipe whose reader is gone (as after `| head
/// -c 10`): the build fails (the reader got a truncated archive) instead
/// of exiting 0. The reader closes before anything is written (a small
/// image could otherwise fit in the pipe's buffer).
#[test]
fn dash_into_a_closed_pipe_fails() {
    let (_dir, repo, _) = image_source(basic_tree);
    let mut c = build_cmd(&repo, "erofs", Path::new("-"), &[]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error:") && err.contains("truncated"), "{err}");
}

#[test]
fn dash_writes_a_tar_stream_of_the_files() {
    let (dir, repo, _) = image_source(basic_tree);
    let dash = Path::new("-");
    let out = build_cmd(&repo, "erofs,qcow2", dash, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("erofs: ") && err.contains("qcow2: "), "{err}");
    let d = dir.path().join("d");
    run_ok(&mut build_cmd(&repo, "erofs,qcow2", &d, &[]));
    let mut ar = tar::Archive::new(&out.stdout[..]);
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            (h.mode().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
            (0o644, 0, 0)
        );
        assert_eq!(h.mtime().unwrap(), TS);
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        assert!(
            data == std::fs::read(d.join(&name)).unwrap(),
            "{name} differs"
        );
        names.push(name);
    }
    assert_eq!(names, ["disk.qcow2", "root.erofs"]);
}

#[test]
fn root_by_label_and_kargs() {
    let (dir, repo, _) = image_source(basic_tree);
    let out = dir.path().join("out");
    run_ok(&mut build_cmd(
        &repo,
        "raw",
        &out,
        &[
            "--root",
            "label",
            "--karg",
            "quiet",
            "--karg",
            "console=ttyS0",
        ],
    ));
    let (_, parts) = partitions(&out.join("disk.raw"));
    let boot = dir.path().join("boot.img");
    extract(&out.join("disk.raw"), &parts[1], &boot);
    let e = debugfs(&boot, "cat /loader.1/entries/ostree-1-default.conf");
    assert!(
        e.contains("options root=LABEL=root quiet console=ttyS0 ostree=/ostree/boot.1/default/"),
        "{e}"
    );
}

#[test]
fn stateroot_from_the_option_else_the_commit_metadata() {
    let (dir, repo, c) = image_source(basic_tree);
    let a = dir.path().join("a");
    let text = run_ok(&mut build_cmd(&repo, "erofs", &a, &["--stateroot", "myos"]));
    assert!(text.contains(&format!("Built {c} (myos/{c}.0)")), "{text}");
    // A commit naming its stateroot (arbor.stateroot), on the same branch.
    let c2 = run_ok(ostree().args([
        &format!("--repo={}", s(&repo)),
        "commit",
        "-b",
        "testos/stable",
        "--tree=ref=testos/stable",
        "--add-metadata-string=arbor.stateroot=fromcommit",
        &format!("--timestamp=@{TS}"),
    ]))
    .trim()
    .to_string();
    let b = dir.path().join("b");
    let text = run_ok(&mut build_cmd(&repo, "erofs", &b, &[]));
    assert!(
        text.contains(&format!("Built {c2} (fromcommit/{c2}.0)")),
        "{text}"
    );
}

/// A bare source repository on the same filesystem: the commit's content
/// objects are hard-linked into the image's repository instead of copied.
/// The images are the same bytes as from the archive repository, and the
/// source's objects are left as they were (one link each again).
#[test]
fn a_bare_source_gives_the_same_images_and_is_left_alone() {
    use std::os::unix::fs::MetadataExt;
    let (dir, repo, _) = image_source(basic_tree);
    let bare = dir.path().join("bare");
    run_ok(ostree().args(["init", "--mode=bare", &format!("--repo={}", s(&bare))]));
    run_ok(ostree().args([
        &format!("--repo={}", s(&bare)),
        "pull-local",
        s(&repo),
        "testos/stable",
    ]));
    let objects = || {
        let out = run_ok(
            Command::new("find")
                .arg(bare.join("objects"))
                .args(["-name", "*.file"]),
        );
        out.lines()
            .map(|p| {
                let m = std::fs::symlink_metadata(p).unwrap();
                (
                    p.to_string(),
                    m.ino(),
                    m.nlink(),
                    m.mode(),
                    if m.is_symlink() {
                        std::fs::read_link(p)
                            .unwrap()
                            .into_os_string()
                            .into_encoded_bytes()
                    } else {
                        std::fs::read(p).unwrap()
                    },
                )
            })
            .collect::<Vec<_>>()
    };
    let before = objects();
    assert!(before.len() > 5);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let from_archive = run_ok(&mut build_cmd(&repo, "raw,erofs", &a, &[]));
    let from_bare = run_ok(&mut build_cmd(&bare, "raw,erofs", &b, &[]));
    assert!(!from_archive.contains("hard-linked"), "{from_archive}");
    let n = before.len();
    assert!(
        from_bare.contains(&format!("({n} objects hard-linked from the source)")),
        "{from_bare}"
    );
    for f in ["disk.raw", "root.erofs"] {
        assert_eq!(
            sha256(&a.join(f)),
            sha256(&b.join(f)),
            "{f}: bare and archive sources differ"
        );
    }
    assert_eq!(objects(), before, "the source repository's objects changed");
}
