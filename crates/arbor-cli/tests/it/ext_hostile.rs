//! Bad extensions: a missing ref, a tar escaping its root, a device node,
//! a corrupt commit (file object or dirtree) are refused with nothing
//! deployed; a 50,000-file extension goes through in reasonable time.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::config_apply::{boot_snapshot, root_of};
use crate::ext_basic::{both_fscks, ext_commit, layers, refs, Ext};
use crate::ext_upgrade::{object_of, object_path};
use crate::sysroot::needs_root;
use crate::util::{run_fail, run_ok, s};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `extension add ARGS` fails with every word of `words` in its error and
/// leaves deployments, boot entries and the extension refs as they were.
#[track_caller]
fn refused(e: &Ext, args: &[&str], words: &[&str]) -> String {
    let boot = boot_snapshot(&e.sys);
    let l = layers(&e.sys);
    let err = run_fail(&mut e.cmd("add", args));
    let msg = stderr(&err);
    for w in words {
        assert!(msg.contains(w), "{w} missing from: {msg}");
    }
    assert_eq!(boot_snapshot(&e.sys), boot, "{msg}");
    assert_eq!(layers(&e.sys), l, "{msg}");
    assert!(
        !refs(&e.srepo())
            .iter()
            .any(|r| r.starts_with("arbor/composed/")),
        "a composed commit was kept for a refused add"
    );
    msg
}

#[test]
fn a_missing_ref_is_refused() {
    if needs_root("a_missing_ref_is_refused") {
        return;
    }
    let e = Ext::new();
    refused(&e, &["exts/nope"], &["exts/nope"]);
    refused(&e, &["origin:exts/nope"], &["exts/nope"]);
    let missing = "ab".repeat(32);
    refused(&e, &["--name", "x", &missing], &[&missing]);
    refused(&e, &["/nonexistent/dir"], &["/nonexistent/dir"]);
}

/// A tar archive (python's tarfile, which writes what it is told) with
/// `members`: (name, content or None for a directory).
fn hostile_tar(dest: &Path, members: &[(&str, Option<&str>)]) {
    let spec: Vec<String> = members
        .iter()
        .map(|(n, c)| format!("({n:?}, {})", c.map_or("None".into(), |c| format!("{c:?}"))))
        .collect();
    let script = format!(
        "import io, tarfile\n\
         t = tarfile.open({:?}, 'w')\n\
         for name, content in [{}]:\n\
         \x20   i = tarfile.TarInfo(name)\n\
         \x20   if content is None:\n\
         \x20       i.type = tarfile.DIRTYPE; i.mode = 0o755; t.addfile(i)\n\
         \x20   else:\n\
         \x20       b = content.encode(); i.size = len(b); i.mode = 0o644; t.addfile(i, io.BytesIO(b))\n\
         t.close()\n",
        s(dest),
        spec.join(", ")
    );
    run_ok(Command::new("python3").arg("-c").arg(script));
}

#[test]
fn a_tar_escaping_its_root_is_refused() {
    if needs_root("a_tar_escaping_its_root_is_refused") {
        return;
    }
    let e = Ext::new();
    let d = e.fresh("tars");
    let outside = e.dir.path().join("escaped");
    for (i, evil) in [
        "../escaped".to_string(),
        "usr/../../escaped".to_string(),
        s(&outside).to_string(),
    ]
    .iter()
    .enumerate()
    {
        let tar = d.join(format!("evil{i}.tar"));
        hostile_tar(
            &tar,
            &[
                ("usr", None),
                ("usr/share", None),
                ("usr/share/ok", Some("fine\n")),
                (evil, Some("gotcha\n")),
            ],
        );
        let msg = refused(&e, &[s(&tar)], &[]);
        assert!(
            msg.contains("..") || msg.contains("absolute") || msg.contains(evil.as_str()),
            "{evil}: {msg}"
        );
        assert!(!outside.exists(), "{evil} escaped");
    }
    both_fscks(&e.sys);
}

#[test]
fn a_device_node_is_refused() {
    if needs_root("a_device_node_is_refused") {
        return;
    }
    let e = Ext::new();
    let d = e.tool_dir("dev");
    std::fs::create_dir_all(d.join("usr/share")).unwrap();
    run_ok(
        Command::new("mknod")
            .arg(d.join("usr/share/null"))
            .args(["c", "1", "3"]),
    );
    refused(&e, &[s(&d)], &["usr/share/null"]);
    let d = e.tool_dir("fifo");
    std::fs::create_dir_all(d.join("usr/share")).unwrap();
    run_ok(Command::new("mkfifo").arg(d.join("usr/share/fifo")));
    refused(&e, &[s(&d)], &["usr/share/fifo"]);
}

#[test]
fn a_corrupt_extension_commit_is_refused() {
    if needs_root("a_corrupt_extension_commit_is_refused") {
        return;
    }
    let e = Ext::new();
    let repo = e.srepo();
    // A file object with its bytes flipped.
    let d = e.tool_dir("badfile");
    let c = ext_commit(&repo, "exts/badfile", &d, &[]);
    let obj = object_of(&repo, &c, "/usr/bin/badfile-tool", false);
    let p = object_path(&repo, &obj, "file");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[3] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    let msg = refused(&e, &["exts/badfile"], &[]);
    assert!(
        msg.contains(&obj) || msg.to_lowercase().contains("corrupt"),
        "the error does not name the object or the corruption: {msg}"
    );
    // A dirtree with its bytes flipped.
    let d = e.tool_dir("badtree");
    let c = ext_commit(&repo, "exts/badtree", &d, &[]);
    let tree = object_of(&repo, &c, "/usr/bin", true);
    let p = object_path(&repo, &tree, "dirtree");
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    std::fs::write(&p, &bytes).unwrap();
    let msg = refused(&e, &["exts/badtree"], &[]);
    assert!(
        msg.contains(&tree) || msg.to_lowercase().contains("corrupt"),
        "the error does not name the object or the corruption: {msg}"
    );
    // A missing file object.
    let d = e.tool_dir("missing");
    let c = ext_commit(&repo, "exts/missing", &d, &[]);
    let obj = object_of(&repo, &c, "/usr/bin/missing-tool", false);
    std::fs::remove_file(object_path(&repo, &obj, "file")).unwrap();
    refused(&e, &["exts/missing"], &[]);
}

#[test]
fn a_fifty_thousand_file_extension_goes_through() {
    if needs_root("a_fifty_thousand_file_extension_goes_through") {
        return;
    }
    let e = Ext::new();
    let d = e.ext_dir("many", &[], Some("1"));
    for i in 0..100 {
        let sub = d.join(format!("usr/share/many/d{i:03}"));
        std::fs::create_dir_all(&sub).unwrap();
        for j in 0..500 {
            std::fs::write(sub.join(format!("f{j:03}")), format!("{i}/{j}\n")).unwrap();
        }
    }
    let start = Instant::now();
    e.ok("add", &[s(&d)]);
    let took = start.elapsed();
    eprintln!("extension add of 50,000 files took {took:?}");
    assert!(
        took < Duration::from_secs(300),
        "extension add of 50,000 files took {took:?}"
    );
    let root = root_of(&e.sys, 0);
    assert_eq!(
        std::fs::read_to_string(root.join("usr/share/many/d099/f499")).unwrap(),
        "99/499\n"
    );
    assert_eq!(
        std::fs::read_dir(root.join("usr/share/many/d042"))
            .unwrap()
            .count(),
        500
    );
    // Removing it is quick too, and takes every file.
    let start = Instant::now();
    e.ok("remove", &["many"]);
    eprintln!(
        "extension remove of 50,000 files took {:?}",
        start.elapsed()
    );
    assert!(!root_of(&e.sys, 0).join("usr/share/many").exists());
}
