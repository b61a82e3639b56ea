//! The fixture of the `extension` tests: a source repository and a
//! sysroot following it, extension trees and commits, and readers of the
//! layers, refs and trees a deployment ends up with.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config_apply::{base_tree, deployments};
use crate::sysroot::{put, unseal_all};
use crate::util::{arbor, ostree, require_ostree, run_ok, s};

/// Where the test OS keeps its os-release (`usr/lib/os-release` links to it).
pub(crate) const OS_RELEASE: &str = "usr/lib/os.release.d/os-release-testos";

/// A base tree ([`base_tree`]) whose os-release says `ID=testos` and
/// `VERSION_ID=<version_id>`.
pub(crate) fn ext_base_tree(dir: &Path, marker: &str, version_id: &str) {
    base_tree(dir, marker);
    std::fs::write(
        dir.join(OS_RELEASE),
        format!("NAME=\"TestOS\"\nID=testos\nVERSION_ID={version_id}\nPRETTY_NAME=\"TestOS\"\n"),
    )
    .unwrap();
}

/// A source repository (archive, `testos/stable` v1 with VERSION_ID=1) and
/// a sysroot following `origin:testos/stable` (a `file://` remote of the
/// source) with v1 deployed.
pub(crate) struct Ext {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub sys: PathBuf,
    pub v1: String,
    n: std::cell::Cell<u32>,
}

impl Drop for Ext {
    fn drop(&mut self) {
        unseal_all(self.dir.path());
    }
}

/// `ostree commit -b BRANCH` of `tree` into `repo` as an upstream release
/// (bootable, owner 0:0, fixed timestamp); returns the checksum.
pub(crate) fn release_commit(
    repo: &Path,
    branch: &str,
    tree: &Path,
    version: &str,
    ts: &str,
) -> String {
    run_ok(ostree().args([
        &format!("--repo={}", s(repo)),
        "commit",
        "-b",
        branch,
        "--bootable",
        &format!("--add-metadata-string=version={version}"),
        &format!("--timestamp=@{ts}"),
        "--owner-uid=0",
        "--owner-gid=0",
        "-s",
        version,
        s(tree),
    ]))
    .trim()
    .to_string()
}

/// `ostree commit -b BRANCH` of an extension tree into `repo` (owner 0:0,
/// fixed timestamp) plus `extra` flags; returns the checksum.
pub(crate) fn ext_commit(repo: &Path, branch: &str, tree: &Path, extra: &[&str]) -> String {
    run_ok(
        ostree()
            .args([
                &format!("--repo={}", s(repo)),
                "commit",
                "-b",
                branch,
                "--timestamp=@1600000000",
                "--owner-uid=0",
                "--owner-gid=0",
                "-s",
                "extension",
            ])
            .args(extra)
            .arg(tree),
    )
    .trim()
    .to_string()
}

impl Ext {
    pub(crate) fn new() -> Ext {
        require_ostree();
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        run_ok(ostree().args(["init", "--mode=archive", &format!("--repo={}", s(&repo))]));
        let t1 = dir.path().join("tree1");
        ext_base_tree(&t1, "v1\n", "1");
        let v1 = release_commit(&repo, "testos/stable", &t1, "1.0", "1577836800");
        let sys = dir.path().join("sysroot");
        let e = Ext {
            dir,
            repo,
            sys: sys.clone(),
            v1,
            n: Default::default(),
        };
        e.new_sysroot(&sys);
        e
    }

    /// Another sysroot with v1 deployed, as [`Ext::new`] made the first.
    pub(crate) fn new_sysroot(&self, sys: &Path) {
        run_ok(arbor().args(["admin", "init-fs"]).arg(sys));
        run_ok(arbor().args(["admin", "os-init", "--sysroot", s(sys), "testos"]));
        let srepo = sys.join("ostree/repo");
        run_ok(arbor().args([
            "remote",
            "add",
            "--repo",
            s(&srepo),
            "--no-gpg-verify",
            "origin",
            &format!("file://{}", s(&self.repo)),
        ]));
        run_ok(arbor().args(["pull", "--repo", s(&srepo), "origin", "testos/stable"]));
        run_ok(arbor().args([
            "deploy",
            "--sysroot",
            s(sys),
            "--os",
            "testos",
            "--karg=root=LABEL=rootfs",
            "origin:testos/stable",
        ]));
    }

    /// The sysroot's repository.
    pub(crate) fn srepo(&self) -> PathBuf {
        self.sys.join("ostree/repo")
    }

    /// A fresh directory under the fixture's temporary directory.
    pub(crate) fn fresh(&self, what: &str) -> PathBuf {
        let n = self.n.get();
        self.n.set(n + 1);
        let d = self.dir.path().join(format!("{what}-{n}"));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Commits a new release of `testos/stable` (marker, VERSION_ID) in the
    /// source repository; returns its checksum.
    pub(crate) fn release(&self, marker: &str, version_id: &str, ts: &str) -> String {
        let t = self.fresh("release");
        ext_base_tree(&t, marker, version_id);
        release_commit(&self.repo, "testos/stable", &t, marker.trim(), ts)
    }

    /// An extension directory named `name` holding `files` (path, content;
    /// paths under `usr/bin` are made executable) and, when `version_id` is
    /// given, `usr/lib/extension-release.d/extension-release.NAME` with
    /// `ID=testos` and that VERSION_ID.
    pub(crate) fn ext_dir(
        &self,
        name: &str,
        files: &[(&str, &str)],
        version_id: Option<&str>,
    ) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let d = self.fresh("ext").join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (p, c) in files {
            put(&d.join(p), c);
            if p.starts_with("usr/bin/") {
                std::fs::set_permissions(d.join(p), std::fs::Permissions::from_mode(0o755))
                    .unwrap();
            }
        }
        if let Some(v) = version_id {
            put(
                &d.join(format!(
                    "usr/lib/extension-release.d/extension-release.{name}"
                )),
                &format!("ID=testos\nVERSION_ID={v}\n"),
            );
        }
        d
    }

    /// A "tool" extension: `/usr/bin/NAME-tool`, its unit
    /// `/usr/lib/systemd/system/NAME.service`, and an extension-release
    /// file matching the base (VERSION_ID=1).
    pub(crate) fn tool_dir(&self, name: &str) -> PathBuf {
        self.ext_dir(name, &tool_files(name), Some("1"))
    }

    /// `arbor extension SUB --sysroot SYS ARGS..` (not run).
    pub(crate) fn cmd(&self, sub: &str, args: &[&str]) -> Command {
        ext_cmd(&self.sys, sub, args)
    }

    /// `arbor extension SUB --sysroot SYS ARGS..`, which must succeed.
    #[track_caller]
    pub(crate) fn ok(&self, sub: &str, args: &[&str]) -> String {
        run_ok(&mut self.cmd(sub, args))
    }
}

/// The files of [`Ext::tool_dir`] (without the release file).
pub(crate) fn tool_files(name: &str) -> Vec<(&'static str, &'static str)> {
    let leak = |x: String| -> &'static str { Box::leak(x.into_boxed_str()) };
    vec![
        (
            leak(format!("usr/bin/{name}-tool")),
            leak(format!("#!/bin/sh\necho {name}\n")),
        ),
        (
            leak(format!("usr/lib/systemd/system/{name}.service")),
            leak(format!(
                "[Unit]\nDescription={name}\n[Service]\nExecStart=/usr/bin/{name}-tool\n"
            )),
        ),
    ]
}

/// `arbor extension SUB --sysroot SYS ARGS..` (not run).
pub(crate) fn ext_cmd(sys: &Path, sub: &str, args: &[&str]) -> Command {
    let mut c = arbor();
    c.args(["extension", sub, "--sysroot", s(sys)]).args(args);
    c
}

/// (checksum, base, extensions as `NAME:COMMIT`) of each deployment.
pub(crate) fn layers(sys: &Path) -> Vec<(String, String, Vec<String>)> {
    deployments(sys)
        .iter()
        .map(|d| {
            (
                d["checksum"].as_str().unwrap().to_string(),
                d["base"].as_str().unwrap().to_string(),
                d["extensions"]
                    .as_array()
                    .unwrap_or_else(|| panic!("no extensions in {d}"))
                    .iter()
                    .map(|e| e.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// The commit of extension `name` in the list `entries` (`NAME:COMMIT`).
#[track_caller]
pub(crate) fn commit_of(entries: &[String], name: &str) -> String {
    entries
        .iter()
        .find_map(|e| e.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no extension {name} in {entries:?}"))
        .to_string()
}

/// `arbor fsck` and `ostree fsck` of the sysroot's repository both pass.
#[track_caller]
pub(crate) fn both_fscks(sys: &Path) {
    let repo = sys.join("ostree/repo");
    run_ok(arbor().args(["fsck", "--repo", s(&repo)]));
    run_ok(ostree().args(["fsck", &format!("--repo={}", s(&repo))]));
}

/// The refs of `repo` (`ostree refs`), sorted.
pub(crate) fn refs(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = run_ok(ostree().args(["refs", &format!("--repo={}", s(repo))]))
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// `extension compose --repo R BASE ARGS..`: the composed checksum.
#[track_caller]
pub(crate) fn compose_cli(repo: &Path, base: &str, exts: &[String]) -> String {
    run_ok(
        arbor()
            .args(["extension", "compose", "--repo", s(repo), base])
            .args(exts),
    )
    .trim()
    .to_string()
}

/// Every path of a tree (relative, sorted), with `d`/`-`/`l`.
pub(crate) fn paths(root: &Path) -> Vec<String> {
    crate::util::snapshot(root, false)
        .into_iter()
        .map(|(p, n)| format!("{} {}", n.kind, p.display()))
        .collect()
}

/// `ostree checkout` of `rev` from the sysroot repository into a fresh
/// directory.
pub(crate) fn checkout(e: &Ext, rev: &str) -> PathBuf {
    let d = e.fresh("checkout").join("co");
    run_ok(ostree().args(["checkout", &format!("--repo={}", s(&e.srepo())), rev, s(&d)]));
    d
}

/// The standard error of a finished command.
pub(crate) fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
