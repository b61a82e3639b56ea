//! The upgrade policy: what is refused before any fetch, checks and
//! download-only pulls, downgrades, staged updates, and deploys that
//! another process raced.

use super::*;

#[test]
fn an_origin_that_cannot_be_upgraded_is_refused_before_any_fetch() {
    if needs_root("an_origin_that_cannot_be_upgraded_is_refused_before_any_fetch") {
        return;
    }
    let m = Machine::new();
    let v2 = m.release(STABLE, "2.0", 2_000_000);
    let origin = m.origin_path(&m.v1);
    let good = std::fs::read_to_string(&origin).unwrap();
    assert_eq!(good, format!("[origin]\nrefspec=origin:{STABLE}\n"));
    let cases: [(&str, IsError, &str); 3] = [
        (
            "[origin]\nrefspec=origin:testos/stable\nunconfigured-state=Register first\n",
            |e| matches!(e, UpgradeError::Unconfigured { message } if message == "Register first"),
            "origin unconfigured-state: Register first",
        ),
        (
            "[origin]\nrefspec=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
            |e| matches!(e, UpgradeError::OriginIsCommit { .. }),
            "The origin is a commit (0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef), \
             not a ref: use 'switch' to follow a ref",
        ),
        (
            "[origin]\n",
            |e| matches!(e, UpgradeError::NoOrigin { .. }),
            "has no origin refspec",
        ),
    ];
    for (text, is, message) in cases {
        std::fs::write(&origin, text).unwrap();
        let mut s = m.sysroot();
        let err = upgrader(&mut s, false).unwrap_err();
        assert!(is(&err), "{text}: {err:?}");
        assert!(err.to_string().contains(message), "{text}: {err}");
    }
    // Nothing was fetched: the ref still names v1, v2 is not in the
    // system repository.
    assert_eq!(m.tracked(), Some(m.v1));
    let err = arbor_repo::objects::load_commit(m.sysroot().repo(), &v2).unwrap_err();
    assert!(arbor_repo::reachable::is_not_found(&err), "{err:#}");
    // A stateroot without deployments.
    std::fs::write(&origin, good).unwrap();
    let mut s = m.sysroot();
    s.lock().unwrap().os_init("other").unwrap();
    let opts = UpgradeOptions {
        stateroot: Some("other".into()),
        allow_downgrade: false,
    };
    let err = Upgrader::new(&mut s, opts).unwrap_err();
    assert!(
        matches!(&err, UpgradeError::NoDeployment { stateroot } if stateroot == "other"),
        "{err:?}"
    );
}

#[test]
fn check_reports_the_update_and_fetches_nothing() {
    if needs_root("check_reports_the_update_and_fetches_nothing") {
        return;
    }
    let m = Machine::new();
    let mut s = m.sysroot();
    let up = upgrader(&mut s, false).unwrap();
    assert_eq!(up.check().unwrap(), UpgradeCheck::UpToDate { commit: m.v1 });
    let v2 = m.release(STABLE, "2.0", 2_000_000);
    let UpgradeCheck::Available(u) = up.check().unwrap() else {
        panic!("no update found");
    };
    assert_eq!((*u.from(), *u.to()), (m.v1, v2));
    // Not in the system repository: version and timestamp unknown.
    assert_eq!((u.version(), u.timestamp()), (None, None));
    assert_eq!(m.tracked(), Some(m.v1));
    let err = arbor_repo::objects::load_commit(m.sysroot().repo(), &v2).unwrap_err();
    assert!(arbor_repo::reachable::is_not_found(&err), "{err:#}");
    assert_eq!(m.deployments(), [(m.v1, 0)]);
    // A ref the remote does not list.
    std::fs::write(
        m.origin_path(&m.v1),
        "[origin]\nrefspec=origin:testos/gone\n",
    )
    .unwrap();
    let mut s = m.sysroot();
    let err = upgrader(&mut s, false).unwrap().check().unwrap_err();
    assert!(
        matches!(&err, UpgradeError::NoRemoteRef { remote, name }
            if remote == "origin" && name == "testos/gone"),
        "{err:?}"
    );
    // The pull says the same, typed.
    let err = upgrader(&mut s, false)
        .unwrap()
        .pull(&NullProgress)
        .unwrap_err();
    assert!(
        matches!(&err, UpgradeError::NoRemoteRef { remote, name }
            if remote == "origin" && name == "testos/gone"),
        "{err:?}"
    );
    assert_eq!(m.deployments(), [(m.v1, 0)]);
}

#[test]
fn download_only_leaves_the_deployments_unchanged_then_deploy_upgrades() {
    if needs_root("download_only_leaves_the_deployments_unchanged_then_deploy_upgrades") {
        return;
    }
    let m = Machine::new();
    let v2 = m.release(STABLE, "2.0", 2_000_000);
    let entries = || {
        std::fs::read_dir(m.sys.join("boot/loader/entries"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("conf".as_ref()))
            .count()
    };
    let before = (m.deployments(), entries());
    // A commit override in the origin: the upgrade follows the ref again.
    let origin = m.origin_path(&m.v1);
    let text = std::fs::read_to_string(&origin).unwrap();
    std::fs::write(&origin, format!("{text}override-commit={}\n", m.v1)).unwrap();
    let mut s = m.sysroot();
    let mut up = upgrader(&mut s, false).unwrap();
    let UpgradeCheck::Available(u) = up.pull(&NullProgress).unwrap() else {
        panic!("no update pulled");
    };
    assert_eq!((*u.from(), *u.to()), (m.v1, v2));
    assert_eq!(u.version(), Some("2.0"));
    assert_eq!(u.timestamp(), Some(2_000_000));
    // Downloaded: the ref moved; the deployments and boot entries did not.
    assert_eq!(m.tracked(), Some(v2));
    assert_eq!((m.deployments(), entries()), before);
    // The /etc preview of the update, an admin change carried.
    let etc = m
        .sys
        .join(format!("ostree/deploy/testos/deploy/{}.0/etc/a.conf", m.v1));
    std::fs::write(&etc, "a=ADMIN\n").unwrap();
    let p = up.preview_etc(&u, &DeployUpdateOptions::default()).unwrap();
    assert_eq!(p.commit, v2);
    assert_eq!(p.merge_deployment, Some(format!("{}.0", m.v1)));
    let paths: Vec<_> = p.plan.iter().map(|e| (&*e.path, &*e.change)).collect();
    assert_eq!(paths, [("a.conf", "modified")]);
    assert!(p.plan[0].upstream_changed);
    assert_eq!((m.deployments(), entries()), before);
    // Deploy: v2 is the default, its origin follows the ref (no override).
    let r = up.deploy(&u, &NOW).unwrap();
    assert_eq!(r.checksum, v2.to_hex());
    assert_eq!(m.deployments(), [(v2, 0), (m.v1, 0)]);
    assert_eq!(
        std::fs::read_to_string(m.origin_path(&v2)).unwrap(),
        format!("[origin]\nrefspec=origin:{STABLE}\n")
    );
    // Now up to date, for check and pull alike.
    let mut s = m.sysroot();
    let mut up = upgrader(&mut s, false).unwrap();
    assert_eq!(up.check().unwrap(), UpgradeCheck::UpToDate { commit: v2 });
    assert_eq!(
        up.pull(&NullProgress).unwrap(),
        UpgradeCheck::UpToDate { commit: v2 }
    );
}

#[test]
fn an_older_commit_is_refused_unless_downgrades_are_allowed() {
    if needs_root("an_older_commit_is_refused_unless_downgrades_are_allowed") {
        return;
    }
    let m = Machine::new();
    // An older commit, pulled under its own ref; the stateroot follows a
    // local ref (no pull, so no pull-time check) that goes back to it.
    let old = m.release("testos/old", "0.9", 500_000);
    let mut s = m.sysroot();
    let pull = arbor_pull::PullOptions {
        refs: vec!["testos/old".into()],
        ..Default::default()
    };
    arbor_pull::pull(
        &s.repo().lock(false).unwrap(),
        "origin",
        &pull,
        &NullProgress,
    )
    .unwrap();
    let local = RefSpec::local(RefName::new("testos/local").unwrap());
    let set = |c| {
        arbor_repo::refs::update_refs(
            &m.sysroot().repo().lock(false)?,
            &[RefUpdate::set(local.clone(), c)],
        )
    };
    set(m.v1).unwrap();
    let opts = SwitchOptions {
        stateroot: None,
        refspec: "testos/local".into(),
        composer: None,
        layering: None,
    };
    switch(&mut s, &opts, &NullProgress).unwrap();
    assert_eq!(m.deployments()[0], (m.v1, 1));
    set(old).unwrap();
    let mut s = m.sysroot();
    let mut up = upgrader(&mut s, false).unwrap();
    // --check reports it (it only compares commits); the pull refuses it.
    assert!(matches!(up.check().unwrap(), UpgradeCheck::Available(_)));
    let err = up.pull(&NullProgress).unwrap_err();
    assert!(
        matches!(
            &err,
            UpgradeError::DowngradeRefused { target, target_timestamp: 500_000, deployed, deployed_timestamp: 1_000_000 }
                if *target == old && *deployed == m.v1
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("older than the deployed"), "{err}");
    assert_eq!(m.deployments()[0], (m.v1, 1));
    // Allowed: deployed.
    let mut s = m.sysroot();
    let mut up = upgrader(&mut s, true).unwrap();
    let UpgradeCheck::Available(u) = up.pull(&NullProgress).unwrap() else {
        panic!("no update pulled");
    };
    up.deploy(&u, &NOW).unwrap();
    assert_eq!(m.deployments()[0], (old, 0));
}

#[test]
fn a_staged_update_is_up_to_date_for_check_and_pull() {
    if needs_root("a_staged_update_is_up_to_date_for_check_and_pull") {
        return;
    }
    let m = Machine::new();
    let v2 = m.release(STABLE, "2.0", 2_000_000);
    let mut s = m.booted_in_v1();
    let mut up = upgrader(&mut s, false).unwrap();
    let UpgradeCheck::Available(u) = up.pull(&NullProgress).unwrap() else {
        panic!("no update pulled");
    };
    up.deploy(
        &u,
        &DeployUpdateOptions {
            stage: true,
            ..Default::default()
        },
    )
    .unwrap();
    // Booted in v1, v2 staged: the merge deployment is still v1, yet v2
    // waits to boot, so there is nothing to upgrade to.
    let mut s = m.booted_in_v1();
    assert!(s.deployments()[0].staged);
    assert_eq!(s.deployments()[0].csum, v2);
    let mut up = upgrader(&mut s, false).unwrap();
    assert_eq!(up.merge_deployment().csum, m.v1);
    assert_eq!(up.check().unwrap(), UpgradeCheck::UpToDate { commit: v2 });
    assert_eq!(
        up.pull(&NullProgress).unwrap(),
        UpgradeCheck::UpToDate { commit: v2 }
    );
}

#[test]
fn a_deploy_refuses_when_another_process_changed_the_merge_deployment() {
    if needs_root("a_deploy_refuses_when_another_process_changed_the_merge_deployment") {
        return;
    }
    let m = Machine::new();
    let v2 = m.release(STABLE, "2.0", 2_000_000);
    let mut s = m.sysroot();
    let mut up = upgrader(&mut s, false).unwrap();
    let UpgradeCheck::Available(u) = up.pull(&NullProgress).unwrap() else {
        panic!("no update pulled");
    };
    assert_eq!(*u.to(), v2);
    // Meanwhile the admin switches to a local ref.
    m.set_local(m.v1);
    let opts = SwitchOptions {
        stateroot: None,
        refspec: "testos/local".into(),
        composer: None,
        layering: None,
    };
    switch(&mut m.sysroot(), &opts, &NullProgress).unwrap();
    let switched = m.deployments();
    assert_eq!(switched, [(m.v1, 1), (m.v1, 0)]);
    let origin = m
        .sys
        .join(format!("ostree/deploy/testos/deploy/{}.1.origin", m.v1));
    let text = std::fs::read_to_string(&origin).unwrap();
    // The stale upgrade does not undo the switch.
    let err = up.deploy(&u, &NOW).unwrap_err();
    assert!(
        matches!(&err, UpgradeError::MergeChanged { expected, found }
            if *expected == format!("{}.0", m.v1)
                && found.as_deref() == Some(&*format!("{}.1", m.v1))),
        "{err:?}"
    );
    assert_eq!(m.deployments(), switched);
    assert_eq!(std::fs::read_to_string(&origin).unwrap(), text);
    // Only the origin changes (same commit and serial): refused too.
    let mut s = m.sysroot();
    let mut up = upgrader(&mut s, false).unwrap();
    std::fs::write(&origin, format!("[origin]\nrefspec=origin:{STABLE}\n")).unwrap();
    let err = up.deploy(&u, &NOW).unwrap_err();
    assert!(matches!(&err, UpgradeError::MergeChanged { .. }), "{err:?}");
    assert_eq!(m.deployments(), switched);
}

#[test]
fn a_deploy_refuses_an_update_another_process_deployed() {
    if needs_root("a_deploy_refuses_an_update_another_process_deployed") {
        return;
    }
    let m = Machine::new();
    let v2 = m.release(STABLE, "2.0", 2_000_000);
    let mut s = m.booted_in_v1();
    let mut up = upgrader(&mut s, false).unwrap();
    let UpgradeCheck::Available(u) = up.pull(&NullProgress).unwrap() else {
        panic!("no update pulled");
    };
    // Another upgrader deploys v2 first; the booted v1 stays the merge
    // deployment.
    let mut other = m.booted_in_v1();
    let mut up2 = upgrader(&mut other, false).unwrap();
    let UpgradeCheck::Available(u2) = up2.pull(&NullProgress).unwrap() else {
        panic!("no update pulled");
    };
    up2.deploy(&u2, &NOW).unwrap();
    let deployed = m.deployments();
    assert_eq!(deployed, [(v2, 0), (m.v1, 0)]);
    let err = up.deploy(&u, &NOW).unwrap_err();
    assert!(
        matches!(&err, UpgradeError::AlreadyDeployed { commit } if *commit == v2),
        "{err:?}"
    );
    assert_eq!(m.deployments(), deployed);
}

#[test]
fn an_update_as_old_as_the_deployed_commit_is_not_a_downgrade() {
    if needs_root("an_update_as_old_as_the_deployed_commit_is_not_a_downgrade") {
        return;
    }
    let m = Machine::new();
    // The same timestamp as v1 (ostree's _ostree_compare_timestamps
    // accepts it).
    let v2 = m.release(STABLE, "1.1", 1_000_000);
    let mut s = m.sysroot();
    let mut up = upgrader(&mut s, false).unwrap();
    let UpgradeCheck::Available(u) = up.pull(&NullProgress).unwrap() else {
        panic!("no update pulled");
    };
    assert_eq!((*u.to(), u.timestamp()), (v2, Some(1_000_000)));
    up.deploy(&u, &NOW).unwrap();
    assert_eq!(m.deployments()[0], (v2, 0));
}

#[test]
fn a_remote_ref_moving_back_is_a_typed_downgrade_refusal() {
    if needs_root("a_remote_ref_moving_back_is_a_typed_downgrade_refusal") {
        return;
    }
    let m = Machine::new();
    // The remote's testos/stable moves to an older commit (a replayed
    // one, by its timestamp).
    let old = m.release(STABLE, "0.9", 500_000);
    let mut s = m.sysroot();
    let mut up = upgrader(&mut s, false).unwrap();
    let err = up.pull(&NullProgress).unwrap_err();
    assert!(
        matches!(
            &err,
            UpgradeError::DowngradeRefused { target, target_timestamp: 500_000, deployed, deployed_timestamp: 1_000_000 }
                if *target == old && *deployed == m.v1
        ),
        "{err:?}"
    );
    assert_eq!(m.tracked(), Some(m.v1));
    assert_eq!(m.deployments(), [(m.v1, 0)]);
}
