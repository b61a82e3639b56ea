//! Ref collection and cleanup of composed deployments on real sysroots in
//! temporary directories: which `arbor/` refs `collect_refs` deletes, sets
//! or resets, what the cleanup and ostree's own prunes keep, and what an
//! unreadable deployment commit stops. The fixture is [`super::sysroot_tests`]'s.

use arbor_format::{Checksum, RefName};
use arbor_repo::refs::{RefSpec, RefUpdate};
use arbor_testutil::needs_root;

use super::sysroot_tests::{commit_dir, compose_by_hand, local_refs, put, set_ref, Fx};
use super::*;
use crate::deploy::{deploy, DeployOptions};

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
