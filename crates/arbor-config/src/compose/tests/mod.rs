//! Tests of composing `/etc`, on temporary deployments: each has
//! `usr/etc` (the OS defaults), `usr/lib/systemd/system`, `usr/bin` and
//! the `/etc` composed from them.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::model::{Config, FileEntry, Unit, User};

mod files;
mod units;
mod users;
mod var;

pub(crate) const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
_chrony:x:100:102:Chrony daemon,,,:/var/lib/chrony:/usr/sbin/nologin\n";
pub(crate) const SHADOW: &str = "root:*:19000:0:99999:7:::\n\
daemon:*:19000:0:99999:7:::\n\
_chrony:!:19000::::::\n";
pub(crate) const GROUP: &str = "root:x:0:\ndaemon:x:1:\nsudo:x:27:\nshadow:x:42:\n_chrony:x:102:\n";
pub(crate) const GSHADOW: &str = "root:*::\ndaemon:*::\nsudo:*::\nshadow:*::\n_chrony:!::\n";
pub(crate) const CHRONY: &str = "pool 2.debian.pool.ntp.org iburst\n";
pub(crate) const SSH_UNIT: &str =
    "[Unit]\nDescription=OpenBSD Secure Shell server\n\n[Service]\nExecStart=/usr/sbin/sshd -D\n\n\
[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n";

/// A temporary directory holding deployments.
pub(crate) struct Sys {
    pub(crate) dir: tempfile::TempDir,
}

/// One deployment: its root.
pub(crate) struct Dep {
    pub(crate) root: PathBuf,
}

pub(crate) fn open(p: &Path) -> OwnedFd {
    arbor_sysroot::fsutil::open_dir(rustix::fs::CWD, p.to_str().unwrap()).unwrap()
}

fn put(p: &Path, content: &str, mode: u32) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Sys {
    pub(crate) fn new() -> Sys {
        Sys {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A deployment `name` of the Debian-like OS (no `/etc` yet).
    pub(crate) fn os(&self, name: &str) -> Dep {
        let root = self.dir.path().join(name);
        let e = root.join("usr/etc");
        put(&e.join("passwd"), PASSWD, 0o644);
        put(&e.join("shadow"), SHADOW, 0o640);
        put(&e.join("group"), GROUP, 0o644);
        put(&e.join("gshadow"), GSHADOW, 0o640);
        if arbor_fs::is_root() {
            for f in ["shadow", "gshadow"] {
                std::os::unix::fs::chown(e.join(f), Some(0), Some(42)).unwrap();
            }
        }
        put(
            &e.join("sudoers"),
            "root ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n",
            0o440,
        );
        std::fs::create_dir_all(e.join("sudoers.d")).unwrap();
        put(&e.join("chrony/chrony.conf"), CHRONY, 0o644);
        put(
            &e.join("ssh/sshd_config"),
            "Include /etc/ssh/sshd_config.d/*.conf\n",
            0o644,
        );
        std::fs::create_dir_all(e.join("ssh/sshd_config.d")).unwrap();
        std::fs::create_dir_all(e.join("systemd/system/multi-user.target.wants")).unwrap();
        std::fs::create_dir_all(e.join("tmpfiles.d")).unwrap();
        std::os::unix::fs::symlink(
            "/usr/lib/systemd/system/ssh.service",
            e.join("systemd/system/multi-user.target.wants/ssh.service"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "/usr/lib/systemd/system/ssh.service",
            e.join("systemd/system/sshd.service"),
        )
        .unwrap();
        let u = root.join("usr/lib/systemd/system");
        put(&u.join("ssh.service"), SSH_UNIT, 0o644);
        put(
            &u.join("chrony.service"),
            "[Service]\nExecStart=/usr/sbin/chronyd\n[Install]\nWantedBy=multi-user.target\n",
            0o644,
        );
        put(
            &u.join("static.service"),
            "[Service]\nExecStart=/bin/true\n",
            0o644,
        );
        put(
            &u.join("getty@.service"),
            "[Service]\nExecStart=/sbin/agetty %I\n[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n",
            0o644,
        );
        put(&root.join("usr/bin/bash"), "", 0o755);
        Dep { root }
    }
}

impl Dep {
    pub(crate) fn defaults(&self) -> OwnedFd {
        open(&self.root.join("usr/etc"))
    }
    pub(crate) fn etc(&self) -> OwnedFd {
        open(&self.root.join("etc"))
    }
    pub(crate) fn rootfd(&self) -> OwnedFd {
        open(&self.root)
    }
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root.join("etc").join(rel)
    }
    pub(crate) fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }
    pub(crate) fn exists(&self, rel: &str) -> bool {
        self.path(rel).symlink_metadata().is_ok()
    }
    pub(crate) fn link(&self, rel: &str) -> String {
        std::fs::read_link(self.path(rel))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
    /// The fresh `/etc`: a copy of the defaults.
    fn fresh_etc(&self) {
        let usr = open(&self.root.join("usr"));
        arbor_sysroot::etc_merge::copy_entry(&usr, &self.rootfd(), "etc").unwrap();
    }
}

/// Composes `new`'s `/etc` from `old` (the merge deployment, `None` for a
/// first deployment) with `config`; `previous` is `old`'s config.
pub(crate) fn compose(
    old: Option<&Dep>,
    previous: Option<&Config>,
    new: &Dep,
    config: &Config,
    keep_local: bool,
) -> anyhow::Result<ComposeReport> {
    new.fresh_etc();
    let (nd, ne, nr) = (new.defaults(), new.etc(), new.rootfd());
    let (od, oe, or) = match old {
        Some(o) => (o.defaults(), o.etc(), Some(o.rootfd())),
        None => (new.defaults(), new.defaults(), None),
    };
    compose_etc(&ComposeInputs {
        old_defaults: &od,
        old_etc: &oe,
        new_defaults: &nd,
        new_etc: &ne,
        root: Some(&nr),
        previous,
        old_root: or.as_ref(),
        config,
        keep_local,
    })
}

/// Every entry of a tree: type, mode, owner, content or target.
pub(crate) fn snapshot(dir: &Path) -> BTreeMap<String, (u32, u32, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = p.symlink_metadata().unwrap();
            let body = if m.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .to_string_lossy()
                    .as_bytes()
                    .to_vec()
            } else if m.is_dir() {
                todo.push(p.clone());
                Vec::new()
            } else {
                std::fs::read(&p).unwrap()
            };
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            out.insert(rel, (m.mode(), m.uid(), m.gid(), body));
        }
    }
    out
}

/// Whether `needle` occurs in any file or symlink target below `dir`.
pub(crate) fn trace_of(dir: &Path, needle: &str) -> Vec<String> {
    snapshot(dir)
        .into_iter()
        .filter(|(_, (_, _, _, b))| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .map(|(p, _)| p)
        .collect()
}

pub(crate) fn file(content: &str) -> FileEntry {
    FileEntry {
        contents: Some(content.as_bytes().to_vec()),
        mode: Some(0o644),
        ..Default::default()
    }
}

pub(crate) fn with_files(files: &[(&str, FileEntry)]) -> Config {
    Config {
        files: files
            .iter()
            .map(|(p, f)| (p.to_string(), f.clone()))
            .collect(),
        ..Default::default()
    }
}

pub(crate) fn user(groups: &[&str], keys: &[&str]) -> User {
    User {
        groups: groups.iter().map(|s| s.to_string()).collect(),
        ssh_authorized_keys: keys.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub(crate) fn unit(contents: Option<&str>, enabled: Option<bool>) -> Unit {
    Unit {
        contents: contents.map(str::to_string),
        enabled,
        ..Default::default()
    }
}

/// Requires `tool` (from Debian's `systemd`, which `.ci/run` installs):
/// these tests compare with the real tool and fail loudly without it,
/// because silently skipping would hide regressions.
pub(crate) fn require(tool: &str) {
    let ok = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`{tool}` is required for this test (apt-get install systemd)"
    );
}
