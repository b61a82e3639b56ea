//! `config apply` with staged deployments and new bases: composed at
//! finalize, re-applied by `deploy`/`upgrade`, never left behind by a later
//! apply, built on a staged upgrade.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::config_apply::*;
use crate::sysroot::needs_root;
use crate::util::{arbor, require_ostree, run_fail, run_ok, s};

#[test]
fn staged_apply_is_composed_at_finalize_and_keeps_later_edits() {
    require_ostree();
    if needs_root("staged_apply_is_composed_at_finalize_and_keeps_later_edits") {
        return;
    }
    let c = Cfg::new();
    let booted = root_of(&c.sys, 0);
    let with_boot = |mut cmd: Command| {
        cmd.env("ARBOR_TEST_ROOT", &booted);
        cmd
    };
    // Not booted: refused before anything is stored.
    let err = run_fail(&mut c.apply_cmd(&c.sys, &["--stage"], &config_a()));
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("not booted"),
        "{err:?}"
    );
    assert_eq!(stored(&c.sys), Vec::<String>::new());
    let out = run_ok(&mut with_boot(c.apply_cmd(
        &c.sys,
        &["--stage"],
        &config_a(),
    )));
    assert!(out.contains("Staged rendered-"), "{out}");
    let out = run_ok(&mut with_boot(c.apply_cmd(
        &c.sys,
        &["--stage"],
        &config_a(),
    )));
    assert!(out.contains("already staged"), "{out}");
    // Edited after staging, in the running /etc: kept by the finalization.
    std::fs::write(booted.join("etc/edited-after-staging.conf"), "late\n").unwrap();
    std::fs::write(booted.join("etc/unchanged.conf"), "a=LATE\n").unwrap();
    let mut fin = arbor();
    fin.args(["finalize", "--sysroot", s(&c.sys)]);
    run_ok(&mut with_boot(fin));
    ostree_reads(&c.sys);
    let root = root_of(&c.sys, 0);
    assert_ne!(root, booted);
    assert_eq!(read(&root.join("etc/edited-after-staging.conf")), "late\n");
    assert_eq!(read(&root.join("etc/unchanged.conf")), "a=LATE\n");
    assert_eq!(read(&root.join("etc/chrony.conf")), "server a.example\n");
    assert_eq!(read(&root.join("etc/a-only.conf")), "a\n");
    assert_eq!(
        deployments(&c.sys)[0]["kernel-arguments"],
        json!(["root=LABEL=rootfs", "a=1"])
    );
}

#[test]
fn deploy_and_upgrade_of_a_new_base_keep_the_config() {
    require_ostree();
    if needs_root("deploy_and_upgrade_of_a_new_base_keep_the_config") {
        return;
    }
    let c = Cfg::new();
    c.apply(&config_a());
    let config = deployments(&c.sys)[0]["config"].clone();
    let v2 = c.release_v2();
    run_ok(arbor().args(["upgrade", "--sysroot", s(&c.sys)]));
    ostree_reads(&c.sys);
    let check = |what: &str| {
        let d = &deployments(&c.sys)[0];
        assert_eq!(d["checksum"], v2.as_str(), "{what}");
        assert_eq!(d["config"], config, "{what}");
        assert_eq!(
            d["kernel-arguments"],
            json!(["root=LABEL=rootfs", "a=1"]),
            "{what}"
        );
        let etc = root_of(&c.sys, 0).join("etc");
        assert_eq!(
            read(&etc.join("chrony.conf")),
            "server a.example\n",
            "{what}"
        );
        assert_eq!(read(&etc.join("a-only.conf")), "a\n", "{what}");
        let passwd = read(&etc.join("passwd"));
        assert!(passwd.contains("\nolduser:"), "{what}: {passwd}");
        // The config re-applied on v2's defaults, not v1's /etc carried.
        assert!(passwd.contains("\nv2sys:"), "{what}: {passwd}");
        assert_eq!(read(&root_of(&c.sys, 0).join("usr/share/marker")), "v2\n");
    };
    check("upgrade");
    // A plain deploy of the ref keeps it too, and removing the config
    // afterwards gives v2's own default.
    run_ok(arbor().args([
        "deploy",
        "--sysroot",
        s(&c.sys),
        "--os",
        "testos",
        "testos/stable",
    ]));
    check("deploy");
    c.apply(&[("empty.ign", ign(json!({})))]);
    assert_eq!(
        read(&root_of(&c.sys, 0).join("etc/chrony.conf")),
        "pool v2.pool.example iburst\n"
    );
    ostree_reads(&c.sys);
}

/// The deployments `status --json` lists, booted into `booted`.
fn deployments_booted(sys: &Path, booted: &Path) -> Vec<Value> {
    let mut c = arbor();
    c.env("ARBOR_TEST_ROOT", booted)
        .args(["status", "--json", "--sysroot", s(sys)]);
    let v: Value = serde_json::from_str(&run_ok(&mut c)).unwrap();
    v["deployments"].as_array().unwrap().clone()
}

/// The `rendered-<sha256>` name of `docs`.
fn rendered_name(c: &Cfg, docs: &[(&str, Vec<u8>)]) -> String {
    let out = run_ok(arbor().args(["config", "render"]).args(c.inputs(docs)));
    out.lines().last().unwrap().to_string()
}

#[test]
fn a_stage_with_another_state_never_survives_an_apply() {
    require_ostree();
    if needs_root("a_stage_with_another_state_never_survives_an_apply") {
        return;
    }
    let c = Cfg::new();
    let booted = root_of(&c.sys, 0);
    let apply = |args: &[&str], docs: &[(&str, Vec<u8>)]| {
        let mut cmd = c.apply_cmd(&c.sys, args, docs);
        cmd.env("ARBOR_TEST_ROOT", &booted);
        run_ok(&mut cmd)
    };
    let listed = || deployments_booted(&c.sys, &booted);
    let dirs = || crate::util::dir_names(&c.sys.join("ostree/deploy/testos/deploy"));
    let empty = vec![("00.ign", ign(json!({})))];
    let initial = (listed(), dirs(), boot_snapshot(&c.sys));
    // Staged A, then what the default already has, with or without
    // --stage: A would boot next, so it is discarded, and nothing else
    // changes.
    for args in [&[][..], &["--stage"][..]] {
        let out = apply(&["--stage"], &config_a());
        assert!(out.contains("Staged rendered-"), "{out}");
        assert_eq!(listed()[0]["staged"], true);
        let out = apply(args, &empty);
        assert!(!out.contains("No change"), "{args:?}: {out}");
        assert!(
            out.contains("Discarded the staged deployment"),
            "{args:?}: {out}"
        );
        assert_eq!(
            (listed(), dirs(), boot_snapshot(&c.sys)),
            initial,
            "{args:?}"
        );
        // Now it is a no-op.
        let out = apply(args, &empty);
        assert!(out.contains("No change"), "{args:?}: {out}");
    }
    // Staged A, then B as the default: B replaces the stage.
    apply(&["--stage"], &config_a());
    let out = apply(&[], &config_b());
    assert!(out.contains("Applied rendered-"), "{out}");
    assert!(out.contains("Discarded the staged deployment"), "{out}");
    let d = listed();
    assert!(d.iter().all(|d| d["staged"] == false), "{d:?}");
    assert_eq!(d[0]["config"], rendered_name(&c, &config_b()).as_str());
    assert_eq!(d.len(), 2);
    ostree_reads(&c.sys);
    // Staged A, then staged C: one stage, C's.
    let config_c = vec![(
        "c.ign",
        ign(json!({ "storage": { "files": [file("/etc/c.conf", "c\n")] } })),
    )];
    apply(&["--stage"], &config_a());
    let out = apply(&["--stage"], &config_c);
    assert!(out.contains("Staged rendered-"), "{out}");
    assert!(out.contains("Discarded the staged deployment"), "{out}");
    let d = listed();
    assert_eq!(d.iter().filter(|d| d["staged"] == true).count(), 1);
    assert_eq!(d[0]["staged"], true);
    assert_eq!(d[0]["config"], rendered_name(&c, &config_c).as_str());
    // C again without --stage: what boots next has it already.
    let out = apply(&[], &config_c);
    assert!(out.contains("already staged"), "{out}");
    assert_eq!(listed(), d);
    let mut fin = arbor();
    fin.env("ARBOR_TEST_ROOT", &booted)
        .args(["finalize", "--sysroot", s(&c.sys)]);
    run_ok(&mut fin);
    ostree_reads(&c.sys);
    assert_eq!(read(&root_of(&c.sys, 0).join("etc/c.conf")), "c\n");
    assert!(!root_of(&c.sys, 0).join("etc/a-only.conf").exists());
}

#[test]
fn apply_builds_on_a_staged_upgrade() {
    require_ostree();
    if needs_root("apply_builds_on_a_staged_upgrade") {
        return;
    }
    // (how v2 is staged, apply args): `upgrade --stage`, then a staged
    // apply; a staged deploy with an extra kernel argument, then a plain
    // apply.
    let cases: [(&[&str], &[&str]); 2] = [
        (&["upgrade", "--stage"], &["--stage"]),
        (
            &[
                "deploy",
                "--stage",
                "--os",
                "testos",
                "--karg-append=pending=1",
                "testos/stable",
            ],
            &[],
        ),
    ];
    for (stage_v2, args) in cases {
        let c = Cfg::new();
        let booted = root_of(&c.sys, 0);
        let with_boot = |mut cmd: Command| {
            cmd.env("ARBOR_TEST_ROOT", &booted);
            cmd
        };
        let v2 = c.release_v2();
        let mut up = arbor();
        up.args(stage_v2).args(["--sysroot", s(&c.sys)]);
        run_ok(&mut with_boot(up));
        let staged = deployments_booted(&c.sys, &booted)[0].clone();
        assert_eq!(
            (staged["staged"].clone(), staged["checksum"].clone()),
            (json!(true), json!(v2)),
            "{stage_v2:?}"
        );
        let mut kargs = staged["kernel-arguments"].as_array().unwrap().clone();
        let out = run_ok(&mut with_boot(c.apply_cmd(&c.sys, args, &config_a())));
        if args.is_empty() {
            assert!(out.contains("Applied rendered-"), "{out}");
        } else {
            assert!(out.contains("Staged rendered-"), "{out}");
            let mut fin = arbor();
            fin.args(["finalize", "--sysroot", s(&c.sys)]);
            run_ok(&mut with_boot(fin));
        }
        let d = deployments_booted(&c.sys, &booted);
        assert!(d.iter().all(|d| d["staged"] == false), "{d:?}");
        assert_eq!(d.len(), 2, "the new default and the booted one");
        assert_eq!(d[0]["checksum"], v2.as_str(), "{stage_v2:?}");
        assert_eq!(d[0]["origin"], staged["origin"], "{stage_v2:?}");
        assert_eq!(d[0]["config"], rendered_name(&c, &config_a()).as_str());
        kargs.push(json!("a=1"));
        assert_eq!(d[0]["kernel-arguments"], json!(kargs), "{stage_v2:?}");
        let root = root_of(&c.sys, 0);
        assert_eq!(read(&root.join("usr/share/marker")), "v2\n");
        assert_eq!(read(&root.join("etc/chrony.conf")), "server a.example\n");
        let passwd = read(&root.join("etc/passwd"));
        assert!(
            passwd.contains("\nv2sys:") && passwd.contains("\nolduser:"),
            "{passwd}"
        );
        // The output says so.
        assert!(
            out.contains("Based on the staged deployment") && out.contains(&v2),
            "{stage_v2:?}: {out}"
        );
        assert!(
            out.contains("Discarded the staged deployment"),
            "{stage_v2:?}: {out}"
        );
        assert!(d[0]["origin"].is_string());
        ostree_reads(&c.sys);
    }
    // A pending deployment that is not staged is the default: the apply
    // builds on it as well.
    let c = Cfg::new();
    let v2 = c.release_v2();
    run_ok(arbor().args(["upgrade", "--sysroot", s(&c.sys)]));
    let out = c.apply(&config_a());
    assert!(!out.contains("staged"), "{out}");
    let d = deployments(&c.sys);
    assert_eq!(d[0]["checksum"], v2.as_str());
    assert_eq!(d[0]["config"], rendered_name(&c, &config_a()).as_str());
}
