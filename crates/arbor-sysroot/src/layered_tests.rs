//! Composed deployments on real sysroots in temporary directories: the
//! deploy hook, loading the layers and rollback; and the fixture these
//! tests share with [`super::refs_tests`] (ref collection and cleanup).
//! The composed commits are made by hand (a union checkout committed again,
//! with the documented metadata), not by arbor-config's engine.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use arbor_format::metadata::Value;
use arbor_format::{Checksum, Commit, Metadata, ObjectType, RefName};
use arbor_repo::checkout::{checkout, CheckoutOptions};
use arbor_repo::commit::{commit, CommitOptions, CommitSource};
use arbor_repo::refs::{RefSpec, RefUpdate};
use arbor_repo::txn::Transaction;
use arbor_repo::{NullProgress, Repo};
use arbor_testutil::needs_root;

use super::*;
use crate::compose::CommitLayering;
use crate::deploy::{deploy, DeployOptions};
use crate::sysroot::{Sysroot, SysrootLock};

pub(super) fn put(p: &Path, content: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// Commits `dir` (owner 0:0) into `repo`, on `branch` if given.
pub(crate) fn commit_dir(repo: &Repo, dir: &Path, branch: Option<&str>, ts: u64) -> Checksum {
    let opts = CommitOptions {
        branch: branch.map(|b| RefName::new(b).unwrap()),
        subject: "test".into(),
        timestamp: Some(ts),
        metadata_strings: vec![("version".into(), format!("v{ts}"))],
        owner_uid: Some(0),
        owner_gid: Some(0),
        no_bindings: true,
        ..Default::default()
    };
    commit(
        &repo.lock(false).unwrap(),
        CommitSource::Dir(dir),
        &opts,
        &NullProgress,
    )
    .unwrap()
}

/// A composed commit of `base` plus `exts` made by hand: the union of
/// their trees, with the base's version and timestamp, `arbor.base-commit`,
/// `arbor.extensions`, the base as parent; its `arbor/composed/` and
/// `arbor/bases/` refs set (as arbor-config's engine sets them).
pub(crate) fn compose_by_hand(repo: &Repo, base: &Checksum, exts: &[ExtensionRef]) -> Checksum {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("union");
    let opts = CheckoutOptions {
        hardlink: false,
        require_hardlinks: false,
        user_mode: false,
        union: true,
        subpath: None,
    };
    for c in std::iter::once(base).chain(exts.iter().map(|e| &e.commit)) {
        checkout(repo, c, &dir, &opts, &NullProgress).unwrap();
    }
    let b = arbor_repo::objects::load_commit(repo, base).unwrap();
    let tree = commit_dir(repo, &dir, None, b.timestamp);
    let tree = arbor_repo::objects::load_commit(repo, &tree).unwrap();
    let mut metadata = Metadata::new();
    if let Some(v) = b.version() {
        metadata.push("version", Value::Str(v.to_string()));
    }
    metadata.push(BASE_COMMIT_KEY, Value::Str(base.to_hex()));
    metadata.push(
        EXTENSIONS_KEY,
        Value::StrArray(exts.iter().map(ExtensionRef::to_entry).collect()),
    );
    let names: Vec<&str> = exts.iter().map(|e| e.name.as_str()).collect();
    let c = Commit {
        metadata,
        parent: Some(*base),
        related: Vec::new(),
        subject: format!("Extensions: {}", names.join(", ")),
        body: String::new(),
        timestamp: b.timestamp,
        root_tree: tree.root_tree,
        root_meta: tree.root_meta,
    };
    let lock = repo.lock(false).unwrap();
    let txn = Transaction::begin(&lock).unwrap();
    let csum = txn.write_metadata(ObjectType::Commit, &c.encode()).unwrap();
    let r = RefName::new(format!("{COMPOSED_REF_PREFIX}{csum}")).unwrap();
    let b = RefName::new(format!("{BASE_REF_PREFIX}{base}")).unwrap();
    txn.commit(&[
        RefUpdate::set(RefSpec::local(r), csum),
        RefUpdate::set(RefSpec::local(b), *base),
    ])
    .unwrap();
    csum
}

/// Sets local ref `name` to `c` in `repo`.
pub(crate) fn set_ref(repo: &Repo, name: &str, c: Checksum) {
    let spec = RefSpec::local(RefName::new(name).unwrap());
    arbor_repo::refs::update_refs(&repo.lock(false).unwrap(), &[RefUpdate::set(spec, c)]).unwrap();
}

/// The deploy hook of the tests: composes `exts` on the base of the
/// commit, or refuses; records what it was given.
#[derive(Debug, Default)]
struct Hook {
    exts: Vec<ExtensionRef>,
    fail: bool,
    calls: Mutex<Vec<(String, Option<Checksum>, Checksum)>>,
}

impl CommitLayering for Hook {
    fn layer(
        &self,
        s: &SysrootLock<'_>,
        stateroot: &str,
        merge: Option<&crate::Deployment>,
        commit: &Checksum,
    ) -> Result<Checksum> {
        self.calls
            .lock()
            .unwrap()
            .push((stateroot.to_string(), merge.map(|m| m.csum), *commit));
        if self.fail {
            anyhow::bail!("extension tool does not fit");
        }
        let base = base_of(s.repo(), commit)?;
        Ok(compose_by_hand(s.repo(), &base, &self.exts))
    }
}

/// A sysroot with stateroot `testos`, base commits and extensions in its
/// repository.
pub(super) struct Fx {
    pub(super) dir: tempfile::TempDir,
    pub(super) sys: PathBuf,
}

impl Fx {
    pub(super) fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sysroot");
        crate::sysroot::init_fs(&sys).unwrap();
        let mut s = Sysroot::open(&sys).unwrap();
        s.lock().unwrap().os_init("testos").unwrap();
        Fx { dir, sys }
    }

    pub(super) fn sysroot(&self) -> Sysroot {
        Sysroot::open(&self.sys).unwrap()
    }

    pub(super) fn repo(&self) -> Repo {
        Repo::open(&self.sys.join("ostree/repo")).unwrap()
    }

    /// A bootable base, committed on `testos/stable`.
    pub(super) fn base(&self, version: u64) -> Checksum {
        let d = self.dir.path().join(format!("base-{version}"));
        put(&d.join("usr/lib/modules/6.1.0-test/vmlinuz"), "KERNEL\n");
        put(
            &d.join("usr/lib/modules/6.1.0-test/initramfs.img"),
            "INITRD\n",
        );
        put(&d.join("usr/lib/os-release"), "ID=testos\n");
        put(&d.join("usr/etc/a.conf"), &format!("a={version}\n"));
        commit_dir(self.sysroot().repo(), &d, Some("testos/stable"), version)
    }

    /// An extension with one tool, under its `arbor/extensions/` ref.
    pub(super) fn ext(&self, name: &str, content: &str) -> ExtensionRef {
        let d = self.dir.path().join(format!("ext-{name}-{content}"));
        put(&d.join(format!("usr/bin/{name}")), content);
        let c = commit_dir(self.sysroot().repo(), &d, None, 1);
        let e = ExtensionRef {
            name: name.into(),
            commit: c,
        };
        set_ref(self.sysroot().repo(), &e.ref_name(), c);
        e
    }

    pub(super) fn deploy(
        &self,
        revision: &str,
        layering: Option<Arc<dyn CommitLayering>>,
    ) -> Result<crate::deploy::DeployReport> {
        let opts = DeployOptions {
            stateroot: Some("testos".into()),
            revision: revision.into(),
            layering,
            ..Default::default()
        };
        deploy(&mut self.sysroot().lock()?, &opts)
    }

    /// Every path under the sysroot's `boot` and `ostree/deploy`, and the
    /// repository's refs: what a failed deploy must leave as it was.
    pub(super) fn snapshot(&self) -> (Vec<String>, Vec<(String, Checksum)>) {
        let mut paths = Vec::new();
        for top in ["boot", "ostree/deploy", "ostree"] {
            let mut stack = vec![self.sys.join(top)];
            while let Some(p) = stack.pop() {
                let Ok(rd) = std::fs::read_dir(&p) else {
                    continue;
                };
                for e in rd.flatten() {
                    paths.push(e.path().display().to_string());
                    if e.file_type().unwrap().is_dir() && top != "ostree" {
                        stack.push(e.path());
                    }
                }
            }
        }
        paths.sort();
        let refs = arbor_repo::refs::list_refs(self.sysroot().repo()).unwrap();
        (paths, refs)
    }
}

impl Drop for Fx {
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

pub(super) fn local_refs(repo: &Repo) -> Vec<String> {
    arbor_repo::refs::list_refs(repo)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("arbor/"))
        .collect()
}

#[test]
fn a_deploy_through_the_hook_deploys_the_composed_commit_with_its_layers() {
    if needs_root("a_deploy_through_the_hook_deploys_the_composed_commit_with_its_layers") {
        return;
    }
    let fx = Fx::new();
    let v1 = fx.base(1_000);
    fx.deploy("testos/stable", None).unwrap();
    let tool = fx.ext("tool", "TOOL\n");
    let hook = Arc::new(Hook {
        exts: vec![tool.clone()],
        ..Default::default()
    });
    let r = fx.deploy("testos/stable", Some(hook.clone())).unwrap();
    let composed = compose_by_hand(fx.sysroot().repo(), &v1, std::slice::from_ref(&tool));
    assert_ne!(composed, v1);
    // The hook saw the resolved revision and the merge deployment.
    assert_eq!(
        *hook.calls.lock().unwrap(),
        [("testos".to_string(), Some(v1), v1)]
    );
    assert_eq!(r.checksum, composed.to_hex());
    assert_eq!(r.deployment, format!("{composed}.0"));
    let s = fx.sysroot();
    let d = &s.deployments()[0];
    assert_eq!(d.csum, composed);
    assert_eq!(d.version.as_deref(), Some("v1000"));
    assert_eq!(
        d.layers,
        Some(Layers {
            base: v1,
            extensions: vec![tool.clone()]
        })
    );
    assert_eq!(d.base_commit(), v1);
    assert_eq!(d.extensions(), [tool]);
    assert!(fx
        .sys
        .join(format!(
            "ostree/deploy/testos/deploy/{composed}.0/usr/bin/tool"
        ))
        .exists());
    // The previous deployment, a plain commit, has no layers.
    assert_eq!(
        (s.deployments()[1].csum, &s.deployments()[1].layers),
        (v1, &None)
    );
    assert_eq!(s.deployments()[1].base_commit(), v1);
}

#[test]
fn a_hook_error_leaves_the_sysroot_unchanged() {
    if needs_root("a_hook_error_leaves_the_sysroot_unchanged") {
        return;
    }
    let fx = Fx::new();
    fx.base(1_000);
    fx.deploy("testos/stable", None).unwrap();
    fx.base(2_000);
    let before = fx.snapshot();
    let hook = Arc::new(Hook {
        fail: true,
        ..Default::default()
    });
    let err = fx.deploy("testos/stable", Some(hook.clone())).unwrap_err();
    assert!(
        format!("{err:#}").contains("extension tool does not fit"),
        "{err:#}"
    );
    assert_eq!(hook.calls.lock().unwrap().len(), 1);
    assert_eq!(fx.snapshot(), before);
}

#[test]
fn malformed_layer_metadata_loads_as_a_plain_commit() {
    if needs_root("malformed_layer_metadata_loads_as_a_plain_commit") {
        return;
    }
    let fx = Fx::new();
    let v1 = fx.base(1_000);
    let repo = fx.repo();
    // v1's tree, claiming a base that is no checksum.
    let b = arbor_repo::objects::load_commit(&repo, &v1).unwrap();
    let mut metadata = b.metadata.clone();
    metadata.push(BASE_COMMIT_KEY, Value::Str("not-a-checksum".into()));
    metadata.push(EXTENSIONS_KEY, Value::StrArray(vec![]));
    let c = Commit { metadata, ..b };
    let lock = repo.lock(false).unwrap();
    let txn = Transaction::begin(&lock).unwrap();
    let bad = txn.write_metadata(ObjectType::Commit, &c.encode()).unwrap();
    txn.commit(&[]).unwrap();
    drop(lock);
    fx.deploy(&bad.to_hex(), None).unwrap();
    let s = fx.sysroot();
    let d = &s.deployments()[0];
    assert_eq!(
        (d.csum, d.version.as_deref(), &d.layers),
        (bad, Some("v1000"), &None)
    );
    assert_eq!(d.base_commit(), bad);
}

#[test]
fn rollback_of_a_composed_deployment_gives_back_the_previous_layers() {
    if needs_root("rollback_of_a_composed_deployment_gives_back_the_previous_layers") {
        return;
    }
    let fx = Fx::new();
    let v1 = fx.base(1_000);
    let a = fx.ext("a", "A\n");
    fx.deploy(
        "testos/stable",
        Some(Arc::new(Hook {
            exts: vec![a.clone()],
            ..Default::default()
        })),
    )
    .unwrap();
    let b = fx.ext("b", "B\n");
    fx.deploy(
        "testos/stable",
        Some(Arc::new(Hook {
            exts: vec![a.clone(), b.clone()],
            ..Default::default()
        })),
    )
    .unwrap();
    let s = fx.sysroot();
    assert_eq!(s.deployments()[0].extensions(), [a.clone(), b.clone()]);
    crate::ops::rollback(&mut fx.sysroot().lock().unwrap()).unwrap();
    let s = fx.sysroot();
    let d = &s.deployments()[0];
    assert_eq!(d.extensions(), std::slice::from_ref(&a));
    assert_eq!(d.base_commit(), v1);
    assert_eq!(s.deployments()[1].extensions(), [a.clone(), b.clone()]);
    // Both composed commits keep their refs through the cleanup it ran.
    let refs = local_refs(s.repo());
    for d in s.deployments() {
        assert!(
            refs.contains(&format!("arbor/composed/{}", d.csum)),
            "{refs:?}"
        );
    }
    assert!(refs.contains(&b.ref_name()));
}

#[test]
fn a_commit_whose_recorded_base_is_not_its_parent_is_plain() {
    if needs_root("a_commit_whose_recorded_base_is_not_its_parent_is_plain") {
        return;
    }
    let fx = Fx::new();
    let v1 = fx.base(1_000);
    let tool = fx.ext("tool", "TOOL\n");
    let repo = fx.repo();
    let composed = compose_by_hand(&repo, &v1, std::slice::from_ref(&tool));
    assert_eq!(base_of(&repo, &composed).unwrap(), v1);
    // A vendor publishes the composed commit's tree and metadata as a
    // release of its own: no parent, or another parent than the base.
    let c = arbor_repo::objects::load_commit(&repo, &composed).unwrap();
    let mut vendor = Vec::new();
    for parent in [None, Some(composed)] {
        let v = Commit {
            parent,
            timestamp: c.timestamp + 1,
            ..c.clone()
        };
        assert_eq!(Layers::from_commit(&v).unwrap(), None);
        let lock = repo.lock(false).unwrap();
        let txn = Transaction::begin(&lock).unwrap();
        let csum = txn.write_metadata(ObjectType::Commit, &v.encode()).unwrap();
        txn.commit(&[]).unwrap();
        drop(lock);
        assert_eq!(base_of(&repo, &csum).unwrap(), csum);
        vendor.push(csum);
    }
    fx.deploy(&vendor[0].to_hex(), None).unwrap();
    let s = fx.sysroot();
    let d = &s.deployments()[0];
    assert_eq!(
        (d.csum, &d.layers, d.layers_unknown),
        (vendor[0], &None, false)
    );
    assert_eq!(d.base_commit(), vendor[0]);
    assert!(d.extensions().is_empty());
}
