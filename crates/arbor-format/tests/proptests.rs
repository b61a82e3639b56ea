//! Property tests: decode(encode(x)) == x and encoders emit normal form.

// The library's own dependencies and other tests' dev-dependencies
// (`-W unused-crate-dependencies`).
use {gvariant as _, hex as _, ring as _, serde_json as _, thiserror as _};

use arbor_format::{
    normal_form, ArchiveHeader, Checksum, Commit, DirMeta, DirTree, DirTreeDir, DirTreeFile,
    FileHeader, Metadata, Summary, SummaryRef, Value, Xattr,
};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;

fn checksum() -> impl Strategy<Value = Checksum> {
    any::<[u8; 32]>().prop_map(Checksum::from_array)
}

/// Any string without NUL (GVariant strings cannot hold NUL).
fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,24}"
}

fn filename() -> impl Strategy<Value = String> {
    "[^/\u{0}]{1,16}".prop_filter("special names", |s| s != "." && s != "..")
}

fn xattrs() -> impl Strategy<Value = Vec<Xattr>> {
    btree_map(vec(1u8..=255, 1..12), vec(any::<u8>(), 0..12), 0..4)
        .prop_map(|m| m.into_iter().map(|(n, v)| Xattr::new(n, v)).collect())
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        text().prop_map(Value::Str),
        any::<bool>().prop_map(Value::Bool),
        any::<u32>().prop_map(Value::U32),
        any::<u64>().prop_map(Value::U64),
        vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        vec(text(), 0..4).prop_map(Value::StrArray),
        vec(vec(any::<u8>(), 0..70), 0..3).prop_map(Value::BytesArray),
        any::<(i32, u8)>().prop_map(|(i, y)| {
            let mut data = i.to_le_bytes().to_vec();
            data.push(y);
            Value::Other {
                type_str: "(iy)".into(),
                data: [data, vec![0, 0, 0]].concat(),
            }
        }),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        vec(("[a-z.]{1,12}", inner), 0..4).prop_map(|v| Value::Dict(Metadata(v)))
    })
}

fn metadata() -> impl Strategy<Value = Metadata> {
    vec(("[^\u{0}]{1,20}", value()), 0..6).prop_map(Metadata)
}

fn dirtree() -> impl Strategy<Value = DirTree> {
    (
        btree_set(filename(), 0..8),
        vec(checksum(), 24),
        any::<u32>(),
    )
        .prop_map(|(names, sums, split)| {
            let mut t = DirTree::default();
            for (i, name) in names.into_iter().enumerate() {
                let c = sums[i % sums.len()];
                if split & (1 << (i % 32)) != 0 {
                    t.dirs.push(DirTreeDir {
                        name,
                        tree: c,
                        meta: sums[(i + 1) % sums.len()],
                    });
                } else {
                    t.files.push(DirTreeFile { name, checksum: c });
                }
            }
            t
        })
}

fn sorted(mut t: DirTree) -> DirTree {
    t.files
        .sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    t.dirs
        .sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    t
}

fn commit() -> impl Strategy<Value = Commit> {
    (
        metadata(),
        proptest::option::of(checksum()),
        vec((text(), checksum()), 0..2),
        (text(), text(), any::<u64>()),
        checksum(),
        checksum(),
    )
        .prop_map(
            |(metadata, parent, related, (subject, body, timestamp), t, m)| Commit {
                metadata,
                parent,
                related,
                subject,
                body,
                timestamp,
                root_tree: t,
                root_meta: m,
            },
        )
}

fn file_header() -> impl Strategy<Value = FileHeader> {
    (
        any::<u32>(),
        any::<u32>(),
        0u32..0o7777,
        "[^\u{0}]{1,30}",
        any::<bool>(),
        xattrs(),
    )
        .prop_map(|(uid, gid, perms, target, link, xattrs)| FileHeader {
            uid,
            gid,
            mode: if link { 0o120000 } else { 0o100000 } | perms,
            symlink_target: if link { target } else { String::new() },
            xattrs,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn dirtree_round_trip(t in dirtree()) {
        let enc = t.encode();
        normal_form::check("(a(say)a(sayay))", &enc).unwrap();
        prop_assert_eq!(DirTree::decode(&enc).unwrap(), sorted(t));
    }

    #[test]
    fn metadata_round_trip(m in metadata()) {
        let enc = m.encode();
        normal_form::check("a{sv}", &enc).unwrap();
        prop_assert_eq!(Metadata::decode(&enc).unwrap(), m);
    }

    #[test]
    fn commit_round_trip(c in commit()) {
        let enc = c.encode();
        normal_form::check("(a{sv}aya(say)sstayay)", &enc).unwrap();
        prop_assert_eq!(Commit::decode(&enc).unwrap(), c);
    }

    #[test]
    fn dirmeta_round_trip(uid: u32, gid: u32, perms in 0u32..0o7777, x in xattrs()) {
        let d = DirMeta { uid, gid, mode: 0o040000 | perms, xattrs: x };
        let enc = d.encode();
        normal_form::check("(uuua(ayay))", &enc).unwrap();
        prop_assert_eq!(DirMeta::decode(&enc).unwrap(), d);
    }

    #[test]
    fn headers_round_trip(h in file_header(), size: u64) {
        let enc = h.encode_variant();
        normal_form::check("(uuuusa(ayay))", &enc).unwrap();
        prop_assert_eq!(&FileHeader::decode_variant(&enc).unwrap(), &h);
        let size = if h.is_symlink() { 0 } else { size };
        let a = ArchiveHeader { size, header: h };
        let (back, off) = ArchiveHeader::decode_prefixed(&a.encode_prefixed()).unwrap();
        prop_assert_eq!(off, a.encode_prefixed().len());
        prop_assert_eq!(back, a);
    }

    #[test]
    fn summary_round_trip(
        refs in btree_map("[a-z0-9_]{1,10}(/[a-z0-9_]{1,10}){0,2}", (any::<u64>(), checksum(), metadata()), 0..5),
        meta in metadata(),
    ) {
        let s = Summary {
            refs: refs
                .into_iter()
                .map(|(name, (commit_size, checksum, metadata))| SummaryRef { name, commit_size, checksum, metadata })
                .collect(),
            metadata: meta,
        };
        let enc = s.encode();
        normal_form::check("(a(s(taya{sv}))a{sv})", &enc).unwrap();
        prop_assert_eq!(Summary::decode(&enc).unwrap(), s);
    }

    #[test]
    fn random_bytes_never_panic(data in vec(any::<u8>(), 0..300)) {
        arbor_format::fuzzing::run_all_decoders(&data);
    }
}
