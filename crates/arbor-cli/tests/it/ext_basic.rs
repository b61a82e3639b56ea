//! `extension add`: extensions as directories, refs, `remote:ref`s and
//! tar streams become a new deployment of a composed commit that
//! `status`, `ostree admin status` and both fscks read; staged adds.

use std::process::Command;

use serde_json::Value;

use crate::config_apply::{deployments, ostree_reads, read, root_of};
use crate::ext_util::{both_fscks, commit_of, ext_commit, layers, refs, stderr, Ext};
use crate::sysroot::needs_root;
use crate::util::{arbor, ostree, run_fail, run_ok, s};

#[test]
fn add_a_directory_extension_and_read_it_everywhere() {
    if needs_root("add_a_directory_extension_and_read_it_everywhere") {
        return;
    }
    let e = Ext::new();
    let dir = e.tool_dir("tools");
    let out = e.ok("add", &[s(&dir)]);
    assert!(!out.is_empty(), "add printed nothing");
    let l = layers(&e.sys);
    assert_eq!(l.len(), 2, "{l:?}");
    let (composed, base, exts) = &l[0];
    assert_ne!(composed, &e.v1, "the new deployment runs a composed commit");
    assert_eq!(base, &e.v1);
    assert_eq!(exts.len(), 1, "{exts:?}");
    let ext = commit_of(exts, "tools");
    // The previous deployment is the plain base.
    assert_eq!(l[1], (e.v1.clone(), e.v1.clone(), vec![]));
    // The files, with their modes.
    let root = root_of(&e.sys, 0);
    assert_eq!(
        read(&root.join("usr/bin/tools-tool")),
        "#!/bin/sh\necho tools\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(root.join("usr/bin/tools-tool")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o755);
    assert!(root.join("usr/lib/systemd/system/tools.service").is_file());
    assert!(root
        .join("usr/lib/extension-release.d/extension-release.tools")
        .is_file());
    // The base's files are still there.
    assert_eq!(read(&root.join("usr/share/marker")), "v1\n");
    assert_eq!(read(&root.join("usr/bin/tool")), "#!/bin/sh\n");
    // The composed commit describes itself.
    let show = |key: &str| {
        run_ok(ostree().args([
            "show",
            &format!("--repo={}", s(&e.srepo())),
            &format!("--print-metadata-key={key}"),
            composed,
        ]))
        .trim()
        .to_string()
    };
    assert_eq!(show("arbor.base-commit"), format!("'{}'", e.v1));
    assert_eq!(show("arbor.extensions"), format!("['tools:{ext}']"));
    assert_eq!(show("version"), "'1.0'");
    // status: BaseCommit and one Extension line.
    let text = run_ok(arbor().args(["status", "--sysroot", s(&e.sys)]));
    assert!(text.contains(&format!("BaseCommit: {}", e.v1)), "{text}");
    assert!(
        text.contains(&format!("Extension: tools ({ext})")),
        "{text}"
    );
    assert_eq!(
        text.matches("Extension: ").count(),
        1,
        "one Extension line for one deployment with one extension:\n{text}"
    );
    // ostree admin status reads the sysroot and lists the composed commit.
    ostree_reads(&e.sys);
    let theirs = run_ok(ostree().args(["admin", "status", &format!("--sysroot={}", s(&e.sys))]));
    assert!(theirs.contains(&format!("testos {composed}.0")), "{theirs}");
    assert!(theirs.contains("Version: 1.0"), "{theirs}");
    // Without arbor's own lines, status is ostree admin status's text.
    let stripped: String = crate::util::ostree_view_of_status(&text)
        .lines()
        .filter(|l| !l.trim_start().starts_with("Extension: "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(stripped, theirs);
    // extension list --json names it with its commit.
    let list: Value = serde_json::from_str(&e.ok("list", &["--json"])).unwrap();
    let flat = list.to_string();
    assert!(flat.contains("\"tools\""), "{list:#}");
    assert!(flat.contains(&ext), "{list:#}");
    let human = e.ok("list", &[]);
    assert!(human.contains("tools"), "{human}");
    // The refs that keep the composed commit and the extension.
    let r = refs(&e.srepo());
    assert!(r.contains(&format!("arbor/composed/{composed}")), "{r:?}");
    assert!(
        r.contains(&format!("arbor/extensions/tools/{ext}")),
        "{r:?}"
    );
    both_fscks(&e.sys);
    // The extension's commit as ostree sees it: owner 0:0 like
    // `ostree commit --owner-uid=0 --owner-gid=0`.
    let ls = run_ok(ostree().args([
        "ls",
        &format!("--repo={}", s(&e.srepo())),
        &ext,
        "/usr/bin/tools-tool",
    ]));
    assert!(ls.starts_with("-00755 0 0 "), "{ls}");
    // The directory import is deterministic: adding the same directory
    // again changes nothing.
    let boot = crate::config_apply::boot_snapshot(&e.sys);
    e.ok("add", &[s(&dir)]);
    assert_eq!(layers(&e.sys), l);
    assert_eq!(crate::config_apply::boot_snapshot(&e.sys), boot);
}

#[test]
fn add_by_ref_and_by_remote_ref_then_readd_is_a_no_op() {
    if needs_root("add_by_ref_and_by_remote_ref_then_readd_is_a_no_op") {
        return;
    }
    let e = Ext::new();
    // A ref in the sysroot repository, committed by ostree.
    let tools = e.tool_dir("tools");
    let c_tools = ext_commit(&e.srepo(), "exts/tools", &tools, &[]);
    e.ok("add", &["exts/tools"]);
    // A ref pulled from the remote.
    let net = e.tool_dir("net");
    let c_net = ext_commit(&e.repo, "exts/net", &net, &[]);
    run_ok(arbor().args(["pull", "--repo", s(&e.srepo()), "origin", "exts/net"]));
    e.ok("add", &["origin:exts/net"]);
    let l = layers(&e.sys);
    assert_eq!(
        l[0].2,
        [format!("tools:{c_tools}"), format!("net:{c_net}")],
        "names from the refs' last components, in the order added"
    );
    let root = root_of(&e.sys, 0);
    assert!(root.join("usr/bin/tools-tool").is_file());
    assert!(root.join("usr/bin/net-tool").is_file());
    both_fscks(&e.sys);
    // Adding what is already listed: no new deployment.
    let before = crate::config_apply::boot_snapshot(&e.sys);
    let n = deployments(&e.sys).len();
    e.ok("add", &["exts/tools"]);
    e.ok("add", &["exts/tools", "origin:exts/net"]);
    assert_eq!(deployments(&e.sys).len(), n);
    assert_eq!(layers(&e.sys), l);
    assert_eq!(crate::config_apply::boot_snapshot(&e.sys), before);
    // A 64-hex checksum needs a name.
    let err = run_fail(&mut e.cmd("add", &[&c_tools]));
    assert!(stderr(&err).contains("name"), "{}", stderr(&err));
    // With one, it is the same extension: still a no-op.
    e.ok("add", &["--name", "tools", &c_tools]);
    assert_eq!(layers(&e.sys), l);
}

#[test]
fn add_a_tar_file_and_a_tar_stream() {
    if needs_root("add_a_tar_file_and_a_tar_stream") {
        return;
    }
    let e = Ext::new();
    let a = e.tool_dir("fromtar");
    let tar = e.fresh("tar").join("fromtar.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&a)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    e.ok("add", &[s(&tar)]);
    let l = layers(&e.sys);
    let c_file = commit_of(&l[0].2, "fromtar");
    let root = root_of(&e.sys, 0);
    assert_eq!(
        read(&root.join("usr/bin/fromtar-tool")),
        "#!/bin/sh\necho fromtar\n"
    );
    // Standard input, named explicitly.
    let b = e.tool_dir("piped");
    let tar2 = e.fresh("tar").join("piped.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&b)
            .arg("-cf")
            .arg(&tar2)
            .arg("."),
    );
    let mut c = e.cmd("add", &["--name", "piped", "-"]);
    c.stdin(std::fs::File::open(&tar2).unwrap());
    run_ok(&mut c);
    let l = layers(&e.sys);
    assert_eq!(l[0].2.len(), 2, "{l:?}");
    assert_eq!(commit_of(&l[0].2, "fromtar"), c_file);
    commit_of(&l[0].2, "piped");
    let root = root_of(&e.sys, 0);
    assert_eq!(
        read(&root.join("usr/bin/piped-tool")),
        "#!/bin/sh\necho piped\n"
    );
    assert!(root.join("usr/bin/fromtar-tool").is_file());
    // Standard input without a name is refused.
    let mut c = e.cmd("add", &["-"]);
    c.stdin(std::fs::File::open(&tar2).unwrap());
    run_fail(&mut c);
    both_fscks(&e.sys);
}

#[test]
fn add_staged_is_finalized_later() {
    if needs_root("add_staged_is_finalized_later") {
        return;
    }
    let e = Ext::new();
    let booted = crate::sysroot::booted_root(&e.sys, 0);
    let dir = e.tool_dir("tools");
    let mut c = e.cmd("add", &["--stage", s(&dir)]);
    c.env("ARBOR_TEST_ROOT", &booted);
    run_ok(&mut c);
    let v = crate::sysroot::status_json(&e.sys, Some(&booted));
    let d = v["deployments"].as_array().unwrap();
    assert_eq!(d.len(), 2, "{v:#}");
    assert_eq!(d[0]["staged"], true, "{v:#}");
    assert_eq!(d[0]["base"], e.v1.as_str());
    commit_of(
        &d[0]["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        "tools",
    );
    // Nothing is written to the boot entries before finalization.
    let mut entries = crate::util::dir_names(&e.sys.join("boot/loader/entries"));
    entries.retain(|n| n.ends_with(".conf"));
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mut f = arbor();
    f.args(["finalize", "--sysroot", s(&e.sys)])
        .env("ARBOR_TEST_ROOT", &booted);
    run_ok(&mut f);
    let l = layers(&e.sys);
    assert_eq!(l[0].1, e.v1);
    commit_of(&l[0].2, "tools");
    assert!(root_of(&e.sys, 0).join("usr/bin/tools-tool").is_file());
    ostree_reads(&e.sys);
    both_fscks(&e.sys);
}
