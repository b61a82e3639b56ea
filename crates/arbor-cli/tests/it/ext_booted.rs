//! Extensions when the booted deployment is not the one that boots next
//! (a boot simulated with `ARBOR_TEST_ROOT`): every operation builds on
//! what boots next (the staged deployment, else the default), never on
//! the booted one's list.

use std::path::Path;
use std::process::Command;

use crate::ext_compose::mc_extensions;
use crate::ext_util::{commit_of, ext_commit, layers, Ext};
use crate::sysroot::{booted_root, needs_root, status_json};
use crate::util::{arbor, run_ok, s};

/// The `NAME:COMMIT` list of deployment `d` of a `status --json`.
fn exts_of(d: &serde_json::Value) -> Vec<String> {
    d["extensions"]
        .as_array()
        .unwrap_or_else(|| panic!("no extensions in {d}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// `cmd` run as if `booted` were `/`, which must succeed.
#[track_caller]
fn run_booted(cmd: &mut Command, booted: &str) -> String {
    run_ok(cmd.env("ARBOR_TEST_ROOT", booted))
}

fn pull(sys: &Path, refs: &[&str]) {
    run_ok(
        arbor()
            .args(["pull", "--repo", s(&sys.join("ostree/repo")), "origin"])
            .args(refs),
    );
}

/// `extension add --stage X` then `upgrade --stage`: the new staged
/// deployment is X on the new base, not the booted deployment's list.
#[test]
fn a_staged_upgrade_keeps_a_staged_extension() {
    if needs_root("a_staged_upgrade_keeps_a_staged_extension") {
        return;
    }
    let e = Ext::new();
    let booted = booted_root(&e.sys, 0);
    let x = e.tool_dir("xtool");
    run_booted(&mut e.cmd("add", &["--stage", s(&x)]), &booted);
    let v = status_json(&e.sys, Some(&booted));
    let c_x = commit_of(&exts_of(&v["deployments"][0]), "xtool");
    let v2 = e.release("v2\n", "1", "1577923200");
    run_booted(
        arbor().args(["upgrade", "--stage", "--sysroot", s(&e.sys)]),
        &booted,
    );
    let v = status_json(&e.sys, Some(&booted));
    let d = &v["deployments"][0];
    assert_eq!(d["staged"], true, "{v:#}");
    assert_eq!(d["base"], v2.as_str(), "{v:#}");
    assert_eq!(exts_of(d), [format!("xtool:{c_x}")], "{v:#}");
    run_booted(arbor().args(["finalize", "--sysroot", s(&e.sys)]), &booted);
    let l = layers(&e.sys);
    assert_eq!(l[0].1, v2);
    assert_eq!(l[0].2, [format!("xtool:{c_x}")]);
    let root = crate::config_apply::root_of(&e.sys, 0);
    assert!(root.join("usr/bin/xtool-tool").is_file());
    assert_eq!(
        crate::config_apply::read(&root.join("usr/share/marker")),
        "v2\n"
    );
}

/// Booted into a deployment with X, `extension remove X` makes the plain
/// base the default; a `deploy REF` then builds on that list, so X does
/// not come back from the booted deployment.
#[test]
fn a_deploy_after_remove_does_not_bring_the_extension_back() {
    if needs_root("a_deploy_after_remove_does_not_bring_the_extension_back") {
        return;
    }
    let e = Ext::new();
    let x = e.tool_dir("xtool");
    e.ok("add", &[s(&x)]);
    let booted = booted_root(&e.sys, 0);
    run_booted(&mut e.cmd("remove", &["xtool"]), &booted);
    assert_eq!(layers(&e.sys)[0], (e.v1.clone(), e.v1.clone(), vec![]));
    let v2 = e.release("v2\n", "1", "1577923200");
    pull(&e.sys, &["testos/stable"]);
    run_booted(
        arbor().args([
            "deploy",
            "--sysroot",
            s(&e.sys),
            "--os",
            "testos",
            "origin:testos/stable",
        ]),
        &booted,
    );
    let l = layers(&e.sys);
    assert_eq!(l[0], (v2.clone(), v2, vec![]), "{l:?}");
    let root = crate::config_apply::root_of(&e.sys, 0);
    assert!(!root.join("usr/bin/xtool-tool").exists());
}

/// Booted into the plain base, `config apply` of a config declaring E
/// then of one declaring nothing: the second removes E (what the
/// previous config declared is read from what boots next, not from the
/// booted deployment, which had no config).
#[test]
fn a_config_dropping_its_extension_removes_it_when_booted_is_not_next() {
    if needs_root("a_config_dropping_its_extension_removes_it_when_booted_is_not_next") {
        return;
    }
    let e = Ext::new();
    let booted = booted_root(&e.sys, 0);
    let ed = e.tool_dir("etool");
    let c_e = ext_commit(&e.srepo(), "exts/etool", &ed, &[]);
    let apply = |doc: Vec<u8>| {
        let f = e.fresh("config").join("50-extensions.json");
        std::fs::write(&f, doc).unwrap();
        run_booted(
            arbor().args(["config", "apply", "--sysroot", s(&e.sys), s(&f)]),
            &booted,
        )
    };
    apply(mc_extensions(&["etool=exts/etool"]));
    let l = layers(&e.sys);
    assert_eq!(l[0].2, [format!("etool:{c_e}")], "{l:?}");
    apply(mc_extensions(&[]));
    let l = layers(&e.sys);
    assert_eq!(l[0].1, e.v1);
    assert!(l[0].2.is_empty(), "E still listed: {l:?}");
    let root = crate::config_apply::root_of(&e.sys, 0);
    assert!(!root.join("usr/bin/etool-tool").exists());
}

/// Booted into D (config C0, declaring nothing); `config apply` of E
/// (declaring etool) makes a pending default; `deploy REF` then records
/// what boots next's config (E), not the booted one's, so a later
/// `config apply` of a config declaring nothing drops etool.
#[test]
fn a_deploy_records_the_config_of_what_boots_next() {
    if needs_root("a_deploy_records_the_config_of_what_boots_next") {
        return;
    }
    let e = Ext::new();
    let ed = e.tool_dir("etool");
    let c_e = ext_commit(&e.srepo(), "exts/etool", &ed, &[]);
    let apply = |doc: Vec<u8>, booted: Option<&str>| {
        let f = e.fresh("config").join("50-extensions.json");
        std::fs::write(&f, doc).unwrap();
        let mut cmd = arbor();
        cmd.args(["config", "apply", "--sysroot", s(&e.sys), s(&f)]);
        match booted {
            Some(b) => run_booted(&mut cmd, b),
            None => run_ok(&mut cmd),
        }
    };
    apply(mc_extensions(&[]), None);
    let booted = booted_root(&e.sys, 0);
    apply(mc_extensions(&["etool=exts/etool"]), Some(&booted));
    let v2 = e.release("v2\n", "1", "1577923200");
    pull(&e.sys, &["testos/stable"]);
    run_booted(
        arbor().args([
            "deploy",
            "--sysroot",
            s(&e.sys),
            "--os",
            "testos",
            "origin:testos/stable",
        ]),
        &booted,
    );
    let l = layers(&e.sys);
    assert_eq!((&l[0].1, &l[0].2), (&v2, &vec![format!("etool:{c_e}")]));
    apply(mc_extensions(&[]), Some(&booted));
    let l = layers(&e.sys);
    assert_eq!(l[0].1, v2);
    assert!(l[0].2.is_empty(), "etool still listed: {l:?}");
    let root = crate::config_apply::root_of(&e.sys, 0);
    assert!(!root.join("usr/bin/etool-tool").exists());
}
