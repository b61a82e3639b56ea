//! `config apply`: a declared configuration as a new deployment of the
//! current base, whose removal reverts, with one state checksum, surviving
//! deploy, upgrade, staging and rollback; `ostree admin` reads every
//! sysroot it produces.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::{json, Value};

use crate::sysroot::{needs_root, os_tree, ostree_commit, put, unseal_all};
use crate::util::{arbor, ostree, require_ostree, run_fail, run_ok, s};

/// The OS defaults of the test base: what the revert tests go back to.
pub(crate) const OS_ETC: &[(&str, &str)] = &[
    ("unchanged.conf", "a=1\n"),
    ("chrony.conf", "pool os.pool.example iburst\n"),
    ("sudoers", "root ALL=(ALL) ALL\n#includedir /etc/sudoers.d\n"),
    (
        "passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    ),
    ("group", "root:x:0:\nwheel:x:10:\nnogroup:x:65534:\n"),
    ("shadow", "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"),
    ("gshadow", "root:*::\nwheel:*::\nnogroup:*::\n"),
    ("ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\n"),
    (
        "systemd/system/multi-user.target.wants/os-default.service",
        "LINK",
    ),
];

pub(crate) const FOO_UNIT: &str = "[Unit]\nDescription=foo\n[Service]\nExecStart=/usr/bin/tool\n\
                        [Install]\nWantedBy=multi-user.target\n";

/// A base tree: [`os_tree`] plus [`OS_ETC`], a unit the OS ships but does
/// not enable (`foo.service`) and one it enables (`os-default.service`).
pub(crate) fn base_tree(dir: &Path, marker: &str) {
    let etc: Vec<(&str, &str)> = OS_ETC
        .iter()
        .copied()
        .filter(|(_, c)| *c != "LINK")
        .collect();
    os_tree(dir, &etc);
    put(&dir.join("usr/lib/systemd/system/foo.service"), FOO_UNIT);
    put(
        &dir.join("usr/lib/systemd/system/os-default.service"),
        FOO_UNIT,
    );
    let wants = dir.join("usr/etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/system/os-default.service",
        wants.join("os-default.service"),
    )
    .unwrap();
    put(&dir.join("usr/share/marker"), marker);
}

/// A source repository (`testos/stable`, v1) and a sysroot with v1
/// deployed from it (`--karg=root=LABEL=rootfs`, origin `testos/stable`).
pub(crate) struct Cfg {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub sys: PathBuf,
    pub v1: String,
    n: std::cell::Cell<u32>,
}

impl Drop for Cfg {
    fn drop(&mut self) {
        unseal_all(self.dir.path());
    }
}

impl Cfg {
    pub(crate) fn new() -> Cfg {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        run_ok(ostree().args(["init", "--mode=archive", &format!("--repo={}", s(&repo))]));
        let t1 = dir.path().join("tree1");
        base_tree(&t1, "v1\n");
        let v1 = ostree_commit(&repo, &t1, "1.0", "1577836800");
        let sys = dir.path().join("sysroot");
        let c = Cfg {
            dir,
            repo,
            sys: sys.clone(),
            v1,
            n: Default::default(),
        };
        c.new_sysroot(&sys);
        c
    }

    /// Another sysroot with v1 deployed, as [`Cfg::new`] made the first.
    pub(crate) fn new_sysroot(&self, sys: &Path) {
        run_ok(arbor().args(["admin", "init-fs"]).arg(sys));
        run_ok(arbor().args(["admin", "os-init", "--sysroot", s(sys), "testos"]));
        self.pull(sys);
        run_ok(arbor().args([
            "deploy",
            "--sysroot",
            s(sys),
            "--os",
            "testos",
            "--karg=root=LABEL=rootfs",
            "testos/stable",
        ]));
    }

    fn pull(&self, sys: &Path) {
        let repo = sys.join("ostree/repo");
        run_ok(arbor().args([
            "pull-local",
            "--repo",
            s(&repo),
            s(&self.repo),
            "testos/stable",
        ]));
    }

    /// Commits v2 (other defaults for chrony.conf) and pulls it into the
    /// sysroot's repository; returns its checksum.
    pub(crate) fn release_v2(&self) -> String {
        let t2 = self.dir.path().join("tree2");
        base_tree(&t2, "v2\n");
        put(
            &t2.join("usr/etc/chrony.conf"),
            "pool v2.pool.example iburst\n",
        );
        // A system user new in v2: a config's users are composed on it.
        let passwd = OS_ETC.iter().find(|(n, _)| *n == "passwd").unwrap().1;
        put(
            &t2.join("usr/etc/passwd"),
            &format!("{passwd}v2sys:x:990:990::/:/usr/sbin/nologin\n"),
        );
        let v2 = ostree_commit(&self.repo, &t2, "2.0", "1577923200");
        self.pull(&self.sys);
        v2
    }

    /// Writes `docs` (name, bytes) into a fresh input directory; returns
    /// their paths.
    pub(crate) fn inputs(&self, docs: &[(&str, Vec<u8>)]) -> Vec<PathBuf> {
        let n = self.n.get();
        self.n.set(n + 1);
        let d = self.dir.path().join(format!("inputs-{n}"));
        std::fs::create_dir_all(&d).unwrap();
        docs.iter()
            .map(|(name, bytes)| {
                let p = d.join(name);
                std::fs::write(&p, bytes).unwrap();
                p
            })
            .collect()
    }

    /// `config apply --sysroot SYS ARGS.. FILES`, which must succeed.
    pub(crate) fn apply_on(&self, sys: &Path, args: &[&str], docs: &[(&str, Vec<u8>)]) -> String {
        run_ok(&mut self.apply_cmd(sys, args, docs))
    }

    pub(crate) fn apply(&self, docs: &[(&str, Vec<u8>)]) -> String {
        self.apply_on(&self.sys, &[], docs)
    }

    pub(crate) fn apply_cmd(&self, sys: &Path, args: &[&str], docs: &[(&str, Vec<u8>)]) -> Command {
        let files = self.inputs(docs);
        let mut c = arbor();
        c.args(["config", "apply", "--sysroot", s(sys)])
            .args(args)
            .args(&files);
        c
    }
}

/// An Ignition 3.4.0 document with `body`'s sections.
pub(crate) fn ign(body: Value) -> Vec<u8> {
    let mut v = json!({ "ignition": { "version": "3.4.0" } });
    for (k, x) in body.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::to_vec_pretty(&v).unwrap()
}

/// A `storage.files` entry with `content`, replacing any OS default.
pub(crate) fn file(path: &str, content: &str) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(content);
    json!({
        "path": path,
        "overwrite": true,
        "mode": 0o644,
        "contents": { "source": format!("data:;base64,{b64}") }
    })
}

/// A MachineConfig with kernel arguments and an empty Ignition config.
pub(crate) fn mc_kargs(kargs: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "machineconfiguration.openshift.io/v1",
        "kind": "MachineConfig",
        "metadata": { "name": "50-kargs" },
        "spec": {
            "config": { "ignition": { "version": "3.4.0" } },
            "kernelArguments": kargs
        }
    }))
    .unwrap()
}

pub(crate) fn status(sys: &Path) -> Value {
    serde_json::from_str(&run_ok(arbor().args([
        "status",
        "--json",
        "--sysroot",
        s(sys),
    ])))
    .unwrap()
}

pub(crate) fn deployments(sys: &Path) -> Vec<Value> {
    status(sys)["deployments"].as_array().unwrap().clone()
}

/// The root directory of deployment `i` (as `status` lists them).
pub(crate) fn root_of(sys: &Path, i: usize) -> PathBuf {
    let d = &deployments(sys)[i];
    sys.join(format!(
        "ostree/deploy/testos/deploy/{}.{}",
        d["checksum"].as_str().unwrap(),
        d["deployserial"]
    ))
}

pub(crate) fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Every file below `sys` containing `needle` (`grep -rlF`, binary files
/// as text, symlinks not followed).
pub(crate) fn grep_sysroot(sys: &Path, needle: &str) -> Vec<PathBuf> {
    let out = Command::new("grep")
        .args(["-rlF", "--binary-files=text", "--", needle])
        .arg(sys)
        .output()
        .unwrap();
    assert!(out.status.code().unwrap_or(2) <= 1, "grep failed: {out:?}");
    let mut v: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    v.sort();
    v
}

/// `ostree admin status` reads the sysroot and lists what arbor lists.
#[track_caller]
pub(crate) fn ostree_reads(sys: &Path) {
    let st = run_ok(ostree().args(["admin", "status", &format!("--sysroot={}", s(sys))]));
    let theirs: Vec<String> = st
        .lines()
        .filter_map(|l| {
            let mut w = l.trim_start_matches(['*', ' ']).split_whitespace();
            (w.next() == Some("testos")).then(|| w.next().unwrap_or_default().to_string())
        })
        .collect();
    let ours: Vec<String> = deployments(sys)
        .iter()
        .filter(|d| d["staged"] == false)
        .map(|d| format!("{}.{}", d["checksum"].as_str().unwrap(), d["deployserial"]))
        .collect();
    assert_eq!(theirs, ours, "ostree admin status says:\n{st}");
}

/// The stored documents of the stateroot.
pub(crate) fn stored(sys: &Path) -> Vec<String> {
    let d = sys.join("ostree/deploy/testos/arbor/rendered");
    let mut v: Vec<String> = match std::fs::read_dir(&d) {
        Ok(r) => r
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// The boot entries (file name, content), the `boot/loader` link and the
/// deployment directories (with origins) of `sys`: what a refused command
/// must leave as it was.
pub(crate) fn boot_snapshot(sys: &Path) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(sys.join("boot/loader/entries")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        v.push((format!("entries/{name}"), read(&e.path())));
    }
    let link = std::fs::read_link(sys.join("boot/loader")).unwrap();
    v.push(("loader".into(), link.to_string_lossy().into_owned()));
    for n in crate::util::dir_names(&sys.join("ostree/deploy/testos/deploy")) {
        v.push((format!("deploy/{n}"), String::new()));
    }
    v.sort();
    v
}

pub(crate) fn sudoers(line: &str) -> Vec<u8> {
    ign(json!({ "storage": { "files": [file("/etc/sudoers.d/90-admins", line)] } }))
}

#[test]
fn sudoers_line_changed_leaves_no_trace() {
    require_ostree();
    if needs_root("sudoers_line_changed_leaves_no_trace") {
        return;
    }
    let c = Cfg::new();
    let old = "%wheel ALL=(ALL) NOPASSWD: ALL";
    let new = "%admin ALL=(ALL) NOPASSWD: ALL";
    let out = c.apply(&[("sudo.ign", sudoers(&format!("{old}\n")))]);
    assert!(out.contains("Applied rendered-"), "{out}");
    ostree_reads(&c.sys);
    assert_eq!(
        read(&root_of(&c.sys, 0).join("etc/sudoers.d/90-admins")),
        format!("{old}\n")
    );
    c.apply(&[("sudo.ign", sudoers(&format!("{new}\n")))]);
    ostree_reads(&c.sys);
    let d = deployments(&c.sys);
    assert_eq!(d.len(), 2, "the new default and the previous one");
    let (now, before) = (root_of(&c.sys, 0), root_of(&c.sys, 1));
    assert_eq!(
        read(&now.join("etc/sudoers.d/90-admins")),
        format!("{new}\n")
    );
    // The old line is in the rollback deployment only (its stored
    // document holds it base64-encoded).
    let hits = grep_sysroot(&c.sys, old);
    assert!(!hits.is_empty());
    for h in &hits {
        assert!(h.starts_with(&before), "old line in {}", h.display());
    }
    assert_eq!(stored(&c.sys).len(), 2);
    // Rollback deployment removed, cleanup: no trace anywhere, and only
    // the default's document is stored.
    run_ok(arbor().args(["undeploy", "--sysroot", s(&c.sys), "1"]));
    run_ok(arbor().args(["cleanup", "--sysroot", s(&c.sys)]));
    ostree_reads(&c.sys);
    assert_eq!(grep_sysroot(&c.sys, old), Vec::<PathBuf>::new());
    let name = deployments(&c.sys)[0]["config"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(stored(&c.sys), [format!("{name}.json")]);
    // The document may hold password hashes: root only.
    use std::os::unix::fs::PermissionsExt;
    let store = c.sys.join("ostree/deploy/testos/arbor/rendered");
    let doc = store.join(format!("{name}.json"));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!((mode(&store), mode(&doc)), (0o700, 0o600));
    // Verified against its name when read: a corrupt document stops the
    // next apply before any deployment is made.
    let mut bytes = std::fs::read(&doc).unwrap();
    bytes.push(b' ');
    std::fs::write(&doc, bytes).unwrap();
    let before = deployments(&c.sys);
    let boot_before = boot_snapshot(&c.sys);
    let stored_before = stored(&c.sys);
    let err =
        run_fail(&mut c.apply_cmd(&c.sys, &[], &[("sudo.ign", sudoers("%x ALL=(ALL) ALL\n"))]));
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("corrupt"),
        "{err:?}"
    );
    // Nothing changed: the same deployments, boot entries, deployment
    // directories and stored documents (the new one was not stored).
    assert_eq!(deployments(&c.sys), before);
    assert_eq!(boot_snapshot(&c.sys), boot_before);
    assert_eq!(stored(&c.sys), stored_before);
    assert!(grep_sysroot(&c.sys, "%x ALL").is_empty());
}

#[test]
fn removal_reverts_files_units_users_and_kernel_arguments() {
    require_ostree();
    if needs_root("removal_reverts_files_units_users_and_kernel_arguments") {
        return;
    }
    let c = Cfg::new();
    let full = ign(json!({
        "storage": { "files": [
            file("/etc/chrony.conf", "server corp.ntp.example iburst\n"),
            file("/etc/extra.conf", "extra=1\n"),
        ] },
        "systemd": { "units": [
            { "name": "foo.service", "enabled": true },
            { "name": "bar.service", "enabled": true, "contents": FOO_UNIT },
        ] },
        "passwd": { "users": [
            { "name": "alice", "sshAuthorizedKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIALICE alice"] },
        ] },
    }));
    c.apply(&[("a.ign", full), ("b.json", mc_kargs(&["nosmt", "foo=bar"]))]);
    ostree_reads(&c.sys);
    let root = root_of(&c.sys, 0);
    let etc = root.join("etc");
    let wants = etc.join("systemd/system/multi-user.target.wants");
    assert_eq!(
        read(&etc.join("chrony.conf")),
        "server corp.ntp.example iburst\n"
    );
    assert_eq!(read(&etc.join("extra.conf")), "extra=1\n");
    assert!(wants.join("foo.service").is_symlink());
    assert!(wants.join("bar.service").is_symlink());
    assert!(etc.join("systemd/system/bar.service").is_file());
    assert!(read(&etc.join("passwd")).contains("\nalice:"));
    assert!(read(&etc.join("shadow")).contains("\nalice:"));
    assert!(read(&etc.join("ssh/authorized_keys.d/alice")).contains("ALICE"));
    let d = &deployments(&c.sys)[0];
    assert_eq!(
        d["kernel-arguments"],
        json!(["root=LABEL=rootfs", "nosmt", "foo=bar"])
    );
    let entry = grep_sysroot(&c.sys.join("boot/loader/entries"), "foo=bar");
    assert_eq!(entry.len(), 1, "the boot entry has the config's arguments");
    // Everything removed from the config: back to the OS defaults.
    c.apply(&[("a.ign", ign(json!({})))]);
    ostree_reads(&c.sys);
    let etc = root_of(&c.sys, 0).join("etc");
    let wants = etc.join("systemd/system/multi-user.target.wants");
    assert_eq!(
        read(&etc.join("chrony.conf")),
        "pool os.pool.example iburst\n"
    );
    assert!(!etc.join("extra.conf").exists());
    assert!(!wants.join("foo.service").exists() && !wants.join("foo.service").is_symlink());
    assert!(!wants.join("bar.service").is_symlink());
    assert!(!etc.join("systemd/system/bar.service").exists());
    assert!(
        wants.join("os-default.service").is_symlink(),
        "OS enablement kept"
    );
    for f in ["passwd", "shadow", "group", "gshadow"] {
        let want = OS_ETC.iter().find(|(n, _)| *n == f).unwrap().1;
        assert_eq!(read(&etc.join(f)), want, "{f} is the OS default again");
    }
    assert!(!etc.join("ssh/authorized_keys.d/alice").exists());
    let d = &deployments(&c.sys)[0];
    assert_eq!(d["kernel-arguments"], json!(["root=LABEL=rootfs"]));
    assert!(
        grep_sysroot(&c.sys.join("boot/loader/entries"), "foo=bar").len() == 1,
        "only the rollback's entry"
    );
    run_ok(arbor().args(["undeploy", "--sysroot", s(&c.sys), "1"]));
    assert_eq!(
        grep_sysroot(&c.sys.join("boot/loader/entries"), "foo=bar"),
        Vec::<PathBuf>::new()
    );
}

pub(crate) fn keys(user: &str, key: &str) -> Vec<u8> {
    ign(json!({ "passwd": { "users": [ { "name": user, "sshAuthorizedKeys": [key] } ] } }))
}

#[test]
fn ssh_key_rotated_leaves_no_trace_and_rollback_restores_it() {
    require_ostree();
    if needs_root("ssh_key_rotated_leaves_no_trace_and_rollback_restores_it") {
        return;
    }
    let c = Cfg::new();
    let k1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDAY1KEY day1";
    let k2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDAY2KEY day2";
    c.apply(&[("keys.ign", keys("core", k1))]);
    c.apply(&[("keys.ign", keys("core", k2))]);
    ostree_reads(&c.sys);
    let keyfile = |i| root_of(&c.sys, i).join("etc/ssh/authorized_keys.d/core");
    assert_eq!(read(&keyfile(0)).trim_end(), k2);
    assert_eq!(read(&keyfile(1)).trim_end(), k1);
    let day1 = deployments(&c.sys)[1]["config"]
        .as_str()
        .unwrap()
        .to_string();
    let doc = c
        .sys
        .join(format!("ostree/deploy/testos/arbor/rendered/{day1}.json"));
    let before = root_of(&c.sys, 1);
    for h in grep_sysroot(&c.sys, "DAY1KEY") {
        assert!(
            h.starts_with(&before) || h == doc,
            "old key in {}",
            h.display()
        );
    }
    // Rollback: the day-1 key set is back, and forward again.
    run_ok(arbor().args(["rollback", "--sysroot", s(&c.sys)]));
    ostree_reads(&c.sys);
    assert_eq!(read(&keyfile(0)).trim_end(), k1);
    run_ok(arbor().args(["rollback", "--sysroot", s(&c.sys)]));
    assert_eq!(read(&keyfile(0)).trim_end(), k2);
    run_ok(arbor().args(["undeploy", "--sysroot", s(&c.sys), "1"]));
    run_ok(arbor().args(["cleanup", "--sysroot", s(&c.sys)]));
    ostree_reads(&c.sys);
    assert_eq!(grep_sysroot(&c.sys, "DAY1KEY"), Vec::<PathBuf>::new());
}

pub(crate) fn config_a() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "10-a.ign",
            ign(json!({
                "storage": { "files": [
                    file("/etc/a-only.conf", "a\n"),
                    file("/etc/chrony.conf", "server a.example\n"),
                ] },
                "passwd": { "users": [ { "name": "olduser" } ] },
                "systemd": { "units": [ { "name": "foo.service", "enabled": true } ] },
            })),
        ),
        ("20-k.json", mc_kargs(&["a=1"])),
    ]
}

pub(crate) fn config_b() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "10-b.ign",
            ign(json!({
                "storage": { "files": [ file("/etc/chrony.conf", "server b.example\n") ] },
                "passwd": { "users": [ { "name": "newuser", "sshAuthorizedKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBKEY b"] } ] },
            })),
        ),
        ("20-k.json", mc_kargs(&["b=2"])),
    ]
}

#[test]
fn same_inputs_through_different_histories_give_the_same_state() {
    require_ostree();
    if needs_root("same_inputs_through_different_histories_give_the_same_state") {
        return;
    }
    let c = Cfg::new();
    let other = c.dir.path().join("other");
    c.new_sysroot(&other);
    // Before any config: the same state too (same base, no config).
    let st = |sys: &Path| deployments(sys)[0]["state"].as_str().unwrap().to_string();
    assert_eq!(st(&c.sys), st(&other));
    c.apply(&config_a());
    let after_a = st(&c.sys);
    c.apply(&config_b());
    c.apply_on(&other, &[], &config_b());
    assert_ne!(after_a, st(&c.sys));
    assert_eq!(st(&c.sys), st(&other));
    let (d1, d2) = (&deployments(&c.sys)[0], &deployments(&other)[0]);
    for k in ["base", "config", "extensions", "kernel-arguments", "state"] {
        assert_eq!(d1[k], d2[k], "{k}");
    }
    assert_eq!(d1["base"], c.v1.as_str());
    assert_eq!(d1["kernel-arguments"], json!(["root=LABEL=rootfs", "b=2"]));
    assert_eq!(d1["extensions"], json!([]));
    crate::util::assert_same_tree(
        &root_of(&c.sys, 0).join("etc"),
        &root_of(&other, 0).join("etc"),
        true,
    );
    let etc = root_of(&c.sys, 0).join("etc");
    assert!(!etc.join("a-only.conf").exists());
    assert_eq!(read(&etc.join("chrony.conf")), "server b.example\n");
    assert!(read(&etc.join("passwd")).contains("\nnewuser:"));
    assert!(!read(&etc.join("passwd")).contains("olduser"));
    assert!(read(&etc.join("ssh/authorized_keys.d/newuser")).contains("BKEY"));
    // The text status shows the same inputs and checksum.
    let text = run_ok(arbor().args(["status", "--sysroot", s(&c.sys)]));
    assert!(
        text.contains(&format!("    State: {}\n", st(&c.sys))),
        "{text}"
    );
    // No extensions: no `Extension:` line (and no other list of them).
    assert!(!text.contains("Extension"), "{text}");
    assert!(
        text.contains("    KernelArguments: root=LABEL=rootfs b=2\n"),
        "{text}"
    );
    ostree_reads(&c.sys);
    ostree_reads(&other);
    unseal_all(&other);
}

#[test]
fn same_inputs_again_is_a_noop() {
    if needs_root("same_inputs_again_is_a_noop") {
        return;
    }
    let c = Cfg::new();
    c.apply(&config_a());
    let before = deployments(&c.sys);
    let out = c.apply(&config_a());
    assert!(out.contains("No change"), "{out}");
    assert_eq!(deployments(&c.sys), before);
    // --dry-run changes nothing either, and says what would change.
    let out = c.apply_on(&c.sys, &["--dry-run"], &config_b());
    assert!(out.contains("Would deploy"), "{out}");
    assert!(out.contains("chrony.conf"), "{out}");
    assert_eq!(deployments(&c.sys), before);
    let json: Value =
        serde_json::from_str(&c.apply_on(&c.sys, &["--dry-run", "--json"], &config_b())).unwrap();
    assert_eq!(json["outcome"], "dry-run");
    assert_eq!(deployments(&c.sys), before);
}

#[test]
fn ostree_admin_undeploy_and_cleanup_keep_the_store() {
    require_ostree();
    if needs_root("ostree_admin_undeploy_and_cleanup_keep_the_store") {
        return;
    }
    let c = Cfg::new();
    c.apply(&config_a());
    c.apply(&config_b());
    let sysroot = format!("--sysroot={}", s(&c.sys));
    run_ok(ostree().args(["admin", "undeploy", &sysroot, "1"]));
    run_ok(ostree().args(["admin", "cleanup", &sysroot]));
    ostree_reads(&c.sys);
    // ostree leaves arbor's store alone; arbor's cleanup then collects the
    // document no deployment names any more.
    assert_eq!(stored(&c.sys).len(), 2);
    run_ok(arbor().args(["cleanup", "--sysroot", s(&c.sys)]));
    let name = deployments(&c.sys)[0]["config"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(stored(&c.sys), [format!("{name}.json")]);
    run_ok(ostree().args(["admin", "status", &sysroot]));
}

#[test]
fn bad_input_creates_no_deployment() {
    if needs_root("bad_input_creates_no_deployment") {
        return;
    }
    let c = Cfg::new();
    c.apply(&config_a());
    // A symlink in the running /etc leading out of it: the admin's, carried;
    // a config path through it must not write outside /etc.
    let root = root_of(&c.sys, 0);
    std::os::unix::fs::symlink("/tmp", root.join("etc/escape")).unwrap();
    let before = deployments(&c.sys);
    let dirs = || crate::util::dir_names(&c.sys.join("ostree/deploy/testos/deploy"));
    let dirs_before = dirs();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "unknown.ign",
            ign(json!({ "storage": { "filez": [] } })),
            "filez",
        ),
        (
            "usr.ign",
            ign(json!({ "storage": { "files": [file("/usr/bin/evil", "x")] } })),
            "/usr/bin/evil",
        ),
        (
            "escape.ign",
            ign(json!({ "storage": {
                "links": [ { "path": "/etc/out", "target": "/tmp" } ],
                "files": [file("/etc/out/x.conf", "x")],
            } })),
            "/etc/out/x.conf",
        ),
        ("broken.ign", b"{ not json".to_vec(), "broken.ign"),
    ];
    for (name, doc, needle) in cases {
        let out = run_fail(&mut c.apply_cmd(&c.sys, &[], &[(name, doc)]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{name}: {err}");
        assert_eq!(deployments(&c.sys), before, "{name}");
        assert_eq!(dirs(), dirs_before, "{name}");
    }
    run_ok(arbor().args(["cleanup", "--sysroot", s(&c.sys)]));
    assert_eq!(stored(&c.sys).len(), 1);
    assert!(!Path::new("/tmp/x.conf").exists());
    // Through the admin's symlink: /etc/escape becomes the directory the
    // config declares (never a write into /tmp).
    let marker = format!("arbor-escape-{}.conf", std::process::id());
    let doc = ign(json!({ "storage": { "files": [file(&format!("/etc/escape/{marker}"), "x")] } }));
    let _ = c
        .apply_cmd(&c.sys, &[], &[("escape2.ign", doc)])
        .output()
        .unwrap();
    assert!(
        !Path::new("/tmp").join(&marker).exists(),
        "wrote through the symlink"
    );
}

#[test]
fn an_unreadable_origin_never_fails_a_switched_apply() {
    require_ostree();
    if needs_root("an_unreadable_origin_never_fails_a_switched_apply") {
        return;
    }
    let c = Cfg::new();
    c.apply(&config_a());
    let junk = c.sys.join("ostree/deploy/testos/deploy/junk.origin");
    std::fs::write(&junk, b"\xff\xfe").unwrap();
    // The apply switched: it succeeds, and the collection, which cannot
    // tell what the junk origin names, keeps every document.
    let out = c.apply(&config_b());
    assert!(out.contains("Applied rendered-"), "{out}");
    let d = deployments(&c.sys);
    assert_eq!(d.len(), 2);
    let (b, a) = (
        d[0]["config"].as_str().unwrap(),
        d[1]["config"].as_str().unwrap(),
    );
    assert_ne!(a, b);
    assert_eq!(
        read(&root_of(&c.sys, 0).join("etc/chrony.conf")),
        "server b.example\n"
    );
    ostree_reads(&c.sys);
    // A third apply drops A's deployment (neither booted nor the merge
    // deployment): its document stays while the junk origin is there.
    c.apply(&[("e.ign", ign(json!({})))]);
    assert!(stored(&c.sys).contains(&format!("{a}.json")));
    // deploy and cleanup succeed too; without the junk, cleanup collects.
    run_ok(arbor().args([
        "deploy",
        "--sysroot",
        s(&c.sys),
        "--os",
        "testos",
        "testos/stable",
    ]));
    run_ok(arbor().args(["cleanup", "--sysroot", s(&c.sys)]));
    assert!(stored(&c.sys).contains(&format!("{a}.json")));
    std::fs::remove_file(&junk).unwrap();
    run_ok(arbor().args(["cleanup", "--sysroot", s(&c.sys)]));
    assert!(!stored(&c.sys).contains(&format!("{a}.json")));
}
