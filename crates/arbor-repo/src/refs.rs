//! Refs: `refs/heads/NAME`, `refs/remotes/REMOTE/NAME`,
//! `refs/mirrors/COLLECTION/NAME`; each a file holding a hex checksum and
//! `\n`. Updates are atomic (temp file, fsync, rename, fsync directory).

use std::fmt;

use anyhow::{bail, Context, Result};
use arbor_format::names::validate_remote_name;
use arbor_format::{Checksum, RefName};
use fn_error_context::context;
use rustix::fs::AtFlags;
use rustix::io::Errno;

use crate::error::RepoError;
use crate::repo::{Repo, RepoLock};

/// A ref, optionally qualified by a remote: `[REMOTE:]NAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RefSpec {
    /// The remote, for refs under `refs/remotes/REMOTE/`.
    pub remote: Option<String>,
    /// The ref name.
    pub name: RefName,
}

impl RefSpec {
    /// A local ref under `refs/heads/`.
    pub fn local(name: RefName) -> RefSpec {
        RefSpec { remote: None, name }
    }

    /// Parses `[REMOTE:]NAME`, validating both parts.
    pub fn parse(s: &str) -> Result<RefSpec> {
        let (remote, name) = match s.split_once(':') {
            Some((r, n)) => {
                validate_remote_name(r).with_context(|| format!("Invalid remote in '{s}'"))?;
                (Some(r.to_string()), n)
            }
            None => (None, s),
        };
        let name = RefName::new(name).with_context(|| format!("Invalid ref '{s}'"))?;
        Ok(RefSpec { remote, name })
    }

    /// Path relative to `refs/`.
    fn relpath(&self) -> String {
        match &self.remote {
            Some(r) => format!("remotes/{r}/{}", self.name),
            None => format!("heads/{}", self.name),
        }
    }
}

impl fmt::Display for RefSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.remote {
            Some(r) => write!(f, "{r}:{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// A requested ref change, applied at the end of a transaction.
#[derive(Debug, Clone)]
pub struct RefUpdate {
    /// Which ref.
    pub spec: RefSpec,
    /// New target, or `None` to delete the ref.
    pub target: Option<Checksum>,
    /// If set, the update only happens if the ref still has this value
    /// (`Some(None)`: the ref must not exist); otherwise it fails. This is
    /// how a commit refuses to overwrite a branch another commit moved.
    pub expected_old: Option<Option<Checksum>>,
}

impl RefUpdate {
    /// Points `spec` at `target`.
    pub fn set(spec: RefSpec, target: Checksum) -> RefUpdate {
        RefUpdate {
            spec,
            target: Some(target),
            expected_old: None,
        }
    }

    /// Deletes `spec`.
    pub fn delete(spec: RefSpec) -> RefUpdate {
        RefUpdate {
            spec,
            target: None,
            expected_old: None,
        }
    }

    /// Only apply if the ref currently has the value `old`.
    pub fn expecting(mut self, old: Option<Checksum>) -> RefUpdate {
        self.expected_old = Some(old);
        self
    }
}

/// Name, at the repository root, of the file whose `flock` serialises ref
/// updates among arbor processes, so compare-and-set of refs is atomic.
/// Not under `tmp/`: ostree deletes day-old files there.
const REFS_LOCK: &str = ".arbor-refs-lock";

/// Applies updates under the ref-update lock, checking every
/// `expected_old` first: either all expectations hold and the updates are
/// applied in order, or nothing is changed.
pub(crate) fn apply_updates(lock: &RepoLock, updates: &[RefUpdate]) -> Result<()> {
    if updates.is_empty() {
        return Ok(());
    }
    // A repository with fsync disabled keeps the per-ref path: the batch's
    // syncfs would flush the whole filesystem.
    let staged = if lock.fsync_enabled() {
        stage_sets(lock, updates)?
    } else {
        None
    };
    if let Some(mut staged) = staged {
        // Several refs set: each atomic as alone, with two barriers in all
        // instead of two per ref.
        let repo: &Repo = lock;
        rustix::fs::syncfs(&repo.dir).context("Syncing new refs")?;
        return staged.publish(lock);
    }
    let _lock = lock.section_lock(REFS_LOCK).context("Locking refs")?;
    check_expected(lock, updates)?;
    for u in updates {
        apply_update(lock, u)?;
    }
    Ok(())
}

/// Fails unless every ref with an `expected_old` is still at it.
fn check_expected(repo: &Repo, updates: &[RefUpdate]) -> Result<()> {
    for u in updates {
        if let Some(old) = u.expected_old {
            let cur = read_ref(repo, &u.spec)?;
            if cur != old {
                let show = |c: Option<Checksum>| c.map_or("nothing".to_string(), |c| c.to_hex());
                bail!(
                    "Ref {} was changed concurrently (now {}, expected {}); not updating it",
                    u.spec,
                    show(cur),
                    show(old)
                );
            }
        }
    }
    Ok(())
}

/// Ref updates written under temporary names, renamed into place by
/// [`StagedRefs::publish`] once the caller's barrier made them durable;
/// arbor's ref-update lock is held from the check to the publication.
#[derive(Debug)]
pub(crate) struct StagedRefs {
    files: arbor_fs::StagedWrites,
    _lock: arbor_fs::OfdLock,
}

impl StagedRefs {
    /// Renames the staged refs into place, then syncs the filesystem.
    pub(crate) fn publish(&mut self, repo: &Repo) -> Result<()> {
        self.files.publish().context("Updating refs")?;
        rustix::fs::syncfs(&repo.dir).context("Syncing refs")?;
        Ok(())
    }
}

/// When `updates` only set refs (at least two, or one inside a
/// transaction, `min`), checks them and writes each new ref under a
/// temporary name (no sync: the caller's barrier makes them durable).
/// `None`: a mix with deletions, applied in order by [`apply_update`].
pub(crate) fn stage_sets_min(
    lock: &RepoLock,
    updates: &[RefUpdate],
    min: usize,
) -> Result<Option<StagedRefs>> {
    if updates.len() < min.max(1) || updates.iter().any(|u| u.target.is_none()) {
        return Ok(None);
    }
    let repo: &Repo = lock;
    let guard = lock.section_lock(REFS_LOCK).context("Locking refs")?;
    check_expected(repo, updates)?;
    let mut files = arbor_fs::StagedWrites::default();
    for u in updates {
        let rel = u.spec.relpath();
        let (parent, base) = rel.rsplit_once('/').expect("relpath always has a slash");
        let dir = arbor_fs::ensure_dir_path_durable(&repo.dir, &format!("refs/{parent}"), 0o775)?;
        let c = u.target.expect("only sets");
        files.stage(&dir, base, format!("{c}\n").as_bytes(), 0o644)?;
    }
    Ok(Some(StagedRefs {
        files,
        _lock: guard,
    }))
}

fn stage_sets(lock: &RepoLock, updates: &[RefUpdate]) -> Result<Option<StagedRefs>> {
    stage_sets_min(lock, updates, 2)
}

/// Largest ref file we read: a checksum and a newline, with room for
/// trailing whitespace. A longer file is not a ref.
const MAX_REF_SIZE: u64 = 256;

/// Reads a ref file (following alias symlinks, as ostree does) without
/// blocking on a FIFO or reading an unbounded file.
fn read_small(p: &std::path::Path) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(p)?;
    read_bounded(f)
}

/// The contents of an open ref file: a regular file of at most
/// [`MAX_REF_SIZE`] bytes (both readers above open it without blocking on
/// a FIFO).
fn read_bounded(f: std::fs::File) -> std::io::Result<String> {
    use std::io::Read;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut s = String::new();
    f.take(MAX_REF_SIZE + 1).read_to_string(&mut s)?;
    if s.len() as u64 > MAX_REF_SIZE {
        return Err(std::io::Error::other("too large to be a ref"));
    }
    Ok(s)
}

fn parse_ref_contents(spec: &str, text: &str) -> Result<Checksum> {
    Checksum::from_hex(text.trim_end())
        .with_context(|| format!("Ref {spec} does not contain a checksum"))
}

/// Reads a ref; `None` if it does not exist.
pub fn read_ref(repo: &Repo, spec: &RefSpec) -> Result<Option<Checksum>> {
    let p = repo.path().join("refs").join(spec.relpath());
    match read_small(&p) {
        Ok(t) => parse_ref_contents(&spec.to_string(), &t).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("Reading ref {spec}")),
    }
}

/// A ref that could not be read: its name and why.
pub type BadRef = (String, anyhow::Error);

/// A ref listing: readable refs (sorted) and unreadable ones.
pub type RefListing = (Vec<(String, Checksum)>, Vec<BadRef>);

/// Reads the refs of `base` (a directory below the repository, named
/// `prefix` in ref names) into `out`, and the unreadable ones into `bad`.
/// Iterative, through one [`arbor_fs::DirCursor`]: a ref directory of
/// any depth (even beyond `PATH_MAX`) takes one descriptor and no stack.
fn walk_refs(
    repo: &Repo,
    base: &str,
    prefix: &str,
    out: &mut Vec<(String, Checksum)>,
    bad: &mut Vec<BadRef>,
) -> Result<()> {
    let Some(dir) = arbor_fs::open_dir_optional(&repo.dir, base)? else {
        return Ok(());
    };
    let mut cur = arbor_fs::DirCursor::new(&dir)?;
    drop(dir);
    // The ref name of `name` in the cursor's directory.
    let full_name = |cur: &arbor_fs::DirCursor, name: &str| match (prefix, cur.depth()) {
        ("", _) => cur.path_with(name),
        (p, 0) => format!("{p}/{name}"),
        (p, _) => format!("{p}/{}", cur.path_with(name)),
    };
    // Per level entered: its subdirectories not visited yet.
    let mut stack: Vec<Vec<String>> = Vec::new();
    loop {
        let mut subdirs = Vec::new();
        for ent in arbor_fs::list_dir(cur.fd())? {
            let Some(name) = arbor_fs::utf8_name(&ent.name) else {
                let lossy = String::from_utf8_lossy(&ent.name);
                bad.push((
                    format!("{base}/{}", cur.path_with(&lossy)),
                    anyhow::anyhow!("ref name is not UTF-8"),
                ));
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            if ent.ftype == rustix::fs::FileType::Directory {
                subdirs.push(name.to_string());
                continue;
            }
            let full = full_name(&cur, name);
            let parsed = read_small_at(cur.fd(), name)
                .with_context(|| format!("Reading {base}/{}", cur.path_with(name)))
                .and_then(|text| parse_ref_contents(&full, &text));
            match parsed {
                Ok(c) => out.push((full, c)),
                Err(e) => bad.push((full, e)),
            }
        }
        subdirs.reverse();
        stack.push(subdirs);
        // The next directory to visit: a pending sibling, ascending as
        // levels are exhausted; done when the start is.
        loop {
            let Some(top) = stack.last_mut() else {
                return Ok(());
            };
            if let Some(name) = top.pop() {
                cur.descend(&name)?;
                break;
            }
            stack.pop();
            if !stack.is_empty() {
                cur.ascend()?;
            }
        }
    }
}

/// [`read_small`] of `name` in `dir`.
fn read_small_at(dir: &std::os::fd::OwnedFd, name: &str) -> std::io::Result<String> {
    let fd = rustix::fs::openat(
        dir,
        name,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let f = std::fs::File::from(fd);
    read_bounded(f)
}

/// All readable refs, sorted, plus the ones that could not be read (for
/// `fsck`, which reports those and still checks the rest).
pub fn list_refs_lenient(repo: &Repo) -> Result<RefListing> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    walk_refs(repo, "refs/heads", "", &mut out, &mut bad)?;
    let mut remote = Vec::new();
    walk_refs(repo, "refs/remotes", "", &mut remote, &mut bad)?;
    for (path, c) in remote {
        if let Some((r, n)) = path.split_once('/') {
            out.push((format!("{r}:{n}"), c));
        }
    }
    let mut mirrors = Vec::new();
    walk_refs(repo, "refs/mirrors", "", &mut mirrors, &mut bad)?;
    for (path, c) in mirrors {
        if let Some((coll, n)) = path.split_once('/') {
            out.push((format!("({coll}, {n})"), c));
        }
    }
    out.sort();
    Ok((out, bad))
}

/// The refs under one directory of `refs/` (`heads`, `mirrors`,
/// `remotes`, or deeper), named relative to it (`mirrors` gives
/// `COLLECTION/NAME`), sorted. Any unreadable ref is an error.
#[context("Listing refs/{dir}")]
pub fn list_refs_under(repo: &Repo, dir: &str) -> Result<Vec<(String, Checksum)>> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    walk_refs(repo, &format!("refs/{dir}"), "", &mut out, &mut bad)?;
    if let Some((name, e)) = bad.pop() {
        return Err(e.context(format!("Reading ref {name}")));
    }
    out.sort();
    Ok(out)
}

/// All refs as `(refspec, checksum)`, sorted: local refs as `NAME`, remote
/// refs as `REMOTE:NAME`. Any unreadable ref is an error.
#[context("Listing refs")]
pub fn list_refs(repo: &Repo) -> Result<Vec<(String, Checksum)>> {
    let (out, mut bad) = list_refs_lenient(repo)?;
    if let Some((_, e)) = bad.pop() {
        return Err(e);
    }
    Ok(out)
}

/// Whether `s` may be a shortened checksum, as
/// `ostree_repo_resolve_partial_checksum` decides: lowercase hex, shorter
/// than a full checksum (ostree sets no minimum; arbor needs one digit).
fn is_partial_checksum(s: &str) -> bool {
    !s.is_empty()
        && s.len() < arbor_format::checksum::CHECKSUM_HEX_LEN
        && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The commit objects whose checksum starts with `prefix` (lowercase hex),
/// as `ostree_repo_list_commit_objects_starting_with`.
#[context("Looking up commits starting with {prefix}")]
fn commits_with_prefix(repo: &Repo, prefix: &str) -> Result<Vec<Checksum>> {
    let mut out = Vec::new();
    let dirs: Vec<String> = if prefix.len() >= 2 {
        vec![prefix[..2].to_string()]
    } else {
        arbor_fs::list_dir(&repo.objects)?
            .iter()
            .filter_map(|e| arbor_fs::utf8_name(&e.name))
            .filter(|n| n.len() == 2 && n.starts_with(prefix))
            .map(str::to_string)
            .collect()
    };
    let rest = prefix.get(2..).unwrap_or_default();
    for d in dirs {
        let Some(fd) = arbor_fs::open_dir_optional(&repo.objects, &d)? else {
            continue;
        };
        for e in arbor_fs::list_dir(&fd)? {
            let Some(stem) = arbor_fs::utf8_name(&e.name).and_then(|n| n.strip_suffix(".commit"))
            else {
                continue;
            };
            if stem.starts_with(rest) {
                if let Ok(c) = Checksum::from_hex(&format!("{d}{stem}")) {
                    out.push(c);
                }
            }
        }
    }
    Ok(out)
}

/// Resolves a revision: a 64-hex checksum, a unique prefix of a commit's
/// checksum (tried before refs, as ostree does), or `[REMOTE:]REF`, each
/// optionally followed by `^` (parent), any number of times. A prefix
/// matching several commits is refused ([`RepoError::AmbiguousRev`]).
pub fn resolve_rev(repo: &Repo, rev: &str) -> Result<Checksum> {
    let base = rev.trim_end_matches('^');
    let parents = rev.len() - base.len();
    let partial = match is_partial_checksum(base) {
        true => commits_with_prefix(repo, base)?,
        false => Vec::new(),
    };
    if partial.len() > 1 {
        return Err(RepoError::AmbiguousRev(base.to_string()).into());
    }
    let mut c = if arbor_format::checksum::is_hex_checksum(base) {
        Checksum::from_hex(base)?
    } else if let Some(c) = partial.first() {
        *c
    } else {
        let spec = RefSpec::parse(base)?;
        match read_ref(repo, &spec)? {
            Some(c) => c,
            None => {
                // `origin/main` style lookups under refs/remotes, as ostree does.
                let alt = match &spec.remote {
                    None => spec.name.as_str().split_once('/').and_then(|(r, n)| {
                        Some(RefSpec {
                            remote: Some(r.to_string()),
                            name: RefName::new(n).ok()?,
                        })
                    }),
                    Some(_) => None,
                };
                match alt.map(|a| read_ref(repo, &a)).transpose()?.flatten() {
                    Some(c) => c,
                    None => return Err(RepoError::RefNotFound(base.to_string()).into()),
                }
            }
        }
    };
    for _ in 0..parents {
        let commit = crate::objects::load_commit(repo, &c)?;
        c = match commit.parent {
            Some(p) => p,
            None => bail!("Commit {c} has no parent"),
        };
    }
    Ok(c)
}

/// Applies one ref update.
///
/// Crash guarantee: a set is a temp file, fsync, rename over the ref and
/// fsync of its directory, so after a crash the ref holds the old or the
/// new checksum, never a partial one; a delete is an unlink followed by an
/// fsync of the directory. Callers must make the target's objects durable
/// first (as [`crate::txn::Transaction::commit`] does).
#[context("Updating ref {}", u.spec)]
pub(crate) fn apply_update(lock: &RepoLock, u: &RefUpdate) -> Result<()> {
    let repo: &Repo = lock;
    let rel = u.spec.relpath();
    let (parent, base) = rel.rsplit_once('/').expect("relpath always has a slash");
    let parent = format!("refs/{parent}");
    match u.target {
        Some(c) => {
            let dir = arbor_fs::ensure_dir_path_durable(&repo.dir, &parent, 0o775)?;
            arbor_fs::atomic_write(&dir, base, format!("{c}\n").as_bytes(), 0o644)
        }
        None => {
            let Some(dir) = arbor_fs::open_dir_optional(&repo.dir, &parent)? else {
                return Err(RepoError::RefNotFound(u.spec.to_string()).into());
            };
            match rustix::fs::unlinkat(&dir, base, AtFlags::empty()) {
                Ok(()) => Ok::<(), anyhow::Error>(()),
                Err(Errno::NOENT) => Err(RepoError::RefNotFound(u.spec.to_string()).into()),
                Err(e) => Err(e.into()),
            }?;
            rustix::fs::fsync(&dir)?;
            Ok(())
        }
    }
}

/// Sets or deletes refs outside of any object transaction, under the
/// repository lock the caller holds and arbor's ref-update lock, checking
/// every `expected_old` first; each update is atomic (a temp file, fsync,
/// rename over the ref and fsync of its directory, or an unlink and fsync;
/// several refs set at once share two `syncfs` barriers instead).
pub fn update_refs(lock: &RepoLock, updates: &[RefUpdate]) -> Result<()> {
    apply_updates(lock, updates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_format::RepoMode;

    #[test]
    fn refspec_parsing() {
        let r = RefSpec::parse("origin:os/x86_64/stable").unwrap();
        assert_eq!(r.remote.as_deref(), Some("origin"));
        assert_eq!(r.name.as_str(), "os/x86_64/stable");
        assert_eq!(r.relpath(), "remotes/origin/os/x86_64/stable");
        assert_eq!(r.to_string(), "origin:os/x86_64/stable");
        assert_eq!(RefSpec::parse("main").unwrap().relpath(), "heads/main");
        for bad in [
            "",
            "../x",
            "a//b",
            "/a",
            "a/",
            "bad remote:x",
            "o/r:x",
            "a b",
        ] {
            assert!(RefSpec::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn set_resolve_delete() {
        let td = tempfile::tempdir().unwrap();
        let repo = Repo::init(&td.path().join("r"), RepoMode::Archive).unwrap();
        let c = Checksum::digest(b"x");
        let spec = RefSpec::parse("a/b").unwrap();
        update_refs(
            &repo.lock(false).unwrap(),
            &[RefUpdate::set(spec.clone(), c)],
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(td.path().join("r/refs/heads/a/b")).unwrap(),
            format!("{c}\n")
        );
        assert_eq!(read_ref(&repo, &spec).unwrap(), Some(c));
        assert_eq!(resolve_rev(&repo, "a/b").unwrap(), c);
        assert_eq!(resolve_rev(&repo, &c.to_hex()).unwrap(), c);
        let remote = RefSpec::parse("origin:main").unwrap();
        update_refs(&repo.lock(false).unwrap(), &[RefUpdate::set(remote, c)]).unwrap();
        assert_eq!(resolve_rev(&repo, "origin:main").unwrap(), c);
        assert_eq!(resolve_rev(&repo, "origin/main").unwrap(), c);
        let listed = list_refs(&repo).unwrap();
        assert_eq!(
            listed,
            vec![("a/b".to_string(), c), ("origin:main".to_string(), c)]
        );
        // `^` needs the commit object, which does not exist here.
        assert!(resolve_rev(&repo, "a/b^").is_err());
        update_refs(
            &repo.lock(false).unwrap(),
            &[RefUpdate::delete(spec.clone())],
        )
        .unwrap();
        assert_eq!(read_ref(&repo, &spec).unwrap(), None);
        let e = resolve_rev(&repo, "a/b").unwrap_err();
        assert!(format!("{e:#}").contains("not found"), "{e:#}");
        assert!(update_refs(&repo.lock(false).unwrap(), &[RefUpdate::delete(spec)]).is_err());
    }

    #[test]
    fn short_checksums_resolve_like_ostree() {
        let td = tempfile::tempdir().unwrap();
        let repo = Repo::init(&td.path().join("r"), RepoMode::Archive).unwrap();
        // Only the names matter for prefix lookup.
        let mk = |hex: &str, ext: &str| {
            let d = td.path().join("r/objects").join(&hex[..2]);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("{}.{ext}", &hex[2..])), b"").unwrap();
            Checksum::from_hex(hex).unwrap()
        };
        let a = mk(&format!("abc1{}", "0".repeat(60)), "commit");
        let b = mk(&format!("abc2{}", "0".repeat(60)), "commit");
        mk(&format!("abd0{}", "0".repeat(60)), "dirtree");
        let f = mk(&format!("f{}", "1".repeat(63)), "commit");
        assert_eq!(resolve_rev(&repo, "abc1").unwrap(), a);
        assert_eq!(resolve_rev(&repo, "abc2").unwrap(), b);
        assert_eq!(resolve_rev(&repo, "f").unwrap(), f);
        assert_eq!(resolve_rev(&repo, &a.to_hex()[..63]).unwrap(), a);
        for ambiguous in ["a", "ab", "abc"] {
            let e = resolve_rev(&repo, ambiguous).unwrap_err();
            assert_eq!(e.to_string(), format!("Refspec {ambiguous} not unique"));
            assert!(matches!(
                e.downcast_ref::<RepoError>(),
                Some(RepoError::AmbiguousRev(_))
            ));
        }
        // Only commits count; uppercase is not a prefix; unknown is a ref.
        for missing in ["abd", "ABC1", "abc3", "0"] {
            let e = resolve_rev(&repo, missing).unwrap_err();
            assert!(format!("{e:#}").contains("not found"), "{missing}: {e:#}");
        }
        // A hex-looking ref name loses to a commit prefix, as in ostree.
        update_refs(
            &repo.lock(false).unwrap(),
            &[RefUpdate::set(RefSpec::parse("abc1").unwrap(), b)],
        )
        .unwrap();
        assert_eq!(resolve_rev(&repo, "abc1").unwrap(), a);
        update_refs(
            &repo.lock(false).unwrap(),
            &[RefUpdate::set(RefSpec::parse("dead").unwrap(), b)],
        )
        .unwrap();
        assert_eq!(resolve_rev(&repo, "dead").unwrap(), b);
    }

    #[test]
    fn compare_and_set_refuses_a_moved_ref() {
        let td = tempfile::tempdir().unwrap();
        let repo = Repo::init(&td.path().join("r"), RepoMode::Archive).unwrap();
        let (a, b, c) = (
            Checksum::digest(b"a"),
            Checksum::digest(b"b"),
            Checksum::digest(b"c"),
        );
        let main = RefSpec::parse("main").unwrap();
        let other = RefSpec::parse("other").unwrap();
        update_refs(
            &repo.lock(false).unwrap(),
            &[RefUpdate::set(main.clone(), a).expecting(None)],
        )
        .unwrap();
        // Someone else moved main to b after we read a.
        update_refs(
            &repo.lock(false).unwrap(),
            &[RefUpdate::set(main.clone(), b)],
        )
        .unwrap();
        let e = update_refs(
            &repo.lock(false).unwrap(),
            &[
                RefUpdate::set(other.clone(), c),
                RefUpdate::set(main.clone(), c).expecting(Some(a)),
            ],
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("changed concurrently"), "{e:#}");
        // All or nothing: neither ref changed.
        assert_eq!(read_ref(&repo, &main).unwrap(), Some(b));
        assert_eq!(read_ref(&repo, &other).unwrap(), None);
        // Creating requires absence.
        assert!(update_refs(
            &repo.lock(false).unwrap(),
            &[RefUpdate::set(main.clone(), c).expecting(None)]
        )
        .is_err());
        update_refs(
            &repo.lock(false).unwrap(),
            &[RefUpdate::set(main.clone(), c).expecting(Some(b))],
        )
        .unwrap();
        assert_eq!(read_ref(&repo, &main).unwrap(), Some(c));
    }

    #[test]
    fn refs_are_read_bounded() {
        let td = tempfile::tempdir().unwrap();
        let repo = Repo::init(&td.path().join("r"), RepoMode::Archive).unwrap();
        std::fs::write(td.path().join("r/refs/heads/big"), "0".repeat(1 << 20)).unwrap();
        let e = resolve_rev(&repo, "big").unwrap_err();
        assert!(format!("{e:#}").contains("too large"), "{e:#}");
        std::os::unix::fs::symlink("/dev/zero", td.path().join("r/refs/heads/zero")).unwrap();
        let e = resolve_rev(&repo, "zero").unwrap_err();
        assert!(format!("{e:#}").contains("not a regular file"), "{e:#}");
    }

    #[test]
    fn garbage_ref_is_an_error() {
        let td = tempfile::tempdir().unwrap();
        let repo = Repo::init(&td.path().join("r"), RepoMode::Archive).unwrap();
        std::fs::write(td.path().join("r/refs/heads/bad"), "not a checksum\n").unwrap();
        let e = resolve_rev(&repo, "bad").unwrap_err();
        assert!(format!("{e:#}").contains("bad"), "{e:#}");
        assert!(list_refs(&repo).is_err());
    }
}
