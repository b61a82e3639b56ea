//! Behaviour of the reading and maintenance commands (checkout, ls, cat,
//! refs, diff, fsck, prune), the quickstart and every `--json` output,
//! with the real `ostree` as the judge where the two must agree.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::cli::*;
use crate::util::{
    arbor, assert_same_tree, dir_names, needs_root, require_ostree, run_fail, run_ok, s,
};

#[test]
fn checkout_hardlinks_from_bare_user_only() {
    let f = fixture("bare-user-only");
    let dest = f.dir.join("co");
    f.repo.ok("checkout", &["-H", "-U", BR, s(&dest)]);
    assert_same_tree(&f.v2, &dest, false); // bare-user-only keeps no xattrs
    let obj = f
        .repo
        .object(&f.repo.checksum_of(BR, "/README.txt"), "file");
    let obj = fs::metadata(obj).unwrap();
    let co = fs::metadata(dest.join("README.txt")).unwrap();
    assert!(co.nlink() > 1, "not hardlinked: nlink {}", co.nlink());
    assert_eq!(co.ino(), obj.ino());
    if !needs_root("a root -H checkout of a user-mode repository") {
        // As ostree: objects of a "user" mode are owned by whoever wrote
        // them, so a non-user-mode checkout cannot link them: -H (ostree's
        // --require-hardlinks) fails, as ostree's does, and a checkout
        // without -H copies.
        let dest = f.dir.join("co-root");
        let out = f
            .repo
            .cmd("checkout", &["-H", BR, s(&dest)])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("User repository mode requires user checkout mode to hardlink"),
            "no error naming the reason: {err}"
        );
        assert!(!dest.join("README.txt").exists());
        f.repo.ok("checkout", &[BR, s(&dest)]);
        assert_same_tree(&f.v2, &dest, false);
        let co = fs::metadata(dest.join("README.txt")).unwrap();
        assert_eq!(
            co.nlink(),
            1,
            "root-mode checkout hardlinked a user-mode object"
        );
    }
}

/// A bare-user object of a file owned by 1000:1000 is owned by root on
/// disk; a root checkout must give the file its recorded owner, so it must
/// copy, not link (the bug: a hardlink came out 0:0).
#[test]
fn checkout_hardlink_keeps_recorded_owner_in_bare_user() {
    if needs_root("checkout_hardlink_keeps_recorded_owner_in_bare_user") {
        return;
    }
    let td = TempDir::new().unwrap();
    let tree = td.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("f"), "owned\n").unwrap();
    let repo = Repo::init(td.path().join("r"), "bare-user");
    repo.ok(
        "commit",
        &["-b", BR, "--owner-uid=1000", "--owner-gid=1000", s(&tree)],
    );
    let dest = td.path().join("co");
    // -H cannot link a user-mode object in a root checkout: it fails as
    // ostree's --require-hardlinks does (the optional-link path that
    // deployments use is checkout::tests::optional_links_follow_the_modes).
    has!(
        repo.fail("checkout", &["-H", BR, s(&dest)]),
        "User repository mode requires user checkout mode to hardlink"
    );
    repo.ok("checkout", &[BR, s(&dest)]);
    let m = fs::metadata(dest.join("f")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.nlink()), (1000, 1000, 1));
    let dest = td.path().join("co-user");
    repo.ok("checkout", &["-H", "-U", BR, s(&dest)]);
    assert!(fs::metadata(dest.join("f")).unwrap().nlink() > 1);
}

#[test]
fn checkout_copies_from_archive_and_refuses_hardlinks() {
    let f = fixture("archive");
    let dest = f.dir.join("hl");
    has!(f.repo.fail("checkout", &["-H", BR, s(&dest)]), "archive");
    assert!(!dest.exists(), "failed -H checkout left {}", dest.display());
    let dest = f.dir.join("co");
    f.repo.ok("checkout", &[&format!("{BR}^"), s(&dest)]);
    assert_same_tree(&f.v1, &dest, true);
    assert_eq!(fs::metadata(dest.join("README.txt")).unwrap().nlink(), 1);
    // -U gives the same tree.
    let dest_u = f.dir.join("co-u");
    f.repo.ok("checkout", &["-U", BR, s(&dest_u)]);
    assert_same_tree(&f.v2, &dest_u, false);
}

#[test]
fn checkout_subpath_and_union() {
    let f = fixture("archive");
    let etc = f.dir.join("etc");
    let r = &f.repo;
    r.ok("checkout", &["--subpath", "/usr/etc", BR, s(&etc)]);
    assert_same_tree(&f.v2.join("usr/etc"), &etc, true);
    let one = f.dir.join("one");
    r.ok("checkout", &["--subpath", "/README.txt", BR, s(&one)]);
    assert_eq!(dir_names(&one), ["README.txt"]);
    assert_eq!(read(&one.join("README.txt")), "Hello, version two!\n");
    let nope = f.dir.join("nope");
    has!(
        r.fail("checkout", &["--subpath", "/nope", BR, s(&nope)]),
        "/nope"
    );
    // A non-empty destination is refused, then merged with --union.
    let dest = f.dir.join("union");
    write(&dest.join("README.txt"), "local edit\n");
    write(&dest.join("extra.txt"), "mine\n");
    has!(f.repo.fail("checkout", &[BR, s(&dest)]), "not empty");
    assert_eq!(read(&dest.join("README.txt")), "local edit\n");
    f.repo.ok("checkout", &["--union", BR, s(&dest)]);
    assert_eq!(read(&dest.join("README.txt")), "Hello, version two!\n");
    assert_eq!(read(&dest.join("extra.txt")), "mine\n");
    fs::remove_file(dest.join("extra.txt")).unwrap();
    assert_same_tree(&f.v2, &dest, true);
}

#[test]
fn ls_and_cat() {
    let f = fixture("archive");
    let r = &f.repo;
    let all = r.ok("ls", &["-R", BR]);
    assert_eq!(all, r.ostree("ls", &["-R", BR]));
    let path_of = |l: &str| l.split_whitespace().nth(4).unwrap().to_string();
    let listed: BTreeSet<String> = all.lines().map(path_of).collect();
    let mut expected = BTreeSet::from(["/".to_string()]);
    let mut stack = vec![f.v2.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            expected.insert(format!("/{}", path.strip_prefix(&f.v2).unwrap().display()));
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            }
        }
    }
    assert_eq!(listed, expected);
    let top = r.ok("ls", &[BR]);
    assert!(!top.contains("/usr/etc"), "ls without -R recursed: {top}");
    has!(top, "l00777 0 0      0 /link-to-readme -> README.txt\n");
    let with_sums = r.ok("ls", &["-R", "-C", BR]);
    assert_eq!(with_sums, r.ostree("ls", &["-R", "-C", BR]));
    let e = &r.json("ls", &[BR, "/README.txt"])[0];
    let want = json!({"path": "/README.txt", "kind": "-", "size": 20, "mode": 0o100644});
    for k in ["path", "kind", "size", "mode"] {
        assert_eq!(e[k], want[k], "{k}");
    }
    let sum = e["checksum"].as_str().unwrap();
    has!(with_sums, &format!(" {sum} /README.txt\n"));
    // cat: exact bytes.
    let out = r
        .cmd("cat", &[&format!("{BR}^"), "/data.bin"])
        .output()
        .unwrap();
    assert!(out.status.success() && out.stdout == (0..=255u8).collect::<Vec<u8>>());
    assert_eq!(r.ok("cat", &[BR, "/README.txt"]), "Hello, version two!\n");
    for (path, msg) in [
        ("/usr", "directory"),
        ("/link-to-readme", "symlink"),
        ("/x", "No such"),
    ] {
        has!(r.fail("cat", &[BR, path]), msg);
    }
}

#[test]
fn refs_list_create_delete() {
    let f = fixture("archive");
    let r = &f.repo;
    assert_eq!(r.ok("refs", &[]), format!("{BR}\n"));
    r.ok("refs", &["--create", "os/old", &format!("{BR}^")]);
    assert_eq!(r.ok("refs", &[]), format!("{BR}\nos/old\n"));
    assert_eq!(r.ok("refs", &[]), r.ostree("refs", &[]));
    assert_eq!(read(&r.0.join("refs/heads/os/old")), format!("{}\n", f.c1));
    assert_eq!(r.json("refs", &[]), json!({ BR: f.c2, "os/old": f.c1 }));
    has!(r.fail("refs", &["--create", "os/old", BR]), "exists");
    assert_eq!(r.ok("rev-parse", &["os/old"]), format!("{}\n", f.c1));
    r.ok("refs", &["--delete", "os/old"]);
    assert!(!r.0.join("refs/heads/os/old").exists());
    assert_eq!(r.ok("refs", &[]), format!("{BR}\n"));
    has!(r.fail("refs", &["--delete", "os/old"]), "not found");
    // Deleting a ref leaves the commit.
    assert_eq!(r.ok("rev-parse", &[&f.c1]), format!("{}\n", f.c1));
}

#[test]
fn diff_matches_ostree() {
    let f = fixture("archive");
    let r = &f.repo;
    let prev = format!("{BR}^");
    let out = r.ok("diff", &[&prev, BR]);
    let expected = "M    /README.txt\nM    /bin\nM    /usr/etc/example.conf\n\
                    D    /data.bin\nD    /usr/share\n\
                    A    /aa-new.txt\nA    /newdir\nA    /newdir/sub\nA    /newdir/sub/deep.txt\n";
    assert_eq!(out, expected);
    assert_eq!(out, r.ostree("diff", &[&prev, BR]));
    assert_eq!(r.ok("diff", &[BR, &prev]), r.ostree("diff", &[BR, &prev]));
    let j = r.json("diff", &[&prev, BR]);
    let entry = |e: &Value| {
        format!(
            "{} {}",
            e["kind"].as_str().unwrap(),
            e["path"].as_str().unwrap()
        )
    };
    let entries: Vec<String> = j.as_array().unwrap().iter().map(entry).collect();
    assert_eq!(entries.len(), 9);
    assert!(entries.contains(&"D /usr/share".to_string()), "{entries:?}");
    assert_eq!(r.ok("diff", &[BR, BR]), "");
    // A type change is one `M`; the root's own mode is not reported.
    let v3 = f.dir.join("v3");
    cp_a(&f.v1, &v3);
    fs::remove_file(v3.join("empty")).unwrap();
    write(&v3.join("empty/inside"), "now a directory\n");
    fs::remove_dir_all(v3.join("private")).unwrap();
    write(&v3.join("private"), "now a file\n");
    chmod(&v3, 0o750);
    r.commit("os/swap", 3000, &v3, &[]);
    let swaps = [
        (f.c1.as_str(), "os/swap", "M    /empty\nM    /private\n"),
        ("os/swap", f.c1.as_str(), "M    /private\nM    /empty\n"),
    ];
    for (x, y, expected) in swaps {
        let out = r.ok("diff", &[x, y]);
        assert_eq!(out, expected);
        assert_eq!(out, r.ostree("diff", &[x, y]));
    }
}

#[test]
fn fsck_reports_counts_and_fails_on_missing_object() {
    let f = fixture("archive");
    let r = &f.repo;
    let objs = r.objects();
    let v = r.json("fsck", &[]);
    assert_eq!(v["errors"], json!([]));
    assert_eq!(v["objects"], objs.len());
    assert_eq!(v["commits"], 2);
    let text = r.ok("fsck", &[]);
    has!(text, "completed successfully");
    assert_eq!(r.ok("fsck", &["-q"]), "");
    let victim = objs.iter().find(|o| o.ends_with(".filez")).unwrap();
    fs::remove_file(r.0.join("objects").join(victim)).unwrap();
    let out = run_fail(&mut r.cmd("fsck", &["--json"]));
    assert_eq!(out.status.code(), Some(1));
    let v = parse(&String::from_utf8_lossy(&out.stdout));
    assert!(!v["errors"].as_array().unwrap().is_empty());
}

/// Runs `arbor prune ARGS` and `ostree prune ARGS` on identical copies and
/// asserts that the same object files remain; returns arbor's JSON report.
fn prune_like_ostree(repo: &Repo, args: &[&str]) -> Value {
    let copy = Repo(repo.0.with_extension("ostree-copy"));
    let _ = fs::remove_dir_all(&copy.0);
    cp_a(&repo.0, &copy.0);
    let report = repo.json("prune", args);
    copy.ostree("prune", args);
    assert_eq!(repo.objects(), copy.objects(), "prune {args:?}");
    report
}

#[test]
fn prune_refs_only_depth_zero() {
    let f = fixture("archive");
    let r = &f.repo;
    let before = r.objects();
    // --no-prune only reports.
    let dry = r.json("prune", &["--no-prune", "--refs-only", "--depth", "0"]);
    assert_eq!(r.objects(), before);
    assert!(dry["deleted"].as_u64().unwrap() > 0);
    let report = prune_like_ostree(r, &["--refs-only", "--depth=0"]);
    assert_eq!(report["deleted"], dry["deleted"]);
    assert_eq!(report["total"], before.len());
    let after = r.objects();
    assert_eq!(report["deleted"], before.len() - after.len());
    assert!(!after.contains(&loose(&f.c1, "commit")));
    assert!(after.contains(&loose(&f.c2, "commit")));
    assert_eq!(count_ext(&after, ".commit"), 1);
    r.fsck_clean();
    let log = r.ok("log", &[BR]);
    has!(log, "\n<< History beyond this commit not fetched >>\n");
    let dest = f.dir.join("co");
    r.ok("checkout", &[BR, s(&dest)]);
    assert_same_tree(&f.v2, &dest, true);
    // Nothing left to delete.
    assert_eq!(r.json("prune", &["--refs-only", "--depth=0"])["deleted"], 0);
    let text = format!("Total objects: {}\nNo unreachable objects\n", after.len());
    assert_eq!(r.ok("prune", &["--refs-only"]), text);
}

#[test]
fn prune_roots_are_commits_unless_refs_only() {
    let f = fixture("archive");
    let r = &f.repo;
    let side_tree = f.dir.join("side");
    write(&side_tree.join("only-on-side"), "side\n");
    let side = r.commit("os/side", 1500, &side_tree, &[]);
    r.ok("refs", &["--delete", "os/side"]);
    let before = r.objects();
    // Every commit is a root: nothing is unreachable.
    assert_eq!(prune_like_ostree(r, &[])["deleted"], 0);
    assert_eq!(r.objects(), before);
    // Only refs are roots: the side commit and its objects go, history stays.
    let report = prune_like_ostree(r, &["--refs-only"]);
    let after = r.objects();
    assert!(!after.contains(&loose(&side, "commit")));
    assert_eq!(count_ext(&after, ".commit"), 2);
    let deleted = report["deleted"].as_u64().unwrap() as usize;
    assert_eq!(before.len() - after.len(), deleted);
    assert!(deleted >= 3, "commit, dirtree, file: {report}");
    r.fsck_clean();
}

#[test]
fn prune_keep_younger_than() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let tree = td.path().join("t");
    let repo = Repo::init(td.path().join("r"), "archive");
    let mut commits = Vec::new();
    for ts in [1000, 2000, 3000] {
        write(&tree.join("v"), &format!("{ts}\n"));
        write(&tree.join(format!("f{ts}")), "x\n");
        commits.push(repo.commit(BR, ts, &tree, &[]));
    }
    let copy = Repo(td.path().join("r1500"));
    cp_a(&repo.0, &copy.0);
    let report = prune_like_ostree(&copy, &["--keep-younger-than=@1500"]);
    assert_eq!(report["deleted"], 3, "commit, dirtree, file of @1000");
    assert_eq!(copy.json("log", &[BR]).as_array().unwrap().len(), 2);
    // Cutoff between the last two: only the tip survives.
    prune_like_ostree(&repo, &["--keep-younger-than=@2500"]);
    let log = repo.json("log", &[BR]);
    assert_eq!(log.as_array().unwrap().len(), 1);
    assert_eq!(log[0]["checksum"], commits[2].as_str());
    assert_eq!(count_ext(&repo.objects(), ".commit"), 1);
    repo.fsck_clean();
    // A cutoff after the tip still keeps the tip.
    let report = repo.json("prune", &["--keep-younger-than=@999999"]);
    assert_eq!(report["deleted"], 0);
    assert_eq!(repo.ok("rev-parse", &[BR]), format!("{}\n", commits[2]));
}

#[test]
fn quickstart_stays_in_its_directory() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let out = run_ok(arbor().current_dir(td.path()).args(["quickstart", "qs"]));
    for step in "init commit log diff ls cat checkout fsck summary serve remote pull".split(' ') {
        has!(out, &format!("\n$ arbor {step} "));
    }
    has!(out, "completed successfully");
    has!(out, "Would fetch ");
    assert_eq!(dir_names(td.path()), ["qs"], "created outside DIR");
    let repo = Repo(td.path().join("qs/repo"));
    repo.ostree("fsck", &[]);
    let log = repo.json("log", &["demo/x86_64/stable"]);
    assert_eq!(log.as_array().unwrap().len(), 2);
    // The client pulled both commits over HTTP, verified, fsck-clean.
    let client = Repo(td.path().join("qs/client"));
    let clog = client.json("log", &["origin:demo/x86_64/stable"]);
    assert_eq!(clog, log);
    client.ok("fsck", &[]);
    client.ostree("fsck", &[]);
    // The second pull fetched nothing.
    has!(out, "0 metadata, 0 content objects fetched");
    // The machine: v1 deployed, /etc edited, upgraded to v2 with the edit
    // kept, rolled back; ostree reads its sysroot and fscks its repository.
    for step in "admin deploy status upgrade rollback".split(' ') {
        has!(out, &format!("\n$ arbor {step} "));
    }
    has!(
        out,
        "modified /etc/motd: keep the local version (its new default is ignored)"
    );
    has!(
        out,
        "Welcome to Arbor Demo OS 1\nMaintenance window: Sundays 02:00\n"
    );
    let sys = td.path().join("qs/sysroot");
    let v2 = log.as_array().unwrap()[0]["checksum"].as_str().unwrap();
    let v1 = log.as_array().unwrap()[1]["checksum"].as_str().unwrap();
    // The status printed after the rollback lists v1 first.
    let after_rollback = &out[out.find("# The boot order after the rollback").unwrap()..];
    let (i1, i2) = (
        after_rollback.find(&format!("demo {v1}.0")),
        after_rollback.find(&format!("demo {v2}.0")),
    );
    assert!(
        i1.is_some() && i2.is_some() && i1 < i2,
        "rolled back to v1 first:\n{after_rollback}"
    );
    // An extension: added (status shows it), re-applied by the upgrade
    // (its tool is in the new deployment), removed.
    for step in ["extension add", "extension list", "extension remove"] {
        has!(out, &format!("\n$ arbor {step} "));
    }
    has!(out, "    Extension: demo-top (");
    has!(
        out,
        "usr/bin/demo-top\n#!/bin/sh\necho \"demo-top 1.0: all quiet\"\n"
    );
    // The upgrade of the extension tour deployed, and the status after it
    // shows the new default on version 2 with the extension re-applied.
    let tour = &out[out.find("\n$ arbor extension add ").unwrap()..];
    let upgraded = &tour[tour.find("\n$ arbor upgrade ").unwrap()..];
    assert!(upgraded.contains("\nUpgraded demo to "), "{upgraded}");
    let status = &upgraded[upgraded.find("# Status after the upgrade").unwrap()..];
    let first: Vec<&str> = status
        .lines()
        .skip_while(|l| !l.starts_with("  demo ") && !l.starts_with("* demo "))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with("    "))
        .map(|(_, l)| l)
        .collect();
    assert!(
        first.contains(&format!("    BaseCommit: {v2}").as_str()),
        "{first:#?}\n{status}"
    );
    assert!(
        first
            .iter()
            .any(|l| l.starts_with("    Extension: demo-top (")),
        "{first:#?}"
    );
    assert_eq!(
        first.iter().filter(|l| l.contains("demo-top")).count(),
        1,
        "one representation of the list: {first:#?}"
    );
    // Declared configuration: rendered, applied, drift found (exit 1),
    // adopted, clean (exit 0), a removal reverted; the state checksum
    // changed with the adoption.
    for step in ["config render", "config apply", "drift"] {
        has!(out, &format!("\n$ arbor {step} "));
    }
    has!(out, "exit status 1\n");
    has!(out, "/etc: no drift\nexit status 0\n");
    has!(out, "M    /etc/hostname  (content)");
    let before = out
        .split("#   before: ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    let after = out
        .split("#   after:  ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap();
    assert!(before.starts_with("state-") && after.starts_with("state-") && before != after);
    has!(
        out,
        "removed  /etc/sudoers.d/wheel (reverted-to-os-default)"
    );
    // The adopted hostname survived the removal of 10-base.yaml.
    has!(out, "/etc/hostname\nedge-42\n\n# Done.");
    // ostree reads the final sysroot: v1 with the last config is the default.
    let st = run_ok(crate::util::ostree().args([
        "admin",
        "status",
        &format!("--sysroot={}", sys.display()),
    ]));
    assert!(
        st.lines()
            .next()
            .is_some_and(|l| l.contains(&format!("demo {v1}."))),
        "{st}"
    );
    let ours = run_ok(arbor().args(["status", "--json", "--sysroot", sys.to_str().unwrap()]));
    let ours: serde_json::Value = serde_json::from_str(&ours).unwrap();
    let last = ours["deployments"][0]["state"].as_str().unwrap();
    assert!(
        last != after && last != before,
        "the removal changed the state"
    );
    Repo(sys.join("ostree/repo")).ostree("fsck", &[]);
    let again = run_fail(arbor().current_dir(td.path()).args(["quickstart", "qs"]));
    has!(String::from_utf8_lossy(&again.stderr), "not empty");
    // The tour's deployments were left mutable (the CLI passes
    // ARBOR_SYSROOT_DEBUG=mutable-deployments to the library), so even as
    // root the whole directory can be removed.
    std::fs::remove_dir_all(td.path().join("qs")).unwrap();
}

#[test]
fn every_json_output_parses() {
    let f = fixture("archive");
    let prev = format!("{BR}^");
    // (command, arguments, whether the output is an array or an object)
    let cases = [
        ("log", vec![BR], true),
        ("show", vec![BR], false),
        ("ls", vec!["-R", BR], true),
        ("refs", vec![], false),
        ("diff", vec![&prev, BR], true),
        ("fsck", vec![], false),
        ("prune", vec!["--no-prune"], false),
        ("rev-parse", vec![BR], false),
    ];
    for (cmd, args, array) in cases {
        let v = f.repo.json(cmd, &args);
        let shape_ok = if array { v.is_array() } else { v.is_object() };
        assert!(shape_ok, "{cmd} --json: unexpected shape {v}");
    }
}

/// The quickstart needs no root: run as `nobody` (when the suite runs as
/// root, as CI does), its sysroot is bare-user and compose cannot give
/// files an owner; the tour, drift included, must still come out right.
#[test]
fn quickstart_runs_without_root() {
    require_ostree();
    if !rustix::process::geteuid().is_root() {
        // Already unprivileged: quickstart_stays_in_its_directory covers it.
        return;
    }
    let td = TempDir::new().unwrap();
    std::fs::set_permissions(
        td.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o777),
    )
    .unwrap();
    let dir = td.path().join("qs");
    let out = run_ok(std::process::Command::new("runuser").args([
        "-u",
        "nobody",
        "--",
        env!("CARGO_BIN_EXE_arbor"),
        "quickstart",
        dir.to_str().unwrap(),
    ]));
    has!(
        out,
        "M    /etc/hostname  (content)\nM    /etc/motd  (content)\nexit status 1\n"
    );
    has!(out, "/etc: no drift\nexit status 0\n");
    has!(out, "/etc/hostname\nedge-42\n\n# Done.");
}
