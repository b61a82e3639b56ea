//! Shared helpers: run `arbor` and `ostree`, build fixture trees, compare.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The vectors shipped in the repository.
pub fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors")
}

/// A command for the built `arbor` binary.
pub fn arbor() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_arbor"));
    c.env_remove("ARBOR_FAILPOINT");
    c
}

/// A command for the real `ostree` binary.
pub fn ostree() -> Command {
    Command::new("ostree")
}

/// Whether `ostree` is installed; interop tests fail loudly without it
/// (CI installs it), because silently skipping would hide regressions.
pub fn require_ostree() {
    let ok = Command::new("ostree")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the `ostree` binary is required for interop tests (apt-get install ostree)"
    );
}

/// Runs a command, panicking with its output on failure; returns stdout.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawning command");
    assert!(
        out.status.success(),
        "command {:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs a command expected to fail; returns its output.
#[track_caller]
pub fn run_fail(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawning command");
    assert!(
        !out.status.success(),
        "command {:?} unexpectedly succeeded:\nstdout:\n{}\nstderr:\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Builds the vector input tree with `make-tree.sh` into `dest`.
pub fn make_vector_tree(dest: &Path) {
    run_ok(
        Command::new("sh")
            .arg(vectors().join("make-tree.sh"))
            .arg(dest),
    );
}

/// The commit arguments the vectors were made with.
pub const VECTOR_COMMIT_ARGS: &[&str] = &[
    "--branch=example/x86_64/stable",
    "--subject=Test vector commit",
    "--body=Body line one.",
    "--add-metadata-string=version=1.0",
    "--timestamp=@1577836800",
    "--owner-uid=0",
    "--owner-gid=0",
];

/// The one gate of every root-only check, shared by all of arbor's tests.
pub use arbor_testutil::needs_root;

/// The vector commit (archive, bare-user, bare): `expected.json`'s value.
pub const VECTOR_COMMIT: &str = "02d3a739e72bc5dfb45a5112ed1d29f4faa4666a6308fa75d3fd26bdd1f20e55";
/// The vector commit in bare-user-only mode (xattrs dropped).
pub const VECTOR_COMMIT_BARE_USER_ONLY: &str =
    "3b2caa8d5bf04ad1654ac240722febc938b8038d1fa944870edb83befffbbd43";
/// The vector branch.
pub const VECTOR_REF: &str = "example/x86_64/stable";
/// Every repository mode both tools support.
pub const MODES: &[&str] = &["archive", "bare-user", "bare-user-only", "bare"];

/// `arbor init --repo PATH --mode MODE`.
#[track_caller]
pub fn arbor_init(repo: &Path, mode: &str) {
    run_ok(
        arbor()
            .arg("init")
            .arg("--repo")
            .arg(repo)
            .arg("--mode")
            .arg(mode),
    );
}

/// `ostree init --repo=PATH --mode=MODE`.
#[track_caller]
pub fn ostree_init(repo: &Path, mode: &str) {
    run_ok(
        ostree()
            .arg("init")
            .arg(format!("--repo={}", repo.display()))
            .arg(format!("--mode={mode}")),
    );
}

/// `arbor commit` of `dir` with the vector flags plus `extra`; returns the checksum.
#[track_caller]
pub fn arbor_commit_vector(repo: &Path, dir: &Path, extra: &[&str]) -> String {
    arbor_commit(repo, &[VECTOR_COMMIT_ARGS, extra].concat(), dir)
}

/// `arbor commit --repo R ARGS.. DIR`; returns the checksum.
#[track_caller]
pub fn arbor_commit(repo: &Path, args: &[&str], dir: &Path) -> String {
    let out = run_ok(
        arbor()
            .arg("commit")
            .arg("--repo")
            .arg(repo)
            .args(args)
            .arg(dir),
    );
    out.trim().to_string()
}

/// `ostree commit` of `dir` with the vector flags plus `extra`; returns the checksum.
#[track_caller]
pub fn ostree_commit_vector(repo: &Path, dir: &Path, extra: &[&str]) -> String {
    ostree_commit(repo, &[VECTOR_COMMIT_ARGS, extra].concat(), dir)
}

/// `ostree commit --repo=R ARGS.. --tree=dir=DIR`; returns the checksum.
#[track_caller]
pub fn ostree_commit(repo: &Path, args: &[&str], dir: &Path) -> String {
    let out = run_ok(
        ostree()
            .arg("commit")
            .arg(format!("--repo={}", repo.display()))
            .args(args)
            .arg(format!("--tree=dir={}", dir.display())),
    );
    out.trim().to_string()
}

/// The expected commit checksum of the vector tree in `mode`.
pub fn vector_commit_for(mode: &str) -> &'static str {
    if mode == "bare-user-only" {
        VECTOR_COMMIT_BARE_USER_ONLY
    } else {
        VECTOR_COMMIT
    }
}

/// Extracts `testdata/vectors/repo-archive.tar.gz` into `dest`; returns the repo path.
pub fn extract_vector_repo(dest: &Path) -> PathBuf {
    let f = std::fs::File::open(vectors().join("repo-archive.tar.gz"))
        .expect("opening repo-archive.tar.gz");
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    ar.set_preserve_permissions(true);
    ar.unpack(dest).expect("extracting repo-archive.tar.gz");
    dest.join("repo-archive")
}

/// The `user.*` extended attributes of `path` (not following a symlink), sorted.
pub fn user_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut list = vec![0u8; 64 * 1024];
    let n = match rustix::fs::llistxattr(path, &mut list[..]) {
        Ok(n) => n,
        Err(e) => panic!("llistxattr {}: {e}", path.display()),
    };
    let mut out = Vec::new();
    for name in list[..n]
        .split(|b| *b == 0)
        .filter(|n| n.starts_with(b"user."))
    {
        let cname = std::ffi::CString::new(name).expect("xattr name");
        let mut val = vec![0u8; 64 * 1024];
        let m = rustix::fs::lgetxattr(path, cname.as_c_str(), &mut val[..])
            .unwrap_or_else(|e| panic!("lgetxattr {} {name:?}: {e}", path.display()));
        out.push((name.to_vec(), val[..m].to_vec()));
    }
    out.sort();
    out
}

/// One node of a [`snapshot`]: type, permission bits, content (file bytes
/// or symlink target) and, when asked for, `user.*` xattrs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `d`, `-` or `l` (anything else is `?`).
    pub kind: char,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    /// File content, symlink target, or empty for directories.
    pub content: Vec<u8>,
    /// `user.*` xattrs (empty unless requested).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Walks `root` (not following symlinks) into a sorted map from relative
/// path (`.` for the root) to [`Node`].
pub fn snapshot(root: &Path, with_xattrs: bool) -> std::collections::BTreeMap<PathBuf, Node> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![PathBuf::from(".")];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let md = std::fs::symlink_metadata(&full)
            .unwrap_or_else(|e| panic!("lstat {}: {e}", full.display()));
        let ft = md.file_type();
        let (kind, content) = if ft.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&full)
                .unwrap_or_else(|e| panic!("readdir {}: {e}", full.display()))
                .map(|e| e.expect("dirent").file_name())
                .collect();
            names.sort();
            for n in names {
                stack.push(rel.join(n));
            }
            ('d', Vec::new())
        } else if ft.is_symlink() {
            use std::os::unix::ffi::OsStrExt;
            (
                'l',
                std::fs::read_link(&full)
                    .expect("readlink")
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else if ft.is_file() {
            (
                '-',
                std::fs::read(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display())),
            )
        } else {
            ('?', Vec::new())
        };
        let xattrs = if with_xattrs {
            user_xattrs(&full)
        } else {
            Vec::new()
        };
        out.insert(
            rel,
            Node {
                kind,
                mode: md.permissions().mode() & 0o7777,
                content,
                xattrs,
            },
        );
    }
    out
}

/// Asserts that two trees have the same paths, types, permission bits,
/// contents, symlink targets and (when `with_xattrs`) `user.*` xattrs.
#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path, with_xattrs: bool) {
    let a = snapshot(expected, with_xattrs);
    let b = snapshot(actual, with_xattrs);
    let mut problems = Vec::new();
    for (p, n) in &a {
        match b.get(p) {
            None => problems.push(format!("missing {}", p.display())),
            Some(m) if m != n => problems.push(format!(
                "differs {}: expected {n:?}, got {m:?}",
                p.display()
            )),
            Some(_) => {}
        }
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        problems.push(format!("unexpected {}", p.display()));
    }
    assert!(
        problems.is_empty(),
        "tree {} differs from {}:\n{}",
        actual.display(),
        expected.display(),
        problems.join("\n")
    );
}

/// Names in a directory, sorted (for "nothing was written here" checks).
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dirent")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// Runs `arbor fsck --repo R --json`; returns (success, parsed report).
pub fn arbor_fsck_json(repo: &Path) -> (bool, serde_json::Value) {
    let out = arbor()
        .arg("fsck")
        .arg("--repo")
        .arg(repo)
        .arg("--json")
        .output()
        .expect("spawning arbor fsck");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "fsck --json output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.success(), v)
}

/// A path as `&str` (test paths are UTF-8 temporary directories).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `arbor SUB --repo REPO ARGS..`, which must succeed; returns stdout.
#[track_caller]
pub fn arbor_ok(sub: &str, repo: &Path, args: &[&str]) -> String {
    run_ok(arbor().arg(sub).arg("--repo").arg(repo).args(args))
}

/// `ostree SUB --repo=REPO ARGS..`, which must succeed; returns stdout.
#[track_caller]
pub fn ostree_ok(sub: &str, repo: &Path, args: &[&str]) -> String {
    run_ok(
        ostree()
            .arg(sub)
            .arg(format!("--repo={}", repo.display()))
            .args(args),
    )
}

/// A running `arbor serve --addr 127.0.0.1:0`; killed and waited for on drop.
#[derive(Debug)]
pub struct ArborServe {
    child: std::process::Child,
    url: String,
    stderr: std::fs::File,
    // Keeps the pipe open: the server must never see EPIPE on stdout.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl ArborServe {
    /// Starts serving `repo` and reads the URL from the first output line.
    #[track_caller]
    pub fn start(repo: &Path) -> ArborServe {
        use std::io::{BufRead, Read, Seek};
        // stderr goes to a file: a pipe nobody reads could fill and block.
        let mut stderr = tempfile::tempfile().expect("temporary file");
        let mut child = arbor()
            .args(["serve", "--addr", "127.0.0.1:0", "--repo"])
            .arg(repo)
            .stdout(std::process::Stdio::piped())
            .stderr(stderr.try_clone().expect("cloning a file handle"))
            .spawn()
            .expect("spawning arbor serve");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("reading arbor serve's output");
        let url = line
            .trim_end()
            .rsplit_once(" at ")
            .map(|(_, u)| u.to_string())
            .filter(|u| u.starts_with("http://127.0.0.1:") && u.ends_with('/'));
        let Some(url) = url else {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            stderr.rewind().expect("rewinding stderr");
            stderr.read_to_string(&mut err).expect("reading stderr");
            panic!("arbor serve printed {line:?}; stderr:\n{err}");
        };
        ArborServe {
            child,
            url,
            stderr,
            _stdout: stdout,
        }
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        use std::io::{Read, Seek};
        let mut f = self.stderr.try_clone().expect("cloning a file handle");
        f.rewind().expect("rewinding stderr");
        let mut s = String::new();
        f.read_to_string(&mut s).expect("reading stderr");
        s
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ArborServe {
    fn drop(&mut self) {
        // Errors only mean it already exited; wait reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `arbor pull --repo DEST ARGS..` (not run).
pub fn pull_cmd(dest: &Path, args: &[&str]) -> Command {
    let mut c = arbor();
    c.args(["pull", "--repo"]).arg(dest).args(args);
    c
}

/// What `rev` resolves to in `repo`, or `None` if it does not resolve.
pub fn rev_opt(repo: &Path, rev: &str) -> Option<String> {
    let out = arbor()
        .args(["rev-parse", "--repo"])
        .arg(repo)
        .arg(rev)
        .output()
        .expect("spawning arbor rev-parse");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `arbor status`'s text without the state lines arbor adds after
/// ostree's lines of each deployment (`BaseCommit:` ... `State:`), which
/// must be there, once per deployment, with a `state-` checksum, and the
/// `Extension: NAME (COMMIT)` lines of deployments with extensions: what
/// is left is `ostree admin status`'s text.
#[track_caller]
pub fn ostree_view_of_status(text: &str) -> String {
    const LABELS: [&str; 4] = ["BaseCommit:", "Config:", "KernelArguments:", "State:"];
    let deployments = text
        .lines()
        .filter(|l| !l.starts_with("    ") && !l.is_empty() && *l != "No deployments.")
        .count();
    let mut kept = String::new();
    let mut found = [0usize; 4];
    for l in text.lines() {
        if l.starts_with("    Extension: ") {
            continue;
        }
        match LABELS
            .iter()
            .position(|lab| l.strip_prefix("    ").is_some_and(|r| r.starts_with(lab)))
        {
            Some(i) => {
                found[i] += 1;
                if i == 3 {
                    let v = &l["    State: ".len()..];
                    assert!(
                        v.len() == "state-".len() + 64 && v.starts_with("state-"),
                        "{text}"
                    );
                }
            }
            None => {
                kept.push_str(l);
                kept.push('\n');
            }
        }
    }
    assert_eq!(
        found, [deployments; 4],
        "state lines per deployment:\n{text}"
    );
    kept
}

/// A tiny deterministic generator (seed printed for reproduction).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
