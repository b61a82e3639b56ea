//! The origin of an upgrade or switch: what the /etc composer sees, and
//! the origin of the pending deployment carried forward.

use super::*;

/// A composer that records what it was given and marks the new /etc.
#[derive(Debug, Default)]
struct Recorder(std::sync::Mutex<Vec<Seen>>);

/// (merge deployment, the origin's `[test] marker`, kernel arguments).
type Seen = (Option<String>, Option<String>, String);

impl arbor_sysroot::compose::EtcComposer for Recorder {
    fn compose(
        &self,
        s: &Sysroot,
        merge: Option<&arbor_sysroot::Deployment>,
        new: &arbor_sysroot::Deployment,
        new_root: &std::os::fd::OwnedFd,
    ) -> anyhow::Result<arbor_sysroot::etc_merge::EtcDiff> {
        let marker = new
            .origin
            .as_ref()
            .and_then(|o| o.get("test", "marker"))
            .map(str::to_string);
        self.0.lock().unwrap().push((
            merge.map(|m| m.dir_name()),
            marker.clone(),
            new.kargs_without_ostree().to_string(),
        ));
        let etc = arbor_fs::open_dir(new_root, "etc")?;
        arbor_fs::atomic_write(
            &etc,
            "composed",
            marker.unwrap_or_default().as_bytes(),
            0o644,
        )?;
        // The default merge still runs: composers build on it or replace it.
        arbor_sysroot::compose::ThreeWayMerge.compose(s, merge, new, new_root)
    }
}

#[test]
fn the_composer_of_an_upgrade_and_a_finalization_sees_the_new_origin() {
    if needs_root("the_composer_of_an_upgrade_and_a_finalization_sees_the_new_origin") {
        return;
    }
    let m = Machine::new();
    // The origin carries a key of the composer's (as arbor-config's
    // `[arbor] rendered-config`): the upgrade carries it forward, and the
    // composer reads it from the new deployment before its /etc exists.
    let origin = m.origin_path(&m.v1);
    let text = std::fs::read_to_string(&origin).unwrap();
    std::fs::write(&origin, format!("{text}[test]\nmarker=m1\n")).unwrap();
    let v2 = m.release(STABLE, "2.0", 2_000_000);
    let rec = std::sync::Arc::new(Recorder::default());
    let mut s = m.sysroot();
    let mut up = upgrader(&mut s, false).unwrap();
    let UpgradeCheck::Available(u) = up.pull(&NullProgress).unwrap() else {
        panic!("no update pulled");
    };
    let opts = DeployUpdateOptions {
        stage: false,
        lock_finalization: false,
        composer: Some(rec.clone()),
        layering: None,
    };
    up.deploy(&u, &opts).unwrap();
    let root = |c: &Checksum, n: u32| m.sys.join(format!("ostree/deploy/testos/deploy/{c}.{n}"));
    assert_eq!(
        std::fs::read_to_string(root(&v2, 0).join("etc/composed")).unwrap(),
        "m1"
    );
    assert_eq!(
        rec.0.lock().unwrap().as_slice(),
        [(
            Some(format!("{}.0", m.v1)),
            Some("m1".to_string()),
            String::new()
        )]
    );
    // Exact kernel arguments replace the merge deployment's.
    let mut s = m.sysroot();
    let d = DeployOptions {
        stateroot: Some("testos".into()),
        revision: v2.to_hex(),
        exact_kargs: Some(vec!["a=1".into(), "b".into()]),
        composer: Some(rec.clone()),
        ..Default::default()
    };
    deploy(&mut s.lock().unwrap(), &d).unwrap();
    assert_eq!(
        m.sysroot().deployments()[0]
            .kargs_without_ostree()
            .to_string(),
        "a=1 b"
    );
    // Staged: not composed until finalize, which uses the composer given.
    let mut s = m.sysroot();
    s.set_test_root(Some(&root(&v2, 1))).unwrap();
    let d = DeployOptions {
        stateroot: Some("testos".into()),
        revision: v2.to_hex(),
        stage: true,
        composer: Some(rec.clone()),
        ..Default::default()
    };
    deploy(&mut s.lock().unwrap(), &d).unwrap();
    assert_eq!(rec.0.lock().unwrap().len(), 2);
    assert!(!root(&v2, 2).join("etc/composed").exists());
    arbor_sysroot::staged::finalize_with(&mut s.lock().unwrap(), rec.as_ref()).unwrap();
    assert_eq!(rec.0.lock().unwrap().len(), 3);
    assert!(root(&v2, 2).join("etc/composed").exists());
}

/// Booted into v1, with a pending deployment whose origin records more
/// (say a declared configuration, `[arbor] rendered-config`): an upgrade,
/// then a switch, carry the origin of what boots next, not the booted
/// one's, with the followed (or new) refspec set; /etc still merges from
/// the booted deployment.
#[test]
fn an_upgrade_and_a_switch_carry_the_origin_of_the_pending_deployment() {
    if needs_root("an_upgrade_and_a_switch_carry_the_origin_of_the_pending_deployment") {
        return;
    }
    let m = Machine::new();
    let mut s = m.booted_in_v1();
    let mut origin = arbor_repo::config::KeyFile::default();
    origin
        .set("origin", "refspec", &format!("origin:{STABLE}"))
        .unwrap();
    origin.set("arbor", "rendered-config", "pending").unwrap();
    let opts = DeployOptions {
        stateroot: Some("testos".into()),
        revision: format!("origin:{STABLE}"),
        origin: Some(origin),
        ..Default::default()
    };
    deploy(&mut s.lock().unwrap(), &opts).unwrap();
    s.load().unwrap();
    assert_eq!(s.booted(), Some(1));
    let v2 = m.release(STABLE, "2.0", 2_000_000);
    let mut up = upgrader(&mut s, false).unwrap();
    assert_eq!(up.merge_deployment().csum, m.v1);
    let UpgradeCheck::Available(u) = up.pull(&NullProgress).unwrap() else {
        panic!("no update pulled");
    };
    let r = up.deploy(&u, &NOW).unwrap();
    assert_eq!(r.merge_deployment, Some(format!("{}.0", m.v1)));
    drop(up);
    s.load().unwrap();
    let d = &s.deployments()[0];
    assert_eq!(d.csum, v2);
    let o = d.origin.as_ref().unwrap();
    assert_eq!(o.get("arbor", "rendered-config"), Some("pending"), "{o:?}");
    assert_eq!(
        o.get("origin", "refspec"),
        Some(&*format!("origin:{STABLE}"))
    );
    m.set_local(m.v1);
    let opts = SwitchOptions {
        stateroot: None,
        refspec: "testos/local".into(),
        composer: None,
        layering: None,
    };
    switch(&mut s, &opts, &NullProgress).unwrap();
    s.load().unwrap();
    let o = s.deployments()[0].origin.as_ref().unwrap();
    assert_eq!(o.get("arbor", "rendered-config"), Some("pending"), "{o:?}");
    assert_eq!(o.get("origin", "refspec"), Some("testos/local"));
}
