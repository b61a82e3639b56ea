//! Interoperability with the real `ostree` 2022.7: each tool reads, checks
//! and checks out what the other wrote, and both hash the same input alike.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use tempfile::TempDir;

use crate::util::*;

/// Whether checkouts of `mode` carry the input's user xattrs.
fn keeps_xattrs(mode: &str) -> bool {
    mode != "bare-user-only"
}

/// Whether a mode needs root to be written by ostree/arbor (bare chowns).
fn needs_root(mode: &str) -> bool {
    mode == "bare"
}

fn skip_note(mode: &str, what: &str) -> bool {
    if needs_root(mode) && !is_root() {
        eprintln!("NOTE: skipping {what} in {mode} mode: needs root");
        return true;
    }
    false
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Makes the vector tree's successor: README modified, a file and a
/// directory added, `empty` and `empty-dir` removed, a mode changed.
fn make_second_tree(dest: &Path) {
    make_vector_tree(dest);
    std::fs::write(dest.join("README.txt"), "Hello, OSTree! Version two.\n").unwrap();
    std::fs::write(dest.join("added.txt"), "new in v2\n").unwrap();
    std::fs::create_dir(dest.join("new-dir")).unwrap();
    std::fs::write(dest.join("new-dir/inner"), "inner\n").unwrap();
    std::fs::remove_file(dest.join("empty")).unwrap();
    std::fs::remove_dir(dest.join("empty-dir")).unwrap();
    chmod(&dest.join("bin/hello.sh"), 0o700);
}

/// Flags of the second commit (same branch, so the first is its parent).
const SECOND_ARGS: &[&str] = &[
    "--branch=example/x86_64/stable",
    "--subject=Second commit",
    "--body=Modified, added and removed files.",
    "--add-metadata-string=version=2.0",
    "--timestamp=@1577923200",
    "--owner-uid=0",
    "--owner-gid=0",
];

#[test]
fn commit_checksums_equal_ostree_and_vectors() {
    require_ostree();
    let tmp = TempDir::new().unwrap();
    let tree = tmp.path().join("tree");
    make_vector_tree(&tree);
    for mode in MODES {
        if skip_note(mode, "the checksum comparison") {
            continue;
        }
        let a = tmp.path().join(format!("arbor-{mode}"));
        let o = tmp.path().join(format!("ostree-{mode}"));
        arbor_init(&a, mode);
        ostree_init(&o, mode);
        let ac = arbor_commit_vector(&a, &tree, &[]);
        let oc = ostree_commit_vector(&o, &tree, &[]);
        assert_eq!(ac, oc, "arbor and ostree disagree in {mode} mode");
        assert_eq!(
            ac,
            vector_commit_for(mode),
            "{mode}: not the expected.json value"
        );
    }
}

#[test]
fn ostree_fsck_accepts_arbor_repos_with_history() {
    require_ostree();
    let tmp = TempDir::new().unwrap();
    let (t1, t2) = (tmp.path().join("t1"), tmp.path().join("t2"));
    make_vector_tree(&t1);
    make_second_tree(&t2);
    for mode in MODES {
        if skip_note(mode, "ostree fsck of arbor repos") {
            continue;
        }
        let a = tmp.path().join(format!("arbor-{mode}"));
        let o = tmp.path().join(format!("ostree-{mode}"));
        arbor_init(&a, mode);
        ostree_init(&o, mode);
        let c1 = arbor_commit_vector(&a, &t1, &[]);
        ostree_ok("fsck", &a, &[]);
        let c2 = arbor_commit(&a, SECOND_ARGS, &t2);
        let fsck = ostree_ok("fsck", &a, &[]);
        assert!(
            fsck.contains("completed successfully - no errors found"),
            "{mode}: {fsck}"
        );
        // Same history built by ostree hashes the same, parent included.
        assert_eq!(
            ostree_commit_vector(&o, &t1, &[]),
            c1,
            "{mode} first commit"
        );
        assert_eq!(
            ostree_commit(&o, SECOND_ARGS, &t2),
            c2,
            "{mode} second commit"
        );
        let parent = ostree_ok("rev-parse", &a, &[&format!("{VECTOR_REF}^")]);
        assert_eq!(parent.trim(), c1, "{mode}: ostree sees the wrong parent");
        let diff = ostree_ok("diff", &a, &[&c1, &c2]);
        for line in [
            "M    /README.txt",
            "M    /bin/hello.sh",
            "D    /empty",
            "D    /empty-dir",
            "A    /added.txt",
            "A    /new-dir",
        ] {
            assert!(
                diff.lines().any(|l| l == line),
                "{mode}: ostree diff lacks {line:?}:\n{diff}"
            );
        }
    }
}

#[test]
fn ostree_checkout_of_arbor_commits_reproduces_tree() {
    require_ostree();
    let tmp = TempDir::new().unwrap();
    let tree = tmp.path().join("tree");
    make_vector_tree(&tree);
    for mode in MODES {
        if skip_note(mode, "ostree checkout of arbor commits") {
            continue;
        }
        let repo = tmp.path().join(format!("repo-{mode}"));
        arbor_init(&repo, mode);
        arbor_commit_vector(&repo, &tree, &[]);
        // -U: no ownership, no xattrs set (bare-user's hardlinked objects
        // carry user.ostreemeta, so xattrs are not compared here).
        let u = tmp.path().join(format!("co-U-{mode}"));
        ostree_ok("checkout", &repo, &["-U", VECTOR_REF, s(&u)]);
        assert_same_tree(&tree, &u, false);
        if is_root() {
            let full = tmp.path().join(format!("co-{mode}"));
            ostree_ok("checkout", &repo, &[VECTOR_REF, s(&full)]);
            assert_same_tree(&tree, &full, keeps_xattrs(mode));
            if !keeps_xattrs(mode) {
                assert!(
                    user_xattrs(&full.join("xattr-file.txt")).is_empty(),
                    "{mode} kept xattrs"
                );
            }
        } else {
            eprintln!("NOTE: skipping non -U ostree checkout in {mode} mode: needs root");
        }
    }
}

fn ls_rc(tool: &str, repo: &Path) -> String {
    if tool == "arbor" {
        arbor_ok("ls", repo, &["-R", "-C", VECTOR_REF])
    } else {
        ostree_ok("ls", repo, &["-R", "-C", VECTOR_REF])
    }
}

fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).unwrap().ino()
}

#[test]
fn arbor_reads_ostree_repos() {
    require_ostree();
    let tmp = TempDir::new().unwrap();
    let tree = tmp.path().join("tree");
    make_vector_tree(&tree);
    for mode in MODES {
        if skip_note(mode, "reading ostree repos") {
            continue;
        }
        let repo = tmp.path().join(format!("repo-{mode}"));
        ostree_init(&repo, mode);
        let c = ostree_commit_vector(&repo, &tree, &[]);
        let quiet = arbor_ok("fsck", &repo, &["-q"]);
        assert_eq!(
            quiet, "",
            "{mode}: fsck -q of a clean repo printed something"
        );
        let (ok, report) = arbor_fsck_json(&repo);
        assert!(
            ok && report["errors"].as_array().unwrap().is_empty(),
            "{mode}: {report}"
        );
        assert_eq!(report["commits"], 1);

        // Copy checkout: as root, with ownership and xattrs.
        let co = tmp.path().join(format!("co-{mode}"));
        let user: &[&str] = if is_root() { &[] } else { &["-U"] };
        arbor_ok("checkout", &repo, &[user, &[VECTOR_REF, s(&co)]].concat());
        assert_same_tree(&tree, &co, keeps_xattrs(mode) && is_root());
        // Hardlink checkouts where the mode allows them.
        let hl: Option<&[&str]> = match *mode {
            "bare" if is_root() => Some(&["-H"]),
            "bare-user-only" => Some(&["-H", "-U"]),
            "bare-user" => Some(&["-H", "-U"]),
            _ => None,
        };
        if let Some(flags) = hl {
            let h = tmp.path().join(format!("co-H-{mode}"));
            arbor_ok("checkout", &repo, &[flags, &[VECTOR_REF, s(&h)]].concat());
            assert_same_tree(&tree, &h, *mode == "bare");
            let obj = repo.join(
                "objects/d5/4de4d5e87b6e23a70888c184728279c0e3a0d9ed8d4bb4fe2151e05f9599e8.file",
            );
            assert_eq!(
                inode(&h.join("README.txt")),
                inode(&obj),
                "{mode}: -H did not hardlink"
            );
        }

        // ls -R -C: byte-for-byte the same as ostree's.
        assert_eq!(
            ls_rc("arbor", &repo),
            ls_rc("ostree", &repo),
            "{mode}: ls -R -C differs"
        );
        let log = arbor_ok("log", &repo, &[VECTOR_REF]);
        assert!(
            log.contains("    Test vector commit\n") && log.contains(&format!("commit {c}\n")),
            "{log}"
        );
        let cat = arbor()
            .args(["cat", "--repo"])
            .arg(&repo)
            .args([VECTOR_REF, "/data.bin"])
            .output()
            .unwrap();
        assert!(cat.status.success());
        assert_eq!(
            cat.stdout,
            std::fs::read(tree.join("data.bin")).unwrap(),
            "{mode}: cat data.bin"
        );
        let cat = arbor_ok("cat", &repo, &[VECTOR_REF, "usr/etc/example.conf"]);
        assert_eq!(cat, "key=value\n");
        let ar = arbor_ok("rev-parse", &repo, &[VECTOR_REF]);
        let or = ostree_ok("rev-parse", &repo, &[VECTOR_REF]);
        assert_eq!(ar, or);
        assert_eq!(ar.trim(), vector_commit_for(mode));
    }
}

#[test]
fn vector_archive_tarball() {
    require_ostree();
    let tmp = TempDir::new().unwrap();
    let repo = extract_vector_repo(&tmp.path().join("x"));
    let tree = tmp.path().join("tree");
    make_vector_tree(&tree);
    arbor_ok("fsck", &repo, &[]);
    let rp = arbor_ok("rev-parse", &repo, &[VECTOR_REF]);
    assert_eq!(rp.trim(), VECTOR_COMMIT);
    let show: serde_json::Value =
        serde_json::from_str(&arbor_ok("show", &repo, &["--json", VECTOR_REF])).unwrap();
    assert_eq!(show["checksum"], VECTOR_COMMIT);
    assert_eq!(show["subject"], "Test vector commit");
    assert_eq!(show["version"], "1.0");
    assert_eq!(show["timestamp"], 1577836800);
    let text = arbor_ok("show", &repo, &[VECTOR_REF]);
    assert!(
        text.starts_with(&format!("commit {VECTOR_COMMIT}\n")),
        "{text}"
    );
    let co = tmp.path().join("co");
    let user: &[&str] = if is_root() { &[] } else { &["-U"] };
    arbor_ok("checkout", &repo, &[user, &[VECTOR_REF, s(&co)]].concat());
    assert_same_tree(&tree, &co, is_root());
    if is_root() {
        let x = user_xattrs(&co.join("xattr-file.txt"));
        assert_eq!(
            x,
            vec![
                (b"user.alpha".to_vec(), b"first".to_vec()),
                (b"user.zeta".to_vec(), b"last".to_vec())
            ]
        );
    }
    assert_eq!(ls_rc("arbor", &repo), ls_rc("ostree", &repo));
}

#[test]
fn ostree_pull_local_from_arbor_archive() {
    require_ostree();
    let tmp = TempDir::new().unwrap();
    let tree = tmp.path().join("tree");
    make_vector_tree(&tree);
    let src = tmp.path().join("arbor-archive");
    arbor_init(&src, "archive");
    arbor_commit_vector(&src, &tree, &[]);
    let mut canon_args: Vec<&str> = VECTOR_COMMIT_ARGS
        .iter()
        .copied()
        .filter(|a| !a.starts_with("--branch="))
        .collect();
    canon_args.push("--branch=canonical");
    // Pulling xattr-carrying content into bare-user-only is lossy (ostree's
    // own fsck then flags it), so that mode pulls a canonical commit.
    canon_args.push("--canonical-permissions");
    let canon = arbor_commit(&src, &canon_args, &tree);
    canon_args.pop();
    assert_eq!(canon.trim(), {
        // Same tree as a bare-user-only commit, but bound to another ref.
        let o = tmp.path().join("buo");
        ostree_init(&o, "bare-user-only");
        ostree_commit(&o, &canon_args, &tree)
    });
    for mode in MODES {
        if skip_note(mode, "pull-local") {
            continue;
        }
        let dst = tmp.path().join(format!("pulled-{mode}"));
        ostree_init(&dst, mode);
        let r#ref = if mode == &"bare-user-only" {
            "canonical"
        } else {
            VECTOR_REF
        };
        ostree_ok("pull-local", &dst, &[s(&src), r#ref]);
        ostree_ok("fsck", &dst, &[]);
        let rp = ostree_ok("rev-parse", &dst, &[r#ref]);
        let expected = if r#ref == "canonical" {
            canon.trim()
        } else {
            VECTOR_COMMIT
        };
        assert_eq!(rp.trim(), expected);
        // arbor reads what ostree pulled.
        arbor_ok("fsck", &dst, &[]);
        if *mode == "bare-user" {
            let co = tmp.path().join("co-from-pulled");
            arbor_ok("checkout", &dst, &["-U", VECTOR_REF, s(&co)]);
            assert_same_tree(&tree, &co, false);
            if is_root() {
                let co2 = tmp.path().join("co-from-pulled-root");
                arbor_ok("checkout", &dst, &[VECTOR_REF, s(&co2)]);
                assert_same_tree(&tree, &co2, true);
            }
        }
    }
}

fn commit_tar_stdin(repo: &Path, tree: &Path) -> String {
    let mut tar = std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=user.*", "-C"])
        .arg(tree)
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning tar");
    let stdin = Stdio::from(tar.stdout.take().unwrap());
    let out = run_ok(
        arbor()
            .args(["commit", "--repo"])
            .arg(repo)
            .args(VECTOR_COMMIT_ARGS)
            .args(["--tar", "-"])
            .stdin(stdin),
    );
    assert!(tar.wait().unwrap().success());
    out.trim().to_string()
}

#[test]
fn tar_input_equals_directory_commit() {
    let tmp = TempDir::new().unwrap();
    let tree = tmp.path().join("tree");
    make_vector_tree(&tree);
    let dir_repo = tmp.path().join("dir");
    arbor_init(&dir_repo, "archive");
    let from_dir = arbor_commit_vector(&dir_repo, &tree, &[]);
    assert_eq!(from_dir, VECTOR_COMMIT);

    let pipe_repo = tmp.path().join("pipe");
    arbor_init(&pipe_repo, "archive");
    assert_eq!(
        commit_tar_stdin(&pipe_repo, &tree),
        from_dir,
        "tar on stdin"
    );

    let tarfile = tmp.path().join("tree.tar");
    run_ok(
        std::process::Command::new("tar")
            .args(["--xattrs", "--xattrs-include=user.*", "-C"])
            .arg(&tree)
            .arg("-cf")
            .arg(&tarfile)
            .arg("."),
    );
    let file_repo = tmp.path().join("file");
    arbor_init(&file_repo, "archive");
    let tar_args = [VECTOR_COMMIT_ARGS, &["--tar", s(&tarfile)]].concat();
    let out = arbor_ok("commit", &file_repo, &tar_args);
    assert_eq!(out.trim(), from_dir, "--tar FILE");
    arbor_ok("fsck", &file_repo, &[]);

    // The same tar read from a pipe written in small pieces.
    let bytes = std::fs::read(&tarfile).unwrap();
    let chunk_repo = tmp.path().join("chunk");
    arbor_init(&chunk_repo, "archive");
    let mut child = arbor()
        .args(["commit", "--repo"])
        .arg(&chunk_repo)
        .args(VECTOR_COMMIT_ARGS)
        .args(["--tar", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for c in bytes.chunks(777) {
        stdin.write_all(c).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), from_dir);
}

/// The tree comparison used above notices every kind of difference.
#[test]
fn tree_comparison_detects_differences() {
    let tmp = TempDir::new().unwrap();
    let a = tmp.path().join("a");
    make_vector_tree(&a);
    type Mutation = fn(&Path);
    let mutations: &[(&str, Mutation, bool)] = &[
        (
            "content",
            |p| std::fs::write(p.join("README.txt"), "Hello, OSTree?\n").unwrap(),
            false,
        ),
        ("mode", |p| chmod(&p.join("empty"), 0o640), false),
        ("dir mode", |p| chmod(&p.join("usr"), 0o750), false),
        (
            "target",
            |p| {
                std::fs::remove_file(p.join("link-to-readme")).unwrap();
                std::os::unix::fs::symlink("empty", p.join("link-to-readme")).unwrap();
            },
            false,
        ),
        (
            "type",
            |p| {
                std::fs::remove_file(p.join("empty")).unwrap();
                std::fs::create_dir(p.join("empty")).unwrap();
            },
            false,
        ),
        (
            "extra",
            |p| std::fs::write(p.join("usr/extra"), "").unwrap(),
            false,
        ),
        (
            "missing",
            |p| std::fs::remove_dir(p.join("empty-dir")).unwrap(),
            false,
        ),
        (
            "xattr",
            |p| {
                run_ok(
                    std::process::Command::new("setfattr")
                        .args(["-n", "user.zeta", "-v", "other"])
                        .arg(p.join("xattr-file.txt")),
                );
            },
            true,
        ),
    ];
    for (i, (what, mutate, xattr_only)) in mutations.iter().enumerate() {
        let b = tmp.path().join(format!("b{i}"));
        make_vector_tree(&b);
        assert_same_tree(&a, &b, true);
        mutate(&b);
        let caught = std::panic::catch_unwind(|| assert_same_tree(&a, &b, true)).is_err();
        assert!(caught, "{what}: difference not detected");
        if *xattr_only {
            assert_same_tree(&a, &b, false);
        }
    }
}

/// The vector flags with `--owner-uid/gid` replaced by `uid`/`gid`.
fn vector_args_owned_by(uid: u32, gid: u32) -> Vec<String> {
    VECTOR_COMMIT_ARGS
        .iter()
        .filter(|a| !a.starts_with("--owner-"))
        .map(|a| a.to_string())
        .chain([format!("--owner-uid={uid}"), format!("--owner-gid={gid}")])
        .collect()
}

/// `--owner-uid/gid` apply before canonicalisation, as in ostree: the same
/// checksums in every mode, and bare-user-only is 0:0 whatever the flags.
#[test]
fn owner_flags_match_ostree() {
    require_ostree();
    let tmp = TempDir::new().unwrap();
    let tree = tmp.path().join("tree");
    make_vector_tree(&tree);
    let owned = vector_args_owned_by(1000, 1000);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    for mode in MODES {
        if skip_note(mode, "the owner comparison") {
            continue;
        }
        let a = tmp.path().join(format!("arbor-{mode}"));
        let o = tmp.path().join(format!("ostree-{mode}"));
        arbor_init(&a, mode);
        ostree_init(&o, mode);
        let ac = arbor_commit(&a, &args, &tree);
        let oc = ostree_commit(&o, &args, &tree);
        assert_eq!(ac, oc, "arbor and ostree disagree in {mode} mode");
        if *mode == "bare-user-only" {
            // Canonicalised: the owner flags make no difference at all.
            assert_eq!(ac, VECTOR_COMMIT_BARE_USER_ONLY, "{mode}");
        } else {
            assert_ne!(ac, VECTOR_COMMIT, "{mode}: the owner was ignored");
        }
        let fsck = ostree_ok("fsck", &a, &[]);
        assert!(
            fsck.contains("completed successfully - no errors found"),
            "{mode}: {fsck}"
        );
        let (ok, report) = arbor_fsck_json(&a);
        assert!(
            ok && report["errors"].as_array().unwrap().is_empty(),
            "{mode}: {report}"
        );
        let (want_uid, want_gid) = if *mode == "bare-user-only" {
            ("0", "0")
        } else {
            ("1000", "1000")
        };
        for repo in [&a, &o] {
            let ls = ls_rc("ostree", repo);
            assert_eq!(ls_rc("arbor", repo), ls, "{mode}: ls -R -C differs");
            assert_eq!(ls.lines().count(), 20, "{mode}: {ls}");
            for line in ls.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(
                    (f[1], f[2]),
                    (want_uid, want_gid),
                    "{mode}: owner of {line:?}"
                );
            }
        }
    }

    // --canonical-permissions with a non-zero owner is refused by both.
    let a = tmp.path().join("arbor-archive");
    let o = tmp.path().join("ostree-archive");
    for owner in ["--owner-uid=5", "--owner-gid=5"] {
        let flags = ["-b", "canon", "--canonical-permissions", owner];
        let out = run_fail(
            arbor()
                .args(["commit", "--repo"])
                .arg(&a)
                .args(flags)
                .arg(&tree),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("canonical-permissions"),
            "arbor {owner}: {err}"
        );
        assert!(out.stdout.is_empty(), "arbor {owner}: printed a checksum");
        let out = run_fail(
            ostree()
                .arg("commit")
                .arg(format!("--repo={}", o.display()))
                .args(flags)
                .arg(format!("--tree=dir={}", tree.display())),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("canonical-permissions"),
            "ostree {owner}: {err}"
        );
    }
    assert_eq!(arbor_ok("refs", &a, &[]), format!("{VECTOR_REF}\n"));
    assert_eq!(ostree_ok("refs", &o, &[]), format!("{VECTOR_REF}\n"));
    // A zero owner is fine with --canonical-permissions, in both.
    let flags = [
        "-b",
        "canon",
        "--canonical-permissions",
        "--owner-uid=0",
        "--timestamp=@0",
    ];
    assert_eq!(
        arbor_commit(&a, &flags, &tree),
        ostree_commit(&o, &flags, &tree)
    );
}

/// `--add-metadata-string` keys stay in argument order (not sorted), with
/// repeats kept, and `ostree.ref-binding` last: the same bytes as ostree.
#[test]
fn metadata_order_matches_ostree() {
    require_ostree();
    let tmp = TempDir::new().unwrap();
    let tree = tmp.path().join("tree");
    make_vector_tree(&tree);
    let (a, o) = (tmp.path().join("arbor"), tmp.path().join("ostree"));
    arbor_init(&a, "archive");
    ostree_init(&o, "archive");
    let common = [
        "--subject=Metadata order",
        "--body=Keys in argument order.",
        "--timestamp=@1600000000",
        "--owner-uid=0",
        "--owner-gid=0",
    ];
    let unsorted = [
        "--add-metadata-string=zeta=1",
        "--add-metadata-string=alpha=2",
        "--add-metadata-string=version=3",
        "--add-metadata-string=mid=4",
        "--add-metadata-string=Beta=5",
        "--add-metadata-string=url=a=b",
        "--add-metadata-string=alpha=6",
    ];
    let mut sorted = unsorted;
    sorted.sort();
    let mut sums = Vec::new();
    for (branch, keys) in [("meta/unsorted", &unsorted), ("meta/sorted", &sorted)] {
        let b = format!("--branch={branch}");
        let args = [&[b.as_str()][..], &common, keys].concat();
        let ac = arbor_commit(&a, &args, &tree);
        let oc = ostree_commit(&o, &args, &tree);
        assert_eq!(ac, oc, "{branch}: arbor and ostree disagree");
        sums.push(ac);
    }
    // Order is significant, so a sorting implementation cannot pass above.
    assert_ne!(sums[0], sums[1]);
    ostree_ok("fsck", &a, &[]);
    for (key, want) in [("version", "'3'"), ("url", "'a=b'"), ("zeta", "'1'")] {
        let v = ostree_ok(
            "show",
            &a,
            &[&format!("--print-metadata-key={key}"), "meta/unsorted"],
        );
        assert_eq!(v.trim(), want, "{key}");
    }
    let show: serde_json::Value =
        serde_json::from_str(&arbor_ok("show", &o, &["--json", "meta/unsorted"])).unwrap();
    assert_eq!(show["checksum"], sums[0].as_str());
    assert_eq!(show["version"], "3");
}

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

/// With `core.collection-id` set, both tools bind commits to the
/// collection (`ostree.collection-binding`, after the ref binding), so the
/// checksums agree; a user-supplied binding is kept instead.
#[test]
fn collection_binding_matches_ostree() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    let ours = td.path().join("ours");
    let theirs = td.path().join("theirs");
    run_ok(
        arbor()
            .args([
                "init",
                "--mode",
                "archive",
                "--collection-id",
                "org.example.Os",
                "--repo",
            ])
            .arg(&ours),
    );
    run_ok(
        ostree()
            .args(["init", "--mode=archive", "--collection-id=org.example.Os"])
            .arg(format!("--repo={}", theirs.display())),
    );
    assert_eq!(
        std::fs::read_to_string(ours.join("config")).unwrap(),
        std::fs::read_to_string(theirs.join("config")).unwrap()
    );
    let a = arbor_commit_vector(&ours, &tree, &[]);
    let o = ostree_commit_vector(&theirs, &tree, &[]);
    assert_eq!(a, o, "collection-bound commits differ");
    assert_ne!(a, VECTOR_COMMIT, "no collection binding was added");
    let shown = ostree_ok(
        "show",
        &ours,
        &["--print-metadata-key=ostree.collection-binding", &a],
    );
    assert!(shown.contains("org.example.Os"), "{shown}");
    let extra = [
        "--add-metadata-string=ostree.collection-binding=org.other.Os",
        "-b",
        "other",
    ];
    assert_eq!(
        arbor_commit_vector(&ours, &tree, &extra),
        ostree_commit_vector(&theirs, &tree, &extra)
    );
    ostree_ok("fsck", &ours, &[]);
    let bad = run_fail(
        arbor()
            .args(["init", "--collection-id", "not-reverse-dns", "--repo"])
            .arg(td.path().join("bad")),
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("collection ID"));
}

/// A commit without a branch (ostree's --orphan) binds to no ref: ostree
/// writes an empty `ostree.ref-binding`, and so must we.
#[test]
fn orphan_commit_matches_ostree() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    let ours = td.path().join("ours");
    let theirs = td.path().join("theirs");
    arbor_init(&ours, "archive");
    ostree_init(&theirs, "archive");
    let args = [
        "--timestamp=@1577836800",
        "--owner-uid=0",
        "--owner-gid=0",
        "--subject=orphan",
    ];
    let a = arbor_commit(&ours, &args, &tree);
    let o = ostree_commit(&theirs, &[&args[..], &["--orphan"]].concat(), &tree);
    assert_eq!(a, o);
    assert!(
        dir_names(&ours.join("refs/heads")).is_empty(),
        "an orphan commit created a ref"
    );
}
