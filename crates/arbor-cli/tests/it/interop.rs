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
fn mode_needs_root(mode: &str) -> bool {
    mode == "bare"
}

/// Whether to skip `what` in `mode` (see [`needs_root`]).
pub(crate) fn skip_note(mode: &str, what: &str) -> bool {
    mode_needs_root(mode) && needs_root(&format!("{what} in {mode} mode"))
}

pub(crate) fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Makes the vector tree's successor: README modified, a file and a
/// directory added, `empty` and `empty-dir` removed, a mode changed.
pub(crate) fn make_second_tree(dest: &Path) {
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
pub(crate) const SECOND_ARGS: &[&str] = &[
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
        if !needs_root(&format!("a non -U ostree checkout in {mode} mode")) {
            let full = tmp.path().join(format!("co-{mode}"));
            ostree_ok("checkout", &repo, &[VECTOR_REF, s(&full)]);
            assert_same_tree(&tree, &full, keeps_xattrs(mode));
            if !keeps_xattrs(mode) {
                assert!(
                    user_xattrs(&full.join("xattr-file.txt")).is_empty(),
                    "{mode} kept xattrs"
                );
            }
        }
    }
}

pub(crate) fn ls_rc(tool: &str, repo: &Path) -> String {
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
        let root = !needs_root(&format!("checking ownership and xattrs in {mode} mode"));
        let user: &[&str] = if root { &[] } else { &["-U"] };
        arbor_ok("checkout", &repo, &[user, &[VECTOR_REF, s(&co)]].concat());
        assert_same_tree(&tree, &co, keeps_xattrs(mode) && root);
        // Hardlink checkouts where the mode allows them.
        let hl: Option<&[&str]> = match *mode {
            "bare" if root => Some(&["-H"]),
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
    let root = !needs_root("checking ownership and xattrs of an ostree-made repo");
    let user: &[&str] = if root { &[] } else { &["-U"] };
    arbor_ok("checkout", &repo, &[user, &[VECTOR_REF, s(&co)]].concat());
    assert_same_tree(&tree, &co, root);
    if root {
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
            if !needs_root("a root checkout of what ostree pulled") {
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
