//! The upgrade policy on real sysroots in temporary directories, through
//! the library only: a source repository served as a `file://` remote,
//! and a sysroot whose stateroot `testos` follows `origin:testos/stable`.

use std::path::{Path, PathBuf};

use arbor_format::{Checksum, RefName, RepoMode};
use arbor_repo::commit::{commit, CommitOptions, CommitSource};
use arbor_repo::refs::{RefSpec, RefUpdate};
use arbor_repo::{NullProgress, Repo};
use arbor_sysroot::deploy::{deploy, DeployOptions};
use arbor_sysroot::Sysroot;

use crate::{
    switch, DeployUpdateOptions, SwitchOptions, UpgradeCheck, UpgradeError, UpgradeOptions,
    Upgrader,
};

const STABLE: &str = "testos/stable";

/// Deploy now, not staged.
const NOW: DeployUpdateOptions = DeployUpdateOptions {
    stage: false,
    lock_finalization: false,
    composer: None,
    layering: None,
};

/// Deploying needs root (owners in the bare system repository, the
/// immutable flag on deployment roots): the shared gate.
use arbor_testutil::needs_root;

fn put(p: &Path, content: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// A bootable tree: kernel, initramfs, os-release, one default in /usr/etc.
fn os_tree(dir: &Path, version: &str) {
    put(&dir.join("usr/lib/modules/6.1.0-test/vmlinuz"), "KERNEL\n");
    put(
        &dir.join("usr/lib/modules/6.1.0-test/initramfs.img"),
        "INITRD\n",
    );
    put(
        &dir.join("usr/lib/os-release"),
        "ID=testos\nPRETTY_NAME=\"TestOS\"\n",
    );
    put(&dir.join("usr/etc/a.conf"), &format!("a={version}\n"));
}

/// A sysroot with v1 of `origin:testos/stable` deployed.
struct Machine {
    dir: tempfile::TempDir,
    src: Repo,
    sys: PathBuf,
    v1: Checksum,
}

impl Machine {
    fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let src = Repo::init(&dir.path().join("src"), RepoMode::Archive).unwrap();
        let sys = dir.path().join("sysroot");
        let mut m = Machine {
            dir,
            src,
            sys,
            v1: Checksum::from_array([0; 32]),
        };
        m.v1 = m.release(STABLE, "1.0", 1_000_000);
        arbor_sysroot::sysroot::init_fs(&m.sys).unwrap();
        let mut s = m.sysroot();
        s.lock().unwrap().os_init("testos").unwrap();
        let url = format!("file://{}", m.src.path().display());
        let opts = arbor_repo::remotes::RemoteAddOptions {
            no_gpg_verify: true,
            ..Default::default()
        };
        arbor_repo::remotes::add_remote(&s.repo().lock(false).unwrap(), "origin", &url, &opts)
            .unwrap();
        let pull = arbor_pull::PullOptions {
            refs: vec![STABLE.to_string()],
            ..Default::default()
        };
        arbor_pull::pull(
            &s.repo().lock(false).unwrap(),
            "origin",
            &pull,
            &NullProgress,
        )
        .unwrap();
        let opts = DeployOptions {
            stateroot: Some("testos".into()),
            revision: format!("origin:{STABLE}"),
            ..Default::default()
        };
        deploy(&mut s.lock().unwrap(), &opts).unwrap();
        m
    }

    /// Commits a new version on `branch` of the source, with its summary.
    fn release(&self, branch: &str, version: &str, timestamp: u64) -> Checksum {
        let tree = self.dir.path().join(format!("tree-{version}"));
        os_tree(&tree, version);
        let opts = CommitOptions {
            branch: Some(RefName::new(branch).unwrap()),
            subject: version.into(),
            timestamp: Some(timestamp),
            metadata_strings: vec![("version".into(), version.into())],
            owner_uid: Some(0),
            owner_gid: Some(0),
            ..Default::default()
        };
        let c = commit(
            &self.src.lock(false).unwrap(),
            CommitSource::Dir(&tree),
            &opts,
            &NullProgress,
        )
        .unwrap();
        arbor_repo::summary::update_summary(&self.src.lock(false).unwrap(), &Default::default())
            .unwrap();
        c
    }

    fn sysroot(&self) -> Sysroot {
        Sysroot::open(&self.sys).unwrap()
    }

    /// The sysroot as seen from a system booted into v1 (`v1.0`).
    fn booted_in_v1(&self) -> Sysroot {
        let mut s = self.sysroot();
        let root = self
            .sys
            .join(format!("ostree/deploy/testos/deploy/{}.0", self.v1));
        s.set_test_root(Some(&root)).unwrap();
        let b = s.booted().expect("v1 is booted");
        assert_eq!(s.deployments()[b].csum, self.v1);
        s
    }

    /// Points the system repository's local ref `testos/local` at `c`.
    fn set_local(&self, c: Checksum) {
        let local = RefSpec::local(RefName::new("testos/local").unwrap());
        arbor_repo::refs::update_refs(
            &self.sysroot().repo().lock(false).unwrap(),
            &[RefUpdate::set(local, c)],
        )
        .unwrap();
    }

    /// The deployments as `(commit, serial)`, in boot order.
    fn deployments(&self) -> Vec<(Checksum, u32)> {
        let s = self.sysroot();
        s.deployments()
            .iter()
            .map(|d| (d.csum, d.deployserial))
            .collect()
    }

    /// The origin file of deployment `csum.0`.
    fn origin_path(&self, csum: &Checksum) -> PathBuf {
        self.sys
            .join(format!("ostree/deploy/testos/deploy/{csum}.0.origin"))
    }

    /// What the system repository's `origin:testos/stable` names.
    fn tracked(&self) -> Option<Checksum> {
        let spec = RefSpec::parse(&format!("origin:{STABLE}")).unwrap();
        arbor_repo::refs::read_ref(self.sysroot().repo(), &spec).unwrap()
    }
}

impl Drop for Machine {
    /// Clears the immutable flag of the deployment roots, so the temporary
    /// directory can be removed.
    fn drop(&mut self) {
        let deploy = self.sys.join("ostree/deploy/testos/deploy");
        for e in std::fs::read_dir(deploy).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                let _ = std::process::Command::new("chattr")
                    .arg("-i")
                    .arg(e.path())
                    .status();
            }
        }
    }
}

/// Whether an error is of the expected kind.
type IsError = fn(&UpgradeError) -> bool;

fn upgrader(s: &mut Sysroot, allow_downgrade: bool) -> crate::error::Result<Upgrader<'_>> {
    Upgrader::new(
        s,
        UpgradeOptions {
            stateroot: None,
            allow_downgrade,
        },
    )
}

mod composed;
mod origin;
mod policy;
