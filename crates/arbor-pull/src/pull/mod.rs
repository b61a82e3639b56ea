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
use std::sync::{Condvar, Mutex};

use anyhow::{anyhow, Context, Result};
use arbor_format::{Checksum, Commit, ObjectType, RefName};
use arbor_repo::objects::MAX_METADATA_SIZE;
use arbor_repo::refs::{RefSpec, RefUpdate};
use arbor_repo::txn::Transaction;
use arbor_repo::{Progress, Repo};
use fn_error_context::context;
use serde::Serialize;

use crate::fetcher::Fetcher;

mod checks;
mod remote;
mod walk;

use checks::{check_bindings, check_downgrade};
use remote::{fetch_summary, remote_settings, resolve_wanted, FetchedSummary, RemoteSettings};
use walk::{fetch_metadata, object_path, Sink, Walk, WalkState};

/// Options of `pull`, following `ostree pull`.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Refs (or commit checksums) to pull; all refs of the remote's summary
    /// when empty.
    pub refs: Vec<String>,
    /// Parents to pull behind each commit (-1 = all; default 0).
    pub depth: i64,
    /// Fetch only commit objects (marked partial), not their trees.
    pub commit_metadata_only: bool,
    /// Write refs to `refs/heads/` (not `refs/remotes/REMOTE/`) and, when
    /// pulling every ref, keep the remote's summary: a mirror to re-serve.
    pub mirror: bool,
    /// Fetch only metadata (in memory) and report what would be fetched.
    pub dry_run: bool,
    /// Allow moving a ref to an older commit.
    pub allow_downgrade: bool,
    /// Objects in flight at once.
    pub workers: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            refs: Vec::new(),
            depth: 0,
            commit_metadata_only: false,
            mirror: false,
            dry_run: false,
            allow_downgrade: false,
            workers: 8,
        }
    }
}

/// What a pull did (or, with `dry_run`, would do).
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
    /// Bytes of the file objects (with `dry_run`: their sizes from HEAD).
    pub content_bytes: u64,
    /// HTTP requests made.
    pub requests: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// True for a dry run: nothing was written.
    pub dry_run: bool,
    /// HTTP versions the server answered with (`HTTP/2.0` over TLS when it
    /// offers HTTP/2).
    pub protocols: Vec<String>,
}

/// A ref (or bare checksum) to pull, resolved on the remote.
#[derive(Debug, Clone)]
pub(super) struct Wanted {
    /// Ref name, or `None` when pulling a checksum.
    pub(super) name: Option<RefName>,
    pub(super) commit: Checksum,
    /// Size of the commit object from the summary, if known.
    pub(super) size: Option<u64>,
}

/// The ref a pulled ref is stored under.
fn local_spec(remote: &str, name: &RefName, mirror: bool) -> RefSpec {
    RefSpec {
        remote: (!mirror).then(|| remote.to_string()),
        name: name.clone(),
    }
}

/// Pulls from remote `remote_name` of `repo`.
///
/// Crash guarantee: as [`Transaction::commit`]: every ref old or new, the
/// repository fsck-clean; a rerun within the same boot reuses what the
/// killed run had verified and staged.
#[context("Pulling from remote {remote_name}")]
pub fn pull(
    repo: &Repo,
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

    let txn = if opts.dry_run {
        None
    } else {
        Some(Transaction::begin(repo)?)
    };
    let sink = match &txn {
        Some(t) => Sink::Txn(t),
        None => Sink::Dry {
            repo,
            meta: Mutex::new(HashMap::new()),
        },
    };
    let mut stats = PullStats {
        dry_run: opts.dry_run,
        ..PullStats::default()
    };
    // Commits first (small, sequential): each checked before anything it
    // references is fetched.
    let mut roots = Vec::new();
    let mut updates = Vec::new();
    for w in &wanted {
        let mut cur = Some(w.commit);
        let mut remaining = opts.depth;
        let mut first = true;
        while let Some(id) = cur {
            let size = if first { w.size } else { None };
            let Some((commit, fetched)) = pull_commit(
                &fetcher,
                &sink,
                &settings,
                w,
                &id,
                size,
                first,
                opts,
                remote_name,
            )?
            else {
                // A parent the remote does not have (shallow history).
                break;
            };
            stats.commits += 1;
            stats.metadata_fetched += u64::from(fetched);
            let complete = repo.has_object(ObjectType::Commit, &id)? && !repo.is_partial(&id)?;
            if opts.commit_metadata_only {
                if !complete {
                    if let Some(t) = &txn {
                        t.mark_partial(&id)?;
                    }
                }
            } else if !complete {
                roots.push(commit.root_meta);
                roots.push(commit.root_tree);
                if let Some(t) = &txn {
                    t.mark_complete(&id)?;
                }
            }
            first = false;
            if remaining == 0 {
                break;
            }
            remaining -= 1;
            cur = commit.parent;
        }
        if let Some(name) = &w.name {
            let spec = local_spec(remote_name, name, opts.mirror);
            stats.refs.push((spec.to_string(), w.commit.to_hex()));
            updates.push(RefUpdate::set(spec, w.commit));
        }
    }

    // Trees: many objects in flight.
    let walk = Walk {
        fetcher: &fetcher,
        sink: &sink,
        progress,
        dry_run: opts.dry_run,
        state: Mutex::new(WalkState::default()),
        wake: Condvar::new(),
    };
    {
        // The roots, queued before the bar starts (enqueue reports totals).
        let mut st = arbor_repo::mutex::lock(&walk.state, "the pull queue")?;
        for (i, c) in roots.iter().enumerate() {
            let t = if i % 2 == 0 {
                ObjectType::DirMeta
            } else {
                ObjectType::DirTree
            };
            if st.queued.insert((t, *c)) {
                st.meta.push_back((t, *c));
                st.total += 1;
            }
        }
        progress.start("Receiving objects", st.total);
    }
    std::thread::scope(|s| {
        for _ in 0..opts.workers.max(1) {
            s.spawn(|| walk.worker());
        }
    });
    progress.finish();
    let st = walk
        .state
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(e) = st.error {
        return Err(e);
    }
    stats.metadata_fetched += st.metadata_fetched;
    stats.content_fetched = st.content_fetched;
    stats.content_bytes = st.content_bytes;
    if let Some(txn) = txn {
        txn.commit(&updates)?;
        if keep_summary {
            if let Some(s) = &summary {
                arbor_repo::summary::store_summary(repo, &s.bytes, s.sig.as_deref())?;
            }
        }
    }
    stats.requests = fetcher.requests();
    stats.bytes = fetcher.bytes();
    stats.protocols = fetcher.versions();
    Ok(stats)
}

/// Fetches (unless present), verifies and stages one commit and its
/// detached metadata. `Ok(None)` if it is a parent the remote lacks.
#[allow(clippy::too_many_arguments)]
fn pull_commit(
    fetcher: &Fetcher,
    sink: &Sink<'_, '_>,
    settings: &RemoteSettings,
    w: &Wanted,
    id: &Checksum,
    size: Option<u64>,
    first: bool,
    opts: &PullOptions,
    remote_name: &str,
) -> Result<Option<(Commit, bool)>> {
    let t = ObjectType::Commit;
    // Detached metadata first: always re-fetched, it may carry new
    // signatures (ostree does the same).
    let meta = fetcher
        .fetch_bytes(&object_path(ObjectType::CommitMeta, id), MAX_METADATA_SIZE)
        .with_context(|| format!("Fetching detached metadata of {id}"))?;
    if let Some(m) = &meta {
        arbor_format::Metadata::decode(m)
            .map_err(|e| anyhow!("Invalid detached metadata of commit {id}: {e}"))?;
    }
    let (data, fetched) = match sink.read(t, id)? {
        Some(d) => (d, false),
        None => {
            let limit = size.unwrap_or(MAX_METADATA_SIZE).min(MAX_METADATA_SIZE);
            match fetch_metadata(fetcher, t, id, limit) {
                Ok(d) => (d, true),
                Err(e) if !first && meta.is_none() && is_not_found(&e) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    };
    let commit = Commit::decode(&data).map_err(|e| anyhow!("Invalid commit {id}: {e}"))?;
    if let Some(keys) = &settings.keys {
        arbor_repo::sign::verify_commit(&data, meta.as_deref(), keys)
            .with_context(|| format!("Commit {id} failed signature verification"))?;
    }
    // The ref binding applies to the commit the ref names; the collection
    // binding to every commit (parents too).
    check_bindings(
        &commit,
        id,
        if first { w.name.as_ref() } else { None },
        settings,
    )?;
    if first {
        if let (Some(name), false) = (&w.name, opts.allow_downgrade) {
            check_downgrade(
                sink.repo(),
                &commit,
                id,
                &local_spec(remote_name, name, opts.mirror),
            )?;
        }
    }
    sink.put(t, &data)?;
    if let (Sink::Txn(txn), Some(m)) = (sink, &meta) {
        txn.write_commitmeta(id, m)?;
    }
    Ok(Some((commit, fetched)))
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.to_string().contains("not found on the remote")
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
