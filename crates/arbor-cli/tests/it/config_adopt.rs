//! `drift --to-config` (adopt) and `drift --revert`, and drift of
//! deployments made by `config apply` and by `ostree admin deploy`.

use std::os::unix::fs::symlink;
use std::path::Path;

use serde_json::Value;

use crate::config_drift::*;
use crate::sysroot::{deploy, deployment_dir, prepare, put, source, unseal_all, Tool};
use crate::util::{arbor, needs_root, ostree, require_ostree, run_ok, s};

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

pub(crate) fn config_apply(sysroot: &Path, files: &[&Path]) -> String {
    let mut c = arbor();
    c.args(["config", "apply", "--sysroot", s(sysroot)]);
    for f in files {
        c.arg(f);
    }
    run_ok(&mut c)
}

pub(crate) const BASE_CONFIG: &str = r#"{
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

pub(crate) const RICH_CONFIG: &str = r#"{
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
