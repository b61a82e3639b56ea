//! Sysroots: arbor's deployments against `ostree admin`'s, side by side on
//! the same commits, and each tool reading the other's sysroot.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::util::{arbor, ostree, require_ostree, run_ok, s};

pub(crate) const KVER: &str = "6.1.0-test";

pub(crate) fn put(p: &Path, content: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// The tree of the spec's sysroot example: a fake kernel and initramfs,
/// os-release, and defaults in /usr/etc.
pub(crate) fn os_tree(dir: &Path, etc: &[(&str, &str)]) {
    put(
        &dir.join(format!("usr/lib/modules/{KVER}/vmlinuz")),
        "FAKE KERNEL\n",
    );
    put(
        &dir.join(format!("usr/lib/modules/{KVER}/initramfs.img")),
        "FAKE INITRAMFS\n",
    );
    // A symlink into os.release.d/, as Fedora-style trees ship it.
    put(
        &dir.join("usr/lib/os.release.d/os-release-testos"),
        "NAME=\"TestOS\"\nID=testos\nPRETTY_NAME=\"TestOS 1\"\n",
    );
    std::os::unix::fs::symlink(
        "os.release.d/os-release-testos",
        dir.join("usr/lib/os-release"),
    )
    .unwrap();
    put(&dir.join("usr/bin/tool"), "#!/bin/sh\n");
    for (name, content) in etc {
        put(&dir.join("usr/etc").join(name), content);
    }
}

const V1_ETC: &[(&str, &str)] = &[
    ("unchanged.conf", "a=1\n"),
    ("modified-by-admin.conf", "b=1\n"),
    ("removed-by-admin.conf", "c=1\n"),
    ("changed-upstream.conf", "d=1\n"),
    ("both-changed.conf", "e=1\n"),
    ("d1/f.conf", "f=1\n"),
    ("d2/sub/g.conf", "g=1\n"),
    ("d3/h.conf", "h=1\n"),
];
const V2_ETC: &[(&str, &str)] = &[
    ("unchanged.conf", "a=UP2\n"),
    ("modified-by-admin.conf", "b=UP2\n"),
    ("removed-by-admin.conf", "c=UP2\n"),
    ("changed-upstream.conf", "d=UP2\n"),
    ("both-changed.conf", "e=UP2\n"),
    ("d1/f.conf", "f=UP2\n"),
    ("d2/sub/g.conf", "g=UP2\n"),
    // d3 becomes a symlink to d3.real (see `Source::release_v2`).
    ("d3.real/h.conf", "h=UP2\n"),
    ("new-upstream.conf", "n=1\n"),
];

/// An archive repository (written by ostree) holding v1 and v2 of
/// `testos/stable`.
pub(crate) struct Source {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub v1: String,
    pub v2: String,
}

pub(crate) fn ostree_commit(repo: &Path, tree: &Path, version: &str, ts: &str) -> String {
    run_ok(ostree().args([
        &format!("--repo={}", s(repo)),
        "commit",
        "-b",
        "testos/stable",
        "--bootable",
        &format!("--add-metadata-string=version={version}"),
        &format!("--timestamp=@{ts}"),
        "--owner-uid=0",
        "--owner-gid=0",
        "-s",
        version,
        s(tree),
    ]))
    .trim()
    .to_string()
}

/// Clears the immutable flag both tools set on deployment roots, so the
/// temporary directory can be removed.
pub(crate) fn unseal_all(dir: &Path) {
    let _ = std::process::Command::new("find")
        .arg(dir)
        .args([
            "-xdev",
            "-type",
            "d",
            "-path",
            "*/ostree/deploy/*/deploy/*",
            "-prune",
            "-exec",
            "chattr",
            "-i",
            "{}",
            "+",
        ])
        .status();
}

impl Drop for Source {
    fn drop(&mut self) {
        unseal_all(self.dir.path());
    }
}

/// Whether `dir` has the immutable flag (`lsattr -d`).
pub(crate) fn is_immutable(dir: &Path) -> bool {
    let out = run_ok(std::process::Command::new("lsattr").arg("-d").arg(dir));
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .contains('i')
}

impl Source {
    /// Commits v2 on `testos/stable`, as an upstream release would.
    pub(crate) fn release_v2(&mut self) {
        let t2 = self.dir.path().join("tree2");
        os_tree(&t2, V2_ETC);
        std::os::unix::fs::symlink("d3.real", t2.join("usr/etc/d3")).unwrap();
        self.v2 = ostree_commit(&self.repo, &t2, "2.0", "1577923200");
        run_ok(ostree().args(["summary", "-u", &format!("--repo={}", s(&self.repo))]));
    }
}

/// The source with v1 on `testos/stable` (v2 comes with [`Source::release_v2`]).
pub(crate) fn source() -> Source {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    run_ok(ostree().args(["init", "--mode=archive", &format!("--repo={}", s(&repo))]));
    let t1 = dir.path().join("tree1");
    os_tree(&t1, V1_ETC);
    let v1 = ostree_commit(&repo, &t1, "1.0", "1577836800");
    run_ok(ostree().args(["summary", "-u", &format!("--repo={}", s(&repo))]));
    Source {
        dir,
        repo,
        v1,
        v2: String::new(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Tool {
    Arbor,
    Ostree,
}

pub(crate) fn admin(tool: Tool, sysroot: &Path, args: &[&str]) -> String {
    let mut c = match tool {
        Tool::Arbor => {
            let mut c = arbor();
            let (sub, rest) = args.split_first().unwrap();
            c.arg(sub).arg("--sysroot").arg(sysroot).args(rest);
            c
        }
        Tool::Ostree => {
            let mut c = ostree();
            c.arg("admin")
                .args(args)
                .arg(format!("--sysroot={}", s(sysroot)));
            c
        }
    };
    run_ok(&mut c)
}

/// init-fs, os-init testos, and the source's ref pulled into the system repo.
pub(crate) fn prepare(tool: Tool, sysroot: &Path, src: &Source) {
    match tool {
        Tool::Arbor => {
            run_ok(arbor().args(["admin", "init-fs"]).arg(sysroot));
            run_ok(arbor().args(["admin", "os-init", "--sysroot", s(sysroot), "testos"]));
        }
        Tool::Ostree => {
            std::fs::create_dir_all(sysroot).unwrap();
            run_ok(ostree().args(["admin", "init-fs", s(sysroot)]));
            run_ok(ostree().args([
                "admin",
                "os-init",
                "testos",
                &format!("--sysroot={}", s(sysroot)),
            ]));
        }
    }
    pull(tool, sysroot, src);
}

pub(crate) fn pull(tool: Tool, sysroot: &Path, src: &Source) {
    let repo = sysroot.join("ostree/repo");
    match tool {
        Tool::Arbor => run_ok(arbor().args([
            "pull-local",
            "--repo",
            s(&repo),
            s(&src.repo),
            "testos/stable",
        ])),
        Tool::Ostree => run_ok(ostree().args([
            &format!("--repo={}", s(&repo)),
            "pull-local",
            s(&src.repo),
            "testos/stable",
        ])),
    };
}

pub(crate) fn deploy(tool: Tool, sysroot: &Path, args: &[&str]) {
    let mut a = vec!["deploy"];
    match tool {
        Tool::Arbor => a.extend(["--os", "testos"]),
        Tool::Ostree => a.push("--os=testos"),
    }
    a.extend(args);
    admin(tool, sysroot, &a);
}

/// Everything of a sysroot that the boot depends on, as text: symlinks
/// (boot/, ostree/ but the repo), BLS entries, origins, /boot/ostree files,
/// and the system repository's refs.
pub(crate) fn boot_state(sysroot: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![sysroot.join("boot"), sysroot.join("ostree")];
    while let Some(p) = stack.pop() {
        let rel = p
            .strip_prefix(sysroot)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if rel == "ostree/repo"
            || rel.starts_with("ostree/deploy/testos/deploy/")
                && !rel.ends_with(".origin")
                && rel.matches('/').count() > 3
        {
            continue;
        }
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.file_type().is_symlink() {
            out.insert(
                rel,
                format!("-> {}", std::fs::read_link(&p).unwrap().display()),
            );
        } else if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if rel.ends_with(".conf")
            || rel.ends_with(".origin")
            || rel.starts_with("boot/ostree/")
        {
            out.insert(rel, std::fs::read_to_string(&p).unwrap());
        }
    }
    let refs = run_ok(ostree().args([
        "refs",
        &format!("--repo={}", s(&sysroot.join("ostree/repo"))),
    ]));
    let mut refs: Vec<&str> = refs.lines().collect();
    refs.sort();
    out.insert("(refs)".into(), refs.join("\n"));
    out
}

/// Every entry of a tree with type, owner, mode and content or target.
pub(crate) fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
        let what = if md.file_type().is_symlink() {
            format!("l {}", std::fs::read_link(&p).unwrap().display())
        } else if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            "d".into()
        } else {
            format!(
                "- {:?}",
                String::from_utf8_lossy(&std::fs::read(&p).unwrap())
            )
        };
        out.insert(
            rel,
            format!("{what} {}:{} {:o}", md.uid(), md.gid(), md.mode() & 0o7777),
        );
    }
    out
}

pub(crate) fn deployment_dir(sysroot: &Path, commit: &str, serial: u32) -> PathBuf {
    sysroot.join(format!("ostree/deploy/testos/deploy/{commit}.{serial}"))
}

/// The admin's edits of the spec's example, in the deployment of `commit`.
fn edit_etc(sysroot: &Path, commit: &str) {
    let etc = deployment_dir(sysroot, commit, 0).join("etc");
    std::fs::write(etc.join("modified-by-admin.conf"), "b=ADMIN\n").unwrap();
    std::fs::remove_file(etc.join("removed-by-admin.conf")).unwrap();
    std::fs::write(etc.join("both-changed.conf"), "e=ADMIN\n").unwrap();
    std::fs::write(etc.join("added-by-admin.conf"), "new=ADMIN\n").unwrap();
    put(&etc.join("admin-dir/f"), "x\n");
    // A directory tightened, and a file in it edited: both are kept.
    crate::interop::chmod(&etc.join("d1"), 0o700);
    std::fs::write(etc.join("d1/f.conf"), "f=ADMIN\n").unwrap();
    // A directory tightened, and a file one level deeper edited: the
    // directory is an ancestor of the change, and takes the new default.
    crate::interop::chmod(&etc.join("d2"), 0o700);
    std::fs::write(etc.join("d2/sub/g.conf"), "g=ADMIN\n").unwrap();
    // Upstream turns d3 into a symlink to d3.real: the edit follows it.
    std::fs::write(etc.join("d3/h.conf"), "h=ADMIN\n").unwrap();
    crate::interop::chmod(&etc.join("unchanged.conf"), 0o600);
}

#[track_caller]
pub(crate) fn assert_same_map(
    what: &str,
    a: &BTreeMap<String, String>,
    o: &BTreeMap<String, String>,
) {
    let mut diffs = Vec::new();
    for k in a
        .keys()
        .chain(o.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if a.get(k) != o.get(k) {
            diffs.push(format!(
                "{k}:\n  arbor:  {:?}\n  ostree: {:?}",
                a.get(k),
                o.get(k)
            ));
        }
    }
    assert!(diffs.is_empty(), "{what} differs:\n{}", diffs.join("\n"));
}

fn status_lines(tool: Tool, sysroot: &Path) -> String {
    let text = admin(tool, sysroot, &["status"]);
    match tool {
        Tool::Arbor => crate::util::ostree_view_of_status(&text),
        Tool::Ostree => text,
    }
}

/// Sysroot tests need root (bare system repositories, `ostree admin`,
/// immutable flags): they go through the one gate, [`crate::util::needs_root`].
pub(crate) use crate::util::needs_root;

#[test]
fn deployments_match_ostree_admin_step_by_step() {
    require_ostree();
    if needs_root("deployments_match_ostree_admin_step_by_step") {
        return;
    }
    let mut src = source();
    let base = src.dir.path().to_path_buf();
    let (sa, so) = (base.join("arbor-sysroot"), base.join("ostree-sysroot"));
    for (tool, sys) in [(Tool::Arbor, &sa), (Tool::Ostree, &so)] {
        prepare(tool, sys, &src);
        deploy(
            tool,
            sys,
            &["--karg=root=LABEL=rootfs", "--karg=quiet", "testos/stable"],
        );
    }
    // First deployment: same layout, entries, origins, kernels, refs, tree.
    let first = boot_state(&sa);
    for key in [
        "boot/loader".to_string(),
        "boot/loader.1/entries/ostree-1-testos.conf".to_string(),
        format!("ostree/deploy/testos/deploy/{}.0.origin", src.v1),
        "ostree/boot.1".to_string(),
    ] {
        assert!(first.contains_key(&key), "{key} missing from {first:?}");
    }
    assert_eq!(first["(refs)"], "ostree/1/1/0\ntestos/stable");
    assert_same_map(
        "boot state after the first deploy",
        &first,
        &boot_state(&so),
    );
    assert_same_map(
        "first deployment tree",
        &tree(&deployment_dir(&sa, &src.v1, 0)),
        &tree(&deployment_dir(&so, &src.v1, 0)),
    );
    // The admin edits /etc; v2 arrives and is deployed: the three-way merge.
    for (tool, sys) in [(Tool::Arbor, &sa), (Tool::Ostree, &so)] {
        edit_etc(sys, &src.v1);
        let _ = tool;
    }
    src.release_v2();
    for (tool, sys) in [(Tool::Arbor, &sa), (Tool::Ostree, &so)] {
        pull(tool, sys, &src);
        deploy(tool, sys, &["testos/stable"]);
    }
    assert_same_map(
        "boot state after the second deploy",
        &boot_state(&sa),
        &boot_state(&so),
    );
    let merged = tree(&deployment_dir(&sa, &src.v2, 0));
    assert_same_map(
        "merged deployment",
        &merged,
        &tree(&deployment_dir(&so, &src.v2, 0)),
    );
    // The spec's table, stated explicitly.
    let etc = |f: &str| merged.get(&format!("etc/{f}")).cloned().unwrap_or_default();
    assert!(
        etc("unchanged.conf").contains("\"a=1\\n\" 0:0 600"),
        "{}",
        etc("unchanged.conf")
    );
    assert!(etc("modified-by-admin.conf").contains("b=ADMIN"));
    assert!(!merged.contains_key("etc/removed-by-admin.conf"));
    assert!(etc("changed-upstream.conf").contains("d=UP2"));
    assert!(etc("both-changed.conf").contains("e=ADMIN"));
    assert!(etc("admin-dir/f").contains("x"));
    assert!(etc("new-upstream.conf").contains("n=1"));
    assert!(etc("d1/f.conf").contains("f=ADMIN"));
    assert!(etc("d1").contains(" 700"), "{}", etc("d1"));
    assert!(etc("d2").contains(" 755"), "{}", etc("d2"));
    assert!(etc("d2/sub/g.conf").contains("g=ADMIN"));
    assert!(etc("d3").starts_with("l d3.real "), "{}", etc("d3"));
    assert!(etc("d3.real/h.conf").contains("h=ADMIN"));
    // Deploying the same commit again: a new serial, kargs appended.
    for (tool, sys) in [(Tool::Arbor, &sa), (Tool::Ostree, &so)] {
        deploy(tool, sys, &["--karg-append=extra=1", &src.v2]);
    }
    assert_same_map(
        "boot state after redeploying",
        &boot_state(&sa),
        &boot_state(&so),
    );
    assert!(deployment_dir(&sa, &src.v2, 1).is_dir());
    // --karg replaces the arguments with its key and keeps the others.
    for (tool, sys) in [(Tool::Arbor, &sa), (Tool::Ostree, &so)] {
        deploy(tool, sys, &["--karg=root=LABEL=other", &src.v2]);
    }
    let after_karg = boot_state(&sa);
    assert_same_map("boot state after --karg", &after_karg, &boot_state(&so));
    let entry = after_karg
        .iter()
        .find(|(k, v)| k.contains("/entries/") && v.contains("(ostree:0)"))
        .map(|(_, v)| v)
        .expect("a default entry");
    assert!(
        entry.contains("options root=LABEL=other quiet ostree="),
        "{entry}"
    );
    // Both tools seal deployment roots (chattr +i), and each removes the
    // other's sealed deployments.
    for sys in [&sa, &so] {
        for serial in [1, 2] {
            let d = deployment_dir(sys, &src.v2, serial);
            assert!(is_immutable(&d), "{} is not immutable", d.display());
        }
    }
    // Another tool (bootc) added its own key to the entries, and an overlay
    // initrd (ostree's --overlay-initrd): both tools keep them when they
    // rewrite the entries.
    let overlay = format!("/ostree/initramfs-overlays/{}.img", "ab".repeat(32));
    for sys in [&sa, &so] {
        put(&sys.join(format!("boot{overlay}")), "OVERLAY\n");
        for e in std::fs::read_dir(sys.join("boot/loader/entries")).unwrap() {
            let p = e.unwrap().path();
            let mut text = std::fs::read_to_string(&p).unwrap();
            text.push_str("x-options-source-test root=LABEL=other\n");
            text.push_str(&format!("initrd {overlay}\n"));
            std::fs::write(&p, text).unwrap();
        }
    }
    admin(Tool::Arbor, &so, &["undeploy", "1"]);
    admin(Tool::Ostree, &sa, &["undeploy", "1"]);
    for sys in [&sa, &so] {
        assert!(!deployment_dir(sys, &src.v2, 1).exists());
    }
    let after_undeploy = boot_state(&sa);
    assert_same_map(
        "boot state after each tool undeployed the other's",
        &after_undeploy,
        &boot_state(&so),
    );
    let entry =
        std::fs::read_to_string(sa.join("boot/loader/entries/ostree-1-testos.conf")).unwrap();
    assert!(
        entry.ends_with(&format!(
            ".img\ninitrd {overlay}\nx-options-source-test root=LABEL=other\n"
        )),
        "{entry}"
    );
    // Each tool reads the other's sysroot the same way.
    for sys in [&sa, &so] {
        assert_eq!(
            status_lines(Tool::Arbor, sys),
            status_lines(Tool::Ostree, sys)
        );
    }
    // Both repositories stay fsck-clean.
    for sys in [&sa, &so] {
        let repo = sys.join("ostree/repo");
        run_ok(arbor().args(["fsck", "--repo", s(&repo)]));
        run_ok(ostree().args(["fsck", &format!("--repo={}", s(&repo))]));
    }
}

/// Tests decide which deployment is "booted" with `ARBOR_TEST_ROOT`, the
/// directory a simulated boot of entry `index` would make `/`: its
/// `ostree=` argument resolved as the initramfs resolves it, now.
pub(crate) fn booted_root(sysroot: &Path, index: usize) -> String {
    let out = run_ok(arbor().args(["status", "--json", "--sysroot", s(sysroot)]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let n = v["deployments"].as_array().unwrap().len();
    // ostree-N-STATEROOT.conf, N counting from the end of the list.
    let prefix = format!("ostree-{}-", n - index);
    let entry = std::fs::read_dir(sysroot.join("boot/loader/entries"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .map(|p| std::fs::read_to_string(p).unwrap())
        .unwrap_or_else(|| panic!("no entry {prefix}*"));
    let link = entry
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .unwrap()
        .split(' ')
        .find_map(|a| a.strip_prefix("ostree="))
        .unwrap()
        .to_string();
    let dir = std::fs::canonicalize(sysroot.join(link.trim_start_matches('/'))).unwrap();
    dir.to_string_lossy().into_owned()
}

pub(crate) fn status_json(sysroot: &Path, cmdline: Option<&str>) -> serde_json::Value {
    let mut c = arbor();
    c.args(["status", "--json", "--sysroot", s(sysroot)]);
    if let Some(cl) = cmdline {
        c.env("ARBOR_TEST_ROOT", cl);
    }
    serde_json::from_str(&run_ok(&mut c)).unwrap()
}

#[test]
fn booted_deployment_is_the_running_root() {
    if needs_root("booted_deployment_is_the_running_root") {
        return;
    }
    let mut src = source();
    let sys = src.dir.path().join("sysroot");
    prepare(Tool::Arbor, &sys, &src);
    run_ok(arbor().args(["deploy", "--sysroot", s(&sys), "--os", "testos", &src.v1]));
    src.release_v2();
    pull(Tool::Arbor, &sys, &src);
    run_ok(arbor().args(["deploy", "--sysroot", s(&sys), "--os", "testos", &src.v2]));
    // Not booted (a directory, no command line): no booted, pending or rollback.
    let v = status_json(&sys, None);
    let d = v["deployments"].as_array().unwrap();
    assert_eq!(d.len(), 2);
    assert!(d
        .iter()
        .all(|x| x["booted"] == false && x["pending"] == false && x["rollback"] == false));
    assert_eq!(d[0]["checksum"], src.v2.as_str());
    assert_eq!(d[0]["version"], "2.0");
    assert_eq!(d[0]["origin"], src.v2.as_str());
    // Booted into v1 (index 1): v2 is pending.
    let on_v1 = booted_root(&sys, 1);
    let v = status_json(&sys, Some(&on_v1));
    let d = v["deployments"].as_array().unwrap();
    assert_eq!(
        (d[0]["pending"].clone(), d[1]["booted"].clone()),
        (true.into(), true.into())
    );
    let human = {
        let mut c = arbor();
        c.args(["status", "--sysroot", s(&sys)])
            .env("ARBOR_TEST_ROOT", &on_v1);
        run_ok(&mut c)
    };
    assert!(
        human.contains(&format!("  testos {}.0 (pending)", src.v2)),
        "{human}"
    );
    assert!(
        human.contains(&format!("* testos {}.0\n", src.v1)),
        "{human}"
    );
    // A simulated reboot into the default (v2): v1 becomes the rollback.
    let on_v2 = booted_root(&sys, 0);
    let v = status_json(&sys, Some(&on_v2));
    let d = v["deployments"].as_array().unwrap();
    assert_eq!(
        (d[0]["booted"].clone(), d[1]["rollback"].clone()),
        (true.into(), true.into())
    );
    // Booted on v2, a new deploy keeps the booted deployment and drops v1
    // (neither booted, merge nor pinned), as ostree's simple write does.
    let mut c = arbor();
    c.args(["deploy", "--sysroot", s(&sys), "--os", "testos", &src.v2])
        .env("ARBOR_TEST_ROOT", &on_v2);
    run_ok(&mut c);
    let v = status_json(&sys, None);
    let d = v["deployments"].as_array().unwrap();
    assert_eq!(d.len(), 2, "{v}");
    assert_eq!(
        (d[0]["deployserial"].clone(), d[1]["deployserial"].clone()),
        (1.into(), 0.into())
    );
    assert!(d.iter().all(|x| x["checksum"] == src.v2.as_str()));
    assert!(
        !deployment_dir(&sys, &src.v1, 0).exists(),
        "cleanup removed v1"
    );
}
