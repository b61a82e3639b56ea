//! Remotes, stored in the repository `config` exactly as ostree stores
//! them: a `[remote "NAME"]` group with `url` and options.

use anyhow::{bail, Context, Result};
use arbor_format::names::validate_remote_name;
use fn_error_context::context;
use serde::Serialize;

use crate::config::KeyFile;
use crate::repo::{Repo, RepoLock};

/// Options of `remote add`, following `ostree remote add`.
#[derive(Debug, Default, Clone)]
pub struct RemoteAddOptions {
    /// `--no-gpg-verify`: write `gpg-verify=false`.
    pub no_gpg_verify: bool,
    /// `--no-sign-verify`: write `gpg-verify=false` and `sign-verify=false`.
    pub no_sign_verify: bool,
    /// `--sign-verify=TYPE=inline:KEY` or `TYPE=file:PATH`.
    pub sign_verify: Vec<String>,
    /// `--set KEY=VALUE`, in order.
    pub set: Vec<(String, String)>,
    /// `--if-not-exists`: succeed without change if the remote exists.
    pub if_not_exists: bool,
    /// `--force`: replace an existing remote.
    pub force: bool,
}

/// A configured remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Remote {
    /// Its name.
    pub name: String,
    /// `url`.
    pub url: String,
    /// Every option, in file order (including `url`).
    pub options: Vec<(String, String)>,
}

fn group(name: &str) -> String {
    format!("remote \"{name}\"")
}

/// Adds a remote; the `config` is re-read and rewritten atomically under
/// the lock ([`RepoLock::update_config`]), so concurrent changes all stay.
///
/// It changes the repository, so it needs the lock:
///
/// ```compile_fail
/// # use arbor_repo::{remotes::{add_remote, RemoteAddOptions}, Repo};
/// fn add(repo: &mut Repo) -> anyhow::Result<()> {
///     add_remote(repo, "origin", "http://example.com/repo", &RemoteAddOptions::default())
/// }
/// ```
///
/// ```
/// # use arbor_repo::{remotes::{add_remote, RemoteAddOptions}, Repo};
/// fn add(repo: &Repo) -> anyhow::Result<()> {
///     add_remote(&repo.lock(false)?, "origin", "http://example.com/repo", &RemoteAddOptions::default())
/// }
/// ```
#[context("Adding remote {name}")]
pub fn add_remote(
    lock: &RepoLock<'_>,
    name: &str,
    url: &str,
    opts: &RemoteAddOptions,
) -> Result<()> {
    validate_remote_name(name)?;
    if url.is_empty() {
        bail!("Remote URL must not be empty");
    }
    // `--set url=...` replaces the URL argument: check both.
    let set_urls = opts.set.iter().filter(|(k, _)| k == "url");
    for u in std::iter::once(url).chain(set_urls.map(|(_, v)| v.as_str())) {
        crate::remote_url::RemoteUrl::parse(u)?;
    }
    lock.update_config(|kf| add_to(kf, name, url, opts))
}

/// Adds the remote to `kf`; false if it exists and `if_not_exists`.
fn add_to(kf: &mut KeyFile, name: &str, url: &str, opts: &RemoteAddOptions) -> Result<bool> {
    let g = group(name);
    if kf.groups().any(|x| x == g) {
        if opts.if_not_exists {
            return Ok(false);
        }
        if !opts.force {
            bail!("Remote configuration for \"{name}\" already exists");
        }
        kf.remove_group(&g);
    }
    // ostree's order: url, the --set options, then the verification flags.
    kf.set(&g, "url", url)?;
    for (k, v) in &opts.set {
        kf.set(&g, k, v)
            .with_context(|| format!("Setting remote option {k:?}"))?;
    }
    if opts.no_gpg_verify || opts.no_sign_verify {
        kf.set(&g, "gpg-verify", "false")?;
    }
    if opts.no_sign_verify {
        kf.set(&g, "sign-verify", "false")?;
    }
    let mut types = Vec::new();
    for sv in &opts.sign_verify {
        let Some((ty, spec)) = sv.split_once('=') else {
            bail!("Invalid --sign-verify '{sv}': expected TYPE=inline:KEY or TYPE=file:PATH");
        };
        if ty != "ed25519" {
            bail!("Unsupported signature type '{ty}' (only ed25519)");
        }
        match spec.split_once(':') {
            Some(("inline", key)) if !key.is_empty() => {
                kf.set(&g, &format!("verification-{ty}-key"), key)?
            }
            Some(("file", path)) if !path.is_empty() => {
                kf.set(&g, &format!("verification-{ty}-file"), path)?
            }
            _ => bail!("Invalid --sign-verify '{sv}': expected TYPE=inline:KEY or TYPE=file:PATH"),
        }
        if !types.contains(&ty) {
            types.push(ty);
        }
    }
    if !types.is_empty() {
        kf.set(&g, "sign-verify", &types.join(";"))?;
    }
    Ok(true)
}

/// Deletes a remote (`if_exists`: no error when absent); as
/// [`add_remote`], under the lock.
#[context("Deleting remote {name}")]
pub fn delete_remote(lock: &RepoLock<'_>, name: &str, if_exists: bool) -> Result<()> {
    lock.update_config(|kf| {
        if !kf.remove_group(&group(name)) {
            if if_exists {
                return Ok(false);
            }
            bail!("Remote \"{name}\" not found");
        }
        Ok(true)
    })
}

/// All remotes, in config order.
pub fn list_remotes(repo: &Repo) -> Vec<Remote> {
    let kf = repo.config();
    kf.groups()
        .filter_map(|g| g.strip_prefix("remote \"")?.strip_suffix('"'))
        .map(|name| {
            let options: Vec<(String, String)> = kf
                .entries(&group(name))
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let url = options
                .iter()
                .rev()
                .find(|(k, _)| k == "url")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            Remote {
                name: name.to_string(),
                url,
                options,
            }
        })
        .collect()
}

/// One remote; error if it is not configured.
pub fn get_remote(repo: &Repo, name: &str) -> Result<Remote> {
    match list_remotes(repo).into_iter().find(|r| r.name == name) {
        Some(r) => Ok(r),
        None => bail!("Remote \"{name}\" not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Handles opened before any add, as by concurrent `remote add`
    /// processes: each add re-reads `config` under the lock, so none is
    /// lost.
    #[test]
    fn concurrent_adds_all_survive() {
        let td = tempfile::tempdir().unwrap();
        let path = td.path().join("r");
        Repo::init(&path, arbor_format::RepoMode::Archive).unwrap();
        let handles: Vec<Repo> = (0..4).map(|_| Repo::open(&path).unwrap()).collect();
        let barrier = std::sync::Barrier::new(handles.len());
        std::thread::scope(|s| {
            for (t, repo) in handles.iter().enumerate() {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    for i in 0..5 {
                        let lock = repo.lock(false).unwrap();
                        let name = format!("r{t}-{i}");
                        add_remote(&lock, &name, "http://x/", &RemoteAddOptions::default())
                            .unwrap();
                        // This handle sees its own change at once.
                        assert!(get_remote(repo, &name).is_ok());
                    }
                });
            }
        });
        let mut names: Vec<String> = list_remotes(&Repo::open(&path).unwrap())
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        let mut want: Vec<String> = (0..4)
            .flat_map(|t| (0..5).map(move |i| format!("r{t}-{i}")))
            .collect();
        want.sort();
        assert_eq!(names, want);
        // Deleting also edits the current file, not the copy read at open.
        let stale = &handles[0];
        delete_remote(&stale.lock(false).unwrap(), "r3-4", false).unwrap();
        assert_eq!(list_remotes(stale).len(), 19);
    }
}
