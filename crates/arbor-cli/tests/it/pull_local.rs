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
