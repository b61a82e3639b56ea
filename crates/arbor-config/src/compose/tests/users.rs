//! Users, groups and ssh keys.

use super::*;

fn files_of(d: &Dep) -> Vec<String> {
    ["passwd", "shadow", "group", "gshadow"]
        .iter()
        .map(|f| d.read(f))
        .collect()
}

#[test]
fn user_created_then_removed_leaves_default_files() {
    let s = Sys::new();
    let (d1, d2) = (s.os("d1"), s.os("d2"));
    let a = Config {
        users: [
            (
                "alice".to_string(),
                User {
                    password_hash: Some("$6$salt$hash".into()),
                    ..user(&["sudo"], &["ssh-ed25519 AAAA alice"])
                },
            ),
            (
                "bob".to_string(),
                User {
                    uid: Some(1000),
                    ..user(&[], &[])
                },
            ),
            (
                "root".to_string(),
                User {
                    password_hash: Some("$6$root".into()),
                    ..user(&["sudo"], &[])
                },
            ),
        ]
        .into(),
        groups: [("ops".to_string(), crate::model::Group::default())].into(),
        ..Default::default()
    };
    let r = compose(None, None, &d1, &a, true).unwrap();
    let f = files_of(&d1);
    assert_eq!(
        f[0],
        format!("{PASSWD}alice:x:13334:13334::/home/alice:/bin/bash\nbob:x:1000:1000::/home/bob:/bin/bash\n")
    );
    assert!(f[1].starts_with("root:$6$root:19000:"), "{}", f[1]);
    assert!(
        f[1].ends_with("alice:$6$salt$hash:::::::\nbob:!:::::::\n"),
        "{}",
        f[1]
    );
    assert!(
        f[2].contains("\nsudo:x:27:alice,root\n")
            && f[2].ends_with("ops:x:5037:\nalice:x:13334:\nbob:x:1000:\n"),
        "{}",
        f[2]
    );
    assert!(f[3].contains("\nsudo:*::alice,root\n"), "{}", f[3]);
    assert_eq!(d1.path("shadow").metadata().unwrap().mode() & 0o7777, 0o640);
    if arbor_fs::is_root() {
        assert_eq!(d1.path("shadow").metadata().unwrap().gid(), 42);
        assert_eq!(d1.path("gshadow").metadata().unwrap().gid(), 42);
    }
    assert_eq!(
        r.users
            .iter()
            .map(|u| (u.name.as_str(), u.id))
            .collect::<Vec<_>>(),
        [
            ("ops", Some(5037)),
            ("alice", Some(13334)),
            ("bob", Some(1000)),
            ("root", Some(0))
        ]
    );
    compose(Some(&d1), Some(&a), &d2, &Config::default(), true).unwrap();
    assert_eq!(files_of(&d2), [PASSWD, SHADOW, GROUP, GSHADOW]);
    assert_eq!(
        snapshot(&d2.root.join("etc")),
        snapshot(&d2.root.join("usr/etc"))
    );
}

#[test]
fn admin_local_user_kept_while_config_user_removed() {
    let s = Sys::new();
    let (d1, d2) = (s.os("d1"), s.os("d2"));
    let a = Config {
        users: [
            ("alice".to_string(), user(&["sudo"], &[])),
            (
                "root".to_string(),
                User {
                    password_hash: Some("$6$config".into()),
                    ..user(&[], &[])
                },
            ),
        ]
        .into(),
        ..Default::default()
    };
    compose(None, None, &d1, &a, true).unwrap();
    assert!(d1.read("shadow").starts_with("root:$6$config:19000:"));
    // The admin runs `useradd -G sudo carol` and changes root's shell.
    let edit = |f: &str, from: &str, to: &str| {
        let c = d1.read(f).replace(from, to);
        std::fs::write(d1.path(f), c).unwrap();
    };
    edit("passwd", "root:/bin/bash", "root:/bin/zsh");
    edit(
        "passwd",
        "/home/alice:/bin/bash\n",
        "/home/alice:/bin/bash\ncarol:x:1001:1001::/home/carol:/bin/bash\n",
    );
    edit(
        "shadow",
        "alice:!:::::::\n",
        "alice:!:::::::\ncarol:!:20000:0:99999:7:::\n",
    );
    edit("group", "sudo:x:27:alice", "sudo:x:27:alice,carol");
    edit(
        "group",
        "alice:x:13334:\n",
        "alice:x:13334:\ncarol:x:1001:\n",
    );
    let r = compose(Some(&d1), Some(&a), &d2, &Config::default(), true).unwrap();
    assert_eq!(
        d2.read("passwd"),
        PASSWD.replace("root:/bin/bash", "root:/bin/zsh")
            + "carol:x:1001:1001::/home/carol:/bin/bash\n"
    );
    assert_eq!(
        d2.read("shadow"),
        format!("{SHADOW}carol:!:20000:0:99999:7:::\n")
    );
    assert_eq!(
        d2.read("group"),
        GROUP.replace("sudo:x:27:", "sudo:x:27:carol") + "carol:x:1001:\n"
    );
    assert_eq!(d2.read("gshadow"), GSHADOW);
    assert!(r
        .local_changes
        .iter()
        .any(|l| l.path == "/etc/passwd" && l.kept));
    // A new config user goes on top of the carried files, next to carol.
    let d3 = s.os("d3");
    let b = Config {
        users: [("dave".to_string(), user(&[], &[]))].into(),
        ..Default::default()
    };
    compose(Some(&d2), None, &d3, &b, true).unwrap();
    assert!(d3.read("passwd").ends_with(
        "carol:x:1001:1001::/home/carol:/bin/bash\ndave:x:22585:22585::/home/dave:/bin/bash\n"
    ));
}

#[test]
fn ssh_key_rotated_leaves_no_trace() {
    let s = Sys::new();
    let (d1, d2, d3) = (s.os("d1"), s.os("d2"), s.os("d3"));
    let old = "ssh-ed25519 AAAAC3NzaOLDKEY alice@laptop";
    let new = "ssh-ed25519 AAAAC3NzaNEWKEY alice@laptop";
    let a = Config {
        users: [("alice".to_string(), user(&[], &[old]))].into(),
        ..Default::default()
    };
    let b = Config {
        users: [("alice".to_string(), user(&[], &[new]))].into(),
        ..Default::default()
    };
    compose(None, None, &d1, &a, true).unwrap();
    assert_eq!(d1.read("ssh/authorized_keys.d/alice"), format!("{old}\n"));
    assert_eq!(d1.read(SSHD_DROPIN), SSHD_DROPIN_CONTENT);
    compose(Some(&d1), Some(&a), &d2, &b, true).unwrap();
    assert_eq!(
        trace_of(&d2.root.join("etc"), "OLDKEY"),
        Vec::<String>::new()
    );
    assert_eq!(d2.read("ssh/authorized_keys.d/alice"), format!("{new}\n"));
    // The old deployment still has the old key set (a rollback restores it).
    assert_eq!(d1.read("ssh/authorized_keys.d/alice"), format!("{old}\n"));
    compose(Some(&d2), Some(&b), &d3, &Config::default(), true).unwrap();
    assert!(!d3.exists("ssh/authorized_keys.d"));
    assert!(!d3.exists(SSHD_DROPIN));
}

#[test]
fn conflicting_ids_and_unknown_groups_are_errors() {
    let s = Sys::new();
    let d1 = s.os("d1");
    for (c, want) in [
        (
            Config {
                users: [(
                    "root".to_string(),
                    User {
                        uid: Some(5),
                        ..Default::default()
                    },
                )]
                .into(),
                ..Default::default()
            },
            "uid 0",
        ),
        (
            Config {
                users: [("alice".to_string(), user(&["nope"], &[]))].into(),
                ..Default::default()
            },
            "'nope'",
        ),
        (
            Config {
                users: [(
                    "alice".to_string(),
                    User {
                        uid: Some(100),
                        ..Default::default()
                    },
                )]
                .into(),
                ..Default::default()
            },
            "uid 100 is already taken",
        ),
        (
            Config {
                groups: [
                    (
                        "a".to_string(),
                        crate::model::Group {
                            gid: Some(2000),
                            ..Default::default()
                        },
                    ),
                    (
                        "b".to_string(),
                        crate::model::Group {
                            gid: Some(2000),
                            ..Default::default()
                        },
                    ),
                ]
                .into(),
                ..Default::default()
            },
            "gid 2000 is already taken",
        ),
    ] {
        let e = managed(&c, &d1.defaults(), None).unwrap_err();
        assert!(format!("{e:#}").contains(want), "{e:#}");
    }
}

#[test]
fn malformed_names_and_values_are_refused() {
    let s = Sys::new();
    let d1 = s.os("d1");
    let hash = |h: &str| User {
        password_hash: Some(h.into()),
        ..Default::default()
    };
    for (name, u, want) in [
        ("../etc", User::default(), "not a valid user name"),
        ("a:b", User::default(), "not a valid user name"),
        ("alice", hash("$6$x:0:0"), "password hash"),
        ("alice", hash("$6$x\nroot::0"), "password hash"),
        (
            "alice",
            user(&[], &["ssh-ed25519 A\nssh-rsa B"]),
            "several lines",
        ),
    ] {
        let c = Config {
            users: [(name.to_string(), u)].into(),
            ..Default::default()
        };
        let e = managed(&c, &d1.defaults(), None).unwrap_err();
        assert!(format!("{e:#}").contains(want), "{name}: {e:#}");
    }
}

#[test]
fn shadow_files_the_os_lacks_go_away_with_the_config_users() {
    let s = Sys::new();
    let (d1, d2) = (s.os("d1"), s.os("d2"));
    for d in [&d1, &d2] {
        for f in ["shadow", "gshadow"] {
            std::fs::remove_file(d.root.join("usr/etc").join(f)).unwrap();
        }
    }
    let a = Config {
        users: [("alice".to_string(), user(&[], &[]))].into(),
        ..Default::default()
    };
    compose(None, None, &d1, &a, true).unwrap();
    assert_eq!(d1.read("gshadow"), "alice:!::\n");
    assert_eq!(d1.read("shadow"), "alice:!:::::::\n");
    let r = compose(Some(&d1), Some(&a), &d2, &Config::default(), true).unwrap();
    assert!(!d2.exists("gshadow") && !d2.exists("shadow"));
    assert_eq!(files_of2(&d2), [PASSWD, GROUP]);
    assert!(
        !r.local_changes.iter().any(|l| l.kept),
        "{:?}",
        r.local_changes
    );
    assert_eq!(
        snapshot(&d2.root.join("etc")),
        snapshot(&d2.root.join("usr/etc"))
    );
    // An admin's line in it is carried, with the file.
    let (d3, d4) = (s.os("d3"), s.os("d4"));
    for d in [&d3, &d4] {
        for f in ["shadow", "gshadow"] {
            std::fs::remove_file(d.root.join("usr/etc").join(f)).unwrap();
        }
    }
    compose(Some(&d2), None, &d3, &a, true).unwrap();
    std::fs::write(d3.path("gshadow"), "alice:!::\nadm:!::\n").unwrap();
    compose(Some(&d3), Some(&a), &d4, &Config::default(), true).unwrap();
    assert_eq!(d4.read("gshadow"), "adm:!::\n");
    assert!(!d4.exists("shadow"));
}

fn files_of2(d: &Dep) -> [String; 2] {
    [d.read("passwd"), d.read("group")]
}

fn users_named(names: &[&str]) -> Config {
    Config {
        users: names
            .iter()
            .map(|n| (n.to_string(), user(&[], &[])))
            .collect(),
        ..Default::default()
    }
}

#[test]
fn new_user_ids_do_not_depend_on_other_config_users() {
    let s = Sys::new();
    let (d1, d2, d3) = (s.os("d1"), s.os("d2"), s.os("d3"));
    let a = users_named(&["alice"]);
    compose(None, None, &d1, &a, true).unwrap();
    assert!(d1
        .read("passwd")
        .ends_with("alice:x:13334:13334::/home/alice:/bin/bash\n"));
    // "aaron" sorts first: alice keeps her ids.
    let b = users_named(&["aaron", "alice"]);
    compose(Some(&d1), Some(&a), &d2, &b, true).unwrap();
    assert!(d2.read("passwd").ends_with(
        "aaron:x:4998:4998::/home/aaron:/bin/bash\nalice:x:13334:13334::/home/alice:/bin/bash\n"
    ));
    // An id the OS holds is skipped, upward.
    let p = d3.root.join("usr/etc/passwd");
    let mut t = std::fs::read_to_string(&p).unwrap();
    t.push_str("svc:x:13334:13334::/:/usr/sbin/nologin\n");
    std::fs::write(&p, t).unwrap();
    let p = d3.root.join("usr/etc/group");
    let mut t = std::fs::read_to_string(&p).unwrap();
    t.push_str("svc:x:13334:\n");
    std::fs::write(&p, t).unwrap();
    compose(None, None, &d3, &a, true).unwrap();
    assert!(d3
        .read("passwd")
        .ends_with("alice:x:13335:13335::/home/alice:/bin/bash\n"));
}

#[test]
fn adopted_local_user_keeps_its_id_across_applies() {
    let s = Sys::new();
    let (d0, d1, d2, d3) = (s.os("d0"), s.os("d1"), s.os("d2"), s.os("d3"));
    compose(None, None, &d0, &Config::default(), true).unwrap();
    // The admin runs `useradd -u 1005 alice`; the config then declares her.
    let add = |f: &str, line: &str| {
        let c = d0.read(f) + line;
        std::fs::write(d0.path(f), c).unwrap();
    };
    add("passwd", "alice:x:1005:1005:Alice:/home/alice:/bin/bash\n");
    add("shadow", "alice:!:20000:0:99999:7:::\n");
    add("group", "alice:x:1005:\n");
    add("gshadow", "alice:!::\n");
    let a = Config {
        users: [("alice".to_string(), user(&["sudo"], &[]))].into(),
        ..Default::default()
    };
    compose(Some(&d0), None, &d1, &a, true).unwrap();
    let line = "alice:x:1005:1005:Alice:/home/alice:/bin/bash\n";
    assert!(d1.read("passwd").ends_with(line), "{}", d1.read("passwd"));
    // A second apply (the config grows) un-applies the first: alice's
    // line was the admin's, so it stays, with its id.
    let mut a2 = a.clone();
    a2.files.insert("/etc/x.conf".into(), file("x\n"));
    let r = compose(Some(&d1), Some(&a), &d2, &a2, true).unwrap();
    assert!(d2.read("passwd").ends_with(line), "{}", d2.read("passwd"));
    assert!(d2.read("group").contains("alice:x:1005:\n"));
    assert!(d2.read("group").contains("\nsudo:x:27:alice\n"));
    assert!(d2.read("shadow").ends_with("alice:!:20000:0:99999:7:::\n"));
    assert!(!r.users.iter().any(|u| u.name == "alice"), "{:?}", r.users);
    // Out of the config, she is the admin's local user again (the
    // config's group membership goes).
    compose(Some(&d2), Some(&a2), &d3, &Config::default(), true).unwrap();
    assert!(d3.read("passwd").ends_with(line));
    assert!(d3.read("group").contains("\nsudo:x:27:\n"));
    assert!(d3.read("group").ends_with("alice:x:1005:\n"));
}

#[test]
fn a_uid_change_is_reported() {
    // The new OS takes alice's id for a system user of its own: she
    // moves to the next free id, and the report says so.
    let s = Sys::new();
    let (d1, d2) = (s.os("d1"), s.os("d2"));
    let a = users_named(&["alice"]);
    let r = compose(None, None, &d1, &a, true).unwrap();
    let alice = |r: &ComposeReport| {
        r.users
            .iter()
            .find(|u| u.kind == "user" && u.name == "alice")
            .cloned()
    };
    let u = alice(&r).unwrap();
    assert_eq!(
        (u.change, u.id, u.previous_id),
        (Change::Added, Some(13334), None)
    );
    let p = d2.root.join("usr/etc/passwd");
    let t = std::fs::read_to_string(&p).unwrap() + "svc:x:13334:13334::/:/usr/sbin/nologin\n";
    std::fs::write(&p, t).unwrap();
    let r = compose(Some(&d1), Some(&a), &d2, &a, true).unwrap();
    assert!(
        d2.read("passwd")
            .ends_with("alice:x:13335:13335::/home/alice:/bin/bash\n"),
        "{}",
        d2.read("passwd")
    );
    let u = alice(&r).unwrap();
    assert_eq!(
        (u.change, u.id, u.previous_id),
        (Change::Modified, Some(13335), Some(13334))
    );
    // The same again: nothing to report.
    let d3 = s.os("d3");
    std::fs::copy(&p, d3.root.join("usr/etc/passwd")).unwrap();
    let r = compose(Some(&d2), Some(&a), &d3, &a, true).unwrap();
    assert_eq!(alice(&r), None);
}

/// Adds nss-altfiles' `/usr/lib/passwd` and `/usr/lib/group` to `d`, as
/// Fedora CoreOS has them.
fn with_altfiles(d: &Dep) {
    let lib = d.root.join("usr/lib");
    std::fs::write(
        lib.join("passwd"),
        "chrony:x:994:992::/var/lib/chrony:/sbin/nologin\nsvc:x:13334:13334::/:/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(lib.join("group"), "wheel:x:10:\nchrony:x:992:\n").unwrap();
}

#[test]
fn altfiles_users_and_groups_are_looked_up_and_reserved() {
    let s = Sys::new();
    let (d1, d2) = (s.os("d1"), s.os("d2"));
    with_altfiles(&d1);
    with_altfiles(&d2);
    let c = Config {
        files: [(
            "/etc/chrony.keys".to_string(),
            FileEntry {
                user: crate::model::Owner::Name("chrony".into()),
                group: crate::model::Owner::Name("chrony".into()),
                ..file("k\n")
            },
        )]
        .into(),
        users: [("alice".to_string(), user(&["wheel"], &[]))].into(),
        groups: [("chrony".to_string(), crate::model::Group::default())].into(),
        ..Default::default()
    };
    let m = managed(&c, &d1.defaults(), Some(&d1.rootfd())).unwrap();
    assert!(
        matches!(
            m["chrony.keys"],
            Desired::File {
                uid: 994,
                gid: 992,
                ..
            }
        ),
        "{:?}",
        m["chrony.keys"]
    );
    compose(None, None, &d1, &c, true).unwrap();
    // 13334, alice's preferred id, is svc's in /usr/lib/passwd.
    assert!(d1.read("passwd").ends_with(&format!(
        "{PASSWD}alice:x:13335:13335::/home/alice:/bin/bash\n"
    )));
    assert_eq!(
        d1.read("group"),
        format!("{GROUP}alice:x:13335:\nwheel:x:10:alice\n")
    );
    assert!(d1.read("gshadow").ends_with("alice:!::\nwheel:!::alice\n"));
    // Out of the config, nothing of it is left in /etc.
    compose(Some(&d1), Some(&c), &d2, &Config::default(), true).unwrap();
    assert_eq!(files_of(&d2), [PASSWD, SHADOW, GROUP, GSHADOW]);
}

#[test]
fn local_password_change_keeps_the_new_os_users() {
    // The admin changes root's password (shadow only); the new OS adds a
    // system user to passwd and shadow: both reach the new /etc.
    let s = Sys::new();
    let (d0, d1) = (s.os("d0"), s.os("d1"));
    compose(None, None, &d0, &Config::default(), true).unwrap();
    let sh = d0.read("shadow").replace("root:*:", "root:$6$new:");
    std::fs::write(d0.path("shadow"), sh).unwrap();
    for (f, line) in [
        ("passwd", "v2sys:x:990:990::/:/sbin/nologin\n"),
        ("shadow", "v2sys:!:19000::::::\n"),
    ] {
        let p = d1.root.join("usr/etc").join(f);
        let t = std::fs::read_to_string(&p).unwrap() + line;
        std::fs::write(&p, t).unwrap();
    }
    let a = users_named(&["alice"]);
    compose(Some(&d0), None, &d1, &a, true).unwrap();
    assert!(d1
        .read("passwd")
        .contains("\nv2sys:x:990:990::/:/sbin/nologin\n"));
    assert_eq!(
        d1.read("shadow"),
        SHADOW.replace("root:*:", "root:$6$new:") + "v2sys:!:19000::::::\nalice:!:::::::\n"
    );
}

/// An adopted local user whose id is the one the config gives (here
/// declared) keeps the admin's line (GECOS, home, shell, password)
/// across applies; a password the config set on her is locked once the
/// config drops her, never left as a credential nothing declares.
#[test]
fn adopted_user_with_the_declared_id_and_a_config_password() {
    let s = Sys::new();
    let (d0, d1, d2) = (s.os("d0"), s.os("d1"), s.os("d2"));
    compose(None, None, &d0, &Config::default(), true).unwrap();
    let add = |f: &str, line: &str| {
        let c = d0.read(f) + line;
        std::fs::write(d0.path(f), c).unwrap();
    };
    let line = "alice:x:1005:1005:Alice:/srv/alice:/bin/zsh\n";
    add("passwd", line);
    add("shadow", "alice:$6$secret:20000:0:99999:7:::\n");
    add("group", "alice:x:1005:\n");
    add("gshadow", "alice:!::\n");
    let mut alice = user(&[], &[]);
    alice.uid = Some(1005);
    let a = Config {
        users: [("alice".to_string(), alice.clone())].into(),
        ..Default::default()
    };
    compose(Some(&d0), None, &d1, &a, true).unwrap();
    assert!(d1.read("passwd").ends_with(line), "{}", d1.read("passwd"));
    // A second apply that only adds a file keeps her line and password.
    let mut a2 = a.clone();
    a2.files.insert("/etc/x.conf".into(), file("x\n"));
    compose(Some(&d1), Some(&a), &d2, &a2, true).unwrap();
    assert!(d2.read("passwd").ends_with(line), "{}", d2.read("passwd"));
    assert!(
        d2.read("shadow").contains("alice:$6$secret:"),
        "{}",
        d2.read("shadow")
    );
    // The config sets her password, then drops her: she stays (the
    // admin's user), locked.
    let mut pw = alice;
    pw.password_hash = Some("$6$fromconfig".into());
    let a3 = Config {
        users: [("alice".to_string(), pw)].into(),
        ..Default::default()
    };
    let (d4, d5) = (s.os("d4"), s.os("d5"));
    compose(Some(&d2), Some(&a2), &d4, &a3, true).unwrap();
    assert!(d4.read("shadow").contains("alice:$6$fromconfig:"));
    compose(Some(&d4), Some(&a3), &d5, &Config::default(), true).unwrap();
    assert!(d5.read("passwd").ends_with(line), "{}", d5.read("passwd"));
    let shadow = d5.read("shadow");
    assert!(!shadow.contains("fromconfig"), "{shadow}");
    assert!(shadow.contains("alice:!:"), "{shadow}");
}
