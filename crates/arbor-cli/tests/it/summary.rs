//! `summary -u`: byte-identical to `ostree summary -u` apart from the
//! generation time, usable by `ostree pull`, signed summaries that verify,
//! and crash safety of the `summary`/`summary.sig` pair.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use arbor_format::summary::{LAST_MODIFIED_KEY, MODE_KEY};
use arbor_format::{Summary, Value};
use arbor_fs::failpoint;
use arbor_repo::sign::{parse_public_key, verify_summary, TrustedKeys};
use tempfile::TempDir;

use crate::sign::other_key;
use crate::util::*;

const SECRET: &str =
    "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2DXWpgBgrEKt9VL/tPJZAc6DuFy89qmIyWvAhpo9wdRGg==";
const PUBLIC: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

fn trusted(public: &str) -> TrustedKeys {
    TrustedKeys::new(vec![parse_public_key(public).unwrap()]).unwrap()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn decode(repo: &Path) -> Summary {
    Summary::decode(&read(&repo.join("summary"))).unwrap()
}

/// A repository with several refs: the vector commit (with a version),
/// an orphan-like branch without version, and a nested ref name.
fn populated_repo(td: &TempDir, mode: &str) -> PathBuf {
    let tree = td.path().join("tree");
    if !tree.exists() {
        make_vector_tree(&tree);
    }
    let repo = td.path().join(format!("repo-{mode}"));
    arbor_init(&repo, mode);
    arbor_commit_vector(&repo, &tree, &[]);
    arbor_commit(&repo, &["-b", "zz/last", "--timestamp=@1700000000"], &tree);
    arbor_commit(
        &repo,
        &[
            "-b",
            "a-first",
            "--add-metadata-string=version=2.0-beta",
            "--timestamp=@1600000000",
        ],
        &tree,
    );
    // Remote refs are not listed (ostree skips them too).
    let c = arbor_ok("rev-parse", &repo, &["zz/last"]);
    arbor_ok("refs", &repo, &["--create", "origin:remote-ref", c.trim()]);
    repo
}

fn cp_a(from: &Path, to: &Path) {
    run_ok(std::process::Command::new("cp").arg("-a").arg(from).arg(to));
}

/// Our summary with their last-modified time must be their bytes.
#[track_caller]
fn assert_same_but_time(ours: &Summary, theirs_bytes: &[u8]) {
    let theirs = Summary::decode(theirs_bytes).unwrap();
    let mut ours = ours.clone();
    let t = theirs.metadata.get(LAST_MODIFIED_KEY).unwrap().clone();
    ours.metadata.set(LAST_MODIFIED_KEY, t);
    assert_eq!(ours, theirs);
    assert_eq!(ours.encode(), theirs_bytes);
}

#[test]
fn summary_is_ostree_summary_but_for_the_time() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let metadata = [
        "-m",
        "title='Example OS'",
        "-m",
        "answer=42",
        "-m",
        "ostree.summary.expires=uint64 1900000000",
        "-m",
        "flag=true",
    ];
    for mode in ["archive", "bare-user"] {
        let ours = populated_repo(&td, mode);
        let theirs = td.path().join(format!("theirs-{mode}"));
        cp_a(&ours, &theirs);
        arbor_ok("summary", &ours, &[&["-u"][..], &metadata].concat());
        ostree_ok("summary", &theirs, &[&["-u"][..], &metadata].concat());
        let s = decode(&ours);
        assert_eq!(s.refs.len(), 3);
        assert_eq!(s.refs[0].name, "a-first");
        assert_eq!(
            s.metadata.get_str(MODE_KEY),
            Some(if mode == "archive" {
                "archive-z2"
            } else {
                mode
            })
        );
        assert_same_but_time(&s, &read(&theirs.join("summary")));
        // ostree reads ours; our --view of theirs is ostree's --view.
        let view = ostree_ok("summary", &ours, &["--view"]);
        for r in &s.refs {
            assert!(view.contains(&format!("* {}\n", r.name)), "{view}");
            assert!(view.contains(&r.checksum.to_hex()), "{view}");
        }
        assert_eq!(
            arbor_ok("summary", &theirs, &["--view"]),
            ostree_ok("summary", &theirs, &["--view"])
        );
        let j: serde_json::Value =
            serde_json::from_str(&arbor_ok("summary", &ours, &["--view", "--json"])).unwrap();
        assert_eq!(j["refs"][1]["name"], VECTOR_REF);
        assert_eq!(j["refs"][1]["checksum"], VECTOR_COMMIT);
        assert_eq!(j["refs"][1]["version"], "1.0");
        assert_eq!(j["signatures"], 0);
    }
}

#[test]
fn collection_summary_matches_ostree() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    let ours = td.path().join("ours");
    run_ok(
        arbor()
            .args([
                "init",
                "--mode=archive",
                "--collection-id=org.example.Os",
                "--repo",
            ])
            .arg(&ours),
    );
    let c = arbor_commit_vector(&ours, &tree, &[]);
    arbor_commit(&ours, &["-b", "other", "--timestamp=@5"], &tree);
    for (coll, name) in [("org.other.Os", "foo"), ("org.example.Os", "mirrored")] {
        let d = ours.join("refs/mirrors").join(coll);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), format!("{c}\n")).unwrap();
    }
    let theirs = td.path().join("theirs");
    cp_a(&ours, &theirs);
    arbor_ok("summary", &ours, &["-u"]);
    ostree_ok("summary", &theirs, &["-u"]);
    // ostree also commits an `ostree-metadata` ref for peer-to-peer
    // discovery, which arbor does not write; otherwise identical.
    let mut t = decode(&theirs);
    t.refs.retain(|r| r.name != "ostree-metadata");
    let s = decode(&ours);
    let names: Vec<&str> = s.refs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [VECTOR_REF, "mirrored", "other"]);
    assert_same_but_time(&s, &t.encode());
    let view = ostree_ok("summary", &ours, &["--view"]);
    assert!(view.contains("* (org.other.Os, foo)"), "{view}");
    assert!(
        view.contains("Collection ID (ostree.summary.collection-id): org.example.Os"),
        "{view}"
    );
    assert_eq!(
        arbor_ok("summary", &theirs, &["--view"]),
        ostree_ok("summary", &theirs, &["--view"])
    );
}

#[test]
fn ostree_pulls_using_an_arbor_summary() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let server = populated_repo(&td, "archive");
    arbor_ok("summary", &server, &["-u", "--sign-key", SECRET]);
    let url = format!("file://{}", server.display());
    let client = td.path().join("client");
    ostree_init(&client, "bare-user");
    ostree_ok(
        "remote",
        &client,
        &["add", "--no-gpg-verify", "origin", &url],
    );
    // `remote refs` needs the summary.
    let refs = ostree_ok("remote", &client, &["refs", "origin"]);
    let mut listed: Vec<&str> = refs.lines().collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "origin:a-first",
            &*format!("origin:{VECTOR_REF}"),
            "origin:zz/last"
        ]
    );
    ostree_ok("pull", &client, &["origin", VECTOR_REF]);
    assert_eq!(
        ostree_ok("rev-parse", &client, &[&format!("origin:{VECTOR_REF}")]).trim(),
        VECTOR_COMMIT
    );
    // A mirror pull without refs takes them all from the summary.
    let mirror = td.path().join("mirror");
    ostree_init(&mirror, "archive");
    ostree_ok(
        "remote",
        &mirror,
        &["add", "--no-gpg-verify", "origin", &url],
    );
    ostree_ok("pull", &mirror, &["--mirror", "origin"]);
    let heads = ostree_ok("refs", &mirror, &[]);
    assert_eq!(heads.lines().count(), 3, "{heads}");
    ostree_ok("fsck", &mirror, &[]);
}

#[test]
fn signed_summary_verifies_and_unsigned_update_drops_the_signature() {
    let td = TempDir::new().unwrap();
    let repo = populated_repo(&td, "archive");
    let (other_sec, other_pub) = other_key();
    arbor_ok("summary", &repo, &["-u", "--sign-key", SECRET]);
    let summary = read(&repo.join("summary"));
    let sig = read(&repo.join("summary.sig"));
    verify_summary(&summary, Some(&sig), &trusted(PUBLIC)).unwrap();
    let e = verify_summary(&summary, Some(&sig), &trusted(&other_pub)).unwrap_err();
    assert!(format!("{e:#}").contains("couldn't be verified"), "{e:#}");
    let mut tampered = summary.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(verify_summary(&tampered, Some(&sig), &trusted(PUBLIC)).is_err());
    // Same times on both files, as ostree does for HTTP caches.
    let (m1, m2) = (
        std::fs::metadata(repo.join("summary")).unwrap(),
        std::fs::metadata(repo.join("summary.sig")).unwrap(),
    );
    assert_eq!(m1.modified().unwrap(), m2.modified().unwrap());
    // Two keys from a file: both verify.
    let keys = td.path().join("keys");
    std::fs::write(&keys, format!("{SECRET}\n{other_sec}\n")).unwrap();
    let out = arbor_ok(
        "summary",
        &repo,
        &["-u", "--json", "--keys-file", keys.to_str().unwrap()],
    );
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["signatures"], 2);
    assert_eq!(r["refs"], 3);
    let summary = read(&repo.join("summary"));
    let sig = read(&repo.join("summary.sig"));
    for k in [PUBLIC, other_pub.as_str()] {
        verify_summary(&summary, Some(&sig), &trusted(k)).unwrap();
    }
    let view: serde_json::Value =
        serde_json::from_str(&arbor_ok("summary", &repo, &["-v", "--json"])).unwrap();
    assert_eq!(view["signatures"], 2);
    // Unsigned update: the stale signature goes.
    arbor_ok("summary", &repo, &["-u"]);
    assert!(!repo.join("summary.sig").exists());
    let e = verify_summary(&read(&repo.join("summary")), None, &trusted(PUBLIC)).unwrap_err();
    assert!(
        format!("{e:#}").contains("no summary signatures found"),
        "{e:#}"
    );
    for bad in [
        &["-u", "--sign-key", "AAAA"][..],
        &["-u", "--sign-key", SECRET, "--sign-type", "dummy"],
        &["-u", "-m", "novalue"],
        &["-u", "-m", "k=bare"],
    ] {
        run_fail(arbor().args(["summary", "--repo"]).arg(&repo).args(bad));
    }
    run_fail(arbor().args(["summary", "--repo"]).arg(&repo));
    run_fail(
        arbor()
            .args(["summary", "-v", "--sign", SECRET, "--repo"])
            .arg(&repo),
    );
    assert_eq!(dir_names(&repo.join("tmp")), Vec::<String>::new());
}

fn update_with_failpoint(repo: &Path, args: &[&str], point: &str) {
    let out = arbor()
        .args(["summary", "--repo"])
        .arg(repo)
        .args(args)
        .env(failpoint::ENV, point)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{point}: not killed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn crashes_never_pair_a_summary_with_a_wrong_signature() {
    let td = TempDir::new().unwrap();
    let base = populated_repo(&td, "archive");
    arbor_ok("summary", &base, &["-u", "--sign-key", SECRET]);
    let (old_summary, old_sig) = (read(&base.join("summary")), read(&base.join("summary.sig")));
    // Every update below lists one more ref.
    let c = arbor_ok("rev-parse", &base, &[VECTOR_REF]);
    arbor_ok("refs", &base, &["--create", "new-ref", c.trim()]);
    let keys = trusted(PUBLIC);
    for point in failpoint::SUMMARY_ALL {
        for signed in [true, false] {
            if !signed && *point == failpoint::SUMMARY_BETWEEN_RENAMES {
                continue; // only signed updates rename twice
            }
            let what = format!("{point}, signed={signed}");
            let repo = td
                .path()
                .join(format!("crash-{}-{signed}", point.replace(':', "_")));
            cp_a(&base, &repo);
            let args: &[&str] = if signed {
                &["-u", "--sign-key", SECRET]
            } else {
                &["-u"]
            };
            update_with_failpoint(&repo, args, point);
            let summary = read(&repo.join("summary"));
            let sig = std::fs::read(repo.join("summary.sig")).ok();
            if *point == failpoint::SUMMARY_WRITTEN {
                // Nothing published: the old, matching pair.
                assert_eq!(summary, old_summary, "{what}");
                assert_eq!(sig.as_deref(), Some(&old_sig[..]), "{what}");
                verify_summary(&summary, sig.as_deref(), &keys).unwrap();
            } else {
                // The new summary beside the old signature, which does not
                // verify it: refused, never accepted.
                assert_ne!(summary, old_summary, "{what}");
                assert_eq!(sig.as_deref(), Some(&old_sig[..]), "{what}");
                assert!(
                    verify_summary(&summary, sig.as_deref(), &keys).is_err(),
                    "{what}"
                );
            }
            // The next update repairs everything and cleans up tmp/.
            arbor_ok("summary", &repo, args);
            let summary = read(&repo.join("summary"));
            assert_eq!(decode(&repo).refs.len(), 4, "{what}");
            if signed {
                let sig = read(&repo.join("summary.sig"));
                verify_summary(&summary, Some(&sig), &keys).unwrap();
            } else {
                assert!(!repo.join("summary.sig").exists(), "{what}");
            }
            assert_eq!(dir_names(&repo.join("tmp")), Vec::<String>::new(), "{what}");
        }
    }
}

#[test]
fn metadata_values_keep_their_types() {
    let td = TempDir::new().unwrap();
    let repo = populated_repo(&td, "archive");
    arbor_ok(
        "summary",
        &repo,
        &["-u", "-m", "s='x'", "-m", "t=uint64 7", "-m", "s='y'"],
    );
    let s = decode(&repo);
    // A repeated key keeps its last value, once.
    assert_eq!(s.metadata.get("s"), Some(&Value::Str("y".into())));
    assert_eq!(s.metadata.iter().filter(|(k, _)| *k == "s").count(), 1);
    assert_eq!(s.metadata.get("t"), Some(&Value::U64(7)));
}
