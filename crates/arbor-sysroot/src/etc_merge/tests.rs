//! The merge rules, one test each, on real directories.

use super::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// orig (old defaults), modified (admin's /etc), new (new defaults).
struct Etc {
    _t: tempfile::TempDir,
    orig: std::path::PathBuf,
    modified: std::path::PathBuf,
    new: std::path::PathBuf,
}

fn put(dir: &Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn open(p: &Path) -> OwnedFd {
    fsutil::open_dir(rustix::fs::CWD, &p.to_string_lossy()).unwrap()
}

/// Both old and new defaults hold `defaults`; the admin's /etc starts
/// as a copy of the old defaults.
fn setup(defaults: &[(&str, &str)]) -> Etc {
    let t = tempfile::tempdir().unwrap();
    let (orig, modified, new) = (t.path().join("o"), t.path().join("m"), t.path().join("n"));
    for d in [&orig, &modified, &new] {
        std::fs::create_dir(d).unwrap();
        for (p, c) in defaults {
            put(d, p, c);
        }
    }
    Etc {
        _t: t,
        orig,
        modified,
        new,
    }
}

fn merge(e: &Etc) -> Result<EtcDiff> {
    let d = diff(&open(&e.orig), &open(&e.modified))?;
    apply(&d, &open(&e.modified), &open(&e.new))?;
    Ok(d)
}

/// The merge preview of `e`, in a scratch directory next to it.
fn preview(e: &Etc) -> Result<Vec<PlanEntry>> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let scratch = e.new.with_file_name(format!(
        "scratch-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir(&scratch).unwrap();
    let d = diff(&open(&e.orig), &open(&e.modified))?;
    plan(
        &d,
        &open(&e.orig),
        &open(&e.modified),
        &open(&e.new),
        &open(&scratch),
    )
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, PermissionsExt::from_mode(mode)).unwrap();
}

fn action<'a>(plan: &'a [PlanEntry], path: &str) -> &'a str {
    &plan
        .iter()
        .find(|x| x.path == path)
        .unwrap_or_else(|| panic!("{path} not in {plan:?}"))
        .action
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn local_change_wins_over_upstream_change() {
    let e = setup(&[("a.conf", "a=1\n")]);
    put(&e.modified, "a.conf", "a=ADMIN\n");
    put(&e.new, "a.conf", "a=UP2\n");
    let d = merge(&e).unwrap();
    assert_eq!(d.modified, ["a.conf"]);
    assert_eq!(read(&e.new.join("a.conf")), "a=ADMIN\n");
}

#[test]
fn chmod_alone_is_a_change() {
    let e = setup(&[("a.conf", "a=1\n")]);
    std::fs::set_permissions(e.modified.join("a.conf"), PermissionsExt::from_mode(0o600)).unwrap();
    put(&e.new, "a.conf", "a=UP2\n");
    let d = merge(&e).unwrap();
    assert_eq!(d.modified, ["a.conf"]);
    assert_eq!(read(&e.new.join("a.conf")), "a=1\n");
    assert_eq!(mode(&e.new.join("a.conf")), 0o600);
}

#[test]
fn local_deletion_stays_deleted() {
    let e = setup(&[("c.conf", "c=1\n"), ("dir/x", "x\n")]);
    std::fs::remove_file(e.modified.join("c.conf")).unwrap();
    std::fs::remove_dir_all(e.modified.join("dir")).unwrap();
    put(&e.new, "c.conf", "c=UP2\n");
    let d = merge(&e).unwrap();
    assert_eq!(d.removed, ["c.conf", "dir"]);
    assert!(!e.new.join("c.conf").exists());
    assert!(!e.new.join("dir").exists());
}

#[test]
fn a_removal_never_follows_a_symlink_in_the_new_etc() {
    // The admin deleted dir/sub/x; in the new defaults `dir` is a
    // symlink to a directory outside /etc holding `sub/x`: it survives.
    // (An intermediate component: the last one is never followed.)
    let e = setup(&[("dir/sub/x", "x\n")]);
    std::fs::remove_file(e.modified.join("dir/sub/x")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    put(outside.path(), "sub/x", "precious\n");
    std::fs::remove_dir_all(e.new.join("dir")).unwrap();
    std::os::unix::fs::symlink(outside.path(), e.new.join("dir")).unwrap();
    // The preview says so, rather than "stays deleted".
    let p = preview(&e).unwrap();
    assert_eq!(
        action(&p, "dir/sub/x"),
        "the new default stays: its directory now leads outside /etc"
    );
    let d = merge(&e).unwrap();
    assert_eq!(d.removed, ["dir/sub/x"]);
    assert_eq!(read(&outside.path().join("sub/x")), "precious\n");
    assert!(e.new.join("dir").is_symlink());
}

#[test]
fn untouched_files_take_the_new_default() {
    let e = setup(&[("d.conf", "d=1\n"), ("gone.conf", "g\n")]);
    put(&e.new, "d.conf", "d=UP2\n");
    put(&e.new, "new-upstream.conf", "n=1\n");
    std::fs::remove_file(e.new.join("gone.conf")).unwrap();
    let d = merge(&e).unwrap();
    assert_eq!(d, EtcDiff::default());
    assert_eq!(read(&e.new.join("d.conf")), "d=UP2\n");
    assert_eq!(read(&e.new.join("new-upstream.conf")), "n=1\n");
    // Deleted upstream and never touched locally: gone.
    assert!(!e.new.join("gone.conf").exists());
}

#[test]
fn local_additions_are_kept_with_their_directories() {
    let e = setup(&[("a.conf", "a=1\n")]);
    put(&e.modified, "admin-dir/sub/f", "x\n");
    std::fs::set_permissions(
        e.modified.join("admin-dir"),
        PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    put(&e.modified, "added.conf", "new=ADMIN\n");
    std::os::unix::fs::symlink("added.conf", e.modified.join("link")).unwrap();
    let d = merge(&e).unwrap();
    assert_eq!(
        d.added,
        [
            "added.conf",
            "admin-dir",
            "admin-dir/sub",
            "admin-dir/sub/f",
            "link"
        ]
    );
    assert_eq!(read(&e.new.join("admin-dir/sub/f")), "x\n");
    assert_eq!(mode(&e.new.join("admin-dir")), 0o750);
    assert_eq!(
        std::fs::read_link(e.new.join("link")).unwrap(),
        Path::new("added.conf")
    );
}

#[test]
fn a_changed_file_in_a_directory_recreates_the_directory() {
    // Upstream dropped the directory; the admin's modified file in it
    // is carried over with a parent copied from the admin's /etc.
    let e = setup(&[("d/f.conf", "f=1\n")]);
    put(&e.modified, "d/f.conf", "f=ADMIN\n");
    std::fs::set_permissions(e.modified.join("d"), PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::remove_dir_all(e.new.join("d")).unwrap();
    let d = merge(&e).unwrap();
    assert_eq!(d.modified, ["d", "d/f.conf"]);
    assert_eq!(read(&e.new.join("d/f.conf")), "f=ADMIN\n");
    assert_eq!(mode(&e.new.join("d")), 0o700);
}

#[test]
fn a_type_change_is_a_modification() {
    let e = setup(&[("x", "file\n")]);
    std::fs::remove_file(e.modified.join("x")).unwrap();
    std::os::unix::fs::symlink("/dev/null", e.modified.join("x")).unwrap();
    let d = merge(&e).unwrap();
    assert_eq!(d.modified, ["x"]);
    assert_eq!(
        std::fs::read_link(e.new.join("x")).unwrap(),
        Path::new("/dev/null")
    );
}

#[test]
fn a_file_that_newly_defaults_to_a_directory_is_refused() {
    let e = setup(&[("x", "file\n")]);
    put(&e.modified, "x", "admin\n");
    std::fs::remove_file(e.new.join("x")).unwrap();
    put(&e.new, "x/inner", "i\n");
    let err = merge(&e).unwrap_err();
    assert!(
        format!("{err:#}").contains("newly defaults to directory 'x'"),
        "{err:#}"
    );
}

#[test]
fn plan_names_hidden_upstream_changes() {
    let e = setup(&[("a.conf", "a=1\n"), ("b.conf", "b=1\n")]);
    put(&e.modified, "a.conf", "a=ADMIN\n");
    put(&e.modified, "b.conf", "b=ADMIN\n");
    put(&e.new, "a.conf", "a=UP2\n");
    let p = preview(&e).unwrap();
    assert_eq!(p.len(), 2);
    assert!(p[0].path == "a.conf" && p[0].upstream_changed);
    assert!(p[1].path == "b.conf" && !p[1].upstream_changed);
}

#[test]
fn only_the_immediate_parent_takes_the_admins_attributes() {
    // As ostree's ensure_directory_from_template: the directory holding a
    // changed file, and every directory created for it, take the admin's
    // mode; an existing ancestor keeps the new default's.
    let e = setup(&[("d1/d2/f.conf", "f=1\n"), ("e1/e2/g.conf", "g=1\n")]);
    // d1 tightened, d1/d2 left alone, a file in d1/d2 edited: d1 is an
    // ancestor of the change, not its directory.
    chmod(&e.modified.join("d1"), 0o700);
    chmod(&e.new.join("d1/d2"), 0o750);
    put(&e.modified, "d1/d2/f.conf", "f=ADMIN\n");
    chmod(&e.modified.join("e1"), 0o711);
    chmod(&e.modified.join("e1/e2"), 0o701);
    put(&e.modified, "e1/e2/g.conf", "g=ADMIN\n");
    // Upstream dropped e1 altogether: both levels are created.
    std::fs::remove_dir_all(e.new.join("e1")).unwrap();
    let p = preview(&e).unwrap();
    merge(&e).unwrap();
    assert_eq!(mode(&e.new.join("d1")), 0o755);
    // The directory of the change takes the admin's (unchanged) mode.
    assert_eq!(mode(&e.new.join("d1/d2")), 0o755);
    assert_eq!(read(&e.new.join("d1/d2/f.conf")), "f=ADMIN\n");
    assert_eq!(mode(&e.new.join("e1")), 0o711);
    assert_eq!(mode(&e.new.join("e1/e2")), 0o701);
    assert_eq!(read(&e.new.join("e1/e2/g.conf")), "g=ADMIN\n");
    // The preview says the same.
    assert!(action(&p, "d1").starts_with("take the new default's owner and mode"));
    assert!(!p.iter().any(|x| x.path == "d1/d2"));
    assert_eq!(action(&p, "e1/e2"), "keep the local owner and mode");
    assert_eq!(action(&p, "e1"), "keep the local owner and mode");
    assert_eq!(action(&p, "d1/d2/f.conf"), "keep the local version");
}

#[test]
fn plan_says_a_chmod_alone_on_a_directory_is_not_carried() {
    let e = setup(&[("d/f.conf", "f=1\n"), ("k/f.conf", "f=1\n")]);
    chmod(&e.modified.join("d"), 0o700);
    chmod(&e.modified.join("k"), 0o700);
    put(&e.modified, "k/f.conf", "f=ADMIN\n");
    put(&e.modified, "k/new.conf", "n\n");
    std::fs::remove_file(e.modified.join("d/f.conf")).unwrap();
    let p = preview(&e).unwrap();
    let got: Vec<(&str, &str, &str)> = p
        .iter()
        .map(|x| (x.path.as_str(), x.change.as_str(), x.action.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("d", "modified", "take the new default's owner and mode (a directory's own change is carried only with a change inside it, as ostree does)"),
            ("d/f.conf", "removed", "stays deleted"),
            ("k", "modified", "keep the local owner and mode"),
            ("k/f.conf", "modified", "keep the local version"),
            ("k/new.conf", "added", "keep the local file"),
        ]
    );
    // And the merge does exactly that.
    merge(&e).unwrap();
    assert_eq!(mode(&e.new.join("d")), 0o755);
    assert_eq!(mode(&e.new.join("k")), 0o700);
    assert!(!e.new.join("d/f.conf").exists());
}

#[test]
fn plan_fails_as_the_merge_would() {
    let e = setup(&[("x", "file\n")]);
    put(&e.modified, "x", "admin\n");
    std::fs::remove_file(e.new.join("x")).unwrap();
    put(&e.new, "x/inner", "i\n");
    let err = preview(&e).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("The /etc merge would fail"), "{msg}");
    assert!(msg.contains("newly defaults to directory 'x'"), "{msg}");
    // The preview worked on its scratch copy: the new defaults are intact.
    assert_eq!(read(&e.new.join("x/inner")), "i\n");
}

#[test]
fn a_directory_upstream_made_a_symlink_inside_etc_is_followed() {
    // As ostree: d/ became a symlink to d.real/; the admin's edit of
    // d/f.conf and deletion of d/g.conf land in d.real/. An absolute
    // /etc/d.real means the deployment's /etc, never the host's.
    for target in ["d.real", "/etc/d.real", "../etc/d.real"] {
        let e = setup(&[("d/f.conf", "f=1\n"), ("d/g.conf", "g=1\n")]);
        put(&e.modified, "d/f.conf", "f=ADMIN\n");
        std::fs::remove_file(e.modified.join("d/g.conf")).unwrap();
        std::fs::remove_dir_all(e.new.join("d")).unwrap();
        put(&e.new, "d.real/f.conf", "f=UP2\n");
        put(&e.new, "d.real/g.conf", "g=UP2\n");
        std::os::unix::fs::symlink(target, e.new.join("d")).unwrap();
        let p = preview(&e).unwrap();
        assert_eq!(action(&p, "d/f.conf"), "keep the local version", "{target}");
        assert_eq!(action(&p, "d/g.conf"), "stays deleted", "{target}");
        merge(&e).unwrap();
        assert!(e.new.join("d").is_symlink());
        assert_eq!(read(&e.new.join("d.real/f.conf")), "f=ADMIN\n", "{target}");
        assert!(!e.new.join("d.real/g.conf").exists(), "{target}");
    }
}

#[test]
fn a_directory_upstream_made_a_symlink_out_of_etc_is_refused() {
    for kind in ["absolute", "relative", "dangling"] {
        let e = setup(&[("d/f.conf", "f=1\n")]);
        put(&e.modified, "d/f.conf", "f=ADMIN\n");
        std::fs::remove_dir_all(e.new.join("d")).unwrap();
        // `outside` is a sibling of the new /etc, holding d's files.
        let outside = e.new.with_file_name("outside");
        put(&outside, "f.conf", "precious\n");
        let target = match kind {
            "absolute" => outside.to_string_lossy().into_owned(),
            "relative" => "../outside".to_string(),
            _ => "nowhere".to_string(),
        };
        std::os::unix::fs::symlink(&target, e.new.join("d")).unwrap();
        let want = if kind == "dangling" {
            "the new default /etc/d is a dangling symlink"
        } else {
            "the new default /etc/d is a symlink leading outside /etc"
        };
        let err = format!("{:#}", preview(&e).unwrap_err());
        assert!(err.contains(want), "{kind}: {err}");
        let err = format!("{:#}", merge(&e).unwrap_err());
        assert!(err.contains(want), "{kind}: {err}");
        assert_eq!(read(&outside.join("f.conf")), "precious\n", "{kind}");
        assert_eq!(mode(&outside), 0o755, "{kind}");
    }
}

/// The gate of root-only unit tests, as `needs_root` of the integration
/// tests: false as root; when not root, true (skip, with a note) only if
/// `ARBOR_SKIP_ROOT_TESTS=1`, otherwise the test fails. CI runs as root.
#[track_caller]
pub(crate) fn needs_root(what: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return false;
    }
    if std::env::var_os("ARBOR_SKIP_ROOT_TESTS").is_some_and(|v| v == "1") {
        eprintln!("NOTE: skipping {what}: not root (ARBOR_SKIP_ROOT_TESTS=1)");
        return true;
    }
    panic!("{what} needs root (CI runs as root); set ARBOR_SKIP_ROOT_TESTS=1 to skip it");
}

#[test]
fn a_symlinks_own_xattrs_are_copied_as_root() {
    if needs_root("a_symlinks_own_xattrs_are_copied_as_root") {
        return;
    }
    let e = setup(&[("a.conf", "a=1\n")]);
    let link = e.modified.join("link");
    std::os::unix::fs::symlink("a.conf", &link).unwrap();
    let x = [arbor_format::Xattr {
        name: b"trusted.arbor-test".to_vec(),
        value: b"label".to_vec(),
    }];
    arbor_repo::xattrs::set_path(&link, &x).unwrap();
    merge(&e).unwrap();
    let copied = e.new.join("link");
    assert!(copied.is_symlink());
    assert_eq!(arbor_repo::xattrs::read_path(&copied).unwrap(), x);
    // The target's xattrs were not touched through the link.
    assert!(arbor_repo::xattrs::read_path(&e.new.join("a.conf"))
        .unwrap()
        .is_empty());
}

#[test]
fn a_removal_under_a_directory_that_became_a_file_is_refused() {
    // As ostree (its rm -rf fails with "Not a directory"): the admin
    // deleted d/g.conf, and upstream made d a file.
    let e = setup(&[("d/g.conf", "g=1\n")]);
    std::fs::remove_file(e.modified.join("d/g.conf")).unwrap();
    std::fs::remove_dir_all(e.new.join("d")).unwrap();
    put(&e.new, "d", "now a file\n");
    let want = "Cannot remove /etc/d/g.conf: the new default /etc/d is not a directory";
    let err = format!("{:#}", preview(&e).unwrap_err());
    assert!(err.contains(want), "{err}");
    let err = format!("{:#}", merge(&e).unwrap_err());
    assert!(err.contains(want), "{err}");
    // A directory upstream dropped altogether: nothing to remove.
    let e = setup(&[("d/g.conf", "g=1\n")]);
    std::fs::remove_file(e.modified.join("d/g.conf")).unwrap();
    std::fs::remove_dir_all(e.new.join("d")).unwrap();
    assert_eq!(action(&preview(&e).unwrap(), "d/g.conf"), "stays deleted");
    merge(&e).unwrap();
}
