//! Incomplete or corrupt extensions, verification, and size: deep and
//! wide trees.

use std::time::Instant;

use arbor_format::{Commit, DirTree, DirTreeDir, DirTreeFile, Metadata};

use arbor_repo::objects::MAX_METADATA_SIZE;

use super::*;
use crate::extensions::verify::verify_commit;

/// Path of an object file in the fixture's repository.
fn object_path(fx: &Fx, t: ObjectType, c: &Checksum) -> std::path::PathBuf {
    fx.repo
        .path()
        .join("objects")
        .join(fx.repo.object_relpath(t, c))
}

fn file_checksum(fx: &Fx, commit: &Checksum, path: &str) -> Checksum {
    Checksum::from_hex(&fx.file_of(commit, path)).unwrap()
}

#[test]
fn corrupt_dirtree_is_refused() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let ext = fx.commit("f usr/share/tool/deep/x x\nf usr/bin/t t");
    let (tree, _) = fx.dir_of(&ext, "/usr/share/tool");
    let p = object_path(&fx, ObjectType::DirTree, &tree);
    std::fs::remove_file(&p).unwrap();
    // Valid dirtree bytes, but not the ones the name promises.
    std::fs::write(&p, DirTree::default().encode()).unwrap();
    let e = fx.compose_err(&base, &[("t", ext)]);
    assert!(
        e.contains(&format!("Corrupted dirtree object {tree}")),
        "{e}"
    );
    assert!(e.contains("At /usr/share/tool"), "{e}");
    let e = format!("{:#}", verify_commit(&fx.repo, &ext).unwrap_err());
    assert!(
        e.contains(&format!("Corrupted dirtree object {tree}")),
        "{e}"
    );
}

#[test]
fn corrupt_dirmeta_is_refused() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let ext = fx.commit("f usr/share/tool/x x\nm usr/share/tool 0750");
    let (_, meta) = fx.dir_of(&ext, "/usr/share/tool");
    let p = object_path(&fx, ObjectType::DirMeta, &meta);
    let good = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    let mut bad = good.clone();
    bad[11] ^= 0o020; // 0750 -> 0770
    std::fs::write(&p, bad).unwrap();
    let e = fx.compose_err(&base, &[("t", ext)]);
    assert!(
        e.contains(&format!("Corrupted dirmeta object {meta}")),
        "{e}"
    );
}

#[test]
fn missing_file_object_is_refused() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let ext = fx.commit("f usr/bin/t t\nf usr/bin/u u");
    let c = file_checksum(&fx, &ext, "/usr/bin/u");
    std::fs::remove_file(object_path(&fx, ObjectType::File, &c)).unwrap();
    let e = fx.compose_err(&base, &[("t", ext)]);
    assert!(
        e.contains(&format!("/usr/bin/u: file object {c} is missing")),
        "{e}"
    );
    let e = format!("{:#}", verify_commit(&fx.repo, &ext).unwrap_err());
    assert!(
        e.contains(&format!("/usr/bin/u: missing file object {c}")),
        "{e}"
    );
}

#[test]
fn partial_commit_is_refused() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let ext = fx.commit("f usr/bin/t t");
    let state = fx.repo.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join(format!("{ext}.commitpartial")), "").unwrap();
    let e = fx.compose_err(&base, &[("t", ext)]);
    assert!(e.contains(&format!("Commit {ext} is partial")), "{e}");
    assert!(verify_commit(&fx.repo, &ext).is_err());
    std::fs::remove_file(state.join(format!("{ext}.commitpartial"))).unwrap();
    std::fs::write(state.join(format!("{base}.commitpartial")), "").unwrap();
    let e = fx.compose_err(&base, &[("t", ext)]);
    assert!(e.contains(&format!("Commit {base} is partial")), "{e}");
}

#[test]
fn verify_commit_finds_corrupted_file_objects() {
    let fx = Fx::bare_user();
    let ext = fx.commit("f usr/bin/t tool\nf usr/lib/x/y y\nl usr/bin/l t");
    verify_commit(&fx.repo, &ext).unwrap();
    let c = file_checksum(&fx, &ext, "/usr/lib/x/y");
    // Same length, other bytes; the object's xattrs are kept.
    std::fs::OpenOptions::new()
        .write(true)
        .open(object_path(&fx, ObjectType::File, &c))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"z"))
        .unwrap();
    let e = format!("{:#}", verify_commit(&fx.repo, &ext).unwrap_err());
    assert!(
        e.contains(&format!("/usr/lib/x/y: corrupted file object {c}")),
        "{e}"
    );
    // Composition itself reads no file content: that is verify's job.
    let base = fx.commit(BASE);
    fx.compose(&base, &[("t", ext)]).unwrap();
}

/// Writes a commit whose tree is `usr/deep/d/d/.../d` (`depth` levels
/// of `d`) holding one file `name`, straight as objects.
fn deep_commit(fx: &Fx, depth: usize, name: &str, file: Checksum, meta: Checksum) -> Checksum {
    deep_commit_named(fx, depth, "d", name, file, meta)
}

/// [`deep_commit`] with directories named `dir` instead of `d`.
fn deep_commit_named(
    fx: &Fx,
    depth: usize,
    dir_name: &str,
    name: &str,
    file: Checksum,
    meta: Checksum,
) -> Checksum {
    let lock = fx.repo.lock(false).unwrap();
    let txn = Transaction::begin(&lock).unwrap();
    let write = |t: &DirTree| {
        txn.write_metadata(ObjectType::DirTree, &t.encode())
            .unwrap()
    };
    let dir = |name: &str, tree| DirTree {
        files: vec![],
        dirs: vec![DirTreeDir {
            name: name.into(),
            tree,
            meta,
        }],
    };
    let mut tree = write(&DirTree {
        files: vec![DirTreeFile {
            name: name.into(),
            checksum: file,
        }],
        dirs: vec![],
    });
    for _ in 0..depth {
        tree = write(&dir(dir_name, tree));
    }
    let root = write(&dir("usr", write(&dir("deep", tree))));
    let commit = Commit {
        metadata: Metadata::new(),
        parent: None,
        related: vec![],
        subject: "deep".into(),
        body: String::new(),
        timestamp: TS,
        root_tree: root,
        root_meta: meta,
    };
    let c = txn
        .write_metadata(ObjectType::Commit, &commit.encode())
        .unwrap();
    txn.commit(&[]).unwrap();
    c
}

#[test]
fn a_2000_deep_tree_composes() {
    let fx = Fx::bare_user();
    let seed = fx.commit("f usr/x one\nf usr/y two");
    let meta = load_commit(&fx.repo, &seed).unwrap().root_meta;
    let (one, two) = (
        file_checksum(&fx, &seed, "/usr/x"),
        file_checksum(&fx, &seed, "/usr/y"),
    );
    let base = deep_commit(&fx, 2000, "one", one, meta);
    let ext = deep_commit(&fx, 2000, "two", two, meta);
    // On a small stack, as a thread of a deployment tool might have.
    let c = std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn_scoped(s, || fx.compose(&base, &[("deep", ext)]).unwrap())
            .unwrap()
            .join()
            .unwrap()
    });
    // Every directory from / down to the leaf is where the trees meet.
    assert_eq!(c.dirtrees, 2000 + 3);
    let leaf = format!("/usr/deep{}", "/d".repeat(2000));
    let p = fx.paths(&c.commit);
    assert!(p.contains_key(&format!("{leaf}/one")));
    assert!(p.contains_key(&format!("{leaf}/two")));
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn_scoped(s, || verify_commit(&fx.repo, &c.commit).unwrap())
            .unwrap()
            .join()
            .unwrap()
    });
}

#[test]
fn a_50000_file_extension_composes_fast() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let tree = TempDir::new_in(fx.dir.path()).unwrap();
    write_tree(tree.path(), "d usr/share/many");
    for d in 0..100 {
        let dir = tree.path().join(format!("usr/share/many/d{d:03}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..500 {
            std::fs::write(dir.join(format!("f{f:03}")), format!("{d}/{f}")).unwrap();
        }
    }
    chmod_dirs(tree.path());
    let opts = CommitOptions {
        timestamp: Some(TS),
        no_bindings: true,
        ..Default::default()
    };
    let lock = fx.repo.lock(false).unwrap();
    let ext = commit(&lock, CommitSource::Dir(tree.path()), &opts, &NullProgress).unwrap();
    drop(lock);
    let start = Instant::now();
    let c = fx.compose(&base, &[("many", ext)]).unwrap();
    let took = start.elapsed();
    eprintln!("composing a 50,000-file extension took {took:?}");
    assert!(took.as_secs() < 10, "{took:?}");
    // Only /, /usr and /usr/share were where the trees met.
    assert_eq!(c.dirtrees, 3);
    assert_eq!(
        fx.dir_of(&c.commit, "/usr/share/many"),
        fx.dir_of(&ext, "/usr/share/many")
    );
}

#[test]
fn a_deep_tree_of_long_names_is_refused_quickly() {
    let fx = Fx::bare_user();
    let seed = fx.commit("f usr/x one\nf usr/y two");
    let meta = load_commit(&fx.repo, &seed).unwrap().root_meta;
    let (one, two) = (
        file_checksum(&fx, &seed, "/usr/x"),
        file_checksum(&fx, &seed, "/usr/y"),
    );
    let long = "n".repeat(255);
    let base = deep_commit_named(&fx, 2000, &long, "one", one, meta);
    let ext = deep_commit_named(&fx, 2000, &long, "two", two, meta);
    let start = Instant::now();
    let e = fx.compose_err(&base, &[("deep", ext)]);
    let took = start.elapsed();
    eprintln!("refusing a 2000-deep tree of 255-byte names took {took:?}");
    assert!(
        e.contains("path longer than 4095 bytes (PATH_MAX is 4096 with the NUL)"),
        "{}",
        &e[..e.len().min(2000)]
    );
    assert!(
        e.contains(&format!("/usr/deep/{}", &long[..100])),
        "{}",
        &e[..e.len().min(2000)]
    );
    assert!(
        e.len() < 2000,
        "the error shows the start of the path only: {}",
        e.len()
    );
    assert!(took.as_secs() < 5, "{took:?}");
    let e = format!("{:#}", verify_commit(&fx.repo, &ext).unwrap_err());
    assert!(
        e.contains("path longer than 4095 bytes (PATH_MAX is 4096 with the NUL)"),
        "{}",
        &e[..e.len().min(2000)]
    );
    // 15 levels of 255 bytes (under 4096) are fine.
    let base = deep_commit_named(&fx, 15, &long, "one", one, meta);
    let ext = deep_commit_named(&fx, 15, &long, "two", two, meta);
    fx.compose(&base, &[("deep", ext)]).unwrap();
}

/// `PATH_MAX` counts the NUL: a directory path of 4095 bytes is the
/// longest accepted.
#[test]
fn a_path_of_path_max_bytes_is_refused() {
    use crate::extensions::verify::child_path;
    let parent = format!("/{}", "p".repeat(4000));
    let name = |total: usize| "n".repeat(total - parent.len() - 1);
    assert_eq!(child_path(&parent, &name(4095)).unwrap().len(), 4095);
    let e = format!("{:#}", child_path(&parent, &name(4096)).unwrap_err());
    assert!(e.contains("path longer than 4095 bytes"), "{e}");
}

#[test]
fn a_composed_dirtree_over_the_object_size_limit_is_refused() {
    use crate::extensions::compose::plan_with_limit;
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let spec: String = (0..200)
        .map(|i| format!("f usr/lib/many-{i:03} {i}\n"))
        .collect();
    let ext = fx.commit(&spec);
    let e = format!(
        "{:#}",
        plan_with_limit(&fx.repo, &base, &exts(&[("many", ext)]), 4096).unwrap_err()
    );
    assert!(
        e.contains("/usr/lib: the composed directory would be a dirtree object of"),
        "{e}"
    );
    assert!(e.contains("more than the 4096 bytes"), "{e}");
    // The real limit (128 MiB) lets it through.
    plan_with_limit(&fx.repo, &base, &exts(&[("many", ext)]), MAX_METADATA_SIZE).unwrap();
    fx.compose(&base, &[("many", ext)]).unwrap();
}

/// Commits `spec` plus `count` files `PREFIX-N` in the directory `dir`
/// (with real ostree, which is much faster than a debug build).
fn commit_with_many(fx: &Fx, spec: &str, dir: &str, prefix: &str, count: usize) -> Checksum {
    let tree = TempDir::new_in(fx.dir.path()).unwrap();
    write_tree(tree.path(), spec);
    let d = tree.path().join(dir);
    std::fs::create_dir_all(&d).unwrap();
    for f in 0..count {
        std::fs::write(d.join(format!("{prefix}-{f:05}")), format!("{prefix}/{f}")).unwrap();
    }
    chmod_dirs(tree.path());
    let out = fx.ostree(&[
        "commit",
        "--orphan",
        "--no-bindings",
        "--owner-uid=0",
        "--owner-gid=0",
        &format!("--timestamp=@{TS}"),
        "--subject=many",
        "--fsync=false",
        &format!("--tree=dir={}", tree.path().display()),
    ]);
    Checksum::from_hex(out.trim()).unwrap()
}

#[test]
fn a_50000_file_extension_into_a_base_directory_composes_fast_like_ostree() {
    let fx = Fx::bare_user();
    let base = commit_with_many(&fx, BASE, "usr/lib/x", "base", 5_000);
    let ext = commit_with_many(&fx, "", "usr/lib/x", "ext", 50_000);
    let start = Instant::now();
    let c = fx.compose(&base, &[("many", ext)]).unwrap();
    let took = start.elapsed();
    eprintln!("composing 50,000 files into a 5,000-file base directory took {took:?}");
    assert!(took.as_secs() < 20, "{took:?}");
    // /, /usr, /usr/lib, /usr/lib/x.
    assert_eq!(c.dirtrees, 4);
    let theirs = fx.ostree_compose(&base, &[("many", ext)]);
    assert_eq!(c.commit, theirs, "composed commit differs from ostree's");
    let x = load_dirtree(&fx.repo, &fx.dir_of(&c.commit, "/usr/lib/x").0).unwrap();
    assert_eq!(x.files.len(), 55_000);
}
