//! The tree walk: dirtrees and dirmeta first, file objects as they are
//! discovered, fetched by a pool of workers and verified before staging.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::BufReader;
use std::sync::{Condvar, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use arbor_format::{Checksum, DirMeta, DirTree, ObjectType, RepoMode};
use arbor_repo::mutex::lock;
use arbor_repo::objects::{read_filez_header, MAX_METADATA_SIZE};
use arbor_repo::txn::{deflate_bound, Transaction};
use arbor_repo::{Progress, Repo};

use crate::fetcher::{Body, Fetcher};

/// What a dry run's mutex guards, for poison errors.
const DRY_RUN: &str = "the dry run's objects";

/// Where verified objects go: a transaction, or memory for a dry run.
pub(super) enum Sink<'t, 'r> {
    Txn(&'t Transaction<'r>),
    Dry {
        repo: &'r Repo,
        meta: Mutex<HashMap<(ObjectType, Checksum), Vec<u8>>>,
    },
}

impl Sink<'_, '_> {
    pub(super) fn has(&self, t: ObjectType, c: &Checksum) -> Result<bool> {
        match self {
            Sink::Txn(txn) => txn.has_object(t, c),
            Sink::Dry { repo, meta } => {
                Ok(lock(meta, DRY_RUN)?.contains_key(&(t, *c)) || repo.has_object(t, c)?)
            }
        }
    }

    pub(super) fn read(&self, t: ObjectType, c: &Checksum) -> Result<Option<Vec<u8>>> {
        match self {
            Sink::Txn(txn) => txn.read_metadata(t, c),
            Sink::Dry { repo, meta } => match lock(meta, DRY_RUN)?.get(&(t, *c)) {
                Some(d) => Ok(Some(d.clone())),
                None => arbor_repo::objects::read_metadata_optional(repo, t, c),
            },
        }
    }

    pub(super) fn put(&self, t: ObjectType, data: &[u8]) -> Result<()> {
        match self {
            Sink::Txn(txn) => txn.write_metadata(t, data).map(|_| ()),
            Sink::Dry { meta, .. } => {
                lock(meta, DRY_RUN)?.insert((t, Checksum::digest(data)), data.to_vec());
                Ok(())
            }
        }
    }

    pub(super) fn repo(&self) -> &Repo {
        match self {
            Sink::Txn(txn) => txn.repo(),
            Sink::Dry { repo, .. } => repo,
        }
    }
}

/// Path of an object on the server (always archive layout).
pub(super) fn object_path(t: ObjectType, c: &Checksum) -> String {
    format!("objects/{}", c.loose_path(t, RepoMode::Archive))
}

/// Shared state of the tree fetch.
pub(super) struct Walk<'a, 't, 'r> {
    pub(super) fetcher: &'a Fetcher,
    pub(super) sink: &'a Sink<'t, 'r>,
    pub(super) progress: &'a dyn Progress,
    pub(super) dry_run: bool,
    pub(super) state: Mutex<WalkState>,
    pub(super) wake: Condvar,
}

#[derive(Default)]
pub(super) struct WalkState {
    /// Metadata first: it discovers more work.
    pub(super) meta: VecDeque<(ObjectType, Checksum)>,
    pub(super) files: VecDeque<Checksum>,
    /// Objects queued (never queued twice).
    pub(super) queued: HashSet<(ObjectType, Checksum)>,
    /// Workers busy with a job.
    pub(super) active: usize,
    pub(super) error: Option<anyhow::Error>,
    pub(super) total: u64,
    pub(super) metadata_fetched: u64,
    pub(super) content_fetched: u64,
    pub(super) content_bytes: u64,
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

    pub(super) fn worker(&self) {
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
pub(super) fn store_filez(
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
    arbor_repo::objects::with_inflater(BufReader::with_capacity(64 * 1024, body), |inflate| {
        txn.write_file(&ah.header, ah.size, inflate, Some(*c))
    })?;
    Ok(())
}

/// Fetches a metadata object and checks that it hashes to its name.
pub(super) fn fetch_metadata(
    fetcher: &Fetcher,
    t: ObjectType,
    c: &Checksum,
    limit: u64,
) -> Result<Vec<u8>> {
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
