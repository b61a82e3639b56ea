//! The composition rules: conflicts, overrides, whiteouts, the top level,
//! /etc, names.

use super::*;

fn short(c: &Checksum) -> String {
    c.to_hex()[..12].to_string()
}

#[test]
fn file_file_conflict_names_path_and_both_sources() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let ext = fx.commit("f usr/lib/a/b/c/d/data other");
    let e = fx.compose_err(&base, &[("tools", ext)]);
    assert!(e.contains("/usr/lib/a/b/c/d/data: provided by both"), "{e}");
    assert!(e.contains(&format!("base {}", short(&base))), "{e}");
    assert!(e.contains("extension tools"), "{e}");
    // The same content is no conflict.
    let same = fx.commit("f usr/lib/a/b/c/d/data base-data");
    fx.compose(&base, &[("same", same)]).unwrap();
}

#[test]
fn file_directory_clash_is_an_error_even_with_an_override() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    // The base has a file where the extension has a directory...
    let dir = fx.commit_with("f usr/bin/sh/inner x", None, &["/usr/bin"]);
    let e = fx.compose_err(&base, &[("d", dir)]);
    assert!(e.contains("/usr/bin/sh: a file in base"), "{e}");
    assert!(e.contains("but a directory in extension d"), "{e}");
    // ...and a directory where the extension has a file.
    let file = fx.commit_with("f usr/lib/a/b x", None, &["/"]);
    let e = fx.compose_err(&base, &[("f", file)]);
    assert!(e.contains("/usr/lib/a/b: a directory in base"), "{e}");
    assert!(e.contains("but a file in extension f"), "{e}");
    // Between two extensions too.
    let a = fx.commit("f usr/share/x/y y");
    let b = fx.commit_with("f usr/share/x y", None, &["/usr/share"]);
    let e = fx.compose_err(&base, &[("a", a), ("b", b)]);
    assert!(
        e.contains("/usr/share/x: a directory in extension a but a file in extension b"),
        "{e}"
    );
}

#[test]
fn directory_metadata_conflicts() {
    if arbor_testutil::needs_root("chown of a fixture directory") {
        return;
    }
    let fx = Fx::bare_user();
    let base = fx.commit(&format!("{BASE}\nx usr/share user.label base"));
    let cases = [
        (
            "mode",
            "f usr/lib/x x\nm usr/lib 0700",
            "mode 0700 uid 0 gid 0",
        ),
        (
            "owner",
            "f usr/lib/x x\no usr/lib 42 43",
            "mode 0755 uid 42 gid 43",
        ),
        (
            "xattr",
            "f usr/lib/x x\nx usr/lib user.label ext",
            "xattrs [user.label]",
        ),
        (
            "xattrvalue",
            "f usr/share/x x\nx usr/share user.label ext",
            "xattrs [user.label]",
        ),
        (
            "xattrvalue",
            "f usr/share/x x\nx usr/share user.label ext",
            "(differs: xattr user.label \"base\" vs \"ext\")",
        ),
        (
            "xattrbytes",
            "f usr/share/x x\nx usr/share user.label base\x01",
            "(differs: xattr user.label \"base\" vs \"base\\x01\")",
        ),
        ("missing-xattr", "f usr/share/x x", "xattrs []"),
        (
            "missing-xattr",
            "f usr/share/x x",
            "(differs: xattr user.label \"base\" vs absent)",
        ),
        (
            "mode",
            "f usr/lib/x x\nm usr/lib 0700",
            "(differs: mode 0755 vs 0700)",
        ),
        (
            "owner",
            "f usr/lib/x x\no usr/lib 42 43",
            "(differs: owner 0:0 vs 42:43)",
        ),
        ("root", "f usr/lib/x x\nm . 0700", "mode 0700"),
    ];
    for (name, spec, shown) in cases {
        let ext = fx.commit(spec);
        let e = fx.compose_err(&base, &[(name, ext)]);
        assert!(e.contains("directory metadata differs"), "{name}: {e}");
        assert!(
            e.contains(&format!("base {} has mode 0755", short(&base))),
            "{name}: {e}"
        );
        let (_, theirs) = e.split_once(&format!("extension {name} has mode")).unwrap();
        assert!(format!("mode{theirs}").contains(shown), "{name}: {e}");
    }
    let ext = fx.commit("f usr/lib/x x\nm usr/lib 0700");
    let e = fx.compose_err(&base, &[("m", ext)]);
    assert!(e.contains("/usr/lib: directory metadata differs"), "{e}");
    assert!(!e.contains("hint"), "{e}");
    // At / and /usr (an imported `mktemp -d` is 0700), a hint.
    let hint = "hint: the extension's directories must have the base's mode and owner: \
                chmod 0755, chown 0:0";
    let ext = fx.commit("f usr/lib/x x\nm . 0700");
    let e = fx.compose_err(&base, &[("m", ext)]);
    assert!(e.contains("/: directory metadata differs"), "{e}");
    assert!(e.contains(hint), "{e}");
    let ext = fx.commit("f usr/lib/x x\no usr 1000 1000");
    let e = fx.compose_err(&base, &[("m", ext)]);
    assert!(e.contains("/usr: directory metadata differs"), "{e}");
    assert!(e.contains(hint), "{e}");
}

/// The chmod/chown hint at / and /usr only when the mode or owner
/// differs: an xattr difference (say security.selinux) is not fixed by it.
#[test]
fn directory_metadata_hint_only_for_mode_or_owner() {
    if arbor_testutil::needs_root("fixture directories owned by root") {
        return;
    }
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    for dir in [".", "usr"] {
        let ext = fx.commit(&format!("f usr/lib/x x\nx {dir} user.label ext"));
        let e = fx.compose_err(&base, &[("x", ext)]);
        assert!(e.contains("directory metadata differs"), "{e}");
        assert!(
            e.contains("(differs: xattr user.label absent vs \"ext\")"),
            "{e}"
        );
        assert!(!e.contains("hint"), "{dir}: {e}");
        // With a mode difference too, the hint.
        let ext = fx.commit(&format!(
            "f usr/lib/x x\nx {dir} user.label ext\nm {dir} 0700"
        ));
        let e = fx.compose_err(&base, &[("x", ext)]);
        assert!(
            e.contains("hint: the extension's directories"),
            "{dir}: {e}"
        );
    }
}

/// Dirmetas that differ only in the order of their xattrs, or in a
/// repeated name, say so rather than print an empty difference.
#[test]
fn directory_metadata_difference_in_xattr_order_is_named() {
    use super::super::compose::meta_differences;
    use arbor_format::{xattrs::Xattr, DirMeta};
    let x = |n: &str, v: &str| Xattr {
        name: n.as_bytes().to_vec(),
        value: v.as_bytes().to_vec(),
    };
    let meta = |xattrs| DirMeta {
        uid: 0,
        gid: 0,
        mode: 0o40755,
        xattrs,
    };
    let sorted = meta(vec![x("user.a", "1"), x("user.b", "2")]);
    let swapped = meta(vec![x("user.b", "2"), x("user.a", "1")]);
    assert_eq!(meta_differences(&sorted, &swapped), ["xattr order"]);
    let repeated = meta(vec![x("user.a", "1"), x("user.a", "1"), x("user.b", "2")]);
    assert_eq!(
        meta_differences(&sorted, &repeated),
        ["repeated xattr names [] vs [user.a]"]
    );
    assert_eq!(
        meta_differences(&sorted, &meta(vec![x("user.a", "1")])),
        ["xattr user.b \"2\" vs absent"]
    );
}

#[test]
fn directory_metadata_conflicts_between_extensions() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    // Lazy: extension a's /usr/lib/tool is only a's when b arrives.
    let a = fx.commit("f usr/lib/tool/x x");
    let b = fx.commit("f usr/lib/tool/y y\nm usr/lib/tool 0700");
    let e = fx.compose_err(&base, &[("a", a), ("b", b)]);
    assert!(
        e.contains("/usr/lib/tool: directory metadata differs: extension a has mode 0755"),
        "{e}"
    );
    assert!(e.contains("extension b has mode 0700"), "{e}");
    // Expanded: b met a there (same metadata), then c differs.
    let b = fx.commit("f usr/lib/tool/y y");
    let c = fx.commit("f usr/lib/tool/z z\nm usr/lib/tool 0750");
    fx.compose(&base, &[("a", a), ("b", b)]).unwrap();
    let e = fx.compose_err(&base, &[("a", a), ("b", b), ("c", c)]);
    assert!(
        e.contains("/usr/lib/tool: directory metadata differs: extension a has mode 0755"),
        "{e}"
    );
    assert!(e.contains("extension c has mode 0750"), "{e}");
    assert!(e.contains("(differs: mode 0755 vs 0750)"), "{e}");
}

#[test]
fn override_covers_a_subtree_and_nothing_else() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let spec = "f usr/lib/a/b/c/d/data patched\nf usr/bin/sh patched";
    for (overrides, ok) in [
        (&["/usr/lib/a", "/usr/bin/sh"][..], true),
        (&["/usr/lib/a/b/c/d/data", "/usr/bin/"][..], true),
        (&["/usr"][..], true),
        (&["/"][..], true),
        (&["/usr/lib/a"][..], false),
        (&["/usr/li", "/usr/bin/s"][..], false),
        (&["/usr/lib/a/b/c/d/data/x", "/usr/bin/sh"][..], false),
    ] {
        let ext = fx.commit_with(spec, None, overrides);
        match fx.compose(&base, &[("p", ext)]) {
            Ok(c) => {
                assert!(ok, "{overrides:?} composed");
                assert_eq!(
                    fx.file_of(&c.commit, "/usr/lib/a/b/c/d/data"),
                    fx.file_of(&ext, "/usr/lib/a/b/c/d/data")
                );
            }
            Err(e) => {
                assert!(!ok, "{overrides:?}: {e:#}");
                assert!(format!("{e:#}").contains("provided by both"), "{e:#}");
            }
        }
    }
    let bad = fx.commit_with(spec, None, &["usr/lib"]);
    let e = fx.compose_err(&base, &[("p", bad)]);
    assert!(e.contains("is not an absolute path"), "{e}");
    let bad = fx.commit_with(spec, None, &["/usr/../etc"]);
    let e = fx.compose_err(&base, &[("p", bad)]);
    assert!(e.contains(". or .. components"), "{e}");
    let plain = fx.commit(spec);
    let bad = fx.with_metadata(&plain, OVERRIDES_KEY, Value::Str("/usr".into()));
    let e = fx.compose_err(&base, &[("p", bad)]);
    assert!(
        e.contains(&format!("{OVERRIDES_KEY} is s, expected as")),
        "{e}"
    );
}

#[test]
fn two_extensions_conflict_unless_the_later_overrides() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let a = fx.commit("f usr/bin/t from-a");
    let b = fx.commit("f usr/bin/t from-b");
    let e = fx.compose_err(&base, &[("a", a), ("b", b)]);
    assert!(
        e.contains("/usr/bin/t: provided by both extension a and extension b"),
        "{e}"
    );
    // An override in the earlier extension does not help.
    let a_over = fx.commit_with("f usr/bin/t from-a", None, &["/usr/bin/t"]);
    fx.compose_err(&base, &[("a", a_over), ("b", b)]);
    // The later one's does, and it wins.
    let b_over = fx.commit_with("f usr/bin/t from-b", None, &["/usr/bin/t"]);
    let c = fx.compose(&base, &[("a", a), ("b", b_over)]).unwrap();
    assert_eq!(
        fx.file_of(&c.commit, "/usr/bin/t"),
        fx.file_of(&b, "/usr/bin/t")
    );
    // As real ostree's union (the last tree wins) does.
    assert_eq!(
        c.commit,
        fx.ostree_compose(&base, &[("a", a), ("b", b_over)])
    );
}

#[test]
fn whiteouts_are_refused() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    for (spec, path) in [
        ("f usr/lib/.wh.libfoo.so.1 x", "/usr/lib/.wh.libfoo.so.1"),
        (
            "f usr/share/doc/.wh..wh..opq x",
            "/usr/share/doc/.wh..wh..opq",
        ),
        ("d opt/x/.wh.dir", "/opt/x/.wh.dir"),
        ("f etc/.wh.passwd x", "/etc/.wh.passwd"),
        (
            "f usr/lib/.ostree-wh.libfoo.so.1 x",
            "/usr/lib/.ostree-wh.libfoo.so.1",
        ),
        ("d opt/.ostree-wh.dir", "/opt/.ostree-wh.dir"),
    ] {
        let ext = fx.commit(spec);
        let e = fx.compose_err(&base, &[("w", ext)]);
        assert!(e.contains(&format!("{path}: whiteouts")), "{e}");
    }
    // A name merely containing .wh. is fine.
    let ext = fx.commit("f usr/lib/x.wh.y x\nf usr/lib/x.ostree-wh.y x");
    fx.compose(&base, &[("w", ext)]).unwrap();
}

#[test]
fn only_usr_opt_etc_at_the_top_level() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    for (spec, path) in [
        ("f var/lib/x x", "/var"),
        ("d boot", "/boot"),
        ("f topfile x", "/topfile"),
        ("l usr2 usr", "/usr2"),
    ] {
        let ext = fx.commit(spec);
        let e = fx.compose_err(&base, &[("t", ext)]);
        assert!(e.contains(&format!("{path}: only")), "{e}");
        assert!(e.contains("top level of an extension"), "{e}");
    }
    let ext = fx.commit("d usr/x\nd opt/x\nd etc/x");
    fx.compose(&base, &[("t", ext)]).unwrap();
}

#[test]
fn etc_is_composed_into_usr_etc() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let ext = fx.commit(
        "f etc/tool/tool.conf conf
         f etc/tool.d/a a
         f usr/etc/tool.d/b b
         f usr/bin/tool tool",
    );
    let c = fx.compose(&base, &[("tool", ext)]).unwrap();
    let p = fx.paths(&c.commit);
    for f in [
        "/usr/etc/tool/tool.conf",
        "/usr/etc/tool.d/a",
        "/usr/etc/tool.d/b",
        "/usr/etc/base.conf",
        "/usr/bin/tool",
    ] {
        assert!(p.contains_key(f), "{f}: {p:?}");
    }
    assert!(!p.keys().any(|k| k.starts_with("/etc/")), "{p:?}");
    // The same rules apply there: a clash with the base's usr/etc...
    let clash = fx.commit("f etc/base.conf mine");
    let e = fx.compose_err(&base, &[("c", clash)]);
    assert!(e.contains("/usr/etc/base.conf: provided by both"), "{e}");
    // ...which an override of /etc/X (meaning /usr/etc/X) allows.
    let over = fx.commit_with("f etc/base.conf mine", None, &["/etc/base.conf"]);
    let c = fx.compose(&base, &[("c", over)]).unwrap();
    assert_eq!(
        fx.file_of(&c.commit, "/usr/etc/base.conf"),
        fx.file_of(&over, "/etc/base.conf")
    );
    // And etc/X and usr/etc/X of one extension with different content are
    // refused, naming both paths, override or not.
    let both = fx.commit("f etc/x one\nf usr/etc/x two");
    let e = fx.compose_err(&base, &[("both", both)]);
    assert!(
        e.contains("/usr/etc/x: extension both's /usr/etc/x and extension both's /etc/x have different content"),
        "{e}"
    );
    assert!(!e.contains("extension both and extension both"), "{e}");
    for over in [&["/etc/x"][..], &["/usr/etc/x"], &["/"]] {
        let both = fx.commit_with("f etc/x one\nf usr/etc/x two", None, over);
        let e = fx.compose_err(&base, &[("both", both)]);
        assert!(
            e.contains("/usr/etc/x: extension both's /usr/etc/x and extension both's /etc/x"),
            "{over:?}: {e}"
        );
    }
    // The same content is fine; a file against a directory names both too.
    let same = fx.commit("f etc/x one\nf usr/etc/x one");
    fx.compose(&base, &[("same", same)]).unwrap();
    let kinds = fx.commit("f etc/x/y one\nf usr/etc/x two");
    let e = fx.compose_err(&base, &[("kinds", kinds)]);
    assert!(
        e.contains("/usr/etc/x: a file in extension kinds's /usr/etc/x but a directory in extension kinds's /etc/x"),
        "{e}"
    );
}

/// What `ostree commit --tree=ref=BASE --tree=dir=D` gives, D being the
/// extension checked out with its etc moved into usr/etc: the one way the
/// composition differs from `--tree=ref=EXT`.
#[test]
fn etc_relocation_equals_ostree_with_etc_moved() {
    let fx = Fx::bare_user();
    let base = fx.commit_with(BASE, Some("12.1"), &[]);
    let ext = fx.commit(
        "f etc/tool/tool.conf conf
         f etc/tool.d/a a
         f usr/etc/tool.d/b b
         l etc/tool.d/link a
         f usr/bin/tool tool",
    );
    let ours = fx.compose(&base, &[("tool", ext)]).unwrap();
    let co = fx.dir.path().join("checkout");
    fx.ostree(&[
        "checkout",
        "-U",
        "--force-copy",
        &ext.to_hex(),
        co.to_str().unwrap(),
    ]);
    let moved = fx.dir.path().join("moved");
    std::fs::create_dir(&moved).unwrap();
    std::fs::rename(co.join("usr"), moved.join("usr")).unwrap();
    // Merge etc/* into usr/etc (usr/etc/tool.d exists in both).
    let status = Command::new("cp")
        .args(["-a", "--"])
        .arg(co.join("etc/."))
        .arg(moved.join("usr/etc"))
        .status()
        .unwrap();
    assert!(status.success());
    let theirs = fx.ostree_compose_trees(
        &base,
        &[("tool", ext)],
        &[format!("--tree=dir={}", moved.display())],
    );
    // (--force-copy: a hardlinked bare-user checkout carries
    // user.ostreemeta, which a --tree=dir commit would record.)
    assert_eq!(ours.commit, theirs);
    // Whereas --tree=ref=EXT keeps /etc.
    assert_ne!(ours.commit, fx.ostree_compose(&base, &[("tool", ext)]));
}

#[test]
fn os_release_in_an_extension_is_refused_even_with_an_override() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    for path in ["usr/lib/os-release", "usr/etc/os-release", "etc/os-release"] {
        for over in [&[][..], &["/"][..]] {
            let ext = fx.commit_with(&format!("f {path} ID=evil"), None, over);
            let e = fx.compose_err(&base, &[("o", ext)]);
            assert!(
                e.contains(&format!(
                    "/{path}: an extension must not carry an os-release"
                )),
                "{e}"
            );
        }
    }
    // Even as a symlink, or a directory.
    let ext = fx.commit("l usr/lib/os-release ../../etc/passwd");
    let e = fx.compose_err(&base, &[("o", ext)]);
    assert!(
        e.contains("/usr/lib/os-release: an extension must not"),
        "{e}"
    );
    let ext = fx.commit("d etc/os-release");
    let e = fx.compose_err(&base, &[("o", ext)]);
    assert!(e.contains("/etc/os-release: an extension must not"), "{e}");
    // Elsewhere is fine.
    let ext = fx.commit("f usr/share/doc/os-release x");
    fx.compose(&base, &[("o", ext)]).unwrap();
}

#[test]
fn names_are_checked_and_unique() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let a = fx.commit("f usr/bin/a a");
    let e = fx.compose_err(&base, &[("a", a), ("a", a)]);
    assert!(e.contains("Extension a is listed twice"), "{e}");
    let e = fx.compose_err(&base, &[("../x", a)]);
    assert!(e.contains("Invalid extension name"), "{e}");
}

#[test]
fn composing_on_a_composed_commit_is_refused() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let a = fx.commit("f usr/bin/a a");
    let b = fx.commit("f usr/bin/b b");
    let c = fx.compose(&base, &[("a", a)]).unwrap();
    let e = fx.compose_err(&c.commit, &[("b", b)]);
    assert!(e.contains("is itself a composed commit"), "{e}");
}
