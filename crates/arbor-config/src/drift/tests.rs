//! Unit tests of the `/etc` and `/usr` walkers on temporary trees.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use arbor_format::RepoMode;
use arbor_repo::checkout::{checkout, CheckoutOptions};
use arbor_repo::commit::{commit, CommitOptions, CommitSource};
use arbor_repo::{NullProgress, Repo};

use super::etc::{etc_drift, ManagedOwners};
use super::expected::Overlay;
use super::{usr, DriftEntry, EntryKind};
use crate::compose::Desired;

fn open(p: &Path) -> OwnedFd {
    arbor_fs::open_dir(rustix::fs::CWD, &p.to_string_lossy()).unwrap()
}

/// What compose gives managed entries when the tests' caller composes.
fn owners() -> ManagedOwners {
    if rustix::process::geteuid().is_root() {
        ManagedOwners::Declared
    } else {
        ManagedOwners::Writer(
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        )
    }
}

fn put(p: &Path, content: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

/// Path → sorted change names.
fn by_path(v: &[DriftEntry]) -> BTreeMap<String, Vec<&'static str>> {
    v.iter()
        .map(|e| {
            (
                e.path.clone(),
                e.changes.iter().map(|c| c.as_str()).collect(),
            )
        })
        .collect()
}

fn cp_a(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// /usr/etc-like defaults and an identical copy as /etc.
fn etc_pair() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("defaults");
    put(&d.join("a.conf"), "a=1\n");
    put(&d.join("gone.conf"), "g=1\n");
    put(&d.join("d/b.conf"), "b=1\n");
    put(&d.join("d/owned.conf"), "o=1\n");
    put(&d.join("d/x.conf"), "x=1\n");
    put(&d.join("d/t.conf"), "t=1\n");
    put(&d.join("sub/deep/c.conf"), "c=1\n");
    put(&d.join("gone-dir/inner/f"), "f\n");
    put(&d.join(".updated"), "");
    symlink("a.conf", d.join("link")).unwrap();
    let e = t.path().join("etc");
    cp_a(&d, &e);
    std::fs::remove_file(e.join(".updated")).unwrap();
    (t, d, e)
}

#[test]
fn identical_etc_is_clean() {
    let (_t, d, e) = etc_pair();
    // systemd's stamp, written back at boot: not drift.
    put(&e.join(".updated"), "# written by systemd-update-done\n");
    // A FIFO of the defaults is never copied to /etc: not missing there.
    let st = std::process::Command::new("mkfifo")
        .arg(d.join("fifo"))
        .status()
        .unwrap();
    assert!(st.success());
    let out = etc_drift(&open(&e), Some(&open(&d)), &Overlay::default(), owners()).unwrap();
    assert_eq!(out, vec![], "{out:#?}");
}

#[test]
fn etc_drift_of_every_kind() {
    let (_t, d, e) = etc_pair();
    std::fs::write(e.join("a.conf"), "a=2\n").unwrap();
    chmod(&e.join("d/b.conf"), 0o600);
    std::fs::remove_file(e.join("gone.conf")).unwrap();
    std::fs::remove_dir_all(e.join("gone-dir")).unwrap();
    put(&e.join("new.conf"), "n\n");
    put(&e.join("newdir/inner/y"), "y\n");
    std::fs::remove_file(e.join("link")).unwrap();
    symlink("d/b.conf", e.join("link")).unwrap();
    std::fs::remove_dir_all(e.join("sub")).unwrap();
    put(&e.join("sub"), "now a file\n");
    setxattr(&e.join("d/x.conf"), "user.test", b"v");
    std::fs::remove_file(e.join("d/t.conf")).unwrap();
    put(&e.join("d/t.conf/payload"), "p\n");
    let bad = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"bad\xff");
    std::fs::write(e.join("d").join(bad), "?").unwrap();
    let root = arbor_fs::is_root();
    if root {
        rustix::fs::chownat(
            rustix::fs::CWD,
            e.join("d/owned.conf"),
            Some(rustix::fs::Uid::from_raw(1000)),
            None,
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
    }
    let out = etc_drift(&open(&e), Some(&open(&d)), &Overlay::default(), owners()).unwrap();
    let mut want: BTreeMap<String, Vec<&str>> = [
        ("/etc/a.conf", vec!["modified"]),
        ("/etc/d/b.conf", vec!["mode-changed"]),
        ("/etc/d/x.conf", vec!["xattrs-changed"]),
        ("/etc/gone.conf", vec!["deleted"]),
        ("/etc/gone-dir", vec!["deleted"]),
        ("/etc/gone-dir/inner", vec!["deleted"]),
        ("/etc/gone-dir/inner/f", vec!["deleted"]),
        ("/etc/new.conf", vec!["added"]),
        ("/etc/newdir", vec!["added"]),
        ("/etc/newdir/inner", vec!["added"]),
        ("/etc/newdir/inner/y", vec!["added"]),
        ("/etc/link", vec!["modified"]),
        ("/etc/sub", vec!["type-changed"]),
        // A directory where a file belongs: what it holds is added.
        ("/etc/d/t.conf", vec!["type-changed"]),
        ("/etc/d/t.conf/payload", vec!["added"]),
        ("/etc/d/bad\\xff", vec!["added"]),
    ]
    .into_iter()
    .map(|(p, c)| (p.to_string(), c))
    .collect();
    if root {
        want.insert("/etc/d/owned.conf".into(), vec!["owner-changed"]);
    }
    assert_eq!(by_path(&out), want, "{out:#?}");
    // Walk order: parents first, names sorted.
    let paths: Vec<&str> = out.iter().map(|e| e.path.as_str()).collect();
    let pos = |p: &str| paths.iter().position(|x| *x == p).unwrap();
    assert!(pos("/etc/gone-dir") < pos("/etc/gone-dir/inner/f"));
    let link = out.iter().find(|e| e.path == "/etc/link").unwrap();
    assert_eq!(
        link.expected.as_ref().unwrap().target.as_deref(),
        Some("a.conf")
    );
    assert_eq!(
        link.actual.as_ref().unwrap().target.as_deref(),
        Some("d/b.conf")
    );
    let sub = out.iter().find(|e| e.path == "/etc/sub").unwrap();
    assert_eq!(sub.expected.as_ref().unwrap().kind, EntryKind::Dir);
    assert_eq!(sub.actual.as_ref().unwrap().kind, EntryKind::File);
}

#[test]
fn several_changes_on_one_path() {
    let (_t, d, e) = etc_pair();
    std::fs::write(e.join("a.conf"), "a=22\n").unwrap();
    chmod(&e.join("a.conf"), 0o600);
    setxattr(&e.join("a.conf"), "user.x", b"1");
    let out = etc_drift(&open(&e), Some(&open(&d)), &Overlay::default(), owners()).unwrap();
    assert_eq!(
        by_path(&out)["/etc/a.conf"],
        vec!["modified", "mode-changed", "xattrs-changed"]
    );
}

fn file(content: &str, mode: u32) -> Desired {
    Desired::File {
        content: content.as_bytes().to_vec(),
        mode,
        uid: 0,
        gid: 0,
    }
}

#[test]
fn managed_entries_are_expected() {
    let (_t, d, e) = etc_pair();
    let (uid, gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let owned = |w: Desired| match w {
        Desired::File { content, mode, .. } => Desired::File {
            content,
            mode,
            uid,
            gid,
        },
        w => w,
    };
    // Written as the config says: clean.
    std::fs::write(e.join("a.conf"), "managed\n").unwrap();
    put(&e.join("cfg/new/x.conf"), "x\n");
    chmod(&e.join("cfg/new/x.conf"), 0o600);
    chmod(&e.join("cfg"), 0o755);
    chmod(&e.join("cfg/new"), 0o755);
    std::fs::remove_file(e.join("gone.conf")).unwrap();
    let mut entries = vec![
        ("a.conf".to_string(), owned(file("managed\n", 0o644))),
        ("cfg/new/x.conf".to_string(), owned(file("x\n", 0o600))),
        ("gone.conf".to_string(), Desired::Absent),
    ];
    if arbor_fs::is_root() {
        let o = Overlay::new(entries.clone()).unwrap();
        let out = etc_drift(&open(&e), Some(&open(&d)), &o, owners()).unwrap();
        assert_eq!(out, vec![], "{out:#?}");
    }
    // Drift from the managed state: content, an absent default back, and
    // a managed symlink with another target.
    std::fs::write(e.join("cfg/new/x.conf"), "y\n").unwrap();
    put(&e.join("gone.conf"), "back\n");
    entries.push((
        "/etc/managed-link".to_string(),
        Desired::Symlink {
            target: "a.conf".into(),
            uid,
            gid,
        },
    ));
    symlink("other", e.join("managed-link")).unwrap();
    let o = Overlay::new(entries).unwrap();
    let out = etc_drift(&open(&e), Some(&open(&d)), &o, owners()).unwrap();
    let got = by_path(&out);
    assert_eq!(got["/etc/cfg/new/x.conf"], vec!["modified"], "{out:#?}");
    assert_eq!(got["/etc/gone.conf"], vec!["added"]);
    assert_eq!(got["/etc/managed-link"], vec!["modified"]);
    assert!(!got.contains_key("/etc/a.conf"), "{out:#?}");
    // Missing managed entries are deleted, with the implied directories.
    std::fs::remove_dir_all(e.join("cfg")).unwrap();
    let out = etc_drift(&open(&e), Some(&open(&d)), &o, owners()).unwrap();
    let got = by_path(&out);
    for p in ["/etc/cfg", "/etc/cfg/new", "/etc/cfg/new/x.conf"] {
        assert_eq!(got[p], vec!["deleted"], "{p}: {out:#?}");
    }
}

#[test]
fn hardlinks_are_checked_by_inode() {
    let (_t, d, e) = etc_pair();
    std::fs::hard_link(e.join("a.conf"), e.join("hl")).unwrap();
    let o = Overlay::new([(
        "hl".to_string(),
        Desired::Hardlink {
            to: "/etc/a.conf".into(),
        },
    )])
    .unwrap();
    assert_eq!(
        etc_drift(&open(&e), Some(&open(&d)), &o, owners()).unwrap(),
        vec![]
    );
    std::fs::remove_file(e.join("hl")).unwrap();
    std::fs::copy(e.join("a.conf"), e.join("hl")).unwrap();
    let out = etc_drift(&open(&e), Some(&open(&d)), &o, owners()).unwrap();
    assert_eq!(by_path(&out)["/etc/hl"], vec!["modified"]);
}

#[test]
fn a_hardlink_whose_target_is_gone_is_checked_as_the_target() {
    let (_t, d, e) = etc_pair();
    let (uid, gid) = match owners() {
        ManagedOwners::Declared => (0, 0),
        ManagedOwners::Writer(u, g) => (u, g),
    };
    let x = Desired::File {
        content: b"x=managed\n".to_vec(),
        mode: 0o640,
        uid,
        gid,
    };
    std::fs::write(e.join("x.conf"), "x=managed\n").unwrap();
    chmod(&e.join("x.conf"), 0o640);
    std::fs::hard_link(e.join("x.conf"), e.join("hl")).unwrap();
    std::fs::hard_link(e.join("a.conf"), e.join("hl-default")).unwrap();
    let o = Overlay::new([
        ("x.conf".to_string(), x),
        (
            "hl".to_string(),
            Desired::Hardlink {
                to: "x.conf".into(),
            },
        ),
        (
            "hl-default".to_string(),
            Desired::Hardlink {
                to: "a.conf".into(),
            },
        ),
    ])
    .unwrap();
    assert_eq!(
        etc_drift(&open(&e), Some(&open(&d)), &o, owners()).unwrap(),
        vec![]
    );
    // Target and link removed, the link written anew: no target to share
    // an inode with, so the link is compared with what the target should be.
    for (target, link) in [("x.conf", "hl"), ("a.conf", "hl-default")] {
        std::fs::remove_file(e.join(target)).unwrap();
        std::fs::remove_file(e.join(link)).unwrap();
        std::fs::write(e.join(link), "EVIL\n").unwrap();
        chmod(&e.join(link), 0o4777);
    }
    let out = etc_drift(&open(&e), Some(&open(&d)), &o, owners()).unwrap();
    let got = by_path(&out);
    assert_eq!(got["/etc/x.conf"], vec!["deleted"], "{out:#?}");
    assert_eq!(got["/etc/a.conf"], vec!["deleted"], "{out:#?}");
    assert_eq!(got["/etc/hl"], vec!["modified", "mode-changed"], "{out:#?}");
    assert_eq!(got["/etc/hl-default"], vec!["modified", "mode-changed"]);
    // The same content and mode as the target should have: nothing to say.
    std::fs::write(e.join("hl"), "x=managed\n").unwrap();
    chmod(&e.join("hl"), 0o640);
    let got = by_path(&etc_drift(&open(&e), Some(&open(&d)), &o, owners()).unwrap());
    assert!(!got.contains_key("/etc/hl"), "{got:#?}");
}

/// A bare (as root) or bare-user repository with a commit of a small OS
/// tree, and its deployment-style checkout in `co`.
struct UsrFixture {
    _t: tempfile::TempDir,
    repo: Repo,
    commit: arbor_format::Checksum,
    co: std::path::PathBuf,
}

fn usr_fixture(mode: RepoMode) -> UsrFixture {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    put(&tree.join("usr/bin/tool"), "#!/bin/sh\necho tool\n");
    chmod(&tree.join("usr/bin/tool"), 0o755);
    put(&tree.join("usr/bin/suid"), "#!/bin/sh\n");
    chmod(&tree.join("usr/bin/suid"), 0o4755);
    put(&tree.join("usr/lib/data"), &"data\n".repeat(100_000));
    put(&tree.join("usr/lib/empty"), "");
    // Not readable by its owner: a hardlinked bare-user object gets 0644.
    put(&tree.join("usr/lib/write-only"), "w\n");
    chmod(&tree.join("usr/lib/write-only"), 0o244);
    symlink("data", tree.join("usr/lib/link")).unwrap();
    put(&tree.join("usr/share/doc/a/README"), "readme\n");
    put(&tree.join("usr/etc/x.conf"), "x\n");
    if mode == RepoMode::Bare {
        setxattr(&tree.join("usr/lib/data"), "user.label", b"L");
    }
    let repo = Repo::init(&t.path().join("repo"), mode).unwrap();
    let lock = repo.lock(true).unwrap();
    let opts = CommitOptions {
        timestamp: Some(0),
        ..Default::default()
    };
    let c = commit(&lock, CommitSource::Dir(&tree), &opts, &NullProgress).unwrap();
    drop(lock);
    let co = t.path().join("co");
    let opts = CheckoutOptions {
        hardlink: true,
        user_mode: mode != RepoMode::Bare,
        ..Default::default()
    };
    checkout(&repo, &c, &co, &opts, &NullProgress).unwrap();
    UsrFixture {
        _t: t,
        repo,
        commit: c,
        co,
    }
}

impl UsrFixture {
    fn drift(&self) -> BTreeMap<String, Vec<&'static str>> {
        let d = usr::usr_drift(&self.repo, &self.commit, &open(&self.co)).unwrap();
        by_path(&d.entries)
    }
}

/// Replaces `p` by a copy with other content (not touching a linked object).
fn rewrite(p: &Path, content: &str) {
    let md = std::fs::symlink_metadata(p).unwrap();
    std::fs::remove_file(p).unwrap();
    std::fs::write(p, content).unwrap();
    chmod(p, md.permissions().mode());
}

fn usr_every_kind(mode: RepoMode) {
    let f = usr_fixture(mode);
    let clean = usr::usr_drift(&f.repo, &f.commit, &open(&f.co)).unwrap();
    assert_eq!(clean.entries, vec![], "{mode}: {:#?}", clean.entries);
    assert_eq!(clean.files, 8);
    assert!(clean.bytes >= 500_000);
    let u = f.co.join("usr");
    // A hardlinked object modified in place: same inode, new content.
    std::fs::OpenOptions::new()
        .write(true)
        .open(u.join("lib/data"))
        .and_then(|mut x| std::io::Write::write_all(&mut x, b"DATA"))
        .unwrap();
    chmod(&u.join("bin/tool"), 0o700);
    std::fs::remove_file(u.join("lib/link")).unwrap();
    symlink("empty", u.join("lib/link")).unwrap();
    std::fs::remove_file(u.join("lib/empty")).unwrap();
    put(&u.join("lib/new"), "new\n");
    std::fs::remove_dir_all(u.join("share/doc")).unwrap();
    std::fs::create_dir(u.join("share/doc")).unwrap();
    std::fs::remove_file(u.join("etc/x.conf")).unwrap();
    std::fs::create_dir(u.join("etc/x.conf")).unwrap();
    put(&u.join("etc/x.conf/payload"), "p\n");
    // A new inode without the setuid bit: the commit's mode in a user-mode
    // checkout (which drops it), a change in a bare one.
    rewrite(&u.join("bin/suid"), "#!/bin/sh\n");
    chmod(&u.join("bin/suid"), 0o755);
    let mut want: BTreeMap<String, Vec<&str>> = [
        ("/usr/lib/data", vec!["modified"]),
        // Bare: the chmod changed the shared object too, so what changed
        // cannot be told; bare-user keeps the commit's mode in an xattr.
        (
            "/usr/bin/tool",
            vec![if mode == RepoMode::Bare {
                "modified"
            } else {
                "mode-changed"
            }],
        ),
        ("/usr/lib/link", vec!["modified"]),
        ("/usr/lib/empty", vec!["deleted"]),
        ("/usr/lib/new", vec!["added"]),
        ("/usr/share/doc/a", vec!["deleted"]),
        ("/usr/share/doc/a/README", vec!["deleted"]),
        ("/usr/etc/x.conf", vec!["type-changed"]),
        // A directory where a file belongs: what it holds is added.
        ("/usr/etc/x.conf/payload", vec!["added"]),
    ]
    .into_iter()
    .map(|(p, c)| (p.to_string(), c))
    .collect();
    if mode == RepoMode::Bare {
        // The rewrite lost the setuid bit the commit has.
        want.insert("/usr/bin/suid".into(), vec!["mode-changed"]);
    }
    assert_eq!(f.drift(), want, "{mode}");
    if mode == RepoMode::Bare {
        // Owner and xattrs count in a bare checkout.
        setxattr(&u.join("share/doc"), "user.x", b"1");
        // New inodes (no longer the objects): each field is told apart.
        let data = u.join("lib/data");
        rewrite(&data, "other data\n");
        // (bin/suid is a copy already: the chmod above corrupted bin/tool's object.)
        let tool = u.join("bin/suid");
        chmod(&tool, 0o750);
        rustix::fs::chownat(
            rustix::fs::CWD,
            &tool,
            Some(rustix::fs::Uid::from_raw(1000)),
            None,
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
        let readme = u.join("share/doc");
        std::fs::remove_dir(&readme).unwrap();
        let got = f.drift();
        assert_eq!(got["/usr/share/doc/a"], vec!["deleted"]);
        // xattrs: the commit's user.label is missing on the new inode.
        assert_eq!(got["/usr/lib/data"], vec!["modified", "xattrs-changed"]);
        assert_eq!(got["/usr/bin/suid"], vec!["mode-changed", "owner-changed"]);
        std::fs::create_dir(&readme).unwrap();
        setxattr(&readme, "user.x", b"1");
        assert_eq!(f.drift()["/usr/share/doc"], vec!["xattrs-changed"]);
    }
}

#[test]
fn usr_drift_bare_user() {
    usr_every_kind(RepoMode::BareUser);
}

#[test]
fn usr_drift_bare() {
    if arbor_testutil::needs_root("bare repository drift") {
        return;
    }
    usr_every_kind(RepoMode::Bare);
}

#[test]
fn usr_drift_bare_user_only() {
    let f = usr_fixture(RepoMode::BareUserOnly);
    assert_eq!(f.drift(), BTreeMap::new());
    let u = f.co.join("usr");
    rewrite(&u.join("bin/tool"), "other\n");
    assert_eq!(f.drift()["/usr/bin/tool"], vec!["modified"]);
}

/// A user-mode checkout has one shape: no xattrs but user.ostreemeta, and
/// the owner of whoever checked out (or wrote the repository).
#[test]
fn usr_user_mode_checks_owner_and_xattrs() {
    for mode in [RepoMode::BareUser, RepoMode::BareUserOnly] {
        let f = usr_fixture(mode);
        assert_eq!(f.drift(), BTreeMap::new(), "{mode}");
        let u = f.co.join("usr");
        setxattr(&u.join("lib/write-only"), "user.evil", b"1");
        setxattr(&u.join("share/doc"), "user.evil", b"1");
        let mut want: BTreeMap<String, Vec<&str>> = [
            ("/usr/lib/write-only", vec!["xattrs-changed"]),
            ("/usr/share/doc", vec!["xattrs-changed"]),
        ]
        .into_iter()
        .map(|(p, c)| (p.to_string(), c))
        .collect();
        if arbor_fs::is_root() {
            rustix::fs::chownat(
                rustix::fs::CWD,
                u.join("bin/tool"),
                Some(rustix::fs::Uid::from_raw(1000)),
                None,
                rustix::fs::AtFlags::empty(),
            )
            .unwrap();
            want.insert("/usr/bin/tool".into(), vec!["owner-changed"]);
        }
        assert_eq!(f.drift(), want, "{mode}");
    }
}

/// Names that are not UTF-8 are listed (escaped, with a note), in /etc and
/// below an added /usr directory alike, never skipped.
#[test]
fn non_utf8_names_are_listed_escaped() {
    let bad = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"bad\xffname");
    let f = usr_fixture(RepoMode::BareUser);
    let u = f.co.join("usr");
    put(&u.join("lib/newdir/ok"), "ok\n");
    std::fs::write(u.join("lib/newdir").join(bad), "?").unwrap();
    std::fs::write(u.join("lib").join(bad), "?").unwrap();
    let d = usr::usr_drift(&f.repo, &f.commit, &open(&f.co)).unwrap();
    let got = by_path(&d.entries);
    for p in [
        "/usr/lib/newdir",
        "/usr/lib/newdir/ok",
        "/usr/lib/newdir/bad\\xffname",
        "/usr/lib/bad\\xffname",
    ] {
        assert_eq!(got.get(p), Some(&vec!["added"]), "{p}: {got:#?}");
    }
    let noted = |p: &str| {
        d.entries
            .iter()
            .find(|e| e.path == p)
            .unwrap()
            .note
            .as_deref()
            == Some(super::NOT_UTF8_NOTE)
    };
    assert!(noted("/usr/lib/newdir/bad\\xffname") && noted("/usr/lib/bad\\xffname"));
    assert!(!noted("/usr/lib/newdir/ok"));
    let (_t, dd, e) = etc_pair();
    std::fs::write(e.join(bad), "?").unwrap();
    let out = etc_drift(&open(&e), Some(&open(&dd)), &Overlay::default(), owners()).unwrap();
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].path, "/etc/bad\\xffname");
    assert_eq!(out[0].note.as_deref(), Some(super::NOT_UTF8_NOTE));
    // Not expressible in a configuration: left out, said why.
    let a = super::ignition::adopt(&open(&e), &out).unwrap();
    assert_eq!(a.document.get("storage"), None);
    assert_eq!(a.not_expressible.len(), 1);
    assert_eq!(a.not_expressible[0].0, "/etc/bad\\xffname");
}

/// A commit with its defaults in /etc (no /usr/etc) is deployed with that
/// /etc moved to /usr/etc: compared there, not reported as added.
#[test]
fn legacy_etc_is_compared_as_usr_etc() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    put(&tree.join("usr/bin/tool"), "x\n");
    put(&tree.join("etc/a.conf"), "a\n");
    let repo = Repo::init(&t.path().join("repo"), RepoMode::BareUser).unwrap();
    let lock = repo.lock(true).unwrap();
    let opts = CommitOptions {
        timestamp: Some(0),
        ..Default::default()
    };
    let c = commit(&lock, CommitSource::Dir(&tree), &opts, &NullProgress).unwrap();
    drop(lock);
    let co = t.path().join("co");
    let opts = CheckoutOptions {
        hardlink: true,
        user_mode: true,
        ..Default::default()
    };
    checkout(&repo, &c, &co, &opts, &NullProgress).unwrap();
    std::fs::rename(co.join("etc"), co.join("usr/etc")).unwrap();
    let d = usr::usr_drift(&repo, &c, &open(&co)).unwrap();
    assert_eq!(d.entries, vec![], "{:#?}", d.entries);
    std::fs::write(co.join("usr/etc/a.conf"), "changed\n").unwrap();
    let d = usr::usr_drift(&repo, &c, &open(&co)).unwrap();
    assert_eq!(by_path(&d.entries)["/usr/etc/a.conf"], vec!["modified"]);
}

/// A managed directory over a default one keeps the default's xattrs
/// (compose sets owner and mode only); a managed file is written afresh.
#[test]
fn managed_directory_keeps_the_default_xattrs() {
    let (_t, d, e) = etc_pair();
    setxattr(&d.join("d"), "user.label", b"L");
    setxattr(&e.join("d"), "user.label", b"L");
    let (uid, gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    chmod(&e.join("d"), 0o700);
    let o = Overlay::new([(
        "d".to_string(),
        Desired::Dir {
            mode: 0o700,
            uid,
            gid,
        },
    )])
    .unwrap();
    assert_eq!(
        etc_drift(&open(&e), Some(&open(&d)), &o, owners()).unwrap(),
        vec![]
    );
    rustix::fs::lremovexattr(e.join("d"), "user.label").unwrap();
    let out = etc_drift(&open(&e), Some(&open(&d)), &o, owners()).unwrap();
    assert_eq!(by_path(&out)["/etc/d"], vec!["xattrs-changed"]);
}

/// Makes `levels` nested directories `z` under `dir` (deeper than
/// `PATH_MAX` can name), each with a file `f`.
fn deep_chain(dir: &Path, levels: usize) {
    let mut cur = open(dir);
    for _ in 0..levels {
        rustix::fs::mkdirat(&cur, "z", rustix::fs::Mode::from_raw_mode(0o755)).unwrap();
        cur = arbor_fs::open_dir(&cur, "z").unwrap();
        let f = rustix::fs::openat(
            &cur,
            "f",
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CREATE,
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
        drop(f);
    }
}

/// Both walks are iterative: a chain 3,000 levels deep is listed whole,
/// added to /etc, deleted from it, added to /usr.
#[test]
fn deep_trees() {
    const LEVELS: usize = 3000;
    let (_t, d, e) = etc_pair();
    let only = |out: &[DriftEntry], c: super::Change| {
        assert_eq!(out.len(), 2 * LEVELS, "every directory and file");
        assert!(out.iter().all(|x| x.changes == [c]));
    };
    deep_chain(&e, LEVELS);
    let out = etc_drift(&open(&e), Some(&open(&d)), &Overlay::default(), owners()).unwrap();
    only(&out, super::Change::Added);
    arbor_fs::remove_all(open(&e), "z").unwrap();
    deep_chain(&d, LEVELS);
    let out = etc_drift(&open(&e), Some(&open(&d)), &Overlay::default(), owners()).unwrap();
    only(&out, super::Change::Deleted);
    arbor_fs::remove_all(open(&d), "z").unwrap();
    let f = usr_fixture(RepoMode::BareUser);
    deep_chain(&f.co.join("usr/share"), LEVELS);
    let u = usr::usr_drift(&f.repo, &f.commit, &open(&f.co)).unwrap();
    only(&u.entries, super::Change::Added);
    arbor_fs::remove_all(open(&f.co.join("usr/share")), "z").unwrap();
}
