//! Unit tests of the extension engine: composition checked against real
//! `ostree commit --tree=ref=...`, the composition rules, the sysext
//! release checks and verification.
//!
//! Trees are written from a tiny text format (one entry a line):
//! `f PATH CONTENT` (`\n` in CONTENT is a newline), `l PATH TARGET`, `d PATH`, then attributes applied
//! after every entry exists: `m PATH MODE` (octal), `o PATH UID GID`,
//! `x PATH NAME VALUE` (an xattr). Every directory is 0755 unless an `m`
//! line says otherwise.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::Result;
use arbor_format::metadata::Value;
use arbor_format::{Checksum, ObjectType, RepoMode};
use arbor_repo::commit::{commit, CommitOptions, CommitSource};
use arbor_repo::objects::{load_commit, load_dirtree};
use arbor_repo::txn::Transaction;
use arbor_repo::{NullProgress, Repo};
use arbor_sysroot::layered::ExtensionRef;
use tempfile::TempDir;

use super::compose::{compose, plan, Composed, OVERRIDES_KEY};

mod integrity;
mod release_tests;
mod rules;

/// The fixtures' commit timestamp.
const TS: u64 = 1_700_000_000;

/// A repository in a temporary directory.
struct Fx {
    dir: TempDir,
    repo: Repo,
}

impl Fx {
    fn new(mode: RepoMode) -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(&dir.path().join("repo"), mode).unwrap();
        Fx { dir, repo }
    }

    fn bare_user() -> Fx {
        Fx::new(RepoMode::BareUser)
    }

    /// Commits a tree written from `spec` (module docs).
    fn commit(&self, spec: &str) -> Checksum {
        self.commit_with(spec, None, &[])
    }

    /// Commits a tree with a `version` and an overrides list.
    fn commit_with(&self, spec: &str, version: Option<&str>, overrides: &[&str]) -> Checksum {
        let tree = TempDir::new_in(self.dir.path()).unwrap();
        write_tree(tree.path(), spec);
        let opts = CommitOptions {
            subject: "fixture".into(),
            timestamp: Some(TS),
            no_bindings: true,
            metadata_strings: version
                .map(|v| vec![("version".to_string(), v.to_string())])
                .unwrap_or_default(),
            ..Default::default()
        };
        let lock = self.repo.lock(false).unwrap();
        let c = commit(&lock, CommitSource::Dir(tree.path()), &opts, &NullProgress).unwrap();
        if overrides.is_empty() {
            return c;
        }
        let list = overrides.iter().map(|s| s.to_string()).collect();
        self.with_metadata(&c, OVERRIDES_KEY, Value::StrArray(list))
    }

    /// A copy of commit `c` with one more metadata key.
    fn with_metadata(&self, c: &Checksum, key: &str, v: Value) -> Checksum {
        let mut commit = load_commit(&self.repo, c).unwrap();
        commit.metadata.push(key, v);
        let lock = self.repo.lock(false).unwrap();
        let txn = Transaction::begin(&lock).unwrap();
        let n = txn
            .write_metadata(ObjectType::Commit, &commit.encode())
            .unwrap();
        txn.commit(&[]).unwrap();
        n
    }

    fn compose(&self, base: &Checksum, list: &[(&str, Checksum)]) -> Result<Composed> {
        let lock = self.repo.lock(false).unwrap();
        compose(&lock, base, &exts(list))
    }

    fn plan(&self, base: &Checksum, list: &[(&str, Checksum)]) -> Result<Composed> {
        plan(&self.repo, base, &exts(list))
    }

    /// The error of a composition that must fail, with its whole chain.
    fn compose_err(&self, base: &Checksum, list: &[(&str, Checksum)]) -> String {
        match self.compose(base, list) {
            Ok(c) => panic!("composition succeeded: {c:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// Runs `ostree --repo=R ARGS...`, which must succeed; its stdout.
    fn ostree(&self, args: &[&str]) -> String {
        let repo = format!("--repo={}", self.repo.path().display());
        let out = Command::new("ostree")
            .args(&args[..1])
            .arg(repo)
            .args(&args[1..])
            .output()
            .expect("running ostree");
        assert!(
            out.status.success(),
            "ostree {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// What real ostree commits for the same composition (see the plan).
    fn ostree_compose(&self, base: &Checksum, list: &[(&str, Checksum)]) -> Checksum {
        let trees: Vec<String> = list
            .iter()
            .map(|(_, c)| format!("--tree=ref={c}"))
            .collect();
        self.ostree_compose_trees(base, list, &trees)
    }

    /// [`Fx::ostree_compose`]'s commit (metadata of `list`) of the base
    /// and the `trees` arguments (`--tree=...`) given.
    fn ostree_compose_trees(
        &self,
        base: &Checksum,
        list: &[(&str, Checksum)],
        trees: &[String],
    ) -> Checksum {
        let b = load_commit(&self.repo, base).unwrap();
        let names: Vec<&str> = list.iter().map(|(n, _)| *n).collect();
        let entries: Vec<String> = list.iter().map(|(n, c)| format!("'{n}:{c}'")).collect();
        let mut args = vec![
            "commit".to_string(),
            "--no-bindings".into(),
            "--orphan".into(),
            format!("--parent={base}"),
            format!("--timestamp=@{}", b.timestamp),
            format!("--subject=Extensions: {}", names.join(", ")),
        ];
        if let Some(v) = b.version() {
            args.push(format!("--add-metadata-string=version={v}"));
        }
        args.push(format!("--add-metadata-string=arbor.base-commit={base}"));
        args.push(format!(
            "--add-metadata=arbor.extensions=[{}]",
            entries.join(",")
        ));
        args.push(format!("--tree=ref={base}"));
        args.extend(trees.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Checksum::from_hex(self.ostree(&args).trim()).unwrap()
    }

    /// Composes, checks the result equals real ostree's, and that
    /// `ostree fsck` is clean. Returns the composition.
    fn assert_like_ostree(&self, base: &Checksum, list: &[(&str, Checksum)]) -> Composed {
        let ours = self.compose(base, list).unwrap();
        let theirs = self.ostree_compose(base, list);
        assert_eq!(ours.commit, theirs, "composed commit differs from ostree's");
        self.ostree(&["fsck"]);
        ours
    }

    /// Every path of a commit: `d` for a directory, else the file
    /// object's checksum.
    fn paths(&self, commit: &Checksum) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let root = load_commit(&self.repo, commit).unwrap().root_tree;
        let mut stack = vec![(root, String::new())];
        while let Some((tree, path)) = stack.pop() {
            let dt = load_dirtree(&self.repo, &tree).unwrap();
            for f in &dt.files {
                out.insert(format!("{path}/{}", f.name), f.checksum.to_hex());
            }
            for d in &dt.dirs {
                let p = format!("{path}/{}", d.name);
                out.insert(p.clone(), "d".into());
                stack.push((d.tree, p));
            }
        }
        out
    }

    /// The (dirtree, dirmeta) checksums of a directory of a commit.
    fn dir_of(&self, commit: &Checksum, path: &str) -> (Checksum, Checksum) {
        let c = load_commit(&self.repo, commit).unwrap();
        let mut cur = (c.root_tree, c.root_meta);
        for comp in path.split('/').filter(|s| !s.is_empty()) {
            let dt = load_dirtree(&self.repo, &cur.0).unwrap();
            let d = dt.dirs.iter().find(|d| d.name == comp).unwrap();
            cur = (d.tree, d.meta);
        }
        cur
    }

    /// The file object at `path` of a commit.
    fn file_of(&self, commit: &Checksum, path: &str) -> String {
        self.paths(commit)
            .remove(path)
            .unwrap_or_else(|| panic!("{path} not in {commit}"))
    }
}

fn exts(list: &[(&str, Checksum)]) -> Vec<ExtensionRef> {
    list.iter()
        .map(|(n, c)| ExtensionRef {
            name: n.to_string(),
            commit: *c,
        })
        .collect()
}

/// Writes a tree from `spec` (module docs) under `root`.
fn write_tree(root: &Path, spec: &str) {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    let mut attrs = Vec::new();
    for line in spec.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (kind, rest) = line.split_once(' ').unwrap();
        let (path, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        let p = root.join(path);
        match kind {
            "f" | "l" => {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                if kind == "f" {
                    std::fs::write(&p, arg.replace("\\n", "\n")).unwrap();
                    chmod(&p, 0o644);
                } else {
                    std::os::unix::fs::symlink(arg, &p).unwrap();
                }
            }
            "d" => std::fs::create_dir_all(&p).unwrap(),
            _ => attrs.push((kind, p, arg)),
        }
    }
    chmod_dirs(root);
    for (kind, p, arg) in attrs {
        match kind {
            "m" => chmod(&p, u32::from_str_radix(arg, 8).unwrap()),
            "o" => {
                let (u, g) = arg.split_once(' ').unwrap();
                std::os::unix::fs::lchown(&p, u.parse().ok(), g.parse().ok()).unwrap();
            }
            "x" => {
                let (n, v) = arg.split_once(' ').unwrap();
                rustix::fs::lsetxattr(&p, n, v.as_bytes(), rustix::fs::XattrFlags::empty())
                    .unwrap();
            }
            other => panic!("unknown spec line kind {other:?}"),
        }
    }
}

fn chmod_dirs(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            chmod_dirs(&e.path());
        }
    }
}

/// A small base: a few directories, files, symlinks, an os-release.
const BASE: &str = "
    f usr/lib/os-release ID=debian\\nVERSION_ID=12
    f usr/lib/a/b/c/d/data base-data
    f usr/lib/libfoo.so.1 foo
    l usr/lib/libfoo.so libfoo.so.1
    f usr/bin/sh shell
    f usr/share/doc/base/README readme
    f usr/etc/base.conf base-conf
    d var
    d etc
    d opt
";

#[test]
fn like_ostree_disjoint_trees() {
    let fx = Fx::bare_user();
    let base = fx.commit_with(BASE, Some("12.1"), &[]);
    let ext = fx.commit("f opt/vendor/bin/tool tool");
    let c = fx.assert_like_ostree(&base, &[("vendor", ext)]);
    assert_eq!(fx.file_of(&c.commit, "/opt/vendor/bin/tool").len(), 64);
    // The base's directories the extension does not touch are referenced,
    // not rewritten.
    assert_eq!(fx.dir_of(&c.commit, "/usr"), fx.dir_of(&base, "/usr"));
}

#[test]
fn like_ostree_nested_new_directories() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let ext = fx.commit(
        "f usr/share/tool/x/y/z/deep.txt deep
         f usr/share/tool/top.txt top
         d usr/share/tool/empty",
    );
    fx.assert_like_ostree(&base, &[("tool", ext)]);
}

#[test]
fn like_ostree_files_added_to_an_existing_deep_directory() {
    let fx = Fx::bare_user();
    let base = fx.commit_with(BASE, Some("12.1"), &[]);
    let ext = fx.commit(
        "f usr/lib/a/b/c/d/more more
         f usr/lib/a/b/c/d/e/deeper deeper",
    );
    let c = fx.assert_like_ostree(&base, &[("more", ext)]);
    let p = fx.paths(&c.commit);
    assert!(p.contains_key("/usr/lib/a/b/c/d/data"));
    assert!(p.contains_key("/usr/lib/a/b/c/d/more"));
    assert!(p.contains_key("/usr/lib/a/b/c/d/e/deeper"));
}

#[test]
fn like_ostree_symlinks() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let ext = fx.commit(
        "f usr/lib/libbar.so.2 bar
         l usr/lib/libbar.so libbar.so.2
         l usr/bin/bar-tool ../lib/libbar.so
         l usr/lib/libfoo.so libfoo.so.1",
    );
    fx.assert_like_ostree(&base, &[("bar", ext)]);
}

#[test]
fn like_ostree_two_extensions() {
    let fx = Fx::bare_user();
    let base = fx.commit_with(BASE, Some("12.1"), &[]);
    let a = fx.commit(
        "f usr/bin/a a
         f usr/share/tools/a.txt a",
    );
    let b = fx.commit(
        "f usr/bin/b b
         f usr/share/tools/b.txt b
         f opt/b/bin/b b",
    );
    let c = fx.assert_like_ostree(&base, &[("a", a), ("b", b)]);
    let p = fx.paths(&c.commit);
    for f in [
        "/usr/bin/a",
        "/usr/bin/b",
        "/usr/share/tools/a.txt",
        "/opt/b/bin/b",
    ] {
        assert!(p.contains_key(f), "{f}");
    }
    assert_eq!(
        fx.ostree(&[
            "show",
            "--print-metadata-key=arbor.extensions",
            &c.commit.to_hex()
        ])
        .trim(),
        format!("['a:{a}', 'b:{b}']")
    );
}

#[test]
fn like_ostree_override() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let ext = fx.commit_with(
        "f usr/lib/libfoo.so.1 patched
         f usr/bin/sh other-shell",
        None,
        &["/usr/lib/libfoo.so.1", "/usr/bin"],
    );
    let c = fx.assert_like_ostree(&base, &[("patch", ext)]);
    assert_eq!(
        fx.file_of(&c.commit, "/usr/bin/sh"),
        fx.file_of(&ext, "/usr/bin/sh")
    );
}

#[test]
fn like_ostree_xattrs_in_bare_user() {
    let fx = Fx::bare_user();
    let spec = |extra: &str| {
        format!(
            "{BASE}
             {extra}
             x usr user.label usr-label
             x usr/lib user.label lib-label
             x usr/lib/libfoo.so.1 user.file f"
        )
    };
    let base = fx.commit(&spec(""));
    let ext = fx.commit(
        "f usr/lib/extra.so extra
         f usr/lib/labelled/x x
         x usr user.label usr-label
         x usr/lib user.label lib-label
         x usr/lib/labelled user.label other
         x usr/lib/extra.so user.file e",
    );
    let meta = arbor_repo::objects::load_dirmeta(&fx.repo, &fx.dir_of(&ext, "/usr/lib").1);
    assert_eq!(
        meta.unwrap().xattrs.len(),
        1,
        "the fixture has dirmeta xattrs"
    );
    let c = fx.assert_like_ostree(&base, &[("labels", ext)]);
    assert_eq!(
        fx.dir_of(&c.commit, "/usr/lib/labelled"),
        fx.dir_of(&ext, "/usr/lib/labelled")
    );
}

#[test]
fn deterministic_across_repositories() {
    // One repository commits base, a, b in that order and composes once.
    let one = Fx::bare_user();
    let base1 = one.commit_with(BASE, Some("12.1"), &[]);
    let a1 = one.commit("f usr/bin/a a");
    let b1 = one.commit("f usr/lib/a/b/new b");
    let c1 = one.compose(&base1, &[("a", a1), ("b", b1)]).unwrap();
    // The other, a different repository mode, builds its own history: b
    // first, unrelated commits, an older base, a, then the base; it
    // composes a alone and a composition on the older base first.
    let two = Fx::new(RepoMode::Archive);
    let b2 = two.commit("f usr/lib/a/b/new b");
    two.commit("f usr/bin/unrelated u");
    let old_base = two.commit_with(&format!("{BASE}\nf usr/bin/old old"), Some("12.0"), &[]);
    let a2 = two.commit("f usr/bin/a a");
    two.compose(&old_base, &[("a", a2)]).unwrap();
    let base2 = two.commit_with(BASE, Some("12.1"), &[]);
    two.compose(&base2, &[("a", a2)]).unwrap();
    let c2 = two.compose(&base2, &[("a", a2), ("b", b2)]).unwrap();
    assert_eq!((base1, a1, b1), (base2, a2, b2));
    assert_eq!(c1, c2);
    // Byte for byte, and every dirtree it made.
    let read =
        |fx: &Fx, t, c: &Checksum| arbor_repo::objects::read_metadata(&fx.repo, t, c).unwrap();
    assert_eq!(
        read(&one, ObjectType::Commit, &c1.commit),
        read(&two, ObjectType::Commit, &c2.commit)
    );
    assert_eq!(one.paths(&c1.commit), two.paths(&c2.commit));
    for dir in ["/", "/usr", "/usr/lib", "/usr/lib/a", "/usr/lib/a/b"] {
        assert_eq!(
            one.dir_of(&c1.commit, dir),
            two.dir_of(&c2.commit, dir),
            "{dir}"
        );
    }
}

#[test]
fn only_directories_where_trees_meet_get_new_dirtrees() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let ext = fx.commit(
        "f usr/lib/a/new new
         f usr/lib/brand/new/dir/x x
         f usr/share/doc/base/README readme",
    );
    let c = fx.compose(&base, &[("x", ext)]).unwrap();
    // /, /usr, /usr/lib, /usr/lib/a: nothing else was loaded (the
    // extension's /usr/share is the base's, so it was not either).
    assert_eq!(c.dirtrees, 4);
    assert_eq!(
        fx.dir_of(&c.commit, "/usr/lib/a/b"),
        fx.dir_of(&base, "/usr/lib/a/b")
    );
    assert_eq!(
        fx.dir_of(&c.commit, "/usr/share"),
        fx.dir_of(&base, "/usr/share")
    );
    assert_eq!(fx.dir_of(&c.commit, "/var"), fx.dir_of(&base, "/var"));
    assert_eq!(
        fx.dir_of(&c.commit, "/usr/lib/brand"),
        fx.dir_of(&ext, "/usr/lib/brand")
    );
}

#[test]
fn compose_writes_commit_and_ref_plan_writes_nothing() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let ext = fx.commit("f usr/bin/t t");
    let planned = fx.plan(&base, &[("t", ext)]).unwrap();
    assert!(!fx
        .repo
        .has_object(ObjectType::Commit, &planned.commit)
        .unwrap());
    let refs = arbor_repo::refs::list_refs(&fx.repo).unwrap();
    assert!(refs.is_empty(), "{refs:?}");
    let done = fx.compose(&base, &[("t", ext)]).unwrap();
    assert_eq!(done, planned);
    assert_eq!(
        arbor_repo::refs::list_refs(&fx.repo).unwrap(),
        vec![
            (format!("arbor/bases/{base}"), base),
            (format!("arbor/composed/{}", done.commit), done.commit)
        ]
    );
    let commit = load_commit(&fx.repo, &done.commit).unwrap();
    assert_eq!(commit.parent, Some(base));
    assert_eq!(commit.body, "");
    assert_eq!(commit.subject, "Extensions: t");
    assert!(commit.related.is_empty());
    assert_eq!(done.layers.base, base);
    assert_eq!(done.layers.extensions, exts(&[("t", ext)]));
    let layers = arbor_sysroot::layered::Layers::from_commit(&commit).unwrap();
    assert_eq!(layers, Some(done.layers.clone()));
}

#[test]
fn empty_list_is_the_base_and_writes_nothing() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let before = fx.paths(&base);
    let c = fx.compose(&base, &[]).unwrap();
    assert_eq!(c.commit, base);
    assert_eq!(c.layers.extensions, vec![]);
    assert_eq!(c.dirtrees, 0);
    assert!(arbor_repo::refs::list_refs(&fx.repo).unwrap().is_empty());
    assert_eq!(fx.paths(&base), before);
}

#[test]
fn composing_again_writes_only_what_is_missing() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let ext = fx.commit("f usr/bin/t t");
    let done = fx.compose(&base, &[("t", ext)]).unwrap();
    let refname = format!("arbor/composed/{}", done.commit);
    let objects = fx.dir.path().join("repo/objects");
    let (usr_tree, _) = fx.dir_of(&done.commit, "/usr");
    let hex = usr_tree.to_hex();
    let usr_path = objects
        .join(&hex[..2])
        .join(format!("{}.dirtree", &hex[2..]));
    // Complete: composing again changes nothing.
    assert_eq!(fx.compose(&base, &[("t", ext)]).unwrap(), done);
    let all_refs = vec![
        (format!("arbor/bases/{base}"), base),
        (refname.clone(), done.commit),
    ];
    let heads = fx.dir.path().join("repo/refs/heads");
    // A lost ref (either), then a lost dirtree, are written again.
    std::fs::remove_file(heads.join(&refname)).unwrap();
    assert_eq!(fx.compose(&base, &[("t", ext)]).unwrap(), done);
    assert_eq!(arbor_repo::refs::list_refs(&fx.repo).unwrap(), all_refs);
    std::fs::remove_file(heads.join(format!("arbor/bases/{base}"))).unwrap();
    assert_eq!(fx.compose(&base, &[("t", ext)]).unwrap(), done);
    assert_eq!(arbor_repo::refs::list_refs(&fx.repo).unwrap(), all_refs);
    std::fs::remove_file(&usr_path).unwrap();
    assert_eq!(fx.compose(&base, &[("t", ext)]).unwrap(), done);
    assert!(usr_path.exists());
    assert!(fx.paths(&done.commit).contains_key("/usr/bin/t"));
}
