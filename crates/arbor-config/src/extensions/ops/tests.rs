//! `extension add`, `remove`, `list`, the layering and `config apply`'s
//! declared extensions on real sysroots in temporary directories (root:
//! deployments keep owners and get the immutable flag).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arbor_format::{Checksum, RefName};
use arbor_repo::commit::{commit, CommitOptions, CommitSource};
use arbor_repo::NullProgress;
use arbor_sysroot::deploy::{deploy, DeployOptions};
use arbor_sysroot::Sysroot;
use arbor_testutil::needs_root;

use super::*;
use crate::apply::{apply, ApplyOptions};
use crate::state::deployment_state;

const BASE: &str = "testos/stable";

fn put(p: &Path, content: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// A sysroot with the base `testos/stable` (in its own repository)
/// deployed in stateroot `testos`.
struct Machine {
    dir: tempfile::TempDir,
    sys: PathBuf,
    base: Checksum,
}

impl Machine {
    fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sysroot");
        arbor_sysroot::sysroot::init_fs(&sys).unwrap();
        let mut m = Machine {
            dir,
            sys,
            base: Checksum::from_array([0; 32]),
        };
        m.sysroot().lock().unwrap().os_init("testos").unwrap();
        m.base = m.release("1.0", 1_000_000);
        let mut s = m.sysroot();
        let opts = DeployOptions {
            stateroot: Some("testos".into()),
            revision: BASE.into(),
            ..Default::default()
        };
        deploy(&mut s.lock().unwrap(), &opts).unwrap();
        m
    }

    fn sysroot(&self) -> Sysroot {
        Sysroot::open(&self.sys).unwrap()
    }

    /// Commits version `version` of the base on `testos/stable`.
    fn release(&self, version: &str, timestamp: u64) -> Checksum {
        let tree = self.dir.path().join(format!("base-{version}"));
        put(&tree.join("usr/lib/modules/6.1.0-test/vmlinuz"), "KERNEL\n");
        put(
            &tree.join("usr/lib/modules/6.1.0-test/initramfs.img"),
            "INITRD\n",
        );
        put(
            &tree.join("usr/lib/os-release"),
            "ID=testos\nVERSION_ID=1\n",
        );
        put(&tree.join("usr/bin/sh"), "#!sh\n");
        put(&tree.join("usr/etc/a.conf"), &format!("a={version}\n"));
        self.commit(&tree, Some(BASE), version, timestamp)
    }

    fn commit(&self, tree: &Path, branch: Option<&str>, subject: &str, ts: u64) -> Checksum {
        let s = self.sysroot();
        let opts = CommitOptions {
            branch: branch.map(|b| RefName::new(b).unwrap()),
            subject: subject.into(),
            timestamp: Some(ts),
            metadata_strings: vec![("version".into(), subject.into())],
            owner_uid: Some(0),
            owner_gid: Some(0),
            ..Default::default()
        };
        commit(
            &s.repo().lock(false).unwrap(),
            CommitSource::Dir(tree),
            &opts,
            &NullProgress,
        )
        .unwrap()
    }

    /// An extension tree: `usr/bin/NAME` (with `content`) and its unit.
    fn ext_dir(&self, name: &str, content: &str) -> PathBuf {
        let d = self
            .dir
            .path()
            .join(format!("ext-{name}-{}", content.len()));
        put(&d.join(format!("usr/bin/{name}")), content);
        put(
            &d.join(format!("usr/lib/systemd/system/{name}.service")),
            &format!("[Service]\nExecStart=/usr/bin/{name}\n"),
        );
        d
    }

    fn add(&self, sources: Vec<Source>, stage: bool) -> Result<ChangeReport> {
        let mut s = self.sysroot();
        if stage {
            self.boot_default(&mut s);
        }
        let r = add(
            &mut s.lock()?,
            AddOptions {
                sources,
                stage,
                ..Default::default()
            },
        );
        r
    }

    fn add_dir(&self, name: &str, content: &str) -> ChangeReport {
        let path = self.ext_dir(name, content);
        self.add(
            vec![Source::Dir {
                name: name.into(),
                path,
            }],
            false,
        )
        .unwrap()
    }

    /// Pretends the system booted the current default deployment.
    fn boot_default(&self, s: &mut Sysroot) {
        let d = s.deployments().iter().find(|d| !d.staged).unwrap().clone();
        let root = self
            .sys
            .join(format!("ostree/deploy/testos/deploy/{}", d.dir_name()));
        s.set_test_root(Some(&root)).unwrap();
    }

    /// The sysroot as seen from the booted default deployment (which
    /// sees the staged one).
    fn booted(&self) -> Sysroot {
        let mut s = self.sysroot();
        self.boot_default(&mut s);
        s
    }

    /// The default deployment (the first one not staged).
    fn default(&self) -> arbor_sysroot::Deployment {
        let s = self.sysroot();
        let d = s.deployments().iter().find(|d| !d.staged).unwrap().clone();
        d
    }

    fn file(&self, d: &arbor_sysroot::Deployment, path: &str) -> Option<String> {
        let p = self.sys.join(format!(
            "ostree/deploy/{}/deploy/{}/{path}",
            d.stateroot,
            d.dir_name()
        ));
        std::fs::read_to_string(p).ok()
    }

    fn names(d: &arbor_sysroot::Deployment) -> Vec<String> {
        d.extensions().iter().map(|e| e.name.clone()).collect()
    }
}

#[test]
fn add_list_remove() {
    if needs_root("deploying") {
        return;
    }
    let m = Machine::new();
    let before = deployment_state(&m.default(), "rendered-e").state;
    let r = m.add_dir("tools", "#!tool v1\n");
    assert_eq!(r.outcome, Outcome::Deployed);
    assert_eq!(r.imported.len(), 1);
    assert_eq!(r.base, m.base.to_hex());
    let d = m.default();
    assert_ne!(d.csum, m.base, "a composed commit is deployed");
    assert_eq!(d.base_commit(), m.base);
    assert_eq!(Machine::names(&d), ["tools"]);
    assert_eq!(r.deployment.as_deref(), Some(d.dir_name().as_str()));
    assert_eq!(m.file(&d, "usr/bin/tools").as_deref(), Some("#!tool v1\n"));
    assert!(m.file(&d, "usr/lib/systemd/system/tools.service").is_some());
    assert!(m.file(&d, "usr/bin/sh").is_some());
    // The state covers the list: base unchanged, state changed.
    let st = deployment_state(&d, "rendered-e");
    assert_eq!(st.base, m.base.to_hex());
    assert_eq!(st.extensions, [d.extensions()[0].to_entry()]);
    assert_ne!(st.state, before);
    // The extension and composed refs exist.
    let s = m.sysroot();
    let refs: Vec<String> = arbor_repo::refs::list_refs(s.repo())
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(refs.contains(&d.extensions()[0].ref_name()), "{refs:?}");
    assert!(
        refs.contains(&format!("arbor/composed/{}", d.csum.to_hex())),
        "{refs:?}"
    );
    // list: what boots next.
    let l = list(&s, None).unwrap();
    assert_eq!(l.next.deployment, d.dir_name());
    assert_eq!(l.next.base, m.base.to_hex());
    assert_eq!(l.next.extensions.len(), 1);
    assert_eq!(l.next.extensions[0].name, "tools");
    assert!(l.booted.is_none());
    // The same content again: the same commit, nothing to do.
    let n = m.sysroot().deployments().len();
    let again = m.add_dir("tools", "#!tool v1\n");
    assert_eq!(again.outcome, Outcome::Unchanged);
    assert_eq!(m.sysroot().deployments().len(), n);
    // Unknown name: the error lists the known ones; nothing changes.
    let mut s = m.sysroot();
    let e = remove(&mut s.lock().unwrap(), &["nope".into()], false, None).unwrap_err();
    assert!(format!("{e:#}").contains("No extension nope"), "{e:#}");
    assert!(format!("{e:#}").contains("listed: tools"), "{e:#}");
    // A name given twice: said so, not "no extension tools".
    let e = remove(
        &mut s.lock().unwrap(),
        &["tools".into(), "tools".into()],
        false,
        None,
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("Extension tools given twice"),
        "{e:#}"
    );
    assert_eq!(m.default().extensions().len(), 1);
    // Removing the last one deploys the base itself: the files are gone.
    let r = remove(&mut s.lock().unwrap(), &["tools".into()], false, None).unwrap();
    assert_eq!(r.outcome, Outcome::Deployed);
    assert!(r.extensions.is_empty());
    let d = m.default();
    assert_eq!(d.csum, m.base);
    assert!(d.extensions().is_empty());
    assert!(m.file(&d, "usr/bin/tools").is_none());
    assert!(m.file(&d, "usr/lib/systemd/system/tools.service").is_none());
}

#[test]
fn replacing_by_name_keeps_the_order() {
    if needs_root("deploying") {
        return;
    }
    let m = Machine::new();
    m.add_dir("tools", "#!tool v1\n");
    m.add_dir("other", "#!other\n");
    let r = m.add_dir("tools", "#!tool version 2\n");
    assert_eq!(r.outcome, Outcome::Deployed);
    assert_eq!(r.previous.len(), 2);
    let d = m.default();
    assert_eq!(Machine::names(&d), ["tools", "other"]);
    assert_eq!(
        m.file(&d, "usr/bin/tools").as_deref(),
        Some("#!tool version 2\n")
    );
    assert_eq!(m.file(&d, "usr/bin/other").as_deref(), Some("#!other\n"));
    // Refs of listed extensions are never collected.
    assert!(r.collected_refs.iter().all(|c| !c.contains("/other/")));
}

#[test]
fn by_ref_a_missing_ref_is_refused_and_dry_run_changes_nothing() {
    if needs_root("deploying") {
        return;
    }
    let m = Machine::new();
    let e = m
        .add(
            vec![Source::Rev {
                name: "x".into(),
                rev: "exts/x".into(),
            }],
            false,
        )
        .unwrap_err();
    assert!(format!("{e:#}").contains("exts/x"), "{e:#}");
    let c = m.commit(&m.ext_dir("tools", "#!t\n"), Some("exts/tools"), "t", 5);
    let n = m.sysroot().deployments().len();
    let mut s = m.sysroot();
    let r = add(
        &mut s.lock().unwrap(),
        AddOptions {
            sources: vec![Source::Rev {
                name: "tools".into(),
                rev: "exts/tools".into(),
            }],
            dry_run: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(r.outcome, Outcome::DryRun);
    assert_ne!(r.commit, m.base.to_hex());
    assert_eq!(r.extensions[0].commit, c.to_hex());
    assert_eq!(m.sysroot().deployments().len(), n);
    // For real: the composed commit is the one the dry run announced.
    let r2 = m
        .add(
            vec![Source::Rev {
                name: "tools".into(),
                rev: "exts/tools".into(),
            }],
            false,
        )
        .unwrap();
    assert_eq!(r2.commit, r.commit);
    assert_eq!(m.default().csum.to_hex(), r.commit);
}

#[test]
fn staged_then_added_again_builds_on_the_staged_list() {
    if needs_root("deploying") {
        return;
    }
    let m = Machine::new();
    let p = m.ext_dir("tools", "#!t\n");
    let r = m
        .add(
            vec![Source::Dir {
                name: "tools".into(),
                path: p,
            }],
            true,
        )
        .unwrap();
    assert_eq!(r.outcome, Outcome::Staged);
    let s = m.booted();
    let staged = s.deployments().first().unwrap().clone();
    assert!(staged.staged);
    assert_eq!(Machine::names(&staged), ["tools"]);
    // The default is untouched.
    assert!(m.default().extensions().is_empty());
    let p = m.ext_dir("other", "#!o\n");
    let r = m
        .add(
            vec![Source::Dir {
                name: "other".into(),
                path: p,
            }],
            true,
        )
        .unwrap();
    assert_eq!(r.outcome, Outcome::Staged);
    assert_eq!(r.replaced_staged, Some(staged.dir_name()));
    let s = m.booted();
    let staged = s.deployments().first().unwrap().clone();
    assert_eq!(Machine::names(&staged), ["tools", "other"]);
}

#[test]
fn an_upgrade_through_the_layering_re_applies_the_list() {
    if needs_root("deploying") {
        return;
    }
    let m = Machine::new();
    m.add_dir("tools", "#!t\n");
    let v2 = m.release("2.0", 2_000_000);
    let mut s = m.sysroot();
    let opts = DeployOptions {
        stateroot: Some("testos".into()),
        revision: BASE.into(),
        layering: Some(Arc::new(ExtensionLayering::default())),
        ..Default::default()
    };
    deploy(&mut s.lock().unwrap(), &opts).unwrap();
    let d = m.default();
    assert_eq!(d.base_commit(), v2);
    assert_eq!(Machine::names(&d), ["tools"]);
    assert_eq!(m.file(&d, "usr/bin/tools").as_deref(), Some("#!t\n"));
    assert_eq!(m.file(&d, "usr/etc/a.conf").as_deref(), Some("a=2.0\n"));
}

#[test]
fn config_declared_extensions_are_the_declared_part() {
    if needs_root("deploying") {
        return;
    }
    let m = Machine::new();
    m.add_dir("local", "#!l\n");
    let c = m.commit(&m.ext_dir("tools", "#!t\n"), Some("exts/tools"), "t", 5);
    let mc = |exts: &[&str]| {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "machineconfiguration.openshift.io/v1",
            "kind": "MachineConfig",
            "metadata": {"name": "50-ext"},
            "spec": {"extensions": exts},
        }))
        .unwrap()
    };
    let apply_exts = |exts: &[&str]| {
        let mut s = m.sysroot();
        apply(
            &mut s.lock().unwrap(),
            &ApplyOptions {
                inputs: vec![("50-ext.json".into(), mc(exts))],
                ..Default::default()
            },
        )
        .unwrap()
    };
    let r = apply_exts(&["t2=exts/tools"]);
    assert_eq!(r.base, m.base.to_hex());
    assert_eq!(
        r.extensions,
        [
            m.default().extensions()[0].to_entry(),
            format!("t2:{}", c.to_hex())
        ]
    );
    let d = m.default();
    assert_eq!(Machine::names(&d), ["local", "t2"]);
    assert_eq!(m.file(&d, "usr/bin/tools").as_deref(), Some("#!t\n"));
    assert_eq!(deployment_state(&d, "x").extensions, r.extensions);
    assert_eq!(r.state, deployment_state(&d, "unused").state);
    // The same config again: nothing to do.
    let again = apply_exts(&["t2=exts/tools"]);
    assert_eq!(again.outcome, crate::apply::Outcome::Unchanged);
    // Dropped from the config: removed; the one added by hand stays.
    let r = apply_exts(&[]);
    assert_eq!(r.extensions.len(), 1);
    let d = m.default();
    assert_eq!(Machine::names(&d), ["local"]);
    assert!(m.file(&d, "usr/bin/tools").is_none());
    assert_eq!(m.file(&d, "usr/bin/local").as_deref(), Some("#!l\n"));
}

/// Deploys the base ref with the layering (an upgrade).
fn upgrade(s: &mut Sysroot, stage: bool) -> anyhow::Result<()> {
    let opts = DeployOptions {
        stateroot: Some("testos".into()),
        revision: BASE.into(),
        layering: Some(Arc::new(ExtensionLayering::default())),
        stage,
        ..Default::default()
    };
    deploy(&mut s.lock()?, &opts)?;
    Ok(())
}

#[test]
fn an_upgrade_builds_on_what_boots_next_not_on_the_booted_list() {
    if needs_root("deploying") {
        return;
    }
    // Booted v1; `extension add --stage tools`; `upgrade --stage`: the
    // new staged deployment is v2 with tools.
    let m = Machine::new();
    let p = m.ext_dir("tools", "#!t\n");
    let r = m
        .add(
            vec![Source::Dir {
                name: "tools".into(),
                path: p,
            }],
            true,
        )
        .unwrap();
    assert_eq!(r.outcome, Outcome::Staged);
    let v2 = m.release("2.0", 2_000_000);
    let mut s = m.booted();
    assert!(s
        .booted()
        .is_some_and(|b| s.deployments()[b].extensions().is_empty()));
    upgrade(&mut s, true).unwrap();
    let s = m.booted();
    let staged = s.deployments().first().unwrap().clone();
    assert!(staged.staged);
    assert_eq!(staged.base_commit(), v2);
    assert_eq!(Machine::names(&staged), ["tools"]);

    // Booted v1+tools; `extension remove tools`; `deploy`: tools does
    // not come back.
    let m = Machine::new();
    m.add_dir("tools", "#!t\n");
    let mut s = m.booted();
    let r = remove(&mut s.lock().unwrap(), &["tools".into()], false, None).unwrap();
    assert_eq!(r.outcome, Outcome::Deployed);
    let v2 = m.release("2.0", 2_000_000);
    upgrade(&mut s, false).unwrap();
    let d = m.default();
    assert_eq!(d.base_commit(), v2);
    assert_eq!(d.csum, v2);
    assert!(d.extensions().is_empty());
    assert!(m.file(&d, "usr/bin/tools").is_none());
}

#[test]
fn a_composed_commit_as_target_is_refused_unless_it_is_the_current_list() {
    if needs_root("deploying") {
        return;
    }
    let m = Machine::new();
    m.add_dir("tools", "#!t\n");
    let composed = m.default().csum;
    let deploy_rev = |rev: String| {
        let mut s = m.sysroot();
        let opts = DeployOptions {
            stateroot: Some("testos".into()),
            revision: rev,
            layering: Some(Arc::new(ExtensionLayering::default())),
            ..Default::default()
        };
        deploy(&mut s.lock()?, &opts)
    };
    // Redeploying the current composed commit: allowed, as is.
    deploy_rev(composed.to_hex()).unwrap();
    assert_eq!(m.default().csum, composed);
    // Another list: refused, naming its base and extensions.
    m.add_dir("other", "#!o\n");
    let n = m.sysroot().deployments().len();
    let e = deploy_rev(composed.to_hex()).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("is a composed commit"), "{msg}");
    assert!(msg.contains(&m.base.to_hex()), "{msg}");
    assert!(msg.contains("extensions tools"), "{msg}");
    assert!(msg.contains("deploy its base"), "{msg}");
    // An empty list: refused too (not deployed as is).
    let mut s = m.sysroot();
    remove(
        &mut s.lock().unwrap(),
        &["tools".into(), "other".into()],
        false,
        None,
    )
    .unwrap();
    let n2 = m.sysroot().deployments().len();
    assert!(deploy_rev(composed.to_hex()).is_err());
    assert_eq!(m.sysroot().deployments().len(), n2);
    assert!(n2 >= n);
}

/// A MachineConfig `50-ext` with these extension entries and kernel
/// arguments.
fn machine_config(exts: &[&str], kargs: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "machineconfiguration.openshift.io/v1",
        "kind": "MachineConfig",
        "metadata": {"name": "50-ext"},
        "spec": {"extensions": exts, "kernelArguments": kargs},
    }))
    .unwrap()
}

fn apply_config(s: &mut Sysroot, mc: Vec<u8>) -> anyhow::Result<crate::apply::ApplyReport> {
    apply(
        &mut s.lock()?,
        &ApplyOptions {
            inputs: vec![("50-ext.json".into(), mc)],
            ..Default::default()
        },
    )
}

#[test]
fn config_apply_drops_what_the_config_of_the_default_declared_when_booted_is_older() {
    if needs_root("deploying") {
        return;
    }
    // Booted v1 with C0; apply C1 (extensions [t]): default v1+t; apply
    // C2 (none): t is gone, though the booted deployment's C0 never
    // declared it.
    let m = Machine::new();
    m.commit(&m.ext_dir("tools", "#!t\n"), Some("exts/tools"), "t", 5);
    apply_config(&mut m.sysroot(), machine_config(&[], &["c0"])).unwrap();
    let mut s = m.booted();
    apply_config(&mut s, machine_config(&["t=exts/tools"], &["c1"])).unwrap();
    let d = m.default();
    assert_eq!(Machine::names(&d), ["t"]);
    let b = s.booted().map(|i| s.deployments()[i].clone()).unwrap();
    assert!(!b.same(&d), "booted is not the default");
    let r = apply_config(&mut s, machine_config(&[], &["c2"])).unwrap();
    assert!(r.extensions.is_empty(), "{:?}", r.extensions);
    let d = m.default();
    assert!(d.extensions().is_empty());
    assert_eq!(d.csum, m.base);
    assert!(m.file(&d, "usr/bin/tools").is_none());
}

/// The refs under `arbor/extensions/`.
fn extension_refs(m: &Machine) -> Vec<String> {
    arbor_repo::refs::list_refs(m.sysroot().repo())
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("arbor/extensions/"))
        .collect()
}

#[test]
fn dry_runs_and_refused_adds_leave_no_extension_ref_behind() {
    if needs_root("deploying") {
        return;
    }
    let m = Machine::new();
    m.add_dir("kept", "#!k\n");
    let before = extension_refs(&m);
    assert_eq!(before.len(), 1);
    let dir = |name: &str| Source::Dir {
        name: name.into(),
        path: m.ext_dir(name, "#!x\n"),
    };
    let add_with = |sources: Vec<Source>, stage: bool, dry_run: bool| {
        let mut s = m.sysroot();
        add(
            &mut s.lock().unwrap(),
            AddOptions {
                sources,
                stage,
                dry_run,
                ..Default::default()
            },
        )
    };
    // A dry run imports, reports, and deletes the ref again.
    let r = add_with(vec![dir("tools")], false, true).unwrap();
    assert_eq!(r.outcome, Outcome::DryRun);
    assert_eq!(r.imported.len(), 1);
    assert_eq!(
        r.collected_refs,
        [format!("arbor/extensions/tools/{}", r.imported[0].commit)]
    );
    assert_eq!(extension_refs(&m), before);
    // A failed add: the directory was imported before the missing ref
    // stopped it.
    let e = add_with(
        vec![
            dir("tools"),
            Source::Rev {
                name: "x".into(),
                rev: "exts/missing".into(),
            },
        ],
        false,
        false,
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("exts/missing"), "{e:#}");
    assert_eq!(extension_refs(&m), before);
    // Staging when not booted: refused before importing.
    let e = add_with(vec![dir("tools")], true, false).unwrap_err();
    assert!(format!("{e:#}").contains("not booted"), "{e:#}");
    assert_eq!(extension_refs(&m), before);
}

#[test]
fn override_needs_exactly_one_directory_or_tar_source() {
    if needs_root("deploying") {
        return;
    }
    let m = Machine::new();
    m.commit(&m.ext_dir("tools", "#!t\n"), Some("exts/tools"), "t", 5);
    let add_with = |sources: Vec<Source>| {
        let mut s = m.sysroot();
        add(
            &mut s.lock().unwrap(),
            AddOptions {
                sources,
                overrides: vec!["/usr/bin/sh".into()],
                ..Default::default()
            },
        )
    };
    let dir = |name: &str| Source::Dir {
        name: name.into(),
        path: m.ext_dir(name, "#!x\n"),
    };
    let rev = Source::Rev {
        name: "tools".into(),
        rev: "exts/tools".into(),
    };
    for sources in [vec![rev], vec![dir("a"), dir("b")]] {
        let e = add_with(sources).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("--override"), "{msg}");
        assert!(msg.contains("arbor.extension.overrides"), "{msg}");
    }
    assert!(m.default().extensions().is_empty());
    assert!(extension_refs(&m).is_empty());
    // One directory: its commit records the override.
    let r = add_with(vec![dir("a")]).unwrap();
    assert_eq!(r.outcome, Outcome::Deployed);
}

#[test]
fn list_says_when_another_stateroot_boots_next() {
    if needs_root("deploying") {
        return;
    }
    let m = Machine::new();
    m.add_dir("tools", "#!t\n");
    m.sysroot().lock().unwrap().os_init("other").unwrap();
    let mut s = m.booted();
    let l = list(&s, Some("testos")).unwrap();
    assert_eq!(l.staged_elsewhere, None);
    let opts = DeployOptions {
        stateroot: Some("other".into()),
        revision: BASE.into(),
        stage: true,
        ..Default::default()
    };
    deploy(&mut s.lock().unwrap(), &opts).unwrap();
    let s = m.booted();
    let staged = s.deployments()[0].clone();
    assert!(staged.staged && staged.stateroot == "other");
    let l = list(&s, Some("testos")).unwrap();
    assert_eq!(Machine::names(&m.default()), ["tools"]);
    assert_eq!(l.next.extensions.len(), 1);
    assert_eq!(
        l.staged_elsewhere,
        Some(format!("other {}", staged.dir_name()))
    );
}
