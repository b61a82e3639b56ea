//! Write transactions.
//!
//! Objects are written into a private staging directory
//! `tmp/arbor-staging-BOOTID-PID-NONCE-N/` (fanned out as `XX/REST.EXT`,
//! like `objects/`). Every object is written under a temporary name and
//! renamed to its staged name only once it is complete and verified, so a
//! staged name always holds a whole, correct object. [`Transaction::commit`]
//! then follows libostree's order (`ostree_repo_commit_transaction`):
//!
//! 1. one `syncfs` barrier makes every staged byte durable;
//! 2. staged objects are renamed into `objects/XX/` (commits last, so an
//!    object reachable from a published commit is published before it);
//! 3. a second `syncfs` makes those renames durable;
//! 4. refs are replaced atomically (temp file, fsync, rename, fsync dir).
//!
//! So an object only ever appears under its final name with complete,
//! synced content, and a ref only points at objects already durable. A crash
//! at any instant leaves the old ref or the new one, plus at worst
//! unreferenced objects (removed by `prune`) and a stale staging directory.
//! A transaction dropped without committing (an error) leaves its staging
//! directory the same way, for the next one to adopt.
//!
//! **Resuming.** The next transaction adopts a stale staging directory of
//! the *same boot* (ostree does the same with its `staging-BOOTID-*`): its
//! staged objects were complete and verified when renamed, and since the
//! kernel has not restarted their bytes are intact in the page cache even
//! though never synced, so a killed pull resumes without fetching them
//! again. After a reboot (power loss) staged bytes may be lost, so
//! directories of other boots are deleted, never adopted. Adopted commits
//! (and detached metadata) are not published unless this transaction
//! claims them ([`Transaction::claim_staged`]): a commit staged by a pull
//! that died before fetching its tree must not appear complete.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use arbor_format::{Checksum, ObjectType, RepoMode};
use fn_error_context::context;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::mutex::{lock, lock_recovering};
use crate::refs::RefUpdate;
use crate::repo::{Repo, RepoLock};
use arbor_fs::failpoint;

mod staging;
mod write;

use staging::{boot_id, cleanup_stale_staging, clear_staging, create_staging, scan_adopted};
pub(crate) use write::BARE_USER_XATTR;
use write::DEFAULT_ZLIB_LEVEL;
pub use write::{deflate_bound, MAX_FILE_SIZE};

/// What the `pending` and `adopted` mutexes guard, for poison errors.
const STAGED: &str = "the set of staged objects";
const ADOPTED: &str = "the set of adopted objects";
const PARTIAL: &str = "the partial-commit markers";

/// Prefix of arbor's staging directories under `tmp/`. Deliberately not
/// ostree's `staging-`: ostree guards its staging directories with a
/// sibling `NAME-lock` file, and arbor must never touch those.
pub const STAGING_PREFIX: &str = "arbor-staging-";

/// Counters of a transaction.
#[derive(Debug, Default)]
pub struct TxnStats {
    /// Objects newly written.
    pub written: AtomicU64,
    /// Objects that were already present and therefore not rewritten.
    pub skipped: AtomicU64,
    /// Bytes of content read from the input.
    pub content_bytes: AtomicU64,
}

/// An open write transaction; see the module docs for the crash guarantee.
///
/// Dropping it without [`Transaction::commit`] keeps the staged objects in
/// their (unlocked) staging directory for the next transaction to adopt.
#[derive(Debug)]
pub struct Transaction<'r> {
    repo: &'r Repo,
    /// Proof that the repository lock is held while the transaction lives.
    lock: &'r RepoLock<'r>,
    staging: OwnedFd,
    staging_name: String,
    pending: Mutex<HashSet<(ObjectType, Checksum)>>,
    /// Commits and detached metadata adopted from a crashed transaction,
    /// published only when claimed.
    adopted: Mutex<HashSet<(ObjectType, Checksum)>>,
    /// Commits to mark partial (`state/C.commitpartial`) before anything is
    /// published, and commits whose marker is removed once complete.
    partial: Mutex<(HashSet<Checksum>, HashSet<Checksum>)>,
    /// Which `XX/` fan-out directories exist in the staging directory.
    staging_dirs: [AtomicBool; 256],
    counter: AtomicU64,
    zlib_level: u32,
    /// Statistics.
    pub stats: TxnStats,
    /// Set once [`Transaction::commit`] succeeded.
    committed: bool,
}

impl<'r> Transaction<'r> {
    /// Starts a transaction under the repository lock the caller holds
    /// (shared is enough: writers only add objects), removes stale staging
    /// directories and adopts one of this boot (see the module docs) or
    /// creates a fresh, locked one.
    ///
    /// ```compile_fail
    /// # use arbor_repo::{txn::Transaction, Repo};
    /// fn write(repo: &Repo) -> anyhow::Result<()> {
    ///     Transaction::begin(repo)?.commit(&[]) // no proof of the lock
    /// }
    /// ```
    ///
    /// ```
    /// # use arbor_repo::{txn::Transaction, Repo};
    /// fn write(repo: &Repo) -> anyhow::Result<()> {
    ///     Transaction::begin(&repo.lock(false)?)?.commit(&[])
    /// }
    /// ```
    #[context("Starting transaction")]
    pub fn begin(lock: &'r RepoLock<'r>) -> Result<Transaction<'r>> {
        let repo = lock.repo();
        if repo.mode() == RepoMode::BareSplitXattrs {
            bail!("Writing bare-split-xattrs repositories is not supported");
        }
        let tmp = arbor_fs::ensure_dir_path(&repo.dir, "tmp", 0o775)?;
        let boot = boot_id();
        let mode = repo.mode();
        let mut pending = HashSet::new();
        let mut adopted = HashSet::new();
        let mut staging_dirs: [AtomicBool; 256] = std::array::from_fn(|_| AtomicBool::new(false));
        let (staging, staging_name) = match cleanup_stale_staging(&tmp, boot.as_deref())? {
            Some((fd, name)) => {
                let objs = scan_adopted(&fd, mode)
                    .with_context(|| format!("Adopting staged objects of tmp/{name}"))?;
                tracing::debug!("adopting {} staged objects of {name}", objs.len());
                for (t, c) in objs {
                    staging_dirs[c.as_bytes()[0] as usize] = AtomicBool::new(true);
                    if matches!(t, ObjectType::Commit | ObjectType::CommitMeta) {
                        adopted.insert((t, c));
                    } else {
                        pending.insert((t, c));
                    }
                }
                (fd, name)
            }
            None => create_staging(&tmp, boot.as_deref())?,
        };
        let zlib_level = match repo.config().get("archive", "zlib-level") {
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|l| (1..=9).contains(l))
                .ok_or_else(|| anyhow!("Invalid archive.zlib-level '{v}'"))?,
            None => DEFAULT_ZLIB_LEVEL,
        };
        Ok(Transaction {
            repo,
            lock,
            staging,
            staging_name,
            pending: Mutex::new(pending),
            adopted: Mutex::new(adopted),
            partial: Mutex::new((HashSet::new(), HashSet::new())),
            staging_dirs,
            counter: AtomicU64::new(0),
            zlib_level,
            stats: TxnStats::default(),
            committed: false,
        })
    }

    /// The repository this transaction writes to.
    pub fn repo(&self) -> &'r Repo {
        self.repo
    }

    /// Name of a staged object relative to the staging directory: the same
    /// `XX/REST.EXT` as under `objects/`.
    fn staged_name(t: ObjectType, c: &Checksum, mode: RepoMode) -> String {
        c.loose_path(t, mode)
    }

    /// Whether the object is in the repository or already staged here
    /// (including adopted, unclaimed commits).
    pub fn has_object(&self, t: ObjectType, c: &Checksum) -> Result<bool> {
        if lock(&self.pending, STAGED)?.contains(&(t, *c))
            || lock(&self.adopted, ADOPTED)?.contains(&(t, *c))
        {
            return Ok(true);
        }
        self.repo.has_object(t, c)
    }

    /// Claims an object adopted from a crashed transaction (a commit or its
    /// detached metadata), so that [`Transaction::commit`] publishes it.
    /// Returns false when there is no such adopted object.
    pub fn claim_staged(&self, t: ObjectType, c: &Checksum) -> Result<bool> {
        if lock(&self.adopted, ADOPTED)?.remove(&(t, *c)) {
            lock(&self.pending, STAGED)?.insert((t, *c));
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Reads a metadata object (or detached metadata) from the repository
    /// or, if only staged (by this or an adopted transaction), from the
    /// staging directory. `None` if it is in neither.
    pub fn read_metadata(&self, t: ObjectType, c: &Checksum) -> Result<Option<Vec<u8>>> {
        let staged = lock(&self.pending, STAGED)?.contains(&(t, *c))
            || lock(&self.adopted, ADOPTED)?.contains(&(t, *c));
        if staged {
            let name = Self::staged_name(t, c, self.repo.mode());
            let fd = rustix::fs::openat(
                &self.staging,
                name.as_str(),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .with_context(|| format!("Opening staged {t} {c}"))?;
            let mut data = Vec::new();
            File::from(fd)
                .take(crate::objects::MAX_METADATA_SIZE + 1)
                .read_to_end(&mut data)?;
            if data.len() as u64 > crate::objects::MAX_METADATA_SIZE {
                bail!("Staged {t} {c} is too large");
            }
            return Ok(Some(data));
        }
        crate::objects::read_metadata_optional(self.repo, t, c)
    }

    /// Reserves `(t, c)` for writing; false if present, already reserved,
    /// or staged by an adopted transaction (which it then claims).
    fn reserve(&self, t: ObjectType, c: &Checksum) -> Result<bool> {
        if self.repo.has_object(t, c)? || self.claim_staged(t, c)? {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let fresh = lock(&self.pending, STAGED)?.insert((t, *c));
        if !fresh {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(fresh)
    }

    /// Stages a metadata object (dirtree, dirmeta, commit) named by the
    /// SHA-256 of `data`, unless present. Returns its checksum.
    pub fn write_metadata(&self, t: ObjectType, data: &[u8]) -> Result<Checksum> {
        let c = Checksum::digest(data);
        if self.reserve(t, &c)? {
            self.ensure_staging_subdir(&c)?;
            self.write_staged_bytes(&Self::staged_name(t, &c, self.repo.mode()), data)
                .with_context(|| format!("Writing {t} object {c}"))
                .inspect_err(|_| {
                    lock_recovering(&self.pending).remove(&(t, c));
                })?;
            self.stats.written.fetch_add(1, Ordering::Relaxed);
        }
        Ok(c)
    }

    /// Stages the detached metadata of `commit` (replacing any on publish).
    pub fn write_commitmeta(&self, commit: &Checksum, data: &[u8]) -> Result<()> {
        let t = ObjectType::CommitMeta;
        lock(&self.adopted, ADOPTED)?.remove(&(t, *commit));
        lock(&self.pending, STAGED)?.insert((t, *commit));
        self.ensure_staging_subdir(commit)?;
        let name = Self::staged_name(t, commit, self.repo.mode());
        self.write_staged_bytes(&name, data)
    }

    /// Writes `data` to a temporary name, then renames it to `name`
    /// (replacing), so `name` only ever holds complete bytes.
    fn write_staged_bytes(&self, name: &str, data: &[u8]) -> Result<()> {
        let tmp = match name.rsplit_once('/') {
            Some((dir, _)) => format!(
                "{dir}/.tmp-{}",
                self.counter.fetch_add(1, Ordering::Relaxed)
            ),
            None => self.tmp_name(),
        };
        let r = (|| -> Result<()> {
            let mut f = self.create_tmp(&tmp, 0o644)?;
            f.write_all(data)?;
            rustix::fs::renameat(&self.staging, tmp.as_str(), &self.staging, name)?;
            Ok(())
        })();
        if r.is_err() {
            let _ = rustix::fs::unlinkat(&self.staging, tmp.as_str(), AtFlags::empty());
        }
        r
    }

    /// Marks `commit` partial (`state/COMMIT.commitpartial`, as ostree
    /// does): it is published without (all of) its tree, e.g. by
    /// `pull --commit-metadata-only`. The marker is durable before the
    /// commit object appears.
    pub fn mark_partial(&self, commit: &Checksum) -> Result<()> {
        let mut p = lock(&self.partial, PARTIAL)?;
        p.1.remove(commit);
        p.0.insert(*commit);
        Ok(())
    }

    /// Removes the partial marker of `commit` once this transaction's
    /// objects are published and synced (it is now complete).
    pub fn mark_complete(&self, commit: &Checksum) -> Result<()> {
        let mut p = lock(&self.partial, PARTIAL)?;
        p.0.remove(commit);
        p.1.insert(*commit);
        Ok(())
    }

    fn tmp_name(&self) -> String {
        format!("tmp-{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// A temporary name in the `XX/` directory where `c` is staged: the
    /// final rename then stays within one directory, which on ext4 takes
    /// neither the filesystem-wide rename mutex of a cross-directory rename
    /// nor the lock of one directory shared by every writer thread.
    /// (An adopting transaction removes such leftovers: not object names.)
    fn tmp_name_near(&self, c: &Checksum) -> String {
        format!(
            "{}/.tmp-{}",
            &c.to_hex()[..2],
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Creates `XX/` in the staging directory once. Fanning staged objects
    /// out like `objects/` keeps directories small and spreads the
    /// per-directory lock that file creation and rename take, which
    /// otherwise serialises both writer threads.
    fn ensure_staging_subdir(&self, c: &Checksum) -> Result<()> {
        let idx = c.as_bytes()[0] as usize;
        if self.staging_dirs[idx].load(Ordering::Acquire) {
            return Ok(());
        }
        let prefix = &c.to_hex()[..2];
        match rustix::fs::mkdirat(&self.staging, prefix, Mode::from_raw_mode(0o775)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("Creating staging {prefix}/")),
        }
        self.staging_dirs[idx].store(true, Ordering::Release);
        Ok(())
    }

    /// Publishes the staged objects and then applies `refs`.
    ///
    /// Crash guarantee: staged data is made durable (`syncfs`) before any
    /// object is renamed into `objects/`, commits are renamed last, the
    /// renames are made durable before any ref changes, and each ref is
    /// replaced atomically. After a crash at any instant every ref names
    /// its old or its new commit, every object under its final name is
    /// complete, and nothing but unreferenced objects and a stale staging
    /// directory (removed by the next transaction) can be left over.
    #[context("Committing transaction")]
    pub fn commit(mut self, refs: &[RefUpdate]) -> Result<()> {
        failpoint::hit(failpoint::TXN_OBJECTS_STAGED);
        tracing::debug!("committing transaction: syncing staged objects");
        let fsync = self.repo.fsync_enabled();
        let (to_mark, to_complete) = std::mem::take(&mut *lock(&self.partial, PARTIAL)?);
        if !to_mark.is_empty() {
            // Before the syncfs below, which makes the markers durable
            // before any commit object is renamed into place.
            let state = arbor_fs::ensure_dir_path_durable(&self.repo.dir, "state", 0o775)?;
            for c in &to_mark {
                let name = format!("{c}.commitpartial");
                rustix::fs::openat(
                    &state,
                    name.as_str(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .with_context(|| format!("Creating state/{name}"))?;
            }
        }
        if fsync {
            rustix::fs::syncfs(&self.staging).context("Syncing staged objects")?;
        }
        failpoint::hit(failpoint::TXN_AFTER_SYNC);
        tracing::debug!("staged objects synced; publishing");
        let mut staged: Vec<(ObjectType, Checksum)> =
            lock(&self.pending, STAGED)?.iter().copied().collect();
        // Commits (and their detached metadata) last: everything a commit
        // references is in place before the commit itself appears.
        // Detached metadata just before the commits, so a signed commit
        // never appears without its signatures.
        staged.sort_by_key(|(t, c)| {
            let rank = match t {
                ObjectType::Commit => 2,
                ObjectType::CommitMeta => 1,
                _ => 0,
            };
            (rank, *c)
        });
        let mode = self.repo.mode();
        let mut made_dirs = HashSet::new();
        let half = staged.len() / 2;
        for (i, (t, c)) in staged.iter().enumerate() {
            if i == half {
                failpoint::hit(failpoint::TXN_MID_PUBLISH);
            }
            let hex = c.to_hex();
            let prefix = &hex[..2];
            if made_dirs.insert(prefix.to_string()) {
                match rustix::fs::mkdirat(&self.repo.objects, prefix, Mode::from_raw_mode(0o775)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e).with_context(|| format!("Creating objects/{prefix}")),
                }
            }
            let src = Self::staged_name(*t, c, mode);
            let dst = c.loose_path(*t, mode);
            // NOREPLACE: an object already present (maybe hardlinked into a
            // checkout) keeps its inode; ours is identical and dropped.
            // Detached metadata is the exception: it is replaced.
            let flags = if *t == ObjectType::CommitMeta {
                RenameFlags::empty()
            } else {
                RenameFlags::NOREPLACE
            };
            match rustix::fs::renameat_with(
                &self.staging,
                src.as_str(),
                &self.repo.objects,
                dst.as_str(),
                flags,
            ) {
                Ok(()) => {}
                Err(Errno::EXIST) => {
                    rustix::fs::unlinkat(&self.staging, src.as_str(), AtFlags::empty())?;
                }
                // No RENAME_NOREPLACE here (NFS, some FUSE): link, then
                // unlink, which is also atomic and never replaces.
                Err(Errno::INVAL) | Err(Errno::NOSYS) | Err(Errno::OPNOTSUPP) => {
                    match rustix::fs::linkat(
                        &self.staging,
                        src.as_str(),
                        &self.repo.objects,
                        dst.as_str(),
                        AtFlags::empty(),
                    ) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(e).with_context(|| format!("Publishing {t} object {c}"))
                        }
                    }
                    rustix::fs::unlinkat(&self.staging, src.as_str(), AtFlags::empty())?;
                }
                Err(e) => return Err(e).with_context(|| format!("Publishing {t} object {c}")),
            }
        }
        failpoint::hit(failpoint::TXN_AFTER_PUBLISH);
        // The new refs are written under temporary names now, so that the
        // barrier below makes them durable with the objects' renames; they
        // are renamed into place after it (one more barrier), never before
        // the objects they name are durably published.
        let mut staged_refs = if fsync {
            crate::refs::stage_sets_min(self.lock, refs, 1)?
        } else {
            None
        };
        tracing::debug!("objects published; syncing");
        if fsync {
            rustix::fs::syncfs(&self.repo.objects).context("Syncing published objects")?;
        }
        failpoint::hit(failpoint::TXN_AFTER_OBJECTS_SYNCED);
        if !to_complete.is_empty() {
            if let Some(state) = arbor_fs::open_dir_optional(&self.repo.dir, "state")? {
                for c in &to_complete {
                    let name = format!("{c}.commitpartial");
                    match rustix::fs::unlinkat(&state, name.as_str(), AtFlags::empty()) {
                        Ok(()) | Err(Errno::NOENT) => {}
                        Err(e) => return Err(e).with_context(|| format!("Removing state/{name}")),
                    }
                }
                if fsync {
                    rustix::fs::fsync(&state)?;
                }
            }
        }
        match &mut staged_refs {
            Some(staged) => staged.publish(self.repo)?,
            None => crate::refs::apply_updates(self.lock, refs)?,
        }
        failpoint::hit(failpoint::TXN_AFTER_REFS);
        self.committed = true;
        Ok(())
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        // Not committed (an error, or abandoned): keep what was staged for
        // the next transaction, as ostree's abort does. Every staged name
        // holds a complete, verified object, so a pull that failed halfway
        // resumes without fetching them again. The lock goes with the fd.
        let staged = !self.pending.lock().map(|p| p.is_empty()).unwrap_or(true)
            || !self.adopted.lock().map(|a| a.is_empty()).unwrap_or(true);
        if !self.committed && staged {
            tracing::debug!("keeping {} for the next transaction", self.staging_name);
            return;
        }
        // Remove whatever is left (unclaimed adopted objects).
        if let Err(e) = clear_staging(&self.staging) {
            tracing::debug!("clearing {}: {e}", self.staging_name);
        }
        if let Ok(tmp) = arbor_fs::open_dir(&self.repo.dir, "tmp") {
            if let Err(e) =
                rustix::fs::unlinkat(&tmp, self.staging_name.as_str(), AtFlags::REMOVEDIR)
            {
                tracing::debug!("removing {}: {e}", self.staging_name);
            }
        }
    }
}
