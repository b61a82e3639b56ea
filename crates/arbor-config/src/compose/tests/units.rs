//! Units: contents, enablement, disablement, masks, drop-ins.

use super::*;
use crate::model::Dropin;

const FOO: &str = "[Unit]\nDescription=foo\n[Service]\nExecStart=/bin/foo\n\n[Install]\nWantedBy=multi-user.target \\\n  graphical.target\nRequiredBy=\nRequiredBy=network.target\nAlias=bar.service\n";

#[test]
fn install_section_parsing() {
    let i = super::super::units::parse_install(FOO);
    assert_eq!(
        format!("{i:?}"),
        r#"Install { deps: [("wants", "multi-user.target"), ("wants", "graphical.target"), ("requires", "network.target")], alias: ["bar.service"], also: [], default_instance: None, present: true }"#
    );
}

#[test]
fn unit_enabled_then_disabled_by_removal() {
    let s = Sys::new();
    let (d1, d2) = (s.os("d1"), s.os("d2"));
    let a = Config {
        units: [
            ("foo.service".to_string(), unit(Some(FOO), Some(true))),
            ("chrony.service".to_string(), unit(None, Some(true))),
            ("getty@.service".to_string(), unit(None, Some(true))),
        ]
        .into(),
        ..Default::default()
    };
    let r = compose(None, None, &d1, &a, true).unwrap();
    assert_eq!(d1.read("systemd/system/foo.service"), FOO);
    for l in [
        "multi-user.target.wants/foo.service",
        "graphical.target.wants/foo.service",
        "network.target.requires/foo.service",
        "bar.service",
    ] {
        assert_eq!(
            d1.link(&format!("systemd/system/{l}")),
            "/etc/systemd/system/foo.service",
            "{l}"
        );
    }
    assert_eq!(
        d1.link("systemd/system/multi-user.target.wants/chrony.service"),
        "/usr/lib/systemd/system/chrony.service"
    );
    assert_eq!(
        d1.link("systemd/system/getty.target.wants/getty@tty1.service"),
        "/usr/lib/systemd/system/getty@.service"
    );
    assert_eq!(r.units.len(), 3);
    let r = compose(Some(&d1), Some(&a), &d2, &Config::default(), true).unwrap();
    assert_eq!(
        snapshot(&d2.root.join("etc")),
        snapshot(&d2.root.join("usr/etc"))
    );
    assert!(r.units.iter().all(|u| u.change == Change::Removed));
    assert!(r
        .paths
        .iter()
        .any(|p| p.path == "/etc/systemd/system/graphical.target.wants"
            && p.change == Change::Removed));
}

#[test]
fn enabled_false_removes_os_links_and_removal_restores_them() {
    let s = Sys::new();
    let (d1, d2) = (s.os("d1"), s.os("d2"));
    let a = Config {
        units: [("ssh.service".to_string(), unit(None, Some(false)))].into(),
        ..Default::default()
    };
    let m = managed(&a, &d1.defaults(), Some(&d1.rootfd())).unwrap();
    assert_eq!(
        m.keys().collect::<Vec<_>>(),
        [
            "systemd/system/multi-user.target.wants/ssh.service",
            "systemd/system/sshd.service"
        ]
    );
    compose(None, None, &d1, &a, true).unwrap();
    assert!(!d1.exists("systemd/system/multi-user.target.wants/ssh.service"));
    assert!(!d1.exists("systemd/system/sshd.service"));
    compose(Some(&d1), Some(&a), &d2, &Config::default(), true).unwrap();
    assert_eq!(
        d2.link("systemd/system/multi-user.target.wants/ssh.service"),
        "/usr/lib/systemd/system/ssh.service"
    );
    assert_eq!(
        d2.link("systemd/system/sshd.service"),
        "/usr/lib/systemd/system/ssh.service"
    );
}

#[test]
fn mask_and_dropins() {
    let s = Sys::new();
    let (d1, d2) = (s.os("d1"), s.os("d2"));
    let a = Config {
        units: [
            (
                "chrony.service".to_string(),
                crate::model::Unit {
                    mask: true,
                    ..Default::default()
                },
            ),
            (
                "ssh.service".to_string(),
                crate::model::Unit {
                    dropins: [
                        (
                            "10-limits.conf".to_string(),
                            Dropin {
                                contents: Some("[Service]\nLimitNOFILE=4096\n".into()),
                            },
                        ),
                        ("20-empty.conf".to_string(), Dropin { contents: None }),
                    ]
                    .into(),
                    ..Default::default()
                },
            ),
        ]
        .into(),
        ..Default::default()
    };
    compose(None, None, &d1, &a, true).unwrap();
    assert_eq!(d1.link("systemd/system/chrony.service"), "/dev/null");
    assert_eq!(
        d1.read("systemd/system/ssh.service.d/10-limits.conf"),
        "[Service]\nLimitNOFILE=4096\n"
    );
    assert_eq!(d1.read("systemd/system/ssh.service.d/20-empty.conf"), "");
    compose(Some(&d1), Some(&a), &d2, &Config::default(), true).unwrap();
    assert!(!d2.exists("systemd/system/chrony.service"));
    assert!(!d2.exists("systemd/system/ssh.service.d"));
}

#[test]
fn enabling_without_install_section_or_unit_is_an_error() {
    let s = Sys::new();
    let d1 = s.os("d1");
    for (name, contents, want) in [
        ("static.service", None, "no [Install] section"),
        (
            "own.service",
            Some("[Service]\nExecStart=/bin/x\n"),
            "no [Install] section",
        ),
        (
            "missing.service",
            None,
            "neither the config nor the OS has it",
        ),
    ] {
        let c = Config {
            units: [(name.to_string(), unit(contents, Some(true)))].into(),
            ..Default::default()
        };
        let e = managed(&c, &d1.defaults(), Some(&d1.rootfd())).unwrap_err();
        assert!(
            format!("{e:#}").contains(want) && format!("{e:#}").contains(name),
            "{name}: {e:#}"
        );
    }
    let both = Config {
        units: [(
            "x.service".to_string(),
            crate::model::Unit {
                mask: true,
                contents: Some("x".into()),
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    };
    let e = format!("{:#}", managed(&both, &d1.defaults(), None).unwrap_err());
    assert!(
        e.contains("Unit x.service: a masked unit cannot also have contents"),
        "{e}"
    );
}

#[test]
fn also_and_bad_install_names() {
    let s = Sys::new();
    let d1 = s.os("d1");
    let a = "[Service]\nExecStart=/bin/a\n[Install]\nAlso=b.socket chrony.service\n";
    let b = "[Socket]\nListenStream=1\n[Install]\nWantedBy=sockets.target\n";
    let c = Config {
        units: [
            ("a.service".to_string(), unit(Some(a), Some(true))),
            ("b.socket".to_string(), unit(Some(b), None)),
        ]
        .into(),
        ..Default::default()
    };
    let m = managed(&c, &d1.defaults(), Some(&d1.rootfd())).unwrap();
    let links: Vec<_> = m
        .iter()
        .filter(|(_, d)| matches!(d, Desired::Symlink { .. }))
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(
        links,
        [
            "systemd/system/multi-user.target.wants/chrony.service",
            "systemd/system/sockets.target.wants/b.socket"
        ]
    );
    for bad in [
        "WantedBy=../../../tmp/x.target",
        "Alias=/x.service",
        "Also=.hidden",
        "Alias=%p-x.service",
    ] {
        let u = format!("[Service]\nExecStart=/bin/a\n[Install]\n{bad}\n");
        let c = Config {
            units: [("a.service".to_string(), unit(Some(&u), Some(true)))].into(),
            ..Default::default()
        };
        let e = managed(&c, &d1.defaults(), None).unwrap_err();
        assert!(format!("{e:#}").contains("not a unit name"), "{bad}: {e:#}");
    }
}

/// The enablement symlinks are the ones `systemctl --root enable` makes.
#[test]
fn enablement_links_match_systemctl() {
    require("systemctl");
    let s = Sys::new();
    let d1 = s.os("d1");
    let a = "[Service]\nExecStart=/bin/a\n[Install]\nWantedBy=multi-user.target\nAlso=b.socket chrony.service\n";
    let b = "[Socket]\nListenStream=1\n[Install]\nWantedBy=sockets.target\nRequiredBy=x.target\n";
    let c = Config {
        units: [
            ("a.service".to_string(), unit(Some(a), Some(true))),
            ("b.socket".to_string(), unit(Some(b), None)),
            ("foo.service".to_string(), unit(Some(FOO), Some(true))),
            ("getty@.service".to_string(), unit(None, Some(true))),
            ("ssh.service".to_string(), unit(None, Some(true))),
        ]
        .into(),
        ..Default::default()
    };
    // systemctl's view: the OS units, the config's in /etc, nothing enabled.
    let r = s.dir.path().join("systemctl-root");
    std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    std::fs::create_dir_all(r.join("usr/lib")).unwrap();
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(d1.root.join("usr/lib/systemd"))
        .arg(r.join("usr/lib/"))
        .status()
        .unwrap();
    assert!(cp.success());
    for (n, u) in &c.units {
        if let Some(t) = &u.contents {
            std::fs::write(r.join("etc/systemd/system").join(n), t).unwrap();
        }
    }
    let o = std::process::Command::new("systemctl")
        .arg(format!("--root={}", r.display()))
        .args([
            "enable",
            "a.service",
            "foo.service",
            "getty@.service",
            "ssh.service",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs: BTreeMap<String, String> = snapshot(&r.join("etc"))
        .into_iter()
        .filter(|(_, (mode, ..))| mode & 0o170000 == 0o120000)
        .map(|(p, (.., t))| (p, String::from_utf8(t).unwrap()))
        .collect();
    let ours: BTreeMap<String, String> = managed(&c, &d1.defaults(), Some(&d1.rootfd()))
        .unwrap()
        .into_iter()
        .filter_map(|(p, d)| match d {
            Desired::Symlink { target, .. } => Some((p, target)),
            _ => None,
        })
        .collect();
    assert_eq!(ours, theirs);
    assert!(ours.contains_key("systemd/system/sshd.service"), "{ours:?}");
}

#[test]
fn disabled_unit_drops_the_admins_enablement_links() {
    let s = Sys::new();
    let (d0, d1) = (s.os("d0"), s.os("d1"));
    compose(None, None, &d0, &Config::default(), true).unwrap();
    // The admin enables chrony by hand (a wants link, a requires link in
    // a directory of its own, an alias) and another unit.
    let target = "/usr/lib/systemd/system/chrony.service";
    let sys = d0.path("systemd/system");
    std::fs::create_dir(sys.join("foo.target.requires")).unwrap();
    for l in [
        "multi-user.target.wants/chrony.service",
        "foo.target.requires/chrony.service",
        "ntp.service",
    ] {
        std::os::unix::fs::symlink(target, sys.join(l)).unwrap();
    }
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/system/static.service",
        sys.join("multi-user.target.wants/static.service"),
    )
    .unwrap();
    let a = Config {
        units: [("chrony.service".to_string(), unit(None, Some(false)))].into(),
        ..Default::default()
    };
    let r = compose(Some(&d0), None, &d1, &a, true).unwrap();
    for l in [
        "systemd/system/multi-user.target.wants/chrony.service",
        "systemd/system/foo.target.requires/chrony.service",
        "systemd/system/ntp.service",
    ] {
        assert!(!d1.exists(l), "{l}");
        let p = format!("/etc/{l}");
        assert!(
            r.local_changes.iter().any(|c| c.path == p && !c.kept),
            "{p}: {:?}",
            r.local_changes
        );
        assert!(
            r.paths.iter().any(|c| c.path == p
                && c.change == Change::Removed
                && c.reason == Reason::LocalChangeDropped),
            "{p}: {:?}",
            r.paths
        );
    }
    assert!(d1.exists("systemd/system/foo.target.requires"));
    assert!(d1.exists("systemd/system/multi-user.target.wants/static.service"));
    assert!(d1.exists("systemd/system/multi-user.target.wants/ssh.service"));
}
