//! Behaviour of the repository-writing `arbor` commands (init, commit),
//! checked through their output and the repository they leave, with the
//! real `ostree` reading the same repository wherever the two are meant to
//! agree byte for byte; shared helpers for `cli_query`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::util::{arbor, make_vector_tree, ostree, require_ostree, run_fail, run_ok, s};

pub(crate) const BR: &str = "os/main";

/// `assert!(text.contains(needle))`, showing the text on failure.
macro_rules! has {
    ($text:expr, $needle:expr) => {{
        let (t, n) = (&$text, $needle);
        assert!(t.contains(n), "{n:?} not in:\n{t}");
    }};
}
pub(crate) use has;

/// A repository path with shorthands for running commands on it.
pub(crate) struct Repo(pub(crate) PathBuf);

impl Repo {
    /// `arbor CMD --repo PATH ARGS..`
    pub(crate) fn cmd(&self, cmd: &str, args: &[&str]) -> Command {
        let mut c = arbor();
        c.arg(cmd).arg("--repo").arg(&self.0).args(args);
        c
    }

    pub(crate) fn ok(&self, cmd: &str, args: &[&str]) -> String {
        run_ok(&mut self.cmd(cmd, args))
    }

    /// Runs a command that must fail; returns its stderr.
    pub(crate) fn fail(&self, cmd: &str, args: &[&str]) -> String {
        String::from_utf8_lossy(&run_fail(&mut self.cmd(cmd, args)).stderr).into_owned()
    }

    /// `arbor CMD --repo PATH --json ARGS..`, parsed.
    pub(crate) fn json(&self, cmd: &str, args: &[&str]) -> Value {
        let mut c = self.cmd(cmd, &["--json"]);
        parse(&run_ok(c.args(args)))
    }

    /// `ostree CMD --repo=PATH ARGS..`
    pub(crate) fn ostree(&self, cmd: &str, args: &[&str]) -> String {
        let repo = format!("--repo={}", self.0.display());
        run_ok(ostree().arg(cmd).arg(repo).args(args))
    }

    pub(crate) fn init(path: PathBuf, mode: &str) -> Repo {
        let r = Repo(path);
        r.ok("init", &["--mode", mode]);
        r
    }

    /// Commits `tree` to `branch` as uid/gid 0 at `ts`; returns the checksum.
    pub(crate) fn commit(&self, branch: &str, ts: u64, tree: &Path, extra: &[&str]) -> String {
        let ts = format!("--timestamp=@{ts}");
        let owner = ["--owner-uid=0", "--owner-gid=0"];
        let mut c = self.cmd("commit", &["-b", branch, owner[0], owner[1], &ts]);
        let out = run_ok(c.args(extra).arg(tree));
        assert!(out.len() == 65 && out.ends_with('\n'), "{out:?}");
        out.trim_end().to_string()
    }

    /// Every file under `objects/` as `XX/REST.EXT`.
    pub(crate) fn objects(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for d in fs::read_dir(self.0.join("objects")).unwrap() {
            let d = d.unwrap();
            for f in fs::read_dir(d.path()).unwrap() {
                let (d, f) = (d.file_name(), f.unwrap().file_name());
                out.insert(format!("{}/{}", d.to_string_lossy(), f.to_string_lossy()));
            }
        }
        out
    }

    pub(crate) fn fsck_clean(&self) {
        assert_eq!(self.json("fsck", &[])["errors"], json!([]));
        self.ostree("fsck", &[]);
    }

    /// The loose object file of checksum `c`.
    pub(crate) fn object(&self, c: &str, ext: &str) -> PathBuf {
        self.0.join("objects").join(loose(c, ext))
    }

    pub(crate) fn checksum_of(&self, rev: &str, path: &str) -> String {
        let v = self.json("ls", &[rev, path]);
        v[0]["checksum"].as_str().unwrap().to_string()
    }
}

pub(crate) fn parse(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("invalid JSON ({e}): {s}"))
}

pub(crate) fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

pub(crate) fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub(crate) fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) fn count_ext(objs: &BTreeSet<String>, ext: &str) -> usize {
    objs.iter().filter(|o| o.ends_with(ext)).count()
}

pub(crate) fn loose(c: &str, ext: &str) -> String {
    format!("{}/{}.{ext}", &c[..2], &c[2..])
}

pub(crate) fn cp_a(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// Vector tree v1 and a v2 with modified, deleted and added entries,
/// committed as two commits on [`BR`].
pub(crate) struct Fixture {
    pub(crate) _td: TempDir,
    pub(crate) dir: PathBuf,
    pub(crate) repo: Repo,
    pub(crate) v1: PathBuf,
    pub(crate) v2: PathBuf,
    pub(crate) c1: String,
    pub(crate) c2: String,
}

pub(crate) fn fixture(mode: &str) -> Fixture {
    require_ostree();
    let td = TempDir::new().unwrap();
    let dir = td.path().to_path_buf();
    let (v1, v2) = (dir.join("v1"), dir.join("v2"));
    make_vector_tree(&v1);
    cp_a(&v1, &v2);
    write(&v2.join("README.txt"), "Hello, version two!\n");
    write(&v2.join("usr/etc/example.conf"), "key=value2\n");
    fs::remove_file(v2.join("data.bin")).unwrap();
    fs::remove_dir_all(v2.join("usr/share")).unwrap();
    chmod(&v2.join("bin"), 0o750);
    write(&v2.join("aa-new.txt"), "added\n");
    write(&v2.join("newdir/sub/deep.txt"), "deep\n");
    let repo = Repo::init(dir.join("repo"), mode);
    let m = "--add-metadata-string";
    let c1 = repo.commit(
        BR,
        1000,
        &v1,
        &["-s", "First", "--body", "Body one", m, "version=1"],
    );
    let s2 = ["-s", "Second", "--body", "Line A\nLine B", m, "version=2"];
    let c2 = repo.commit(BR, 2000, &v2, &s2);
    Fixture {
        _td: td,
        dir,
        repo,
        v1,
        v2,
        c1,
        c2,
    }
}

#[test]
fn init_writes_ostree_config_for_each_mode() {
    let td = TempDir::new().unwrap();
    let cases = [
        ("archive", "archive-z2"),
        ("archive-z2", "archive-z2"),
        ("bare", "bare"),
        ("bare-user", "bare-user"),
        ("bare-user-only", "bare-user-only"),
    ];
    for (mode, written) in cases {
        let repo = Repo::init(td.path().join(mode), mode);
        let config = read(&repo.0.join("config"));
        assert_eq!(config, format!("[core]\nrepo_version=1\nmode={written}\n"));
        for d in "objects tmp refs/heads refs/remotes state extensions".split(' ') {
            assert!(repo.0.join(d).is_dir(), "{mode}: {d} missing");
        }
        repo.ostree("refs", &[]); // ostree opens it
    }
    // Without --mode: bare, like `ostree init`.
    let repo = Repo(td.path().join("default"));
    repo.ok("init", &[]);
    let config = read(&repo.0.join("config"));
    assert_eq!(config, "[core]\nrepo_version=1\nmode=bare\n");
}

#[test]
fn init_refuses_existing_repo_and_bad_mode() {
    let td = TempDir::new().unwrap();
    let repo = Repo::init(td.path().join("r"), "archive");
    has!(repo.fail("init", &["--mode", "bare"]), "already");
    let config = read(&repo.0.join("config"));
    has!(config, "mode=archive-z2");
    let bad = Repo(td.path().join("bad"));
    has!(bad.fail("init", &["--mode", "zip"]), "zip");
    assert!(!bad.0.exists(), "a bad mode still created the directory");
}

#[test]
fn commit_parent_show_log_and_rev_parse() {
    let f = fixture("archive");
    let r = &f.repo;
    let show2 = r.json("show", &[BR]);
    assert_eq!(show2["checksum"], f.c2.as_str());
    assert_eq!(show2["parent"], f.c1.as_str());
    assert_eq!(show2["subject"], "Second");
    assert_eq!(show2["body"], "Line A\nLine B");
    assert_eq!(show2["timestamp"], 2000);
    assert_eq!(show2["version"], "2");
    for k in ["content_checksum", "root_tree", "root_meta"] {
        assert_eq!(show2[k].as_str().map(str::len), Some(64), "{k}");
    }
    let show1 = r.json("show", &[&f.c1]);
    assert_eq!(show1["parent"], Value::Null);
    assert_eq!(show1["version"], "1");
    // Text layouts are ostree's, byte for byte.
    let text = r.ok("show", &[BR]);
    let head = format!("commit {}\nParent:  {}\n", f.c2, f.c1);
    assert!(text.starts_with(&head), "{text}");
    let tail =
        "\nDate:  1970-01-01 00:33:20 +0000\nVersion: 2\n\n    Second\n\n    Line A\n    Line B\n";
    assert!(text.contains(tail), "{text}");
    assert_eq!(text, r.ostree("show", &[BR]));
    let log = r.ok("log", &[BR]);
    let commits: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("commit "))
        .collect();
    assert_eq!(commits, [f.c2.as_str(), f.c1.as_str()]);
    assert_eq!(log, r.ostree("log", &[BR]));
    let logj = r.json("log", &[BR]);
    assert_eq!(logj.as_array().expect("log --json is an array").len(), 2);
    let pairs: Vec<_> = (0..2)
        .map(|i| (&logj[i]["checksum"], &logj[i]["parent"]))
        .collect();
    let (c1, c2) = (json!(f.c1), json!(f.c2));
    assert_eq!(pairs, [(&c2, &c1), (&c1, &Value::Null)]);
    let prev = format!("{BR}^");
    for (rev, want) in [(BR, &f.c2), (prev.as_str(), &f.c1), (f.c1.as_str(), &f.c1)] {
        assert_eq!(r.ok("rev-parse", &[rev]), format!("{want}\n"), "{rev}");
    }
    let want = json!({"rev": prev, "checksum": f.c1});
    assert_eq!(r.json("rev-parse", &[&prev]), want);
    has!(r.fail("rev-parse", &["no/such/ref"]), "not found");
    has!(r.fail("rev-parse", &[&format!("{BR}^^")]), "no parent");
}

#[test]
fn commit_timestamp_forms_and_source_date_epoch_agree() {
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    let mut seen = BTreeSet::new();
    let forms = "@1577836800 2020-01-01T00:00:00Z 2020-01-01T01:00:00+01:00 SOURCE_DATE_EPOCH";
    for (i, ts) in forms.split(' ').enumerate() {
        let repo = Repo::init(td.path().join(format!("r{i}")), "archive");
        let mut cmd = repo.cmd("commit", &["-b", BR, "-s", "s", s(&tree)]);
        if ts == "SOURCE_DATE_EPOCH" {
            cmd.env("SOURCE_DATE_EPOCH", "1577836800");
        } else {
            cmd.arg(format!("--timestamp={ts}"));
            cmd.env_remove("SOURCE_DATE_EPOCH");
        }
        seen.insert(run_ok(&mut cmd));
        assert_eq!(repo.json("show", &[BR])["timestamp"], 1577836800, "{ts}");
    }
    assert_eq!(seen.len(), 1, "different commits: {seen:?}");
    // Neither: the current time.
    let repo = Repo::init(td.path().join("now"), "archive");
    let mut cmd = repo.cmd("commit", &["-b", BR, s(&tree)]);
    run_ok(cmd.env_remove("SOURCE_DATE_EPOCH"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let now = now.unwrap().as_secs();
    let ts = repo.json("show", &[BR])["timestamp"].as_u64().unwrap();
    assert!(ts <= now && now - ts < 120, "timestamp {ts}, now {now}");
    let bad = ["-b", BR, "--timestamp=yesterday", s(&tree)];
    has!(repo.fail("commit", &bad), "yesterday");
}

#[test]
fn commit_keeps_metadata_order() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let tree = td.path().join("t");
    write(&tree.join("f"), "x");
    let repo = Repo::init(td.path().join("r"), "archive");
    let m = "--add-metadata-string";
    let meta_args = [m, "version=3.1", m, "zeta=last?", m, "alpha=a=b"];
    repo.commit(BR, 5, &tree, &meta_args);
    let show = repo.json("show", &[BR]);
    let meta = show["metadata"].as_array().unwrap();
    let keys: Vec<&str> = meta.iter().map(|kv| kv[0].as_str().unwrap()).collect();
    assert_eq!(keys, ["version", "zeta", "alpha", "ostree.ref-binding"]);
    let value = |i: usize| meta[i][1].as_str().unwrap().to_string();
    assert!(value(0).contains("3.1"), "{meta:?}");
    assert!(value(2).contains("a=b"), "split at the first '=': {meta:?}");
    assert!(value(3).contains(BR), "{meta:?}");
    assert_eq!(show["version"], "3.1");
    let v = repo.ostree("show", &["--print-metadata-key=alpha", BR]);
    assert_eq!(v.trim(), "'a=b'");
    has!(
        repo.fail("commit", &["-b", BR, m, "novalue", s(&tree)]),
        "KEY=VALUE"
    );
}

#[test]
fn commit_hardlinked_inputs_share_one_object() {
    let td = TempDir::new().unwrap();
    let tree = td.path().join("t");
    write(&tree.join("a"), "linked content\n");
    write(&tree.join("other"), "other content\n");
    fs::create_dir(tree.join("sub")).unwrap();
    fs::hard_link(tree.join("a"), tree.join("sub/b")).unwrap();
    fs::hard_link(tree.join("a"), tree.join("sub/c")).unwrap();
    let repo = Repo::init(td.path().join("r"), "archive");
    // The inode is read once: the other two names reuse its checksum
    // (content addressing alone would give one object too, so count reads).
    let mut cmd = repo.cmd("commit", &["-b", BR, "--timestamp=@1", s(&tree)]);
    let out = cmd.env("ARBOR_LOG", "debug").output().unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    let reused = log.matches("hardlink of a file already committed").count();
    assert_eq!(reused, 2, "expected 2 reuses:\n{log}");
    let (a, b) = (repo.checksum_of(BR, "/a"), repo.checksum_of(BR, "/sub/b"));
    assert_eq!(a, b);
    assert_ne!(a, repo.checksum_of(BR, "/other"));
    let text = repo.ok("ls", &["-R", "-C", BR]);
    assert!(text.contains(&format!(" {a} /a\n")) && text.contains(&format!(" {a} /sub/b\n")));
    assert_eq!(a, repo.checksum_of(BR, "/sub/c"));
    assert_eq!(count_ext(&repo.objects(), ".filez"), 2);
}

#[test]
fn commit_does_not_rewrite_present_objects() {
    let td = TempDir::new().unwrap();
    let tree = td.path().join("t");
    make_vector_tree(&tree);
    let repo = Repo::init(td.path().join("r"), "archive");
    repo.commit("one", 1, &tree, &[]);
    let stamp = || -> BTreeMap<String, (u64, i64, i64)> {
        let st = |o: &String| fs::metadata(repo.0.join("objects").join(o)).unwrap();
        let key = |m: fs::Metadata| (m.ino(), m.mtime(), m.mtime_nsec());
        repo.objects()
            .into_iter()
            .map(|o| (o.clone(), key(st(&o))))
            .collect()
    };
    let before = stamp();
    std::thread::sleep(std::time::Duration::from_millis(20));
    repo.commit("two", 1, &tree, &[]);
    let after = stamp();
    for (o, st) in &before {
        assert_eq!(after.get(o), Some(st), "{o} was rewritten");
    }
    let new: Vec<&String> = after.keys().filter(|o| !before.contains_key(*o)).collect();
    assert!(new.len() == 1 && new[0].ends_with(".commit"), "{new:?}");
}

#[test]
fn commit_canonical_permissions_strip_setuid() {
    let td = TempDir::new().unwrap();
    let tree = td.path().join("t");
    write(&tree.join("suid"), "#!/bin/sh\n");
    chmod(&tree.join("suid"), 0o4755);
    let cases = [
        ("bare-user-only", true, "-00755 0 0"),
        ("archive", true, "-00755 0 0"),
        ("archive", false, "-04755 0 0"),
    ];
    for (i, (mode, canonical, want)) in cases.into_iter().enumerate() {
        let repo = Repo::init(td.path().join(format!("r{i}")), mode);
        let mut cmd = repo.cmd("commit", &["-b", BR, "--timestamp=@1", s(&tree)]);
        if canonical {
            cmd.arg("--canonical-permissions");
        }
        run_ok(&mut cmd);
        let line = repo.ok("ls", &[BR, "/suid"]);
        assert!(line.starts_with(want), "{mode} {canonical}: {line}");
        if mode == "bare-user-only" {
            let obj = repo.object(&repo.checksum_of(BR, "/suid"), "file");
            assert_eq!(fs::metadata(obj).unwrap().mode() & 0o7777, 0o755);
        }
    }
}

#[test]
fn commit_of_missing_directory_names_it() {
    let td = TempDir::new().unwrap();
    let repo = Repo::init(td.path().join("r"), "archive");
    let missing = td.path().join("no-such-tree");
    let err = repo.fail("commit", &["-b", BR, s(&missing)]);
    assert!(err.contains(s(&missing)), "{err}");
    assert_eq!(repo.ok("refs", &[]), "", "a failed commit created a ref");
}
