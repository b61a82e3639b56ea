//! Files, directories, links, `/var`, path safety, determinism.

use super::*;
use crate::model::{DirEntry, LinkEntry, Owner};

#[test]
fn sudoers_line_changed_leaves_no_trace() {
    let s = Sys::new();
    let (d1, d2, d3) = (s.os("d1"), s.os("d2"), s.os("d3"));
    let wheel = "%wheel ALL=(ALL) ALL\n";
    let admin = "%admin ALL=(ALL) ALL\n";
    let a = with_files(&[
        (
            "/etc/sudoers.d/wheel",
            FileEntry {
                mode: 0o440,
                ..file(wheel)
            },
        ),
        (
            "/etc/sudoers",
            FileEntry {
                contents: None,
                append: vec![wheel.into()],
                mode: 0o440,
                ..Default::default()
            },
        ),
    ]);
    let b = with_files(&[
        (
            "/etc/sudoers.d/admin",
            FileEntry {
                mode: 0o440,
                ..file(admin)
            },
        ),
        (
            "/etc/sudoers",
            FileEntry {
                contents: None,
                append: vec![admin.into()],
                mode: 0o440,
                ..Default::default()
            },
        ),
    ]);
    compose(None, None, &d1, &a, true).unwrap();
    assert!(d1.read("sudoers").ends_with(wheel));
    assert_eq!(d1.read("sudoers.d/wheel"), wheel);
    compose(Some(&d1), Some(&a), &d2, &b, true).unwrap();
    assert_eq!(
        trace_of(&d2.root.join("etc"), "%wheel"),
        Vec::<String>::new()
    );
    assert!(d2.read("sudoers").ends_with(admin));
    assert!(d2.read("sudoers").starts_with("root ALL"));
    assert_eq!(d2.read("sudoers.d/admin"), admin);
    // Day 3, config gone: the OS default, byte for byte.
    compose(Some(&d2), Some(&b), &d3, &Config::default(), true).unwrap();
    assert_eq!(
        snapshot(&d3.root.join("etc")),
        snapshot(&d3.root.join("usr/etc"))
    );
}

#[test]
fn removed_file_returns_to_os_default() {
    let s = Sys::new();
    let (d1, d2) = (s.os("d1"), s.os("d2"));
    let a = with_files(&[(
        "/etc/chrony/chrony.conf",
        file("server ntp.example.com iburst\n"),
    )]);
    let r = compose(None, None, &d1, &a, true).unwrap();
    assert_eq!(
        d1.read("chrony/chrony.conf"),
        "server ntp.example.com iburst\n"
    );
    assert_eq!(
        r.paths,
        vec![PathChange {
            path: "/etc/chrony/chrony.conf".into(),
            change: Change::Modified,
            reason: Reason::Config
        }]
    );
    let r = compose(Some(&d1), Some(&a), &d2, &Config::default(), true).unwrap();
    assert_eq!(d2.read("chrony/chrony.conf"), CHRONY);
    assert_eq!(r.paths[0].reason, Reason::RevertedToOsDefault);
    assert!(r.local_changes.iter().all(|l| !l.kept), "{r:?}");
}

#[test]
fn directory_and_implicit_parents_disappear_on_removal() {
    let s = Sys::new();
    let (d1, d2, d3, d4) = (s.os("d1"), s.os("d2"), s.os("d3"), s.os("d4"));
    let a = Config {
        directories: [(
            "/etc/app/conf.d/extra".to_string(),
            DirEntry {
                mode: 0o750,
                ..Default::default()
            },
        )]
        .into(),
        files: [("/etc/app/main.conf".to_string(), file("x=1\n"))].into(),
        ..Default::default()
    };
    let m = managed(&a, &d1.defaults(), None).unwrap();
    assert_eq!(
        m.get("app"),
        Some(&Desired::Dir {
            mode: 0o755,
            uid: 0,
            gid: 0
        })
    );
    assert_eq!(
        m.get("app/conf.d"),
        Some(&Desired::Dir {
            mode: 0o755,
            uid: 0,
            gid: 0
        })
    );
    compose(None, None, &d1, &a, true).unwrap();
    assert_eq!(
        d1.path("app/conf.d/extra").metadata().unwrap().mode() & 0o7777,
        0o750
    );
    // The admin adds a file elsewhere.
    std::fs::write(d1.path("chrony/local.conf"), "admin\n").unwrap();
    compose(Some(&d1), Some(&a), &d2, &Config::default(), true).unwrap();
    assert!(!d2.exists("app"));
    assert_eq!(d2.read("chrony/local.conf"), "admin\n");
    // An admin file inside a managed implicit directory stays, with the
    // directories it needs; the config's entries go.
    compose(Some(&d2), None, &d3, &a, true).unwrap();
    std::fs::write(d3.path("app/conf.d/admin.conf"), "mine\n").unwrap();
    let r = compose(Some(&d3), Some(&a), &d4, &Config::default(), true).unwrap();
    assert_eq!(d4.read("app/conf.d/admin.conf"), "mine\n");
    assert!(!d4.exists("app/conf.d/extra"));
    assert!(!d4.exists("app/main.conf"));
    assert!(r
        .local_changes
        .iter()
        .any(|l| l.path == "/etc/app/conf.d/admin.conf" && l.kept));
}

#[test]
fn local_changes_dropped_without_keep_local() {
    let s = Sys::new();
    let (d1, d2) = (s.os("d1"), s.os("d2"));
    compose(None, None, &d1, &Config::default(), true).unwrap();
    std::fs::write(d1.path("chrony/chrony.conf"), "admin\n").unwrap();
    std::fs::write(d1.path("added"), "admin\n").unwrap();
    let r = compose(Some(&d1), None, &d2, &Config::default(), false).unwrap();
    assert_eq!(
        snapshot(&d2.root.join("etc")),
        snapshot(&d2.root.join("usr/etc"))
    );
    assert!(r
        .paths
        .iter()
        .any(|p| p.path == "/etc/added" && p.change == Change::Removed));
}

#[test]
fn path_through_symlink_leaving_etc_is_refused() {
    let s = Sys::new();
    let d1 = s.os("d1");
    let outside = s.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, d1.root.join("usr/etc/abs")).unwrap();
    std::os::unix::fs::symlink("../../outside", d1.root.join("usr/etc/rel")).unwrap();
    for p in ["/etc/abs/x", "/etc/rel/x", "/etc/rel/sub/x"] {
        let c = with_files(&[(p, file("evil\n"))]);
        let e = compose(None, None, &d1, &c, true).unwrap_err();
        assert!(
            format!("{e:#}").contains("leading outside /etc"),
            "{p}: {e:#}"
        );
        std::fs::remove_dir_all(d1.root.join("etc")).unwrap();
    }
    // Written directly, as a Managed: refused too, with the path named.
    d1.fresh_etc();
    for p in ["abs/x", "rel/x"] {
        let m: Managed = [(
            p.to_string(),
            Desired::File {
                content: b"evil".to_vec(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        )]
        .into_iter()
        .collect();
        let e = write_managed(&d1.etc(), &m).unwrap_err();
        assert!(format!("{e:#}").contains(&format!("/etc/{p}")), "{e:#}");
        assert!(format!("{e:#}").contains("leading outside /etc"), "{e:#}");
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    // A symlink inside /etc is followed.
    std::os::unix::fs::symlink("chrony", d1.path("inside")).unwrap();
    let m: Managed = [(
        "inside/y".to_string(),
        Desired::File {
            content: b"ok".to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        },
    )]
    .into_iter()
    .collect();
    write_managed(&d1.etc(), &m).unwrap();
    assert_eq!(d1.read("chrony/y"), "ok");
}

#[test]
fn var_entries_become_tmpfiles_lines() {
    let s = Sys::new();
    let d1 = s.os("d1");
    let c = Config {
        files: [(
            "/var/lib/app/token".to_string(),
            FileEntry {
                mode: 0o600,
                user: Owner::Id(7),
                ..file("secret\n")
            },
        )]
        .into(),
        directories: [(
            "/var/lib/app data".to_string(),
            DirEntry {
                mode: 0o750,
                ..Default::default()
            },
        )]
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
            "d /home/alice 0700 1000 1000 -",
            "C /var/lib/app/token - - - /etc/arbor/var-files/var/lib/app/token",
            "z /var/lib/app/token 0600 7 0 -",
            "d /var/lib/app\\x20data 0750 0 0 -",
            "L+ /var/lib/app/current - - - /var/lib/app/v%%1",
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

#[test]
fn hard_link_and_symlink() {
    let s = Sys::new();
    let d1 = s.os("d1");
    let c = Config {
        files: [("/etc/app/a".to_string(), file("A\n"))].into(),
        links: [
            (
                "/etc/app/b".to_string(),
                LinkEntry {
                    target: "/etc/app/a".into(),
                    hard: true,
                    ..Default::default()
                },
            ),
            (
                "/etc/app/c".to_string(),
                LinkEntry {
                    target: "a".into(),
                    ..Default::default()
                },
            ),
            (
                "/etc/app/d".to_string(),
                LinkEntry {
                    target: "/etc/chrony/chrony.conf".into(),
                    hard: true,
                    ..Default::default()
                },
            ),
        ]
        .into(),
        ..Default::default()
    };
    compose(None, None, &d1, &c, true).unwrap();
    let ino = |p: &str| d1.path(p).symlink_metadata().unwrap().ino();
    assert_eq!(ino("app/a"), ino("app/b"));
    assert_eq!(ino("app/d"), ino("chrony/chrony.conf"));
    assert_eq!(d1.link("app/c"), "a");
    let bad = Config {
        links: [(
            "/etc/x".to_string(),
            LinkEntry {
                target: "/var/y".into(),
                hard: true,
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    };
    assert!(managed(&bad, &d1.defaults(), None).is_err());
}

#[test]
fn owner_by_name() {
    let s = Sys::new();
    let d1 = s.os("d1");
    let c = Config {
        files: [(
            "/etc/app.conf".to_string(),
            FileEntry {
                user: Owner::Name("alice".into()),
                group: Owner::Name("_chrony".into()),
                ..file("x\n")
            },
        )]
        .into(),
        users: [("alice".to_string(), user(&[], &[]))].into(),
        ..Default::default()
    };
    let m = managed(&c, &d1.defaults(), None).unwrap();
    assert!(
        matches!(
            m["app.conf"],
            Desired::File {
                uid: 1000,
                gid: 102,
                ..
            }
        ),
        "{:?}",
        m["app.conf"]
    );
    let mut bad = c.clone();
    bad.files.get_mut("/etc/app.conf").unwrap().user = Owner::Name("nobody-here".into());
    let e = managed(&bad, &d1.defaults(), None).unwrap_err();
    assert!(
        format!("{e:#}").contains("/etc/app.conf") && format!("{e:#}").contains("nobody-here"),
        "{e:#}"
    );
    if arbor_testutil::needs_root("file owners") {
        return;
    }
    compose(None, None, &d1, &c, true).unwrap();
    let md = d1.path("app.conf").metadata().unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 102));
}

#[test]
fn same_inputs_through_different_histories_give_identical_etc() {
    let s = Sys::new();
    let (h1, h2, direct) = (s.os("h1"), s.os("h2"), s.os("direct"));
    let a = Config {
        files: [
            ("/etc/chrony/chrony.conf".to_string(), file("server a\n")),
            ("/etc/a/only".to_string(), file("a\n")),
        ]
        .into(),
        units: [
            ("chrony.service".to_string(), unit(None, Some(false))),
            ("ssh.service".to_string(), unit(None, Some(false))),
        ]
        .into(),
        users: [(
            "zed".to_string(),
            user(&["sudo"], &["ssh-ed25519 AAAA zed@a"]),
        )]
        .into(),
        ..Default::default()
    };
    let b = Config {
        files: [("/etc/chrony/chrony.conf".to_string(), file("server b\n"))].into(),
        units: [("chrony.service".to_string(), unit(None, Some(true)))].into(),
        users: [(
            "alice".to_string(),
            user(&["sudo"], &["ssh-ed25519 BBBB alice@b"]),
        )]
        .into(),
        ..Default::default()
    };
    compose(None, None, &h1, &a, true).unwrap();
    compose(Some(&h1), Some(&a), &h2, &b, true).unwrap();
    compose(None, None, &direct, &b, true).unwrap();
    assert_eq!(
        snapshot(&h2.root.join("etc")),
        snapshot(&direct.root.join("etc"))
    );
    assert_eq!(h2.read("passwd"), direct.read("passwd"));
    assert!(h2
        .read("passwd")
        .contains("alice:x:1000:1000::/home/alice:/bin/bash\n"));
}
