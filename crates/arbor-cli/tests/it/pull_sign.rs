//! Pulls from remotes that require ed25519 signatures: signed commits and
//! summaries are accepted; unsigned, wrongly signed or tampered ones are
//! refused before anything of theirs is stored. The vector repository
//! (signed by the real ostree) is the peer.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::sign::{other_key, PUBLIC, SECRET};
use crate::testserver::{Reply, TestServer};
use crate::util::*;
use crate::util::{pull_cmd as pull, rev_opt as rev};

/// A fresh bare-user repository whose remote `origin` requires signatures
/// by `PUBLIC` (plus `extra` remote options).
fn verifying_dest(td: &TempDir, name: &str, url: &str, extra: &[&str]) -> PathBuf {
    let d = td.path().join(name);
    arbor_init(&d, "bare-user");
    run_ok(
        arbor()
            .args(["remote", "add", "--repo"])
            .arg(&d)
            .arg("--no-gpg-verify")
            .arg(format!("--sign-verify=ed25519=inline:{PUBLIC}"))
            .args(extra)
            .arg("origin")
            .arg(url),
    );
    d
}

#[track_caller]
fn refused(dest: &Path, args: &[&str], want: &str) -> String {
    // File objects in objects/ and in any staging directory left behind.
    let count_files = || -> usize {
        let in_fanout = |dir: PathBuf| -> usize {
            std::fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(|d| std::fs::read_dir(d.unwrap().path()).ok())
                        .flatten()
                        .filter(|f| {
                            let n = f.as_ref().unwrap().file_name();
                            n.to_string_lossy().ends_with(".file")
                        })
                        .count()
                })
                .unwrap_or(0)
        };
        let mut n = in_fanout(dest.join("objects"));
        if let Ok(rd) = std::fs::read_dir(dest.join("tmp")) {
            for e in rd {
                let e = e.unwrap();
                if e.file_name()
                    .to_string_lossy()
                    .starts_with("arbor-staging-")
                {
                    n += in_fanout(e.path());
                }
            }
        }
        n
    };
    let before_files = count_files();
    let out = run_fail(&mut pull(dest, args));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains(want), "expected {want:?} in: {err}");
    let (ok, report) = arbor_fsck_json(dest);
    assert!(ok, "{report}");
    // Whatever was refused, no file of its tree was fetched or kept.
    assert_eq!(
        count_files(),
        before_files,
        "file objects stored by a refused pull"
    );
    err
}

fn commit_objects(repo: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for d in std::fs::read_dir(repo.join("objects")).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            let n = f.unwrap().file_name().to_string_lossy().into_owned();
            if n.ends_with(".commit") {
                v.push(n);
            }
        }
    }
    v
}

/// The vector commit was signed by the real ostree with the RFC 8032 key:
/// arbor pulls it with that key configured, and refuses it with another.
#[test]
fn vector_signature_verifies_on_pull() {
    let td = TempDir::new().unwrap();
    let src = extract_vector_repo(td.path());
    let server = TestServer::start(&src);
    let good = verifying_dest(&td, "good", &server.url(), &[]);
    run_ok(&mut pull(&good, &["origin", VECTOR_REF]));
    assert_eq!(
        rev(&good, &format!("origin:{VECTOR_REF}")).as_deref(),
        Some(VECTOR_COMMIT)
    );
    assert!(arbor_fsck_json(&good).0);
    // The detached metadata (the signature) came along, byte for byte.
    let meta = format!(
        "objects/{}/{}.commitmeta",
        &VECTOR_COMMIT[..2],
        &VECTOR_COMMIT[2..]
    );
    assert_eq!(
        std::fs::read(good.join(&meta)).unwrap(),
        std::fs::read(src.join(&meta)).unwrap()
    );

    let (_, other_public) = other_key();
    let bad = td.path().join("bad");
    arbor_init(&bad, "bare-user");
    run_ok(
        arbor()
            .args(["remote", "add", "--repo"])
            .arg(&bad)
            .arg("--no-gpg-verify")
            .arg(format!("--sign-verify=ed25519=inline:{other_public}"))
            .arg("origin")
            .arg(server.url()),
    );
    let err = refused(&bad, &["origin", VECTOR_REF], VECTOR_COMMIT);
    assert!(
        err.contains("Can't verify commit: ed25519: Signature couldn't be verified"),
        "{err}"
    );
    assert!(
        commit_objects(&bad).is_empty(),
        "an unverified commit was stored"
    );
    assert_eq!(rev(&bad, &format!("origin:{VECTOR_REF}")), None);
}

#[test]
fn unsigned_or_wrongly_signed_commits_are_refused() {
    let td = TempDir::new().unwrap();
    let src = td.path().join("src");
    arbor_init(&src, "archive");
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    let base = ["-b", "os/main", "--owner-uid=0", "--owner-gid=0"];
    let signed = arbor_commit(
        &src,
        &[
            &base[..],
            &["--timestamp=@1600000000", "--sign-key", SECRET],
        ]
        .concat(),
        &tree,
    );
    std::fs::write(tree.join("new"), "v2\n").unwrap();
    let unsigned = arbor_commit(
        &src,
        &[&base[..], &["--timestamp=@1700000000"]].concat(),
        &tree,
    );
    let server = TestServer::start(&src);
    let dest = verifying_dest(&td, "dest", &server.url(), &[]);
    // Commit-only pulls verify too: the unsigned head is refused.
    let meta_only = verifying_dest(&td, "meta-only", &server.url(), &[]);
    refused(
        &meta_only,
        &["--commit-metadata-only", "origin", "os/main"],
        "without detached metadata",
    );
    assert!(commit_objects(&meta_only).is_empty());
    // The signed commit (by checksum) is accepted.
    run_ok(&mut pull(&dest, &["origin", &signed]));
    // The branch head is unsigned: refused, nothing of it stored.
    let err = refused(&dest, &["origin", "os/main"], "without detached metadata");
    assert!(err.contains(&unsigned), "{err}");
    assert_eq!(commit_objects(&dest).len(), 1);
    assert_eq!(rev(&dest, "origin:os/main"), None);
    // Signed with another key: refused.
    let (other_secret, _) = other_key();
    run_ok(
        arbor()
            .args(["sign", "--repo"])
            .arg(&src)
            .args([&unsigned, &other_secret]),
    );
    let err = refused(&dest, &["origin", "os/main"], &unsigned);
    assert!(
        err.contains("Can't verify commit: ed25519: Signature couldn't be verified"),
        "{err}"
    );
    // A detached metadata whose signature bytes were tampered with.
    run_ok(
        arbor()
            .args(["sign", "--repo"])
            .arg(&src)
            .args([&unsigned, SECRET]),
    );
    let meta_path = format!("objects/{}/{}.commitmeta", &unsigned[..2], &unsigned[2..]);
    // Every signature in it with one bit flipped.
    let mut meta =
        arbor_format::Metadata::decode(&std::fs::read(src.join(&meta_path)).unwrap()).unwrap();
    let Some(arbor_format::Value::BytesArray(mut sigs)) = meta.get("ostree.sign.ed25519").cloned()
    else {
        panic!("no signatures")
    };
    assert_eq!(sigs.len(), 2);
    for s in &mut sigs {
        s[10] ^= 0x01;
    }
    meta.set("ostree.sign.ed25519", arbor_format::Value::BytesArray(sigs));
    server.set(&meta_path, Reply::Bytes(meta.encode()));
    let err = refused(&dest, &["origin", "os/main"], &unsigned);
    assert!(
        err.contains("Can't verify commit: ed25519: Signature couldn't be verified"),
        "{err}"
    );
    assert_eq!(rev(&dest, "origin:os/main"), None);
    // Untampered, signed with the trusted key (among others): accepted.
    server.set(
        &meta_path,
        Reply::Bytes(std::fs::read(src.join(&meta_path)).unwrap()),
    );
    run_ok(&mut pull(&dest, &["origin", "os/main"]));
    assert_eq!(
        rev(&dest, "origin:os/main").as_deref(),
        Some(unsigned.as_str())
    );
    assert!(arbor_fsck_json(&dest).0);
    // Parents are verified too: a third, signed commit on top of a parent
    // whose signature the server no longer has is refused with --depth=1
    // (naming the parent) and accepted without it.
    std::fs::write(tree.join("third"), "v3\n").unwrap();
    let third = arbor_commit(
        &src,
        &[
            &base[..],
            &["--timestamp=@1800000000", "--sign-key", SECRET],
        ]
        .concat(),
        &tree,
    );
    server.set(&meta_path, Reply::Status(404));
    let deep = verifying_dest(&td, "deep", &server.url(), &[]);
    let err = refused(
        &deep,
        &["--depth=1", "origin", "os/main"],
        "without detached metadata",
    );
    assert!(err.contains(&unsigned), "{err}");
    assert_eq!(rev(&deep, "origin:os/main"), None);
    run_ok(&mut pull(&deep, &["origin", "os/main"]));
    assert_eq!(
        rev(&deep, "origin:os/main").as_deref(),
        Some(third.as_str())
    );
}

#[test]
fn summary_signatures_are_required_when_configured() {
    let td = TempDir::new().unwrap();
    let src = td.path().join("src");
    arbor_init(&src, "archive");
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    let c = arbor_commit(
        &src,
        &[
            "-b",
            "os/main",
            "--timestamp=@1600000000",
            "--sign-key",
            SECRET,
        ],
        &tree,
    );
    let server = TestServer::start(&src);
    let dest = verifying_dest(
        &td,
        "dest",
        &server.url(),
        &["--set=sign-verify-summary=true"],
    );
    // No summary at all.
    refused(
        &dest,
        &["origin", "os/main"],
        "but the remote has no summary",
    );
    // An unsigned summary.
    run_ok(arbor().args(["summary", "-u", "--repo"]).arg(&src));
    refused(&dest, &["origin", "os/main"], "no summary signatures found");
    // Signed by another key.
    let (other_secret, _) = other_key();
    run_ok(
        arbor()
            .args(["summary", "-u", "--repo"])
            .arg(&src)
            .args(["--sign-key", &other_secret]),
    );
    refused(
        &dest,
        &["origin", "os/main"],
        "Can't verify summary: ed25519: Signature couldn't be verified",
    );
    // Signed by the trusted key: the pull goes through the summary.
    run_ok(
        arbor()
            .args(["summary", "-u", "--repo"])
            .arg(&src)
            .args(["--sign-key", SECRET]),
    );
    run_ok(&mut pull(&dest, &["origin", "os/main"]));
    assert_eq!(rev(&dest, "origin:os/main").as_deref(), Some(c.as_str()));
    // A summary swapped for another (valid, unsigned-for) one is refused.
    let mut forged = std::fs::read(src.join("summary")).unwrap();
    let last = forged.len() - 1;
    forged[last - 10] ^= 0x01;
    server.set("summary", Reply::Bytes(forged));
    refused(
        &dest,
        &["origin", "os/main"],
        "Can't verify summary: ed25519: Signature couldn't be verified",
    );
}
