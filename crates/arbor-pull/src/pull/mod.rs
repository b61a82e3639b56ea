//! `pull`: fetching commits from a remote repository, verifying every
//! object before it is stored.
//!
//! Order (as ostree, spec §7): `summary` (and `summary.sig` when summary
//! signatures are required), refs (from the summary, else
//! `refs/heads/REF`), then per commit its detached metadata and the commit
//! object, then the trees: dirtree and dirmeta objects first, file objects
//! as they are discovered, many in flight at once.
//!
//! Every object is checked before it is staged: a metadata object must hash
//! to its name, be in normal form and parse (file names in dirtrees are
//! validated); a commit must carry a valid signature when the remote
//! requires one, be bound to the ref being pulled when it lists bindings,
//! and not be older than the commit the ref has now (unless
//! `allow_downgrade`); a file object is inflated (never past the size its
//! header declares) and its checksum recomputed. Objects land through a
//! [`Transaction`], so nothing unverified is ever in `objects/`, refs move
//! last, and a killed pull resumes from what it had staged (see
//! `arbor_repo::txn`).

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use arbor_format::{Checksum, Commit, ObjectType, RefName};
use arbor_repo::objects::MAX_METADATA_SIZE;
use arbor_repo::refs::{RefSpec, RefUpdate};
use arbor_repo::repo::RepoLock;
use arbor_repo::sign::TrustedKeys;
use arbor_repo::txn::Transaction;
use arbor_repo::{Progress, Repo};
use fn_error_context::context;
use serde::Serialize;

use crate::fetcher::Fetcher;

mod checks;
pub mod error;
mod local;
mod remote;
mod source;
mod walk;

use checks::{check_bindings, check_downgrade};
pub use error::{DowngradeRefused, NoSuchRemoteRef};
pub use local::{pull_local, PullLocalOptions};
use remote::{fetch_summary, remote_settings, resolve_wanted, FetchedSummary};
use source::Source;
use walk::{fetch_metadata_optional, Sink, Walk};

/// Objects in flight at once unless told otherwise.
const DEFAULT_WORKERS: usize = 8;

/// Options of `pull`, following `ostree pull`.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Refs (or commit checksums) to pull; all refs of the remote's summary
    /// when empty.
    pub refs: Vec<String>,
    /// Parents to pull behind each commit: `None` for the whole history
    /// (ostree's `--depth=-1`); default `Some(0)`.
    pub depth: Option<u32>,
    /// Fetch only commit objects (marked partial), not their trees.
    pub commit_metadata_only: bool,
    /// Write refs to `refs/heads/` (not `refs/remotes/REMOTE/`) and, when
    /// pulling every ref, keep the remote's summary: a mirror to re-serve.
    pub mirror: bool,
    /// Fetch only metadata (in memory) and report what would be fetched.
    pub dry_run: bool,
    /// Allow moving a ref to an older commit.
    pub allow_downgrade: bool,
    /// Skip the ref and collection binding checks (ostree's
    /// `--disable-verify-bindings`).
    pub disable_verify_bindings: bool,
    /// Objects in flight at once.
    pub workers: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            refs: Vec::new(),
            depth: Some(0),
            commit_metadata_only: false,
            mirror: false,
            dry_run: false,
            allow_downgrade: false,
            disable_verify_bindings: false,
            workers: DEFAULT_WORKERS,
        }
    }
}

/// What a pull (remote or local) did or, with `dry_run`, would do.
///
/// Byte counts depend on the source: over HTTP (and `file://`)
/// `content_bytes` and `bytes` are what travelled, the compressed
/// `.filez` bytes of an archive repository; for `pull-local` they are the
/// uncompressed content sizes read from the source repository.
#[derive(Debug, Default, Serialize)]
pub struct PullStats {
    /// Refs updated (or that would be), as `(name, checksum)`.
    pub refs: Vec<(String, String)>,
    /// Commits pulled or already present.
    pub commits: u64,
    /// Metadata objects fetched (dirtree, dirmeta, commit).
    pub metadata_fetched: u64,
    /// File objects fetched (with `dry_run`: that would be fetched).
    pub content_fetched: u64,
    /// Bytes of the file objects as the source yielded them: compressed
    /// over HTTP, uncompressed for `pull-local` (with `dry_run`: their
    /// sizes from HEAD).
    pub content_bytes: u64,
    /// Requests made: HTTP requests, or objects read from a local source.
    pub requests: u64,
    /// Bytes received (compressed file objects and metadata over HTTP;
    /// read from a local source, file contents uncompressed).
    pub bytes: u64,
    /// True for a dry run: nothing was written.
    pub dry_run: bool,
    /// HTTP versions the server answered with (`HTTP/1.1`); empty for a
    /// local source.
    pub protocols: Vec<String>,
}

/// A ref (or bare checksum) to pull, resolved on the source.
#[derive(Debug, Clone)]
pub(super) struct Wanted {
    /// Ref name, or `None` when pulling a checksum.
    pub(super) name: Option<RefName>,
    pub(super) commit: Checksum,
    /// Size of the commit object from the summary, if known.
    pub(super) size: Option<u64>,
}

/// What every commit of a pull is checked against, whatever the source:
/// from the remote's configuration for `pull`, ostree's defaults for
/// `pull-local`.
#[derive(Debug)]
pub(super) struct Checks<'a> {
    /// Keys commits must be signed with (`sign-verify`).
    pub(super) keys: Option<&'a TrustedKeys>,
    /// The collection commits must be bound to.
    pub(super) collection_id: Option<&'a str>,
    /// Check ref and collection bindings (ostree's default; off with
    /// `--disable-verify-bindings`).
    pub(super) verify_bindings: bool,
    /// Allow moving a ref to an older commit.
    pub(super) allow_downgrade: bool,
    /// Remote whose `refs/remotes/` pulled refs go under (`None`:
    /// `refs/heads/`).
    pub(super) ref_remote: Option<&'a str>,
}

impl Checks<'_> {
    /// The ref a pulled ref is stored under.
    fn local_spec(&self, name: &RefName) -> RefSpec {
        RefSpec {
            remote: self.ref_remote.map(str::to_string),
            name: name.clone(),
        }
    }
}

/// One pull, from any [`Source`]: the commits wanted and their history,
/// then their trees, all verified, staged in one transaction (or, for a
/// dry run, kept in memory) and published with the refs at the end.
pub(super) struct Engine<'a> {
    pub(super) repo: &'a RepoLock<'a>,
    pub(super) source: &'a dyn Source,
    pub(super) checks: Checks<'a>,
    /// Parents to pull behind each commit (`None`: all).
    pub(super) depth: Option<u32>,
    pub(super) commit_metadata_only: bool,
    pub(super) dry_run: bool,
    pub(super) workers: usize,
    /// Progress phase name of the tree walk.
    pub(super) phase: &'a str,
    pub(super) progress: &'a dyn Progress,
}

/// What [`pull_commit`] needs besides the commit: the required inputs
/// (STYLE §5 `Context`), shared by every commit of a pull.
struct CommitContext<'a, 't, 'r> {
    source: &'a dyn Source,
    sink: &'a Sink<'t, 'r>,
    checks: &'a Checks<'a>,
}

/// A commit to pull: `id`, reached from `wanted` (`first` when it is the
/// commit `wanted` names, not one of its parents).
struct CommitStep<'a> {
    wanted: &'a Wanted,
    id: Checksum,
    first: bool,
}

impl Engine<'_> {
    /// Runs the pull; see [`pull`] for the crash guarantee.
    pub(super) fn run(&self, wanted: &[Wanted]) -> Result<PullStats> {
        let txn = if self.dry_run {
            None
        } else {
            Some(Transaction::begin(self.repo)?)
        };
        let sink = match &txn {
            Some(t) => Sink::Txn(t),
            None => Sink::Dry {
                repo: self.repo,
                meta: Mutex::new(HashMap::new()),
            },
        };
        let mut stats = PullStats {
            dry_run: self.dry_run,
            ..PullStats::default()
        };
        let cx = CommitContext {
            source: self.source,
            sink: &sink,
            checks: &self.checks,
        };
        // Commits first (small, sequential): each checked before anything
        // it references is fetched.
        let mut roots = Vec::new();
        let mut updates = Vec::new();
        for w in wanted {
            self.commits(&cx, txn.as_ref(), w, &mut stats, &mut roots)?;
            if let Some(name) = &w.name {
                let spec = self.checks.local_spec(name);
                stats.refs.push((spec.to_string(), w.commit.to_hex()));
                updates.push(RefUpdate::set(spec, w.commit));
            }
        }
        let st = Walk::new(self.source, &sink, self.progress, self.dry_run).run(
            &roots,
            self.workers,
            self.phase,
        )?;
        stats.metadata_fetched += st.metadata_fetched;
        stats.content_fetched = st.content_fetched;
        stats.content_bytes = st.content_bytes;
        if let Some(txn) = txn {
            txn.commit(&updates)?;
        }
        let transfer = self.source.transfer();
        stats.requests = transfer.requests;
        stats.bytes = transfer.bytes;
        stats.protocols = transfer.protocols;
        Ok(stats)
    }

    /// Pulls the commit `w` names and its parents down to the depth asked
    /// for; queues in `roots` the trees of those not complete here.
    fn commits(
        &self,
        cx: &CommitContext<'_, '_, '_>,
        txn: Option<&Transaction<'_>>,
        w: &Wanted,
        stats: &mut PullStats,
        roots: &mut Vec<(ObjectType, Checksum)>,
    ) -> Result<()> {
        let mut cur = Some(w.commit);
        let mut remaining = self.depth;
        let mut first = true;
        while let Some(id) = cur {
            let step = CommitStep {
                wanted: w,
                id,
                first,
            };
            let Some((commit, fetched)) = pull_commit(cx, &step)? else {
                // A parent the source does not have (shallow history).
                break;
            };
            stats.commits += 1;
            stats.metadata_fetched += u64::from(fetched);
            let complete =
                self.repo.has_object(ObjectType::Commit, &id)? && !self.repo.is_partial(&id)?;
            if self.commit_metadata_only {
                if let (false, Some(t)) = (complete, txn) {
                    t.mark_partial(&id)?;
                }
            } else if !complete {
                roots.push((ObjectType::DirMeta, commit.root_meta));
                roots.push((ObjectType::DirTree, commit.root_tree));
                if let Some(t) = txn {
                    t.mark_complete(&id)?;
                }
            }
            first = false;
            remaining = match remaining {
                Some(0) => break,
                Some(n) => Some(n - 1),
                None => None,
            };
            cur = commit.parent;
        }
        Ok(())
    }
}

/// Pulls from remote `remote_name` of `repo`.
///
/// Crash guarantee: as [`Transaction::commit`]: every ref old or new, the
/// repository fsck-clean; a rerun within the same boot reuses what the
/// killed run had verified and staged.
#[context("Pulling from remote {remote_name}")]
pub fn pull(
    repo: &RepoLock<'_>,
    remote_name: &str,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullStats> {
    // The name becomes a directory under refs/remotes/.
    arbor_format::names::validate_remote_name(remote_name)?;
    let remote = arbor_repo::remotes::get_remote(repo, remote_name)?;
    let settings = remote_settings(repo, &remote)?;
    let mut fetch_opts = settings.fetch.clone();
    fetch_opts.connections = opts.workers.max(1);
    let fetcher = Fetcher::new(&remote.url, fetch_opts)?;
    let keep_summary = opts.mirror && opts.refs.is_empty() && !opts.dry_run;
    let summary = fetch_summary(&fetcher, &settings, keep_summary)?;
    let wanted = resolve_wanted(&fetcher, summary.as_ref().map(|s| &s.summary), &opts.refs)?;
    let engine = Engine {
        repo,
        source: &fetcher,
        checks: Checks {
            keys: settings.keys.as_ref(),
            collection_id: settings.collection_id.as_deref(),
            verify_bindings: !opts.disable_verify_bindings,
            allow_downgrade: opts.allow_downgrade,
            ref_remote: (!opts.mirror).then_some(remote_name),
        },
        depth: opts.depth,
        commit_metadata_only: opts.commit_metadata_only,
        dry_run: opts.dry_run,
        workers: opts.workers,
        phase: "Receiving objects",
        progress,
    };
    let stats = engine.run(&wanted)?;
    if keep_summary {
        if let Some(s) = &summary {
            arbor_repo::summary::store_summary(repo, &s.bytes, s.sig.as_deref())?;
        }
    }
    Ok(stats)
}

/// Fetches (unless present), verifies and stages one commit and its
/// detached metadata. `Ok(None)` if it is a parent the source lacks;
/// otherwise the commit and whether it was fetched.
fn pull_commit(
    cx: &CommitContext<'_, '_, '_>,
    step: &CommitStep<'_>,
) -> Result<Option<(Commit, bool)>> {
    let CommitStep { wanted, id, first } = *step;
    let t = ObjectType::Commit;
    // Detached metadata first: always re-fetched, it may carry new
    // signatures (ostree does the same).
    let meta = cx
        .source
        .metadata(ObjectType::CommitMeta, &id, MAX_METADATA_SIZE)
        .with_context(|| format!("Fetching detached metadata of {id}"))?;
    if let Some(m) = &meta {
        arbor_format::Metadata::decode(m)
            .map_err(|e| anyhow!("Invalid detached metadata of commit {id}: {e}"))?;
    }
    let (data, fetched) = match cx.sink.read(t, &id)? {
        Some(d) => (d, false),
        None => {
            let size = if first { wanted.size } else { None };
            let limit = size.unwrap_or(MAX_METADATA_SIZE).min(MAX_METADATA_SIZE);
            match fetch_metadata_optional(cx.source, t, &id, limit)? {
                Some(d) => (d, true),
                // A parent the source lacks ends the history pulled, even
                // with detached metadata for it (as ostree:
                // meta_fetch_on_complete, scan_one_metadata_object).
                None if !first => return Ok(None),
                None => bail!("{t} object {id} not found on {}", cx.source.name()),
            }
        }
    };
    let commit = Commit::decode(&data).map_err(|e| anyhow!("Invalid commit {id}: {e}"))?;
    if let Some(keys) = cx.checks.keys {
        arbor_repo::sign::verify_commit(&data, meta.as_deref(), keys)
            .with_context(|| format!("Commit {id} failed signature verification"))?;
    }
    // The ref binding applies to the commit the ref names; the collection
    // binding to every commit (parents too).
    let name = if first { wanted.name.as_ref() } else { None };
    if cx.checks.verify_bindings {
        check_bindings(&commit, &id, name, cx.checks.collection_id)?;
    }
    if let (Some(name), false) = (name, cx.checks.allow_downgrade) {
        check_downgrade(cx.sink.repo(), &commit, &id, &cx.checks.local_spec(name))?;
    }
    cx.sink.put(t, &data)?;
    if let (Sink::Txn(txn), Some(m)) = (cx.sink, &meta) {
        txn.write_commitmeta(&id, m)?;
    }
    Ok(Some((commit, fetched)))
}

/// The refs the remote's summary lists (`remote refs`); an error if the
/// remote has no summary, as with ostree.
#[context("Listing refs of remote {remote_name}")]
pub fn remote_refs(repo: &Repo, remote_name: &str) -> Result<Vec<(String, Checksum)>> {
    let remote = arbor_repo::remotes::get_remote(repo, remote_name)?;
    let settings = remote_settings(repo, &remote)?;
    let fetcher = Fetcher::new(&remote.url, settings.fetch.clone())?;
    let FetchedSummary { summary, .. } = fetch_summary(&fetcher, &settings, false)?.ok_or_else(|| {
        anyhow!("Remote refs not available: the server has no summary file (run `summary --update` there)")
    })?;
    Ok(summary
        .refs
        .into_iter()
        .map(|r| (r.name, r.checksum))
        .collect())
}

#[cfg(test)]
mod tests;
