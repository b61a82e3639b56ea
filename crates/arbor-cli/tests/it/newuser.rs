//! Bugs found trying arbor as a new user would (issue 11): key-file
//! escaping of `config` and origins, the `init-fs` layout, short checksum
//! prefixes, and `checkout -H` across filesystems. `ostree` is the oracle.

use std::path::{Path, PathBuf};

use crate::sysroot::{deploy, needs_root, prepare, source, Tool};
use crate::util::{
    arbor, arbor_init, arbor_ok, ostree, ostree_ok, require_ostree, run_fail, run_ok, s,
};

/// The value GLib reads for `KEY` (`group.key` or `'remote "r".key'`):
/// `ostree config get`, which prints `g_key_file_get_string` and a newline.
fn ostree_config_get(repo: &Path, key: &str) -> String {
    let out = ostree_ok("config", repo, &["get", key]);
    out.strip_suffix('\n')
        .expect("trailing newline")
        .to_string()
}

/// The options of a remote as arbor reads them (`remote show --json`).
fn arbor_remote_options(repo: &Path, name: &str) -> Vec<(String, String)> {
    let out = remote_ok(repo, &["show", "--json", name]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    serde_json::from_value(v["options"].clone()).unwrap()
}

/// `arbor remote SUB --repo REPO ARGS..`.
fn remote_ok(repo: &Path, args: &[&str]) -> String {
    let (sub, rest) = args.split_first().unwrap();
    run_ok(arbor().args(["remote", sub, "--repo", s(repo)]).args(rest))
}

fn option<'a>(opts: &'a [(String, String)], key: &str) -> Option<&'a str> {
    opts.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Values that break a key file written without GLib's escaping.
const HOSTILE: &[&str] = &[
    "x\n[core]\nmode=bare",
    "  leading spaces, trailing ones  ",
    "\t\n tab newline space",
    "back\\slash \\n \\s and a trailing one\\",
    "carriage\r\nreturn\r",
    "[core]",
];

#[test]
fn remote_add_values_cannot_inject_config() {
    require_ostree();
    let td = tempfile::tempdir().unwrap();
    let repo = td.path().join("r");
    arbor_init(&repo, "archive");
    for (i, v) in HOSTILE.iter().enumerate() {
        let name = format!("r{i}");
        run_ok(
            arbor()
                .args(["remote", "add", "--repo", s(&repo), "--no-gpg-verify"])
                .args([
                    "--set",
                    &format!("opt={v}"),
                    "--sign-verify",
                    &format!("ed25519=file:{v}"),
                    &name,
                    "http://127.0.0.1/repo",
                ]),
        );
        let g = format!("remote \"{name}\"");
        assert_eq!(ostree_config_get(&repo, &format!("{g}.opt")), *v);
        assert_eq!(
            ostree_config_get(&repo, &format!("{g}.verification-ed25519-file")),
            *v
        );
        let opts = arbor_remote_options(&repo, &name);
        assert_eq!(option(&opts, "opt"), Some(*v));
        assert_eq!(option(&opts, "verification-ed25519-file"), Some(*v));
    }
    // The injection is checked on --set values, which are always accepted:
    // the repository is still an archive one.
    assert_eq!(ostree_config_get(&repo, "core.mode"), "archive-z2");
    // A percent-encoded newline in a URL is valid and not an injection: it
    // is stored and read back as given.
    let encoded = "http://127.0.0.1/x%0A%5Bcore%5D%0Amode=bare";
    remote_ok(&repo, &["add", "--no-gpg-verify", "enc", encoded]);
    assert_eq!(ostree_config_get(&repo, "remote \"enc\".url"), encoded);
    assert_eq!(
        remote_ok(&repo, &["show-url", "enc"]),
        format!("{encoded}\n")
    );
    // A raw newline in a URL: arbor either refuses the URL with an error
    // naming it and leaves the config alone (URL validation, as expected
    // once remote add validates URLs), or stores it escaped so that both
    // tools read back exactly the URL given (ostree's behaviour). Nothing
    // else is acceptable.
    let before = std::fs::read(repo.join("config")).unwrap();
    let url = "http://127.0.0.1/x\n[core]\nmode=bare";
    let out = arbor()
        .args([
            "remote",
            "add",
            "--repo",
            s(&repo),
            "--no-gpg-verify",
            "u",
            url,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {
            assert_eq!(ostree_config_get(&repo, "remote \"u\".url"), url);
            let shown = remote_ok(&repo, &["show-url", "u"]);
            assert_eq!(shown, format!("{url}\n"));
        }
        Some(1) => {
            assert!(
                err.contains("Invalid URL") && err.contains("'\\n'"),
                "a refusal must name the URL and the newline: {err}"
            );
            assert_eq!(std::fs::read(repo.join("config")).unwrap(), before);
        }
        c => panic!("remote add with a newline in the URL: exit {c:?}: {err}"),
    }
    assert_eq!(ostree_config_get(&repo, "core.mode"), "archive-z2");
    // Both tools still open it as an archive repository.
    ostree_ok("fsck", &repo, &[]);
    let t = td.path().join("t");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("f"), "x").unwrap();
    run_ok(
        arbor()
            .args(["commit", "--repo", s(&repo), "-b", "b"])
            .arg(&t),
    );
    assert!(std::fs::read_dir(repo.join("objects"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .any(|f| f.file_name().to_string_lossy().ends_with(".filez")));
}

#[test]
fn remote_add_refuses_unsafe_key_names() {
    let td = tempfile::tempdir().unwrap();
    let repo = td.path().join("r");
    arbor_init(&repo, "archive");
    let before = std::fs::read(repo.join("config")).unwrap();
    for kv in [
        "a]=v",
        "[core=v",
        "x\n[core]\nmode=bare",
        "k\r=v",
        " k=v",
        "#k=v",
        "=v",
    ] {
        let out = run_fail(
            arbor()
                .args(["remote", "add", "--repo", s(&repo), "--set", kv, "r"])
                .arg("http://127.0.0.1/"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("key"), "{kv:?}: {err}");
        assert_eq!(
            std::fs::read(repo.join("config")).unwrap(),
            before,
            "{kv:?}"
        );
    }
    for name in ["a]", "a\nb", "r\"]\n[core"] {
        run_fail(arbor().args([
            "remote",
            "add",
            "--repo",
            s(&repo),
            name,
            "http://127.0.0.1/",
        ]));
        assert_eq!(
            std::fs::read(repo.join("config")).unwrap(),
            before,
            "{name:?}"
        );
    }
}

#[test]
fn ostree_escapes_are_read_unescaped() {
    require_ostree();
    let td = tempfile::tempdir().unwrap();
    let repo = td.path().join("r");
    arbor_init(&repo, "archive");
    for (i, v) in HOSTILE.iter().enumerate() {
        let name = format!("o{i}");
        let url = format!("http://127.0.0.1/{v}");
        ostree_ok(
            "remote",
            &repo,
            &[
                "add",
                "--no-gpg-verify",
                &format!("--set=opt={v}"),
                &name,
                &url,
            ],
        );
        assert_eq!(remote_ok(&repo, &["show-url", &name]), format!("{url}\n"));
        let opts = arbor_remote_options(&repo, &name);
        assert_eq!(option(&opts, "opt"), Some(*v));
        // A rewrite by arbor keeps ostree's reading.
        run_ok(
            arbor()
                .args(["remote", "add", "--repo", s(&repo), "--no-gpg-verify"])
                .args([&format!("x{i}"), "http://127.0.0.1/"]),
        );
        assert_eq!(
            ostree_config_get(&repo, &format!("remote \"{name}\".opt")),
            *v
        );
        assert_eq!(
            ostree_config_get(&repo, &format!("remote \"{name}\".url")),
            url
        );
    }
}

/// What GLib reads for `group.key` in a key file other than a repository
/// `config` (an origin): its groups appended to a scratch repository's
/// config, read with `ostree config get`.
fn glib_read(keyfile: &Path, key: &str) -> String {
    let td = tempfile::tempdir().unwrap();
    let repo = td.path().join("r");
    ostree_ok("init", &repo, &["--mode=archive"]);
    let mut config = std::fs::read_to_string(repo.join("config")).unwrap();
    config.push_str(&std::fs::read_to_string(keyfile).unwrap());
    std::fs::write(repo.join("config"), config).unwrap();
    ostree_config_get(&repo, key)
}

fn origin_file(sysroot: &Path) -> PathBuf {
    let dir = sysroot.join("ostree/deploy/testos/deploy");
    std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "origin"))
        .expect("an origin file")
}

#[test]
fn origin_values_round_trip_as_glib_reads_them() {
    require_ostree();
    if needs_root("origin_values_round_trip_as_glib_reads_them") {
        return;
    }
    let src = source();
    let td = tempfile::tempdir().unwrap();
    let sys = td.path().join("sys");
    prepare(Tool::Arbor, &sys, &src);
    deploy(Tool::Arbor, &sys, &["testos/stable"]);
    let origin = origin_file(&sys);
    // Values as a GLib writer (ostree, rpm-ostree) escapes them.
    let state = "Line one\nline two";
    let custom = "  lead\\tail\r";
    let mut text = std::fs::read_to_string(&origin).unwrap();
    text.push_str("unconfigured-state=Line one\\nline two\n");
    text.push_str("\n[x-custom]\nv=\\s\\slead\\\\tail\\r\n");
    std::fs::write(&origin, &text).unwrap();
    assert_eq!(glib_read(&origin, "origin.unconfigured-state"), state);
    assert_eq!(glib_read(&origin, "x-custom.v"), custom);
    // arbor reads them unescaped...
    let out = run_fail(arbor().args(["upgrade", "--sysroot", s(&sys)]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(state), "{err}");
    // ...and rewrites them (pin) so that GLib reads the same values.
    run_ok(arbor().args(["pin", "--sysroot", s(&sys), "0"]));
    let origin = origin_file(&sys);
    assert!(std::fs::read_to_string(&origin)
        .unwrap()
        .contains("[libostree-transient]"));
    assert_eq!(glib_read(&origin, "origin.unconfigured-state"), state);
    assert_eq!(glib_read(&origin, "x-custom.v"), custom);
    assert_eq!(glib_read(&origin, "origin.refspec"), "testos/stable");
    let status = run_ok(ostree().args(["admin", "status", &format!("--sysroot={}", s(&sys))]));
    assert!(status.contains("origin refspec: testos/stable"), "{status}");
}

/// `find` of a tree: type and mode bits, owner, path; sorted.
fn layout(root: &Path) -> String {
    let out = run_ok(
        std::process::Command::new("find")
            .arg(".")
            .args(["-printf", "%M %u:%g %p\n"])
            .current_dir(root),
    );
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_by_key(|l| l.rsplit(' ').next().unwrap_or_default().to_string());
    lines.join("\n")
}

/// `c` run under `umask` (through `sh`, which sets it before `exec`).
fn with_umask(umask: &str, c: &mut std::process::Command) -> std::process::Command {
    let mut w = std::process::Command::new("sh");
    w.arg("-c")
        .arg(format!("umask {umask} && exec \"$@\""))
        .arg("sh")
        .arg(c.get_program())
        .args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    w
}

#[test]
fn init_fs_layout_matches_ostree() {
    require_ostree();
    if needs_root("init_fs_layout_matches_ostree") {
        return;
    }
    // ostree applies the umask to every mode but tmp's.
    for umask in ["022", "002", "077"] {
        let td = tempfile::tempdir().unwrap();
        let (a, o) = (td.path().join("a"), td.path().join("o"));
        // Both roots made here: ostree's init-fs needs it to exist.
        std::fs::create_dir_all(&o).unwrap();
        std::fs::create_dir_all(&a).unwrap();
        run_ok(&mut with_umask(
            umask,
            ostree().args(["admin", "init-fs", s(&o)]),
        ));
        run_ok(&mut with_umask(
            umask,
            arbor().args(["admin", "init-fs", s(&a)]),
        ));
        assert_eq!(
            layout(&a),
            layout(&o),
            "umask {umask}: arbor's layout (left) vs ostree's"
        );
        assert_eq!(
            std::fs::read_to_string(a.join("ostree/repo/config")).unwrap(),
            std::fs::read_to_string(o.join("ostree/repo/config")).unwrap()
        );
        let sysroot = format!("--sysroot={}", s(&a));
        run_ok(ostree().args(["admin", "os-init", "testos", &sysroot]));
        let status = run_ok(ostree().args(["admin", "status", &sysroot]));
        assert!(status.contains("No deployments"), "{status}");
        run_ok(arbor().args(["status", "--sysroot", s(&a)]));
    }
}

/// An empty file named like a commit object sharing the first `n` hex
/// digits of `c` (prefix lookup goes by object names, in both tools).
fn twin_commit(repo: &Path, c: &str, n: usize) -> String {
    let tail: String = c[n..]
        .chars()
        .map(|ch| if ch == '0' { '1' } else { '0' })
        .collect();
    let twin = format!("{}{tail}", &c[..n]);
    std::fs::write(
        repo.join("objects")
            .join(&twin[..2])
            .join(format!("{}.commit", &twin[2..])),
        b"",
    )
    .unwrap();
    twin
}

/// A 12-digit prefix no commit starts with (differs from `c` in the first digit).
fn absent_prefix(c: &str) -> String {
    let first = c.as_bytes()[0];
    let other = if first == b'f' { 'e' } else { 'f' };
    format!("{other}{}", &c[1..12])
}

#[test]
fn short_checksums_resolve_in_every_command() {
    require_ostree();
    let td = tempfile::tempdir().unwrap();
    let repo = td.path().join("r");
    arbor_init(&repo, "archive");
    let tree = td.path().join("t");
    std::fs::create_dir_all(tree.join("usr")).unwrap();
    std::fs::write(tree.join("usr/f"), "x").unwrap();
    let c = run_ok(
        arbor()
            .args(["commit", "--repo", s(&repo), "-b", "b"])
            .arg(&tree),
    )
    .trim()
    .to_string();
    let twin = twin_commit(&repo, &c, 10);
    let unique = &c[..11];
    let ambiguous = &c[..10];
    let absent = absent_prefix(&c);
    // ostree agrees on each case.
    assert_eq!(ostree_ok("rev-parse", &repo, &[unique]).trim(), c);
    let o = run_fail(ostree().args([&format!("--repo={}", s(&repo)), "rev-parse", ambiguous]));
    let oerr = String::from_utf8_lossy(&o.stderr);
    assert!(
        oerr.contains(&format!("Refspec {ambiguous} not unique")),
        "{oerr}"
    );
    run_fail(ostree().args([&format!("--repo={}", s(&repo)), "rev-parse", &absent]));

    assert_eq!(arbor_ok("rev-parse", &repo, &[unique]).trim(), c);
    assert_eq!(arbor_ok("rev-parse", &repo, &[&twin[..11]]).trim(), twin);
    assert!(arbor_ok("log", &repo, &[unique]).contains(&c));
    assert!(arbor_ok("show", &repo, &[unique]).contains(&c));
    let out = td.path().join("co");
    run_ok(
        arbor()
            .args(["checkout", "--repo", s(&repo), "-U", unique])
            .arg(&out),
    );
    assert_eq!(std::fs::read_to_string(out.join("usr/f")).unwrap(), "x");
    let dest = td.path().join("co2");
    for cmd in ["rev-parse", "log", "show", "checkout"] {
        for (rev, want) in [
            (ambiguous, format!("Refspec {ambiguous} not unique")),
            (absent.as_str(), format!("Refspec '{absent}' not found")),
        ] {
            let mut a = arbor();
            a.args([cmd, "--repo", s(&repo)]);
            if cmd == "checkout" {
                a.args(["-U", rev]).arg(&dest);
            } else {
                a.arg(rev);
            }
            let o = run_fail(&mut a);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains(&want), "{cmd} {rev}: {err}");
        }
    }
}

#[test]
fn deploy_resolves_short_checksums() {
    require_ostree();
    if needs_root("deploy_resolves_short_checksums") {
        return;
    }
    let src = source();
    let td = tempfile::tempdir().unwrap();
    let sys = td.path().join("sys");
    prepare(Tool::Arbor, &sys, &src);
    let repo = sys.join("ostree/repo");
    let twin = twin_commit(&repo, &src.v1, 10);
    for (rev, want) in [
        (
            src.v1[..10].to_string(),
            format!("Refspec {} not unique", &src.v1[..10]),
        ),
        (absent_prefix(&src.v1), "not found".to_string()),
    ] {
        let o = run_fail(arbor().args(["deploy", "--sysroot", s(&sys), "--os", "testos", &rev]));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&want), "{rev}: {err}");
    }
    std::fs::remove_file(
        repo.join("objects")
            .join(&twin[..2])
            .join(format!("{}.commit", &twin[2..])),
    )
    .unwrap();
    deploy(Tool::Arbor, &sys, &[&src.v1[..8]]);
    let status = run_ok(ostree().args(["admin", "status", &format!("--sysroot={}", s(&sys))]));
    assert!(status.contains(&src.v1), "{status}");
}

/// A tmpfs mounted on a fresh directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf) -> Tmpfs {
        std::fs::create_dir_all(&at).unwrap();
        run_ok(
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(&at),
        );
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn checkout_hardlink_refuses_another_filesystem() {
    require_ostree();
    if needs_root("checkout_hardlink_refuses_another_filesystem") {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    let repo = td.path().join("r");
    arbor_init(&repo, "bare");
    let tree = td.path().join("t");
    std::fs::create_dir_all(tree.join("d")).unwrap();
    std::fs::write(tree.join("d/f"), "content").unwrap();
    run_ok(
        arbor()
            .args(["commit", "--repo", s(&repo), "-b", "b"])
            .arg(&tree),
    );
    let mnt = Tmpfs::mount(td.path().join("mnt"));
    // ostree's -H fails here...
    run_fail(
        ostree()
            .args([&format!("--repo={}", s(&repo)), "checkout", "-H", "b"])
            .arg(mnt.0.join("o")),
    );
    // ...and so does arbor's, naming the reason, with nothing copied.
    let dest = mnt.0.join("a");
    let o = run_fail(
        arbor()
            .args(["checkout", "--repo", s(&repo), "-H", "b"])
            .arg(&dest),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("EXDEV") && err.contains("across devices"),
        "{err}"
    );
    assert!(!dest.join("d/f").exists());
    // Without -H it copies; on the same filesystem -H links.
    run_ok(
        arbor()
            .args(["checkout", "--repo", s(&repo), "b"])
            .arg(mnt.0.join("c")),
    );
    assert_eq!(
        std::fs::read_to_string(mnt.0.join("c/d/f")).unwrap(),
        "content"
    );
    let same = td.path().join("same");
    run_ok(
        arbor()
            .args(["checkout", "--repo", s(&repo), "-H", "b"])
            .arg(&same),
    );
    use std::os::unix::fs::MetadataExt;
    assert!(std::fs::metadata(same.join("d/f")).unwrap().nlink() >= 2);
    // A mount point inside a --union destination on the repository's
    // filesystem: the up-front device check passes, the link of d/f fails.
    let union = td.path().join("union");
    let inner = Tmpfs::mount(union.join("d"));
    run_fail(
        ostree()
            .args([&format!("--repo={}", s(&repo)), "checkout", "-H", "--union"])
            .args(["b", s(&union)]),
    );
    let o = run_fail(
        arbor()
            .args(["checkout", "--repo", s(&repo), "-H", "--union", "b"])
            .arg(&union),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("EXDEV") && err.contains("Hardlinking f"),
        "{err}"
    );
    assert!(!inner.0.join("f").exists());
    // Without -H the file is copied onto the inner mount.
    run_ok(
        arbor()
            .args(["checkout", "--repo", s(&repo), "--union", "b"])
            .arg(&union),
    );
    assert_eq!(
        std::fs::read_to_string(inner.0.join("f")).unwrap(),
        "content"
    );
    assert_eq!(std::fs::metadata(inner.0.join("f")).unwrap().nlink(), 1);
}

/// Regular files of `root` that are hardlinks (more than one link), by
/// path: what a checkout linked from the repository.
fn linked_files(root: &Path) -> Vec<(String, bool)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.push((rel, m.nlink() > 1));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn checkout_h_copies_empty_files_like_ostree() {
    require_ostree();
    let td = tempfile::tempdir().unwrap();
    let repo = td.path().join("r");
    arbor_init(&repo, "bare-user");
    let tree = td.path().join("t");
    std::fs::create_dir_all(tree.join("d")).unwrap();
    std::fs::write(tree.join("d/f"), "content").unwrap();
    std::fs::write(tree.join("d/empty"), "").unwrap();
    std::fs::write(tree.join("empty2"), "").unwrap();
    run_ok(
        arbor()
            .args(["commit", "--repo", s(&repo), "-b", "b"])
            .arg(&tree),
    );
    let (a, o) = (td.path().join("a"), td.path().join("o"));
    run_ok(
        arbor()
            .args(["checkout", "--repo", s(&repo), "-H", "-U", "b"])
            .arg(&a),
    );
    run_ok(
        ostree()
            .args([&format!("--repo={}", s(&repo)), "checkout", "-H", "-U", "b"])
            .arg(&o),
    );
    let linked = linked_files(&a);
    assert_eq!(
        linked,
        [
            ("d/empty".to_string(), false),
            ("d/f".to_string(), true),
            ("empty2".to_string(), false)
        ]
    );
    assert_eq!(linked, linked_files(&o), "arbor (left) vs ostree");
}

#[test]
fn deploy_links_like_ostree_admin_deploy() {
    require_ostree();
    if needs_root("deploy_links_like_ostree_admin_deploy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    run_ok(ostree().args(["init", "--mode=archive", &format!("--repo={}", s(&repo))]));
    let t = dir.path().join("tree");
    crate::sysroot::os_tree(&t, &[("a.conf", "a=1\n"), ("empty.conf", "")]);
    crate::sysroot::put(&t.join("usr/share/empty"), "");
    let v1 = crate::sysroot::ostree_commit(&repo, &t, "1.0", "1577836800");
    let src = crate::sysroot::Source {
        dir,
        repo,
        v1,
        v2: String::new(),
    };
    let base = src.dir.path().to_path_buf();
    let (sa, so) = (base.join("arbor-sysroot"), base.join("ostree-sysroot"));
    for (tool, sys) in [(Tool::Arbor, &sa), (Tool::Ostree, &so)] {
        prepare(tool, sys, &src);
        deploy(tool, sys, &["testos/stable"]);
    }
    let dep = |sys: &Path| crate::sysroot::deployment_dir(sys, &src.v1, 0);
    let linked = linked_files(&dep(&sa));
    assert!(
        linked.contains(&("usr/bin/tool".to_string(), true)),
        "{linked:?}"
    );
    assert!(
        linked.contains(&("usr/share/empty".to_string(), false)),
        "{linked:?}"
    );
    assert_eq!(linked, linked_files(&dep(&so)), "arbor (left) vs ostree");
}

#[test]
fn checkout_h_refuses_modes_that_cannot_link() {
    require_ostree();
    let td = tempfile::tempdir().unwrap();
    let tree = td.path().join("t");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("f"), "content").unwrap();
    let mut modes = vec![(
        "bare-user",
        Vec::<&str>::new(),
        "User repository mode requires user checkout mode",
    )];
    // Committing into a bare repository needs root.
    if !needs_root("checkout_h_refuses_modes_that_cannot_link (bare)") {
        modes.push((
            "bare",
            vec!["-U"],
            "Bare repository mode cannot hardlink in user checkout mode",
        ));
    }
    for (mode, flags, msg) in modes {
        let repo = td.path().join(mode);
        arbor_init(&repo, mode);
        run_ok(
            arbor()
                .args(["commit", "--repo", s(&repo), "-b", "b"])
                .arg(&tree),
        );
        let o = run_fail(
            ostree()
                .args([&format!("--repo={}", s(&repo)), "checkout", "-H"])
                .args(&flags)
                .arg("b")
                .arg(td.path().join(format!("{mode}-o"))),
        );
        let oerr = String::from_utf8_lossy(&o.stderr);
        assert!(oerr.contains(msg), "ostree: {oerr}");
        let dest = td.path().join(format!("{mode}-a"));
        let o = run_fail(
            arbor()
                .args(["checkout", "--repo", s(&repo), "-H"])
                .args(&flags)
                .arg("b")
                .arg(&dest),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(msg), "{mode}: {err}");
        assert!(!dest.join("f").exists());
        // Without -H the same checkout copies.
        run_ok(
            arbor()
                .args(["checkout", "--repo", s(&repo)])
                .args(&flags)
                .arg("b")
                .arg(td.path().join(format!("{mode}-c"))),
        );
    }
}

/// A non-root user commits a read-only file (mode 0400, as a real OS's
/// `shadow` is stored) into a bare-user repository: `user.ostreemeta` is
/// set before the mode takes write permission away, as ostree does.
#[test]
fn non_root_bare_user_commit_of_a_read_only_file() {
    require_ostree();
    if !rustix::process::geteuid().is_root() {
        // Needs `runuser` to become an unprivileged user.
        return;
    }
    let td = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        td.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o777),
    )
    .unwrap();
    let script = format!(
        "set -e; cd {dir}; mkdir -p t/etc; echo secret > t/etc/shadow; chmod 0400 t/etc/shadow; \
         {arbor} init --repo r --mode bare-user; {arbor} commit --repo r -b b t",
        dir = s(td.path()),
        arbor = env!("CARGO_BIN_EXE_arbor")
    );
    run_ok(std::process::Command::new("runuser").args(["-u", "nobody", "--", "sh", "-c", &script]));
    let repo = td.path().join("r");
    ostree_ok("fsck", &repo, &[]);
    let ls = ostree_ok("ls", &repo, &["b", "/etc/shadow"]);
    assert!(ls.starts_with("-00400 "), "{ls}");
}
