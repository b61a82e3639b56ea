//! Reproduces every checksum and raw object of the ostree-made test vectors
//! in `testdata/vectors/` byte for byte.

// The library's own dependencies and other tests' dev-dependencies
// (`-W unused-crate-dependencies`).
use {gvariant as _, proptest as _, ring as _, thiserror as _};

use std::collections::BTreeMap;
use std::path::PathBuf;

use arbor_format::dirmeta::{S_IFDIR, S_IFLNK, S_IFREG};
use arbor_format::fuzzing::{mutate, run_all_decoders, XorShift};
use arbor_format::{
    archive_header_len, bare_user_meta_encode, file_checksum, ArchiveHeader, Checksum, Commit,
    DirMeta, DirTree, DirTreeDir, DirTreeFile, FileHeader, Metadata, Summary, Value, Xattr,
};
use serde_json::Value as Json;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/vectors");

fn expected() -> Json {
    let text = std::fs::read_to_string(format!("{VECTORS}/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Contents of the regular files of the input tree (README "Inputs").
fn content(path: &str) -> Vec<u8> {
    match path {
        "/README.txt" => b"Hello, OSTree!\n".to_vec(),
        "/empty" => vec![],
        "/data.bin" => (0..=255u8).collect(),
        "/bin/hello.sh" => b"#!/bin/sh\necho hello\n".to_vec(),
        "/private/key" => b"secret\n".to_vec(),
        "/usr/etc/example.conf" => b"key=value\n".to_vec(),
        "/usr/share/doc/example/notes.txt" => b"nested file\n".to_vec(),
        "/café-ファイル.txt" => b"unicode name\n".to_vec(),
        "/xattr-file.txt" => b"has xattrs\n".to_vec(),
        other => panic!("no content for {other}"),
    }
}

fn vector_xattrs(path: &str, with_xattrs: bool) -> Vec<Xattr> {
    if path == "/xattr-file.txt" && with_xattrs {
        // Set in reverse order on disk; canonical order is by name.
        let mut x = vec![
            Xattr::new("user.zeta", "last"),
            Xattr::new("user.alpha", "first"),
        ];
        arbor_format::xattrs::canonicalize(&mut x);
        x
    } else {
        vec![]
    }
}

fn mode_of(entry: &Json) -> u32 {
    u32::from_str_radix(entry["mode"].as_str().unwrap(), 8).unwrap()
}

fn csum(v: &Json) -> Checksum {
    v.as_str().unwrap().parse().unwrap()
}

fn header_for(path: &str, entry: &Json, with_xattrs: bool) -> FileHeader {
    let (kind, target) = match entry["type"].as_str().unwrap() {
        "file" => (S_IFREG, String::new()),
        "symlink" => (S_IFLNK, entry["target"].as_str().unwrap().to_owned()),
        t => panic!("unexpected type {t}"),
    };
    FileHeader {
        uid: 0,
        gid: 0,
        mode: kind | mode_of(entry),
        symlink_target: target,
        xattrs: vector_xattrs(path, with_xattrs),
    }
}

fn parent_and_name(path: &str) -> (&str, &str) {
    let i = path.rfind('/').unwrap();
    let parent = if i == 0 { "/" } else { &path[..i] };
    (parent, &path[i + 1..])
}

fn check_tree(key: &str, with_xattrs: bool) -> usize {
    let exp = expected();
    let tree = exp[key]["tree"].as_object().unwrap();
    let mut checked = 0;
    let mut dirs: BTreeMap<&str, DirTree> = BTreeMap::new();
    for (path, entry) in tree {
        if path != "/" {
            let (parent, name) = parent_and_name(path);
            let t = dirs.entry(parent).or_default();
            if entry["type"] == "dir" {
                t.dirs.push(DirTreeDir {
                    name: name.into(),
                    tree: csum(&entry["dirtree"]),
                    meta: csum(&entry["dirmeta"]),
                });
            } else {
                t.files.push(DirTreeFile {
                    name: name.into(),
                    checksum: csum(&entry["checksum"]),
                });
            }
        }
        match entry["type"].as_str().unwrap() {
            "file" | "symlink" => {
                let h = header_for(path, entry, with_xattrs);
                let data = if h.is_symlink() {
                    vec![]
                } else {
                    content(path)
                };
                assert_eq!(file_checksum(&h, &data), csum(&entry["checksum"]), "{path}");
                checked += 1;
            }
            "dir" => {
                dirs.entry(path).or_default();
                let meta = DirMeta {
                    uid: 0,
                    gid: 0,
                    mode: S_IFDIR | mode_of(entry),
                    xattrs: vec![],
                };
                assert_eq!(meta.checksum(), csum(&entry["dirmeta"]), "{path}");
                checked += 1;
            }
            t => panic!("unexpected type {t}"),
        }
    }
    for (path, t) in &dirs {
        assert_eq!(
            t.checksum(),
            csum(&tree[*path]["dirtree"]),
            "dirtree {path}"
        );
        assert_eq!(
            DirTree::decode(&t.encode()).unwrap().checksum(),
            t.checksum()
        );
        checked += 1;
    }
    let commit = vector_commit(&exp, &tree["/"]);
    assert_eq!(commit.checksum(), csum(&exp[key]["commit"]), "{key} commit");
    checked + 1
}

fn vector_commit(exp: &Json, root: &Json) -> Commit {
    let inputs = &exp["commit_inputs"];
    let mut metadata = Metadata::new();
    for item in inputs["metadata_in_order"].as_array().unwrap() {
        let key = item[0].as_str().unwrap();
        let value = match item[1].as_str().unwrap() {
            "s" => Value::Str(item[2].as_str().unwrap().into()),
            "as" => Value::StrArray(
                item[2]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect(),
            ),
            t => panic!("unexpected metadata type {t}"),
        };
        metadata.push(key, value);
    }
    assert!(inputs["parent"].is_null());
    Commit {
        metadata,
        parent: None,
        related: vec![],
        subject: inputs["subject"].as_str().unwrap().into(),
        body: inputs["body"].as_str().unwrap().into(),
        timestamp: inputs["timestamp"].as_u64().unwrap(),
        root_tree: csum(&root["dirtree"]),
        root_meta: csum(&root["dirmeta"]),
    }
}

#[test]
fn archive_tree_checksums() {
    assert!(check_tree("archive_and_bare_user", true) > 20);
}

#[test]
fn bare_user_only_tree_checksums() {
    assert!(check_tree("bare_user_only", false) > 20);
}

#[test]
fn bare_user_ostreemeta_values() {
    let exp = expected();
    let tree = exp["archive_and_bare_user"]["tree"].as_object().unwrap();
    let objs = exp["bare_user_object_xattrs"].as_object().unwrap();
    assert!(!objs.is_empty());
    for (checksum, info) in objs {
        let (path, entry) = tree
            .iter()
            .find(|(_, e)| e["checksum"].as_str() == Some(checksum))
            .unwrap();
        let h = header_for(path, entry, true);
        let v = bare_user_meta_encode(h.uid, h.gid, h.mode, &h.xattrs);
        assert_eq!(
            hex::encode(v),
            info["user.ostreemeta_hex"].as_str().unwrap(),
            "{path}"
        );
    }
}

fn objects() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(VECTORS).join("objects");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    assert_eq!(out.len(), 14);
    out
}

/// Content by file checksum, from the archive tree.
fn content_by_checksum(checksum: &str) -> Option<(String, Vec<u8>)> {
    let exp = expected();
    let tree = exp["archive_and_bare_user"]["tree"]
        .as_object()
        .unwrap()
        .clone();
    tree.iter()
        .find(|(_, e)| e["checksum"].as_str() == Some(checksum) && e["type"] == "file")
        .map(|(p, _)| (p.clone(), content(p)))
}

#[test]
fn raw_objects_round_trip() {
    for (name, data) in objects() {
        let (stem, ext) = name.rsplit_once('.').unwrap();
        let digest = Checksum::digest(&data).to_hex();
        match ext {
            "commit" => {
                assert_eq!(digest, stem);
                assert_eq!(Commit::decode(&data).unwrap().encode(), data);
            }
            "dirtree" => {
                assert_eq!(digest, stem);
                assert_eq!(DirTree::decode(&data).unwrap().encode(), data);
            }
            "dirmeta" => {
                assert_eq!(digest, stem);
                assert_eq!(DirMeta::decode(&data).unwrap().encode(), data);
            }
            "commitmeta" => {
                let m = Metadata::decode(&data).unwrap();
                assert_eq!(m.encode(), data);
                match m.get("ostree.sign.ed25519") {
                    Some(Value::BytesArray(sigs)) => {
                        assert_eq!(sigs.len(), 1);
                        assert_eq!(sigs[0].len(), 64);
                        assert!(hex::encode(&sigs[0]).starts_with("4418019c6ff44771"));
                    }
                    other => panic!("unexpected signature value {other:?}"),
                }
            }
            "filez" => check_filez(stem, &data),
            "sample" => check_summary(&data),
            _ => panic!("unexpected object {name}"),
        }
    }
}

fn check_filez(stem: &str, data: &[u8]) {
    let h = archive_header_len(data).unwrap();
    let (a, off) = ArchiveHeader::decode_prefixed(data).unwrap();
    assert_eq!(off, 8 + h);
    assert_eq!(a.encode_prefixed(), data[..off]);
    let expected_csum: Checksum = stem.parse().unwrap();
    if a.header.is_symlink() {
        assert_eq!(a.size, 0);
        assert_eq!(off, data.len(), "symlink .filez has no payload");
        assert_eq!(file_checksum(&a.header, b""), expected_csum);
    } else {
        // No inflate here: use the known input content instead.
        let (path, content) = content_by_checksum(stem).unwrap();
        assert_eq!(a.size, content.len() as u64, "{path}");
        assert_eq!(file_checksum(&a.header, &content), expected_csum, "{path}");
    }
    if stem.starts_with("d54de4d5") {
        assert_eq!(a.size, 15);
        assert_eq!(a.header.mode, 0o100644);
    }
    if stem.starts_with("1f550517") {
        assert_eq!(a.header.xattrs.len(), 2);
        assert_eq!(a.header.xattrs[0], Xattr::new("user.alpha", "first"));
    }
}

fn check_summary(data: &[u8]) {
    let s = Summary::decode(data).unwrap();
    assert_eq!(s.encode(), data);
    assert_eq!(s.refs.len(), 1);
    let r = &s.refs[0];
    assert_eq!(r.name, "example/x86_64/stable");
    assert_eq!(r.commit_size, 182);
    assert!(r.checksum.to_hex().starts_with("02d3a739"));
    assert_eq!(r.metadata.get_str("ostree.commit.version"), Some("1.0"));
    assert_eq!(
        r.metadata
            .get("ostree.commit.timestamp")
            .unwrap()
            .as_u64_be(),
        Some(1577836800)
    );
    assert_eq!(
        s.metadata.get_str("ostree.summary.mode"),
        Some("archive-z2")
    );
    assert_eq!(
        s.metadata.get("ostree.summary.indexed-deltas"),
        Some(&Value::Bool(true))
    );
}

#[test]
fn decoders_never_panic_on_mutations() {
    let mut rng = XorShift::new(0x5eed);
    for (_, data) in objects() {
        for end in 0..=data.len() {
            run_all_decoders(&data[..end]);
        }
        for _ in 0..2000 {
            run_all_decoders(&mutate(&data, &mut rng));
        }
    }
}
