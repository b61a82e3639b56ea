//! Ed25519 signatures, compatible with ostree's "signapi" (`ostree sign`).
//!
//! * A commit is signed over the exact bytes of its `.commit` object; the
//!   64-byte signatures are kept in the commit's detached metadata
//!   (`.commitmeta`, an `a{sv}`) under [`ED25519_KEY`] as an `aay`.
//! * A summary is signed over the exact bytes of `summary`; `summary.sig`
//!   is an `a{sv}` with the same key (see [`crate::summary`]).
//! * Keys use ostree's text forms (see [`parse_secret_key`],
//!   [`parse_public_key`], [`read_public_keys_file`]).
//! * Verification succeeds if any signature verifies with any trusted,
//!   non-revoked key ([`verify_commit`], [`verify_summary`]); which keys
//!   are trusted for a remote follows ostree's remote options
//!   ([`TrustedKeys::from_remote_config`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arbor_format::{Checksum, Metadata, ObjectType, Value};
use fn_error_context::context;

mod ed25519;
mod keys;
pub use ed25519::{SigningKey, VerifyingKey, SIGNATURE_LEN};
pub use keys::{
    check_sign_type, key_base64, key_hex, parse_public_key, parse_public_keys, parse_secret_key,
    parse_secret_keys, read_public_keys_file, read_secret_keys_file,
};

use crate::repo::{Repo, RepoLock};
use crate::txn::Transaction;

/// Detached-metadata (and `summary.sig`) key of Ed25519 signatures (`aay`).
pub const ED25519_KEY: &str = "ostree.sign.ed25519";
/// The only signature type arbor implements (ostree's name for it).
pub const SIGN_TYPE_ED25519: &str = "ed25519";
/// Remote option enabling commit signature verification.
pub const SIGN_VERIFY: &str = "sign-verify";
/// Remote option enabling `summary.sig` verification.
pub const SIGN_VERIFY_SUMMARY: &str = "sign-verify-summary";
/// Remote option: an inline base64 public key.
pub const VERIFICATION_KEY: &str = "verification-ed25519-key";
/// Remote option: a file of base64 public keys.
pub const VERIFICATION_FILE: &str = "verification-ed25519-file";
/// Directories searched for `trusted.ed25519[.d]` and `revoked.ed25519[.d]`
/// when verification is on but the remote names no key (as ostree).
pub const SYSTEM_KEY_DIRS: &[&str] = &["/etc/ostree", "/usr/share/ostree"];
/// Lock serialising read-modify-write of detached metadata among arbor
/// processes, so two concurrent signers cannot lose each other's signature.
const COMMITMETA_LOCK: &str = ".arbor-commitmeta-lock";

/// Why a signature check failed; callers (pull) may branch on it. The
/// messages are ostree's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The commit has no (or empty) detached metadata.
    #[error("Can't verify commit without detached metadata")]
    NoDetachedMetadata,
    /// Summary verification is on but the server has no `summary.sig`.
    #[error("Signature verification enabled, but no summary signatures found (use sign-verify-summary=false in remote config to disable)")]
    NoSummarySignatures,
    /// No `ostree.sign.ed25519` array (or an empty one).
    #[error("No signatures found")]
    NoSignatures,
    /// An element of the signature array is not 64 bytes.
    #[error("Invalid signature length of {0} bytes, expected 64")]
    BadSignatureLength(usize),
    /// No signature verified with any trusted key.
    #[error("ed25519: Signature couldn't be verified {}", describe_tried(.0))]
    NotVerified(Vec<String>),
}

/// ostree lists at most three failed (signature, key) pairs.
fn describe_tried(tried: &[String]) -> String {
    if tried.len() > 3 {
        format!("; tried {} keys", tried.len())
    } else {
        let keys: Vec<String> = tried.iter().map(|k| format!("key '{k}'")).collect();
        format!("with: {}", keys.join("; "))
    }
}

/// Signs `data` (pure Ed25519, RFC 8032; deterministic).
pub fn sign_bytes(data: &[u8], key: &SigningKey) -> [u8; SIGNATURE_LEN] {
    key.sign(data)
}

/// Adds `signature` to the [`ED25519_KEY`] array of `meta`, keeping every
/// other entry and its order. Returns false, changing nothing, if the
/// identical signature is already there: Ed25519 is deterministic, so that
/// means the same key signed the same bytes before (ostree would append a
/// duplicate). Errors if the key holds something other than an `aay`.
pub fn add_signature(meta: &mut Metadata, signature: &[u8; SIGNATURE_LEN]) -> Result<bool> {
    match meta.0.iter_mut().find(|(k, _)| k == ED25519_KEY) {
        Some((_, Value::BytesArray(sigs))) => {
            if sigs.iter().any(|s| s.as_slice() == signature) {
                return Ok(false);
            }
            sigs.push(signature.to_vec());
        }
        Some((_, other)) => bail!(
            "Existing {ED25519_KEY} has type '{}', expected 'aay'",
            other.type_str()
        ),
        None => meta.push(ED25519_KEY, Value::BytesArray(vec![signature.to_vec()])),
    }
    Ok(true)
}

/// Signs `data` with every key into `meta`; returns how many signatures
/// were new.
pub fn add_signatures(meta: &mut Metadata, data: &[u8], keys: &[SigningKey]) -> Result<usize> {
    let mut added = 0;
    for k in keys {
        if add_signature(meta, &sign_bytes(data, k))? {
            added += 1;
        }
    }
    Ok(added)
}

/// Stages, in `txn`, the detached metadata of `commit` with signatures by
/// `keys` over `commit_bytes` added to whatever detached metadata the
/// repository already has. Returns how many signatures were new.
pub(crate) fn stage_commit_signatures(
    txn: &Transaction<'_>,
    commit: &Checksum,
    commit_bytes: &[u8],
    keys: &[SigningKey],
) -> Result<usize> {
    let mut meta = crate::objects::load_commitmeta(txn.repo(), commit)?.unwrap_or_default();
    let added = add_signatures(&mut meta, commit_bytes, keys)?;
    if added > 0 {
        txn.write_commitmeta(commit, &meta.encode())?;
    }
    Ok(added)
}

/// Signs a commit with one key; see [`sign_commit_with_keys`].
pub fn sign_commit(repo: &RepoLock<'_>, commit: &Checksum, key: &SigningKey) -> Result<bool> {
    Ok(sign_commit_with_keys(repo, commit, std::slice::from_ref(key))? > 0)
}

/// Signs the exact bytes of a commit object with each key and records the
/// signatures in its detached metadata, keeping what is already there (a
/// signature already present is not added twice). Returns how many
/// signatures were added.
///
/// Crash guarantee: the new `.commitmeta` is written through a
/// [`Transaction`] (staged, synced, renamed over the old one, synced), so
/// after a crash it is the old or the new file, complete. Concurrent arbor
/// signers are serialised by a lock, so none loses another's signature.
#[context("Signing commit {commit}")]
pub fn sign_commit_with_keys(
    repo: &RepoLock<'_>,
    commit: &Checksum,
    keys: &[SigningKey],
) -> Result<usize> {
    let bytes = crate::objects::read_metadata(repo, ObjectType::Commit, commit)?;
    // A damaged commit would get a signature no client can verify.
    if Checksum::digest(&bytes) != *commit {
        return Err(crate::RepoError::CorruptObject {
            objtype: ObjectType::Commit,
            checksum: *commit,
            reason: "content does not match its checksum".into(),
        }
        .into());
    }
    let txn = Transaction::begin(repo)?;
    let _lock = repo.section_lock(COMMITMETA_LOCK)?;
    let added = stage_commit_signatures(&txn, commit, &bytes, keys)?;
    if added > 0 {
        txn.commit(&[])?;
    }
    Ok(added)
}

/// Public keys a client trusts, minus revoked ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: Vec<VerifyingKey>,
    revoked: Vec<VerifyingKey>,
}

/// How a `sign-verify`-style option reads (ostree's `verifiers_from_config`).
#[derive(Debug, PartialEq, Eq)]
enum VerifySetting {
    /// Absent, empty or false.
    Off,
    /// `true`/`1`: use the configured keys, else the system trust store.
    Any,
    /// A list of types: each requires keys configured on the remote.
    Required,
}

fn parse_verify_setting(option: &str, value: Option<&str>) -> Result<VerifySetting> {
    Ok(match value.map(str::trim) {
        None | Some("") | Some("false") | Some("0") => VerifySetting::Off,
        Some("true") | Some("1") => VerifySetting::Any,
        Some(list) => {
            let types: Vec<&str> = list
                .split(';')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            if types.is_empty() {
                return Ok(VerifySetting::Off);
            }
            for t in types {
                check_sign_type(t).with_context(|| format!("Reading {option}={list}"))?;
            }
            VerifySetting::Required
        }
    })
}

impl TrustedKeys {
    /// Trusts exactly `keys` (at least one).
    pub fn new(keys: Vec<VerifyingKey>) -> Result<TrustedKeys> {
        if keys.is_empty() {
            bail!("No ed25519 public keys given");
        }
        Ok(TrustedKeys {
            keys,
            revoked: Vec::new(),
        })
    }

    /// The trusted keys that are not revoked, in load order.
    pub fn keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.iter().filter(|k| !self.revoked.contains(k))
    }

    /// Keys for verifying commits pulled from `remote`, from its
    /// `[remote "NAME"]` options as ostree reads them:
    ///
    /// * `sign-verify` absent, empty, `false` or `0`: `None`.
    /// * `sign-verify=true` (or `1`): the keys of `verification-ed25519-key`
    ///   (inline base64) and `verification-ed25519-file` (path), both if
    ///   both are set; with neither, the system trust store
    ///   ([`SYSTEM_KEY_DIRS`]), minus its revoked keys.
    /// * `sign-verify=ed25519` (a `;`-separated list of types): the remote
    ///   must configure keys itself; other types are refused.
    ///
    /// Errors if verification is on and no key can be loaded, or if a
    /// configured key or file is invalid.
    #[context("Reading signature verification keys of remote {remote}")]
    pub fn from_remote_config(repo: &Repo, remote: &str) -> Result<Option<TrustedKeys>> {
        Self::from_remote_option(repo, remote, SIGN_VERIFY)
    }

    /// Like [`TrustedKeys::from_remote_config`] for `summary.sig`, driven
    /// by `sign-verify-summary` (same keys, same rules).
    #[context("Reading summary verification keys of remote {remote}")]
    pub fn from_remote_summary_config(repo: &Repo, remote: &str) -> Result<Option<TrustedKeys>> {
        Self::from_remote_option(repo, remote, SIGN_VERIFY_SUMMARY)
    }

    fn from_remote_option(repo: &Repo, remote: &str, option: &str) -> Result<Option<TrustedKeys>> {
        let r = crate::remotes::get_remote(repo, remote)?;
        let get = |key: &str| {
            r.options
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let setting = parse_verify_setting(option, get(option))?;
        if setting == VerifySetting::Off {
            return Ok(None);
        }
        let mut keys = Vec::new();
        if let Some(file) = get(VERIFICATION_FILE) {
            keys.extend(read_public_keys_file(Path::new(file))?);
        }
        if let Some(inline) = get(VERIFICATION_KEY) {
            keys.push(
                parse_public_key(inline).with_context(|| format!("Reading {VERIFICATION_KEY}"))?,
            );
        }
        if !keys.is_empty() {
            return TrustedKeys::new(keys).map(Some);
        }
        match setting {
            VerifySetting::Required => bail!(
                "No keys found for required signapi type ed25519 ({option} is set: configure {VERIFICATION_KEY} or {VERIFICATION_FILE})"
            ),
            _ => {
                let dirs: Vec<PathBuf> = SYSTEM_KEY_DIRS.iter().map(PathBuf::from).collect();
                TrustedKeys::from_key_dirs(&dirs)
                    .with_context(|| format!("{option}=true and the remote configures no key"))
                    .map(Some)
            }
        }
    }

    /// The trust store under each of `dirs`: keys from `trusted.ed25519`
    /// and every file in `trusted.ed25519.d/`, minus those in
    /// `revoked.ed25519` and `revoked.ed25519.d/`. As ostree, unreadable
    /// or invalid files are skipped (logged at debug level); it is an
    /// error if no trusted key at all is found.
    pub fn from_key_dirs(dirs: &[PathBuf]) -> Result<TrustedKeys> {
        let keys = load_key_dirs(dirs, "trusted.ed25519");
        if keys.is_empty() {
            bail!(
                "No ed25519 keys found in {}",
                dirs.iter()
                    .map(|d| format!("{}/trusted.ed25519[.d]", d.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(TrustedKeys {
            keys,
            revoked: load_key_dirs(dirs, "revoked.ed25519"),
        })
    }
}

/// Whether `remote` asks for `summary.sig` verification
/// (`sign-verify-summary` set to `true` or a list of types).
pub fn sign_verify_summary(repo: &Repo, remote: &str) -> Result<bool> {
    let r = crate::remotes::get_remote(repo, remote)?;
    let value = r
        .options
        .iter()
        .rev()
        .find(|(k, _)| k == SIGN_VERIFY_SUMMARY)
        .map(|(_, v)| v.as_str());
    Ok(parse_verify_setting(SIGN_VERIFY_SUMMARY, value)? != VerifySetting::Off)
}

fn load_key_dirs(dirs: &[PathBuf], base: &str) -> Vec<VerifyingKey> {
    let mut files = Vec::new();
    for d in dirs {
        files.push(d.join(base));
        let sub = d.join(format!("{base}.d"));
        match std::fs::read_dir(&sub) {
            Ok(rd) => {
                let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                names.sort();
                files.extend(names);
            }
            Err(e) => tracing::debug!("{}: {e}", sub.display()),
        }
    }
    let mut keys = Vec::new();
    for f in files {
        match read_public_keys_file(&f) {
            Ok(k) => keys.extend(k),
            Err(e) => tracing::debug!("skipping {}: {e:#}", f.display()),
        }
    }
    keys
}

/// Checks the signatures of `meta` over `data`: the first signature that
/// verifies with a trusted key wins; returns that key.
pub fn verify_signatures(
    data: &[u8],
    meta: &Metadata,
    keys: &TrustedKeys,
) -> std::result::Result<VerifyingKey, VerifyError> {
    let sigs = match meta.get(ED25519_KEY) {
        Some(Value::BytesArray(v)) if !v.is_empty() => v,
        _ => return Err(VerifyError::NoSignatures),
    };
    let mut tried = Vec::new();
    for sig in sigs {
        let arr: &[u8; SIGNATURE_LEN] = sig
            .as_slice()
            .try_into()
            .map_err(|_| VerifyError::BadSignatureLength(sig.len()))?;
        for key in keys.keys() {
            if key.verify(data, arr) {
                return Ok(*key);
            }
            tried.push(key_hex(key));
        }
    }
    if tried.is_empty() {
        // Every trusted key was revoked.
        return Err(VerifyError::NoSignatures);
    }
    Err(VerifyError::NotVerified(tried))
}

fn parse_detached(bytes: Option<&[u8]>, missing: VerifyError) -> Result<Metadata> {
    match bytes {
        None => Err(missing.into()),
        Some([]) => Err(missing.into()),
        Some(b) => Metadata::decode(b).context("Parsing signature metadata"),
    }
}

/// Verifies a commit as ostree's pull does with `sign-verify` on:
/// `commit_bytes` are the exact `.commit` object, `commitmeta` its detached
/// metadata as fetched (`None` or empty: absent). Succeeds if any
/// signature verifies with any key; the errors carry a [`VerifyError`].
pub fn verify_commit(
    commit_bytes: &[u8],
    commitmeta: Option<&[u8]>,
    keys: &TrustedKeys,
) -> Result<()> {
    verify_commit_key(commit_bytes, commitmeta, keys).map(|_| ())
}

/// Like [`verify_commit`], returning the key that verified.
pub fn verify_commit_key(
    commit_bytes: &[u8],
    commitmeta: Option<&[u8]>,
    keys: &TrustedKeys,
) -> Result<VerifyingKey> {
    let meta = parse_detached(commitmeta, VerifyError::NoDetachedMetadata)?;
    verify_signatures(commit_bytes, &meta, keys).context("Can't verify commit")
}

/// Verifies `summary` against `summary.sig` (an `a{sv}` with
/// [`ED25519_KEY`]), as ostree does with `sign-verify-summary` on.
/// `summary_sig` `None` means the server has none, which is an error.
pub fn verify_summary(
    summary: &[u8],
    summary_sig: Option<&[u8]>,
    keys: &TrustedKeys,
) -> Result<()> {
    let meta = parse_detached(summary_sig, VerifyError::NoSummarySignatures)?;
    verify_signatures(summary, &meta, keys).context("Can't verify summary")?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RFC 8032 §7.1 TEST 1, in ostree's forms (spec §6.3).
    pub(crate) const SECRET: &str =
        "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2DXWpgBgrEKt9VL/tPJZAc6DuFy89qmIyWvAhpo9wdRGg==";
    pub(crate) const PUBLIC: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

    pub(crate) fn other_key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn err(r: Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn signatures_append_without_duplicates() {
        let sk = parse_secret_key(SECRET).unwrap();
        let mut meta = Metadata::new();
        meta.push("other", Value::Str("kept".into()));
        assert_eq!(
            add_signatures(&mut meta, b"data", std::slice::from_ref(&sk)).unwrap(),
            1
        );
        assert_eq!(
            add_signatures(&mut meta, b"data", std::slice::from_ref(&sk)).unwrap(),
            0
        );
        assert_eq!(
            add_signatures(&mut meta, b"data", &[other_key()]).unwrap(),
            1
        );
        assert_eq!(meta.0[0].0, "other");
        let Some(Value::BytesArray(sigs)) = meta.get(ED25519_KEY) else {
            panic!("no signatures")
        };
        assert_eq!(sigs.len(), 2);
        let mut bad = Metadata::new();
        bad.push(ED25519_KEY, Value::Str("x".into()));
        assert!(err(add_signatures(&mut bad, b"d", &[sk])).contains("expected 'aay'"));
    }

    #[test]
    fn verification_rules() {
        let sk = parse_secret_key(SECRET).unwrap();
        let trusted = TrustedKeys::new(vec![sk.verifying_key()]).unwrap();
        let data = b"commit bytes";
        let mut meta = Metadata::new();
        add_signatures(&mut meta, data, &[other_key(), sk.clone()]).unwrap();
        let enc = meta.encode();
        assert_eq!(
            verify_commit_key(data, Some(&enc), &trusted).unwrap(),
            sk.verifying_key()
        );
        verify_summary(data, Some(&enc), &trusted).unwrap();
        let e = err(verify_commit(b"other bytes", Some(&enc), &trusted));
        assert!(
            e.contains("Can't verify commit") && e.contains("d75a9801"),
            "{e}"
        );
        assert!(err(verify_commit(data, None, &trusted)).contains("without detached metadata"));
        assert!(err(verify_commit(data, Some(&[]), &trusted)).contains("without detached"));
        assert!(err(verify_summary(data, None, &trusted)).contains("no summary signatures"));
        let mut nosig = Metadata::new();
        nosig.push("k", Value::Bool(true));
        assert!(err(verify_commit(data, Some(&nosig.encode()), &trusted))
            .contains("No signatures found"));
        let mut empty = Metadata::new();
        empty.push(ED25519_KEY, Value::BytesArray(vec![]));
        assert!(err(verify_commit(data, Some(&empty.encode()), &trusted))
            .contains("No signatures found"));
        let mut short = Metadata::new();
        short.push(ED25519_KEY, Value::BytesArray(vec![vec![0; 63]]));
        let e = verify_commit(data, Some(&short.encode()), &trusted).unwrap_err();
        assert!(matches!(
            e.downcast_ref::<VerifyError>(),
            Some(VerifyError::BadSignatureLength(63))
        ));
        assert!(err(verify_commit(data, Some(b"\x01"), &trusted)).contains("Parsing"));
        // Revoked keys are skipped.
        let revoked = TrustedKeys {
            keys: vec![sk.verifying_key()],
            revoked: vec![sk.verifying_key()],
        };
        assert!(err(verify_commit(data, Some(&enc), &revoked)).contains("No signatures"));
        // More than three failures are summarised.
        let many = TrustedKeys::new(vec![other_key().verifying_key(); 4]).unwrap();
        let mut one = Metadata::new();
        add_signatures(&mut one, data, &[sk]).unwrap();
        assert!(err(verify_commit(data, Some(&one.encode()), &many)).contains("tried 4 keys"));
    }

    #[test]
    fn verify_settings() {
        use VerifySetting::*;
        for (v, want) in [
            (None, Off),
            (Some(""), Off),
            (Some("false"), Off),
            (Some("0"), Off),
            (Some("true"), Any),
            (Some("1"), Any),
            (Some("ed25519"), Required),
            (Some("ed25519;"), Required),
        ] {
            assert_eq!(parse_verify_setting(SIGN_VERIFY, v).unwrap(), want, "{v:?}");
        }
        assert!(parse_verify_setting(SIGN_VERIFY, Some("ed25519;dummy")).is_err());
    }

    #[test]
    fn trust_store_dirs() {
        let td = tempfile::tempdir().unwrap();
        let base = td.path().to_path_buf();
        let e = TrustedKeys::from_key_dirs(std::slice::from_ref(&base)).unwrap_err();
        assert!(format!("{e:#}").contains("No ed25519 keys found"), "{e:#}");
        let other = key_base64(&other_key().verifying_key());
        std::fs::write(base.join("trusted.ed25519"), format!("{PUBLIC}\n")).unwrap();
        std::fs::create_dir(base.join("trusted.ed25519.d")).unwrap();
        std::fs::write(base.join("trusted.ed25519.d/b"), format!("{other}\n")).unwrap();
        std::fs::write(base.join("trusted.ed25519.d/bad"), "garbage\n").unwrap();
        std::fs::write(base.join("revoked.ed25519"), format!("{other}\n")).unwrap();
        let t = TrustedKeys::from_key_dirs(&[base]).unwrap();
        let active: Vec<String> = t.keys().map(key_base64).collect();
        assert_eq!(active, vec![PUBLIC.to_string()]);
    }

    #[test]
    fn remote_config() {
        use crate::remotes::{add_remote, RemoteAddOptions};
        let td = tempfile::tempdir().unwrap();
        let repo = Repo::init(&td.path().join("r"), arbor_format::RepoMode::Archive).unwrap();
        let keyfile = td.path().join("keys");
        let other = key_base64(&other_key().verifying_key());
        std::fs::write(&keyfile, format!("{other}\n")).unwrap();
        let add = |repo: &Repo, name: &str, sv: Vec<String>, set: &[(&str, &str)]| {
            let opts = RemoteAddOptions {
                no_gpg_verify: true,
                sign_verify: sv,
                set: set
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            };
            add_remote(&repo.lock(false).unwrap(), name, "http://x/repo", &opts).unwrap();
        };
        add(&repo, "plain", vec![], &[]);
        add(
            &repo,
            "inline",
            vec![format!("ed25519=inline:{PUBLIC}")],
            &[],
        );
        add(
            &repo,
            "both",
            vec![
                format!("ed25519=inline:{PUBLIC}"),
                format!("ed25519=file:{}", keyfile.display()),
            ],
            &[("sign-verify-summary", "true")],
        );
        add(&repo, "nokeys", vec![], &[("sign-verify", "ed25519")]);
        add(
            &repo,
            "badkey",
            vec![],
            &[("sign-verify", "true"), (VERIFICATION_KEY, "AAAA")],
        );
        add(&repo, "off", vec![format!("ed25519=inline:{PUBLIC}")], &[]);
        let mut kf = (*repo.config()).clone();
        kf.set("remote \"off\"", SIGN_VERIFY, "false").unwrap();
        repo.lock(false).unwrap().write_config(kf).unwrap();

        assert_eq!(
            TrustedKeys::from_remote_config(&repo, "plain").unwrap(),
            None
        );
        assert_eq!(TrustedKeys::from_remote_config(&repo, "off").unwrap(), None);
        let t = TrustedKeys::from_remote_config(&repo, "inline")
            .unwrap()
            .unwrap();
        assert_eq!(t.keys().map(key_base64).collect::<Vec<_>>(), vec![PUBLIC]);
        let t = TrustedKeys::from_remote_config(&repo, "both")
            .unwrap()
            .unwrap();
        let mut got: Vec<String> = t.keys().map(key_base64).collect();
        got.sort();
        let mut want = vec![PUBLIC.to_string(), other];
        want.sort();
        assert_eq!(got, want);
        assert!(!sign_verify_summary(&repo, "inline").unwrap());
        assert!(sign_verify_summary(&repo, "both").unwrap());
        assert!(TrustedKeys::from_remote_summary_config(&repo, "inline")
            .unwrap()
            .is_none());
        assert!(TrustedKeys::from_remote_summary_config(&repo, "both")
            .unwrap()
            .is_some());
        let e = err(TrustedKeys::from_remote_config(&repo, "nokeys"));
        assert!(
            e.contains("No keys found for required signapi type ed25519"),
            "{e}"
        );
        let e = err(TrustedKeys::from_remote_config(&repo, "badkey"));
        assert!(
            e.contains(VERIFICATION_KEY) && e.contains("expected 32 bytes"),
            "{e}"
        );
        assert!(err(TrustedKeys::from_remote_config(&repo, "missing")).contains("not found"));
    }
}
