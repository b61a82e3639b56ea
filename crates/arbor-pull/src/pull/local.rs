//! `pull-local`: copying commits from another local repository (of any
//! mode) through the same walk as a remote pull. The source repository is
//! untrusted like a server: every object it yields is verified against its
//! checksum before it is staged (a metadata object must hash to its name
//! and parse; a file object's content is re-hashed while it is written),
//! commits are checked against their ref bindings, and the destination's
//! mode rules (bare-user-only) apply, exactly as for `pull`.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use arbor_format::{Checksum, ObjectType, RefName};
use arbor_repo::objects::{open_file_object, read_metadata_optional};
use arbor_repo::refs::RefSpec;
use arbor_repo::repo::RepoLock;
use arbor_repo::{Progress, Repo, RepoError};
use fn_error_context::context;

use super::source::{FileStream, Source, Transfer};
use super::{Checks, Engine, PullStats, Wanted};

/// Options of `pull-local`, following `ostree pull-local`.
#[derive(Debug, Clone)]
pub struct PullLocalOptions {
    /// Refs (or commit checksums) to pull; all local refs of the source
    /// when empty.
    pub refs: Vec<String>,
    /// Store refs as `refs/remotes/REMOTE/…` instead of `refs/heads/…`.
    pub remote: Option<String>,
    /// Parents to pull behind each commit: `None` for the whole history.
    pub depth: Option<u32>,
    /// Skip the ref binding check (ostree's `--disable-verify-bindings`).
    pub disable_verify_bindings: bool,
    /// Objects copied at once.
    pub workers: usize,
}

impl Default for PullLocalOptions {
    fn default() -> Self {
        PullLocalOptions {
            refs: Vec::new(),
            remote: None,
            depth: Some(0),
            disable_verify_bindings: false,
            workers: super::DEFAULT_WORKERS,
        }
    }
}

/// A local repository as a [`Source`].
struct LocalSource<'a> {
    repo: &'a Repo,
    reads: AtomicU64,
    bytes: AtomicU64,
}

impl LocalSource<'_> {
    fn count(&self, bytes: u64) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Source for LocalSource<'_> {
    fn name(&self) -> &str {
        "the source repository"
    }

    fn metadata(&self, t: ObjectType, c: &Checksum, limit: u64) -> Result<Option<Vec<u8>>> {
        let data = read_metadata_optional(self.repo, t, c)?;
        if let Some(d) = &data {
            self.count(d.len() as u64);
            if d.len() as u64 > limit {
                bail!(
                    "{t} object {c} is {} bytes, more than the {limit} allowed",
                    d.len()
                );
            }
        }
        Ok(data)
    }

    fn file(
        &self,
        c: &Checksum,
        store: &mut dyn FnMut(FileStream<'_>) -> Result<()>,
    ) -> Result<Option<u64>> {
        let mut obj = match open_file_object(self.repo, c) {
            Ok(o) => o,
            Err(e) if arbor_repo::reachable::is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = obj.size;
        store(FileStream::Unpacked {
            header: obj.header.clone(),
            size,
            content: &mut obj.content,
        })?;
        self.count(size);
        Ok(Some(size))
    }

    fn file_size(&self, c: &Checksum) -> Result<Option<u64>> {
        match open_file_object(self.repo, c) {
            Ok(o) => Ok(Some(o.size)),
            Err(e) if arbor_repo::reachable::is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn transfer(&self) -> Transfer {
        Transfer {
            requests: self.reads.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            protocols: Vec::new(),
        }
    }
}

/// The refs to pull from `src`: those named (ref names, stored under the
/// same name, or commit checksums, stored under none), else every local
/// ref. All are checked before anything is copied.
fn resolve_wanted(src: &Repo, refs: &[String]) -> Result<Vec<Wanted>> {
    let mut out = Vec::new();
    if refs.is_empty() {
        for (name, commit) in arbor_repo::refs::list_refs(src)? {
            // Remote (`origin:x`) and collection refs stay behind, as with
            // ostree (which lists refs/heads only).
            if name.contains(':') || name.starts_with('(') {
                continue;
            }
            let name = RefName::new(name.as_str())
                .with_context(|| format!("Invalid ref name {name:?} in the source"))?;
            out.push(Wanted {
                name: Some(name),
                commit,
                size: None,
            });
        }
        return Ok(out);
    }
    for r in refs {
        let (name, commit) = resolve_one(src, r)?;
        out.push(Wanted {
            name,
            commit,
            size: None,
        });
    }
    Ok(out)
}

/// One ref to pull from `src`: a full checksum, else a ref name read from
/// `refs/heads/` only (as ostree's `pull-local`, a `file://` pull of
/// `refs/heads/NAME`: `origin/x` is not `refs/remotes/origin/x`), else a
/// unique prefix of a commit checksum, pulled as that checksum (no ref).
fn resolve_one(src: &Repo, r: &str) -> Result<(Option<RefName>, Checksum)> {
    if arbor_format::checksum::is_hex_checksum(r) {
        return Ok((None, Checksum::from_hex(r)?));
    }
    let name = RefName::new(r).with_context(|| format!("Cannot pull '{r}'"))?;
    if let Some(c) = arbor_repo::refs::read_ref(src, &RefSpec::local(name.clone()))? {
        return Ok((Some(name), c));
    }
    let hex_prefix = r.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if hex_prefix {
        // Ambiguous or unknown prefixes are refused here.
        return Ok((None, arbor_repo::refs::resolve_rev(src, r)?));
    }
    Err(RepoError::RefNotFound(r.to_string()).into())
}

/// Pulls refs (or all local refs) from `src` into `dest`, verifying every
/// object as [`super::pull`] does (ostree's `pull-local` is a pull from a
/// `file://` URL too). As with ostree's, no signatures are required and
/// refs may move to older commits.
///
/// Crash guarantee: as [`arbor_repo::txn::Transaction::commit`]: a crash
/// leaves every ref old or new and the destination fsck-clean.
#[context("Pulling from {}", src.path().display())]
pub fn pull_local(
    dest: &RepoLock<'_>,
    src: &Repo,
    opts: &PullLocalOptions,
    progress: &dyn Progress,
) -> Result<PullStats> {
    if let Some(r) = &opts.remote {
        // The name becomes a directory under refs/remotes/.
        arbor_format::names::validate_remote_name(r)?;
    }
    let wanted = resolve_wanted(src, &opts.refs)?;
    let source = LocalSource {
        repo: src,
        reads: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    };
    let engine = Engine {
        repo: dest,
        source: &source,
        checks: Checks {
            keys: None,
            collection_id: None,
            verify_bindings: !opts.disable_verify_bindings,
            allow_downgrade: true,
            ref_remote: opts.remote.as_deref(),
        },
        depth: opts.depth,
        commit_metadata_only: false,
        dry_run: false,
        workers: opts.workers,
        phase: "Copying objects",
        progress,
    };
    engine.run(&wanted)
}
