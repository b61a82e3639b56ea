//! Commit-time compatibility with ostree beyond the plain vector commit:
//! owner overrides, metadata order, collection bindings, orphan commits.

use tempfile::TempDir;

use crate::interop::{ls_rc, skip_note};
use crate::util::*;

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
