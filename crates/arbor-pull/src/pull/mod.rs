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

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::BufReader;
use std::sync::{Condvar, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use arbor_format::metadata::Value;
use arbor_format::{Checksum, Commit, DirMeta, DirTree, ObjectType, RefName, RepoMode, Summary};
use arbor_repo::objects::{read_filez_header, MAX_METADATA_SIZE};
use arbor_repo::refs::{RefSpec, RefUpdate};
use arbor_repo::remotes::Remote;
use arbor_repo::txn::{deflate_bound, Transaction};
use arbor_repo::{Progress, Repo};
use fn_error_context::context;
use serde::Serialize;

use crate::fetcher::{Body, FetchOptions, Fetcher};

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
struct Wanted {
    /// Ref name, or `None` when pulling a checksum.
    name: Option<RefName>,
    commit: Checksum,
    /// Size of the commit object from the summary, if known.
    size: Option<u64>,
}

/// Where verified objects go: a transaction, or memory for a dry run.
enum Sink<'t, 'r> {
    Txn(&'t Transaction<'r>),
    Dry {
        repo: &'r Repo,
        meta: Mutex<HashMap<(ObjectType, Checksum), Vec<u8>>>,
    },
}

impl Sink<'_, '_> {
    fn has(&self, t: ObjectType, c: &Checksum) -> Result<bool> {
        match self {
            Sink::Txn(txn) => txn.has_object(t, c),
            Sink::Dry { repo, meta } => {
                Ok(meta.lock().expect("poisoned").contains_key(&(t, *c))
                    || repo.has_object(t, c)?)
            }
        }
    }

    fn read(&self, t: ObjectType, c: &Checksum) -> Result<Option<Vec<u8>>> {
        match self {
            Sink::Txn(txn) => txn.read_metadata(t, c),
            Sink::Dry { repo, meta } => match meta.lock().expect("poisoned").get(&(t, *c)) {
                Some(d) => Ok(Some(d.clone())),
                None => arbor_repo::objects::read_metadata_optional(repo, t, c),
            },
        }
    }

    fn put(&self, t: ObjectType, data: &[u8]) -> Result<()> {
        match self {
            Sink::Txn(txn) => txn.write_metadata(t, data).map(|_| ()),
            Sink::Dry { meta, .. } => {
                meta.lock()
                    .expect("poisoned")
                    .insert((t, Checksum::digest(data)), data.to_vec());
                Ok(())
            }
        }
    }

    fn repo(&self) -> &Repo {
        match self {
            Sink::Txn(txn) => txn.repo(),
            Sink::Dry { repo, .. } => repo,
        }
    }
}

/// Path of an object on the server (always archive layout).
fn object_path(t: ObjectType, c: &Checksum) -> String {
    format!("objects/{}", c.loose_path(t, RepoMode::Archive))
}

/// Reads the remote's settings that matter to a pull.
#[derive(Debug)]
struct RemoteSettings {
    fetch: FetchOptions,
    collection_id: Option<String>,
    /// Keys commits must be signed with (`sign-verify`).
    keys: Option<arbor_repo::sign::TrustedKeys>,
    /// Keys `summary.sig` must verify with (`sign-verify-summary`).
    summary_keys: Option<arbor_repo::sign::TrustedKeys>,
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

fn remote_settings(repo: &Repo, remote: &Remote) -> Result<RemoteSettings> {
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
    fetch.tls_ca_path = option(remote, "tls-ca-path").map(Into::into);
    fetch.tls_permissive = parse_bool(remote, "tls-permissive", false)?;
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
struct FetchedSummary {
    bytes: Vec<u8>,
    sig: Option<Vec<u8>>,
    summary: Summary,
}

/// Fetches and (if required) verifies the remote's summary.
fn fetch_summary(
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
fn resolve_wanted(
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
                .ok_or_else(|| anyhow!("No such branch '{r}' in the remote summary"))?;
            out.push(Wanted {
                name: Some(name),
                commit: e.checksum,
                size: Some(e.commit_size),
            });
            continue;
        }
        let path = format!("refs/heads/{}", name.as_str());
        let body = fetcher
            .fetch_bytes(&path, 1024)?
            .ok_or_else(|| anyhow!("Remote ref '{r}' not found"))?;
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

/// Shared state of the tree fetch.
struct Walk<'a, 't, 'r> {
    fetcher: &'a Fetcher,
    sink: &'a Sink<'t, 'r>,
    progress: &'a dyn Progress,
    dry_run: bool,
    state: Mutex<WalkState>,
    wake: Condvar,
}

#[derive(Default)]
struct WalkState {
    /// Metadata first: it discovers more work.
    meta: VecDeque<(ObjectType, Checksum)>,
    files: VecDeque<Checksum>,
    /// Objects queued (never queued twice).
    queued: HashSet<(ObjectType, Checksum)>,
    /// Workers busy with a job.
    active: usize,
    error: Option<anyhow::Error>,
    total: u64,
    metadata_fetched: u64,
    content_fetched: u64,
    content_bytes: u64,
}

enum Job {
    Meta(ObjectType, Checksum),
    File(Checksum),
}

impl Walk<'_, '_, '_> {
    /// Queues an object unless it was queued before; true if queued now.
    /// The caller wakes a worker per queued object once the lock is released.
    fn enqueue(&self, st: &mut WalkState, t: ObjectType, c: Checksum) -> bool {
        if st.queued.insert((t, c)) {
            if t == ObjectType::File {
                st.files.push_back(c);
            } else {
                st.meta.push_back((t, c));
            }
            st.total += 1;
            self.progress.set_total(st.total);
            return true;
        }
        false
    }

    fn next_job(&self) -> Option<Job> {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if st.error.is_some() {
                return None;
            }
            if let Some((t, c)) = st.meta.pop_front() {
                st.active += 1;
                return Some(Job::Meta(t, c));
            }
            if let Some(c) = st.files.pop_front() {
                st.active += 1;
                return Some(Job::File(c));
            }
            if st.active == 0 {
                return None;
            }
            st = self
                .wake
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn worker(&self) {
        while let Some(job) = self.next_job() {
            // A panic in a job (a bug) must not leave the others waiting
            // for it forever: it becomes this job's error.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match job {
                Job::Meta(t, c) => self.metadata(t, &c),
                Job::File(c) => self.file(&c),
            }))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(anyhow!("Internal error: a pull worker panicked: {msg}"))
            });
            self.progress.inc(1);
            let mut st = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.active -= 1;
            if let Err(e) = r {
                st.error.get_or_insert(e);
            }
            // Waiting workers only need waking to stop (new jobs wake
            // them as they are queued).
            let done =
                st.error.is_some() || (st.active == 0 && st.meta.is_empty() && st.files.is_empty());
            drop(st);
            if done {
                self.wake.notify_all();
            }
        }
    }

    /// Fetches (unless present) a dirtree or dirmeta, verifies and stores
    /// it; for a dirtree, queues what it references that is missing.
    fn metadata(&self, t: ObjectType, c: &Checksum) -> Result<()> {
        let data = match self.sink.read(t, c)? {
            Some(d) => d,
            None => {
                let d = fetch_metadata(self.fetcher, t, c, MAX_METADATA_SIZE)?;
                self.progress.inc_bytes(d.len() as u64);
                self.state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .metadata_fetched += 1;
                d
            }
        };
        if t == ObjectType::DirMeta {
            DirMeta::decode(&data).map_err(|e| anyhow!("Invalid dirmeta {c}: {e}"))?;
            return self.sink.put(t, &data);
        }
        let tree = DirTree::decode(&data).map_err(|e| anyhow!("Invalid dirtree {c}: {e}"))?;
        self.sink.put(t, &data)?;
        let mut missing = Vec::new();
        for f in &tree.files {
            if !self.sink.has(ObjectType::File, &f.checksum)? {
                missing.push(f.checksum);
            }
        }
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut queued = 0;
        for d in &tree.dirs {
            queued += usize::from(self.enqueue(&mut st, ObjectType::DirMeta, d.meta));
            queued += usize::from(self.enqueue(&mut st, ObjectType::DirTree, d.tree));
        }
        for f in missing {
            queued += usize::from(self.enqueue(&mut st, ObjectType::File, f));
        }
        drop(st);
        for _ in 0..queued {
            self.wake.notify_one();
        }
        Ok(())
    }

    fn file(&self, c: &Checksum) -> Result<()> {
        let path = object_path(ObjectType::File, c);
        if self.dry_run {
            let size = self
                .fetcher
                .size(&path)?
                .ok_or_else(|| anyhow!("File object {c} not found on the remote"))?;
            let mut st = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.content_fetched += 1;
            st.content_bytes = st.content_bytes.checked_add(size).ok_or_else(|| {
                anyhow!("The remote announces impossible sizes (file object {c}: {size} bytes)")
            })?;
            return Ok(());
        }
        let Sink::Txn(txn) = self.sink else {
            unreachable!("only dry runs have no transaction")
        };
        let archive = txn.repo().mode() == RepoMode::Archive;
        let got = self
            .fetcher
            .fetch(&path, u64::MAX, |body| {
                store_filez(txn, c, body, archive)?;
                // Whatever the body still holds is not stored; read a little
                // of it to keep the connection, else let it close.
                std::io::copy(
                    &mut std::io::Read::take(&mut *body, 64 * 1024),
                    &mut std::io::sink(),
                )?;
                Ok(body.bytes_read())
            })
            .with_context(|| format!("Fetching file object {c}"))?
            .ok_or_else(|| anyhow!("File object {c} not found on the remote"))?;
        self.progress.inc_bytes(got);
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.content_fetched += 1;
        st.content_bytes += got;
        Ok(())
    }
}

/// Verifies and stages one `.filez` body.
fn store_filez(
    txn: &Transaction<'_>,
    c: &Checksum,
    body: &mut Body<'_>,
    archive: bool,
) -> Result<()> {
    if archive {
        // Kept byte for byte; write_filez_verbatim bounds and verifies it.
        return txn.write_filez_verbatim(*c, body);
    }
    let ah = read_filez_header(body).map_err(|e| anyhow!("Invalid file object {c}: {e}"))?;
    if ah.size > arbor_repo::txn::MAX_FILE_SIZE {
        bail!(
            "File object {c} declares {} bytes, more than the {} accepted",
            ah.size,
            arbor_repo::txn::MAX_FILE_SIZE
        );
    }
    let header_len = body.bytes_read();
    if ah.header.is_symlink() {
        body.set_limit(header_len);
        txn.write_file(&ah.header, 0, &mut std::io::empty(), Some(*c))?;
        return Ok(());
    }
    body.set_limit(header_len.saturating_add(deflate_bound(ah.size)));
    if txn.repo().mode() == RepoMode::BareUserOnly
        && (ah.header.uid != 0 || ah.header.gid != 0 || !ah.header.xattrs.is_empty())
    {
        bail!("File object {c} has ownership or xattrs, which a bare-user-only repository cannot store");
    }
    arbor_repo::objects::with_inflater(BufReader::with_capacity(64 * 1024, body), |inflate| {
        txn.write_file(&ah.header, ah.size, inflate, Some(*c))
    })?;
    Ok(())
}

/// Fetches a metadata object and checks that it hashes to its name.
fn fetch_metadata(fetcher: &Fetcher, t: ObjectType, c: &Checksum, limit: u64) -> Result<Vec<u8>> {
    let data = fetcher
        .fetch_bytes(&object_path(t, c), limit)
        .with_context(|| format!("Fetching {t} object {c}"))?
        .ok_or_else(|| anyhow!("{t} object {c} not found on the remote"))?;
    let actual = Checksum::digest(&data);
    if actual != *c {
        bail!("Corrupted {t} object {c} from the remote: its content hashes to {actual}");
    }
    Ok(data)
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
                        t.mark_partial(&id);
                    }
                }
            } else if !complete {
                roots.push(commit.root_meta);
                roots.push(commit.root_tree);
                if let Some(t) = &txn {
                    t.mark_complete(&id);
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
        let mut st = walk.state.lock().expect("poisoned");
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

/// ostree's binding checks: a commit listing `ostree.ref-binding` may only
/// be pulled under one of those refs; with a remote `collection-id`, the
/// commit must be bound to it.
fn check_bindings(
    commit: &Commit,
    id: &Checksum,
    name: Option<&RefName>,
    s: &RemoteSettings,
) -> Result<()> {
    match commit.metadata.get("ostree.ref-binding") {
        None if s.collection_id.is_some() => {
            bail!("Commit {id} has no ref binding, which a remote with a collection ID requires")
        }
        None => {}
        Some(Value::StrArray(bound)) => {
            if let Some(name) = name {
                if !bound.iter().any(|b| b == name.as_str()) {
                    bail!(
                        "Commit {id} is not bound to ref '{}' (bound to: {})",
                        name.as_str(),
                        bound.join(", ")
                    );
                }
            }
        }
        Some(_) => bail!("Commit {id} has a malformed ostree.ref-binding"),
    }
    if let Some(cid) = &s.collection_id {
        match commit.metadata.get_str("ostree.collection-binding") {
            Some(b) if b == cid => {}
            Some(b) => bail!("Commit {id} is bound to collection '{b}', not '{cid}'"),
            None => bail!("Commit {id} has no collection binding; the remote expects '{cid}'"),
        }
    }
    Ok(())
}

/// Refuses to move a ref to a commit older (by timestamp) than the one it
/// names now, the downgrade an attacker replaying an old, validly signed
/// commit would cause.
fn check_downgrade(repo: &Repo, commit: &Commit, id: &Checksum, spec: &RefSpec) -> Result<()> {
    let Some(old) = arbor_repo::refs::read_ref(repo, spec)? else {
        return Ok(());
    };
    if old == *id || !repo.has_object(ObjectType::Commit, &old)? {
        return Ok(());
    }
    let old_commit = arbor_repo::objects::load_commit(repo, &old)?;
    if commit.timestamp < old_commit.timestamp {
        bail!(
            "Refusing to downgrade {spec} from {old} ({}) to the older {id} ({}); \
             use --allow-downgrade to pull it anyway",
            fmt_time(old_commit.timestamp),
            fmt_time(commit.timestamp)
        );
    }
    Ok(())
}

fn fmt_time(ts: u64) -> String {
    format!("timestamp {ts}")
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
