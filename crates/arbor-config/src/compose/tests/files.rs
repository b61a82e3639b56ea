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
                mode: Some(0o440),
                ..file(wheel)
            },
        ),
        (
            "/etc/sudoers",
            FileEntry {
                contents: None,
                append: vec![wheel.into()],
                mode: Some(0o440),
                ..Default::default()
            },
        ),
    ]);
    let b = with_files(&[
        (
            "/etc/sudoers.d/admin",
            FileEntry {
                mode: Some(0o440),
                ..file(admin)
            },
        ),
        (
            "/etc/sudoers",
            FileEntry {
                contents: None,
                append: vec![admin.into()],
                mode: Some(0o440),
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
    assert_eq!(r.paths[0].reason.to_string(), "reverted to OS default");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["paths"][0],
        serde_json::json!({"path": "/etc/chrony/chrony.conf", "change": "modified", "reason": "reverted-to-os-default"})
    );
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
                mode: Some(0o750),
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
    let passwd = d1.read("passwd") + "carol:x:1000:1000::/home/carol:/bin/sh\n";
    std::fs::write(d1.path("passwd"), passwd).unwrap();
    let r = compose(Some(&d1), None, &d2, &Config::default(), false).unwrap();
    assert_eq!(
        snapshot(&d2.root.join("etc")),
        snapshot(&d2.root.join("usr/etc"))
    );
    assert!(r
        .paths
        .iter()
        .any(|p| p.path == "/etc/added" && p.change == Change::Removed));
    let dropped = |p: &str| {
        r.paths
            .iter()
            .any(|c| c.path == p && c.reason == Reason::LocalChangeDropped)
    };
    assert!(dropped("/etc/passwd") && dropped("/etc/added"), "{r:?}");
    assert!(r.local_changes.iter().all(|l| !l.kept));
}

/// An OS directory the new OS no longer has, whose mode the admin
/// changed, is carried whole by the /etc merge: the previous config's
/// file inside it must not come along.
#[test]
fn whole_directory_carry_drops_previous_config_entries() {
    let s = Sys::new();
    let (d1, d2) = (s.os("d1"), s.os("d2"));
    std::fs::remove_dir_all(d2.root.join("usr/etc/chrony")).unwrap();
    let a = with_files(&[("/etc/chrony/conf.d/pool.conf", file("server a\n"))]);
    compose(None, None, &d1, &a, true).unwrap();
    std::fs::set_permissions(d1.path("chrony"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(d1.path("chrony/local.conf"), "mine\n").unwrap();
    compose(Some(&d1), Some(&a), &d2, &Config::default(), true).unwrap();
    assert_eq!(d2.read("chrony/local.conf"), "mine\n");
    assert_eq!(d2.read("chrony/chrony.conf"), CHRONY);
    assert!(
        !d2.exists("chrony/conf.d"),
        "the config's directory came along"
    );
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
    let e = format!("{:#}", managed(&bad, &d1.defaults(), None).unwrap_err());
    assert!(
        e.contains("Hard link /etc/x") && e.contains("/var/y is not below /etc"),
        "{e}"
    );
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
                uid: 13334,
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
    assert_eq!((md.uid(), md.gid()), (13334, 102));
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
        .contains("alice:x:13334:13334::/home/alice:/bin/bash\n"));
}

#[test]
fn os_directory_mode_reverts_on_removal() {
    let s = Sys::new();
    let (d1, d2) = (s.os("d1"), s.os("d2"));
    let a = Config {
        directories: [(
            "/etc/ssh".to_string(),
            DirEntry {
                mode: Some(0o700),
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    };
    compose(None, None, &d1, &a, true).unwrap();
    let mode = |d: &Dep| d.path("ssh").metadata().unwrap().mode() & 0o7777;
    assert_eq!(mode(&d1), 0o700);
    assert_eq!(
        d1.read("ssh/sshd_config"),
        "Include /etc/ssh/sshd_config.d/*.conf\n"
    );
    // The merge of an admin file in it would set the directory's mode
    // from the old /etc: the config's.
    std::fs::write(d1.path("ssh/admin.conf"), "mine\n").unwrap();
    compose(Some(&d1), Some(&a), &d2, &Config::default(), true).unwrap();
    assert_eq!(mode(&d2), 0o755);
    assert_eq!(d2.read("ssh/admin.conf"), "mine\n");
}

#[test]
fn conflicting_declarations_are_errors() {
    let s = Sys::new();
    let d1 = s.os("d1");
    let cases = [
        (
            with_files(&[("/etc/a", file("x")), ("/etc/a/b", file("y"))]),
            "/etc/a is declared as something else",
        ),
        (
            Config {
                files: [("/etc/systemd/system/x.service".to_string(), file("a"))].into(),
                units: [("x.service".to_string(), unit(Some("b"), None))].into(),
                ..Default::default()
            },
            "declared twice",
        ),
        (
            Config {
                files: [("/etc/passwd".to_string(), file("root:x:0:0::/:/bin/sh\n"))].into(),
                users: [("alice".to_string(), user(&[], &[]))].into(),
                ..Default::default()
            },
            "declared twice",
        ),
        (
            with_files(&[("/etc/chrony/chrony.conf/x", file("y"))]),
            "is not a directory",
        ),
    ];
    for (c, want) in cases {
        let e = managed(&c, &d1.defaults(), None).unwrap_err();
        assert!(format!("{e:#}").contains(want), "{want}: {e:#}");
    }
}

/// The same config on a new OS version (an upgrade): managed paths stay
/// the config's, the admin's change is carried, the rest is the new OS.
#[test]
fn same_config_on_a_new_os_version() {
    let s = Sys::new();
    let (d1, d2) = (s.os("d1"), s.os("d2"));
    std::fs::write(
        d2.root.join("usr/etc/chrony/chrony.conf"),
        "pool new.example iburst\n",
    )
    .unwrap();
    std::fs::write(
        d2.root.join("usr/etc/sudoers"),
        "root ALL=(ALL:ALL) ALL\n# new OS\n",
    )
    .unwrap();
    let c = Config {
        files: [(
            "/etc/sudoers".to_string(),
            FileEntry {
                contents: None,
                append: vec![b"%admin ALL=(ALL) ALL\n".to_vec()],
                mode: Some(0o440),
                ..Default::default()
            },
        )]
        .into(),
        users: [("alice".to_string(), user(&["sudo"], &["ssh-ed25519 K"]))].into(),
        ..Default::default()
    };
    compose(None, None, &d1, &c, true).unwrap();
    std::fs::write(d1.path("ssh/sshd_config"), "# admin\n").unwrap();
    let r = compose(Some(&d1), Some(&c), &d2, &c, true).unwrap();
    assert_eq!(d2.read("chrony/chrony.conf"), "pool new.example iburst\n");
    assert_eq!(d2.read("ssh/sshd_config"), "# admin\n");
    assert_eq!(
        d2.read("sudoers"),
        "root ALL=(ALL:ALL) ALL\n# new OS\n%admin ALL=(ALL) ALL\n"
    );
    assert_eq!(d1.read("passwd"), d2.read("passwd"));
    let kept: Vec<_> = r
        .local_changes
        .iter()
        .filter(|l| l.kept)
        .map(|l| l.path.as_str())
        .collect();
    assert_eq!(kept, ["/etc/ssh/sshd_config"]);
    assert!(r.units.is_empty() && r.users.is_empty());
}

#[test]
fn revert_through_a_symlink_loop_is_an_error() {
    // The previous config had /etc/app/a.conf; the new OS makes /etc/app
    // a symlink loop. Only a missing directory, or one leading out of
    // /etc, means "nothing to revert there"; a loop is an error.
    let s = Sys::new();
    let (d1, d2) = (s.os("d1"), s.os("d2"));
    let a = with_files(&[("/etc/app/a.conf", file("a\n"))]);
    compose(None, None, &d1, &a, true).unwrap();
    std::os::unix::fs::symlink("app", d2.root.join("usr/etc/app")).unwrap();
    let e = compose(Some(&d1), Some(&a), &d2, &Config::default(), true).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("Opening /etc/app") && msg.contains("symbolic links"),
        "{msg}"
    );
    // A directory gone from the new OS is nothing to revert.
    let d3 = s.os("d3");
    compose(Some(&d1), Some(&a), &d3, &Config::default(), true).unwrap();
    assert!(!d3.exists("app"));
}

#[test]
fn declared_directory_left_for_admin_files_gets_default_metadata() {
    // /etc/foo (0750, owned by daemon) leaves the config while it holds an
    // admin's file: it stays, as the OS would make a directory it lacks.
    let s = Sys::new();
    let (d1, d2) = (s.os("d1"), s.os("d2"));
    let mut a = with_files(&[("/etc/foo/a.conf", file("a\n"))]);
    a.directories.insert(
        "/etc/foo".into(),
        DirEntry {
            mode: Some(0o750),
            user: Owner::Id(1),
            group: Owner::Id(1),
        },
    );
    compose(None, None, &d1, &a, true).unwrap();
    std::fs::write(d1.path("foo/local.conf"), "mine\n").unwrap();
    compose(Some(&d1), Some(&a), &d2, &Config::default(), true).unwrap();
    assert_eq!(d2.read("foo/local.conf"), "mine\n");
    assert!(!d2.exists("foo/a.conf"));
    let m = d2.path("foo").metadata().unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755);
    if arbor_fs::is_root() {
        assert_eq!((m.uid(), m.gid()), (0, 0));
    }
}
