//! Property: any valid configuration renders to a canonical document that
//! renders again to the same bytes, name and configuration, and whose
//! Ignition part parses back to the same declarations.

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::model::{Config, DirEntry, Dropin, FileEntry, Group, LinkEntry, Owner, Unit, User};
use crate::{parse_input, render, to_ignition, Rendered};

fn name() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_-]{0,8}"
}

fn owner() -> impl Strategy<Value = Owner> {
    prop_oneof![
        (0u32..u32::MAX).prop_map(Owner::Id),
        name().prop_map(Owner::Name),
    ]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..64)
}

fn file() -> impl Strategy<Value = FileEntry> {
    (
        prop::option::of(bytes()),
        prop::collection::vec(bytes(), 0..3),
        prop::option::of(0u32..=0o7777),
        owner(),
        owner(),
    )
        .prop_map(|(contents, append, mode, user, group)| FileEntry {
            // A file with contents has a mode (0o644 by default).
            mode: if contents.is_some() {
                Some(mode.unwrap_or(0o644))
            } else {
                mode
            },
            contents,
            append,
            user,
            group,
        })
}

fn link() -> impl Strategy<Value = LinkEntry> {
    prop_oneof![
        ("[a-zA-Z0-9./_-]{1,30}", owner(), owner()).prop_map(|(target, user, group)| LinkEntry {
            target,
            hard: false,
            user,
            group
        }),
        "[a-z]{1,8}".prop_map(|t| LinkEntry {
            target: format!("/etc/f/{t}"),
            hard: true,
            ..Default::default()
        }),
    ]
}

/// Non-empty text: empty unit and drop-in contents are read as absent.
fn some_text() -> impl Strategy<Value = String> {
    "\\PC{1,40}"
}

fn unit() -> impl Strategy<Value = Unit> {
    (
        prop::option::of(some_text()),
        prop::option::of(any::<bool>()),
        any::<bool>(),
        prop::collection::btree_map("[a-z0-9-]{1,8}\\.conf", some_text(), 0..3),
    )
        .prop_map(|(contents, enabled, mask, d)| Unit {
            // A masked unit has no contents and is not enabled.
            contents: contents.filter(|_| !mask),
            enabled: enabled.filter(|e| !(mask && *e)),
            mask,
            dropins: d
                .into_iter()
                .map(|(k, c)| (k, Dropin { contents: Some(c) }))
                .collect(),
        })
}

fn user() -> impl Strategy<Value = User> {
    (
        prop::option::of(0u32..u32::MAX),
        prop::collection::btree_set(name(), 0..3),
        prop::option::of("[$./a-zA-Z0-9]{1,20}"),
        prop::collection::btree_set("ssh-ed25519 [A-Za-z0-9+/]{4,20}( [a-z@.]{1,10})?", 0..3),
    )
        .prop_map(|(uid, groups, password_hash, keys)| User {
            uid,
            groups: groups.into_iter().collect(),
            password_hash,
            ssh_authorized_keys: keys.into_iter().collect(),
        })
}

fn unique(v: BTreeSet<String>) -> Vec<String> {
    v.into_iter().collect()
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop::collection::btree_map("/(etc|var)/f/[a-z0-9_-][a-z0-9._-]{0,7}", file(), 0..4),
        prop::collection::btree_map(
            "/(etc|var)/d/[a-z0-9_-][a-z0-9._-]{0,7}",
            (prop::option::of(0u32..=0o7777), owner(), owner())
                .prop_map(|(mode, user, group)| DirEntry { mode, user, group }),
            0..3,
        ),
        prop::collection::btree_map("/etc/l/[a-z0-9_-][a-z0-9._-]{0,7}", link(), 0..3),
        prop::collection::btree_map(
            "[a-z][a-z0-9-]{0,8}(@[a-z0-9]{0,4})?\\.(service|timer|socket)",
            unit(),
            0..3,
        ),
        prop::collection::btree_map(name(), user(), 0..3),
        prop::collection::btree_map(
            name(),
            (
                prop::option::of(0u32..u32::MAX),
                prop::option::of("[$./a-z0-9]{1,12}"),
            )
                .prop_map(|(gid, password_hash)| Group { gid, password_hash }),
            0..3,
        ),
        prop::collection::btree_set("[a-z_.]{1,8}(=[a-zA-Z0-9,]{0,8})?", 0..4),
        prop::collection::btree_set("[a-z0-9][a-z0-9._-]{0,8}", 0..3),
    )
        .prop_map(
            |(files, directories, links, units, users, groups, kargs, exts)| Config {
                files,
                directories,
                links,
                units,
                users,
                groups,
                kernel_arguments: unique(kargs),
                extensions: unique(exts),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rendered_documents_round_trip(c in config()) {
        let r = Rendered::from_config(c.clone());
        let again = render(&[("rendered.json".to_owned(), r.canonical.clone())]).unwrap();
        prop_assert_eq!(&again.canonical, &r.canonical);
        prop_assert_eq!(&again.name, &r.name);
        prop_assert_eq!(&again.config, &c);
        prop_assert_eq!(Rendered::from_canonical(&r.canonical).unwrap(), r);
        let ign = serde_json::to_vec(&to_ignition(&c)).unwrap();
        let back = parse_input("to_ignition.ign", &ign).unwrap();
        let mut want = c;
        want.kernel_arguments.clear();
        want.extensions.clear();
        prop_assert_eq!(back, want);
    }
}

/// A rich document to mutate.
const SEED: &str = r#"{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"/etc/a","mode":420,"overwrite":true,"contents":{"source":"data:;base64,aGk=","compression":null,"verification":{"hash":"sha512-150a14ed5bea6cc731cf86c41566ac427a8db48ef1b9fd626664b3bfbb99071fa4c922f33dde38719b8c8354e2b7ab9d77e0e67fc12843920a712e73d558e197"}},"append":[{"source":"data:,x%41"}],"user":{"id":1},"group":{"name":"g"}}],"directories":[{"path":"/var/d"}],"links":[{"path":"/etc/l","target":"/etc/a","hard":true}]},"systemd":{"units":[{"name":"a@.service","enabled":true,"mask":false,"dropins":[{"name":"x.conf","contents":"y"}]}]},"passwd":{"users":[{"name":"u","uid":5,"groups":["g"],"sshAuthorizedKeys":["k"]}],"groups":[{"name":"g","gid":7}]}}"#;

const TOKENS: &[&str] = &[
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "null",
    "0",
    "-1",
    "1e400",
    "4294967295",
    "\"/etc/x\"",
    "\"/usr/x\"",
    "\"data:,%\"",
    "\"gzip\"",
    "true",
    "\"\\u0000\"",
    "\"3.0.0\"",
    "\"2.0.0\"",
    "",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Mutated documents are parsed or refused, never a panic; when they
    /// parse, they render and round-trip like any other.
    #[test]
    fn mutated_documents_never_panic(
        edits in prop::collection::vec((0usize..SEED.len(), 0usize..8, 0usize..TOKENS.len()), 1..4),
        yaml in any::<bool>(),
    ) {
        let mut text = SEED.to_owned();
        for (at, del, tok) in edits {
            let at = (0..=at.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            let end = (at + del).min(text.len());
            let end = (end..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
            text.replace_range(at..end, TOKENS[tok]);
        }
        let text = if yaml {
            // The same data as YAML-ish text: flow style with a MachineConfig head.
            format!("apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nspec:\n  config: {text}\n")
        } else {
            text
        };
        if let Ok(r) = render(&[("m.ign".to_owned(), text.into_bytes())]) {
            let again = render(&[("r.json".to_owned(), r.canonical.clone())]).unwrap();
            prop_assert_eq!(again.name, r.name);
        }
    }
}
