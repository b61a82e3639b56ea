//! `deploy` and `switch` with extensions: `--dry-run` shows the composed
//! commit the deploy then deploys; `--no-extensions` deploys the plain
//! commit.

use crate::ext_util::{ext_base_tree, layers, refs, release_commit, Ext};
use crate::sysroot::needs_root;
use crate::util::{arbor, run_fail, run_ok, s};

fn pull(e: &Ext, r: &str) {
    run_ok(arbor().args(["pull", "--repo", s(&e.srepo()), "origin", r]));
}

fn deploy(e: &Ext, args: &[&str]) -> String {
    run_ok(
        arbor()
            .args(["deploy", "--sysroot", s(&e.sys), "--os", "testos"])
            .args(args)
            .arg("origin:testos/stable"),
    )
}

#[test]
fn deploy_dry_run_shows_the_composed_commit_it_deploys() {
    if needs_root("deploy_dry_run_shows_the_composed_commit_it_deploys") {
        return;
    }
    let e = Ext::new();
    let x = e.tool_dir("xtool");
    e.ok("add", &[s(&x)]);
    let v2 = e.release("v2\n", "1", "1577923200");
    pull(&e, "testos/stable");
    let before = layers(&e.sys);
    let dry = deploy(&e, &["--dry-run"]);
    assert_eq!(layers(&e.sys), before, "--dry-run deployed");
    deploy(&e, &[]);
    let l = layers(&e.sys);
    assert_eq!(l[0].1, v2);
    assert_ne!(l[0].0, v2, "the deploy composed xtool on v2");
    assert!(
        dry.contains(&l[0].0),
        "--dry-run does not show the composed commit {}:\n{dry}",
        l[0].0
    );
}

#[test]
fn deploy_and_switch_with_no_extensions_deploy_the_plain_commit() {
    if needs_root("deploy_and_switch_with_no_extensions_deploy_the_plain_commit") {
        return;
    }
    let e = Ext::new();
    let x = e.tool_dir("xtool");
    e.ok("add", &[s(&x)]);
    let v2 = e.release("v2\n", "1", "1577923200");
    pull(&e, "testos/stable");
    deploy(&e, &["--no-extensions"]);
    let l = layers(&e.sys);
    assert_eq!(l[0], (v2.clone(), v2.clone(), vec![]), "{l:?}");
    let root = crate::config_apply::root_of(&e.sys, 0);
    assert!(!root.join("usr/bin/xtool-tool").exists());
    // Back to a deployment listing xtool, then switch to another branch.
    e.ok("add", &[s(&x)]);
    assert_eq!(layers(&e.sys)[0].2.len(), 1);
    let t = e.fresh("other");
    ext_base_tree(&t, "other\n", "1");
    let other = release_commit(&e.repo, "testos/other", &t, "other", "1577923300");
    run_ok(arbor().args([
        "switch",
        "--sysroot",
        s(&e.sys),
        "--no-extensions",
        "origin:testos/other",
    ]));
    let l = layers(&e.sys);
    assert_eq!(l[0], (other.clone(), other, vec![]), "{l:?}");
    let root = crate::config_apply::root_of(&e.sys, 0);
    assert!(!root.join("usr/bin/xtool-tool").exists());
}

/// `arbor deploy ARGS... REV` (testos), which must fail; its stderr.
#[track_caller]
fn deploy_fails(e: &Ext, args: &[&str], rev: &str) -> String {
    let out = run_fail(
        arbor()
            .args(["deploy", "--sysroot", s(&e.sys), "--os", "testos"])
            .args(args)
            .arg(rev),
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The stored commit object of `c` in the sysroot's repository.
fn commit_object(e: &Ext, c: &str) -> std::path::PathBuf {
    e.srepo()
        .join(format!("objects/{}/{}.commit", &c[..2], &c[2..]))
}

/// What boots next has an unreadable (composed) commit: its extension
/// list is unknown, so a deploy (which would drop the list), `extension
/// remove` and `add`, and `config apply` refuse, naming the deployment and the ways out;
/// `--no-extensions` deploys the plain commit.
#[test]
fn an_unknown_extension_list_is_refused_not_dropped() {
    if needs_root("an_unknown_extension_list_is_refused_not_dropped") {
        return;
    }
    let e = Ext::new();
    let x = e.tool_dir("xtool");
    e.ok("add", &[s(&x)]);
    let composed = layers(&e.sys)[0].0.clone();
    let v2 = e.release("v2\n", "1", "1577923200");
    pull(&e, "testos/stable");
    let obj = commit_object(&e, &composed);
    let aside = obj.with_extension("aside");
    std::fs::rename(&obj, &aside).unwrap();
    let before = layers(&e.sys);
    let err = deploy_fails(&e, &[], "origin:testos/stable");
    assert!(err.contains("extensions are unknown"), "{err}");
    assert!(
        err.contains(&composed) && err.contains("--no-extensions"),
        "{err}"
    );
    let y = e.tool_dir("ytool");
    let f = e.fresh("config").join("50-extensions.json");
    std::fs::write(&f, crate::ext_compose::mc_extensions(&[])).unwrap();
    for cmd in [
        &mut e.cmd("remove", &["xtool"]),
        &mut e.cmd("add", &[s(&y)]),
        arbor().args(["config", "apply", "--sysroot", s(&e.sys), s(&f)]),
    ] {
        let out = run_fail(cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("extensions are unknown"), "{err}");
    }
    assert_eq!(layers(&e.sys), before, "a refused command deployed");
    deploy(&e, &["--no-extensions"]);
    assert_eq!(layers(&e.sys)[0], (v2.clone(), v2, vec![]));
    std::fs::rename(&aside, &obj).unwrap();
}

/// arbor's internal refs are no deploy or switch targets (the origin
/// would follow them, and every later upgrade fail); redeploying the
/// composed commit by checksum still works; a composed commit whose list
/// differs is refused naming the ways out.
#[test]
fn internal_refs_are_refused_as_deploy_and_switch_targets() {
    if needs_root("internal_refs_are_refused_as_deploy_and_switch_targets") {
        return;
    }
    let e = Ext::new();
    let x = e.tool_dir("xtool");
    e.ok("add", &[s(&x)]);
    let (composed, base, _) = layers(&e.sys)[0].clone();
    let ext_ref = refs(&e.srepo())
        .into_iter()
        .find(|r| r.starts_with("arbor/extensions/"))
        .unwrap();
    let before = layers(&e.sys);
    for r in [
        format!("arbor/composed/{composed}"),
        format!("arbor/bases/{base}"),
        ext_ref,
    ] {
        for dry in [&[][..], &["--dry-run"]] {
            let err = deploy_fails(&e, dry, &r);
            assert!(err.contains("internal refs"), "{r} {dry:?}: {err}");
        }
        let out = run_fail(arbor().args(["switch", "--sysroot", s(&e.sys), &r]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("internal refs"), "{r}: {err}");
    }
    assert_eq!(layers(&e.sys), before);
    // By checksum, the composed commit of the current list redeploys.
    deploy_by(&e, &[], &composed);
    assert_eq!(layers(&e.sys)[0], before[0]);
    // Once xtool is removed, it is refused, with the ways out.
    e.ok("remove", &["xtool"]);
    let err = deploy_fails(&e, &[], &composed);
    assert!(err.contains("is a composed commit"), "{err}");
    assert!(err.contains(&format!("deploy its base {base}")), "{err}");
    assert!(
        err.contains("--no-extensions") && err.contains("rollback"),
        "{err}"
    );
}

fn deploy_by(e: &Ext, args: &[&str], rev: &str) -> String {
    run_ok(
        arbor()
            .args(["deploy", "--sysroot", s(&e.sys), "--os", "testos"])
            .args(args)
            .arg(rev),
    )
}

/// `--no-extensions` deploys plain commits only: a composed commit (by
/// checksum) is refused, naming its base, for `--dry-run` too.
#[test]
fn no_extensions_refuses_a_composed_commit() {
    if needs_root("no_extensions_refuses_a_composed_commit") {
        return;
    }
    let e = Ext::new();
    let x = e.tool_dir("xtool");
    e.ok("add", &[s(&x)]);
    let before = layers(&e.sys);
    let (composed, base, _) = before[0].clone();
    for args in [&["--no-extensions"][..], &["--no-extensions", "--dry-run"]] {
        let err = deploy_fails(&e, args, &composed);
        assert!(err.contains("is a composed commit"), "{args:?}: {err}");
        assert!(err.contains(&format!("base {base}")), "{args:?}: {err}");
        assert!(err.contains("plain commits only"), "{args:?}: {err}");
    }
    assert_eq!(layers(&e.sys), before);
    // A plain commit deploys as it is.
    deploy_by(&e, &["--no-extensions"], &base);
    assert_eq!(layers(&e.sys)[0], (base.clone(), base, vec![]));
}

/// An `extension remove` whose deploy fails after composing (what boots
/// next records a configuration missing from the store)
/// leaves no composed, base or extension ref that no deployment uses.
#[test]
fn a_failed_remove_leaves_no_unused_refs() {
    if needs_root("a_failed_remove_leaves_no_unused_refs") {
        return;
    }
    let e = Ext::new();
    for n in ["alpha", "beta"] {
        let d = e.tool_dir(n);
        e.ok("add", &[s(&d)]);
    }
    // What boots next records a configuration the store does not have:
    // the remove composes, then its deploy fails composing /etc.
    let top = layers(&e.sys)[0].0.clone();
    let deploy_dir = e.sys.join("ostree/deploy/testos/deploy");
    let origin = std::fs::read_dir(&deploy_dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&top) && n.ends_with(".origin")
        })
        .unwrap();
    let mut text = std::fs::read_to_string(&origin).unwrap();
    text.push_str(&format!(
        "\n[arbor]\nrendered-config=rendered-{}\n",
        "a".repeat(64)
    ));
    std::fs::write(&origin, text).unwrap();
    let before = layers(&e.sys);
    let refs_before = refs(&e.srepo());
    run_fail(&mut e.cmd("remove", &["alpha"]));
    assert_eq!(layers(&e.sys), before);
    let used: Vec<&String> = before.iter().map(|l| &l.0).collect();
    let r = refs(&e.srepo());
    let unused: Vec<&String> = r
        .iter()
        .filter(|r| {
            r.strip_prefix("arbor/composed/")
                .is_some_and(|c| !used.iter().any(|u| *u == c))
        })
        .collect();
    assert!(unused.is_empty(), "unused composed refs left: {unused:?}");
    assert!(
        r.iter().all(|x| refs_before.contains(x)),
        "{refs_before:?} -> {r:?}"
    );
}
