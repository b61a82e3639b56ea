//! `extension add|remove|list`: extensions as directories, refs,
//! `remote:ref`s and tar streams become a new deployment of a composed
//! commit that `status`, `ostree admin status` and both fscks read;
//! replacing, removing, rolling back, `/etc` content and drift.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::config_apply::{base_tree, deployments, ostree_reads, read, root_of};
use crate::sysroot::{needs_root, put, unseal_all};
use crate::util::{arbor, ostree, require_ostree, run_fail, run_ok, s};

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

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn add_a_directory_extension_and_read_it_everywhere() {
    if needs_root("add_a_directory_extension_and_read_it_everywhere") {
        return;
    }
    let e = Ext::new();
    let dir = e.tool_dir("tools");
    let out = e.ok("add", &[s(&dir)]);
    assert!(!out.is_empty(), "add printed nothing");
    let l = layers(&e.sys);
    assert_eq!(l.len(), 2, "{l:?}");
    let (composed, base, exts) = &l[0];
    assert_ne!(composed, &e.v1, "the new deployment runs a composed commit");
    assert_eq!(base, &e.v1);
    assert_eq!(exts.len(), 1, "{exts:?}");
    let ext = commit_of(exts, "tools");
    // The previous deployment is the plain base.
    assert_eq!(l[1], (e.v1.clone(), e.v1.clone(), vec![]));
    // The files, with their modes.
    let root = root_of(&e.sys, 0);
    assert_eq!(
        read(&root.join("usr/bin/tools-tool")),
        "#!/bin/sh\necho tools\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(root.join("usr/bin/tools-tool")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o755);
    assert!(root.join("usr/lib/systemd/system/tools.service").is_file());
    assert!(root
        .join("usr/lib/extension-release.d/extension-release.tools")
        .is_file());
    // The base's files are still there.
    assert_eq!(read(&root.join("usr/share/marker")), "v1\n");
    assert_eq!(read(&root.join("usr/bin/tool")), "#!/bin/sh\n");
    // The composed commit describes itself.
    let show = |key: &str| {
        run_ok(ostree().args([
            "show",
            &format!("--repo={}", s(&e.srepo())),
            &format!("--print-metadata-key={key}"),
            composed,
        ]))
        .trim()
        .to_string()
    };
    assert_eq!(show("arbor.base-commit"), format!("'{}'", e.v1));
    assert_eq!(show("arbor.extensions"), format!("['tools:{ext}']"));
    assert_eq!(show("version"), "'1.0'");
    // status: BaseCommit and one Extension line.
    let text = run_ok(arbor().args(["status", "--sysroot", s(&e.sys)]));
    assert!(text.contains(&format!("BaseCommit: {}", e.v1)), "{text}");
    assert!(
        text.contains(&format!("Extension: tools ({ext})")),
        "{text}"
    );
    assert_eq!(
        text.matches("Extension: ").count(),
        1,
        "one Extension line for one deployment with one extension:\n{text}"
    );
    // ostree admin status reads the sysroot and lists the composed commit.
    ostree_reads(&e.sys);
    let theirs = run_ok(ostree().args(["admin", "status", &format!("--sysroot={}", s(&e.sys))]));
    assert!(theirs.contains(&format!("testos {composed}.0")), "{theirs}");
    assert!(theirs.contains("Version: 1.0"), "{theirs}");
    // Without arbor's own lines, status is ostree admin status's text.
    let stripped: String = crate::util::ostree_view_of_status(&text)
        .lines()
        .filter(|l| !l.trim_start().starts_with("Extension: "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(stripped, theirs);
    // extension list --json names it with its commit.
    let list: Value = serde_json::from_str(&e.ok("list", &["--json"])).unwrap();
    let flat = list.to_string();
    assert!(flat.contains("\"tools\""), "{list:#}");
    assert!(flat.contains(&ext), "{list:#}");
    let human = e.ok("list", &[]);
    assert!(human.contains("tools"), "{human}");
    // The refs that keep the composed commit and the extension.
    let r = refs(&e.srepo());
    assert!(r.contains(&format!("arbor/composed/{composed}")), "{r:?}");
    assert!(
        r.contains(&format!("arbor/extensions/tools/{ext}")),
        "{r:?}"
    );
    both_fscks(&e.sys);
    // The extension's commit as ostree sees it: owner 0:0 like
    // `ostree commit --owner-uid=0 --owner-gid=0`.
    let ls = run_ok(ostree().args([
        "ls",
        &format!("--repo={}", s(&e.srepo())),
        &ext,
        "/usr/bin/tools-tool",
    ]));
    assert!(ls.starts_with("-00755 0 0 "), "{ls}");
    // The directory import is deterministic: adding the same directory
    // again changes nothing.
    let boot = crate::config_apply::boot_snapshot(&e.sys);
    e.ok("add", &[s(&dir)]);
    assert_eq!(layers(&e.sys), l);
    assert_eq!(crate::config_apply::boot_snapshot(&e.sys), boot);
}

#[test]
fn add_by_ref_and_by_remote_ref_then_readd_is_a_no_op() {
    if needs_root("add_by_ref_and_by_remote_ref_then_readd_is_a_no_op") {
        return;
    }
    let e = Ext::new();
    // A ref in the sysroot repository, committed by ostree.
    let tools = e.tool_dir("tools");
    let c_tools = ext_commit(&e.srepo(), "exts/tools", &tools, &[]);
    e.ok("add", &["exts/tools"]);
    // A ref pulled from the remote.
    let net = e.tool_dir("net");
    let c_net = ext_commit(&e.repo, "exts/net", &net, &[]);
    run_ok(arbor().args(["pull", "--repo", s(&e.srepo()), "origin", "exts/net"]));
    e.ok("add", &["origin:exts/net"]);
    let l = layers(&e.sys);
    assert_eq!(
        l[0].2,
        [format!("tools:{c_tools}"), format!("net:{c_net}")],
        "names from the refs' last components, in the order added"
    );
    let root = root_of(&e.sys, 0);
    assert!(root.join("usr/bin/tools-tool").is_file());
    assert!(root.join("usr/bin/net-tool").is_file());
    both_fscks(&e.sys);
    // Adding what is already listed: no new deployment.
    let before = crate::config_apply::boot_snapshot(&e.sys);
    let n = deployments(&e.sys).len();
    e.ok("add", &["exts/tools"]);
    e.ok("add", &["exts/tools", "origin:exts/net"]);
    assert_eq!(deployments(&e.sys).len(), n);
    assert_eq!(layers(&e.sys), l);
    assert_eq!(crate::config_apply::boot_snapshot(&e.sys), before);
    // A 64-hex checksum needs a name.
    let err = run_fail(&mut e.cmd("add", &[&c_tools]));
    assert!(stderr(&err).contains("name"), "{}", stderr(&err));
    // With one, it is the same extension: still a no-op.
    e.ok("add", &["--name", "tools", &c_tools]);
    assert_eq!(layers(&e.sys), l);
}

#[test]
fn add_a_tar_file_and_a_tar_stream() {
    if needs_root("add_a_tar_file_and_a_tar_stream") {
        return;
    }
    let e = Ext::new();
    let a = e.tool_dir("fromtar");
    let tar = e.fresh("tar").join("fromtar.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&a)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    e.ok("add", &[s(&tar)]);
    let l = layers(&e.sys);
    let c_file = commit_of(&l[0].2, "fromtar");
    let root = root_of(&e.sys, 0);
    assert_eq!(
        read(&root.join("usr/bin/fromtar-tool")),
        "#!/bin/sh\necho fromtar\n"
    );
    // Standard input, named explicitly.
    let b = e.tool_dir("piped");
    let tar2 = e.fresh("tar").join("piped.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&b)
            .arg("-cf")
            .arg(&tar2)
            .arg("."),
    );
    let mut c = e.cmd("add", &["--name", "piped", "-"]);
    c.stdin(std::fs::File::open(&tar2).unwrap());
    run_ok(&mut c);
    let l = layers(&e.sys);
    assert_eq!(l[0].2.len(), 2, "{l:?}");
    assert_eq!(commit_of(&l[0].2, "fromtar"), c_file);
    commit_of(&l[0].2, "piped");
    let root = root_of(&e.sys, 0);
    assert_eq!(
        read(&root.join("usr/bin/piped-tool")),
        "#!/bin/sh\necho piped\n"
    );
    assert!(root.join("usr/bin/fromtar-tool").is_file());
    // Standard input without a name is refused.
    let mut c = e.cmd("add", &["-"]);
    c.stdin(std::fs::File::open(&tar2).unwrap());
    run_fail(&mut c);
    both_fscks(&e.sys);
}

#[test]
fn add_staged_is_finalized_later() {
    if needs_root("add_staged_is_finalized_later") {
        return;
    }
    let e = Ext::new();
    let booted = crate::sysroot::booted_root(&e.sys, 0);
    let dir = e.tool_dir("tools");
    let mut c = e.cmd("add", &["--stage", s(&dir)]);
    c.env("ARBOR_TEST_ROOT", &booted);
    run_ok(&mut c);
    let v = crate::sysroot::status_json(&e.sys, Some(&booted));
    let d = v["deployments"].as_array().unwrap();
    assert_eq!(d.len(), 2, "{v:#}");
    assert_eq!(d[0]["staged"], true, "{v:#}");
    assert_eq!(d[0]["base"], e.v1.as_str());
    commit_of(
        &d[0]["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        "tools",
    );
    // Nothing is written to the boot entries before finalization.
    let entries = crate::util::dir_names(&e.sys.join("boot/loader/entries"));
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mut f = arbor();
    f.args(["finalize", "--sysroot", s(&e.sys)])
        .env("ARBOR_TEST_ROOT", &booted);
    run_ok(&mut f);
    let l = layers(&e.sys);
    assert_eq!(l[0].1, e.v1);
    commit_of(&l[0].2, "tools");
    assert!(root_of(&e.sys, 0).join("usr/bin/tools-tool").is_file());
    ostree_reads(&e.sys);
    both_fscks(&e.sys);
}

#[test]
fn replacing_a_name_keeps_its_place_and_drops_its_old_files() {
    if needs_root("replacing_a_name_keeps_its_place_and_drops_its_old_files") {
        return;
    }
    let e = Ext::new();
    let a1 = e.ext_dir("a", &[("usr/share/a/one", "1\n")], Some("1"));
    let b = e.ext_dir("b", &[("usr/share/b/file", "b\n")], Some("1"));
    e.ok("add", &[s(&a1), s(&b)]);
    let before = layers(&e.sys)[0].2.clone();
    assert_eq!(before.len(), 2);
    assert!(
        before[0].starts_with("a:") && before[1].starts_with("b:"),
        "{before:?}"
    );
    let a2 = e.ext_dir("a", &[("usr/share/a/two", "2\n")], Some("1"));
    e.ok("add", &[s(&a2)]);
    let after = layers(&e.sys)[0].2.clone();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after[0].starts_with("a:"), "replaced in place: {after:?}");
    assert_ne!(after[0], before[0]);
    assert_eq!(after[1], before[1]);
    let root = root_of(&e.sys, 0);
    assert!(!root.join("usr/share/a/one").exists());
    assert_eq!(read(&root.join("usr/share/a/two")), "2\n");
    assert_eq!(read(&root.join("usr/share/b/file")), "b\n");
}

#[test]
fn remove_removes_every_file_of_the_extension() {
    if needs_root("remove_removes_every_file_of_the_extension") {
        return;
    }
    let e = Ext::new();
    // Files in new directories, in existing deep ones, and a symlink.
    let dir = e.ext_dir(
        "big",
        &[
            ("usr/share/big/a/b/c/deep", "deep\n"),
            ("usr/lib/systemd/system/big.service", "[Unit]\n"),
            ("usr/lib/modules/6.1.0-test/extra/big.ko", "KO\n"),
            ("usr/bin/big", "#!/bin/sh\n"),
            ("opt/big/data", "opt\n"),
        ],
        Some("1"),
    );
    std::os::unix::fs::symlink("big", dir.join("usr/bin/big-link")).unwrap();
    e.ok("add", &[s(&dir)]);
    let small = e.tool_dir("small");
    e.ok("add", &[s(&small)]);
    assert!(root_of(&e.sys, 0)
        .join("usr/share/big/a/b/c/deep")
        .is_file());
    e.ok("remove", &["big"]);
    let l = layers(&e.sys);
    assert_eq!(l[0].1, e.v1);
    assert_eq!(l[0].2.len(), 1, "{l:?}");
    commit_of(&l[0].2, "small");
    // The deployment's /usr is the base's plus `small`'s files, nothing else.
    let root = root_of(&e.sys, 0);
    let expected = checkout(&e, &e.v1);
    for (p, c) in tool_files("small") {
        put(&expected.join(p), c);
    }
    put(
        &expected.join("usr/lib/extension-release.d/extension-release.small"),
        "ID=testos\nVERSION_ID=1\n",
    );
    assert_eq!(paths(&root.join("usr")), paths(&expected.join("usr")));
    assert!(!root.join("opt/big").exists());
    // Removing the last one deploys the base itself.
    e.ok("remove", &["small"]);
    let l = layers(&e.sys);
    assert_eq!(l[0], (e.v1.clone(), e.v1.clone(), vec![]));
    let root = root_of(&e.sys, 0);
    let base = checkout(&e, &e.v1);
    crate::util::assert_same_tree(&base.join("usr"), &root.join("usr"), true);
    let text = run_ok(arbor().args(["status", "--sysroot", s(&e.sys)]));
    let first: Vec<&str> = text.lines().take_while(|l| !l.contains("State:")).collect();
    assert!(!first.iter().any(|l| l.contains("Extension: ")), "{text}");
    both_fscks(&e.sys);
}

#[test]
fn removing_an_unknown_name_lists_the_known_ones() {
    if needs_root("removing_an_unknown_name_lists_the_known_ones") {
        return;
    }
    let e = Ext::new();
    let a = e.tool_dir("alpha");
    let b = e.tool_dir("beta");
    e.ok("add", &[s(&a), s(&b)]);
    let before = crate::config_apply::boot_snapshot(&e.sys);
    let err = run_fail(&mut e.cmd("remove", &["gamma"]));
    let msg = stderr(&err);
    for w in ["gamma", "alpha", "beta"] {
        assert!(msg.contains(w), "{w} missing from: {msg}");
    }
    // A known name with an unknown one: nothing removed.
    run_fail(&mut e.cmd("remove", &["alpha", "gamma"]));
    assert_eq!(crate::config_apply::boot_snapshot(&e.sys), before);
}

#[test]
fn rollback_restores_the_previous_list() {
    if needs_root("rollback_restores_the_previous_list") {
        return;
    }
    let e = Ext::new();
    let a = e.tool_dir("alpha");
    e.ok("add", &[s(&a)]);
    let one = layers(&e.sys)[0].clone();
    let b = e.tool_dir("beta");
    e.ok("add", &[s(&b)]);
    let two = layers(&e.sys)[0].clone();
    assert_eq!(two.2.len(), 2);
    run_ok(arbor().args(["rollback", "--sysroot", s(&e.sys)]));
    let l = layers(&e.sys);
    assert_eq!(
        l[0], one,
        "rollback puts the one-extension deployment first"
    );
    assert_eq!(l[1], two);
    let root = root_of(&e.sys, 0);
    assert!(root.join("usr/bin/alpha-tool").is_file());
    assert!(!root.join("usr/bin/beta-tool").exists());
    let text = run_ok(arbor().args(["status", "--sysroot", s(&e.sys)]));
    let first: String = text
        .lines()
        .take_while(|l| !l.contains("State:"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(first.contains("Extension: alpha ("), "{text}");
    assert!(!first.contains("Extension: beta ("), "{text}");
    // The list shows what boots next.
    let list = e.ok("list", &[]);
    assert!(list.contains("alpha"), "{list}");
    ostree_reads(&e.sys);
}

/// An extension's `etc/` is composed into `usr/etc` (the OS defaults), so
/// the /etc merge brings its files to the new deployment's /etc; removing
/// the extension removes them from both. A file the admin edited in /etc
/// is the admin's from then on: the /etc merge keeps the edited copy when
/// the extension (its default) goes away, as it keeps any modified file
/// whose default was removed.
#[test]
fn etc_content_goes_to_usr_etc_and_leaves_with_the_extension() {
    if needs_root("etc_content_goes_to_usr_etc_and_leaves_with_the_extension") {
        return;
    }
    let e = Ext::new();
    let dir = e.ext_dir(
        "conf",
        &[
            ("etc/foo.conf", "foo=1\n"),
            ("etc/edited.conf", "edited=1\n"),
            ("usr/share/conf/x", "x\n"),
        ],
        Some("1"),
    );
    e.ok("add", &[s(&dir)]);
    let root = root_of(&e.sys, 0);
    assert_eq!(read(&root.join("usr/etc/foo.conf")), "foo=1\n");
    assert_eq!(read(&root.join("etc/foo.conf")), "foo=1\n");
    assert_eq!(read(&root.join("etc/edited.conf")), "edited=1\n");
    // Nothing at the top level: etc/ is not a root directory of the commit.
    let composed = &layers(&e.sys)[0].0;
    let top = run_ok(ostree().args(["ls", &format!("--repo={}", s(&e.srepo())), composed, "/"]));
    assert!(!top.contains(" /etc"), "{top}");
    // The admin edits one of them.
    std::fs::write(root.join("etc/edited.conf"), "edited=ADMIN\n").unwrap();
    e.ok("remove", &["conf"]);
    let root = root_of(&e.sys, 0);
    assert!(!root.join("usr/etc/foo.conf").exists());
    assert!(!root.join("etc/foo.conf").exists());
    assert!(!root.join("usr/etc/edited.conf").exists());
    assert_eq!(read(&root.join("etc/edited.conf")), "edited=ADMIN\n");
    assert!(!root.join("usr/share/conf").exists());
}

#[test]
fn drift_compares_usr_with_the_composed_commit() {
    if needs_root("drift_compares_usr_with_the_composed_commit") {
        return;
    }
    let e = Ext::new();
    let dir = e.tool_dir("tools");
    e.ok("add", &[s(&dir)]);
    let drift = |args: &[&str]| {
        arbor()
            .args(["drift", "--sysroot", s(&e.sys), "--json"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = drift(&[]);
    assert_eq!(out.status.code(), Some(0), "drift after add: {out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["usr"], Value::Array(vec![]), "{r:#}");
    let root = root_of(&e.sys, 0);
    let tool = root.join("usr/bin/tools-tool");
    crate::config_drift::replace(&tool, "#!/bin/sh\necho evil\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = drift(&[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        crate::config_drift::changes(&r, "usr"),
        crate::config_drift::want(&[("/usr/bin/tools-tool", &["modified"])]),
        "{r:#}"
    );
}

#[test]
fn deploy_dry_run_previews_the_composed_commit_and_no_extensions_opts_out() {
    if needs_root("deploy_dry_run_previews_the_composed_commit_and_no_extensions_opts_out") {
        return;
    }
    let e = Ext::new();
    let dir = e.tool_dir("tools");
    e.ok("add", &[s(&dir)]);
    let l = layers(&e.sys);
    let composed = l[0].0.clone();
    assert_eq!(l[0].1, e.v1);
    let sys_cmd = |args: &[&str]| {
        let mut c = arbor();
        c.arg(args[0])
            .args(["--sysroot", s(&e.sys), "--os", "testos"])
            .args(&args[1..]);
        c
    };
    // The preview shows what the deploy deploys: the list re-composed on
    // the revision's base (the same composed commit), unless opted out.
    let out = run_ok(&mut sys_cmd(&[
        "deploy",
        "--dry-run",
        "origin:testos/stable",
    ]));
    assert!(out.contains(&format!("Would deploy {composed}")), "{out}");
    let out = run_ok(&mut sys_cmd(&[
        "deploy",
        "--dry-run",
        "--no-extensions",
        "origin:testos/stable",
    ]));
    assert!(out.contains(&format!("Would deploy {}", e.v1)), "{out}");
    assert_eq!(layers(&e.sys), l, "a dry run changes nothing");
    // switch: re-composes by default, deploys the ref's commit as it is
    // with --no-extensions.
    run_ok(ostree().args([
        &format!("--repo={}", s(&e.srepo())),
        "refs",
        "--create=testos/local",
        &e.v1,
    ]));
    run_ok(&mut sys_cmd(&["switch", "testos/local"]));
    let tools = commit_of(&l[0].2, "tools");
    assert_eq!(
        layers(&e.sys)[0],
        (
            composed.clone(),
            e.v1.clone(),
            vec![format!("tools:{tools}")]
        )
    );
    run_ok(&mut sys_cmd(&[
        "switch",
        "--no-extensions",
        "origin:testos/stable",
    ]));
    assert_eq!(layers(&e.sys)[0], (e.v1.clone(), e.v1.clone(), vec![]));
    assert!(!root_of(&e.sys, 0).join("usr/bin/tools-tool").exists());
    // deploy: the same.
    e.ok("add", &[s(&dir)]);
    assert_eq!(layers(&e.sys)[0].0, composed);
    run_ok(&mut sys_cmd(&[
        "deploy",
        "--no-extensions",
        "origin:testos/stable",
    ]));
    assert_eq!(layers(&e.sys)[0], (e.v1.clone(), e.v1.clone(), vec![]));
    run_ok(&mut sys_cmd(&["deploy", "testos/local"]));
    assert_eq!(layers(&e.sys)[0], (e.v1.clone(), e.v1.clone(), vec![]));
    ostree_reads(&e.sys);
    both_fscks(&e.sys);
}
