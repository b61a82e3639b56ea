//! Composed deployments (a base plus extensions): up-to-date checks,
//! upgrades and switches through the layering hook, staged composed
//! deployments and their refs.

use super::*;

use arbor_sysroot::compose::CommitLayering;
use arbor_sysroot::layered::{ExtensionRef, Layers};
use std::sync::{Arc, Mutex};

/// Commits `dir` (owner 0:0, no ref) into `repo`.
fn commit_plain(repo: &Repo, dir: &Path, ts: u64) -> Checksum {
    let opts = CommitOptions {
        subject: "plain".into(),
        timestamp: Some(ts),
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

/// A composed commit of `base` plus `exts` made by hand (as arbor-config's
/// engine documents it: the union of the trees, the base's version and
/// timestamp, `arbor.base-commit`, `arbor.extensions`, the base as
/// parent), with its `arbor/composed/` and `arbor/bases/` refs.
fn compose_by_hand(repo: &Repo, base: &Checksum, exts: &[ExtensionRef]) -> Checksum {
    use arbor_format::metadata::Value;
    use arbor_sysroot::layered::{
        BASE_COMMIT_KEY, BASE_REF_PREFIX, COMPOSED_REF_PREFIX, EXTENSIONS_KEY,
    };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("union");
    let opts = arbor_repo::checkout::CheckoutOptions {
        hardlink: false,
        require_hardlinks: false,
        user_mode: false,
        union: true,
        subpath: None,
    };
    for c in std::iter::once(base).chain(exts.iter().map(|e| &e.commit)) {
        arbor_repo::checkout::checkout(repo, c, &dir, &opts, &NullProgress).unwrap();
    }
    let b = arbor_repo::objects::load_commit(repo, base).unwrap();
    let tree = commit_plain(repo, &dir, b.timestamp);
    let tree = arbor_repo::objects::load_commit(repo, &tree).unwrap();
    let mut metadata = arbor_format::Metadata::new();
    if let Some(v) = b.version() {
        metadata.push("version", Value::Str(v.to_string()));
    }
    metadata.push(BASE_COMMIT_KEY, Value::Str(base.to_hex()));
    metadata.push(
        EXTENSIONS_KEY,
        Value::StrArray(exts.iter().map(ExtensionRef::to_entry).collect()),
    );
    let c = arbor_format::Commit {
        metadata,
        parent: Some(*base),
        related: Vec::new(),
        subject: "Extensions".into(),
        body: String::new(),
        timestamp: b.timestamp,
        root_tree: tree.root_tree,
        root_meta: tree.root_meta,
    };
    let lock = repo.lock(false).unwrap();
    let txn = arbor_repo::txn::Transaction::begin(&lock).unwrap();
    let csum = txn
        .write_metadata(arbor_format::ObjectType::Commit, &c.encode())
        .unwrap();
    let r = RefName::new(format!("{COMPOSED_REF_PREFIX}{csum}")).unwrap();
    let b = RefName::new(format!("{BASE_REF_PREFIX}{base}")).unwrap();
    txn.commit(&[
        RefUpdate::set(RefSpec::local(r), csum),
        RefUpdate::set(RefSpec::local(b), *base),
    ])
    .unwrap();
    csum
}

/// The hook of the tests, as arbor-config's extension layering: composes
/// on the base of the commit it is given the list of what boots next in
/// the stateroot (not the merge deployment's), or `exts` when set; records
/// (merge deployment's commit, commit given).
#[derive(Debug)]
struct Hook {
    exts: Option<Vec<ExtensionRef>>,
    calls: Mutex<Vec<(Option<Checksum>, Checksum)>>,
}

impl Hook {
    /// Composes `exts`.
    fn new(exts: &[ExtensionRef]) -> Arc<Hook> {
        Arc::new(Hook {
            exts: Some(exts.to_vec()),
            calls: Mutex::default(),
        })
    }

    /// Composes the list of what boots next.
    fn next() -> Arc<Hook> {
        Arc::new(Hook {
            exts: None,
            calls: Mutex::default(),
        })
    }
}

impl CommitLayering for Hook {
    fn layer(
        &self,
        s: &arbor_sysroot::sysroot::SysrootLock<'_>,
        stateroot: &str,
        merge: Option<&arbor_sysroot::Deployment>,
        commit: &Checksum,
    ) -> anyhow::Result<Checksum> {
        self.calls
            .lock()
            .unwrap()
            .push((merge.map(|m| m.csum), *commit));
        let exts = match &self.exts {
            Some(l) => l.clone(),
            None => s
                .next_deployment(stateroot)
                .map(|d| d.extensions().to_vec())
                .unwrap_or_default(),
        };
        let base = arbor_sysroot::layered::base_of(s.repo(), commit)?;
        if exts.is_empty() {
            return Ok(base);
        }
        Ok(compose_by_hand(s.repo(), &base, &exts))
    }
}

impl Machine {
    /// An extension with one tool in the system repository, under its
    /// `arbor/extensions/` ref.
    fn ext(&self, name: &str) -> ExtensionRef {
        let d = self.dir.path().join(format!("ext-{name}"));
        put(&d.join(format!("usr/bin/{name}")), "TOOL\n");
        let s = self.sysroot();
        let e = ExtensionRef {
            name: name.into(),
            commit: commit_plain(s.repo(), &d, 1),
        };
        let spec = RefSpec::local(RefName::new(e.ref_name()).unwrap());
        arbor_repo::refs::update_refs(
            &s.repo().lock(false).unwrap(),
            &[RefUpdate::set(spec, e.commit)],
        )
        .unwrap();
        e
    }

    /// Deploys v1 with `exts` composed on it, through the hook, following
    /// `origin:testos/stable` as before.
    fn deploy_composed(&self, exts: &[ExtensionRef]) -> Checksum {
        let opts = DeployOptions {
            stateroot: Some("testos".into()),
            revision: format!("origin:{STABLE}"),
            layering: Some(Hook::new(exts)),
            ..Default::default()
        };
        let r = deploy(&mut self.sysroot().lock().unwrap(), &opts).unwrap();
        Checksum::from_hex(&r.checksum).unwrap()
    }
}

#[test]
fn a_composed_deployment_is_up_to_date_while_its_base_is_then_upgrades_through_the_hook() {
    if needs_root(
        "a_composed_deployment_is_up_to_date_while_its_base_is_then_upgrades_through_the_hook",
    ) {
        return;
    }
    let m = Machine::new();
    let tool = m.ext("tool");
    let c1 = m.deploy_composed(std::slice::from_ref(&tool));
    assert_ne!(c1, m.v1);
    let mut s = m.sysroot();
    let mut up = upgrader(&mut s, false).unwrap();
    assert_eq!(up.merge_deployment().csum, c1);
    assert_eq!(up.merge_deployment().base_commit(), m.v1);
    // The ref still names the base the extensions are composed on.
    assert_eq!(up.check().unwrap(), UpgradeCheck::UpToDate { commit: m.v1 });
    assert_eq!(
        up.pull(&NullProgress).unwrap(),
        UpgradeCheck::UpToDate { commit: m.v1 }
    );
    drop(up);
    // The same, booted into it (the merge deployment is then the booted
    // one, with no pending one).
    let mut booted = m.sysroot();
    let root = m.sys.join(format!("ostree/deploy/testos/deploy/{c1}.0"));
    booted.set_test_root(Some(&root)).unwrap();
    assert_eq!(booted.booted(), Some(0));
    let b = upgrader(&mut booted, false).unwrap();
    assert_eq!(b.check().unwrap(), UpgradeCheck::UpToDate { commit: m.v1 });
    drop(b);
    let mut up = upgrader(&mut s, false).unwrap();
    // The base moves: an update from base to base, deployed re-composed.
    let v2 = m.release(STABLE, "2.0", 2_000_000);
    let UpgradeCheck::Available(u) = up.pull(&NullProgress).unwrap() else {
        panic!("no update pulled");
    };
    assert_eq!((*u.from(), *u.to()), (m.v1, v2));
    let hook = Hook::next();
    let opts = DeployUpdateOptions {
        layering: Some(hook.clone()),
        ..Default::default()
    };
    // The preview shows the commit the deploy deploys.
    let preview = up.preview_etc(&u, &opts).unwrap();
    let r = up.deploy(&u, &opts).unwrap();
    assert_eq!(
        *hook.calls.lock().unwrap(),
        [(Some(c1), v2), (Some(c1), v2)]
    );
    let c2 = Checksum::from_hex(&r.checksum).unwrap();
    assert_eq!(preview.commit, c2);
    assert_ne!(c2, v2);
    let s = m.sysroot();
    let d = &s.deployments()[0];
    assert_eq!(d.csum, c2);
    assert_eq!(
        d.layers,
        Some(Layers {
            base: v2,
            extensions: vec![tool.clone()]
        })
    );
    assert_eq!(d.version.as_deref(), Some("2.0"));
    assert!(m
        .sys
        .join(format!("ostree/deploy/testos/deploy/{c2}.0/usr/bin/tool"))
        .exists());
    // Up to date again, on the new base.
    let mut s = m.sysroot();
    let up = upgrader(&mut s, false).unwrap();
    assert_eq!(up.check().unwrap(), UpgradeCheck::UpToDate { commit: v2 });
}

#[test]
fn a_staged_composed_deployment_is_pending_and_keeps_its_refs() {
    if needs_root("a_staged_composed_deployment_is_pending_and_keeps_its_refs") {
        return;
    }
    let m = Machine::new();
    let v2 = m.release(STABLE, "2.0", 2_000_000);
    let tool = m.ext("tool");
    let mut s = m.booted_in_v1();
    let mut up = upgrader(&mut s, false).unwrap();
    let UpgradeCheck::Available(u) = up.pull(&NullProgress).unwrap() else {
        panic!("no update pulled");
    };
    let opts = DeployUpdateOptions {
        stage: true,
        layering: Some(Hook::new(std::slice::from_ref(&tool))),
        ..Default::default()
    };
    let r = up.deploy(&u, &opts).unwrap();
    let staged = Checksum::from_hex(&r.checksum).unwrap();
    // Deploying the same update again: it waits to boot already.
    let err = up.deploy(&u, &opts).unwrap_err();
    assert!(
        matches!(&err, UpgradeError::AlreadyDeployed { commit } if *commit == v2),
        "{err:?}"
    );
    let unused = m.ext("unused");
    let mut s = m.booted_in_v1();
    let d = &s.deployments()[0];
    assert!(d.staged);
    assert_eq!((d.csum, d.base_commit()), (staged, v2));
    assert_eq!(d.extensions(), std::slice::from_ref(&tool));
    // v2 waits to boot, with the extension on it: nothing to upgrade to.
    let up = upgrader(&mut s, false).unwrap();
    assert_eq!(up.merge_deployment().csum, m.v1);
    assert_eq!(up.check().unwrap(), UpgradeCheck::UpToDate { commit: v2 });
    drop(up);
    // The staged deployment's refs stay; the unused extension's goes.
    let mut lock = s.lock().unwrap();
    assert_eq!(
        arbor_sysroot::layered::collect_refs(&mut lock).unwrap(),
        [unused.ref_name()]
    );
    let refs: Vec<String> = arbor_repo::refs::list_refs(lock.repo())
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("arbor/"))
        .collect();
    assert_eq!(
        refs,
        [
            format!("arbor/bases/{v2}"),
            format!("arbor/composed/{staged}"),
            tool.ref_name()
        ]
    );
}

#[test]
fn a_switch_deploys_through_the_hook() {
    if needs_root("a_switch_deploys_through_the_hook") {
        return;
    }
    let m = Machine::new();
    let tool = m.ext("tool");
    m.set_local(m.v1);
    let hook = Hook::new(std::slice::from_ref(&tool));
    let opts = SwitchOptions {
        stateroot: None,
        refspec: "testos/local".into(),
        composer: None,
        layering: Some(hook.clone()),
    };
    let r = switch(&mut m.sysroot(), &opts, &NullProgress).unwrap();
    assert_eq!(*hook.calls.lock().unwrap(), [(Some(m.v1), m.v1)]);
    let s = m.sysroot();
    let d = &s.deployments()[0];
    assert_eq!(d.csum.to_hex(), r.checksum);
    assert_eq!(
        (d.base_commit(), d.extensions()),
        (m.v1, std::slice::from_ref(&tool))
    );
    assert_eq!(d.refspec(), Some("testos/local"));
}

#[test]
fn an_upgrade_re_composes_the_list_of_the_pending_deployment_not_the_booted_one() {
    if needs_root("an_upgrade_re_composes_the_list_of_the_pending_deployment_not_the_booted_one") {
        return;
    }
    let m = Machine::new();
    let a = m.ext("a");
    // Booted into v1 + a; then v1 + a + b deployed (pending, not booted).
    let booted = m.deploy_composed(std::slice::from_ref(&a));
    let b = m.ext("b");
    let mut s = m.sysroot();
    let root = m
        .sys
        .join(format!("ostree/deploy/testos/deploy/{booted}.0"));
    s.set_test_root(Some(&root)).unwrap();
    let opts = DeployOptions {
        stateroot: Some("testos".into()),
        revision: format!("origin:{STABLE}"),
        layering: Some(Hook::new(&[a.clone(), b.clone()])),
        ..Default::default()
    };
    let pending = deploy(&mut s.lock().unwrap(), &opts).unwrap();
    s.load().unwrap();
    assert_eq!(s.booted(), Some(1));
    assert_eq!(s.deployments()[0].csum.to_hex(), pending.checksum);
    assert_eq!(s.deployments()[0].extensions(), [a.clone(), b.clone()]);
    // The upgrade merges the booted deployment's /etc, and re-composes the
    // list of what boots next on the new base.
    let v2 = m.release(STABLE, "2.0", 2_000_000);
    let mut up = upgrader(&mut s, false).unwrap();
    assert_eq!(up.merge_deployment().csum, booted);
    let UpgradeCheck::Available(u) = up.pull(&NullProgress).unwrap() else {
        panic!("no update pulled");
    };
    let hook = Hook::next();
    let opts = DeployUpdateOptions {
        layering: Some(hook.clone()),
        ..Default::default()
    };
    let r = up.deploy(&u, &opts).unwrap();
    assert_eq!(*hook.calls.lock().unwrap(), [(Some(booted), v2)]);
    drop(up);
    s.load().unwrap();
    let d = &s.deployments()[0];
    assert_eq!(d.csum.to_hex(), r.checksum);
    assert_eq!(
        d.layers,
        Some(Layers {
            base: v2,
            extensions: vec![a, b]
        })
    );
}
