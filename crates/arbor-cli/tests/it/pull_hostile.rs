//! `arbor pull` against a hostile server: wrong, truncated, oversized and
//! inflating bodies, objects under another name, dirtrees with dangerous
//! names, unbound commits, downgrades, GPG-only remotes. Each attack is
//! refused naming the object; afterwards the repository is fsck-clean, the
//! ref untouched and nothing written outside it.

use std::path::Path;

use arbor_format::{ArchiveHeader, Commit, DirTree, DirTreeFile, Metadata};

use crate::hostile::{deflate_zeros, write_object};
use crate::pull_http::{
    assert_clean, assert_leftovers_taken_over, filez_path, object_files, some_file, staged, Fixture,
};
use crate::testserver::{Reply, TestServer};
use crate::util::*;
use crate::util::{pull_cmd as pull, rev_opt as rev};

/// Runs a pull that must fail; checks the error names `object` and that the
/// destination is clean, its ref unset, and nothing was written outside it.
#[track_caller]
pub(crate) fn refused(f: &Fixture, mode: &str, object: &str, expect: &str) {
    let name = format!("dest-{}", f.server.requests().len());
    let dest = f.dest(&name, mode, &["--set=n-network-retries=1"]);
    let outside_before = dir_names(f.td.path());
    // Any temporary file the pull made outside the repository would show.
    let tmpdir = f.path(&format!("{name}-TMPDIR"));
    std::fs::create_dir_all(&tmpdir).unwrap();
    let out = run_fail(pull(&dest, &["origin", "os/main"]).env("TMPDIR", &tmpdir));
    assert!(dir_names(&tmpdir).is_empty(), "wrote into $TMPDIR");
    std::fs::remove_dir(&tmpdir).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("REFUSED({mode}): {err}");
    assert!(err.contains(object), "error does not name {object}: {err}");
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    assert_eq!(rev(&dest, "origin:os/main"), None, "{err}");
    // Nothing reached objects/, and the refused object is not staged.
    assert!(object_files(&dest).is_empty(), "{:?}", object_files(&dest));
    assert!(
        !staged(&dest)
            .iter()
            .any(|(d, n)| format!("{d}{n}").starts_with(object)),
        "the refused object {object} was staged"
    );
    assert_clean(&dest, &err);
    assert_eq!(
        dir_names(f.td.path()),
        outside_before,
        "wrote outside the repo"
    );
    assert!(
        tree_size(&dest) < 4 << 20,
        "{} bytes in the repository after {expect}",
        tree_size(&dest)
    );
    assert_leftovers_taken_over(&dest, &f.path(&format!("{name}-empty")));
}

fn tree_size(p: &Path) -> u64 {
    let md = std::fs::symlink_metadata(p).unwrap();
    if md.is_dir() {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| tree_size(&e.unwrap().path()))
            .sum()
    } else {
        md.len()
    }
}

#[test]
fn hostile_object_bodies_are_refused() {
    let f = Fixture::new();
    let readme = some_file(&f.src, "os/main", "/README.txt");
    let deep = some_file(&f.src, "os/main", "/newdir/sub/deep.txt");
    let good = std::fs::read(f.src.join(filez_path(&readme))).unwrap();
    for mode in ["archive", "bare-user"] {
        // Wrong bytes: another object's valid .filez under this name.
        let other = std::fs::read(f.src.join(filez_path(&deep))).unwrap();
        f.server.set(&filez_path(&readme), Reply::Bytes(other));
        refused(&f, mode, &readme, "hashes to");
        // Flipped payload byte.
        let mut bad = good.clone();
        let last = bad.len() - 3;
        bad[last] ^= 0x55;
        f.server.set(&filez_path(&readme), Reply::Bytes(bad));
        refused(&f, mode, &readme, "hashes to");
        // A body cut short (retried, then reported).
        f.server.set(
            &filez_path(&readme),
            Reply::Truncated {
                declared: good.len() as u64,
                body: good[..good.len() / 2].to_vec(),
            },
        );
        refused(&f, mode, &readme, "failed after 2 attempts");
        // Far more than the object can be: a valid header, then an endless
        // stream of empty stored deflate blocks (no output, never ending).
        let (mut hdr, end) = ArchiveHeader::decode_prefixed(&good).unwrap();
        f.server.set(
            &filez_path(&readme),
            Reply::Flood {
                declared: None,
                prefix: good[..end].to_vec(),
                pattern: vec![0x00, 0x00, 0x00, 0xff, 0xff],
                len: 1 << 30,
            },
        );
        refused(&f, mode, &readme, "larger than");
        // A deflate bomb: the header says 2 bytes, the payload inflates to
        // 200 MiB.
        hdr.size = 2;
        let mut bomb = hdr.encode_prefixed();
        bomb.extend(deflate_zeros(200 << 20));
        f.server.set(&filez_path(&readme), Reply::Bytes(bomb));
        refused(&f, mode, &readme, "larger than");
        // A bomb inside the compressed-size bound: the header says 1 MiB,
        // ~0.5 MiB of deflate inflates to 512 MiB; inflating stops at 1 MiB.
        hdr.size = 1 << 20;
        let mut bomb = hdr.encode_prefixed();
        bomb.extend(deflate_zeros(512 << 20));
        assert!((bomb.len() as u64) < (1 << 20) + (1 << 20) / 1000 + 1024);
        f.server.set(&filez_path(&readme), Reply::Bytes(bomb));
        refused(&f, mode, &readme, "declared size");
        // A size near u64::MAX in the header.
        hdr.size = u64::MAX - 1;
        let mut huge = hdr.encode_prefixed();
        huge.extend_from_slice(&good[end..]);
        f.server.set(&filez_path(&readme), Reply::Bytes(huge));
        refused(&f, mode, &readme, "accepted");
        if mode == "archive" {
            // Bytes after the compressed content would be stored verbatim.
            let mut trailing = good.clone();
            trailing.extend_from_slice(b"ATTACKER-CONTROLLED-TRAILING-BYTES");
            f.server.set(&filez_path(&readme), Reply::Bytes(trailing));
            refused(&f, mode, &readme, "data after the end");
        }
        f.server
            .set(&filez_path(&readme), Reply::Bytes(good.clone()));
    }
    // Metadata: a commit announced as 1 GiB is refused before reading; one
    // streaming without end is cut at the metadata limit.
    let commit_path = format!("objects/{}/{}.commit", &f.v2[..2], &f.v2[2..]);
    f.server.set(
        &commit_path,
        Reply::Flood {
            declared: Some(1 << 30),
            prefix: vec![],
            pattern: vec![b'x'],
            len: 1 << 20,
        },
    );
    refused(&f, "bare-user", &f.v2, "more than");
    f.server.set(
        &commit_path,
        Reply::Flood {
            declared: None,
            prefix: vec![],
            pattern: vec![b'x'],
            len: 200 << 20,
        },
    );
    refused(&f, "bare-user", &f.v2, "larger than");
    // An object served under another checksum: v1's commit as v2's.
    let v1_bytes = std::fs::read(f.src.join(format!(
        "objects/{}/{}.commit",
        &f.v1[..2],
        &f.v1[2..]
    )))
    .unwrap();
    f.server.set(&commit_path, Reply::Bytes(v1_bytes));
    refused(&f, "bare-user", &f.v2, "hashes to");
}

/// Dirtrees naming `..`, `/x`, `a/b`, `.` or the empty string: the pull
/// refuses the dirtree (by checksum) before fetching what it references.
#[test]
fn hostile_dirtree_names_are_refused() {
    let f = Fixture::new();
    let readme = some_file(&f.src, "os/main", "/README.txt");
    let root_meta = {
        let show: serde_json::Value = serde_json::from_str(&run_ok(
            arbor()
                .args(["ls", "--json", "-R", "--repo"])
                .arg(&f.src)
                .args(["os/main"]),
        ))
        .unwrap();
        show.as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == "/")
            .and_then(|e| e["meta_checksum"].as_str())
            .unwrap()
            .to_string()
    };
    for name in ["..", "/x", "a/b", ".", ""] {
        let tree = DirTree {
            files: vec![DirTreeFile {
                name: name.into(),
                checksum: readme.parse().unwrap(),
            }],
            dirs: vec![],
        };
        let t = write_object(&f.src, "dirtree", &tree.encode());
        let commit = Commit {
            metadata: Metadata::new(),
            parent: None,
            related: vec![],
            subject: "hostile".into(),
            body: String::new(),
            timestamp: 1_800_000_000,
            root_tree: t,
            root_meta: root_meta.parse().unwrap(),
        };
        let c = write_object(&f.src, "commit", &commit.encode());
        std::fs::write(f.src.join("refs/heads/os/main"), format!("{c}\n")).unwrap();
        refused(&f, "bare-user", &t.to_hex(), "Invalid dirtree");
        let asked = f.server.requests();
        assert!(
            !asked.iter().any(|p| p.contains(&readme[2..])),
            "fetched a file of a refused dirtree"
        );
    }
}

/// A pull that would move a ref to an older commit is refused unless
/// --allow-downgrade.
#[test]
fn downgrade_is_refused_unless_allowed() {
    let f = Fixture::new();
    let dest = f.dest("dest", "bare-user", &[]);
    run_ok(&mut pull(&dest, &["origin", "os/main"]));
    assert_eq!(rev(&dest, "origin:os/main").as_deref(), Some(f.v2.as_str()));
    // The server now offers v1 (older) under the same ref.
    std::fs::write(f.src.join("refs/heads/os/main"), format!("{}\n", f.v1)).unwrap();
    let out = run_fail(&mut pull(&dest, &["origin", "os/main"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("downgrade") && err.contains(&f.v1), "{err}");
    assert_eq!(rev(&dest, "origin:os/main").as_deref(), Some(f.v2.as_str()));
    assert_clean(&dest, "after a refused downgrade");
    run_ok(&mut pull(
        &dest,
        &["--allow-downgrade", "origin", "os/main"],
    ));
    assert_eq!(rev(&dest, "origin:os/main").as_deref(), Some(f.v1.as_str()));
    assert_clean(&dest, "after an allowed downgrade");
}

/// Without `--no-gpg-verify` the remote asks for GPG, which arbor does not
/// check: refused with an explanation, never silently skipped.
#[test]
fn gpg_verification_is_not_silently_skipped() {
    let f = Fixture::new();
    let d = f.path("gpg");
    arbor_init(&d, "bare-user");
    run_ok(
        arbor()
            .args(["remote", "add", "--repo"])
            .arg(&d)
            .arg("origin")
            .arg(f.server.url()),
    );
    let out = run_fail(&mut pull(&d, &["origin", "os/main"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gpg-verify"), "{err}");
    assert!(f.server.requests().is_empty(), "fetched before refusing");
}

/// ostree's binding rules: a commit bound to `os/main` is refused under
/// another ref name; a remote with a collection ID needs commits bound to
/// that collection (and carrying ref bindings).
#[test]
fn ref_and_collection_bindings_are_enforced() {
    let f = Fixture::new();
    // The same (os/main-bound) commit offered as os/other.
    std::fs::create_dir_all(f.src.join("refs/heads/os")).unwrap();
    std::fs::write(f.src.join("refs/heads/os/other"), format!("{}\n", f.v2)).unwrap();
    let d = f.dest("bind", "bare-user", &[]);
    let out = run_fail(&mut pull(&d, &["origin", "os/other"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not bound to ref 'os/other'") && err.contains(&f.v2),
        "{err}"
    );
    assert!(object_files(&d).is_empty());
    run_ok(&mut pull(&d, &["origin", "os/main"]));
    // A collection ID on the remote: these commits have none.
    let c = f.dest("coll", "bare-user", &["--set=collection-id=org.example.Os"]);
    let out = run_fail(&mut pull(&c, &["origin", "os/main"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no collection binding") && err.contains(&f.v2),
        "{err}"
    );
    // A repository made with that collection ID binds its commits: accepted.
    let src2 = f.path("src-coll");
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
            .arg(&src2),
    );
    let cc = arbor_commit(&src2, &["-b", "os/main", "--timestamp=@1"], &f.tree_v1);
    let server2 = TestServer::start(&src2);
    let ok = f.path("coll-ok");
    arbor_init(&ok, "bare-user");
    run_ok(
        arbor()
            .args(["remote", "add", "--repo"])
            .arg(&ok)
            .args([
                "--no-gpg-verify",
                "--set=collection-id=org.example.Os",
                "origin",
            ])
            .arg(server2.url()),
    );
    run_ok(&mut pull(&ok, &["origin", "os/main"]));
    assert_eq!(rev(&ok, "origin:os/main").as_deref(), Some(cc.as_str()));
    // ... and refused by a remote expecting another collection.
    let other = f.path("coll-other");
    arbor_init(&other, "bare-user");
    run_ok(
        arbor()
            .args(["remote", "add", "--repo"])
            .arg(&other)
            .args([
                "--no-gpg-verify",
                "--set=collection-id=org.example.Other",
                "origin",
            ])
            .arg(server2.url()),
    );
    let out = run_fail(&mut pull(&other, &["origin", "os/main"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bound to collection 'org.example.Os'"),
        "{err}"
    );
    // A commit without any binding, from a collection-id remote: refused
    // (ostree requires ref bindings there), by checksum too.
    let nb = arbor_commit(
        &src2,
        &["-b", "os/unbound", "--no-bindings", "--timestamp=@2"],
        &f.tree_v1,
    );
    let out = run_fail(&mut pull(&ok, &["origin", &nb]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has no ref binding") && err.contains(&nb),
        "{err}"
    );
}
