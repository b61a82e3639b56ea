//! `arbor drift` on real sysroots: every kind of drift in /etc and /usr,
//! `--json`, exit codes, agreement with `ostree admin config-diff`,
//! `--to-config` (adopt) and `--revert`.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::sysroot::{deploy, deployment_dir, prepare, put, source, unseal_all, Source, Tool};
use crate::util::{arbor, needs_root, ostree, require_ostree, run_ok, s};

/// A sysroot with the source's v1 deployed by arbor.
struct Fixture {
    src: Source,
    dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        unseal_all(self.dir.path());
    }
}

/// A source whose defaults include the passwd family, as every real OS's.
fn source_with_users() -> Source {
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
    fn new() -> Fixture {
        Fixture::from_source(source())
    }

    fn from_source(src: Source) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        prepare(Tool::Arbor, &dir.path().join("s"), &src);
        deploy(Tool::Arbor, &dir.path().join("s"), &["testos/stable"]);
        Fixture { src, dir }
    }

    fn sysroot(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    fn root(&self) -> PathBuf {
        deployment_dir(&self.sysroot(), &self.src.v1, 0)
    }

    fn drift(&self, args: &[&str]) -> Output {
        arbor()
            .arg("drift")
            .arg("--sysroot")
            .arg(self.sysroot())
            .args(args)
            .output()
            .unwrap()
    }

    /// `drift --json ARGS`: the exit code and the parsed report.
    fn json(&self, args: &[&str]) -> (i32, Value) {
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
fn changes(report: &Value, section: &str) -> BTreeMap<String, Vec<String>> {
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

fn want(items: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    items
        .iter()
        .map(|(p, c)| (p.to_string(), c.iter().map(|c| c.to_string()).collect()))
        .collect()
}

fn chown(p: &Path, uid: u32) {
    rustix::fs::chownat(
        rustix::fs::CWD,
        p,
        Some(rustix::fs::Uid::from_raw(uid)),
        None,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

/// Replaces a file by a new inode (never writing into a hardlinked object).
fn replace(p: &Path, content: &str) {
    std::fs::remove_file(p).unwrap();
    std::fs::write(p, content).unwrap();
}

/// The admin's edits of /etc, one per kind.
fn edit_etc(etc: &Path) {
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

const ETC_DRIFT: &[(&str, &[&str])] = &[
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
fn drift_of_every_kind_in_etc_and_usr() {
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
fn drift_exit_codes() {
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
fn config_diff(sysroot: &Path) -> BTreeMap<String, String> {
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
fn config_diff_agrees_on_etc() {
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

#[test]
fn to_config_writes_ignition_and_names_what_it_cannot_say() {
    if needs_root("drift of a bare sysroot") {
        return;
    }
    require_ostree();
    let f = Fixture::new();
    edit_etc(&f.root().join("etc"));
    let file = f.dir.path().join("adopt.ign");
    let out = f.drift(&["--etc-only", "--to-config", s(&file)]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("/etc/removed-by-admin.conf: deleted"), "{err}");
    assert!(
        err.contains("/etc/both-changed.conf: only its extended attributes"),
        "{err}"
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(doc["ignition"]["version"], "3.4.0");
    let files = doc["storage"]["files"].as_array().unwrap();
    let by_path = |list: &[Value], p: &str| list.iter().find(|x| x["path"] == p).cloned();
    let m = by_path(files, "/etc/modified-by-admin.conf").unwrap();
    assert_eq!(m["contents"]["source"], "data:;base64,Yj1BRE1JTgo=");
    assert_eq!(m["overwrite"], true);
    assert_eq!(m["mode"], 0o644);
    assert_eq!(
        by_path(files, "/etc/unchanged.conf").unwrap()["mode"],
        0o600
    );
    assert_eq!(
        by_path(files, "/etc/changed-upstream.conf").unwrap()["user"]["id"],
        1000
    );
    // A default directory replaced by a file: `config apply` cannot take
    // a file there, so the document leaves it out and says so.
    assert!(by_path(files, "/etc/d3").is_none());
    assert!(
        err.contains("/etc/d3: a directory of the defaults or the configuration replaced"),
        "{err}"
    );
    assert!(by_path(files, "/etc/removed-by-admin.conf").is_none());
    let dirs = doc["storage"]["directories"].as_array().unwrap();
    assert_eq!(by_path(dirs, "/etc/admin-dir").unwrap()["mode"], 0o755);
    let links = doc["storage"]["links"].as_array().unwrap();
    assert_eq!(
        by_path(links, "/etc/admin-link").unwrap()["target"],
        "unchanged.conf"
    );
}

#[test]
fn revert_deploys_the_same_state_without_the_drift() {
    if needs_root("drift of a bare sysroot") {
        return;
    }
    require_ostree();
    let f = Fixture::new();
    let out = f.drift(&["--revert"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Nothing to revert"));
    edit_etc(&f.root().join("etc"));
    let tool = f.root().join("usr/bin/tool");
    replace(&tool, "#!/bin/sh\necho replaced\n");
    let kargs_before = run_ok(arbor().args(["kargs", "--sysroot", s(&f.sysroot())]));
    let out = f.drift(&["--revert"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Deployed "), "{text}");
    // The new default: same commit, same arguments, no drift; the drifted
    // deployment is still there (index 1), with its drift.
    let (code, r) = f.json(&[]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["commit"], f.src.v1.as_str());
    assert_eq!(r["deployment"], format!("{}.1", f.src.v1));
    assert_eq!(
        run_ok(arbor().args(["kargs", "--sysroot", s(&f.sysroot())])),
        kargs_before
    );
    let (code, old) = f.json(&["1"]);
    assert_eq!(code, 1);
    assert_eq!(changes(&old, "etc"), want(ETC_DRIFT));
    let new_etc = deployment_dir(&f.sysroot(), &f.src.v1, 1).join("etc");
    assert_eq!(
        std::fs::read_to_string(new_etc.join("removed-by-admin.conf")).unwrap(),
        "c=1\n"
    );
    assert!(!new_etc.join("added-by-admin.conf").exists());
    // ostree reads the result.
    run_ok(ostree().args(["admin", "status", &format!("--sysroot={}", s(&f.sysroot()))]));
}

#[test]
fn revert_says_when_repository_objects_drifted() {
    if needs_root("drift of a bare sysroot") {
        return;
    }
    require_ostree();
    let f = Fixture::new();
    // Written through the hardlink: the repository's object changed too.
    std::fs::write(f.root().join("usr/bin/tool"), "#!/bin/sh\necho evil\n").unwrap();
    let out = f.drift(&["--revert"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("still drifts"), "{err}");
    let (code, r) = f.json(&[]);
    assert_eq!(code, 1);
    assert_eq!(
        changes(&r, "usr"),
        want(&[("/usr/bin/tool", &["modified"])])
    );
}

fn config_apply(sysroot: &Path, files: &[&Path]) -> String {
    let mut c = arbor();
    c.args(["config", "apply", "--sysroot", s(sysroot)]);
    for f in files {
        c.arg(f);
    }
    run_ok(&mut c)
}

const BASE_CONFIG: &str = r#"{
  "ignition": {"version": "3.4.0"},
  "storage": {
    "files": [{"path": "/etc/managed.conf", "mode": 420,
               "contents": {"source": "data:,m%3D1%0A"}}],
    "directories": [{"path": "/etc/managed.d", "mode": 488}]
  }
}"#;

#[test]
fn adopt_round_trip_and_drift_of_a_configured_deployment() {
    if needs_root("drift of a bare sysroot") {
        return;
    }
    require_ostree();
    let f = Fixture::new();
    let inputs = f.dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    let base = inputs.join("10-base.ign");
    std::fs::write(&base, BASE_CONFIG).unwrap();
    config_apply(&f.sysroot(), &[&base]);
    // The configured deployment is clean: managed entries are expected.
    let (code, r) = f.json(&[]);
    assert_eq!(code, 0, "{r:#}");
    assert!(r["rendered_config"]
        .as_str()
        .unwrap()
        .starts_with("rendered-"));
    let etc = deployment_dir(&f.sysroot(), &f.src.v1, 1).join("etc");
    assert_eq!(
        std::fs::read_to_string(etc.join("managed.conf")).unwrap(),
        "m=1\n"
    );
    // Drift of a managed file, and unmanaged changes.
    std::fs::write(etc.join("managed.conf"), "m=LOCAL\n").unwrap();
    crate::interop::chmod(&etc.join("managed.d"), 0o755);
    std::fs::write(etc.join("modified-by-admin.conf"), "b=ADMIN\n").unwrap();
    crate::interop::chmod(&etc.join("unchanged.conf"), 0o600);
    chown(&etc.join("changed-upstream.conf"), 1000);
    put(&etc.join("admin-dir/f"), "x\n");
    symlink("unchanged.conf", etc.join("admin-link")).unwrap();
    // A default file replaced by a directory with content.
    std::fs::remove_file(etc.join("removed-by-admin.conf")).unwrap();
    put(&etc.join("removed-by-admin.conf/payload"), "p\n");
    let (code, r) = f.json(&[]);
    assert_eq!(code, 1);
    let drifted = want(&[
        ("/etc/removed-by-admin.conf", &["type-changed"]),
        ("/etc/removed-by-admin.conf/payload", &["added"]),
        ("/etc/admin-dir", &["added"]),
        ("/etc/admin-dir/f", &["added"]),
        ("/etc/admin-link", &["added"]),
        ("/etc/changed-upstream.conf", &["owner-changed"]),
        ("/etc/managed.conf", &["modified"]),
        ("/etc/managed.d", &["mode-changed"]),
        ("/etc/modified-by-admin.conf", &["modified"]),
        ("/etc/unchanged.conf", &["mode-changed"]),
    ]);
    assert_eq!(changes(&r, "etc"), drifted, "{r:#}");
    // Adopt: the drift as a config file, applied after the base config.
    let adopt = inputs.join("90-adopt.ign");
    let out = f.drift(&["--etc-only", "--to-config", s(&adopt)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("Wrote 6 file(s), 3 directory(ies) and 1 link(s)"),
        "{err}"
    );
    assert!(!err.contains("warning"), "{err}");
    run_ok(arbor().args(["config", "render"]).arg(&base).arg(&adopt));
    config_apply(&f.sysroot(), &[&base, &adopt]);
    let (code, r) = f.json(&[]);
    assert_eq!(code, 0, "adopted drift is managed: {r:#}");
    assert_eq!(r["deployment"], format!("{}.2", f.src.v1));
    let etc = deployment_dir(&f.sysroot(), &f.src.v1, 2).join("etc");
    assert_eq!(
        std::fs::read_to_string(etc.join("managed.conf")).unwrap(),
        "m=LOCAL\n"
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("removed-by-admin.conf/payload")).unwrap(),
        "p\n"
    );
    // A default directory replaced by a file, and one by a symlink: no
    // configuration can say that; left out, with a note, and what is
    // written still applies.
    std::fs::remove_dir_all(etc.join("d3")).unwrap();
    put(&etc.join("d3"), "a file now\n");
    std::fs::remove_dir_all(etc.join("d1")).unwrap();
    symlink("d3", etc.join("d1")).unwrap();
    put(&etc.join("late.conf"), "l\n");
    let adopt2 = inputs.join("91-adopt.ign");
    let out = f.drift(&["--etc-only", "--to-config", s(&adopt2)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("Wrote 1 file(s), 0 directory(ies) and 0 link(s)"),
        "{err}"
    );
    for p in ["/etc/d1", "/etc/d3"] {
        assert!(
            err.contains(&format!("{p}: a directory of the defaults")),
            "{err}"
        );
    }
    let doc: Value = serde_json::from_slice(&std::fs::read(&adopt2).unwrap()).unwrap();
    assert_eq!(
        doc["storage"]["files"][0]["path"], "/etc/late.conf",
        "{doc:#}"
    );
    assert_eq!(doc["storage"]["files"].as_array().unwrap().len(), 1);
    // (Carrying such a local change is refused by apply itself, as by
    // ostree's merge: the admin puts the directories back first.)
    for d in ["d1", "d3"] {
        let p = etc.join(d);
        std::fs::remove_file(&p).unwrap();
        run_ok(
            std::process::Command::new("cp")
                .arg("-a")
                .arg(etc.join("../usr/etc").join(d))
                .arg(&p),
        );
    }
    config_apply(&f.sysroot(), &[&base, &adopt, &adopt2]);
    let (code, r) = f.json(&["--etc-only"]);
    assert_eq!(code, 0, "{r:#}");
}

#[test]
fn staged_revert_drops_local_changes_at_finalize() {
    if needs_root("drift of a bare sysroot") {
        return;
    }
    require_ostree();
    let f = Fixture::new();
    let booted = crate::sysroot::booted_root(&f.sysroot(), 0);
    let with_boot = |args: &[&str]| {
        let mut c = arbor();
        c.env("ARBOR_TEST_ROOT", &booted).args(args);
        c
    };
    let etc = Path::new(&booted).join("etc");
    edit_etc(&etc);
    let sys = s(&f.sysroot()).to_string();
    let out = with_boot(&["drift", "--sysroot", &sys, "--revert", "--stage"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Staged deployment"));
    // Edited after staging, in the running /etc: dropped as well.
    put(&etc.join("late.conf"), "late\n");
    run_ok(&mut with_boot(&["finalize", "--sysroot", &sys]));
    // Not booted any more: the default, the finalized revert, is clean.
    let (code, r) = f.json(&[]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["deployment"], format!("{}.1", f.src.v1));
    let new_etc = deployment_dir(&f.sysroot(), &f.src.v1, 1).join("etc");
    assert!(!new_etc.join("late.conf").exists());
    assert!(new_etc.join("removed-by-admin.conf").exists());
    // The booted one still has its drift (it is the rollback).
    let out = with_boot(&["drift", "--sysroot", &sys, "--etc-only"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

const RICH_CONFIG: &str = r#"{
  "ignition": {"version": "3.4.0"},
  "passwd": {
    "users": [{"name": "alice", "groups": ["ops"],
               "sshAuthorizedKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBKEYALICE alice"]}],
    "groups": [{"name": "ops"}]
  },
  "storage": {
    "files": [{"path": "/etc/app/app.conf", "mode": 384, "contents": {"source": "data:,x%3D1%0A"}},
              {"path": "/var/lib/app/seed", "contents": {"source": "data:,seed%0A"}}],
    "links": [{"path": "/etc/app/current", "target": "app.conf"},
              {"path": "/etc/app/hard", "target": "/etc/app/app.conf", "hard": true}]
  },
  "systemd": {"units": [{"name": "app.service", "enabled": true,
    "contents": "[Service]\nExecStart=/usr/bin/tool\n[Install]\nWantedBy=multi-user.target\n",
    "dropins": [{"name": "10-env.conf", "contents": "[Service]\nEnvironment=A=1\n"}]}]}
}"#;

/// Whatever a config manages (users, keys, units, enablement, links,
/// /var entries), a fresh apply is clean, and so is the apply that
/// removes it all again.
#[test]
fn applied_configs_are_clean() {
    if needs_root("drift of a bare sysroot") {
        return;
    }
    require_ostree();
    let f = Fixture::from_source(source_with_users());
    let rich = f.dir.path().join("rich.ign");
    std::fs::write(&rich, RICH_CONFIG).unwrap();
    config_apply(&f.sysroot(), &[&rich]);
    let (code, r) = f.json(&["--etc-only"]);
    assert_eq!(code, 0, "{r:#}");
    let etc = deployment_dir(&f.sysroot(), &f.src.v1, 1).join("etc");
    assert!(etc.join("ssh/authorized_keys.d/alice").exists());
    // A local edit of what the config manages is drift.
    std::fs::write(
        etc.join("ssh/authorized_keys.d/alice"),
        "ssh-ed25519 AAAA other\n",
    )
    .unwrap();
    std::fs::remove_file(etc.join("systemd/system/app.service.d/10-env.conf")).unwrap();
    let (code, r) = f.json(&["--etc-only"]);
    assert_eq!(code, 1);
    assert_eq!(
        changes(&r, "etc"),
        want(&[
            ("/etc/ssh/authorized_keys.d/alice", &["modified"]),
            (
                "/etc/systemd/system/app.service.d/10-env.conf",
                &["deleted"]
            ),
        ]),
        "{r:#}"
    );
    // The empty config: everything reverts; still clean.
    let empty = f.dir.path().join("empty.ign");
    std::fs::write(&empty, r#"{"ignition": {"version": "3.4.0"}}"#).unwrap();
    config_apply(&f.sysroot(), &[&empty]);
    let (code, r) = f.json(&["--etc-only"]);
    assert_eq!(code, 0, "{r:#}");
}

/// A deployment `ostree admin deploy` made is clean too, and its drift is
/// found the same way.
#[test]
fn drift_of_an_ostree_deployment() {
    if needs_root("drift of a bare sysroot") {
        return;
    }
    require_ostree();
    let src = source();
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("s");
    prepare(Tool::Ostree, &sys, &src);
    deploy(Tool::Ostree, &sys, &["testos/stable"]);
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
    let root = deployment_dir(&sys, &src.v1, 0);
    edit_etc(&root.join("etc"));
    put(&root.join("usr/bin/extra"), "x\n");
    let (code, r) = drift(&[]);
    assert_eq!(code, 1);
    assert_eq!(changes(&r, "etc"), want(ETC_DRIFT));
    assert_eq!(changes(&r, "usr"), want(&[("/usr/bin/extra", &["added"])]));
    unseal_all(dir.path());
}

/// `arbor ARGS` as the unprivileged user `nobody`.
fn as_nobody(args: &[&str]) -> String {
    run_ok(
        std::process::Command::new("runuser")
            .args(["-u", "nobody", "--", env!("CARGO_BIN_EXE_arbor")])
            .args(args),
    )
}

fn open_to_all(p: &Path) {
    std::fs::set_permissions(
        p,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o777),
    )
    .unwrap();
}

#[test]
fn managed_owners_follow_how_the_sysroot_was_composed() {
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
fn a_config_written_through_a_default_symlink_is_clean() {
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
fn drift_status_survives_a_closed_stdout() {
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
fn to_config_leaves_out_names_that_are_not_utf8() {
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
