//! systemd-sysext's release checks: the parser, the rules, and the files
//! found in trees.

use super::*;
use crate::extensions::release::{
    parse_os_release, systemd_architecture, systemd_architecture_of, validate,
};

fn kv(text: &str) -> BTreeMap<String, String> {
    parse_os_release(text)
}

#[test]
fn os_release_parsing() {
    let text = r#"
# a comment
; another
NAME="Debian GNU/Linux"
ID=debian
  VERSION_ID='12'
PRETTY_NAME="Debian \"bookworm\" \\ \$HOME \`x\` \q"
UNQUOTED=a\ b\"c   
MIXED="a"'b'c
CONT="one \
two"
EMPTY=
not an assignment
ID_LIKE=first
ID_LIKE=second
1BAD=x
"#;
    let m = kv(text);
    let get = |k: &str| m.get(k).map(String::as_str);
    assert_eq!(get("NAME"), Some("Debian GNU/Linux"));
    assert_eq!(get("ID"), Some("debian"));
    assert_eq!(get("VERSION_ID"), Some("12"));
    assert_eq!(
        get("PRETTY_NAME"),
        Some(r#"Debian "bookworm" \ $HOME `x` \q"#)
    );
    assert_eq!(get("UNQUOTED"), Some("a b\"c"));
    assert_eq!(get("MIXED"), Some("abc"));
    assert_eq!(get("CONT"), Some("one two"));
    assert_eq!(get("EMPTY"), Some(""));
    assert_eq!(get("ID_LIKE"), Some("second"));
    assert_eq!(get("1BAD"), None);
    assert_eq!(m.len(), 9, "{m:?}");
    let quoted = kv("X=\"multi\nline\"\nY=1");
    assert_eq!(quoted.get("X").map(String::as_str), Some("multi\nline"));
    assert_eq!(quoted.get("Y").map(String::as_str), Some("1"));
}

#[test]
fn systemd_rules() {
    let host = kv("ID=debian\nVERSION_ID=12\nSYSEXT_LEVEL=1.0");
    let rolling = kv("ID=arch");
    let versioned = kv("ID=debian\nVERSION_ID=12");
    let levelled = kv("ID=debian\nSYSEXT_LEVEL=2");
    let derived = kv("ID=raspbian\nID_LIKE=\"ubuntu debian\"\nVERSION_ID=12");
    let arch = "x86-64";
    // (host, extension, Ok or the parts the error must show)
    type Case<'a> = (&'a BTreeMap<String, String>, &'a str, Option<&'a [&'a str]>);
    let cases: Vec<Case<'_>> = vec![
        (&host, "ID=_any", None),
        (&host, "ID=_any\nVERSION_ID=99", None),
        (&host, "ID=debian\nVERSION_ID=12", None),
        (&host, "ID=debian\nSYSEXT_LEVEL=1.0\nVERSION_ID=11", None),
        (
            &host,
            "ID=debian\nSYSEXT_LEVEL=1.1",
            Some(&["SYSEXT_LEVEL", "\"1.1\"", "\"1.0\""]),
        ),
        (
            &host,
            "ID=fedora\nVERSION_ID=12",
            Some(&["ID=\"fedora\"", "ID=\"debian\""]),
        ),
        (
            &host,
            "ID=debian\nVERSION_ID=13",
            Some(&["VERSION_ID=\"13\"", "VERSION_ID=\"12\""]),
        ),
        (
            &host,
            "ID=debian",
            Some(&["neither SYSEXT_LEVEL nor VERSION_ID", "\"12\""]),
        ),
        (&host, "VERSION_ID=12", Some(&["no ID", "\"debian\""])),
        (&host, "", Some(&["carries no data"])),
        (
            &host,
            "ID=_any\nARCHITECTURE=arm64",
            Some(&["ARCHITECTURE=\"arm64\"", "\"x86-64\""]),
        ),
        (&host, "ID=debian\nVERSION_ID=12\nARCHITECTURE=x86-64", None),
        (&host, "ID=debian\nVERSION_ID=12\nARCHITECTURE=_any", None),
        (&rolling, "ID=arch", None),
        (
            &rolling,
            "ID=debian",
            Some(&["ID=\"debian\"", "ID=\"arch\""]),
        ),
        (
            &versioned,
            "ID=debian\nSYSEXT_LEVEL=1.0\nVERSION_ID=12",
            None,
        ),
        (
            &versioned,
            "ID=debian\nSYSEXT_LEVEL=1.0",
            Some(&["no VERSION_ID", "\"12\""]),
        ),
        (&levelled, "ID=debian\nSYSEXT_LEVEL=2", None),
        // ID_LIKE: the extension's ID may be any word of the base's.
        (&derived, "ID=debian\nVERSION_ID=12", None),
        (&derived, "ID=ubuntu\nVERSION_ID=12", None),
        (&derived, "ID=raspbian\nVERSION_ID=12", None),
        (
            &derived,
            "ID=debian\nVERSION_ID=13",
            Some(&["VERSION_ID=\"13\"", "VERSION_ID=\"12\""]),
        ),
        (
            &derived,
            "ID=deb\nVERSION_ID=12",
            Some(&["ID=\"deb\"", "ID=\"raspbian\"", "ID_LIKE=\"ubuntu debian\""]),
        ),
        (
            &levelled,
            "ID=debian\nSYSEXT_LEVEL=3",
            Some(&["\"3\"", "\"2\""]),
        ),
    ];
    for (host, ext, want) in cases {
        let r = validate("tools", host, &kv(ext), arch);
        match (r, want) {
            (Ok(()), None) => {}
            (Ok(()), Some(w)) => panic!("{ext:?} on {host:?} accepted, want {w:?}"),
            (Err(e), None) => panic!("{ext:?} on {host:?}: {e:#}"),
            (Err(e), Some(parts)) => {
                let e = format!("{e:#}");
                assert!(e.contains("Extension tools"), "{e}");
                for p in parts {
                    assert!(e.contains(p), "{ext:?}: {e} lacks {p}");
                }
            }
        }
    }
}

#[test]
fn architecture_uses_systemd_names() {
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(systemd_architecture(), "x86-64");
    }
    // The kernel's machine names, mapped as systemd's uname_architecture
    // (src/basic/architecture.c), whatever the byte order.
    for (machine, bits, name) in [
        ("x86_64", 64, "x86-64"),
        ("i686", 32, "x86"),
        ("i386", 32, "x86"),
        ("x32", 32, "x32"),
        ("aarch64", 64, "arm64"),
        ("aarch64_be", 64, "arm64-be"),
        ("armv7l", 32, "arm"),
        ("armv8l", 32, "arm"),
        ("armv5tejl", 32, "arm"),
        ("armv7b", 32, "arm-be"),
        ("armv4tb", 32, "arm-be"),
        ("ppc64le", 64, "ppc64-le"),
        ("ppc64", 64, "ppc64"),
        ("ppcle", 32, "ppc-le"),
        ("s390x", 64, "s390x"),
        ("riscv64", 64, "riscv64"),
        ("riscv32", 32, "riscv32"),
        ("riscv", 64, "riscv64"),
        ("riscv", 32, "riscv32"),
        ("loongarch64", 64, "loongarch64"),
        ("mips64", 64, "mips64"),
        ("mips", 32, "mips"),
        ("sparc64", 64, "sparc64"),
        ("sh5", 64, "sh64"),
        ("sh4a", 32, "sh"),
        ("sh4", 32, "sh"),
        ("sh2a", 32, "sh"),
        ("crisv32", 32, "cris"),
        ("nios2", 32, "nios2"),
        ("tilegx", 64, "tilegx"),
        ("arceb", 32, "arc-be"),
        ("parisc64", 64, "parisc64"),
        ("something-new", 64, "something-new"),
    ] {
        assert_eq!(
            systemd_architecture_of(machine, bits),
            name,
            "{machine} {bits}"
        );
    }
    let host = kv("ID=debian\nVERSION_ID=12");
    let arch = systemd_architecture();
    let ext = kv(&format!("ID=debian\nVERSION_ID=12\nARCHITECTURE={arch}"));
    validate("t", &host, &ext, &arch).unwrap();
    let ext = kv("ID=debian\nVERSION_ID=12\nARCHITECTURE=arm64");
    let e = format!("{:#}", validate("t", &host, &ext, "x86-64").unwrap_err());
    assert!(e.contains("ARCHITECTURE=\"arm64\""), "{e}");
    assert!(e.contains("\"x86-64\""), "{e}");
}

const REL: &str = "usr/lib/extension-release.d/extension-release";

#[test]
fn release_files_in_trees() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    // A matching file.
    let ok = fx.commit(&format!("f {REL}.tools ID=debian\\nVERSION_ID=12"));
    fx.compose(&base, &[("tools", ok)]).unwrap();
    // A mismatch is refused through compose, with both values.
    let bad = fx.commit(&format!("f {REL}.tools ID=fedora\\nVERSION_ID=40"));
    let e = fx.compose_err(&base, &[("tools", bad)]);
    assert!(e.contains("ID=\"fedora\""), "{e}");
    assert!(e.contains("ID=\"debian\""), "{e}");
    let bad = fx.commit(&format!("f {REL}.tools ID=debian\\nVERSION_ID=11"));
    let e = fx.compose_err(&base, &[("tools", bad)]);
    assert!(
        e.contains("VERSION_ID=\"11\"") && e.contains("VERSION_ID=\"12\""),
        "{e}"
    );
    // The file's suffix must be the extension's name.
    let e = fx.compose_err(&base, &[("other", ok)]);
    assert!(e.contains("Extension other carries"), "{e}");
    assert!(e.contains("names extension \"tools\""), "{e}");
    // One file only.
    let two = fx.commit(&format!("f {REL}.tools ID=_any\nf {REL}.more ID=_any"));
    let e = fx.compose_err(&base, &[("tools", two)]);
    assert!(e.contains("2 extension-release files"), "{e}");
    // Without a release file, anything goes.
    let none = fx.commit("f usr/lib/extension-release.d/README x");
    fx.compose(&base, &[("tools", none)]).unwrap();
}

#[test]
fn a_release_file_symlink_is_resolved_inside_the_extension() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    // Pointing outside the extension (to the base's os-release, to the
    // host's files): resolved inside the extension, where there is
    // nothing, so refused.
    for target in [
        "/usr/lib/os-release",
        "../../os-release",
        "../../../../../../../../etc/passwd",
        "/proc/self/environ",
    ] {
        let ext = fx.commit(&format!("l {REL}.tools {target}\nf usr/bin/t t"));
        let e = fx.compose_err(&base, &[("tools", ext)]);
        assert!(
            e.contains(&format!(
                "Extension tools: /{REL}.tools is not a regular file inside the extension"
            )),
            "{target}: {e}"
        );
    }
    // Pointing at a file of the extension: that file is checked.
    let ext = fx.commit(&format!(
        "l {REL}.tools /usr/share/tools/release\nf usr/share/tools/release ID=fedora"
    ));
    let e = fx.compose_err(&base, &[("tools", ext)]);
    assert!(e.contains("ID=\"fedora\""), "{e}");
    let ext = fx.commit(&format!(
        "l {REL}.tools ../../share/tools/release\nf usr/share/tools/release ID=_any"
    ));
    fx.compose(&base, &[("tools", ext)]).unwrap();
}

#[test]
fn base_os_release_lookup() {
    let fx = Fx::bare_user();
    let ext = fx.commit(&format!("f {REL}.tools ID=debian\\nVERSION_ID=12"));
    // usr/etc/os-release when usr/lib has none.
    let etc = fx.commit("f usr/etc/os-release ID=debian\\nVERSION_ID=12\nd opt");
    fx.compose(&etc, &[("tools", ext)]).unwrap();
    // usr/lib/os-release first.
    let both = fx.commit(
        "f usr/lib/os-release ID=debian\\nVERSION_ID=13
         f usr/etc/os-release ID=debian\\nVERSION_ID=12",
    );
    let e = fx.compose_err(&both, &[("tools", ext)]);
    assert!(e.contains("VERSION_ID=\"13\""), "{e}");
    // A symlink is followed inside the tree, absolute or relative.
    for target in ["/usr/share/os/release", "../share/os/release"] {
        let linked = fx.commit(&format!(
            "l usr/lib/os-release {target}\nf usr/share/os/release ID=debian\\nVERSION_ID=12"
        ));
        fx.compose(&linked, &[("tools", ext)]).unwrap();
    }
    // ..and never out of it: /../../ stays at the tree's root.
    let escaping = fx.commit(
        "l usr/lib/os-release ../../../../../usr/share/os/release
         f usr/share/os/release ID=debian\\nVERSION_ID=12",
    );
    fx.compose(&escaping, &[("tools", ext)]).unwrap();
    // Up to 8 symlinks in a row are followed, not 9.
    let chain = |n: usize| {
        let mut spec = String::from("f usr/lib/real ID=debian\\nVERSION_ID=12\n");
        for i in 0..n {
            let to = if i + 1 == n {
                "real".to_string()
            } else {
                format!("l{}", i + 1)
            };
            let from = if i == 0 {
                "os-release".to_string()
            } else {
                format!("l{i}")
            };
            spec.push_str(&format!("l usr/lib/{from} {to}\n"));
        }
        fx.commit(&spec)
    };
    fx.compose(&chain(8), &[("tools", ext)]).unwrap();
    let e = fx.compose_err(&chain(9), &[("tools", ext)]);
    assert!(e.contains("more than 8 symlinks"), "{e}");
    // A loop is an error, not a hang.
    let looping = fx.commit("l usr/lib/os-release os-release2\nl usr/lib/os-release2 os-release");
    let e = fx.compose_err(&looping, &[("tools", ext)]);
    assert!(e.contains("more than 8 symlinks"), "{e}");
    // No os-release at all: refused when the extension has a release file.
    let bare = fx.commit("f usr/bin/sh x");
    let e = fx.compose_err(&bare, &[("tools", ext)]);
    assert!(e.contains("has no os-release"), "{e}");
}

#[test]
fn oversized_release_file_is_refused() {
    let fx = Fx::bare_user();
    let base = fx.commit(BASE);
    let big = format!("ID=debian\\nVERSION_ID=12\\nX={}", "y".repeat(70_000));
    let ext = fx.commit(&format!("f {REL}.tools {big}"));
    let e = fx.compose_err(&base, &[("tools", ext)]);
    assert!(e.contains("more than the 65536 allowed"), "{e}");
}
