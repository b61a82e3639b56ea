//! `deploy` and `switch` with extensions: `--dry-run` shows the composed
//! commit the deploy then deploys; `--no-extensions` deploys the plain
//! commit.

use crate::ext_basic::{ext_base_tree, layers, release_commit, Ext};
use crate::sysroot::needs_root;
use crate::util::{arbor, run_ok, s};

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
