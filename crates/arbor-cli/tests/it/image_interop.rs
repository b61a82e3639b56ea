//! Images and ostree: the sysroot inside an image arbor built is one
//! `ostree admin status` and `ostree fsck` read; a sysroot `ostree admin
//! deploy` made becomes an image with `--from-sysroot` (its GRUB menu
//! generated from ostree's entries), the sysroot itself left untouched.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::image_build::{basic_tree, build_cmd, dump_erofs, dump_sysroot, image_source};
use crate::util::{arbor, assert_same_tree, dir_names, ostree, run_ok, s};

#[test]
fn ostree_reads_the_sysroot_of_an_image() {
    let (dir, repo, c) = image_source(basic_tree);
    let out = dir.path().join("out");
    run_ok(&mut build_cmd(&repo, "raw", &out, &[]));
    let sys = dir.path().join("sys");
    dump_sysroot(&out.join("disk.raw"), dir.path(), &sys);
    let st = run_ok(ostree().args(["admin", &format!("--sysroot={}", s(&sys)), "status"]));
    assert!(st.contains(&format!("default {c}.0")), "{st}");
    assert!(st.contains("origin refspec: testos/stable"), "{st}");
    let sys_repo = sys.join("ostree/repo");
    let rev = run_ok(ostree().args([
        &format!("--repo={}", s(&sys_repo)),
        "rev-parse",
        "testos/stable",
    ]));
    assert_eq!(rev.trim(), c);
    run_ok(ostree().args([&format!("--repo={}", s(&sys_repo)), "fsck"]));
    let ours = run_ok(arbor().args(["status", "--sysroot", s(&sys)]));
    assert!(ours.contains(&c), "{ours}");
}

/// A sysroot with `tree` deployed by `ostree admin deploy` (stateroot
/// testos); returns its path.
pub(crate) fn ostree_sysroot(work: &Path, repo: &Path) -> PathBuf {
    let sys = work.join("ostree-sysroot");
    std::fs::create_dir(&sys).unwrap();
    let sr = format!("--sysroot={}", s(&sys));
    run_ok(ostree().args(["admin", "init-fs", "--modern", s(&sys)]));
    run_ok(ostree().args(["admin", &sr, "os-init", "testos"]));
    run_ok(ostree().args([
        &format!("--repo={}", s(&sys.join("ostree/repo"))),
        "pull-local",
        s(repo),
        "testos/stable",
    ]));
    run_ok(ostree().args([
        "admin",
        &sr,
        "deploy",
        "--os=testos",
        "--karg=root=LABEL=root",
        "--karg=console=ttyS0,115200n8",
        "testos/stable",
    ]));
    sys
}

#[test]
fn an_ostree_deployed_sysroot_becomes_an_image() {
    let (dir, repo, c) = image_source(basic_tree);
    let sys = ostree_sysroot(dir.path(), &repo);
    let before = run_ok(
        Command::new("find")
            .arg(&sys)
            .args(["-printf", "%p %m %s\n"]),
    );
    let out = dir.path().join("out");
    let text = run_ok(arbor().args([
        "image",
        "build",
        "--from-sysroot",
        s(&sys),
        "--format",
        "raw,erofs",
        "-o",
        s(&out),
    ]));
    assert!(
        text.contains(&format!("Built {c} (testos/{c}.0)")),
        "{text}"
    );
    assert_eq!(dir_names(&out), ["disk.raw", "root.erofs"]);
    let after = run_ok(
        Command::new("find")
            .arg(&sys)
            .args(["-printf", "%p %m %s\n"]),
    );
    assert_eq!(before, after, "the source sysroot changed");

    let got = dir.path().join("got");
    dump_sysroot(&out.join("disk.raw"), dir.path(), &got);
    let loader = std::fs::read_link(got.join("boot/loader")).unwrap();
    let menu = std::fs::read_to_string(got.join("boot").join(&loader).join("grub.cfg")).unwrap();
    assert!(
        menu.contains("menuentry 'TestOS 1 1.0 (ostree:0)' --id ostree-1-testos"),
        "{menu}"
    );
    assert!(
        menu.contains("root=LABEL=root console=ttyS0,115200n8 ostree=/ostree/boot.1/testos/"),
        "{menu}"
    );
    assert!(got.join("boot/grub/grub.cfg").is_file());
    let dep = format!("ostree/deploy/testos/deploy/{c}.0");
    assert_same_tree(&sys.join(&dep), &got.join(&dep), true);
    let ex = dir.path().join("erofs");
    run_ok(Command::new("fsck.erofs").arg(out.join("root.erofs")));
    dump_erofs(&out.join("root.erofs"), dir.path(), &ex);
    assert_same_tree(&sys.join(&dep), &ex, true);
    let st = run_ok(ostree().args(["admin", &format!("--sysroot={}", s(&got)), "status"]));
    assert!(st.contains(&format!("testos {c}.0")), "{st}");
    crate::sysroot::unseal_all(dir.path());
}

#[test]
fn from_sysroot_needs_exactly_one_loader() {
    let (dir, repo, _) = image_source(basic_tree);
    let sys = ostree_sysroot(dir.path(), &repo);
    std::fs::create_dir_all(sys.join("boot/loader.0/entries")).unwrap();
    let out = dir.path().join("out");
    let o = crate::util::run_fail(arbor().args([
        "image",
        "build",
        "--from-sysroot",
        s(&sys),
        "--format",
        "raw",
        "-o",
        s(&out),
    ]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("exactly one boot/loader.N")
            && err.contains("loader.0")
            && err.contains("loader.1"),
        "{err}"
    );
    assert!(!out.exists());
    crate::sysroot::unseal_all(dir.path());
}
