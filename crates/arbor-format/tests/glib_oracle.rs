//! Differential test of [`arbor_format::normal_form::check`] against GLib's
//! `g_variant_is_normal_form`.
//!
//! Needs a tiny oracle program (GLib has no Rust binding here); build it from
//! the C source in `tests/glib_oracle.c` with
//! `gcc -o oracle tests/glib_oracle.c -l:libglib-2.0.so.0` and run
//! `ARBOR_GLIB_ORACLE=$PWD/oracle cargo test -p arbor-format --test glib_oracle`.
//! Without the variable the test prints a notice and passes, except in CI
//! (`CI=true`), where a missing oracle fails it: CI must not pass without
//! the differential check.

// The library's own dependencies and other tests' dev-dependencies
// (`-W unused-crate-dependencies`).
use {gvariant as _, proptest as _, ring as _, serde_json as _, thiserror as _};

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use arbor_format::fuzzing::{mutate, XorShift, TYPES};
use arbor_format::normal_form;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/vectors/objects"
);

const SMALL_TYPES: &[&str] = &[
    "as", "aay", "(ss)", "a{sv}", "v", "ms", "may", "mu", "(yu)", "(uy)", "a(say)", "(sy)", "(ys)",
    "ab", "()", "a()", "(a{sv}s)", "{sv}", "o", "g", "s", "aas", "(ayay)", "m(yu)",
];

#[test]
fn normal_form_matches_glib() {
    let Ok(oracle) = std::env::var("ARBOR_GLIB_ORACLE") else {
        assert!(
            std::env::var_os("CI").is_none_or(|v| v != "true"),
            "CI=true but ARBOR_GLIB_ORACLE is not set: build tests/glib_oracle.c (see test.sh)"
        );
        eprintln!("SKIPPED: set ARBOR_GLIB_ORACLE to the glib_oracle binary to run");
        return;
    };
    let mut child = Command::new(oracle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ask = |t: &str, data: &[u8]| -> bool {
        writeln!(stdin, "{t} {}", hex::encode(data)).unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        line.trim() == "1"
    };
    let mut rng = XorShift::new(42);
    let mut cases = 0;
    let mut accepted = 0;
    let mut compare = |t: &str, data: &[u8], ask: &mut dyn FnMut(&str, &[u8]) -> bool| {
        let ours = normal_form::check(t, data).is_ok();
        let lenient = normal_form::check_like_glib(t, data).is_ok();
        let glib = ask(t, data);
        let hex = hex::encode(data);
        assert_eq!(lenient, glib, "GLib disagrees: type {t} data {hex}");
        // The strict check only ever rejects more.
        assert!(
            !ours || glib,
            "accepted but GLib rejects: type {t} data {hex}"
        );
        cases += 1;
        accepted += usize::from(ours);
    };
    let mut objects: Vec<Vec<u8>> = std::fs::read_dir(VECTORS)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    // Strip .filez prefixes/payloads so the headers themselves are tested.
    for o in objects.clone() {
        if let Ok(h) = arbor_format::archive_header_len(&o) {
            if let Some(v) = o.get(8..8 + h) {
                objects.push(v.to_vec());
            }
        }
    }
    // Containers needing 2- and 4-byte framing offsets.
    for size in [300usize, 70_000] {
        let mut m = arbor_format::Metadata::new();
        m.push("big", arbor_format::Value::Bytes(vec![7; size]));
        m.push(
            "strs",
            arbor_format::Value::StrArray(vec!["x".repeat(size / 100); 3]),
        );
        objects.push(m.encode());
    }
    for data in &objects {
        for t in TYPES {
            compare(t, data, &mut ask);
            for _ in 0..300 {
                compare(t, &mutate(data, &mut rng), &mut ask);
            }
        }
    }
    for t in SMALL_TYPES {
        for _ in 0..3000 {
            let len = rng.below(12);
            let data: Vec<u8> = (0..len)
                .map(|_| [0u8, 1, 2, 3, 4, 5, b'a', b's', b'(', b')', 0xff][rng.below(11)])
                .collect();
            compare(t, &data, &mut ask);
        }
    }
    eprintln!("{cases} cases compared, {accepted} normal");
    drop(stdin);
    child.wait().unwrap();
}
