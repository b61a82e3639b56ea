//! `arbor drift` on real sysroots: every kind of drift in /etc and /usr,
//! `--json`, exit codes, agreement with `ostree admin config-diff`,
//! `--to-config` (adopt) and `--revert`.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::config_adopt::{config_apply, BASE_CONFIG};
use crate::sysroot::{deploy, deployment_dir, prepare, put, source, unseal_all, Source, Tool};
use crate::util::{arbor, needs_root, ostree, require_ostree, run_ok, s};

/// A sysroot with the source's v1 deployed by arbor.
pub(crate) struct Fixture {
    pub(crate) src: Source,
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        unseal_all(self.dir.path());
    }
}

/// A source whose defaults include the passwd family, as every real OS's.
pub(crate) fn source_with_users() -> Source {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    run_ok(ostree().args(["init", "--mode=archive", &format!("--repo={}", s(&repo))]));
    let tree = dir.path().join("tree");
    crate::sysroot::os_tree(
        &tree,
        &[
            ("passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            ("group", "root:x:0:\n"),
            ("shadow", "root:*:19000:0:99999:7:::\n"),
            ("gshadow", "root:*::\n"),
            ("hostname", "os\n"),
        ],
    );
    let v1 = crate::sysroot::ostree_commit(&repo, &tree, "1.0", "1577836800");
    Source {
        dir,
        repo,
        v1,
        v2: String::new(),
    }
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        Fixture::from_source(source())
    }

    pub(crate) fn from_source(src: Source) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        prepare(Tool::Arbor, &dir.path().join("s"), &src);
        deploy(Tool::Arbor, &dir.path().join("s"), &["testos/stable"]);
        Fixture { src, dir }
    }

    pub(crate) fn sysroot(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    pub(crate) fn root(&self) -> PathBuf {
        deployment_dir(&self.sysroot(), &self.src.v1, 0)
    }

    pub(crate) fn drift(&self, args: &[&str]) -> Output {
        arbor()
            .arg("drift")
            .arg("--sysroot")
            .arg(self.sysroot())
            .args(args)
            .output()
            .unwrap()
    }

    /// `drift --json ARGS`: the exit code and the parsed report.
    pub(crate) fn json(&self, args: &[&str]) -> (i32, Value) {
        let out = self.drift(&[&["--json"], args].concat());
        let code = out.status.code().unwrap();
        assert!(
            code == 0 || code == 1,
            "drift failed ({code}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            code,
            serde_json::from_slice(&out.stdout).expect("drift --json"),
        )
    }
}

/// Path → change names of one section of a JSON report.
pub(crate) fn changes(report: &Value, section: &str) -> BTreeMap<String, Vec<String>> {
    report[section]
        .as_array()
        .unwrap_or_else(|| panic!("no {section} in {report}"))
        .iter()
        .map(|e| {
            let c = e["changes"].as_array().unwrap();
            (
                e["path"].as_str().unwrap().to_string(),
                c.iter().map(|c| c.as_str().unwrap().to_string()).collect(),
            )
        })
        .collect()
}

pub(crate) fn want(items: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    items
        .iter()
        .map(|(p, c)| (p.to_string(), c.iter().map(|c| c.to_string()).collect()))
        .collect()
}

pub(crate) fn chown(p: &Path, uid: u32) {
    rustix::fs::chownat(
        rustix::fs::CWD,
        p,
        Some(rustix::fs::Uid::from_raw(uid)),
        None,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

pub(crate) fn setxattr(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

/// Replaces a file by a new inode (never writing into a hardlinked object).
pub(crate) fn replace(p: &Path, content: &str) {
    std::fs::remove_file(p).unwrap();
    std::fs::write(p, content).unwrap();
}

/// The admin's edits of /etc, one per kind.
pub(crate) fn edit_etc(etc: &Path) {
    std::fs::write(etc.join("modified-by-admin.conf"), "b=ADMIN\n").unwrap();
    crate::interop::chmod(&etc.join("unchanged.conf"), 0o600);
    chown(&etc.join("changed-upstream.conf"), 1000);
    setxattr(&etc.join("both-changed.conf"), "user.admin", b"1");
    std::fs::remove_file(etc.join("removed-by-admin.conf")).unwrap();
    put(&etc.join("added-by-admin.conf"), "new=ADMIN\n");
    put(&etc.join("admin-dir/f"), "x\n");
    std::fs::remove_dir_all(etc.join("d3")).unwrap();
    put(&etc.join("d3"), "a file now\n");
    symlink("unchanged.conf", etc.join("admin-link")).unwrap();
}

pub(crate) const ETC_DRIFT: &[(&str, &[&str])] = &[
    ("/etc/added-by-admin.conf", &["added"]),
    ("/etc/admin-dir", &["added"]),
    ("/etc/admin-dir/f", &["added"]),
    ("/etc/admin-link", &["added"]),
    ("/etc/both-changed.conf", &["xattrs-changed"]),
    ("/etc/changed-upstream.conf", &["owner-changed"]),
    ("/etc/d3", &["type-changed"]),
    ("/etc/modified-by-admin.conf", &["modified"]),
    ("/etc/removed-by-admin.conf", &["deleted"]),
    ("/etc/unchanged.conf", &["mode-changed"]),
];

#[test]
pub(crate) fn drift_of_every_kind_in_etc_and_usr() {
    if needs_root("drift of a bare sysroot") {
        return;
    }
    require_ostree();
    let f = Fixture::new();
    let out = f.drift(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("/etc: no drift"), "{text}");
    assert!(text.contains("/usr: no drift"), "{text}");
    let (code, r) = f.json(&[]);
    assert_eq!(code, 0);
    assert_eq!(r["etc"], Value::Array(vec![]));
    assert_eq!(r["usr"], Value::Array(vec![]));
    assert_eq!(r["commit"], f.src.v1.as_str());
    assert_eq!(r["usr_compare"], "exact");
    assert!(r["usr_files"].as_u64().unwrap() >= 4, "{r}");

    edit_etc(&f.root().join("etc"));
    let u = f.root().join("usr");
    // Content written into the hardlinked object itself.
    std::fs::write(u.join("bin/tool"), "#!/bin/sh\necho evil\n").unwrap();
    // New inodes, so that each field is told apart.
    let kernel = u.join("lib/modules/6.1.0-test/vmlinuz");
    replace(&kernel, "FAKE KERNEL\n");
    crate::interop::chmod(&kernel, 0o600);
    let initramfs = u.join("lib/modules/6.1.0-test/initramfs.img");
    replace(&initramfs, "FAKE INITRAMFS\n");
    chown(&initramfs, 1000);
    crate::interop::chmod(&initramfs, 0o644);
    let osrel = u.join("lib/os.release.d/os-release-testos");
    let content = std::fs::read_to_string(&osrel).unwrap();
    replace(&osrel, &content);
    crate::interop::chmod(&osrel, 0o644);
    setxattr(&osrel, "user.mark", b"x");
    std::fs::remove_file(u.join("lib/os-release")).unwrap();
    symlink("elsewhere", u.join("lib/os-release")).unwrap();
    put(&u.join("bin/dropped"), "x\n");
    std::fs::remove_file(u.join("etc/d1/f.conf")).unwrap();
    std::fs::remove_dir_all(u.join("etc/d2/sub")).unwrap();
    put(&u.join("etc/d2/sub"), "not a dir\n");

    let (code, r) = f.json(&[]);
    assert_eq!(code, 1);
    // /etc is compared with the deployment's /usr/etc: the defaults
    // tampered with above show there too (and under /usr).
    let mut etc = want(ETC_DRIFT);
    etc.extend(want(&[
        ("/etc/d1/f.conf", &["added"]),
        ("/etc/d2/sub", &["type-changed"]),
        // The directory /etc keeps there: what it holds is declared by
        // nothing any more.
        ("/etc/d2/sub/g.conf", &["added"]),
    ]));
    assert_eq!(changes(&r, "etc"), etc, "{r:#}");
    let usr = want(&[
        ("/usr/bin/dropped", &["added"]),
        ("/usr/bin/tool", &["modified"]),
        ("/usr/etc/d1/f.conf", &["deleted"]),
        ("/usr/etc/d2/sub", &["type-changed"]),
        (
            "/usr/lib/modules/6.1.0-test/initramfs.img",
            &["owner-changed"],
        ),
        ("/usr/lib/modules/6.1.0-test/vmlinuz", &["mode-changed"]),
        ("/usr/lib/os-release", &["modified"]),
        (
            "/usr/lib/os.release.d/os-release-testos",
            &["xattrs-changed"],
        ),
    ]);
    assert_eq!(changes(&r, "usr"), usr, "{r:#}");
    // The hardlinked object: flagged, with why nothing more precise is said.
    let tool = r["usr"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/usr/bin/tool")
        .unwrap();
    assert!(
        tool["note"].as_str().unwrap().contains("hardlink"),
        "{tool}"
    );
    let link = r["usr"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/usr/lib/os-release")
        .unwrap();
    assert_eq!(link["expected"]["target"], "os.release.d/os-release-testos");
    assert_eq!(link["actual"]["target"], "elsewhere");

    // --etc-only: /usr is not looked at.
    let (code, r) = f.json(&["--etc-only"]);
    assert_eq!(code, 1);
    assert_eq!(r["usr"], Value::Null);
    // The deployment by index, and the human form.
    let out = f.drift(&["0"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("D    /etc/removed-by-admin.conf"), "{text}");
    assert!(
        text.contains("M    /etc/unchanged.conf  (mode 0644 -> 0600)"),
        "{text}"
    );
    assert!(
        text.contains("T    /usr/etc/d2/sub  (directory -> file)"),
        "{text}"
    );
}

#[test]
pub(crate) fn drift_exit_codes() {
    if needs_root("drift of a bare sysroot") {
        return;
    }
    require_ostree();
    let f = Fixture::new();
    assert_eq!(f.drift(&[]).status.code(), Some(0));
    put(&f.root().join("etc/extra.conf"), "x\n");
    assert_eq!(f.drift(&[]).status.code(), Some(1));
    // Errors: 2, whatever the cause, usage errors included.
    // (Staging needs a booted system: an error here.)
    for args in [
        vec!["7"],
        vec!["--bogus"],
        vec!["--stage"],
        vec!["notanumber"],
        vec!["--revert", "--stage"],
    ] {
        let out = f.drift(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = arbor()
        .args(["drift", "--sysroot"])
        .arg(f.dir.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
}

/// `ostree admin config-diff` lines: path (relative to /etc) → letter.
pub(crate) fn config_diff(sysroot: &Path) -> BTreeMap<String, String> {
    let out = run_ok(ostree().args([
        "admin",
        "config-diff",
        &format!("--sysroot={}", s(sysroot)),
        "--os=testos",
    ]));
    out.lines()
        .map(|l| {
            let (letter, path) = l.split_once(char::is_whitespace).unwrap();
            (format!("/etc/{}", path.trim()), letter.to_string())
        })
        .collect()
}

#[test]
pub(crate) fn config_diff_agrees_on_etc() {
    if needs_root("ostree admin config-diff") {
        return;
    }
    require_ostree();
    let f = Fixture::new();
    assert_eq!(config_diff(&f.sysroot()), BTreeMap::new());
    let etc = f.root().join("etc");
    edit_etc(&etc);
    std::fs::remove_dir_all(etc.join("d2")).unwrap();
    let ostree_view = config_diff(&f.sysroot());
    let (_, r) = f.json(&["--etc-only"]);
    let ours: BTreeMap<String, String> = r["etc"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let c: Vec<&str> = e["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            let letter = match c[0] {
                "added" => "A",
                "deleted" => "D",
                _ => "M",
            };
            (e["path"].as_str().unwrap().to_string(), letter.to_string())
        })
        .collect();
    // What ostree cannot express: xattrs (config-diff ignores them) and
    // the content of a deleted directory (it lists the directory only).
    let expressible: BTreeMap<String, String> = ours
        .into_iter()
        .filter(|(p, _)| p != "/etc/both-changed.conf" && !p.starts_with("/etc/d2/"))
        .collect();
    assert_eq!(expressible, ostree_view, "drift: {r:#}");
    assert_eq!(ostree_view.get("/etc/d2").map(String::as_str), Some("D"));
    assert_eq!(
        ostree_view.get("/etc/admin-dir/f").map(String::as_str),
        Some("A")
    );
}

/// `arbor ARGS` as the unprivileged user `nobody`.
pub(crate) fn as_nobody(args: &[&str]) -> String {
    run_ok(
        std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", env!("CARGO_BIN_EXE_arbor")])
            .args(args),
    )
}

pub(crate) fn open_to_all(p: &Path) {
    std::fs::set_permissions(
        p,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o777),
    )
    .unwrap();
}

#[test]
pub(crate) fn managed_owners_follow_how_the_sysroot_was_composed() {
    if needs_root("a sysroot composed by nobody, checked by root") {
        return;
    }
    require_ostree();
    // Bare (root composed): the declared owner is checked.
    let f = Fixture::new();
    let base = f.dir.path().join("10-base.ign");
    std::fs::write(&base, BASE_CONFIG).unwrap();
    config_apply(&f.sysroot(), &[&base]);
    assert_eq!(f.json(&[]).0, 0);
    let etc = deployment_dir(&f.sysroot(), &f.src.v1, 1).join("etc");
    chown(&etc.join("managed.conf"), 1000);
    let (code, r) = f.json(&["--etc-only"]);
    assert_eq!(code, 1);
    assert_eq!(
        changes(&r, "etc"),
        want(&[("/etc/managed.conf", &["owner-changed"])])
    );
    // Bare-user, composed by nobody, checked by root: what nobody wrote is
    // nobody's, and that is no drift; root's is.
    let src = source();
    open_to_all(src.dir.path());
    let td = tempfile::tempdir().unwrap();
    open_to_all(td.path());
    let sys = td.path().join("s");
    let cfg = td.path().join("10-base.ign");
    std::fs::write(&cfg, BASE_CONFIG).unwrap();
    as_nobody(&["admin", "init-fs", s(&sys)]);
    as_nobody(&["admin", "os-init", "--sysroot", s(&sys), "testos"]);
    let repo = sys.join("ostree/repo");
    as_nobody(&[
        "pull-local",
        "--repo",
        s(&repo),
        s(&src.repo),
        "testos/stable",
    ]);
    as_nobody(&[
        "deploy",
        "--sysroot",
        s(&sys),
        "--os",
        "testos",
        "testos/stable",
    ]);
    as_nobody(&["config", "apply", "--sysroot", s(&sys), s(&cfg)]);
    let drift = |args: &[&str]| {
        let out = arbor()
            .args(["drift", "--json", "--sysroot", s(&sys)])
            .args(args)
            .output()
            .unwrap();
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code().unwrap(), r)
    };
    let (code, r) = drift(&[]);
    assert_eq!(code, 0, "{r:#}");
    let etc = deployment_dir(&sys, &src.v1, 1).join("etc");
    chown(&etc.join("managed.conf"), 0);
    let (code, r) = drift(&["--etc-only"]);
    assert_eq!(code, 1);
    assert_eq!(
        changes(&r, "etc"),
        want(&[("/etc/managed.conf", &["owner-changed"])])
    );
}

#[test]
pub(crate) fn a_config_written_through_a_default_symlink_is_clean() {
    if needs_root("drift of a bare sysroot") {
        return;
    }
    require_ostree();
    let mut src = source_with_users();
    // v1 again, with /usr/etc/viasym -> real (a directory of /etc).
    let tree = src.dir.path().join("tree-viasym");
    crate::sysroot::os_tree(&tree, &[("real/a.conf", "a\n"), ("hostname", "os\n")]);
    symlink("real", tree.join("usr/etc/viasym")).unwrap();
    src.v1 = crate::sysroot::ostree_commit(&src.repo, &tree, "1.1", "1577836900");
    let f = Fixture::from_source(src);
    let cfg = f.dir.path().join("10-viasym.ign");
    std::fs::write(
        &cfg,
        r#"{"ignition": {"version": "3.4.0"}, "storage": {"files": [
             {"path": "/etc/viasym/new.conf", "mode": 420,
              "contents": {"source": "data:,n%3D1%0A"}},
             {"path": "/etc/viasym/sub/deep.conf", "mode": 384,
              "contents": {"source": "data:,d%0A"}}]}}"#,
    )
    .unwrap();
    config_apply(&f.sysroot(), &[&cfg]);
    let etc = deployment_dir(&f.sysroot(), &f.src.v1, 1).join("etc");
    assert_eq!(
        std::fs::read_to_string(etc.join("real/new.conf")).unwrap(),
        "n=1\n"
    );
    let (code, r) = f.json(&[]);
    assert_eq!(code, 0, "a fresh apply is drift-clean: {r:#}");
    // And what it manages there is still checked.
    std::fs::write(etc.join("real/new.conf"), "n=LOCAL\n").unwrap();
    let (code, r) = f.json(&["--etc-only"]);
    assert_eq!(code, 1);
    assert_eq!(
        changes(&r, "etc"),
        want(&[("/etc/real/new.conf", &["modified"])])
    );
}

#[test]
pub(crate) fn drift_status_survives_a_closed_stdout() {
    if needs_root("drift of a bare sysroot") {
        return;
    }
    require_ostree();
    let f = Fixture::new();
    put(&f.root().join("etc/extra.conf"), "x\n");
    let status = |args: &[&str], closed: bool| {
        let mut c = arbor();
        c.arg("drift").arg("--sysroot").arg(f.sysroot()).args(args);
        if closed {
            // A pipe whose reader is gone: writing fails with EPIPE.
            let (r, w) = std::io::pipe().unwrap();
            drop(r);
            c.stdout(std::process::Stdio::from(w));
        } else {
            // No stdout at all.
            let mut sh = std::process::Command::new("sh");
            sh.args(["-c", "exec \"$@\" >&-", "sh"])
                .arg(c.get_program())
                .args(c.get_args());
            c = sh;
        }
        let out = c.stderr(std::process::Stdio::piped()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for closed in [true, false] {
        for args in [&["--json"][..], &[], &["--etc-only"]] {
            let (code, err) = status(args, closed);
            assert_eq!(code, Some(1), "{args:?} closed={closed}: {err}");
        }
        let (code, err) = status(&["--json", "7"], closed);
        assert_eq!(code, Some(2), "error, closed={closed}: {err}");
    }
}

#[test]
pub(crate) fn to_config_leaves_out_names_that_are_not_utf8() {
    if needs_root("drift of a bare sysroot") {
        return;
    }
    require_ostree();
    let f = Fixture::new();
    let bad = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"bad\xffname");
    std::fs::write(f.root().join("etc").join(bad), "x\n").unwrap();
    let (code, r) = f.json(&["--etc-only"]);
    assert_eq!(code, 1);
    assert_eq!(
        changes(&r, "etc"),
        want(&[("/etc/bad\\xffname", &["added"])])
    );
    let adopt = f.dir.path().join("90-adopt.ign");
    let out = f.drift(&["--etc-only", "--to-config", s(&adopt)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/etc/bad\\xffname: its name is not UTF-8"),
        "{err}"
    );
    assert!(std::fs::read_to_string(&adopt).unwrap().contains("3.4.0"));
}
