//! `status` with two stateroots, against `ostree admin status`: the same
//! text for the same sysroot, whichever tool made it; pending and rollback
//! only for the booted stateroot.

use std::path::Path;

use crate::sysroot::{
    admin, booted_root, needs_root, os_tree, prepare, pull, source, status_json, unseal_all, Tool,
};
use crate::util::{arbor, ostree, require_ostree, run_ok, s};

/// A bootable commit on `testos/titled` with an `ostree.source-title`.
fn commit_titled(repo: &Path, tree: &Path) -> String {
    os_tree(tree, &[("t.conf", "t=1\n")]);
    run_ok(ostree().args([
        &format!("--repo={}", s(repo)),
        "commit",
        "-b",
        "testos/titled",
        "--bootable",
        "--add-metadata-string=version=3.0",
        "--add-metadata-string=ostree.source-title=oci:example.com/testos:3",
        "--timestamp=@1578009600",
        "--owner-uid=0",
        "--owner-gid=0",
        "-s",
        "titled",
        s(tree),
    ]));
    run_ok(ostree().args(["summary", "-u", &format!("--repo={}", s(repo))]));
    run_ok(ostree().args([&format!("--repo={}", s(repo)), "rev-parse", "testos/titled"]))
        .trim()
        .to_string()
}

fn ostree_admin(sys: &Path, args: &[&str]) {
    run_ok(
        ostree()
            .arg("admin")
            .args(args)
            .arg(format!("--sysroot={}", s(sys))),
    );
}

fn arbor_status(sys: &Path, booted: Option<&str>) -> String {
    let mut c = arbor();
    c.args(["status", "--sysroot", s(sys)]);
    if let Some(b) = booted {
        c.env("ARBOR_TEST_ROOT", b);
    }
    crate::util::ostree_view_of_status(&run_ok(&mut c))
}

#[test]
fn two_stateroots_status_matches_ostree_admin_status() {
    require_ostree();
    if needs_root("two_stateroots_status_matches_ostree_admin_status") {
        return;
    }
    let mut src = source();
    let base = src.dir.path().to_path_buf();
    let (sa, so) = (base.join("arbor-sysroot"), base.join("ostree-sysroot"));
    // v1 pulled, then v2 and the titled commit released and pulled.
    for (tool, sys) in [(Tool::Arbor, &sa), (Tool::Ostree, &so)] {
        prepare(tool, sys, &src);
    }
    src.release_v2();
    let titled = commit_titled(&src.repo, &src.dir.path().join("tree3"));
    let repo_of = |sys: &Path| sys.join("ostree/repo");
    for (tool, sys) in [(Tool::Arbor, &sa), (Tool::Ostree, &so)] {
        match tool {
            Tool::Arbor => {
                run_ok(arbor().args(["admin", "os-init", "--sysroot", s(sys), "other"]));
                run_ok(arbor().args([
                    "pull-local",
                    "--repo",
                    s(&repo_of(sys)),
                    s(&src.repo),
                    "testos/titled",
                ]));
            }
            Tool::Ostree => {
                ostree_admin(sys, &["os-init", "other"]);
                run_ok(ostree().args([
                    &format!("--repo={}", s(&repo_of(sys))),
                    "pull-local",
                    s(&src.repo),
                    "testos/titled",
                ]));
            }
        }
        pull(tool, sys, &src);
        // testos v1, then v2 in the stateroot `other`, then the titled
        // commit in testos: [testos titled, other v2, testos v1].
        for (os, rev) in [
            ("testos", src.v1.as_str()),
            ("other", src.v2.as_str()),
            ("testos", "testos/titled"),
        ] {
            if tool == Tool::Arbor {
                run_ok(arbor().args(["deploy", "--sysroot", s(sys), "--os", os, rev]));
            } else {
                let a = format!("--os={os}");
                admin(tool, sys, &["deploy", &a, rev]);
            }
        }
        // No origin file for `other`'s; an origin without a refspec for v1.
        let dep = |os: &str, c: &str| sys.join(format!("ostree/deploy/{os}/deploy/{c}.0.origin"));
        std::fs::remove_file(dep("other", &src.v2)).unwrap();
        std::fs::write(dep("testos", &src.v1), "[origin]\nunknown-key=x\n").unwrap();
    }
    // Each tool reads each sysroot, and prints the same text.
    for sys in [&sa, &so] {
        let want = admin(Tool::Ostree, sys, &["status"]);
        assert_eq!(arbor_status(sys, None), want, "{}", sys.display());
    }
    let text = arbor_status(&sa, None);
    let expect = format!(
        "  testos {titled}.0\n    Version: 3.0\n    origin refspec: testos/titled\n    `- oci:example.com/testos:3\n\
         \x20 other {v2}.0\n    Version: 2.0\n    origin: none\n\
         \x20 testos {v1}.0\n    Version: 1.0\n    origin: <unknown origin type>\n",
        v1 = src.v1,
        v2 = src.v2
    );
    assert_eq!(text, expect);
    // Booted into testos v1 (index 2): testos's first deployment is
    // pending; `other`'s deployment is neither pending nor rollback.
    let on_v1 = booted_root(&sa, 2);
    let v = status_json(&sa, Some(&on_v1));
    let flags: Vec<(bool, bool, bool)> = v["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["booted"].as_bool().unwrap(),
                d["pending"].as_bool().unwrap(),
                d["rollback"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            (false, true, false),
            (false, false, false),
            (true, false, false)
        ]
    );
    assert_eq!(
        v["deployments"][0]["source_title"],
        "oci:example.com/testos:3"
    );
    let text = arbor_status(&sa, Some(&on_v1));
    assert!(
        text.contains(&format!("  testos {titled}.0 (pending)\n")),
        "{text}"
    );
    assert!(text.contains(&format!("  other {}.0\n", src.v2)), "{text}");
    assert!(text.contains(&format!("* testos {}.0\n", src.v1)), "{text}");
    // Booted into `other` (index 1): nothing of testos is marked.
    let on_other = booted_root(&sa, 1);
    let text = arbor_status(&sa, Some(&on_other));
    assert!(
        !text.contains("(pending)") && !text.contains("(rollback)"),
        "{text}"
    );
    assert!(text.contains(&format!("* other {}.0\n", src.v2)), "{text}");
    unseal_all(&base);
}
