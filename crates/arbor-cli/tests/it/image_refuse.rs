//! `arbor image build` refusing bad input with a clear error and leaving
//! the output directory as it was: no kernel, two kernels, an unknown
//! format, a missing tool, a full output filesystem.

use std::path::Path;
use std::process::Command;

use crate::image_build::{basic_tree, build_cmd, image_source};
use crate::sysroot::{os_tree, put, KVER};
use crate::util::{dir_names, run_fail, run_ok, s};

/// An output directory holding one file of the user's.
fn output_with_a_file(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("out");
    put(&out.join("keep.txt"), "mine\n");
    out
}

#[track_caller]
fn fails_with(cmd: &mut Command, wants: &[&str]) -> String {
    let o = run_fail(cmd);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    for w in wants {
        assert!(err.contains(w), "expected {w:?} in:\n{err}");
    }
    err
}

#[test]
fn a_commit_without_a_kernel_is_refused() {
    let (dir, repo, _) = image_source(|t| {
        os_tree(t, &[]);
        std::fs::remove_dir_all(t.join("usr/lib/modules")).unwrap();
    });
    let out = output_with_a_file(dir.path());
    fails_with(
        &mut build_cmd(&repo, "raw,erofs", &out, &[]),
        &["kernel", "usr/lib/modules"],
    );
    assert_eq!(dir_names(&out), ["keep.txt"]);
}

#[test]
fn a_commit_with_two_kernels_is_refused() {
    let (dir, repo, _) = image_source(|t| {
        os_tree(t, &[]);
        put(&t.join("usr/lib/modules/6.2.0-other/vmlinuz"), "OTHER\n");
    });
    let out = output_with_a_file(dir.path());
    fails_with(
        &mut build_cmd(&repo, "raw", &out, &[]),
        &["Several kernels", KVER, "6.2.0-other"],
    );
    assert_eq!(dir_names(&out), ["keep.txt"]);
}

#[test]
fn an_unknown_format_is_refused_before_anything_is_written() {
    let (dir, repo, _) = image_source(basic_tree);
    let out = dir.path().join("new-out");
    fails_with(
        &mut build_cmd(&repo, "raw,vmdk", &out, &[]),
        &["Unknown image format \"vmdk\"", "raw, qcow2 and erofs"],
    );
    assert!(!out.exists());
}

#[test]
fn a_missing_tool_names_its_debian_package() {
    let (dir, repo, _) = image_source(basic_tree);
    let out = output_with_a_file(dir.path());
    let mut c = build_cmd(&repo, "erofs", &out, &[]);
    c.env("PATH", "/nonexistent");
    fails_with(&mut c, &["mkfs.erofs is not installed", "erofs-utils"]);
    assert_eq!(dir_names(&out), ["keep.txt"]);
}

/// A commit with 8 MiB of incompressible data, built into a 20 MiB tmpfs
/// (in a private mount namespace): the build runs out of space part way,
/// fails naming ENOSPC, and leaves the output directory (holding a file
/// of the user's) as it was.
#[test]
fn a_full_output_filesystem_leaves_nothing_behind() {
    let (dir, repo, _) = image_source(|t| {
        basic_tree(t);
        let mut x = 0x1234_5678_9abc_def0u64;
        let data: Vec<u8> = (0..8 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(t.join("usr/lib/big.bin"), data).unwrap();
    });
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let build = build_cmd(&repo, "raw,qcow2,erofs", &mnt.join("out"), &[]);
    let argv: Vec<String> = std::iter::once(build.get_program())
        .chain(build.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let err = dir.path().join("stderr.txt");
    let script = format!(
        "mount -t tmpfs -o size=20m tmpfs {m} && mkdir {m}/out && echo keep > {m}/out/keep.txt && \
         {cmd} 2>{e}; echo rc=$?; ls -A {m}/out; df -k {m} | tail -1",
        m = s(&mnt),
        e = s(&err),
        cmd = argv.join(" ")
    );
    let out = run_ok(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(&script),
    );
    let err = std::fs::read_to_string(&err).unwrap();
    assert!(err.contains("No space left on device"), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("rc=") && *l != "rc=0"),
        "{out}"
    );
    let after: Vec<&str> = lines
        .iter()
        .skip_while(|l| !l.starts_with("rc="))
        .skip(1)
        .take_while(|l| !l.starts_with("tmpfs"))
        .copied()
        .collect();
    assert_eq!(after, ["keep.txt"], "{out}");
    // The used space is back to (almost) nothing: no hidden leftovers.
    let used: u64 = lines
        .last()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(used < 64, "{used} KiB still used on the tmpfs: {out}");
}

#[test]
fn only_the_output_directory_itself_is_created() {
    let (dir, repo, _) = image_source(basic_tree);
    let out = dir.path().join("missing/out");
    fails_with(
        &mut build_cmd(&repo, "erofs", &out, &[]),
        &["Creating", "missing/out"],
    );
    assert!(!dir.path().join("missing").exists());
    let ok = dir.path().join("out");
    run_ok(&mut build_cmd(&repo, "erofs", &ok, &[]));
    assert_eq!(dir_names(&ok), ["root.erofs"]);
}
