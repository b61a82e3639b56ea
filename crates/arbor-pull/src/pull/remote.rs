//! What a pull needs from the remote before any object: its settings in
//! the repository config, its summary (verified when required) and the
//! commits its refs name.

use anyhow::{anyhow, bail, Context, Result};
use arbor_format::{Checksum, RefName, Summary};
use arbor_repo::objects::MAX_METADATA_SIZE;
use arbor_repo::remotes::Remote;
use arbor_repo::Repo;

use super::Wanted;
use crate::fetcher::{FetchOptions, Fetcher};

/// Reads the remote's settings that matter to a pull.
#[derive(Debug)]
pub(super) struct RemoteSettings {
    pub(super) fetch: FetchOptions,
    pub(super) collection_id: Option<String>,
    /// Keys commits must be signed with (`sign-verify`).
    pub(super) keys: Option<arbor_repo::sign::TrustedKeys>,
    /// Keys `summary.sig` must verify with (`sign-verify-summary`).
    pub(super) summary_keys: Option<arbor_repo::sign::TrustedKeys>,
}

fn option<'a>(remote: &'a Remote, key: &str) -> Option<&'a str> {
    remote
        .options
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn parse_bool(remote: &Remote, key: &str, default: bool) -> Result<bool> {
    match option(remote, key) {
        None => Ok(default),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => bail!("Remote {}: invalid boolean {key}={v}", remote.name),
        },
    }
}

pub(super) fn remote_settings(repo: &Repo, remote: &Remote) -> Result<RemoteSettings> {
    if parse_bool(remote, "gpg-verify", true)? || parse_bool(remote, "gpg-verify-summary", false)? {
        bail!(
            "Remote {} requires GPG signatures (gpg-verify), which arbor does not check; \
             use ed25519 signatures (sign-verify) and set gpg-verify=false \
             (remote add --no-gpg-verify)",
            remote.name
        );
    }
    let mut fetch = FetchOptions::default();
    if let Some(n) = option(remote, "n-network-retries") {
        fetch.retries = n
            .parse()
            .map_err(|_| anyhow!("Remote {}: invalid n-network-retries={n}", remote.name))?;
    }
    // The TLS options as ostree's `_ostree_repo_remote_new_fetcher` reads
    // them (ostree-repo-pull.c); what they mean: `crate::fetcher`.
    fetch.tls_ca_path = option(remote, "tls-ca-path").map(Into::into);
    fetch.tls_permissive = parse_bool(remote, "tls-permissive", false)?;
    fetch.tls_client_cert_path = option(remote, "tls-client-cert-path").map(Into::into);
    fetch.tls_client_key_path = option(remote, "tls-client-key-path").map(Into::into);
    if fetch.tls_client_cert_path.is_some() != fetch.tls_client_key_path.is_some() {
        bail!(
            "Remote \"{}\" must specify both \"tls-client-cert-path\" and \"tls-client-key-path\"",
            remote.name
        );
    }
    Ok(RemoteSettings {
        fetch,
        collection_id: option(remote, "collection-id").map(str::to_string),
        keys: arbor_repo::sign::TrustedKeys::from_remote_config(repo, &remote.name)?,
        summary_keys: arbor_repo::sign::TrustedKeys::from_remote_summary_config(
            repo,
            &remote.name,
        )?,
    })
}

/// A remote's summary: its bytes, its `summary.sig` if fetched, parsed.
pub(super) struct FetchedSummary {
    pub(super) bytes: Vec<u8>,
    pub(super) sig: Option<Vec<u8>>,
    pub(super) summary: Summary,
}

/// Fetches and (if required) verifies the remote's summary.
pub(super) fn fetch_summary(
    fetcher: &Fetcher,
    settings: &RemoteSettings,
    want_sig: bool,
) -> Result<Option<FetchedSummary>> {
    let sig = if settings.summary_keys.is_some() || want_sig {
        fetcher.fetch_bytes("summary.sig", MAX_METADATA_SIZE)?
    } else {
        None
    };
    let Some(bytes) = fetcher.fetch_bytes("summary", MAX_METADATA_SIZE)? else {
        if settings.summary_keys.is_some() {
            bail!("Summary signatures are required (sign-verify-summary) but the remote has no summary");
        }
        return Ok(None);
    };
    if let Some(keys) = &settings.summary_keys {
        arbor_repo::sign::verify_summary(&bytes, sig.as_deref(), keys)
            .context("Verifying the summary signature")?;
    }
    let summary = Summary::decode(&bytes).context("Invalid summary")?;
    Ok(Some(FetchedSummary {
        bytes,
        sig,
        summary,
    }))
}

/// Resolves the refs to pull on the remote.
pub(super) fn resolve_wanted(
    fetcher: &Fetcher,
    summary: Option<&Summary>,
    refs: &[String],
) -> Result<Vec<Wanted>> {
    let mut out = Vec::new();
    if refs.is_empty() {
        let summary = summary.ok_or_else(|| {
            anyhow!("The remote has no summary file, so its refs cannot be listed; name the refs to pull")
        })?;
        for r in &summary.refs {
            let name = RefName::new(r.name.as_str())
                .with_context(|| format!("Invalid ref name {:?} in the remote summary", r.name))?;
            out.push(Wanted {
                name: Some(name),
                commit: r.checksum,
                size: Some(r.commit_size),
            });
        }
        return Ok(out);
    }
    for r in refs {
        if arbor_format::checksum::is_hex_checksum(r) {
            out.push(Wanted {
                name: None,
                commit: Checksum::from_hex(r)?,
                size: None,
            });
            continue;
        }
        let name = RefName::new(r.as_str()).with_context(|| format!("Cannot pull '{r}'"))?;
        if let Some(summary) = summary {
            let e = summary
                .lookup(name.as_str())
                .ok_or_else(|| super::error::NoSuchRemoteRef {
                    name: r.to_string(),
                    in_summary: true,
                })?;
            out.push(Wanted {
                name: Some(name),
                commit: e.checksum,
                size: Some(e.commit_size),
            });
            continue;
        }
        let path = format!("refs/heads/{}", name.as_str());
        let body =
            fetcher
                .fetch_bytes(&path, 1024)?
                .ok_or_else(|| super::error::NoSuchRemoteRef {
                    name: r.to_string(),
                    in_summary: false,
                })?;
        let text = std::str::from_utf8(&body)
            .ok()
            .map(str::trim_end)
            .filter(|t| arbor_format::checksum::is_hex_checksum(t))
            .ok_or_else(|| anyhow!("Invalid content in remote ref '{r}'"))?;
        out.push(Wanted {
            name: Some(name),
            commit: Checksum::from_hex(text)?,
            size: None,
        });
    }
    Ok(out)
}
