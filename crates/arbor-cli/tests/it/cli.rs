//! Behaviour of every `arbor` command, checked through its output and the
//! repository it leaves, with the real `ostree` reading the same repository
//! wherever the two are meant to agree byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::util::{
    arbor, assert_same_tree, dir_names, is_root, make_vector_tree, ostree, require_ostree,
    run_fail, run_ok, s,
};

const BR: &str = "os/main";

/// `assert!(text.contains(needle))`, showing the text on failure.
macro_rules! has {
    ($text:expr, $needle:expr) => {{
        let (t, n) = (&$text, $needle);
        assert!(t.contains(n), "{n:?} not in:\n{t}");
    }};
}

/// A repository path with shorthands for running commands on it.
struct Repo(PathBuf);

impl Repo {
    /// `arbor CMD --repo PATH ARGS..`
    fn cmd(&self, cmd: &str, args: &[&str]) -> Command {
        let mut c = arbor();
        c.arg(cmd).arg("--repo").arg(&self.0).args(args);
        c
    }

    fn ok(&self, cmd: &str, args: &[&str]) -> String {
        run_ok(&mut self.cmd(cmd, args))
    }

    /// Runs a command that must fail; returns its stderr.
    fn fail(&self, cmd: &str, args: &[&str]) -> String {
        String::from_utf8_lossy(&run_fail(&mut self.cmd(cmd, args)).stderr).into_owned()
    }

    /// `arbor CMD --repo PATH --json ARGS..`, parsed.
    fn json(&self, cmd: &str, args: &[&str]) -> Value {
        let mut c = self.cmd(cmd, &["--json"]);
        parse(&run_ok(c.args(args)))
    }

    /// `ostree CMD --repo=PATH ARGS..`
    fn ostree(&self, cmd: &str, args: &[&str]) -> String {
        let repo = format!("--repo={}", self.0.display());
        run_ok(ostree().arg(cmd).arg(repo).args(args))
    }

    fn init(path: PathBuf, mode: &str) -> Repo {
        let r = Repo(path);
        r.ok("init", &["--mode", mode]);
        r
    }

    /// Commits `tree` to `branch` as uid/gid 0 at `ts`; returns the checksum.
    fn commit(&self, branch: &str, ts: u64, tree: &Path, extra: &[&str]) -> String {
        let ts = format!("--timestamp=@{ts}");
        let owner = ["--owner-uid=0", "--owner-gid=0"];
        let mut c = self.cmd("commit", &["-b", branch, owner[0], owner[1], &ts]);
        let out = run_ok(c.args(extra).arg(tree));
        assert!(out.len() == 65 && out.ends_with('\n'), "{out:?}");
        out.trim_end().to_string()
    }

    /// Every file under `objects/` as `XX/REST.EXT`.
    fn objects(&self) -> BTreeSet<String> {
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

    fn fsck_clean(&self) {
        assert_eq!(self.json("fsck", &[])["errors"], json!([]));
        self.ostree("fsck", &[]);
    }

    /// The loose object file of checksum `c`.
    fn object(&self, c: &str, ext: &str) -> PathBuf {
        self.0.join("objects").join(loose(c, ext))
    }

    fn checksum_of(&self, rev: &str, path: &str) -> String {
        let v = self.json("ls", &[rev, path]);
        v[0]["checksum"].as_str().unwrap().to_string()
    }
}

fn parse(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("invalid JSON ({e}): {s}"))
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn count_ext(objs: &BTreeSet<String>, ext: &str) -> usize {
    objs.iter().filter(|o| o.ends_with(ext)).count()
}

fn loose(c: &str, ext: &str) -> String {
    format!("{}/{}.{ext}", &c[..2], &c[2..])
}

fn cp_a(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// Vector tree v1 and a v2 with modified, deleted and added entries,
/// committed as two commits on [`BR`].
struct Fixture {
    _td: TempDir,
    dir: PathBuf,
    repo: Repo,
    v1: PathBuf,
    v2: PathBuf,
    c1: String,
    c2: String,
}

fn fixture(mode: &str) -> Fixture {
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

#[test]
fn checkout_hardlinks_from_bare_user_only() {
    let f = fixture("bare-user-only");
    let dest = f.dir.join("co");
    f.repo.ok("checkout", &["-H", "-U", BR, s(&dest)]);
    assert_same_tree(&f.v2, &dest, false); // bare-user-only keeps no xattrs
    let obj = f
        .repo
        .object(&f.repo.checksum_of(BR, "/README.txt"), "file");
    let obj = fs::metadata(obj).unwrap();
    let co = fs::metadata(dest.join("README.txt")).unwrap();
    assert!(co.nlink() > 1, "not hardlinked: nlink {}", co.nlink());
    assert_eq!(co.ino(), obj.ino());
    if is_root() {
        // As ostree: objects of a "user" mode are owned by whoever wrote
        // them, so a non-user-mode checkout copies instead of linking.
        let dest = f.dir.join("co-root");
        let out = f
            .repo
            .cmd("checkout", &["-H", BR, s(&dest)])
            .output()
            .unwrap();
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("copying instead of hardlinking"),
            "no warning: {err}"
        );
        assert_same_tree(&f.v2, &dest, false);
        let co = fs::metadata(dest.join("README.txt")).unwrap();
        assert_eq!(
            co.nlink(),
            1,
            "root-mode checkout hardlinked a user-mode object"
        );
    }
}

/// A bare-user object of a file owned by 1000:1000 is owned by root on
/// disk; a root checkout must give the file its recorded owner, so it must
/// copy, not link (the bug: a hardlink came out 0:0).
#[test]
fn checkout_hardlink_keeps_recorded_owner_in_bare_user() {
    if !is_root() {
        eprintln!("not root: ownership cannot be checked");
        return;
    }
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("f"), "owned\n").unwrap();
    let repo = Repo::init(td.path().join("r"), "bare-user");
    repo.ok(
        "commit",
        &["-b", BR, "--owner-uid=1000", "--owner-gid=1000", s(&tree)],
    );
    let dest = td.path().join("co");
    repo.ok("checkout", &["-H", BR, s(&dest)]);
    let m = fs::metadata(dest.join("f")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.nlink()), (1000, 1000, 1));
    let dest = td.path().join("co-user");
    repo.ok("checkout", &["-H", "-U", BR, s(&dest)]);
    assert!(fs::metadata(dest.join("f")).unwrap().nlink() > 1);
}

#[test]
fn checkout_copies_from_archive_and_refuses_hardlinks() {
    let f = fixture("archive");
    let dest = f.dir.join("hl");
    has!(f.repo.fail("checkout", &["-H", BR, s(&dest)]), "archive");
    assert!(!dest.exists(), "failed -H checkout left {}", dest.display());
    let dest = f.dir.join("co");
    f.repo.ok("checkout", &[&format!("{BR}^"), s(&dest)]);
    assert_same_tree(&f.v1, &dest, true);
    assert_eq!(fs::metadata(dest.join("README.txt")).unwrap().nlink(), 1);
    // -U gives the same tree.
    let dest_u = f.dir.join("co-u");
    f.repo.ok("checkout", &["-U", BR, s(&dest_u)]);
    assert_same_tree(&f.v2, &dest_u, false);
}

#[test]
fn checkout_subpath_and_union() {
    let f = fixture("archive");
    let etc = f.dir.join("etc");
    let r = &f.repo;
    r.ok("checkout", &["--subpath", "/usr/etc", BR, s(&etc)]);
    assert_same_tree(&f.v2.join("usr/etc"), &etc, true);
    let one = f.dir.join("one");
    r.ok("checkout", &["--subpath", "/README.txt", BR, s(&one)]);
    assert_eq!(dir_names(&one), ["README.txt"]);
    assert_eq!(read(&one.join("README.txt")), "Hello, version two!\n");
    let nope = f.dir.join("nope");
    has!(
        r.fail("checkout", &["--subpath", "/nope", BR, s(&nope)]),
        "/nope"
    );
    // A non-empty destination is refused, then merged with --union.
    let dest = f.dir.join("union");
    write(&dest.join("README.txt"), "local edit\n");
    write(&dest.join("extra.txt"), "mine\n");
    has!(f.repo.fail("checkout", &[BR, s(&dest)]), "not empty");
    assert_eq!(read(&dest.join("README.txt")), "local edit\n");
    f.repo.ok("checkout", &["--union", BR, s(&dest)]);
    assert_eq!(read(&dest.join("README.txt")), "Hello, version two!\n");
    assert_eq!(read(&dest.join("extra.txt")), "mine\n");
    fs::remove_file(dest.join("extra.txt")).unwrap();
    assert_same_tree(&f.v2, &dest, true);
}

#[test]
fn ls_and_cat() {
    let f = fixture("archive");
    let r = &f.repo;
    let all = r.ok("ls", &["-R", BR]);
    assert_eq!(all, r.ostree("ls", &["-R", BR]));
    let path_of = |l: &str| l.split_whitespace().nth(4).unwrap().to_string();
    let listed: BTreeSet<String> = all.lines().map(path_of).collect();
    let mut expected = BTreeSet::from(["/".to_string()]);
    let mut stack = vec![f.v2.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            expected.insert(format!("/{}", path.strip_prefix(&f.v2).unwrap().display()));
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            }
        }
    }
    assert_eq!(listed, expected);
    let top = r.ok("ls", &[BR]);
    assert!(!top.contains("/usr/etc"), "ls without -R recursed: {top}");
    has!(top, "l00777 0 0      0 /link-to-readme -> README.txt\n");
    let with_sums = r.ok("ls", &["-R", "-C", BR]);
    assert_eq!(with_sums, r.ostree("ls", &["-R", "-C", BR]));
    let e = &r.json("ls", &[BR, "/README.txt"])[0];
    let want = json!({"path": "/README.txt", "kind": "-", "size": 20, "mode": 0o100644});
    for k in ["path", "kind", "size", "mode"] {
        assert_eq!(e[k], want[k], "{k}");
    }
    let sum = e["checksum"].as_str().unwrap();
    has!(with_sums, &format!(" {sum} /README.txt\n"));
    // cat: exact bytes.
    let out = r
        .cmd("cat", &[&format!("{BR}^"), "/data.bin"])
        .output()
        .unwrap();
    assert!(out.status.success() && out.stdout == (0..=255u8).collect::<Vec<u8>>());
    assert_eq!(r.ok("cat", &[BR, "/README.txt"]), "Hello, version two!\n");
    for (path, msg) in [
        ("/usr", "directory"),
        ("/link-to-readme", "symlink"),
        ("/x", "No such"),
    ] {
        has!(r.fail("cat", &[BR, path]), msg);
    }
}

#[test]
fn refs_list_create_delete() {
    let f = fixture("archive");
    let r = &f.repo;
    assert_eq!(r.ok("refs", &[]), format!("{BR}\n"));
    r.ok("refs", &["--create", "os/old", &format!("{BR}^")]);
    assert_eq!(r.ok("refs", &[]), format!("{BR}\nos/old\n"));
    assert_eq!(r.ok("refs", &[]), r.ostree("refs", &[]));
    assert_eq!(read(&r.0.join("refs/heads/os/old")), format!("{}\n", f.c1));
    assert_eq!(r.json("refs", &[]), json!({ BR: f.c2, "os/old": f.c1 }));
    has!(r.fail("refs", &["--create", "os/old", BR]), "exists");
    assert_eq!(r.ok("rev-parse", &["os/old"]), format!("{}\n", f.c1));
    r.ok("refs", &["--delete", "os/old"]);
    assert!(!r.0.join("refs/heads/os/old").exists());
    assert_eq!(r.ok("refs", &[]), format!("{BR}\n"));
    has!(r.fail("refs", &["--delete", "os/old"]), "not found");
    // Deleting a ref leaves the commit.
    assert_eq!(r.ok("rev-parse", &[&f.c1]), format!("{}\n", f.c1));
}

#[test]
fn diff_matches_ostree() {
    let f = fixture("archive");
    let r = &f.repo;
    let prev = format!("{BR}^");
    let out = r.ok("diff", &[&prev, BR]);
    let expected = "M    /README.txt\nM    /bin\nM    /usr/etc/example.conf\n\
                    D    /data.bin\nD    /usr/share\n\
                    A    /aa-new.txt\nA    /newdir\nA    /newdir/sub\nA    /newdir/sub/deep.txt\n";
    assert_eq!(out, expected);
    assert_eq!(out, r.ostree("diff", &[&prev, BR]));
    assert_eq!(r.ok("diff", &[BR, &prev]), r.ostree("diff", &[BR, &prev]));
    let j = r.json("diff", &[&prev, BR]);
    let entry = |e: &Value| {
        format!(
            "{} {}",
            e["kind"].as_str().unwrap(),
            e["path"].as_str().unwrap()
        )
    };
    let entries: Vec<String> = j.as_array().unwrap().iter().map(entry).collect();
    assert_eq!(entries.len(), 9);
    assert!(entries.contains(&"D /usr/share".to_string()), "{entries:?}");
    assert_eq!(r.ok("diff", &[BR, BR]), "");
    // A type change is one `M`; the root's own mode is not reported.
    let v3 = f.dir.join("v3");
    cp_a(&f.v1, &v3);
    fs::remove_file(v3.join("empty")).unwrap();
    write(&v3.join("empty/inside"), "now a directory\n");
    fs::remove_dir_all(v3.join("private")).unwrap();
    write(&v3.join("private"), "now a file\n");
    chmod(&v3, 0o750);
    r.commit("os/swap", 3000, &v3, &[]);
    let swaps = [
        (f.c1.as_str(), "os/swap", "M    /empty\nM    /private\n"),
        ("os/swap", f.c1.as_str(), "M    /private\nM    /empty\n"),
    ];
    for (x, y, expected) in swaps {
        let out = r.ok("diff", &[x, y]);
        assert_eq!(out, expected);
        assert_eq!(out, r.ostree("diff", &[x, y]));
    }
}

#[test]
fn fsck_reports_counts_and_fails_on_missing_object() {
    let f = fixture("archive");
    let r = &f.repo;
    let objs = r.objects();
    let v = r.json("fsck", &[]);
    assert_eq!(v["errors"], json!([]));
    assert_eq!(v["objects"], objs.len());
    assert_eq!(v["commits"], 2);
    let text = r.ok("fsck", &[]);
    has!(text, "completed successfully");
    assert_eq!(r.ok("fsck", &["-q"]), "");
    let victim = objs.iter().find(|o| o.ends_with(".filez")).unwrap();
    fs::remove_file(r.0.join("objects").join(victim)).unwrap();
    let out = run_fail(&mut r.cmd("fsck", &["--json"]));
    assert_eq!(out.status.code(), Some(1));
    let v = parse(&String::from_utf8_lossy(&out.stdout));
    assert!(!v["errors"].as_array().unwrap().is_empty());
}

/// Runs `arbor prune ARGS` and `ostree prune ARGS` on identical copies and
/// asserts that the same object files remain; returns arbor's JSON report.
fn prune_like_ostree(repo: &Repo, args: &[&str]) -> Value {
    let copy = Repo(repo.0.with_extension("ostree-copy"));
    let _ = fs::remove_dir_all(&copy.0);
    cp_a(&repo.0, &copy.0);
    let report = repo.json("prune", args);
    copy.ostree("prune", args);
    assert_eq!(repo.objects(), copy.objects(), "prune {args:?}");
    report
}

#[test]
fn prune_refs_only_depth_zero() {
    let f = fixture("archive");
    let r = &f.repo;
    let before = r.objects();
    // --no-prune only reports.
    let dry = r.json("prune", &["--no-prune", "--refs-only", "--depth", "0"]);
    assert_eq!(r.objects(), before);
    assert!(dry["deleted"].as_u64().unwrap() > 0);
    let report = prune_like_ostree(r, &["--refs-only", "--depth=0"]);
    assert_eq!(report["deleted"], dry["deleted"]);
    assert_eq!(report["total"], before.len());
    let after = r.objects();
    assert_eq!(report["deleted"], before.len() - after.len());
    assert!(!after.contains(&loose(&f.c1, "commit")));
    assert!(after.contains(&loose(&f.c2, "commit")));
    assert_eq!(count_ext(&after, ".commit"), 1);
    r.fsck_clean();
    let log = r.ok("log", &[BR]);
    has!(log, "\n<< History beyond this commit not fetched >>\n");
    let dest = f.dir.join("co");
    r.ok("checkout", &[BR, s(&dest)]);
    assert_same_tree(&f.v2, &dest, true);
    // Nothing left to delete.
    assert_eq!(r.json("prune", &["--refs-only", "--depth=0"])["deleted"], 0);
    let text = format!("Total objects: {}\nNo unreachable objects\n", after.len());
    assert_eq!(r.ok("prune", &["--refs-only"]), text);
}

#[test]
fn prune_roots_are_commits_unless_refs_only() {
    let f = fixture("archive");
    let r = &f.repo;
    let side_tree = f.dir.join("side");
    write(&side_tree.join("only-on-side"), "side\n");
    let side = r.commit("os/side", 1500, &side_tree, &[]);
    r.ok("refs", &["--delete", "os/side"]);
    let before = r.objects();
    // Every commit is a root: nothing is unreachable.
    assert_eq!(prune_like_ostree(r, &[])["deleted"], 0);
    assert_eq!(r.objects(), before);
    // Only refs are roots: the side commit and its objects go, history stays.
    let report = prune_like_ostree(r, &["--refs-only"]);
    let after = r.objects();
    assert!(!after.contains(&loose(&side, "commit")));
    assert_eq!(count_ext(&after, ".commit"), 2);
    let deleted = report["deleted"].as_u64().unwrap() as usize;
    assert_eq!(before.len() - after.len(), deleted);
    assert!(deleted >= 3, "commit, dirtree, file: {report}");
    r.fsck_clean();
}

#[test]
fn prune_keep_younger_than() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let tree = td.path().join("t");
    let repo = Repo::init(td.path().join("r"), "archive");
    let mut commits = Vec::new();
    for ts in [1000, 2000, 3000] {
        write(&tree.join("v"), &format!("{ts}\n"));
        write(&tree.join(format!("f{ts}")), "x\n");
        commits.push(repo.commit(BR, ts, &tree, &[]));
    }
    let copy = Repo(td.path().join("r1500"));
    cp_a(&repo.0, &copy.0);
    let report = prune_like_ostree(&copy, &["--keep-younger-than=@1500"]);
    assert_eq!(report["deleted"], 3, "commit, dirtree, file of @1000");
    assert_eq!(copy.json("log", &[BR]).as_array().unwrap().len(), 2);
    // Cutoff between the last two: only the tip survives.
    prune_like_ostree(&repo, &["--keep-younger-than=@2500"]);
    let log = repo.json("log", &[BR]);
    assert_eq!(log.as_array().unwrap().len(), 1);
    assert_eq!(log[0]["checksum"], commits[2].as_str());
    assert_eq!(count_ext(&repo.objects(), ".commit"), 1);
    repo.fsck_clean();
    // A cutoff after the tip still keeps the tip.
    let report = repo.json("prune", &["--keep-younger-than=@999999"]);
    assert_eq!(report["deleted"], 0);
    assert_eq!(repo.ok("rev-parse", &[BR]), format!("{}\n", commits[2]));
}

#[test]
fn quickstart_stays_in_its_directory() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let out = run_ok(arbor().current_dir(td.path()).args(["quickstart", "qs"]));
    for step in "init commit log diff ls cat checkout fsck summary serve remote pull".split(' ') {
        has!(out, &format!("\n$ arbor {step} "));
    }
    has!(out, "completed successfully");
    has!(out, "Would fetch ");
    assert_eq!(dir_names(td.path()), ["qs"], "created outside DIR");
    let repo = Repo(td.path().join("qs/repo"));
    repo.ostree("fsck", &[]);
    let log = repo.json("log", &["demo/x86_64/stable"]);
    assert_eq!(log.as_array().unwrap().len(), 2);
    // The client pulled both commits over HTTP, verified, fsck-clean.
    let client = Repo(td.path().join("qs/client"));
    let clog = client.json("log", &["origin:demo/x86_64/stable"]);
    assert_eq!(clog, log);
    client.ok("fsck", &[]);
    client.ostree("fsck", &[]);
    // The second pull fetched nothing.
    has!(out, "0 metadata, 0 content objects fetched");
    let again = run_fail(arbor().current_dir(td.path()).args(["quickstart", "qs"]));
    has!(String::from_utf8_lossy(&again.stderr), "not empty");
}

#[test]
fn every_json_output_parses() {
    let f = fixture("archive");
    let prev = format!("{BR}^");
    // (command, arguments, whether the output is an array or an object)
    let cases = [
        ("log", vec![BR], true),
        ("show", vec![BR], false),
        ("ls", vec!["-R", BR], true),
        ("refs", vec![], false),
        ("diff", vec![&prev, BR], true),
        ("fsck", vec![], false),
        ("prune", vec!["--no-prune"], false),
        ("rev-parse", vec![BR], false),
    ];
    for (cmd, args, array) in cases {
        let v = f.repo.json(cmd, &args);
        let shape_ok = if array { v.is_array() } else { v.is_object() };
        assert!(shape_ok, "{cmd} --json: unexpected shape {v}");
    }
}
