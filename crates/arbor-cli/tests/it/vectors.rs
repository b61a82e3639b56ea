//! Byte-for-byte reproduction of the repository the real ostree made for
//! the test vectors (testdata/vectors/repo-archive.tar.gz): same objects,
//! same bytes, including the compressed `.filez` payloads.

use std::collections::BTreeMap;
use std::path::Path;

use tempfile::TempDir;

use crate::util::{
    arbor_commit_vector, arbor_init, extract_vector_repo, make_vector_tree, VECTOR_COMMIT,
};

/// Every object file under `objects/`, relative path → bytes.
fn objects(repo: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for d in std::fs::read_dir(repo.join("objects")).unwrap() {
        let d = d.unwrap();
        for f in std::fs::read_dir(d.path()).unwrap() {
            let f = f.unwrap();
            let rel = format!(
                "{}/{}",
                d.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            );
            out.insert(rel, std::fs::read(f.path()).unwrap());
        }
    }
    out
}

#[test]
fn archive_repo_is_byte_identical_to_ostree() {
    let td = TempDir::new().unwrap();
    let theirs = extract_vector_repo(td.path());
    let tree = td.path().join("tree");
    make_vector_tree(&tree);
    let ours = td.path().join("ours");
    arbor_init(&ours, "archive");
    assert_eq!(arbor_commit_vector(&ours, &tree, &[]), VECTOR_COMMIT);
    let mut expected = objects(&theirs);
    // The signed detached metadata was added by `ostree sign`, not commit.
    let meta: Vec<String> = expected
        .keys()
        .filter(|k| k.ends_with(".commitmeta"))
        .cloned()
        .collect();
    assert_eq!(meta.len(), 1);
    for k in meta {
        expected.remove(&k);
    }
    let actual = objects(&ours);
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>(),
        "different object sets"
    );
    assert!(expected.keys().filter(|k| k.ends_with(".filez")).count() >= 10);
    for (k, v) in &expected {
        assert!(actual[k] == *v, "objects/{k} differs from ostree's");
    }
    assert_eq!(
        std::fs::read_to_string(ours.join("config")).unwrap(),
        std::fs::read_to_string(theirs.join("config")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(ours.join("refs/heads/example/x86_64/stable")).unwrap(),
        std::fs::read_to_string(theirs.join("refs/heads/example/x86_64/stable")).unwrap()
    );
}

/// testdata/vectors/README.md's file table names only files that exist
/// (issue 11: it listed generator scripts the repository did not have).
#[test]
fn vectors_readme_names_only_existing_files() {
    let dir = crate::util::vectors();
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let table = readme
        .split("## Files")
        .nth(1)
        .and_then(|t| t.split("\n## ").next())
        .expect("a Files section");
    let mut named = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = row.split(" | ").next().unwrap();
        // Each `NAME ARGS` span names one file (or a directory, NAME/).
        for span in first_cell.split('`').skip(1).step_by(2) {
            named.push(span.split_whitespace().next().unwrap().to_string());
        }
    }
    assert!(named.len() >= 5, "too few names parsed: {named:?}");
    for name in &named {
        assert!(dir.join(name).exists(), "README names missing {name}");
    }
    // The objects directory's row names a sample summary too.
    assert!(dir.join("objects/summary-2022.7.sample").is_file());
}
