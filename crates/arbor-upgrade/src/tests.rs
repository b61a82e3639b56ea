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

// --- Composed deployments (a base plus extensions). ---

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
