//! The composed commit through the CLI: the same on two sysroots reached by
//! different histories and by `extension compose`, equal to real `ostree
//! commit --tree=ref=...`, and the composition's refusals (conflicts and
//! overrides, directory metadata, systemd-sysext release checks,
//! whiteouts, top-level directories other than usr/opt/etc), each leaving
//! the sysroot as it was.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::json;

use crate::config_apply::{boot_snapshot, deployments, read, root_of};
use crate::ext_util::{both_fscks, commit_of, compose_cli, ext_commit, layers, Ext};
use crate::sysroot::{needs_root, put};
use crate::util::{arbor, ostree, run_fail, run_ok, s};

/// A MachineConfig declaring `extensions` (and nothing else).
pub(crate) fn mc_extensions(exts: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "machineconfiguration.openshift.io/v1",
        "kind": "MachineConfig",
        "metadata": { "name": "50-extensions" },
        "spec": {
            "config": { "ignition": { "version": "3.4.0" } },
            "extensions": exts
        }
    }))
    .unwrap()
}

/// `config apply --sysroot SYS` of `doc` written to a file.
#[track_caller]
fn config_apply(e: &Ext, sys: &Path, doc: &[u8]) -> String {
    let f = e.fresh("config").join("50-extensions.json");
    std::fs::write(&f, doc).unwrap();
    run_ok(arbor().args(["config", "apply", "--sysroot", s(sys), s(&f)]))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Two extensions `a` and `b` committed on `exts/a`, `exts/b` in the source
/// repository (a adds a deep new directory and files to an existing
/// directory, b adds a symlink and a file in `opt`); returns their commits.
fn two_extensions(e: &Ext) -> (String, String) {
    let a = e.ext_dir(
        "a",
        &[
            ("usr/share/a/x/y/z", "deep\n"),
            ("usr/lib/systemd/system/a.service", "[Unit]\n"),
            ("usr/bin/a-tool", "#!/bin/sh\n"),
        ],
        Some("1"),
    );
    let b = e.ext_dir(
        "b",
        &[("usr/lib/b/lib.so", "ELF\n"), ("opt/b/data", "b\n")],
        Some("1"),
    );
    std::fs::create_dir_all(b.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink("../lib/b/lib.so", b.join("usr/bin/b-link")).unwrap();
    // An xattr on a file: kept through every repository mode below.
    crate::config_drift::setxattr(&a.join("usr/bin/a-tool"), "user.ext", b"a");
    let ca = ext_commit(&e.repo, "exts/a", &a, &[]);
    let cb = ext_commit(&e.repo, "exts/b", &b, &[]);
    (ca, cb)
}

fn pull_exts(sys: &Path) {
    run_ok(arbor().args([
        "pull",
        "--repo",
        s(&sys.join("ostree/repo")),
        "origin",
        "exts/a",
        "exts/b",
    ]));
}

#[test]
fn the_composed_commit_is_the_same_on_every_path_and_equals_ostree() {
    if needs_root("the_composed_commit_is_the_same_on_every_path_and_equals_ostree") {
        return;
    }
    let e = Ext::new();
    let (ca, cb) = two_extensions(&e);
    // Sysroot 1: add a, then add b.
    pull_exts(&e.sys);
    run_ok(arbor().args(["extension", "add", "--sysroot", s(&e.sys), "origin:exts/a"]));
    run_ok(arbor().args(["extension", "add", "--sysroot", s(&e.sys), "origin:exts/b"]));
    let one = layers(&e.sys)[0].clone();
    assert_eq!(one.1, e.v1);
    assert_eq!(one.2, [format!("a:{ca}"), format!("b:{cb}")]);
    let root = root_of(&e.sys, 0);
    assert_eq!(read(&root.join("usr/share/a/x/y/z")), "deep\n");
    assert_eq!(
        std::fs::read_link(root.join("usr/bin/b-link")).unwrap(),
        Path::new("../lib/b/lib.so")
    );
    assert_eq!(read(&root.join("opt/b/data")), "b\n");
    assert_eq!(
        crate::util::user_xattrs(&root.join("usr/bin/a-tool")),
        [(b"user.ext".to_vec(), b"a".to_vec())]
    );
    // Sysroot 2: one add listing both.
    let sys2 = e.dir.path().join("sysroot2");
    e.new_sysroot(&sys2);
    pull_exts(&sys2);
    run_ok(arbor().args([
        "extension",
        "add",
        "--sysroot",
        s(&sys2),
        "origin:exts/a",
        "origin:exts/b",
    ]));
    assert_eq!(layers(&sys2)[0], one, "add a then b vs add a b");
    // `extension compose` in a third repository (an archive one, pulled).
    let r3 = e.fresh("repo3").join("r");
    run_ok(ostree().args(["init", "--mode=bare-user", &format!("--repo={}", s(&r3))]));
    for rev in [&e.v1, &ca, &cb] {
        run_ok(arbor().args(["pull-local", "--repo", s(&r3), s(&e.repo), rev.as_str()]));
    }
    let c3 = compose_cli(&r3, &e.v1, &[format!("a={ca}"), format!("b={cb}")]);
    assert_eq!(c3, one.0, "extension compose in another repository");
    // Named by ref's last component when no name is given.
    let c3b = compose_cli(
        &e.srepo(),
        &e.v1,
        &["origin:exts/a".into(), "origin:exts/b".into()],
    );
    assert_eq!(c3b, one.0);
    // The order matters.
    let swapped = compose_cli(&r3, &e.v1, &[format!("b={cb}"), format!("a={ca}")]);
    assert_ne!(swapped, one.0);
    // Real ostree's union of the same trees with the same metadata.
    let ts = run_ok(ostree().args([
        "show",
        &format!("--repo={}", s(&r3)),
        "--print-metadata-key=version",
        &e.v1,
    ]));
    assert_eq!(ts.trim(), "'1.0'");
    let theirs = run_ok(ostree().args([
        "commit",
        &format!("--repo={}", s(&r3)),
        "--orphan",
        "--no-bindings",
        &format!("--parent={}", e.v1),
        "--timestamp=@1577836800",
        "-s",
        "Extensions: a, b",
        "--add-metadata-string=version=1.0",
        &format!("--add-metadata-string=arbor.base-commit={}", e.v1),
        &format!("--add-metadata=arbor.extensions=['a:{ca}','b:{cb}']"),
        &format!("--tree=ref={}", e.v1),
        &format!("--tree=ref={ca}"),
        &format!("--tree=ref={cb}"),
    ]));
    assert_eq!(
        theirs.trim(),
        one.0,
        "ostree commit --tree=ref=... gives another commit"
    );
    both_fscks(&e.sys);
    both_fscks(&sys2);
    run_ok(arbor().args(["fsck", "--repo", s(&r3)]));
    run_ok(ostree().args(["fsck", &format!("--repo={}", s(&r3))]));
}

#[test]
fn a_config_listing_extensions_gives_the_same_commit_as_adding_them() {
    if needs_root("a_config_listing_extensions_gives_the_same_commit_as_adding_them") {
        return;
    }
    let e = Ext::new();
    let (ca, cb) = two_extensions(&e);
    pull_exts(&e.sys);
    e.ok("add", &["origin:exts/a"]);
    e.ok("add", &["origin:exts/b"]);
    let one = layers(&e.sys)[0].clone();
    // Another sysroot, another history: a MachineConfig listing both.
    let sys2 = e.dir.path().join("sysroot2");
    e.new_sysroot(&sys2);
    pull_exts(&sys2);
    config_apply(
        &e,
        &sys2,
        &mc_extensions(&["origin:exts/a", "origin:exts/b"]),
    );
    let two = layers(&sys2)[0].clone();
    assert_eq!(two, one, "add a then b vs a config listing both");
    assert_eq!(two.2, [format!("a:{ca}"), format!("b:{cb}")]);
    assert!(root_of(&sys2, 0).join("usr/share/a/x/y/z").is_file());
    both_fscks(&sys2);
    // Removing the config's extensions: back to the base (the declared
    // part is gone, nothing else was listed).
    config_apply(&e, &sys2, &mc_extensions(&[]));
    assert_eq!(layers(&sys2)[0], (e.v1.clone(), e.v1.clone(), vec![]));
}

#[test]
fn a_config_adds_to_what_extension_add_listed() {
    if needs_root("a_config_adds_to_what_extension_add_listed") {
        return;
    }
    let e = Ext::new();
    let (ca, _) = two_extensions(&e);
    // Without an extension-release file, any name fits.
    let plain = e.ext_dir("plain", &[("usr/share/plain/f", "p\n")], None);
    let cp = ext_commit(&e.srepo(), "exts/plain", &plain, &[]);
    pull_exts(&e.sys);
    e.ok("add", &["origin:exts/a"]);
    // An explicit name must match the extension-release file's.
    let before = boot_snapshot(&e.sys);
    let f = e.fresh("config").join("50-extensions.json");
    std::fs::write(&f, mc_extensions(&["bee=origin:exts/b"])).unwrap();
    let err = run_fail(arbor().args(["config", "apply", "--sysroot", s(&e.sys), s(&f)]));
    assert!(
        stderr(&err).contains("extension-release.b"),
        "{}",
        stderr(&err)
    );
    assert_eq!(boot_snapshot(&e.sys), before);
    config_apply(&e, &e.sys, &mc_extensions(&["bee=exts/plain"]));
    assert_eq!(
        layers(&e.sys)[0].2,
        [format!("a:{ca}"), format!("bee:{cp}")]
    );
    assert_eq!(read(&root_of(&e.sys, 0).join("usr/share/plain/f")), "p\n");
    // A config without extensions drops only what the previous one declared.
    config_apply(&e, &e.sys, &mc_extensions(&[]));
    assert_eq!(layers(&e.sys)[0].2, [format!("a:{ca}")]);
}

#[test]
fn conflicts_name_the_path_and_both_sources_unless_overridden() {
    if needs_root("conflicts_name_the_path_and_both_sources_unless_overridden") {
        return;
    }
    let e = Ext::new();
    let before = boot_snapshot(&e.sys);
    // An extension replacing a file of the base.
    let x = e.ext_dir(
        "x",
        &[("usr/bin/tool", "#!/bin/sh\necho replaced\n")],
        Some("1"),
    );
    let err = run_fail(&mut e.cmd("add", &[s(&x)]));
    let msg = stderr(&err);
    assert!(msg.contains("usr/bin/tool"), "{msg}");
    assert!(msg.contains("base "), "{msg}");
    assert!(msg.contains("extension x"), "{msg}");
    assert_eq!(boot_snapshot(&e.sys), before);
    // The same file (same content, mode, owner) is no conflict.
    let same = e.ext_dir("same", &[("usr/bin/tool", "#!/bin/sh\n")], Some("1"));
    std::fs::set_permissions(
        same.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    e.ok("add", &[s(&same)]);
    e.ok("remove", &["same"]);
    let before = boot_snapshot(&e.sys);
    // Two extensions giving one path different contents.
    let p = e.ext_dir("p", &[("usr/share/common/f", "p\n")], Some("1"));
    let q = e.ext_dir("q", &[("usr/share/common/f", "q\n")], Some("1"));
    let err = run_fail(&mut e.cmd("add", &[s(&p), s(&q)]));
    let msg = stderr(&err);
    assert!(msg.contains("usr/share/common/f"), "{msg}");
    assert!(
        msg.contains("extension p") && msg.contains("extension q"),
        "{msg}"
    );
    assert_eq!(boot_snapshot(&e.sys), before);
    // A file against a directory: always an error, override or not.
    let fd = e.ext_dir("fd", &[("usr/lib/systemd", "not a directory\n")], Some("1"));
    for extra in [&[][..], &["--override", "/usr/lib/systemd"]] {
        let mut c = e.cmd("add", extra);
        c.arg(&fd);
        let err = run_fail(&mut c);
        assert!(stderr(&err).contains("usr/lib/systemd"), "{}", stderr(&err));
    }
    assert_eq!(boot_snapshot(&e.sys), before);
    // The override, declared in the extension: the later one wins.
    e.ok("add", &["--override", "/usr/bin/tool", s(&x)]);
    let root = root_of(&e.sys, 0);
    assert_eq!(
        read(&root.join("usr/bin/tool")),
        "#!/bin/sh\necho replaced\n"
    );
    let c = commit_of(&layers(&e.sys)[0].2, "x");
    let key = run_ok(ostree().args([
        "show",
        &format!("--repo={}", s(&e.srepo())),
        "--print-metadata-key=arbor.extension.overrides",
        &c,
    ]));
    assert_eq!(key.trim(), "['/usr/bin/tool']");
    // An override covers the path and everything below it.
    let y = e.ext_dir("y", &[("usr/share/common/f", "y\n")], Some("1"));
    e.ok("add", &[s(&p)]);
    e.ok("add", &["--override", "/usr/share", s(&y)]);
    assert_eq!(read(&root_of(&e.sys, 0).join("usr/share/common/f")), "y\n");
    both_fscks(&e.sys);
}

#[test]
fn directory_metadata_differences_are_conflicts() {
    if needs_root("directory_metadata_differences_are_conflicts") {
        return;
    }
    let e = Ext::new();
    let before = boot_snapshot(&e.sys);
    // /usr/lib tightened by an extension.
    let m = e.ext_dir("m", &[("usr/lib/m/file", "m\n")], Some("1"));
    std::fs::set_permissions(m.join("usr/lib"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = run_fail(&mut e.cmd("add", &[s(&m)]));
    let msg = stderr(&err);
    assert!(msg.contains("usr/lib"), "{msg}");
    assert!(msg.contains("directory metadata differs"), "{msg}");
    assert!(
        msg.contains("extension m") && msg.contains("base "),
        "{msg}"
    );
    // An xattr on a shared directory.
    let x = e.ext_dir("xa", &[("usr/share/xa/file", "x\n")], Some("1"));
    crate::config_drift::setxattr(&x.join("usr/share"), "user.evil", b"1");
    let err = run_fail(&mut e.cmd("add", &[s(&x)]));
    let msg = stderr(&err);
    assert!(msg.contains("usr/share"), "{msg}");
    assert!(msg.contains("directory metadata differs"), "{msg}");
    assert_eq!(boot_snapshot(&e.sys), before);
}

#[test]
fn sysext_release_checks_name_both_values() {
    if needs_root("sysext_release_checks_name_both_values") {
        return;
    }
    let e = Ext::new();
    let before = boot_snapshot(&e.sys);
    let refused = |dir: &Path, words: &[&str]| {
        let err = run_fail(&mut e.cmd("add", &[s(dir)]));
        let msg = stderr(&err);
        for w in words {
            assert!(msg.contains(w), "{w} missing from: {msg}");
        }
        assert_eq!(boot_snapshot(&e.sys), before, "{msg}");
    };
    let rel = |name: &str, content: &str| {
        let f = format!("usr/share/{name}/f");
        let d = e.ext_dir(name, &[(f.as_str(), name)], None);
        put(
            &d.join(format!(
                "usr/lib/extension-release.d/extension-release.{name}"
            )),
            content,
        );
        d
    };
    refused(
        &rel("vers", "ID=testos\nVERSION_ID=41.5\n"),
        &["vers", "VERSION_ID", "41.5"],
    );
    refused(
        &rel("other", "ID=otheros\nVERSION_ID=1\n"),
        &["other", "ID", "otheros", "testos"],
    );
    refused(&rel("neither", "ID=testos\n"), &["neither"]);
    refused(&rel("level", "ID=testos\nSYSEXT_LEVEL=2\n"), &["level"]);
    refused(
        &rel("arch", "ID=testos\nVERSION_ID=1\nARCHITECTURE=arm64\n"),
        &["arch", "ARCHITECTURE", "arm64"],
    );
    // The file must be named after the extension.
    let misnamed = e.ext_dir("misnamed", &[("usr/share/x/f", "m")], None);
    put(
        &misnamed.join("usr/lib/extension-release.d/extension-release.othername"),
        "ID=testos\nVERSION_ID=1\n",
    );
    refused(&misnamed, &["misnamed", "othername"]);
    // What passes: ID=_any, the matching VERSION_ID, the host architecture.
    e.ok("add", &[s(&rel("anyid", "ID=_any\n"))]);
    e.ok(
        "add",
        &[s(&rel(
            "good",
            "ID=testos\nVERSION_ID=1\nARCHITECTURE=x86-64\n",
        ))],
    );
    let l = layers(&e.sys);
    commit_of(&l[0].2, "anyid");
    commit_of(&l[0].2, "good");
    assert_eq!(deployments(&e.sys).len(), 2);
}

#[test]
fn whiteouts_and_other_top_level_directories_are_refused() {
    if needs_root("whiteouts_and_other_top_level_directories_are_refused") {
        return;
    }
    let e = Ext::new();
    let before = boot_snapshot(&e.sys);
    for (name, files, word) in [
        ("wh", &[("usr/share/.wh.marker", "")][..], ".wh.marker"),
        ("whdir", &[("usr/lib/.wh..wh..opq", "")][..], ".wh..wh..opq"),
        ("vardir", &[("var/lib/x/state", "s\n")][..], "var"),
        ("bootdir", &[("boot/vmlinuz", "k\n")][..], "boot"),
        ("topfile", &[("README", "hi\n")][..], "README"),
    ] {
        let d = e.ext_dir(name, files, Some("1"));
        let err = run_fail(&mut e.cmd("add", &[s(&d)]));
        let msg = stderr(&err);
        assert!(msg.contains(word), "{name}: {word} missing from: {msg}");
        assert_eq!(boot_snapshot(&e.sys), before, "{name}");
    }
    // By ref too (the commit exists, the composition refuses it).
    let d = e.ext_dir("varref", &[("var/lib/x/state", "s\n")], Some("1"));
    ext_commit(&e.srepo(), "exts/varref", &d, &[]);
    let err = run_fail(&mut e.cmd("add", &["exts/varref"]));
    assert!(stderr(&err).contains("var"), "{}", stderr(&err));
    assert_eq!(boot_snapshot(&e.sys), before);
    both_fscks(&e.sys);
}
