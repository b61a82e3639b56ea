//! Ed25519 commit signatures: the vector's signature (made by ostree
//! 2025.7) verifies, arbor reproduces it byte for byte, and every way a
//! signature or key can be wrong is refused with a clear message.

use std::path::{Path, PathBuf};

use arbor_format::{Metadata, Value};
use arbor_repo::sign::{key_base64, SigningKey, ED25519_KEY};
use tempfile::TempDir;

use crate::util::*;

/// RFC 8032 §7.1 TEST 1 in ostree's forms (spec §6.3).
pub const SECRET: &str =
    "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2DXWpgBgrEKt9VL/tPJZAc6DuFy89qmIyWvAhpo9wdRGg==";
pub const PUBLIC: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
const PUBLIC_HEX: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A second key pair: (secret in ostree's form, public base64).
pub fn other_key() -> (String, String) {
    let sk = SigningKey::from_bytes(&[7u8; 32]);
    (b64(&sk.to_keypair_bytes()), key_base64(&sk.verifying_key()))
}

fn commitmeta_path(repo: &Path, commit: &str) -> PathBuf {
    repo.join("objects")
        .join(&commit[..2])
        .join(format!("{}.commitmeta", &commit[2..]))
}

fn vector_commitmeta() -> Vec<u8> {
    std::fs::read(
        vectors()
            .join("objects")
            .join(format!("{VECTOR_COMMIT}.commitmeta")),
    )
    .unwrap()
}

/// The vector repository, writable, without its `.commitmeta`.
fn unsigned_vector_repo(td: &TempDir) -> PathBuf {
    let repo = extract_vector_repo(td.path());
    run_ok(
        std::process::Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(&repo),
    );
    std::fs::remove_file(commitmeta_path(&repo, VECTOR_COMMIT)).unwrap();
    repo
}

fn verify(repo: &Path, rev: &str, keys: &[&str]) -> std::process::Output {
    arbor()
        .args(["sign", "--verify", "--repo"])
        .arg(repo)
        .arg(rev)
        .args(keys)
        .output()
        .unwrap()
}

#[track_caller]
fn verify_fails_with(repo: &Path, rev: &str, keys: &[&str], want: &str) {
    let out = verify(repo, rev, keys);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "verification passed");
    assert!(err.contains(want), "stderr lacks {want:?}: {err}");
}

#[test]
fn vector_signature_verifies_with_the_test_key_only() {
    let td = TempDir::new().unwrap();
    let repo = extract_vector_repo(td.path());
    let out = verify(&repo, VECTOR_REF, &[PUBLIC]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("ed25519: Signature verified successfully with key '{PUBLIC_HEX}'\n")
    );
    // By checksum too, and with the right key among others.
    let (_, other_pub) = other_key();
    let out = verify(&repo, VECTOR_COMMIT, &[&other_pub, PUBLIC]);
    assert!(out.status.success(), "{out:?}");
    verify_fails_with(
        &repo,
        VECTOR_REF,
        &[&other_pub],
        "Signature couldn't be verified",
    );
}

#[test]
fn signing_reproduces_the_vector_commitmeta() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let repo = unsigned_vector_repo(&td);
    let meta = commitmeta_path(&repo, VECTOR_COMMIT);
    verify_fails_with(&repo, VECTOR_REF, &[PUBLIC], "without detached metadata");
    arbor_ok("sign", &repo, &[VECTOR_REF, SECRET]);
    // Ed25519 is deterministic: byte-identical to ostree's.
    assert_eq!(std::fs::read(&meta).unwrap(), vector_commitmeta());
    // Signing again with the same key adds nothing.
    arbor_ok("sign", &repo, &[VECTOR_COMMIT, SECRET]);
    assert_eq!(std::fs::read(&meta).unwrap(), vector_commitmeta());
    // A second key appends; both verify, other keys are kept.
    let (other_sec, other_pub) = other_key();
    arbor_ok("sign", &repo, &[VECTOR_REF, &other_sec]);
    let m = Metadata::decode(&std::fs::read(&meta).unwrap()).unwrap();
    let Some(Value::BytesArray(sigs)) = m.get(ED25519_KEY) else {
        panic!("no signatures: {m}")
    };
    assert_eq!(sigs.len(), 2);
    assert!(verify(&repo, VECTOR_REF, &[PUBLIC]).status.success());
    assert!(verify(&repo, VECTOR_REF, &[&other_pub]).status.success());
    // ostree ignores what it does not know in detached metadata.
    ostree_ok("fsck", &repo, &[]);
    let shown = ostree_ok("show", &repo, &[VECTOR_REF]);
    assert!(shown.contains(VECTOR_COMMIT), "{shown}");
    // Nothing of arbor's left behind in tmp/ (ostree show adds its cache/).
    let left: Vec<String> = dir_names(&repo.join("tmp"))
        .into_iter()
        .filter(|n| n.starts_with("arbor"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}

#[test]
fn signing_keeps_other_detached_metadata() {
    let td = TempDir::new().unwrap();
    let repo = unsigned_vector_repo(&td);
    let meta = commitmeta_path(&repo, VECTOR_COMMIT);
    let mut m = Metadata::new();
    m.push("example.note", Value::Str("kept".into()));
    std::fs::write(&meta, m.encode()).unwrap();
    arbor_ok("sign", &repo, &[VECTOR_REF, SECRET]);
    let back = Metadata::decode(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(
        back.0[0],
        ("example.note".into(), Value::Str("kept".into()))
    );
    assert!(verify(&repo, VECTOR_REF, &[PUBLIC]).status.success());
}

#[test]
fn broken_signatures_are_refused() {
    let td = TempDir::new().unwrap();
    let repo = unsigned_vector_repo(&td);
    let meta = commitmeta_path(&repo, VECTOR_COMMIT);
    // Detached metadata without the signature key.
    let mut m = Metadata::new();
    m.push("example.note", Value::Str("x".into()));
    std::fs::write(&meta, m.encode()).unwrap();
    verify_fails_with(&repo, VECTOR_REF, &[PUBLIC], "No signatures found");
    // An empty file means no detached metadata.
    std::fs::write(&meta, b"").unwrap();
    verify_fails_with(&repo, VECTOR_REF, &[PUBLIC], "without detached metadata");
    // One flipped bit in the signature.
    let good = vector_commitmeta();
    for pos in [0x18, 0x18 + 63] {
        let mut bad = good.clone();
        bad[pos] ^= 1;
        std::fs::write(&meta, &bad).unwrap();
        verify_fails_with(
            &repo,
            VECTOR_REF,
            &[PUBLIC],
            "Signature couldn't be verified",
        );
    }
    // A 63-byte element.
    let Some(Value::BytesArray(sigs)) = Metadata::decode(&good).unwrap().get(ED25519_KEY).cloned()
    else {
        panic!()
    };
    let mut short = Metadata::new();
    short.push(ED25519_KEY, Value::BytesArray(vec![sigs[0][..63].to_vec()]));
    std::fs::write(&meta, short.encode()).unwrap();
    verify_fails_with(
        &repo,
        VECTOR_REF,
        &[PUBLIC],
        "Invalid signature length of 63",
    );
    // The signature of another commit does not carry over.
    std::fs::write(&meta, &good).unwrap();
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    let c = arbor_commit(&repo, &["-b", "other", "--timestamp=@1"], &tree);
    std::fs::copy(&meta, commitmeta_path(&repo, &c)).unwrap();
    verify_fails_with(&repo, "other", &[PUBLIC], "Signature couldn't be verified");
}

#[test]
fn bad_key_inputs_are_explained() {
    let td = TempDir::new().unwrap();
    let repo = unsigned_vector_repo(&td);
    let mismatched = {
        let mut kp = SigningKey::from_bytes(&[7u8; 32]).to_keypair_bytes();
        kp[63] ^= 1;
        b64(&kp)
    };
    let empty_line = td.path().join("keys-empty-line");
    std::fs::write(&empty_line, format!("{SECRET}\n\n")).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["sign".into(), VECTOR_REF.into(), "@@@".into()],
            "not valid base64",
        ),
        (
            vec!["sign".into(), VECTOR_REF.into(), PUBLIC.into()],
            "expected 64 bytes",
        ),
        (
            vec!["sign".into(), VECTOR_REF.into(), mismatched],
            "public half does not match its seed",
        ),
        (
            vec![
                "sign".into(),
                "--verify".into(),
                VECTOR_REF.into(),
                SECRET.into(),
            ],
            "expected 32 bytes, got 64",
        ),
        (
            vec![
                "sign".into(),
                "--keys-file".into(),
                empty_line.display().to_string(),
                VECTOR_REF.into(),
            ],
            "Line 2: empty line",
        ),
        (
            vec![
                "sign".into(),
                "--sign-type=dummy".into(),
                VECTOR_REF.into(),
                SECRET.into(),
            ],
            "not implemented",
        ),
        (
            vec!["sign".into(), VECTOR_REF.into()],
            "Need at least one KEY",
        ),
        (
            vec!["sign".into(), "no/such/ref".into(), SECRET.into()],
            "not found",
        ),
    ];
    for (args, want) in cases {
        let (sub, rest) = args.split_first().unwrap();
        let out = run_fail(arbor().arg(sub).arg("--repo").arg(&repo).args(rest));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: stderr lacks {want:?}: {err}");
    }
    let e = String::from_utf8_lossy(
        &run_fail(
            arbor()
                .args(["sign", "--repo"])
                .arg(&repo)
                .arg("--keys-file")
                .arg(&empty_line)
                .arg(VECTOR_REF),
        )
        .stderr,
    )
    .into_owned();
    assert!(e.contains("keys-empty-line"), "file not named: {e}");
    // Nothing was signed by any of the failed attempts.
    assert!(!commitmeta_path(&repo, VECTOR_COMMIT).exists());
}

#[test]
fn key_files_and_trust_store_directories() {
    let td = TempDir::new().unwrap();
    let repo = unsigned_vector_repo(&td);
    let (other_sec, other_pub) = other_key();
    let secrets = td.path().join("secret.keys");
    std::fs::write(&secrets, format!("{SECRET}\n{other_sec}")).unwrap();
    run_ok(
        arbor()
            .args(["sign", "--repo"])
            .arg(&repo)
            .arg("--keys-file")
            .arg(&secrets)
            .arg(VECTOR_REF),
    );
    let publics = td.path().join("public.keys");
    std::fs::write(&publics, format!("{other_pub}\n")).unwrap();
    let out = run_ok(
        arbor()
            .args(["sign", "--verify", "--repo"])
            .arg(&repo)
            .arg("--keys-file")
            .arg(&publics)
            .arg(VECTOR_REF),
    );
    assert!(out.contains("verified successfully"), "{out}");
    // --keys-dir: trusted.ed25519.d/ minus revoked.ed25519.
    let dir = td.path().join("trust");
    std::fs::create_dir_all(dir.join("trusted.ed25519.d")).unwrap();
    std::fs::write(dir.join("trusted.ed25519.d/a"), format!("{PUBLIC}\n")).unwrap();
    let by_dir = |repo: &Path| {
        arbor()
            .args(["sign", "--verify", "--repo"])
            .arg(repo)
            .arg("--keys-dir")
            .arg(&dir)
            .arg(VECTOR_REF)
            .output()
            .unwrap()
    };
    let out = by_dir(&repo);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(PUBLIC_HEX));
    std::fs::write(dir.join("revoked.ed25519"), format!("{PUBLIC}\n")).unwrap();
    assert!(!by_dir(&repo).status.success());
}

#[test]
fn commit_with_sign_key_publishes_a_signed_commit() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    for mode in ["archive", "bare-user"] {
        let repo = td.path().join(mode);
        arbor_init(&repo, mode);
        let c = arbor_commit_vector(&repo, &tree, &["--sign-key", SECRET]);
        assert_eq!(c, VECTOR_COMMIT);
        assert_eq!(
            std::fs::read(commitmeta_path(&repo, &c)).unwrap(),
            vector_commitmeta(),
            "{mode}"
        );
        assert!(verify(&repo, VECTOR_REF, &[PUBLIC]).status.success());
        ostree_ok("fsck", &repo, &[]);
        // Committing the same orphan commit again adds only new signatures.
        let (other_sec, _) = other_key();
        let orphan = &VECTOR_COMMIT_ARGS[1..];
        let c1 = arbor_commit(&repo, &[orphan, &["--sign", SECRET]].concat(), &tree);
        let c2 = arbor_commit(
            &repo,
            &[orphan, &["--sign", SECRET, "--sign", &other_sec]].concat(),
            &tree,
        );
        assert_eq!(c1, c2);
        let m = Metadata::decode(&std::fs::read(commitmeta_path(&repo, &c2)).unwrap()).unwrap();
        let Some(Value::BytesArray(sigs)) = m.get(ED25519_KEY) else {
            panic!()
        };
        assert_eq!(sigs.len(), 2, "{mode}");
    }
    // A bad key or type fails before anything is written.
    let repo = td.path().join("archive2");
    arbor_init(&repo, "archive");
    for args in [
        vec!["--sign-key", "AAAA"],
        vec!["--sign-key", SECRET, "--sign-type", "dummy"],
    ] {
        run_fail(
            arbor()
                .args(["commit", "--repo"])
                .arg(&repo)
                .args(VECTOR_COMMIT_ARGS)
                .args(&args)
                .arg(&tree),
        );
    }
    assert_eq!(dir_names(&repo.join("refs/heads")), Vec::<String>::new());
}
