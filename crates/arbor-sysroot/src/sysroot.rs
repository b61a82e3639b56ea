//! Opening a sysroot and loading its state the way ostree does: the boot
//! version from `/boot/loader`, the deployments from the BLS entries of that
//! version (each `ostree=` argument resolved through its bootlink), their
//! origins, and which one is booted.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arbor_format::RepoMode;
use arbor_repo::config::KeyFile;
use arbor_repo::Repo;
use fn_error_context::context;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::bls::{self, BootEntry};
use crate::deployment::{parse_dir_name, validate_stateroot, Deployment};
use crate::fsutil;
use crate::kargs::Kargs;

/// The sysroot lock (in [`crate::lock`]), where it has always been named.
pub use crate::lock::SysrootLock;

/// Test-only: the directory to treat as the running system's `/` when
/// deciding which deployment is booted (see the README). Read only in a
/// build with the `fault-injection` feature (the tests'), never in a
/// release build.
pub const ROOT_ENV: &str = "ARBOR_TEST_ROOT";

/// Written by ostree-prepare-root on a system it booted: an `a{sv}`
/// (empty in older versions).
pub const RUN_BOOTED: &str = "/run/ostree-booted";

/// The `backing-root-device-inode` `(tt)` of `/run/ostree-booted`'s
/// content, if present.
pub fn backing_root_devino(data: &[u8]) -> Result<Option<(u64, u64)>> {
    if data.is_empty() {
        return Ok(None);
    }
    let m =
        arbor_format::Metadata::decode(data).with_context(|| format!("Parsing {RUN_BOOTED}"))?;
    match m.get("backing-root-device-inode") {
        None => Ok(None),
        Some(arbor_format::Value::Other { type_str, data })
            if type_str == "(tt)" && data.len() == 16 =>
        {
            let (a, b) = data.split_at(8);
            Ok(Some((
                u64::from_ne_bytes(a.try_into()?),
                u64::from_ne_bytes(b.try_into()?),
            )))
        }
        Some(v) => bail!("{RUN_BOOTED}: backing-root-device-inode is not (tt): {v:?}"),
    }
}

/// Where a staged deployment is recorded, relative to the sysroot (so
/// `/run/ostree/staged-deployment` on a running system, as ostree).
pub const STAGED_STATE: &str = "run/ostree/staged-deployment";

/// A loaded sysroot.
#[derive(Debug)]
pub struct Sysroot {
    path: PathBuf,
    pub(crate) fd: OwnedFd,
    /// The system repository, `ostree/repo`.
    pub(crate) repo: Repo,
    /// `B` of `/boot/loader -> loader.B`.
    pub(crate) bootversion: u8,
    /// `S` of `ostree/boot.B -> boot.B.S`.
    pub(crate) subbootversion: u8,
    /// Deployments in boot order (index 0 is the default).
    pub(crate) deployments: Vec<Deployment>,
    /// Index of the booted deployment.
    pub(crate) booted: Option<usize>,
    /// (device, inode) of the running root, when it runs from this sysroot.
    root_devino: Option<(u64, u64)>,
    /// Test-only: the directory to treat as the running root (see
    /// [`Sysroot::set_test_root`]).
    #[cfg(feature = "fault-injection")]
    test_root: Option<PathBuf>,
    /// See [`Sysroot::set_mutable_deployments`].
    mutable_deployments: bool,
}

/// What a deployment shows of its commit ([`Sysroot::commit_details`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitDetails {
    /// The commit's `version` metadata.
    pub version: Option<String>,
    /// Its base and extensions, for a composed commit.
    pub layers: Option<crate::layered::Layers>,
    /// The commit could not be read: neither is known.
    pub unreadable: bool,
}

/// A parsed `ostree=/ostree/boot.B/STATEROOT/BOOTCSUM/SERIAL` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootlink {
    /// Boot version `B`.
    pub bootversion: u8,
    /// Stateroot.
    pub stateroot: String,
    /// Boot checksum.
    pub bootcsum: String,
    /// Boot serial.
    pub bootserial: u32,
}

impl Bootlink {
    /// Parses the value of `ostree=` (ostree's regexp
    /// `^/ostree/boot.([01])/([^/]+)/([^/]+)/([0-9]+)$`).
    pub fn parse(s: &str) -> Result<Bootlink> {
        let bad = || {
            anyhow::anyhow!(
                "Invalid ostree= argument '{s}', expected \
                 ostree=/ostree/boot.BOOTVERSION/OSNAME/BOOTCSUM/TREESERIAL"
            )
        };
        let rest = s.strip_prefix("/ostree/boot.").ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [b, stateroot, bootcsum, serial] = parts[..] else {
            return Err(bad());
        };
        let bootversion = match b {
            "0" => 0,
            "1" => 1,
            _ => return Err(bad()),
        };
        if stateroot.is_empty()
            || bootcsum.is_empty()
            || serial.is_empty()
            || !serial.bytes().all(|c| c.is_ascii_digit())
        {
            return Err(bad());
        }
        validate_stateroot(stateroot)?;
        arbor_format::validate_filename(bootcsum).map_err(|_| bad())?;
        Ok(Bootlink {
            bootversion,
            stateroot: stateroot.to_string(),
            bootcsum: bootcsum.to_string(),
            bootserial: serial.parse().map_err(|_| bad())?,
        })
    }

    /// The path relative to the sysroot.
    pub fn relpath(&self) -> String {
        format!(
            "ostree/boot.{}/{}/{}/{}",
            self.bootversion, self.stateroot, self.bootcsum, self.bootserial
        )
    }
}

/// Creates the top-level layout of a sysroot in `path` (like
/// `ostree admin init-fs`): `boot dev home proc run sys` (0755), `root`
/// (0700), `tmp` (01777), `ostree/deploy` and the system repository `ostree/repo`, mode
/// bare (bare-user when not running as root, whose objects cannot carry
/// real ownership). As with ostree, the process umask applies to every mode
/// but `tmp`'s, which is set explicitly.
#[context("Initializing sysroot {}", path.display())]
pub fn init_fs(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path)?;
    let fd = fsutil::open_dir(rustix::fs::CWD, &path.to_string_lossy())?;
    for (d, mode) in [
        ("boot", 0o755),
        ("dev", 0o755),
        ("home", 0o755),
        ("proc", 0o755),
        ("run", 0o755),
        ("sys", 0o755),
        ("root", 0o700),
        ("tmp", 0o1777),
        // ostree_sysroot_ensure_initialized: `ostree admin os-init` and
        // `status` need ostree/deploy.
        ("ostree", 0o755),
        ("ostree/repo", 0o755),
        ("ostree/deploy", 0o755),
    ] {
        match rustix::fs::mkdirat(&fd, d, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("Creating {d}")),
        }
    }
    // The one mode ostree sets regardless of the umask.
    rustix::fs::chmodat(&fd, "tmp", Mode::from_raw_mode(0o1777), AtFlags::empty())
        .context("Setting the mode of tmp")?;
    let repo = path.join("ostree/repo");
    if !repo.join("config").exists() {
        let mode = if rustix::process::geteuid().is_root() {
            RepoMode::Bare
        } else {
            tracing::warn!("not root: the system repository is bare-user");
            RepoMode::BareUser
        };
        Repo::init(&repo, mode)?;
    }
    // ostree makes the repository's tmp/cache on every open
    // (DEFAULT_DIRECTORY_MODE, umask applied); `ostree admin init-fs` leaves
    // it, so the layouts are the same.
    match rustix::fs::mkdirat(&fd, "ostree/repo/tmp/cache", Mode::from_raw_mode(0o775)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e).context("Creating ostree/repo/tmp/cache"),
    }
    Ok(())
}

impl Sysroot {
    /// Opens and loads the sysroot at `path`.
    #[context("Loading sysroot {}", path.display())]
    pub fn open(path: &Path) -> Result<Sysroot> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("Opening {}", path.display()))?;
        if fsutil::file_type(&fd, "ostree/repo")?.is_none() {
            bail!(
                "{} is not a sysroot (no ostree/repo; run 'arbor admin init-fs')",
                path.display()
            );
        }
        let repo = Repo::open(&path.join("ostree/repo"))?;
        let mut s = Sysroot {
            path: path.to_path_buf(),
            fd,
            repo,
            bootversion: 0,
            subbootversion: 0,
            deployments: Vec::new(),
            booted: None,
            root_devino: None,
            #[cfg(feature = "fault-injection")]
            test_root: None,
            mutable_deployments: false,
        };
        s.load()?;
        Ok(s)
    }

    /// Leaves new deployment roots without the immutable flag (ostree's
    /// `OSTREE_SYSROOT_DEBUG=mutable-deployments`), for throwaway sysroots
    /// such as the quickstart's. Off by default: deployments are sealed
    /// with `chattr +i`, as ostree seals them.
    pub fn set_mutable_deployments(&mut self, on: bool) {
        self.mutable_deployments = on;
    }

    /// Whether new deployment roots stay mutable
    /// (see [`Sysroot::set_mutable_deployments`]).
    pub fn mutable_deployments(&self) -> bool {
        self.mutable_deployments
    }

    /// The sysroot's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The system repository, `ostree/repo`.
    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// The system repository, to change its configuration (remotes).
    pub fn repo_mut(&mut self) -> &mut Repo {
        &mut self.repo
    }

    /// `B` of `/boot/loader -> loader.B`.
    pub fn bootversion(&self) -> u8 {
        self.bootversion
    }

    /// `S` of `ostree/boot.B -> boot.B.S`.
    pub fn subbootversion(&self) -> u8 {
        self.subbootversion
    }

    /// Deployments in boot order (index 0 is the default).
    pub fn deployments(&self) -> &[Deployment] {
        &self.deployments
    }

    /// Index of the booted deployment.
    pub fn booted(&self) -> Option<usize> {
        self.booted
    }

    /// Test-only (`fault-injection` builds): treats `root` as the running
    /// system's `/` when deciding which deployment is booted, as
    /// [`ROOT_ENV`] does for a process, and reloads. For library tests,
    /// which run in parallel in one process and so cannot share an
    /// environment variable. Ignored for a sysroot that is `/`.
    #[cfg(feature = "fault-injection")]
    pub fn set_test_root(&mut self, root: Option<&Path>) -> Result<()> {
        self.test_root = root.map(Path::to_path_buf);
        self.load()
    }

    /// Re-reads the boot state and deployments from disk.
    pub fn load(&mut self) -> Result<()> {
        self.bootversion = self.read_bootversion()?;
        self.subbootversion = self.read_subbootversion(self.bootversion)?;
        let entries = self.read_entries(self.bootversion)?;
        let mut deployments = Vec::new();
        for (name, e) in entries {
            let d = self
                .parse_entry(&e)
                .with_context(|| format!("Parsing boot entry {name}"))?;
            deployments.push(d);
        }
        self.deployments = deployments;
        self.root_devino = self.running_root_devino()?;
        self.booted = self.find_booted()?;
        // As ostree: a staged deployment exists only on a booted system.
        if self.booted.is_some() {
            if let Some(d) = self.read_staged()? {
                self.deployments.insert(0, d);
                self.booted = self.booted.map(|b| b + 1);
            }
        }
        Ok(())
    }

    /// The staged deployment recorded in [`STAGED_STATE`], if any.
    fn read_staged(&self) -> Result<Option<Deployment>> {
        let Some(state) = crate::staged::read_state(&self.fd)? else {
            return Ok(None);
        };
        let mut d = Deployment {
            stateroot: state.target.stateroot,
            csum: state.target.csum,
            deployserial: state.target.deployserial,
            bootcsum: state.target.bootcsum,
            bootserial: 0,
            origin: None,
            kargs: Kargs::parse(&state.kargs.join(" ")),
            version: None,
            layers: None,
            layers_unknown: false,
            staged: true,
            bootconfig: BootEntry::default(),
        };
        for (k, v) in &state.bootconfig_extra {
            d.bootconfig.set(k, v);
        }
        validate_stateroot(&d.stateroot)?;
        if fsutil::file_type(&self.fd, &d.relpath())? != Some(FileType::Directory) {
            tracing::warn!("staged deployment {} is missing: ignored", d.relpath());
            return Ok(None);
        }
        d.origin = self.read_origin(&d)?;
        self.read_commit_details(&mut d);
        Ok(Some(d))
    }

    fn read_bootversion(&self) -> Result<u8> {
        match fsutil::file_type(&self.fd, "boot/loader")? {
            None => Ok(0),
            Some(FileType::Symlink) => {
                match fsutil::readlink_optional(&self.fd, "boot/loader")?.as_deref() {
                    Some("loader.0") => Ok(0),
                    Some("loader.1") => Ok(1),
                    t => bail!("Invalid target {t:?} in boot/loader"),
                }
            }
            Some(_) => bail!("Not a symbolic link: boot/loader"),
        }
    }

    /// `S` of `ostree/boot.B -> boot.B.S` (0 if absent).
    pub(crate) fn read_subbootversion(&self, bootversion: u8) -> Result<u8> {
        let name = format!("ostree/boot.{bootversion}");
        match fsutil::readlink_optional(&self.fd, &name)? {
            None => Ok(0),
            Some(t) if t.ends_with(".0") => Ok(0),
            Some(t) if t.ends_with(".1") => Ok(1),
            Some(t) => bail!("Invalid target '{t}' in {name}"),
        }
    }

    /// The `ostree-*.conf` entries of `loader.B`, sorted by `version`,
    /// highest first (the default entry first).
    fn read_entries(&self, bootversion: u8) -> Result<Vec<(String, BootEntry)>> {
        let dir = format!("boot/loader.{bootversion}/entries");
        let Some(fd) = fsutil::open_dir_optional(&self.fd, &dir)? else {
            return Ok(Vec::new());
        };
        bls::read_entries(&fd).with_context(|| format!("Reading {dir}"))
    }

    fn parse_entry(&self, e: &BootEntry) -> Result<Deployment> {
        let kargs = Kargs::parse(e.get("options").unwrap_or_default());
        let Some(link) = kargs.get("ostree").map(str::to_string) else {
            bail!("No ostree= kernel argument");
        };
        let bl = Bootlink::parse(&link)?;
        let target = fsutil::readlink_optional(&self.fd, &bl.relpath())?
            .with_context(|| format!("Bootlink {link} does not exist"))?;
        let base = target.rsplit('/').next().unwrap_or_default();
        let (csum, deployserial) = parse_dir_name(base)?;
        let mut d = Deployment {
            stateroot: bl.stateroot,
            csum,
            deployserial,
            bootcsum: bl.bootcsum,
            bootserial: bl.bootserial,
            origin: None,
            kargs,
            version: None,
            layers: None,
            layers_unknown: false,
            staged: false,
            bootconfig: e.clone(),
        };
        validate_stateroot(&d.stateroot)?;
        d.origin = self.read_origin(&d)?;
        self.read_commit_details(&mut d);
        Ok(d)
    }

    pub(crate) fn read_origin(&self, d: &Deployment) -> Result<Option<KeyFile>> {
        let p = d.origin_relpath();
        let Some(bytes) = fsutil::read_optional(&self.fd, &p)? else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes).with_context(|| format!("{p} is not UTF-8"))?;
        Ok(Some(
            KeyFile::parse(&text).with_context(|| format!("Parsing {p}"))?,
        ))
    }

    /// The `version` metadata of a commit, if the commit is present.
    pub fn commit_version(&self, c: &arbor_format::Checksum) -> Option<String> {
        self.commit_details(c).version
    }

    /// What a deployment shows of its commit, read once: the `version`
    /// metadata and, for a composed commit, its base and extensions
    /// ([`crate::layered::Layers::from_commit`]).
    ///
    /// Lenient, as `status` must work on any sysroot: a commit that cannot
    /// be read (pruned, corrupt) gives neither, and is marked
    /// [`CommitDetails::unreadable`]; a commit whose
    /// `arbor.base-commit`/`arbor.extensions` are malformed gives no
    /// layers (the deployment then shows and upgrades as a plain commit:
    /// arbor never writes such a commit). Both are logged at debug level.
    pub fn commit_details(&self, c: &arbor_format::Checksum) -> CommitDetails {
        let commit = match arbor_repo::objects::load_commit(&self.repo, c) {
            Ok(commit) => commit,
            Err(e) => {
                tracing::debug!("commit {c}: {e:#}");
                return CommitDetails {
                    version: None,
                    layers: None,
                    unreadable: true,
                };
            }
        };
        let layers = match crate::layered::Layers::from_commit(&commit) {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!("commit {c}: ignoring its layers: {e:#}");
                None
            }
        };
        CommitDetails {
            version: commit.version().map(str::to_string),
            layers,
            unreadable: false,
        }
    }

    /// Sets `d.version`, `d.layers` and `d.layers_unknown` from its commit
    /// ([`Sysroot::commit_details`]).
    pub(crate) fn read_commit_details(&self, d: &mut Deployment) {
        let c = self.commit_details(&d.csum);
        (d.version, d.layers, d.layers_unknown) = (c.version, c.layers, c.unreadable);
    }

    /// The (device, inode) of the directory the running system booted
    /// from, if it runs from this sysroot. As ostree: the sysroot must be
    /// `/` and the system booted by ostree-prepare-root
    /// (`/run/ostree-booted`; arbor also accepts `ostree=` on the kernel
    /// command line); the directory is the one `/run/ostree-booted` names
    /// (`backing-root-device-inode`, set when `/` is a composefs or overlay
    /// mounted over the deployment), else `/` itself.
    ///
    /// Test-only (`fault-injection` builds): for a sysroot that is not `/`,
    /// `$ARBOR_TEST_ROOT` names the directory to treat as the running root
    /// (tests simulate boots by naming a deployment directory). It is
    /// ignored for `/`.
    fn running_root_devino(&self) -> Result<Option<(u64, u64)>> {
        let devino = |p: &Path| -> Result<(u64, u64)> {
            let st = rustix::fs::stat(p).with_context(|| format!("Inspecting {}", p.display()))?;
            Ok((st.st_dev, st.st_ino))
        };
        let here = rustix::fs::fstat(&self.fd)?;
        if (here.st_dev, here.st_ino) != devino(Path::new("/"))? {
            #[cfg(feature = "fault-injection")]
            if let Some(r) = self
                .test_root
                .clone()
                .or_else(|| std::env::var_os(ROOT_ENV).map(PathBuf::from))
            {
                return Ok(Some(devino(&r)?));
            }
            return Ok(None);
        }
        let booted = match std::fs::read(RUN_BOOTED) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("Reading {RUN_BOOTED}")),
        };
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        if booted.is_none() && Kargs::parse(&cmdline).get("ostree").is_none() {
            return Ok(None);
        }
        if let Some(d) = booted
            .as_deref()
            .map(backing_root_devino)
            .transpose()?
            .flatten()
        {
            return Ok(Some(d));
        }
        Ok(Some(devino(Path::new("/"))?))
    }

    /// Whether `name` in `dir` is the running root (see
    /// [`Sysroot::running_root_devino`]).
    ///
    /// Whatever the sysroot path (e.g. `--sysroot /sysroot` on a booted
    /// system, where ostree detects no booted deployment), the directory
    /// that is the host's `/`, or that `/run/ostree-booted` names as the
    /// backing root, also counts: removing it would pull the running
    /// system from under itself.
    pub(crate) fn is_running_root(&self, dir: &OwnedFd, name: &str) -> Result<bool> {
        let Ok(st) = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) else {
            return Ok(false);
        };
        let here = (st.st_dev, st.st_ino);
        if self.root_devino == Some(here) {
            return Ok(true);
        }
        if rustix::fs::stat("/").is_ok_and(|r| (r.st_dev, r.st_ino) == here) {
            return Ok(true);
        }
        Ok(std::fs::read(RUN_BOOTED)
            .ok()
            .and_then(|b| backing_root_devino(&b).ok().flatten())
            == Some(here))
    }

    /// The booted deployment, as ostree finds it: the one whose directory
    /// is the running root, by (device, inode). Comparing inodes, not the
    /// `ostree=` path, keeps it right after the boot entries change.
    fn find_booted(&self) -> Result<Option<usize>> {
        let Some(root) = self.root_devino else {
            return Ok(None);
        };
        for (i, d) in self.deployments.iter().enumerate() {
            if let Ok(ds) =
                rustix::fs::statat(&self.fd, d.relpath().as_str(), rustix::fs::AtFlags::empty())
            {
                if (ds.st_dev, ds.st_ino) == root {
                    return Ok(Some(i));
                }
            }
        }
        Ok(None)
    }

    /// `ostree/`, following a symlink: on a booted system `/ostree` links
    /// to `sysroot/ostree`.
    pub fn ostree_dir(&self) -> Result<OwnedFd> {
        rustix::fs::openat(
            &self.fd,
            "ostree",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .context("Opening ostree/")
    }

    /// Whether the stateroot exists.
    pub fn has_stateroot(&self, stateroot: &str) -> Result<bool> {
        Ok(
            fsutil::file_type(&self.fd, &format!("ostree/deploy/{stateroot}/deploy"))?
                == Some(FileType::Directory),
        )
    }

    /// The first deployment before the booted one in `stateroot` (or the
    /// first, when nothing is booted) and the first after it: ostree's
    /// "pending" and "rollback".
    pub fn pending_and_rollback(&self, stateroot: &str) -> (Option<usize>, Option<usize>) {
        let (mut pending, mut rollback, mut found_booted) = (None, None, false);
        for (i, d) in self.deployments.iter().enumerate() {
            if d.stateroot != stateroot {
                continue;
            }
            if Some(i) == self.booted {
                found_booted = true;
                continue;
            }
            if !found_booted && pending.is_none() {
                pending = Some(i);
            } else if found_booted && rollback.is_none() {
                rollback = Some(i);
            }
        }
        (pending, rollback)
    }

    /// The deployment whose /etc a new deployment of `stateroot` merges:
    /// the booted one if it is of that stateroot, else the first of it.
    pub fn merge_deployment(&self, stateroot: &str) -> Option<usize> {
        match self.booted {
            Some(b) if self.deployments[b].stateroot == stateroot => Some(b),
            _ => self.pending_and_rollback(stateroot).0,
        }
    }

    /// What boots next in `stateroot`: its staged deployment if any, else
    /// its first deployment in the list (the default, or the one that
    /// boots when the stateroot is selected). Not the merge deployment: on
    /// a booted system with a pending deployment, the merge deployment is
    /// the booted one, while the pending one boots next. What a new
    /// deployment carries (its extension list) comes from here.
    pub fn next_deployment(&self, stateroot: &str) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.stateroot == stateroot)
    }

    /// Opens a deployment's root directory.
    pub fn deployment_dir(&self, d: &Deployment) -> Result<OwnedFd> {
        fsutil::open_dir(&self.fd, &d.relpath())
    }

    /// The stateroot given, or the booted deployment's, or the only one.
    pub fn default_stateroot(&self, given: Option<&str>) -> Result<String> {
        if let Some(s) = given {
            return Ok(s.to_string());
        }
        if let Some(b) = self.booted {
            return Ok(self.deployments[b].stateroot.clone());
        }
        let roots = fsutil::open_dir_optional(&self.fd, "ostree/deploy")?
            .map(|d| fsutil::list_names(&d))
            .transpose()?
            .unwrap_or_default();
        match roots.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!("No stateroot: run 'arbor admin os-init'"),
            _ => bail!("Several stateroots: choose one with --os"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_root_is_never_removable_whatever_the_sysroot() {
        // A sysroot that is not `/` detects no booted deployment, yet the
        // directory that is the host's `/` still counts as running.
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sysroot");
        init_fs(&sys).unwrap();
        let s = Sysroot::open(&sys).unwrap();
        let root = fsutil::open_dir(rustix::fs::CWD, "/").unwrap();
        assert!(s.is_running_root(&root, ".").unwrap());
        let tmp = fsutil::open_dir(rustix::fs::CWD, &t.path().to_string_lossy()).unwrap();
        assert!(!s.is_running_root(&tmp, "sysroot").unwrap());
    }

    #[test]
    fn the_backing_root_is_read_from_run_ostree_booted() {
        // ostree 2022.7 writes an empty file; newer ones an a{sv}.
        assert_eq!(backing_root_devino(b"").unwrap(), None);
        let mut m = arbor_format::Metadata::new();
        m.push("composefs", arbor_format::Value::Bool(true));
        assert_eq!(backing_root_devino(&m.encode()).unwrap(), None);
        let mut data = 66306u64.to_ne_bytes().to_vec();
        data.extend(1234567u64.to_ne_bytes());
        m.push(
            "backing-root-device-inode",
            arbor_format::Value::Other {
                type_str: "(tt)".into(),
                data,
            },
        );
        assert_eq!(
            backing_root_devino(&m.encode()).unwrap(),
            Some((66306, 1234567))
        );
        let mut bad = arbor_format::Metadata::new();
        bad.push(
            "backing-root-device-inode",
            arbor_format::Value::Str("x".into()),
        );
        assert!(backing_root_devino(&bad.encode()).is_err());
    }

    #[test]
    fn the_sysroot_lock_excludes_other_opens_in_the_same_process() {
        // An OFD lock belongs to the open file: a second open in the same
        // process waits, as a second process (and ostree) does. A POSIX
        // record lock would be granted at once here.
        let t = tempfile::tempdir().unwrap();
        init_fs(t.path()).unwrap();
        let mut s = Sysroot::open(t.path()).unwrap();
        let first = s.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = t.path().to_path_buf();
        let h = std::thread::spawn(move || {
            let mut s2 = Sysroot::open(&path).unwrap();
            let l = s2.lock().unwrap();
            tx.send(()).unwrap();
            drop(l);
        });
        let wait = std::time::Duration::from_millis(300);
        assert!(rx.recv_timeout(wait).is_err(), "second lock granted");
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("second lock after release");
        h.join().unwrap();
    }

    #[test]
    fn a_second_lock_in_the_same_thread_fails_instead_of_hanging() {
        let t = tempfile::tempdir().unwrap();
        init_fs(t.path()).unwrap();
        let path = t.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = Sysroot::open(&path).unwrap();
            let mut s2 = Sysroot::open(&path).unwrap();
            let held = s.lock().unwrap();
            let again = s2.lock().map(drop);
            drop(held);
            tx.send(again).unwrap();
        });
        let again = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a second sysroot lock in the same thread hung");
        let e = again.unwrap_err();
        assert!(
            e.downcast_ref::<arbor_fs::WouldDeadlock>().is_some(),
            "{e:#}"
        );
    }

    #[test]
    fn bootlinks() {
        let b = Bootlink::parse("/ostree/boot.1/testos/166ace/0").unwrap();
        assert_eq!(b.bootversion, 1);
        assert_eq!(b.relpath(), "ostree/boot.1/testos/166ace/0");
        for bad in [
            "/ostree/boot.2/a/b/0",
            "/ostree/boot.1/a/b",
            "/ostree/boot.1/a/b/x",
            "/ostree/boot.1//b/0",
            "/ostree/boot.1/a/b/0/c",
            "ostree/boot.1/a/b/0",
        ] {
            assert!(Bootlink::parse(bad).is_err(), "{bad}");
        }
    }
}
