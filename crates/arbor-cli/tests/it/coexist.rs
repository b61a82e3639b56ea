//! arbor and ostree on one repository: arbor leaves ostree's staging
//! directories alone, and the repository lock excludes ostree's OFD locks
//! both ways.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use tempfile::TempDir;

use crate::interop::{chmod, SECOND_ARGS};
use crate::util::*;

/// Names and snapshots of ostree's `tmp/staging-*` entries (its staging
/// directories and their sibling `-lock` files).
fn ostree_staging(
    repo: &Path,
) -> std::collections::BTreeMap<String, Vec<(std::path::PathBuf, Node)>> {
    dir_names(&repo.join("tmp"))
        .into_iter()
        .filter(|n| n.starts_with("staging-"))
        .map(|n| {
            let p = repo.join("tmp").join(&n);
            let snap = if p.is_dir() {
                snapshot(&p, false).into_iter().collect()
            } else {
                use std::os::unix::fs::PermissionsExt;
                let node = Node {
                    kind: '-',
                    mode: std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
                    content: std::fs::read(&p).unwrap(),
                    xattrs: Vec::new(),
                };
                vec![(std::path::PathBuf::from("."), node)]
            };
            (n, snap)
        })
        .collect()
}

/// A deterministic tree big enough for `ostree commit` to take a while:
/// 30 directories of 100 distinct 4 KiB files.
fn make_big_tree(dest: &Path) {
    for d in 0..30u32 {
        let dir = dest.join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100u32 {
            let seed = d * 100 + f;
            let data: Vec<u8> = (0..4096u32).map(|i| ((seed + i) % 251) as u8).collect();
            std::fs::write(dir.join(format!("f{f:03}")), data).unwrap();
        }
    }
}

/// An `ostree commit` killed mid-transaction leaves `tmp/staging-BOOTID-X/`
/// and `tmp/staging-BOOTID-X-lock`; arbor commits must neither fail on them
/// nor touch them (they are ostree's to resume or clean up).
#[test]
fn ostree_staging_dirs_are_left_alone() {
    use std::os::unix::process::ExitStatusExt;
    require_ostree();
    let tmp = TempDir::new().unwrap();
    let (big, tree) = (tmp.path().join("big"), tmp.path().join("tree"));
    make_big_tree(&big);
    make_vector_tree(&tree);
    let repo = tmp.path().join("repo");
    ostree_init(&repo, "archive");
    let mut child = ostree()
        .arg("commit")
        .arg(format!("--repo={}", repo.display()))
        .args(["-b", "big", "--timestamp=@0"])
        .arg(format!("--tree=dir={}", big.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once its staging directory holds an object (or give up when
    // it finished first or took too long).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut staged = false;
    while !staged && child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        staged = ostree_staging(&repo).values().any(|snap| {
            snap.iter()
                .any(|(p, n)| n.kind == '-' && p != Path::new("."))
        });
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = child.kill(); // fails harmlessly if it already exited
    let killed = child.wait().unwrap().signal() == Some(9) && staged;
    if !killed {
        eprintln!("NOTE: ostree commit not caught mid-run; only the simulated layout is tested");
    }
    // Also lay out exactly what ostree leaves, independent of timing: a
    // staging directory holding a real object, and its `-lock` sibling.
    let donor = tmp.path().join("donor");
    ostree_init(&donor, "archive");
    ostree_commit(&donor, &["-b", "d", "--timestamp=@0"], &tree);
    let obj = "d5/4de4d5e87b6e23a70888c184728279c0e3a0d9ed8d4bb4fe2151e05f9599e8.filez";
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let name = format!("staging-{}-Xy12Zq", boot_id.trim());
    let staging = repo.join("tmp").join(&name);
    std::fs::create_dir_all(staging.join("d5")).unwrap();
    std::fs::copy(donor.join("objects").join(obj), staging.join(obj)).unwrap();
    let lock = repo.join("tmp").join(format!("{name}-lock"));
    std::fs::write(&lock, "").unwrap();
    chmod(&lock, 0o600);
    let before = ostree_staging(&repo);
    // Two directories and their locks when the kill landed, else ours.
    let n = before.len();
    assert!(if killed { n == 4 } else { n >= 2 }, "{:?}", before.keys());
    let c = arbor_commit_vector(&repo, &tree, &[]);
    assert_eq!(c, VECTOR_COMMIT);
    assert_eq!(
        ostree_staging(&repo),
        before,
        "arbor touched ostree's staging"
    );
    let fsck = ostree_ok("fsck", &repo, &[]);
    assert!(fsck.contains("no errors found"), "{fsck}");
    let (ok, report) = arbor_fsck_json(&repo);
    assert!(ok && report["errors"] == serde_json::json!([]), "{report}");
    // A second arbor commit (with a parent) still works.
    let c2 = arbor_commit(&repo, SECOND_ARGS, &tree);
    assert_eq!(ostree_staging(&repo), before);
    // ostree itself resumes or cleans up what it left behind.
    let oc = ostree_commit(&repo, &["-b", "after", "--timestamp=@0"], &tree);
    ostree_ok("fsck", &repo, &[]);
    arbor_ok("fsck", &repo, &[]);
    assert_eq!(ostree_ok("rev-parse", &repo, &["after"]).trim(), oc);
    assert_eq!(ostree_ok("rev-parse", &repo, &[VECTOR_REF]).trim(), c2);
}

/// Starts a process that takes an OFD record lock on `REPO/.lock` the way
/// ostree does (`F_OFD_SETLKW`, whole file), holds it for `secs` and
/// exits. Returns once the lock is held.
fn hold_ofd_lock(repo: &Path, exclusive: bool, secs: f64) -> std::process::Child {
    use std::io::BufRead;
    // F_OFD_SETLKW = 38 (asm-generic); struct flock on 64-bit Linux is
    // l_type, l_whence (short), l_start, l_len (off_t), l_pid (int), pad.
    const SCRIPT: &str = "import fcntl, os, struct, sys, time\n\
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o660)\n\
        fcntl.fcntl(fd, 38, struct.pack('hhqqi4x', int(sys.argv[2]), 0, 0, 0, 0))\n\
        print('locked', flush=True)\n\
        time.sleep(float(sys.argv[3]))\n";
    let l_type = if exclusive { "1" } else { "0" }; // F_WRLCK / F_RDLCK
    let mut child = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(repo.join(".lock"))
        .args([l_type, &secs.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "locked\n", "the lock holder failed");
    child
}

/// Runs `cmd` (which must succeed); returns how long it took.
#[track_caller]
fn timed_ok(cmd: &mut std::process::Command) -> std::time::Duration {
    let t0 = std::time::Instant::now();
    run_ok(cmd);
    t0.elapsed()
}

/// arbor's repository lock conflicts with ostree's OFD locks on `.lock`:
/// an arbor commit (shared) waits for an exclusive holder (ostree prune),
/// an arbor prune (exclusive) waits for a shared one (ostree commit), a
/// shared holder does not block an arbor commit, and ostree's prune cannot
/// run while an arbor commit is in progress.
#[test]
fn repo_lock_excludes_ostree_style_ofd_lock() {
    require_ostree();
    let tmp = TempDir::new().unwrap();
    let tree = tmp.path().join("tree");
    make_vector_tree(&tree);
    let repo = tmp.path().join("repo");
    arbor_init(&repo, "archive");
    let commit = |branch: &str| {
        let mut c = arbor();
        c.args(["commit", "--repo"])
            .arg(&repo)
            .args(["-b", branch, "--timestamp=@0"])
            .arg(&tree);
        c
    };

    let mut holder = hold_ofd_lock(&repo, true, 1.5);
    let waited = timed_ok(&mut commit("a"));
    assert!(holder.wait().unwrap().success());
    assert!(
        waited >= std::time::Duration::from_secs(1),
        "arbor commit did not wait for an exclusive OFD lock ({waited:?})"
    );

    let mut holder = hold_ofd_lock(&repo, false, 1.5);
    let waited = timed_ok(arbor().args(["prune", "--refs-only", "--repo"]).arg(&repo));
    assert!(holder.wait().unwrap().success());
    assert!(
        waited >= std::time::Duration::from_secs(1),
        "arbor prune did not wait for a shared OFD lock ({waited:?})"
    );

    // Shared with shared: no waiting (the holder outlives the check).
    let mut holder = hold_ofd_lock(&repo, false, 5.0);
    let took = timed_ok(&mut commit("b"));
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        took < std::time::Duration::from_millis(2500),
        "arbor commit waited for a shared OFD lock ({took:?})"
    );

    // The reverse, with ostree itself: a commit reading a tar from a pipe
    // holds its lock; ostree prune gives up after lock-timeout-secs.
    ostree_ok("config", &repo, &["set", "core.lock-timeout-secs", "1"]);
    let mut child = arbor()
        .args(["commit", "--repo"])
        .arg(&repo)
        .args(["-b", "c", "--timestamp=@0", "--tar", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The transaction's staging directory exists once the lock is held.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !dir_names(&repo.join("tmp"))
        .iter()
        .any(|n| n.starts_with("arbor-staging-"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no transaction started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = run_fail(
        ostree()
            .arg("prune")
            .arg(format!("--repo={}", repo.display()))
            .arg("--refs-only"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Locking repo exclusive failed"), "{err}");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&[0u8; 1024]).unwrap(); // an empty tar archive
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    ostree_ok("prune", &repo, &["--refs-only"]);
    ostree_ok("fsck", &repo, &[]);
}
