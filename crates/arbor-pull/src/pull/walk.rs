//! The tree walk, the same for every [`Source`]: dirtrees and dirmeta
//! first, file objects as they are discovered, read by a pool of workers
//! and verified before staging.
//!
//! The walk is iterative: a queue of typed `(ObjectType, Checksum)`
//! entries, each object queued once, so a tree of any depth costs heap,
//! not stack.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufReader, Read};
use std::sync::{Condvar, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use arbor_format::{Checksum, DirMeta, DirTree, ObjectType, RepoMode};
use arbor_repo::objects::{read_filez_header, MAX_METADATA_SIZE};
use arbor_repo::txn::{deflate_bound, Transaction};
use arbor_repo::{Progress, Repo};

use super::source::{FileStream, Source};

/// Where verified objects go: a transaction, or memory for a dry run.
pub(super) enum Sink<'t, 'r> {
    Txn(&'t Transaction<'r>),
    Dry {
        repo: &'r Repo,
        meta: Mutex<HashMap<(ObjectType, Checksum), Vec<u8>>>,
    },
}

/// Locks `m`, poisoned or not: a worker that panicked (its panic is
/// caught and becomes the pull's error) leaves each value whole, and the
/// other workers must stop through that error, not a second panic.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sink<'_, '_> {
    pub(super) fn has(&self, t: ObjectType, c: &Checksum) -> Result<bool> {
        match self {
            Sink::Txn(txn) => txn.has_object(t, c),
            Sink::Dry { repo, meta } => {
                Ok(locked(meta).contains_key(&(t, *c)) || repo.has_object(t, c)?)
            }
        }
    }

    pub(super) fn read(&self, t: ObjectType, c: &Checksum) -> Result<Option<Vec<u8>>> {
        match self {
            Sink::Txn(txn) => txn.read_metadata(t, c),
            Sink::Dry { repo, meta } => match locked(meta).get(&(t, *c)) {
                Some(d) => Ok(Some(d.clone())),
                None => arbor_repo::objects::read_metadata_optional(repo, t, c),
            },
        }
    }

    pub(super) fn put(&self, t: ObjectType, data: &[u8]) -> Result<()> {
        match self {
            Sink::Txn(txn) => txn.write_metadata(t, data).map(|_| ()),
            Sink::Dry { meta, .. } => {
                locked(meta).insert((t, Checksum::digest(data)), data.to_vec());
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

/// Shared state of the tree fetch.
pub(super) struct Walk<'a, 't, 'r> {
    source: &'a dyn Source,
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
    counts: WalkCounts,
}

/// What a tree walk fetched.
#[derive(Debug, Default)]
pub(super) struct WalkCounts {
    pub(super) metadata_fetched: u64,
    pub(super) content_fetched: u64,
    pub(super) content_bytes: u64,
}

enum Job {
    Meta(ObjectType, Checksum),
    File(Checksum),
}

impl<'a, 't, 'r> Walk<'a, 't, 'r> {
    /// A walk storing into `sink` what it reads from `source`; with
    /// `dry_run`, file objects are only sized, not read.
    pub(super) fn new(
        source: &'a dyn Source,
        sink: &'a Sink<'t, 'r>,
        progress: &'a dyn Progress,
        dry_run: bool,
    ) -> Self {
        Walk {
            source,
            sink,
            progress,
            dry_run,
            state: Mutex::new(WalkState::default()),
            wake: Condvar::new(),
        }
    }

    /// Walks the trees under `roots` (dirmeta and dirtree objects) with
    /// `workers` threads, reporting progress as `phase`; returns what it
    /// fetched, or the first error.
    pub(super) fn run(
        self,
        roots: &[(ObjectType, Checksum)],
        workers: usize,
        phase: &str,
    ) -> Result<WalkCounts> {
        {
            // The roots, queued before the bar starts (enqueue reports totals).
            let mut st = locked(&self.state);
            for &(t, c) in roots {
                if st.queued.insert((t, c)) {
                    st.meta.push_back((t, c));
                    st.total += 1;
                }
            }
            self.progress.start(phase, st.total);
        }
        std::thread::scope(|s| {
            for _ in 0..workers.max(1) {
                s.spawn(|| self.worker());
            }
        });
        self.progress.finish();
        let st = self
            .state
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match st.error {
            Some(e) => Err(e),
            None => Ok(st.counts),
        }
    }

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
        let mut st = locked(&self.state);
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
            let mut st = locked(&self.state);
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
                let d = fetch_metadata(self.source, t, c, MAX_METADATA_SIZE)?;
                self.progress.inc_bytes(d.len() as u64);
                locked(&self.state).counts.metadata_fetched += 1;
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
        let mut st = locked(&self.state);
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
        let missing = || anyhow!("File object {c} not found on {}", self.source.name());
        if self.dry_run {
            let size = self.source.file_size(c)?.ok_or_else(missing)?;
            let mut st = locked(&self.state);
            st.counts.content_fetched += 1;
            st.counts.content_bytes =
                st.counts.content_bytes.checked_add(size).ok_or_else(|| {
                    anyhow!(
                        "{} announces impossible sizes (file object {c}: {size} bytes)",
                        self.source.name()
                    )
                })?;
            return Ok(());
        }
        let Sink::Txn(txn) = self.sink else {
            unreachable!("only dry runs have no transaction")
        };
        let got = self
            .source
            .file(c, &mut |stream| store_file(txn, c, stream))
            .with_context(|| format!("Fetching file object {c}"))?
            .ok_or_else(missing)?;
        self.progress.inc_bytes(got);
        let mut st = locked(&self.state);
        st.counts.content_fetched += 1;
        st.counts.content_bytes += got;
        Ok(())
    }
}

/// What is read of a stream after its object is stored: enough to keep
/// an HTTP connection for the next request, not a flood.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// Verifies and stages one file object, whatever its source: the
/// transaction recomputes its checksum (and applies the repository mode's
/// rules, e.g. bare-user-only's) before anything is staged.
pub(super) fn store_file(
    txn: &Transaction<'_>,
    c: &Checksum,
    stream: FileStream<'_>,
) -> Result<()> {
    match stream {
        FileStream::Filez(raw) => store_filez(txn, c, raw),
        FileStream::Unpacked {
            header,
            size,
            content,
        } => {
            check_declared_size(c, size)?;
            txn.write_file(&header, size, content, Some(*c))?;
            Ok(())
        }
    }
}

/// Refuses a file object declaring more content than any accepted, before
/// anything is read or written.
fn check_declared_size(c: &Checksum, size: u64) -> Result<()> {
    if size > arbor_repo::txn::MAX_FILE_SIZE {
        bail!(
            "File object {c} declares {size} bytes, more than the {} accepted",
            arbor_repo::txn::MAX_FILE_SIZE
        );
    }
    Ok(())
}

/// A reader that refuses to go past `limit` bytes (one byte more is an
/// error, not the end), counting what it read.
struct Bounded<'a> {
    inner: &'a mut dyn Read,
    read: u64,
    limit: u64,
    object: Checksum,
}

impl Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read >= self.limit {
            // One byte past the limit tells "exactly at the limit" from "more".
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "File object {} is larger than {} bytes",
                        self.object, self.limit
                    ),
                )),
            };
        }
        let room = usize::try_from(self.limit - self.read).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Verifies and stages one `.filez` stream, then reads a little of what
/// follows (more than its declared size allows is an error).
fn store_filez(txn: &Transaction<'_>, c: &Checksum, raw: &mut dyn Read) -> Result<()> {
    if txn.repo().mode() == RepoMode::Archive {
        // Kept byte for byte; write_filez_verbatim bounds and verifies it.
        txn.write_filez_verbatim(*c, raw)?;
        std::io::copy(&mut raw.take(DRAIN_LIMIT), &mut std::io::sink())?;
        return Ok(());
    }
    let mut body = Bounded {
        inner: raw,
        read: 0,
        limit: u64::MAX,
        object: *c,
    };
    let ah = read_filez_header(&mut body).map_err(|e| anyhow!("Invalid file object {c}: {e}"))?;
    check_declared_size(c, ah.size)?;
    let header_len = body.read;
    if ah.header.is_symlink() {
        body.limit = header_len;
        txn.write_file(&ah.header, 0, &mut std::io::empty(), Some(*c))?;
    } else {
        body.limit = header_len.saturating_add(deflate_bound(ah.size));
        arbor_repo::objects::with_inflater(
            BufReader::with_capacity(64 * 1024, &mut body),
            |inflate| txn.write_file(&ah.header, ah.size, inflate, Some(*c)),
        )?;
    }
    std::io::copy(&mut (&mut body).take(DRAIN_LIMIT), &mut std::io::sink())?;
    Ok(())
}

/// Reads a metadata object from `source` and checks that it hashes to its
/// name; `None` if the source lacks it.
pub(super) fn fetch_metadata_optional(
    source: &dyn Source,
    t: ObjectType,
    c: &Checksum,
    limit: u64,
) -> Result<Option<Vec<u8>>> {
    let Some(data) = source
        .metadata(t, c, limit)
        .with_context(|| format!("Fetching {t} object {c}"))?
    else {
        return Ok(None);
    };
    let actual = Checksum::digest(&data);
    if actual != *c {
        bail!(
            "Corrupted {t} object {c} from {}: its content hashes to {actual}",
            source.name()
        );
    }
    Ok(Some(data))
}

/// As [`fetch_metadata_optional`], the object being required.
pub(super) fn fetch_metadata(
    source: &dyn Source,
    t: ObjectType,
    c: &Checksum,
    limit: u64,
) -> Result<Vec<u8>> {
    fetch_metadata_optional(source, t, c, limit)?
        .ok_or_else(|| anyhow!("{t} object {c} not found on {}", source.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounded_read(data: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
        let mut inner: &[u8] = data;
        let mut b = Bounded {
            inner: &mut inner,
            read: 0,
            limit,
            object: Checksum::digest(b""),
        };
        let mut out = Vec::new();
        b.read_to_end(&mut out)?;
        assert_eq!(b.read, out.len() as u64);
        Ok(out)
    }

    #[test]
    fn a_declared_size_past_the_limit_is_refused_from_any_source() {
        // An unpacked object (pull-local) is held to the same limit as a
        // .filez stream, before anything is read.
        let td = tempfile::tempdir().expect("tempdir");
        let repo = arbor_repo::Repo::init(td.path(), RepoMode::BareUser).expect("init");
        let repo = repo.lock(false).expect("lock");
        let txn = Transaction::begin(&repo).expect("txn");
        let c = Checksum::digest(b"huge");
        let header = arbor_format::FileHeader {
            uid: 0,
            gid: 0,
            mode: 0o100644,
            symlink_target: String::new(),
            xattrs: vec![],
        };
        let size = arbor_repo::txn::MAX_FILE_SIZE + 1;
        let stream = FileStream::Unpacked {
            header,
            size,
            // A little content: without the check, a short object error.
            content: &mut std::io::repeat(0).take(1 << 20),
        };
        let err = store_file(&txn, &c, stream).expect_err("refused");
        assert!(
            format!("{err:#}").contains(&format!("declares {size} bytes")),
            "{err:#}"
        );
    }

    #[test]
    fn bounded_refuses_one_byte_past_its_limit() {
        for (len, limit, ok) in [
            (0, 0, true),
            (10, 10, true),
            (10, 11, true),
            (11, 10, false),
        ] {
            let data = vec![7u8; len];
            match bounded_read(&data, limit) {
                Ok(out) => assert!(ok && out == data, "{len} {limit}"),
                Err(e) => {
                    assert!(!ok, "{len} {limit}: {e}");
                    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
                    assert!(e.to_string().contains("larger than 10 bytes"), "{e}");
                }
            }
        }
    }
}
