//! `arbor export`: a commit as a byte-stable tar stream that `commit --tar`
//! turns back into the same tree, from any repository mode, in bounded
//! memory.

use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::sysroot::needs_root;
use crate::util::{arbor, arbor_commit, arbor_init, ostree, run_ok, s};

const COMMIT_FLAGS: &[&str] = &["-s", "export test", "--timestamp=@1700000000"];

fn xattr(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("lsetxattr {} {name}: {e}", p.display()));
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

/// A tree with what tar formats get wrong: xattrs (binary values, on
/// files, directories and symlinks), a setuid and a setgid file, odd
/// modes, owners (one beyond ustar's octal range), empty directories, a
/// path and a symlink target beyond ustar's limits.
fn hostile_tree(dir: &Path) {
    let w = |p: &str, c: &[u8], mode: u32| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, c).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    w("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755);
    w("usr/bin/suid", b"suid\n", 0o4755);
    w("usr/bin/sgid", b"sgid\n", 0o2711);
    w("etc/secret.conf", b"k=v\n", 0o640);
    w("etc/empty-file", b"", 0o600);
    let long_dir = format!("{}/{}/{}", "a".repeat(90), "b".repeat(90), "c".repeat(90));
    w(
        &format!("usr/share/{long_dir}/{}", "f".repeat(200)),
        b"deep\n",
        0o644,
    );
    std::fs::create_dir_all(dir.join("var/empty/deeper")).unwrap();
    std::fs::set_permissions(
        dir.join("var/empty"),
        std::fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
    symlink("tool", dir.join("usr/bin/link")).unwrap();
    symlink(
        format!("/{}", "t".repeat(150)),
        dir.join("usr/bin/long-link"),
    )
    .unwrap();
    xattr(&dir.join("usr/bin/tool"), "user.a", b"1");
    xattr(&dir.join("usr/bin/tool"), "user.bin", b"x\ty\0z=\xff");
    xattr(&dir.join("etc"), "user.dir", b"on a directory");
    // user.* is not allowed on symlinks.
    xattr(&dir.join("usr/bin/link"), "trusted.on-link", b"l");
    chown(&dir.join("etc/secret.conf"), 1234, 5678);
    chown(&dir.join("usr/bin/sgid"), 3_000_000, 3_000_001);
    chown(&dir.join("usr/bin/link"), 42, 43);
}

fn export_bytes(repo: &Path, rev: &str) -> Vec<u8> {
    let out = arbor()
        .args(["export", "--repo", s(repo), rev])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn show(repo: &Path, rev: &str) -> serde_json::Value {
    serde_json::from_str(&run_ok(arbor().args([
        "show",
        "--json",
        "--repo",
        s(repo),
        rev,
    ])))
    .unwrap()
}

#[test]
fn export_is_byte_stable_and_commit_tar_gives_the_same_tree() {
    if needs_root("export_is_byte_stable_and_commit_tar_gives_the_same_tree") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    hostile_tree(&tree);
    let archive = t.path().join("archive");
    arbor_init(&archive, "archive");
    let c = arbor_commit(&archive, &[&["-b", "main"], COMMIT_FLAGS].concat(), &tree);
    let a1 = export_bytes(&archive, "main");
    assert_eq!(a1, export_bytes(&archive, &c), "two exports differ");
    // From the same commit in other modes: the same bytes.
    for mode in ["bare", "bare-user"] {
        let r = t.path().join(mode);
        arbor_init(&r, mode);
        run_ok(arbor().args(["pull-local", "--repo", s(&r), s(&archive), "main"]));
        assert!(export_bytes(&r, "main") == a1, "export from {mode} differs");
    }
    // The file form equals the stream; nothing else is left beside it.
    let out_dir = t.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let file = out_dir.join("c.tar");
    run_ok(arbor().args(["export", "--repo", s(&archive), "main", "-o", s(&file)]));
    assert!(std::fs::read(&file).unwrap() == a1);
    assert_eq!(crate::util::dir_names(&out_dir), ["c.tar"]);
    // commit --tar of the stream, same flags: the same commit.
    for mode in ["archive", "bare"] {
        let r = t.path().join(format!("back-{mode}"));
        arbor_init(&r, mode);
        let back = run_ok(
            arbor()
                .args(["commit", "--repo", s(&r), "-b", "main", "--tar", s(&file)])
                .args(COMMIT_FLAGS),
        );
        let (x, y) = (show(&archive, "main"), show(&r, "main"));
        assert_eq!(x["root_tree"], y["root_tree"], "{mode}");
        assert_eq!(x["root_meta"], y["root_meta"], "{mode}");
        assert_eq!(back.trim(), c, "{mode}: commit --tar gives another commit");
    }
    // GNU tar reads it: names beyond ustar's limits, xattrs, owners.
    let listing = run_ok(Command::new("tar").args(["--numeric-owner", "-tvf", s(&file)]));
    assert!(listing.contains(&"f".repeat(200)), "{listing}");
    assert!(listing.contains(&"t".repeat(150)), "{listing}");
    assert!(listing.contains("3000000/3000001"), "{listing}");
    assert!(listing.contains("-rwsr-xr-x 0/0"), "{listing}");
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    run_ok(Command::new("tar").args([
        "--xattrs",
        "--xattrs-include=*",
        "--numeric-owner",
        "-xpf",
        s(&file),
        "-C",
        s(&x),
    ]));
    crate::util::assert_same_tree(&tree, &x, true);
    // And ostree imports it to the same tree.
    let o = t.path().join("ostree-repo");
    crate::util::ostree_init(&o, "archive");
    run_ok(ostree().args([
        "commit",
        &format!("--repo={}", s(&o)),
        "-b",
        "main",
        &format!("--tree=tar={}", s(&file)),
        "-s",
        "export test",
        "--timestamp=2023-11-14T22:13:20Z",
    ]));
    // (Paths, types, modes, owners and sizes: ostree's libarchive import
    // keeps xattrs in the order libarchive returns them, unsorted, so its
    // checksums of entries with several xattrs differ from a directory
    // commit's.)
    let ls = |r: &Path, flags: &str| {
        run_ok(ostree().args(["ls", &format!("--repo={}", s(r)), flags, "main"]))
    };
    assert_eq!(ls(&o, "-R"), ls(&archive, "-R"));
    let theirs = ls(&o, "-RX");
    assert!(theirs.contains("(b'user.a', [0x31])"), "{theirs}");
    assert!(theirs.contains("b'trusted.on-link'"), "{theirs}");
}

/// Peak resident memory of a live process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    line.trim().trim_end_matches("kB").trim().parse().unwrap()
}

#[test]
fn export_streams_a_large_file_in_bounded_memory() {
    const SIZE: usize = 200 << 20;
    const MAX_RSS_KIB: u64 = 48 << 10;
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    // Not all zeros, so an archive repository's deflate has real work.
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut f = std::fs::File::create(tree.join("big")).unwrap();
    for _ in 0..SIZE >> 20 {
        std::io::Write::write_all(&mut f, &block).unwrap();
    }
    drop(f);
    let repo = t.path().join("repo");
    arbor_init(&repo, "bare-user");
    arbor_commit(&repo, &["-b", "main"], &tree);
    std::fs::remove_file(tree.join("big")).unwrap();
    let mut child = arbor()
        .args(["export", "--repo", s(&repo), "main"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    let mut hwm = 0;
    while let Ok(n) = stdout.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n;
        // Near the end (the writer blocked on the pipe, still alive).
        if hwm == 0 && total > SIZE - (8 << 20) {
            hwm = vm_hwm_kib(child.id());
        }
    }
    assert!(child.wait().unwrap().success());
    assert!(total > SIZE, "{total} bytes");
    println!("export of a {} MiB file: peak RSS {hwm} KiB", SIZE >> 20);
    assert!(hwm > 0 && hwm < MAX_RSS_KIB, "peak RSS {hwm} KiB");
}

#[test]
fn export_refuses_a_missing_rev_and_leaves_no_file() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    arbor_init(&repo, "archive");
    let out = t.path().join("out.tar");
    let r = arbor()
        .args(["export", "--repo", s(&repo), "nope", "-o", s(&out)])
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("nope"));
    assert_eq!(crate::util::dir_names(t.path()), ["repo"]);
}

/// `-o` naming a device, a FIFO, or a symlink: written to, never replaced
/// (as `tar -cf` or a shell redirection would); a symlink to a regular
/// file stays a symlink, its target gets the stream.
#[test]
fn export_writes_into_devices_fifos_and_through_symlinks() {
    if needs_root("export_writes_into_devices_fifos_and_through_symlinks") {
        return;
    }
    use std::os::unix::fs::FileTypeExt;
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir_all(tree.join("usr")).unwrap();
    std::fs::write(tree.join("usr/f"), "data\n").unwrap();
    let repo = t.path().join("repo");
    arbor_init(&repo, "archive");
    arbor_commit(&repo, &[&["-b", "main"], COMMIT_FLAGS].concat(), &tree);
    let want = export_bytes(&repo, "main");
    let export_to = |p: &Path| {
        run_ok(arbor().args(["export", "--repo", s(&repo), "main", "-o", s(p)]));
    };
    // A character device (a copy of /dev/null): stays one.
    let null = t.path().join("null");
    run_ok(Command::new("mknod").arg(&null).args(["c", "1", "3"]));
    export_to(&null);
    let md = std::fs::symlink_metadata(&null).unwrap();
    assert!(md.file_type().is_char_device(), "{md:?}");
    // A FIFO: its reader gets the stream, the FIFO stays.
    let fifo = t.path().join("fifo");
    run_ok(Command::new("mkfifo").arg(&fifo));
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    export_to(&fifo);
    assert!(
        reader.join().unwrap() == want,
        "the FIFO's reader got other bytes"
    );
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    // A symlink to the device: the device gets it, the link stays.
    let to_null = t.path().join("to-null");
    symlink(&null, &to_null).unwrap();
    export_to(&to_null);
    assert!(std::fs::symlink_metadata(&to_null)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::metadata(&null)
        .unwrap()
        .file_type()
        .is_char_device());
    // A symlink to a regular file (relative): the file is replaced.
    std::fs::create_dir(t.path().join("d")).unwrap();
    std::fs::write(t.path().join("d/real.tar"), "old").unwrap();
    let lnk = t.path().join("lnk");
    symlink("d/real.tar", &lnk).unwrap();
    export_to(&lnk);
    assert_eq!(std::fs::read_link(&lnk).unwrap(), Path::new("d/real.tar"));
    assert!(std::fs::read(t.path().join("d/real.tar")).unwrap() == want);
    assert_eq!(crate::util::dir_names(&t.path().join("d")), ["real.tar"]);
}

/// A reader that closes early (`arbor export | head -c 10`): the export
/// fails (a truncated archive is not a success).
#[test]
fn export_into_a_closed_pipe_fails() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir_all(tree.join("usr")).unwrap();
    std::fs::write(tree.join("usr/f"), vec![b'x'; 1 << 20]).unwrap();
    let repo = t.path().join("repo");
    arbor_init(&repo, "archive");
    arbor_commit(&repo, &[&["-b", "main"], COMMIT_FLAGS].concat(), &tree);
    let bin = env!("CARGO_BIN_EXE_arbor");
    let sh = |cmd: &str| {
        Command::new("bash")
            .args(["-c", cmd])
            .env("A", bin)
            .env("R", &repo)
            .output()
            .unwrap()
    };
    let o = sh(r#"set -o pipefail; "$A" export --repo "$R" main | head -c 10 >/dev/null"#);
    assert!(!o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("error:") && err.contains("truncated"), "{err}");
}

/// An xattr name with `=` (or a newline) cannot be a PAX record key (the
/// key ends at the first `=`): refused, naming the file and the xattr,
/// instead of coming back under another name.
#[test]
fn export_refuses_an_xattr_name_a_pax_key_cannot_carry() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir_all(tree.join("usr")).unwrap();
    std::fs::write(tree.join("usr/f"), "data\n").unwrap();
    xattr(&tree.join("usr/f"), "user.a=b", b"v");
    let repo = t.path().join("repo");
    arbor_init(&repo, "archive");
    arbor_commit(&repo, &[&["-b", "main"], COMMIT_FLAGS].concat(), &tree);
    let out = t.path().join("out.tar");
    let r = arbor()
        .args(["export", "--repo", s(&repo), "main", "-o", s(&out)])
        .output()
        .unwrap();
    assert!(!r.status.success(), "{r:?}");
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("/usr/f") && err.contains("\"user.a=b\""),
        "{err}"
    );
    assert!(!out.exists());
}

/// Xattr values with newline bytes (binary `security.capability` values
/// have them), even ones whose pieces look like PAX records: the export
/// carries them and `commit --tar` reads them back into the same tree.
#[test]
fn newline_xattr_values_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir_all(tree.join("usr/d")).unwrap();
    std::fs::write(tree.join("usr/f"), "data\n").unwrap();
    xattr(&tree.join("usr/f"), "user.nl", b"a\n12 path=evil\nb");
    xattr(&tree.join("usr/d"), "user.bin", b"\n\x00\x01\n");
    let repo = t.path().join("repo");
    arbor_init(&repo, "archive");
    arbor_commit(&repo, &[&["-b", "main"], COMMIT_FLAGS].concat(), &tree);
    let file = t.path().join("c.tar");
    run_ok(arbor().args(["export", "--repo", s(&repo), "main", "-o", s(&file)]));
    let back = t.path().join("back");
    arbor_init(&back, "archive");
    run_ok(
        arbor()
            .args([
                "commit",
                "--repo",
                s(&back),
                "-b",
                "main",
                "--tar",
                s(&file),
            ])
            .args(COMMIT_FLAGS),
    );
    let (x, y) = (show(&repo, "main"), show(&back, "main"));
    assert_eq!(x["root_tree"], y["root_tree"]);
    assert_eq!(x["root_meta"], y["root_meta"]);
    assert_eq!(x["checksum"], y["checksum"]);
}

/// A tar stream of `members` (`(header, body)`), ended properly.
fn tar_of(members: &[(tar::Header, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (h, body) in members {
        let mut h = h.clone();
        h.set_size(body.len() as u64);
        h.set_cksum();
        b.append(&h, *body).unwrap();
    }
    b.into_inner().unwrap()
}

fn tar_header(kind: tar::EntryType, path: &str) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_path(path).unwrap();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// `commit --tar` of `data`: its stderr if it fails, else `None`.
fn commit_tar_bytes(dir: &Path, data: &[u8]) -> Option<String> {
    let repo = dir.join("r");
    if !repo.exists() {
        arbor_init(&repo, "archive");
    }
    let f = dir.join("in.tar");
    std::fs::write(&f, data).unwrap();
    let o = arbor()
        .args(["commit", "--repo", s(&repo), "-b", "x", "--tar", s(&f)])
        .args(COMMIT_FLAGS)
        .output()
        .unwrap();
    (!o.status.success()).then(|| String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Malformed PAX extended headers are refused with an error naming the
/// member they describe; well-formed ones (path, linkpath, uid, gid and
/// GNU long names) apply to the next member.
#[test]
fn commit_tar_reads_pax_records_by_their_length() {
    let t = tempfile::tempdir().unwrap();
    let file = |p: &str| tar_header(tar::EntryType::Regular, p);
    let x = || tar_header(tar::EntryType::XHeader, "PaxHeaders/f");
    for (body, why) in [
        (&b"99 path=usr/g\n"[..], "does not fit"),
        (b"13 path=usr/g\n", "newline"),
        (b"x path=usr/g\n", "decimal"),
        (b"11 pathusr\n", "'='"),
        (b"10 uid=1x\n", "uid"),
        (b"12 size=999\n", "size"),
    ] {
        let data = tar_of(&[(x(), body), (file("usr/f"), b"data")]);
        let err = commit_tar_bytes(t.path(), &data).unwrap_or_else(|| panic!("{body:?} accepted"));
        assert!(
            err.contains("Tar member 'usr/f'") && err.contains(why),
            "{body:?}: {err}"
        );
    }
    // Well-formed: the records apply to the next member only.
    let long = format!("usr/{}", "l".repeat(150));
    let mut link = tar_header(tar::EntryType::Symlink, "usr/s");
    link.set_mode(0o777);
    let data = tar_of(&[
        (x(), b"18 path=usr/named\n12 uid=4242\n"),
        (file("usr/ignored"), b"one"),
        (x(), b"19 linkpath=target\n"),
        (link, b""),
        (
            tar_header(tar::EntryType::GNULongName, "././@LongLink"),
            format!("{long}\0").as_bytes(),
        ),
        (file("usr/short"), b"two"),
        (file("usr/plain"), b"three"),
    ]);
    assert_eq!(commit_tar_bytes(t.path(), &data), None);
    let ls = run_ok(arbor().args(["ls", "--repo", s(&t.path().join("r")), "-R", "x", "/usr"]));
    assert!(ls.contains("/usr/named") && !ls.contains("ignored"), "{ls}");
    assert!(ls.contains("/usr/s -> target"), "{ls}");
    assert!(
        ls.contains(&format!("/{long}")) && !ls.contains("short"),
        "{ls}"
    );
    assert!(ls.contains("/usr/plain"), "{ls}");
    let named = ls.lines().find(|l| l.contains("/usr/named")).unwrap();
    assert!(named.contains("4242"), "{named}");
    // An extended header with no member after it.
    let data = tar_of(&[(x(), b"18 path=usr/named\n")]);
    let err = commit_tar_bytes(t.path(), &data).unwrap();
    assert!(err.contains("describes no member"), "{err}");
}
