//! Composed deployments on real sysroots in temporary directories: the
//! deploy hook, loading the layers, ref collection, cleanup and rollback.
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

fn put(p: &Path, content: &str) {
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
struct Fx {
    dir: tempfile::TempDir,
    sys: PathBuf,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sysroot");
        crate::sysroot::init_fs(&sys).unwrap();
        let mut s = Sysroot::open(&sys).unwrap();
        s.lock().unwrap().os_init("testos").unwrap();
        Fx { dir, sys }
    }

    fn sysroot(&self) -> Sysroot {
        Sysroot::open(&self.sys).unwrap()
    }

    fn repo(&self) -> Repo {
        Repo::open(&self.sys.join("ostree/repo")).unwrap()
    }

    /// A bootable base, committed on `testos/stable`.
    fn base(&self, version: u64) -> Checksum {
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
    fn ext(&self, name: &str, content: &str) -> ExtensionRef {
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

    fn deploy(
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
    fn snapshot(&self) -> (Vec<String>, Vec<(String, Checksum)>) {
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

fn local_refs(repo: &Repo) -> Vec<String> {
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
fn collect_refs_deletes_what_no_deployment_uses_and_leaves_odd_names_alone() {
    if needs_root("collect_refs_deletes_what_no_deployment_uses_and_leaves_odd_names_alone") {
        return;
    }
    let fx = Fx::new();
    let v1 = fx.base(1_000);
    let repo = fx.repo();
    // Each deploy's cleanup collects refs: every extension and composed
    // commit is made just before the deploy that uses it.
    // Rollback: v1 + a; default: v1 + a2 + b. Another stateroot runs v1 + b.
    let a = fx.ext("a", "A\n");
    let rollback = compose_by_hand(&repo, &v1, std::slice::from_ref(&a));
    fx.deploy(&rollback.to_hex(), None).unwrap();
    let b = fx.ext("b", "B\n");
    let a2 = fx.ext("a", "A2\n");
    let default = compose_by_hand(&repo, &v1, &[a2.clone(), b.clone()]);
    fx.deploy(&default.to_hex(), None).unwrap();
    fx.sysroot().lock().unwrap().os_init("other").unwrap();
    let other = compose_by_hand(&repo, &v1, std::slice::from_ref(&b));
    let opts = DeployOptions {
        stateroot: Some("other".into()),
        revision: other.to_hex(),
        ..Default::default()
    };
    deploy(&mut fx.sysroot().lock().unwrap(), &opts).unwrap();
    // An extension and a composed commit no deployment uses.
    let unused = fx.ext("unused", "U\n");
    let old = compose_by_hand(&repo, &v1, std::slice::from_ref(&unused));
    // Names arbor does not write: left alone.
    let odd = [
        "arbor/composed/x".to_string(),
        format!(
            "arbor/composed/{}",
            v1.to_hex().replace('0', "1").replace('2', "3")
        ),
        format!("arbor/composed/sub/{old}"),
        format!("arbor/extensions/unused/{}", b.commit),
        "arbor/extensions/tool".to_string(),
        format!("arbor/extensions/_x/{}", unused.commit),
        format!("arbor/extensions/x/y/{}", unused.commit),
    ];
    for n in &odd {
        set_ref(&repo, n, old);
    }
    // The base of a composed commit no deployment runs any more.
    let v0 = fx.base(500);
    let v0_composed = compose_by_hand(&repo, &v0, std::slice::from_ref(&unused));
    let s = &mut fx.sysroot();
    let mut s = s.lock().unwrap();
    assert_eq!(s.deployments().len(), 3);
    let mut deleted = vec![
        format!("arbor/composed/{old}"),
        format!("arbor/composed/{v0_composed}"),
        format!("arbor/bases/{v0}"),
        unused.ref_name(),
    ];
    deleted.sort();
    assert_eq!(collect_refs(&mut s).unwrap(), deleted);
    let mut kept: Vec<String> = [rollback, default, other]
        .iter()
        .map(|c| format!("arbor/composed/{c}"))
        .chain([format!("arbor/bases/{v1}")])
        .chain([a.ref_name(), a2.ref_name(), b.ref_name()])
        .chain(odd.iter().cloned())
        .collect();
    kept.sort();
    assert_eq!(local_refs(&repo), kept);
    // Nothing more to collect.
    assert_eq!(collect_refs(&mut s).unwrap(), Vec::<String>::new());
}

#[test]
fn cleanup_keeps_the_base_and_listed_extensions_of_a_composed_deployment() {
    if needs_root("cleanup_keeps_the_base_and_listed_extensions_of_a_composed_deployment") {
        return;
    }
    let fx = Fx::new();
    let v1 = fx.base(1_000);
    let tool = fx.ext("tool", "TOOL\n");
    let repo = fx.repo();
    let composed = compose_by_hand(&repo, &v1, std::slice::from_ref(&tool));
    fx.deploy(&composed.to_hex(), None).unwrap();
    // An extension added, then given up before any deploy.
    let gone = fx.ext("gone", "GONE\n");
    // The base's branch moves on: only the composed deployment needs v1.
    let v2 = fx.base(2_000);
    assert_ne!(v1, v2);
    let r = crate::write::cleanup(&mut fx.sysroot().lock().unwrap(), true).unwrap();
    assert!(r.pruned_objects > 0);
    let load = |c: &Checksum| arbor_repo::objects::load_commit(&repo, c);
    for c in [composed, v1, tool.commit, v2] {
        load(&c).unwrap_or_else(|e| panic!("{c} was pruned: {e:#}"));
    }
    let err = load(&gone.commit).unwrap_err();
    assert!(arbor_repo::reachable::is_not_found(&err), "{err:#}");
    assert!(!local_refs(&repo).contains(&gone.ref_name()));
    assert!(local_refs(&repo).contains(&tool.ref_name()));
    assert!(local_refs(&repo).contains(&format!("arbor/composed/{composed}")));
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

/// Runs `ostree ARGS..`, which must succeed.
fn ostree_ok(args: &[&str]) {
    let o = std::process::Command::new("ostree")
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ostree {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn collect_refs_reads_the_deployments_again_before_deleting() {
    if needs_root("collect_refs_reads_the_deployments_again_before_deleting") {
        return;
    }
    let fx = Fx::new();
    let v1 = fx.base(1_000);
    fx.deploy("testos/stable", None).unwrap();
    // A loads the deployments (v1 alone), as a command that switched and
    // released the lock to collect later.
    let mut a = fx.sysroot();
    // B, another process, deploys a composed commit with its refs.
    let repo = fx.repo();
    let tool = fx.ext("tool", "TOOL\n");
    let v2 = fx.base(2_000);
    let composed = compose_by_hand(&repo, &v2, std::slice::from_ref(&tool));
    fx.deploy(&composed.to_hex(), None).unwrap();
    // A takes the lock again and collects: B's refs stay.
    let mut lock = a.lock().unwrap();
    assert_eq!(collect_refs(&mut lock).unwrap(), Vec::<String>::new());
    let refs = local_refs(&repo);
    for r in [
        format!("arbor/composed/{composed}"),
        format!("arbor/bases/{v2}"),
        tool.ref_name(),
    ] {
        assert!(refs.contains(&r), "{r} was deleted: {refs:?}");
    }
    assert_eq!(lock.deployments()[0].csum, composed);
    assert_eq!(lock.deployments()[1].csum, v1);
}

#[test]
fn a_composed_deployments_base_survives_depth_0_prunes_while_it_is_deployed() {
    if needs_root("a_composed_deployments_base_survives_depth_0_prunes_while_it_is_deployed") {
        return;
    }
    let fx = Fx::new();
    let v1 = fx.base(1_000);
    let tool = fx.ext("tool", "TOOL\n");
    let repo = fx.repo();
    let composed = compose_by_hand(&repo, &v1, std::slice::from_ref(&tool));
    fx.deploy(&composed.to_hex(), None).unwrap();
    // The base's branch moves on: the composed commit's parent is v1, and
    // its ref, `arbor/bases/V1`, keeps it through ostree's prunes.
    let v2 = fx.base(2_000);
    crate::write::cleanup(&mut fx.sysroot().lock().unwrap(), true).unwrap();
    let repo_arg = format!("--repo={}", fx.sys.join("ostree/repo").display());
    ostree_ok(&[&repo_arg, "prune", "--refs-only", "--depth=0"]);
    let sysroot_arg = format!("--sysroot={}", fx.sys.display());
    ostree_ok(&["admin", "cleanup", &sysroot_arg]);
    let load = |c: &Checksum| arbor_repo::objects::load_commit(&repo, c);
    for c in [composed, v1, tool.commit, v2] {
        load(&c).unwrap_or_else(|e| panic!("{c} was pruned: {e:#}"));
    }
    // Once no deployment has v1 as its base, its ref goes, then v1.
    fx.deploy("testos/stable", None).unwrap();
    assert!(local_refs(&repo).contains(&format!("arbor/bases/{v1}")));
    crate::ops::undeploy(&mut fx.sysroot().lock().unwrap(), 1).unwrap();
    assert_eq!(fx.sysroot().deployments().len(), 1);
    assert!(!local_refs(&repo).contains(&format!("arbor/bases/{v1}")));
    let err = load(&v1).unwrap_err();
    assert!(arbor_repo::reachable::is_not_found(&err), "{err:#}");
}

#[test]
fn an_unreadable_deployment_commit_stops_ref_deletion_but_not_pruning() {
    if needs_root("an_unreadable_deployment_commit_stops_ref_deletion_but_not_pruning") {
        return;
    }
    let fx = Fx::new();
    let v1 = fx.base(1_000);
    let tool = fx.ext("tool", "TOOL\n");
    let repo = fx.repo();
    let composed = compose_by_hand(&repo, &v1, std::slice::from_ref(&tool));
    fx.deploy(&composed.to_hex(), None).unwrap();
    fx.base(2_000);
    // An extension no deployment lists: its ref would be deleted.
    let unused = fx.ext("unused", "UNUSED\n");
    // An object no ref reaches: the prune deletes it.
    let loose_dir = fx.dir.path().join("loose");
    put(&loose_dir.join("usr/share/loose"), "LOOSE\n");
    let loose = commit_dir(&repo, &loose_dir, None, 3);
    // The composed commit's object goes missing.
    let hex = composed.to_hex();
    std::fs::remove_file(fx.sys.join(format!(
        "ostree/repo/objects/{}/{}.commit",
        &hex[..2],
        &hex[2..]
    )))
    .unwrap();
    // Loading stays lenient (status works), and says the layers are
    // unknown.
    let mut s = fx.sysroot();
    let d = &s.deployments()[0];
    assert_eq!(
        (d.csum, &d.layers, d.layers_unknown),
        (composed, &None, true)
    );
    assert_eq!(d.base_commit(), composed);
    assert!(crate::layered::unknown_layers_remedy(&s, d)
        .contains(&format!("deployment 0 ({}) cannot be read", d.dir_name())));
    let before = local_refs(&repo);
    let mut lock = s.lock().unwrap();
    assert_eq!(collect_refs(&mut lock).unwrap(), Vec::<String>::new());
    // The cleanup prunes what no ref reaches, and keeps every ref.
    let r = crate::write::cleanup(&mut lock, true).unwrap();
    assert!(r.pruned_objects > 0);
    let err = arbor_repo::objects::load_commit(&repo, &loose).unwrap_err();
    assert!(arbor_repo::reachable::is_not_found(&err), "{err:#}");
    assert_eq!(local_refs(&repo), before);
    assert!(before.contains(&tool.ref_name()), "{before:?}");
    assert!(before.contains(&unused.ref_name()), "{before:?}");
    assert!(before.contains(&format!("arbor/bases/{v1}")), "{before:?}");
    for c in [v1, tool.commit, unused.commit] {
        arbor_repo::objects::load_commit(&repo, &c)
            .unwrap_or_else(|e| panic!("{c} was pruned: {e:#}"));
    }
}

#[test]
fn a_corrupt_deployment_commit_stops_pruning_not_cleanup() {
    if needs_root("a_corrupt_deployment_commit_stops_pruning_not_cleanup") {
        return;
    }
    let fx = Fx::new();
    let v1 = fx.base(1_000);
    let tool = fx.ext("tool", "TOOL\n");
    let repo = fx.repo();
    let composed = compose_by_hand(&repo, &v1, std::slice::from_ref(&tool));
    fx.deploy(&composed.to_hex(), None).unwrap();
    let loose_dir = fx.dir.path().join("loose");
    put(&loose_dir.join("usr/share/loose"), "LOOSE\n");
    let loose = commit_dir(&repo, &loose_dir, None, 3);
    // The composed commit's object is present but truncated: it cannot be
    // read, and a prune walking from its ref would fail.
    let hex = composed.to_hex();
    let path = fx.sys.join(format!(
        "ostree/repo/objects/{}/{}.commit",
        &hex[..2],
        &hex[2..]
    ));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let mut s = fx.sysroot();
    assert!(s.deployments()[0].layers_unknown);
    let before = local_refs(&repo);
    let mut lock = s.lock().unwrap();
    // The cleanup succeeds, prunes nothing and keeps every ref.
    let r = crate::write::cleanup(&mut lock, true).unwrap();
    assert_eq!(r.pruned_objects, 0);
    arbor_repo::objects::load_commit(&repo, &loose).unwrap();
    assert_eq!(local_refs(&repo), before);
}

#[test]
fn collect_refs_resets_a_base_ref_pointing_elsewhere() {
    if needs_root("collect_refs_resets_a_base_ref_pointing_elsewhere") {
        return;
    }
    let fx = Fx::new();
    let v1 = fx.base(1_000);
    let v2 = fx.base(2_000);
    let tool = fx.ext("tool", "TOOL\n");
    let repo = fx.repo();
    let composed = compose_by_hand(&repo, &v1, std::slice::from_ref(&tool));
    fx.deploy(&composed.to_hex(), None).unwrap();
    let name = format!("arbor/bases/{v1}");
    let p = fx.sys.join("ostree/repo/refs/heads").join(&name);
    std::fs::write(&p, format!("{v2}\n")).unwrap();
    let mut s = fx.sysroot();
    let mut lock = s.lock().unwrap();
    collect_refs(&mut lock).unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{v1}\n"));
}

#[test]
fn collect_refs_sets_the_missing_refs_of_composed_deployments() {
    if needs_root("collect_refs_sets_the_missing_refs_of_composed_deployments") {
        return;
    }
    let fx = Fx::new();
    let v1 = fx.base(1_000);
    let tool = fx.ext("tool", "TOOL\n");
    let repo = fx.repo();
    let composed = compose_by_hand(&repo, &v1, std::slice::from_ref(&tool));
    fx.deploy(&composed.to_hex(), None).unwrap();
    let v2 = fx.base(2_000);
    // A composition written before base refs existed, refs lost by hand;
    // an extension whose commit is gone gets no ref.
    let needed = [
        format!("arbor/composed/{composed}"),
        format!("arbor/bases/{v1}"),
        tool.ref_name(),
    ];
    let delete: Vec<RefUpdate> = needed
        .iter()
        .map(|n| RefUpdate::delete(RefSpec::local(RefName::new(n.clone()).unwrap())))
        .collect();
    arbor_repo::refs::update_refs(&repo.lock(false).unwrap(), &delete).unwrap();
    for n in &needed {
        assert!(!local_refs(&repo).contains(n), "{n}");
    }
    let mut s = fx.sysroot();
    let mut lock = s.lock().unwrap();
    assert_eq!(collect_refs(&mut lock).unwrap(), Vec::<String>::new());
    let refs = local_refs(&repo);
    for n in &needed {
        assert!(refs.contains(n), "{n} was not set: {refs:?}");
    }
    // Now ostree's own depth-0 prune keeps the base and the extension too.
    drop(lock);
    let repo_arg = format!("--repo={}", fx.sys.join("ostree/repo").display());
    ostree_ok(&[&repo_arg, "prune", "--refs-only", "--depth=0"]);
    for c in [composed, v1, tool.commit, v2] {
        arbor_repo::objects::load_commit(&repo, &c)
            .unwrap_or_else(|e| panic!("{c} was pruned: {e:#}"));
    }
}

#[test]
fn collect_refs_sets_no_ref_for_a_missing_commit() {
    if needs_root("collect_refs_sets_no_ref_for_a_missing_commit") {
        return;
    }
    let fx = Fx::new();
    let v1 = fx.base(1_000);
    let tool = fx.ext("tool", "TOOL\n");
    let repo = fx.repo();
    let composed = compose_by_hand(&repo, &v1, std::slice::from_ref(&tool));
    fx.deploy(&composed.to_hex(), None).unwrap();
    // The extension's ref and commit object are gone (the deployment's
    // files are in its checkout).
    let spec = RefSpec::local(RefName::new(tool.ref_name()).unwrap());
    arbor_repo::refs::update_refs(&repo.lock(false).unwrap(), &[RefUpdate::delete(spec)]).unwrap();
    let hex = tool.commit.to_hex();
    std::fs::remove_file(fx.sys.join(format!(
        "ostree/repo/objects/{}/{}.commit",
        &hex[..2],
        &hex[2..]
    )))
    .unwrap();
    let mut s = fx.sysroot();
    collect_refs(&mut s.lock().unwrap()).unwrap();
    assert!(!local_refs(&repo).contains(&tool.ref_name()));
}

#[test]
fn cleanup_reads_the_deployments_again() {
    if needs_root("cleanup_reads_the_deployments_again") {
        return;
    }
    let fx = Fx::new();
    let v1 = fx.base(1_000);
    fx.deploy("testos/stable", None).unwrap();
    // A loads the deployments (v1 alone), as a command that released the
    // lock and cleans up later.
    let mut a = fx.sysroot();
    // B, another process, deploys v2.
    let v2 = fx.base(2_000);
    fx.deploy("testos/stable", None).unwrap();
    let after_b = fx.sysroot();
    let dirs: Vec<String> = after_b.deployments().iter().map(|d| d.dir_name()).collect();
    assert_eq!(after_b.deployments().len(), 2);
    // A takes the lock again and cleans up: B's deployment, its boot
    // version and its deployment ref stay.
    let mut lock = a.lock().unwrap();
    crate::write::cleanup(&mut lock, true).unwrap();
    let s = fx.sysroot();
    let csums: Vec<Checksum> = s.deployments().iter().map(|d| d.csum).collect();
    assert_eq!(csums, [v2, v1]);
    for d in &dirs {
        let p = fx.sys.join(format!("ostree/deploy/testos/deploy/{d}"));
        assert!(p.is_dir(), "{} was removed", p.display());
    }
    let refs = arbor_repo::refs::list_refs_under(&fx.repo(), "heads/ostree").unwrap();
    assert!(refs.iter().any(|(_, c)| *c == v2), "{refs:?}");
    arbor_repo::objects::load_commit(&fx.repo(), &v2).unwrap();
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
