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
use std::io::{BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use arbor_format::file_header::{bare_user_meta_encode, file_hasher};
use arbor_format::{ArchiveHeader, Checksum, FileHeader, ObjectType, RepoMode, Sha256};
use cap_std_ext::cap_std;
use cap_std_ext::dirext::CapStdExtDirExt;
use fn_error_context::context;
use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, RenameFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::failpoint;
use crate::refs::RefUpdate;
use crate::repo::{Repo, RepoLock};
use crate::util;

/// Prefix of arbor's staging directories under `tmp/`. Deliberately not
/// ostree's `staging-`: ostree guards its staging directories with a
/// sibling `NAME-lock` file, and arbor must never touch those.
pub const STAGING_PREFIX: &str = "arbor-staging-";
/// Buffer size for streaming file contents.
const COPY_BUF: usize = 128 * 1024;
/// `xattr` holding file metadata in bare-user repositories.
pub(crate) const BARE_USER_XATTR: &str = "user.ostreemeta";
/// Default deflate level of `.filez` payloads (ostree's default).
const DEFAULT_ZLIB_LEVEL: u32 = 6;

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
    _lock: RepoLock,
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

/// Writes `data` to `dir/name` atomically: temp file, fsync, rename, fsync
/// of the directory (via cap-std-ext). A crash leaves the old or the new file.
pub(crate) fn atomic_write(dir: impl AsFd, name: &str, data: &[u8], mode: u32) -> Result<()> {
    let d = cap_std::fs::Dir::reopen_dir(&dir.as_fd())?;
    use cap_std::fs::PermissionsExt;
    d.atomic_write_with_perms(name, data, cap_std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("Writing {name}"))
}

fn zero_times() -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        last_modification: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
    }
}

/// This boot's ID (`/proc/sys/kernel/random/boot_id` without dashes), or
/// `None` when unknown (then nothing is ever adopted).
fn boot_id() -> Option<String> {
    let s = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id: String = s.trim().chars().filter(|c| *c != '-').collect();
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Removes staging directories left by crashed transactions (those whose
/// directory `flock` nobody holds), except one of this boot, which is
/// returned locked for adoption.
fn cleanup_stale_staging(tmp: &OwnedFd, boot: Option<&str>) -> Result<Option<(OwnedFd, String)>> {
    let mut adopt = None;
    for ent in util::list_dir(tmp)? {
        let Some(name) = util::utf8_name(&ent.name) else {
            continue;
        };
        if !name.starts_with(STAGING_PREFIX) || ent.ftype != rustix::fs::FileType::Directory {
            continue;
        }
        let Some(fd) = util::open_dir_optional(tmp, name)? else {
            continue;
        };
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                let same_boot = boot.is_some_and(|b| {
                    name[STAGING_PREFIX.len()..]
                        .split('-')
                        .next()
                        .is_some_and(|id| id == b)
                });
                // Still linked (a concurrent cleanup may have removed it
                // between our listing and our lock)?
                let linked = rustix::fs::fstat(&fd)?.st_nlink > 0;
                if same_boot && linked && adopt.is_none() {
                    adopt = Some((fd, name.to_string()));
                    continue;
                }
                tracing::debug!("removing stale {name}");
                clear_staging(&fd).with_context(|| format!("Removing stale {name}"))?;
                match rustix::fs::unlinkat(tmp, name, AtFlags::REMOVEDIR) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e).with_context(|| format!("Removing {name}")),
                }
            }
            Err(Errno::WOULDBLOCK) => {}
            Err(e) => return Err(e).with_context(|| format!("Locking {name}")),
        }
    }
    Ok(adopt)
}

/// Scans an adopted staging directory: drops unfinished temporary files
/// and anything not named like a staged object; returns the objects.
fn scan_adopted(dir: &OwnedFd, mode: RepoMode) -> Result<Vec<(ObjectType, Checksum)>> {
    let mut found = Vec::new();
    for e in util::list_dir(dir)? {
        let name = String::from_utf8_lossy(&e.name).into_owned();
        let sub = (e.ftype == rustix::fs::FileType::Directory
            && name.len() == 2
            && name.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| util::open_dir(dir, &name))
        .transpose()?;
        let Some(sub) = sub else {
            remove_any(dir, &e)?;
            continue;
        };
        for f in util::list_dir(&sub)? {
            let fname = String::from_utf8_lossy(&f.name).into_owned();
            let parsed = fname.split_once('.').and_then(|(rest, ext)| {
                let c = Checksum::from_hex(&format!("{name}{rest}")).ok()?;
                let t = ObjectType::from_extension(ext)?;
                (c.loose_path(t, mode) == format!("{name}/{fname}")).then_some((t, c))
            });
            match parsed {
                Some(obj) if f.ftype != rustix::fs::FileType::Directory => found.push(obj),
                _ => remove_any(&sub, &f)?,
            }
        }
    }
    Ok(found)
}

/// Removes a file, or a directory with its contents, from `dir`.
fn remove_any(dir: &OwnedFd, e: &util::Entry) -> Result<()> {
    if e.ftype == rustix::fs::FileType::Directory {
        let name = String::from_utf8_lossy(&e.name);
        let sub = util::open_dir(dir, &name)?;
        clear_staging(&sub)?;
        rustix::fs::unlinkat(dir, e.name.as_slice(), AtFlags::REMOVEDIR)?;
    } else {
        rustix::fs::unlinkat(dir, e.name.as_slice(), AtFlags::empty())?;
    }
    Ok(())
}

/// Creates and locks a fresh staging directory.
///
/// Between `mkdirat` and `flock` another process's
/// [`cleanup_stale_staging`] may take the still-unlocked directory for a
/// stale one and remove it. Once we hold the lock nobody can, so after
/// locking we check the directory is still linked (`st_nlink > 0`) and
/// otherwise start again under a new name.
fn create_staging(tmp: &OwnedFd, boot: Option<&str>) -> Result<(OwnedFd, String)> {
    for attempt in 0u32.. {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!(
            "{STAGING_PREFIX}{}-{}-{nonce:x}-{attempt}",
            boot.unwrap_or("noboot"),
            rustix::process::getpid().as_raw_nonzero(),
        );
        rustix::fs::mkdirat(tmp, name.as_str(), Mode::from_raw_mode(0o775))
            .with_context(|| format!("Creating tmp/{name}"))?;
        let fd = match util::open_dir(tmp, &name) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if attempt < 100 => continue,
            Err(e) => return Err(e).with_context(|| format!("Opening tmp/{name}")),
        };
        rustix::fs::flock(&fd, FlockOperation::LockExclusive)?;
        if rustix::fs::fstat(&fd)?.st_nlink > 0 {
            return Ok((fd, name));
        }
        if attempt >= 100 {
            break;
        }
    }
    bail!("Could not create a staging directory: removed by concurrent cleanups")
}

impl<'r> Transaction<'r> {
    /// Starts a transaction: takes the shared repository lock, removes stale
    /// staging directories and adopts one of this boot (see the module
    /// docs) or creates a fresh, locked one.
    #[context("Starting transaction")]
    pub fn begin(repo: &'r Repo) -> Result<Transaction<'r>> {
        if repo.mode() == RepoMode::BareSplitXattrs {
            bail!("Writing bare-split-xattrs repositories is not supported");
        }
        let lock = repo.lock(false)?;
        let tmp = util::ensure_dir_path(&repo.dir, "tmp", 0o775)?;
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
            _lock: lock,
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
        if self.pending.lock().expect("poisoned").contains(&(t, *c))
            || self.adopted.lock().expect("poisoned").contains(&(t, *c))
        {
            return Ok(true);
        }
        self.repo.has_object(t, c)
    }

    /// Claims an object adopted from a crashed transaction (a commit or its
    /// detached metadata), so that [`Transaction::commit`] publishes it.
    /// Returns false when there is no such adopted object.
    pub fn claim_staged(&self, t: ObjectType, c: &Checksum) -> bool {
        if self.adopted.lock().expect("poisoned").remove(&(t, *c)) {
            self.pending.lock().expect("poisoned").insert((t, *c));
            true
        } else {
            false
        }
    }

    /// Reads a metadata object (or detached metadata) from the repository
    /// or, if only staged (by this or an adopted transaction), from the
    /// staging directory. `None` if it is in neither.
    pub fn read_metadata(&self, t: ObjectType, c: &Checksum) -> Result<Option<Vec<u8>>> {
        let staged = self.pending.lock().expect("poisoned").contains(&(t, *c))
            || self.adopted.lock().expect("poisoned").contains(&(t, *c));
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
        if self.repo.has_object(t, c)? || self.claim_staged(t, c) {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let fresh = self.pending.lock().expect("poisoned").insert((t, *c));
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
                    self.pending.lock().expect("poisoned").remove(&(t, c));
                })?;
            self.stats.written.fetch_add(1, Ordering::Relaxed);
        }
        Ok(c)
    }

    /// Stages the detached metadata of `commit` (replacing any on publish).
    pub fn write_commitmeta(&self, commit: &Checksum, data: &[u8]) -> Result<()> {
        let t = ObjectType::CommitMeta;
        self.adopted.lock().expect("poisoned").remove(&(t, *commit));
        self.pending.lock().expect("poisoned").insert((t, *commit));
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
    pub fn mark_partial(&self, commit: &Checksum) {
        let mut p = self.partial.lock().expect("poisoned");
        p.1.remove(commit);
        p.0.insert(*commit);
    }

    /// Removes the partial marker of `commit` once this transaction's
    /// objects are published and synced (it is now complete).
    pub fn mark_complete(&self, commit: &Checksum) {
        let mut p = self.partial.lock().expect("poisoned");
        p.0.remove(commit);
        p.1.insert(*commit);
    }

    /// Stages an archive-mode file object verbatim: the `.filez` bytes from
    /// `raw` are written as they are (the payload at most what deflate can
    /// take for the size the header declares), then read back, inflated
    /// (never beyond that size) and hashed; only if the checksum is
    /// `expected` is the object staged. Keeps a fetched object
    /// byte-identical to the server's.
    pub fn write_filez_verbatim(&self, expected: Checksum, raw: &mut dyn Read) -> Result<()> {
        let t = ObjectType::File;
        if self.repo.mode() != RepoMode::Archive {
            bail!("Verbatim .filez objects need an archive repository");
        }
        if !self.reserve(t, &expected)? {
            return Ok(());
        }
        let tmp = self.tmp_name_near(&expected);
        let r = (|| -> Result<()> {
            self.ensure_staging_subdir(&expected)?;
            let mut f = self.create_tmp(&tmp, 0o644)?;
            let mut prefix = [0u8; 8];
            raw.read_exact(&mut prefix)
                .with_context(|| format!("Reading the header of file object {expected}"))?;
            let hlen = arbor_format::file_header::archive_header_len(&prefix)
                .map_err(|e| anyhow!("Invalid file object {expected}: {e}"))?;
            let mut header = vec![0u8; 8 + hlen];
            header[..8].copy_from_slice(&prefix);
            raw.read_exact(&mut header[8..])
                .with_context(|| format!("Reading the header of file object {expected}"))?;
            let (ah, _) = ArchiveHeader::decode_prefixed(&header)
                .map_err(|e| anyhow!("Invalid file object {expected}: {e}"))?;
            if ah.size > MAX_FILE_SIZE {
                bail!("File object {expected} declares {} bytes, more than the {MAX_FILE_SIZE} accepted", ah.size);
            }
            f.write_all(&header)?;
            let limit = if ah.header.is_symlink() {
                0
            } else {
                deflate_bound(ah.size)
            };
            let n = std::io::copy(&mut raw.take(limit.saturating_add(1)), &mut f)?;
            if n > limit {
                bail!(
                    "File object {expected} is larger than {limit} bytes, more than its declared \
                     size of {} can take compressed",
                    ah.size
                );
            }
            let n = n + header.len() as u64;
            let fd = rustix::fs::openat(
                &self.staging,
                tmp.as_str(),
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let actual = crate::objects::checksum_filez(File::from(fd))
                .map_err(|e| anyhow!("Invalid file object {expected}: {e}"))?;
            if actual != expected {
                bail!("Corrupted file object {expected}: its content hashes to {actual}");
            }
            let name = Self::staged_name(t, &expected, RepoMode::Archive);
            rustix::fs::renameat(&self.staging, tmp.as_str(), &self.staging, name.as_str())?;
            self.stats.content_bytes.fetch_add(n, Ordering::Relaxed);
            Ok(())
        })();
        if r.is_err() {
            let _ = rustix::fs::unlinkat(&self.staging, tmp.as_str(), AtFlags::empty());
            self.pending
                .lock()
                .expect("poisoned")
                .remove(&(t, expected));
        } else {
            self.stats.written.fetch_add(1, Ordering::Relaxed);
        }
        r
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

    /// Stages a file object. `content` must yield exactly `size` bytes for a
    /// regular file (nothing is read for a symlink). If `expected` is given
    /// and the object is already present, nothing is read at all; otherwise
    /// the content is hashed while being written and must match `expected`.
    /// Memory use is constant in the file size.
    pub fn write_file(
        &self,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
        expected: Option<Checksum>,
    ) -> Result<Checksum> {
        let t = ObjectType::File;
        let mode = self.repo.mode();
        // Written to a temporary name and renamed to its staged name once
        // complete and verified (an adopting transaction relies on that).
        // With a known checksum the reservation comes first, so concurrent
        // writers of one object write it once.
        if let Some(c) = expected {
            if !self.reserve(t, &c)? {
                return Ok(c);
            }
            self.ensure_staging_subdir(&c)?;
        }
        let target = match expected {
            Some(c) => self.tmp_name_near(&c),
            None => self.tmp_name(),
        };
        let unreserve = |c: &Checksum| {
            self.pending.lock().expect("poisoned").remove(&(t, *c));
        };
        let c = match self.write_file_tmp(&target, header, size, content) {
            Ok(c) => c,
            Err(e) => {
                let _ = rustix::fs::unlinkat(&self.staging, target.as_str(), AtFlags::empty());
                if let Some(c) = expected {
                    unreserve(&c);
                }
                return Err(e);
            }
        };
        self.stats.content_bytes.fetch_add(size, Ordering::Relaxed);
        match expected {
            Some(exp) if exp != c => {
                let _ = rustix::fs::unlinkat(&self.staging, target.as_str(), AtFlags::empty());
                unreserve(&exp);
                bail!(
                    "File object {exp}: its content hashes to {c} \
                     (corrupted, or changed while being read)"
                );
            }
            Some(_) => {
                let name = Self::staged_name(t, &c, mode);
                if let Err(e) = rustix::fs::renameat(
                    &self.staging,
                    target.as_str(),
                    &self.staging,
                    name.as_str(),
                ) {
                    let _ = rustix::fs::unlinkat(&self.staging, target.as_str(), AtFlags::empty());
                    unreserve(&c);
                    return Err(e).with_context(|| format!("Staging file object {c}"));
                }
            }
            None => {
                if !self.reserve(t, &c)? {
                    rustix::fs::unlinkat(&self.staging, target.as_str(), AtFlags::empty())?;
                    return Ok(c);
                }
                self.ensure_staging_subdir(&c)?;
                let name = Self::staged_name(t, &c, mode);
                rustix::fs::renameat(&self.staging, target.as_str(), &self.staging, name.as_str())?;
            }
        }
        self.stats.written.fetch_add(1, Ordering::Relaxed);
        Ok(c)
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

    fn create_tmp(&self, name: &str, mode: u32) -> Result<File> {
        let fd = rustix::fs::openat(
            &self.staging,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        Ok(File::from(fd))
    }

    /// Writes a file object under `tmp` in the layout of the repository
    /// mode, hashing the content on the way; returns the checksum.
    fn write_file_tmp(
        &self,
        tmp: &str,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<Checksum> {
        header.validate()?;
        let mut hasher = file_hasher(header);
        let h = &mut hasher;
        match self.repo.mode() {
            RepoMode::Archive => self.write_archive(tmp, header, size, content, h)?,
            RepoMode::BareUser => self.write_bare_user(tmp, header, size, content, h)?,
            RepoMode::BareUserOnly => self.write_bare_user_only(tmp, header, size, content, h)?,
            RepoMode::Bare => self.write_bare(tmp, header, size, content, h)?,
            RepoMode::BareSplitXattrs => bail!("bare-split-xattrs is not supported"),
        }
        Ok(hasher.finish())
    }

    /// `.filez`: length-prefixed archive header, then raw deflate.
    fn write_archive(
        &self,
        tmp: &str,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
        hasher: &mut Sha256,
    ) -> Result<()> {
        let symlink = header.is_symlink();
        let mut f = self.create_tmp(tmp, 0o644)?;
        let ah = ArchiveHeader {
            size: if symlink { 0 } else { size },
            header: header.clone(),
        };
        f.write_all(&ah.encode_prefixed())?;
        if !symlink {
            let level = flate2::Compression::new(self.zlib_level);
            let mut enc = flate2::write::DeflateEncoder::new(BufWriter::new(f), level);
            copy_hashing(content, &mut enc, hasher, size)?;
            enc.finish()?.flush()?;
        }
        Ok(())
    }

    /// bare-user: the content (symlinks: target + NUL) with the real
    /// metadata in `user.ostreemeta`.
    fn write_bare_user(
        &self,
        tmp: &str,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
        hasher: &mut Sha256,
    ) -> Result<()> {
        let mut f = self.create_tmp(tmp, 0o644)?;
        if header.is_symlink() {
            let mut t = header.symlink_target.as_bytes().to_vec();
            t.push(0);
            f.write_all(&t)?;
        } else {
            copy_hashing(content, &mut f, hasher, size)?;
            let perms = (header.mode & 0o775) | 0o400;
            rustix::fs::fchmod(&f, Mode::from_raw_mode(perms))?;
        }
        let meta = bare_user_meta_encode(header.uid, header.gid, header.mode, &header.xattrs);
        rustix::fs::fsetxattr(&f, BARE_USER_XATTR, &meta, rustix::fs::XattrFlags::empty())
            .context("Setting user.ostreemeta (does the filesystem support user xattrs?)")?;
        rustix::fs::futimens(&f, &zero_times())?;
        Ok(())
    }

    /// bare-user-only: the file or symlink itself, canonical permissions.
    fn write_bare_user_only(
        &self,
        tmp: &str,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
        hasher: &mut Sha256,
    ) -> Result<()> {
        if header.is_symlink() {
            rustix::fs::symlinkat(header.symlink_target.as_str(), &self.staging, tmp)?;
            rustix::fs::utimensat(&self.staging, tmp, &zero_times(), AtFlags::SYMLINK_NOFOLLOW)?;
            return Ok(());
        }
        if header.mode & 0o7002 != 0 {
            bail!(
                "Invalid mode {:o} for bare-user-only (setuid, setgid, sticky or world-writable)",
                header.mode
            );
        }
        let mut f = self.create_tmp(tmp, 0o600)?;
        copy_hashing(content, &mut f, hasher, size)?;
        rustix::fs::fchmod(&f, Mode::from_raw_mode(header.mode & 0o7777))?;
        rustix::fs::futimens(&f, &zero_times())?;
        Ok(())
    }

    /// bare: real ownership, mode and xattrs (root only).
    fn write_bare(
        &self,
        tmp: &str,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
        hasher: &mut Sha256,
    ) -> Result<()> {
        if !util::is_root() {
            bail!("Writing to a bare repository requires root (use bare-user)");
        }
        let uid = Some(rustix::fs::Uid::from_raw(header.uid));
        let gid = Some(rustix::fs::Gid::from_raw(header.gid));
        if header.is_symlink() {
            rustix::fs::symlinkat(header.symlink_target.as_str(), &self.staging, tmp)?;
            rustix::fs::chownat(&self.staging, tmp, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
            crate::xattrs::set_path(&util::fd_path(&self.staging, tmp), &header.xattrs)?;
            rustix::fs::utimensat(&self.staging, tmp, &zero_times(), AtFlags::SYMLINK_NOFOLLOW)?;
        } else {
            let mut f = self.create_tmp(tmp, 0o600)?;
            copy_hashing(content, &mut f, hasher, size)?;
            rustix::fs::fchown(&f, uid, gid)?;
            // After chown, which clears setuid/setgid.
            rustix::fs::fchmod(&f, Mode::from_raw_mode(header.mode & 0o7777))?;
            crate::xattrs::set_fd(&f, &header.xattrs)?;
            rustix::fs::futimens(&f, &zero_times())?;
        }
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
        let (to_mark, to_complete) = std::mem::take(&mut *self.partial.lock().expect("poisoned"));
        if !to_mark.is_empty() {
            // Before the syncfs below, which makes the markers durable
            // before any commit object is renamed into place.
            let state = util::ensure_dir_path_durable(&self.repo.dir, "state", 0o775)?;
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
        let mut staged: Vec<(ObjectType, Checksum)> = self
            .pending
            .lock()
            .expect("poisoned")
            .iter()
            .copied()
            .collect();
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
        tracing::debug!("objects published; syncing");
        if fsync {
            rustix::fs::syncfs(&self.repo.objects).context("Syncing published objects")?;
        }
        failpoint::hit(failpoint::TXN_AFTER_OBJECTS_SYNCED);
        if !to_complete.is_empty() {
            if let Some(state) = util::open_dir_optional(&self.repo.dir, "state")? {
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
        crate::refs::apply_updates(self.repo, refs)?;
        failpoint::hit(failpoint::TXN_AFTER_REFS);
        self.committed = true;
        Ok(())
    }
}

/// Empties a staging directory: files at its top and in its `XX/`
/// subdirectories, then the subdirectories.
fn clear_staging(dir: &OwnedFd) -> rustix::io::Result<()> {
    for e in util::list_dir(dir)? {
        if e.ftype == rustix::fs::FileType::Directory {
            let sub = util::open_dir(dir, &String::from_utf8_lossy(&e.name))?;
            for f in util::list_dir(&sub)? {
                match rustix::fs::unlinkat(&sub, f.name.as_slice(), AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e),
                }
            }
            match rustix::fs::unlinkat(dir, e.name.as_slice(), AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
        } else {
            match rustix::fs::unlinkat(dir, e.name.as_slice(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
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
        if let Ok(tmp) = util::open_dir(&self.repo.dir, "tmp") {
            if let Err(e) =
                rustix::fs::unlinkat(&tmp, self.staging_name.as_str(), AtFlags::REMOVEDIR)
            {
                tracing::debug!("removing {}: {e}", self.staging_name);
            }
        }
    }
}

/// Upper bound of a raw-deflate stream of `size` input bytes (zlib's
/// deflateBound is about size + size/4096 + 13; this is generous).
pub fn deflate_bound(size: u64) -> u64 {
    size.saturating_add(size / 1000).saturating_add(1024)
}

/// Largest file object accepted from another repository or a server
/// (1 TiB): sizes are read from untrusted headers and used in arithmetic.
pub const MAX_FILE_SIZE: u64 = 1 << 40;

/// Copies exactly `size` bytes from `r` to `w`, feeding the hasher.
fn copy_hashing(
    r: &mut dyn Read,
    w: &mut dyn Write,
    hasher: &mut arbor_format::Sha256,
    size: u64,
) -> Result<()> {
    let mut buf = vec![0u8; COPY_BUF.min(size.max(1) as usize)];
    let mut done: u64 = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        done += n as u64;
        if done > size {
            bail!("Content is larger than its declared size {size}");
        }
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n])?;
    }
    if done != size {
        bail!("Content is {done} bytes, expected {size}");
    }
    Ok(())
}
