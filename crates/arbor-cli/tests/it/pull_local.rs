//! `arbor pull-local` between repositories of every mode, with ostree's
//! repositories as sources and ostree's fsck as the judge of the result.

use std::path::Path;

use tempfile::TempDir;

use crate::util::*;

fn rev(repo: &Path, r: &str) -> String {
    run_ok(arbor().args(["rev-parse", "--repo"]).arg(repo).arg(r))
        .trim()
        .to_string()
}

/// `arbor pull-local --repo DEST [FLAGS] SRC [REFS]`; `args` holds both,
/// flags recognised by their leading `--`.
fn pull(dest: &Path, src: &Path, args: &[&str]) -> std::process::Command {
    let (flags, refs): (Vec<&str>, Vec<&str>) = args.iter().partition(|a| a.starts_with("--"));
    let mut c = arbor();
    c.args(["pull-local", "--repo"])
        .arg(dest)
        .args(flags)
        .arg(src)
        .args(refs);
    c
}

#[test]
fn pull_local_between_every_mode() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    let bare = !needs_root("pull-local from and to bare repositories");
    let modes: Vec<&str> = MODES
        .iter()
        .copied()
        .filter(|m| *m != "bare" || bare)
        .collect();
    for src_mode in &modes {
        let src = td.path().join(format!("src-{src_mode}"));
        ostree_init(&src, src_mode);
        // xattr-free, 0:0 content can live in every mode.
        let canon = ostree_commit(
            &src,
            &["-b", "canon", "--canonical-permissions", "--timestamp=@1"],
            &tree,
        );
        for dest_mode in &modes {
            let dest = td.path().join(format!("dest-{src_mode}-{dest_mode}"));
            arbor_init(&dest, dest_mode);
            let out = run_ok(&mut pull(&dest, &src, &["canon"]));
            assert!(out.contains("content objects imported"), "{out}");
            assert_eq!(rev(&dest, "canon"), canon, "{src_mode} -> {dest_mode}");
            run_ok(arbor().args(["fsck", "--repo"]).arg(&dest));
            run_ok(
                ostree()
                    .arg("fsck")
                    .arg(format!("--repo={}", dest.display())),
            );
            let co = td.path().join(format!("co-{src_mode}-{dest_mode}"));
            run_ok(
                arbor()
                    .args(["checkout", "-U", "--repo"])
                    .arg(&dest)
                    .arg("canon")
                    .arg(&co),
            );
            assert_same_tree(&tree, &co, false);
            // Nothing left to copy the second time.
            let again = run_ok(&mut pull(&dest, &src, &["canon"]));
            assert!(again.starts_with("0 metadata, 0 content"), "{again}");
        }
    }
}

#[test]
fn pull_local_keeps_xattrs_and_refuses_them_in_bare_user_only() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    let src = td.path().join("src");
    ostree_init(&src, "archive");
    let c = ostree_commit_vector(&src, &tree, &[]);
    let dest = td.path().join("bu");
    arbor_init(&dest, "bare-user");
    run_ok(&mut pull(&dest, &src, &[]));
    assert_eq!(rev(&dest, VECTOR_REF), c);
    let co = td.path().join("co");
    run_ok(
        arbor()
            .args(["checkout", "--repo"])
            .arg(&dest)
            .arg(VECTOR_REF)
            .arg(&co),
    );
    assert_same_tree(&tree, &co, true);
    let buo = td.path().join("buo");
    arbor_init(&buo, "bare-user-only");
    let out = run_fail(&mut pull(&buo, &src, &[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bare-user-only"), "{err}");
    assert!(dir_names(&buo.join("refs/heads")).is_empty());
    run_ok(arbor().args(["fsck", "--repo"]).arg(&buo));
}

#[test]
fn pull_local_verifies_every_object() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    for (what, ext) in [("file", "filez"), ("dirtree", "dirtree")] {
        let src = td.path().join(format!("src-{what}"));
        ostree_init(&src, "archive");
        let c = ostree_commit_vector(&src, &tree, &[]);
        // Corrupt one object of that type: flip its last byte.
        let listing = run_ok(
            ostree()
                .args(["ls", "-R", "-C"])
                .arg(format!("--repo={}", src.display()))
                .arg(&c),
        );
        let victim = match what {
            "file" => listing
                .lines()
                .find(|l| l.ends_with("/README.txt"))
                .unwrap()
                .split_whitespace()
                .nth(4)
                .unwrap()
                .to_string(),
            _ => listing
                .lines()
                .find(|l| l.ends_with(" /bin"))
                .unwrap()
                .split_whitespace()
                .nth(4)
                .unwrap()
                .to_string(),
        };
        let p = src
            .join("objects")
            .join(&victim[..2])
            .join(format!("{}.{ext}", &victim[2..]));
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&p, bytes).unwrap();
        let dest = td.path().join(format!("dest-{what}"));
        arbor_init(&dest, "bare-user");
        let out = run_fail(&mut pull(&dest, &src, &[]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&victim), "error does not name {victim}: {err}");
        assert!(
            dir_names(&dest.join("refs/heads")).is_empty(),
            "a ref was written"
        );
        let listing = run_ok(arbor().args(["fsck", "--json", "--repo"]).arg(&dest));
        assert!(listing.contains("\"errors\": []"), "{listing}");
        assert!(
            !std::fs::read_dir(dest.join("objects"))
                .unwrap()
                .any(|_| true),
            "objects were published"
        );
    }
}

#[test]
fn pull_local_depth_and_remote_refs() {
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    let src = td.path().join("src");
    arbor_init(&src, "archive");
    let c1 = arbor_commit(&src, &["-b", "main", "--timestamp=@1"], &tree);
    std::fs::write(tree.join("README.txt"), "v2\n").unwrap();
    let c2 = arbor_commit(&src, &["-b", "main", "--timestamp=@2"], &tree);
    let shallow = td.path().join("shallow");
    arbor_init(&shallow, "bare-user");
    run_ok(&mut pull(&shallow, &src, &["--remote=origin", "main"]));
    assert_eq!(rev(&shallow, "origin:main"), c2);
    let log = run_ok(
        arbor()
            .args(["log", "--repo"])
            .arg(&shallow)
            .arg("origin:main"),
    );
    assert!(
        log.contains("History beyond this commit not fetched"),
        "{log}"
    );
    run_ok(arbor().args(["fsck", "--repo"]).arg(&shallow));
    let full = td.path().join("full");
    arbor_init(&full, "bare-user");
    run_ok(&mut pull(&full, &src, &["--depth=-1", "main"]));
    assert_eq!(rev(&full, "main^"), c1);
    // Only ref names or checksums: refused before anything is copied.
    let empty = td.path().join("empty");
    arbor_init(&empty, "bare-user");
    let err = run_fail(&mut pull(&empty, &src, &["main^"]));
    assert!(String::from_utf8_lossy(&err.stderr).contains("main^"));
    assert!(std::fs::read_dir(empty.join("objects"))
        .unwrap()
        .next()
        .is_none());
    // A checksum is pulled without creating a ref.
    run_ok(&mut pull(&empty, &src, &[&c1]));
    assert!(dir_names(&empty.join("refs/heads")).is_empty());
    run_ok(arbor().args(["fsck", "--repo"]).arg(&empty));
}

/// Adds `src` to `dest` as remote `local` (`file://`, unsigned).
fn add_file_remote(dest: &Path, src: &Path) {
    run_ok(
        arbor()
            .args(["remote", "add", "--repo"])
            .arg(dest)
            .args(["--no-gpg-verify", "local"])
            .arg(format!("file://{}", src.display())),
    );
}

/// A refused pull left nothing: no ref, no object, fsck clean.
#[track_caller]
fn assert_untouched(dest: &Path) {
    assert!(
        dir_names(&dest.join("refs/heads")).is_empty(),
        "a ref was written"
    );
    assert!(
        dir_names(&dest.join("refs/remotes")).is_empty(),
        "a remote ref was written"
    );
    assert!(
        std::fs::read_dir(dest.join("objects"))
            .unwrap()
            .next()
            .is_none(),
        "objects were published"
    );
    let (ok, report) = arbor_fsck_json(dest);
    assert!(ok, "{report}");
}

/// A corrupt object of each kind in the source repository: `pull-local`
/// refuses it exactly as a pull of the same repository through a
/// `file://` remote does (one walker verifies both), naming the object.
#[test]
fn pull_local_refuses_a_corrupt_source_as_a_remote_pull_does() {
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    for ext in ["commit", "dirmeta", "dirtree", "filez"] {
        let src = td.path().join(format!("src-{ext}"));
        arbor_init(&src, "archive");
        arbor_commit(&src, &["-b", "main", "--timestamp=@1"], &tree);
        let victim_path = walk_files(&src.join("objects"))
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == ext))
            .unwrap();
        let victim = format!(
            "{}{}",
            victim_path
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap(),
            victim_path.file_stem().unwrap().to_str().unwrap()
        );
        let mut bytes = std::fs::read(&victim_path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&victim_path, bytes).unwrap();

        let local = td.path().join(format!("local-{ext}"));
        arbor_init(&local, "bare-user");
        let out = run_fail(&mut pull(&local, &src, &["main"]));
        let local_err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_untouched(&local);

        let remote = td.path().join(format!("remote-{ext}"));
        arbor_init(&remote, "bare-user");
        add_file_remote(&remote, &src);
        let out = run_fail(
            arbor()
                .args(["pull", "--repo"])
                .arg(&remote)
                .args(["local", "main"]),
        );
        let remote_err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_untouched(&remote);

        for err in [&local_err, &remote_err] {
            assert!(
                err.contains(&victim),
                "{ext}: does not name {victim}: {err}"
            );
        }
        if ext != "filez" {
            // The same verdict, word for word, but for where it came from.
            let want = format!("Corrupted {ext} object {victim} from ");
            let verdict = |e: &str| {
                e[e.find(&want)
                    .unwrap_or_else(|| panic!("{want:?} not in {e}"))..]
                    .replace("the source repository", "the remote")
            };
            assert_eq!(verdict(&local_err), verdict(&remote_err), "{ext}");
        }
    }
}

/// Every file under `dir`, recursively.
fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `pull-local` checks ref bindings as a remote pull does, and as ostree's
/// `pull-local` (a `file://` pull underneath) does: a commit bound to
/// `os/main` is refused under another name, and pulls under its own.
#[test]
fn pull_local_checks_ref_bindings_as_a_remote_pull_does() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    let src = td.path().join("src");
    arbor_init(&src, "archive");
    let c = arbor_commit(&src, &["-b", "os/main"], &tree);
    run_ok(
        arbor()
            .args(["refs", "--repo"])
            .arg(&src)
            .args(["--create", "other", &c]),
    );
    let want = "is not bound to ref 'other'";

    let local = td.path().join("local");
    arbor_init(&local, "bare-user");
    let out = run_fail(&mut pull(&local, &src, &["other"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(want) && err.contains(&c), "{err}");
    assert_untouched(&local);

    let remote = td.path().join("remote");
    arbor_init(&remote, "bare-user");
    add_file_remote(&remote, &src);
    let out = run_fail(
        arbor()
            .args(["pull", "--repo"])
            .arg(&remote)
            .args(["local", "other"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(want) && err.contains(&c), "{err}");
    assert_untouched(&remote);

    // ostree's verdict.
    let o = td.path().join("ostree-dest");
    ostree_init(&o, "bare-user");
    let out = run_fail(
        ostree()
            .arg("pull-local")
            .arg(format!("--repo={}", o.display()))
            .arg(&src)
            .arg("other"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ref binding"), "ostree: {err}");

    // Under the name it is bound to, and as a bare checksum, it pulls.
    run_ok(&mut pull(&local, &src, &["os/main"]));
    assert_eq!(rev(&local, "os/main"), c);
    run_ok(&mut pull(&local, &src, &[&c]));

    // --disable-verify-bindings lets both commands pull it under another
    // name, as it lets both of ostree's.
    let flag = "--disable-verify-bindings";
    run_ok(&mut pull(&local, &src, &[flag, "other"]));
    assert_eq!(rev(&local, "other"), c);
    run_ok(
        arbor()
            .args(["pull", "--repo"])
            .arg(&remote)
            .args([flag, "local", "other"]),
    );
    assert_eq!(rev(&remote, "local:other"), c);
    run_ok(arbor().args(["fsck", "--repo"]).arg(&remote));
    run_ok(
        ostree()
            .arg("pull-local")
            .arg(format!("--repo={}", o.display()))
            .arg(flag)
            .arg(&src)
            .arg("other"),
    );
    let o_remote = td.path().join("ostree-remote");
    ostree_init(&o_remote, "bare-user");
    run_ok(
        ostree()
            .args(["remote", "add", "--no-gpg-verify"])
            .arg(format!("--repo={}", o_remote.display()))
            .arg("local")
            .arg(format!("file://{}", src.display())),
    );
    let pull_o = |flags: &[&str]| {
        let mut cmd = ostree();
        cmd.arg("pull")
            .arg(format!("--repo={}", o_remote.display()))
            .args(flags)
            .args(["local", "other"]);
        cmd
    };
    let out = run_fail(&mut pull_o(&[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ref binding"), "ostree pull: {err}");
    run_ok(&mut pull_o(&[flag]));
    let o_rev = |repo: &Path, r: &str| {
        run_ok(
            ostree()
                .arg("rev-parse")
                .arg(format!("--repo={}", repo.display()))
                .arg(r),
        )
        .trim()
        .to_string()
    };
    assert_eq!(o_rev(&o, "other"), c);
    assert_eq!(o_rev(&o_remote, "local:other"), c);
}

/// A commit whose tree is 10,000 directories deep, written object by object
/// (no filesystem path that long is needed): `pull-local` and a `file://`
/// pull copy all of it; the walk is a queue, not a recursion.
#[test]
fn pull_local_and_file_pull_walk_a_10000_level_tree() {
    use arbor_format::{Commit, DirTree, DirTreeDir, DirTreeFile, Metadata};
    const DEPTH: usize = 10_000;
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("leaf"), "at the bottom\n").unwrap();
    let src = td.path().join("src");
    arbor_init(&src, "archive");
    arbor_commit(&src, &["-b", "small", "--no-bindings"], &tree);
    let ls: serde_json::Value = serde_json::from_str(&run_ok(
        arbor()
            .args(["ls", "--json", "-R", "--repo"])
            .arg(&src)
            .arg("small"),
    ))
    .unwrap();
    let entry = |path: &str, key: &str| -> arbor_format::Checksum {
        ls.as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == path)
            .and_then(|e| e[key].as_str())
            .unwrap()
            .parse()
            .unwrap()
    };
    let meta = entry("/", "meta_checksum");
    let leaf = entry("/leaf", "checksum");
    let mut t = crate::hostile::write_object(
        &src,
        "dirtree",
        &DirTree {
            files: vec![DirTreeFile {
                name: "leaf".into(),
                checksum: leaf,
            }],
            dirs: vec![],
        }
        .encode(),
    );
    for _ in 0..DEPTH {
        let dt = DirTree {
            files: vec![],
            dirs: vec![DirTreeDir {
                name: "d".into(),
                tree: t,
                meta,
            }],
        };
        t = crate::hostile::write_object(&src, "dirtree", &dt.encode());
    }
    let commit = Commit {
        metadata: Metadata::new(),
        parent: None,
        related: vec![],
        subject: "deep".into(),
        body: String::new(),
        timestamp: 1,
        root_tree: t,
        root_meta: meta,
    };
    let c = crate::hostile::write_object(&src, "commit", &commit.encode());
    std::fs::write(src.join("refs/heads/deep"), format!("{c}\n")).unwrap();

    let local = td.path().join("local");
    arbor_init(&local, "bare-user");
    let out = run_ok(&mut pull(&local, &src, &["--json", "deep"]));
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Every dirtree, the dirmeta and the commit; the one file.
    assert_eq!(stats["metadata_fetched"], DEPTH as u64 + 3, "{stats}");
    assert_eq!(stats["content_fetched"], 1, "{stats}");
    assert_eq!(rev(&local, "deep"), c.to_hex());

    let remote = td.path().join("remote");
    arbor_init(&remote, "bare-user");
    add_file_remote(&remote, &src);
    let out = run_ok(
        arbor()
            .args(["pull", "--json", "--repo"])
            .arg(&remote)
            .args(["local", "deep"]),
    );
    let remote_stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    for k in ["commits", "metadata_fetched", "content_fetched"] {
        assert_eq!(stats[k], remote_stats[k], "{k}");
    }
}

/// The file objects (`.file`) of repository `repo`.
fn file_objects(repo: &Path) -> Vec<std::path::PathBuf> {
    walk_files(&repo.join("objects"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "file"))
        .collect()
}

/// A commit complete in the destination is not walked again, as with
/// ostree: an object deleted behind its back stays missing. A
/// `state/C.commitpartial` marker makes the next pull walk it, repair it,
/// and remove the marker.
#[test]
fn pull_local_skips_complete_commits_and_repairs_partial_ones() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    let src = td.path().join("src");
    arbor_init(&src, "archive");
    let c = arbor_commit(&src, &["-b", "main"], &tree);
    let marker = format!("state/{c}.commitpartial");

    let dest = td.path().join("dest");
    arbor_init(&dest, "bare-user");
    run_ok(&mut pull(&dest, &src, &["main"]));
    let victim = file_objects(&dest).pop().expect("a file object");
    std::fs::remove_file(&victim).unwrap();
    run_ok(&mut pull(&dest, &src, &["main"]));
    assert!(!victim.exists(), "a complete commit was walked again");

    // ostree does the same.
    let o = td.path().join("ostree-dest");
    ostree_init(&o, "bare-user");
    let o_pull = || {
        let mut cmd = ostree();
        cmd.arg("pull-local")
            .arg(format!("--repo={}", o.display()))
            .arg(&src)
            .arg("main");
        cmd
    };
    run_ok(&mut o_pull());
    let o_victim = o.join(victim.strip_prefix(&dest).unwrap());
    std::fs::remove_file(&o_victim).unwrap();
    run_ok(&mut o_pull());
    assert!(!o_victim.exists(), "ostree walked a complete commit again");

    // The marker asks for a walk: the object comes back.
    std::fs::write(dest.join(&marker), "").unwrap();
    run_ok(&mut pull(&dest, &src, &["main"]));
    assert!(victim.exists(), "the partial commit was not repaired");
    assert!(!dest.join(&marker).exists(), "the marker stayed");
    run_ok(arbor().args(["fsck", "--repo"]).arg(&dest));
    std::fs::write(o.join(&marker), "").unwrap();
    run_ok(&mut o_pull());
    assert!(o_victim.exists() && !o.join(&marker).exists(), "ostree");
}

/// A ref name is read from the source's `refs/heads/` only, as ostree's
/// `pull-local` reads it: `origin/y` is not `refs/remotes/origin/y`. Full
/// checksums and unique prefixes still resolve (pulled under no ref).
#[test]
fn pull_local_reads_ref_names_from_refs_heads_only() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    let src = td.path().join("src");
    arbor_init(&src, "archive");
    let c = arbor_commit(&src, &["-b", "main", "--no-bindings"], &tree);
    std::fs::create_dir_all(src.join("refs/remotes/origin")).unwrap();
    std::fs::write(src.join("refs/remotes/origin/y"), format!("{c}\n")).unwrap();
    let want = "Refspec 'origin/y' not found";

    let dest = td.path().join("dest");
    arbor_init(&dest, "bare-user");
    let out = run_fail(&mut pull(&dest, &src, &["origin/y"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(want), "{err}");
    assert_untouched(&dest);

    let o = td.path().join("ostree-dest");
    ostree_init(&o, "bare-user");
    let out = run_fail(
        ostree()
            .arg("pull-local")
            .arg(format!("--repo={}", o.display()))
            .arg(&src)
            .arg("origin/y"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(want), "ostree: {err}");

    // Under refs/heads/ the same name pulls.
    std::fs::create_dir_all(src.join("refs/heads/origin")).unwrap();
    std::fs::write(src.join("refs/heads/origin/y"), format!("{c}\n")).unwrap();
    run_ok(&mut pull(&dest, &src, &["origin/y"]));
    assert_eq!(rev(&dest, "origin/y"), c);

    // A unique prefix pulls the commit, under no ref.
    let other = td.path().join("other");
    arbor_init(&other, "bare-user");
    run_ok(&mut pull(&other, &src, &[&c[..10]]));
    assert!(dir_names(&other.join("refs/heads")).is_empty());
    run_ok(arbor().args(["fsck", "--repo"]).arg(&other));
    let commit = other.join(format!("objects/{}/{}.commit", &c[..2], &c[2..]));
    assert!(commit.exists(), "{} missing", commit.display());
}
