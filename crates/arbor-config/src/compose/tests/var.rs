//! Entries under `/var`: tmpfiles.d lines, checked with systemd-tmpfiles.

use super::*;
use crate::model::{DirEntry, LinkEntry, Owner};

#[test]
fn var_entries_become_tmpfiles_lines() {
    let s = Sys::new();
    let d1 = s.os("d1");
    let c = Config {
        files: [(
            "/var/lib/app/token".to_string(),
            FileEntry {
                mode: Some(0o600),
                user: Owner::Id(7),
                ..file("secret\n")
            },
        )]
        .into(),
        directories: [
            (
                "/var/lib/app data".to_string(),
                DirEntry {
                    mode: Some(0o750),
                    ..Default::default()
                },
            ),
            (
                "/var/lib/full%".to_string(),
                DirEntry {
                    mode: Some(0),
                    ..Default::default()
                },
            ),
        ]
        .into(),
        links: [(
            "/var/lib/app/current".to_string(),
            LinkEntry {
                target: "/var/lib/app/v%1".into(),
                ..Default::default()
            },
        )]
        .into(),
        users: [("alice".to_string(), user(&[], &[]))].into(),
        ..Default::default()
    };
    compose(None, None, &d1, &c, true).unwrap();
    let lines: Vec<String> = d1
        .read(TMPFILES_PATH)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "d /home/alice 0700 13334 13334 -",
            "C /var/lib/app/token - - - - /etc/arbor/var-files/var/lib/app/token",
            "z /var/lib/app/token 0600 7 0 -",
            "d /var/lib/app\\ data 0750 0 0 -",
            "d /var/lib/full%% 0000 0 0 -",
            "L+ /var/lib/app/current - - - - /var/lib/app/v%%1",
        ]
    );
    assert_eq!(d1.read("arbor/var-files/var/lib/app/token"), "secret\n");
    assert_eq!(
        d1.path("arbor/var-files/var/lib/app/token")
            .metadata()
            .unwrap()
            .mode()
            & 0o7777,
        0o600
    );
    let hard = Config {
        links: [(
            "/var/x".to_string(),
            LinkEntry {
                target: "/var/y".into(),
                hard: true,
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    };
    let e = managed(&hard, &d1.defaults(), None).unwrap_err();
    assert!(format!("{e:#}").contains("Hard link /var/x"), "{e:#}");
}

/// The tmpfiles.d lines do what they say with the real systemd-tmpfiles
/// (of Debian bookworm, systemd 252): run on the deployment as root.
#[test]
fn var_entries_work_with_systemd_tmpfiles() {
    require("systemd-tmpfiles");
    if arbor_testutil::needs_root("systemd-tmpfiles --root") {
        return;
    }
    let s = Sys::new();
    let d1 = s.os("d1");
    let c = Config {
        files: [(
            "/var/lib/app/token".to_string(),
            FileEntry {
                mode: Some(0o640),
                user: Owner::Id(7),
                group: Owner::Name("alice".into()),
                ..file("v1\n")
            },
        )]
        .into(),
        directories: [(
            "/var/lib/a dir%\\x".to_string(),
            DirEntry {
                mode: Some(0o750),
                user: Owner::Id(1),
                ..Default::default()
            },
        )]
        .into(),
        links: [(
            "/var/lib/app/current".to_string(),
            LinkEntry {
                target: "/var/lib/app/v%1 x".into(),
                ..Default::default()
            },
        )]
        .into(),
        users: [("alice".to_string(), user(&[], &[]))].into(),
        ..Default::default()
    };
    compose(None, None, &d1, &c, true).unwrap();
    let run = || {
        let conf = d1.path(TMPFILES_PATH);
        let o = std::process::Command::new("systemd-tmpfiles")
            .arg("--create")
            .arg(format!("--root={}", d1.root.display()))
            .arg(&conf)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run();
    let var = d1.root.join("var/lib");
    let meta = |p: &Path| {
        let m = p.symlink_metadata().unwrap();
        (m.mode() & 0o7777, m.uid(), m.gid())
    };
    assert_eq!(
        std::fs::read_to_string(var.join("app/token")).unwrap(),
        "v1\n"
    );
    assert_eq!(meta(&var.join("app/token")), (0o640, 7, 13334));
    assert_eq!(meta(&var.join("a dir%\\x")), (0o750, 1, 0));
    assert_eq!(
        std::fs::read_link(var.join("app/current")).unwrap(),
        Path::new("/var/lib/app/v%1 x")
    );
    assert_eq!(meta(&d1.root.join("home/alice")), (0o700, 13334, 13334));
    // A later boot: the symlink is put back, an existing file is kept.
    std::fs::write(var.join("app/token"), "local\n").unwrap();
    std::fs::remove_file(var.join("app/current")).unwrap();
    std::os::unix::fs::symlink("/elsewhere", var.join("app/current")).unwrap();
    run();
    assert_eq!(
        std::fs::read_to_string(var.join("app/token")).unwrap(),
        "local\n"
    );
    assert_eq!(
        std::fs::read_link(var.join("app/current")).unwrap(),
        Path::new("/var/lib/app/v%1 x")
    );
}

/// A `/var` entry without a declared mode keeps the mode of what `/var`
/// already holds (tmpfiles `-`, as Ignition keeps an existing entry's
/// mode); an append under `/var` cannot be expressed and is refused.
#[test]
fn var_entries_without_a_mode_keep_the_existing_one_and_appends_are_refused() {
    let s = Sys::new();
    let d1 = s.os("d1");
    let c = Config {
        files: [(
            "/var/lib/app/conf".to_string(),
            FileEntry {
                mode: None,
                ..file("x\n")
            },
        )]
        .into(),
        directories: [("/var/lib/app".to_string(), DirEntry::default())].into(),
        ..Default::default()
    };
    compose(None, None, &d1, &c, true).unwrap();
    let text = d1.read(TMPFILES_PATH);
    assert!(text.contains("\nd /var/lib/app - 0 0 -\n"), "{text}");
    assert!(text.contains("\nz /var/lib/app/conf - 0 0 -\n"), "{text}");
    let mut f = file("");
    f.contents = None;
    f.append = vec![b"more\n".to_vec()];
    let c = Config {
        files: [("/var/log/app.log".to_string(), f)].into(),
        ..Default::default()
    };
    let d2 = s.os("d2");
    let e = format!("{:#}", compose(None, None, &d2, &c, true).unwrap_err());
    assert!(e.contains("append under /var is not supported"), "{e}");
}
