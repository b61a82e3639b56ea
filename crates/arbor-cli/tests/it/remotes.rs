//! Remote configuration, compared byte for byte with the config ostree
//! writes for the same sequence of `remote` commands.

use std::path::Path;

use tempfile::TempDir;

use crate::util::*;

fn config(repo: &Path) -> String {
    std::fs::read_to_string(repo.join("config")).unwrap()
}

#[test]
fn remote_config_matches_ostree() {
    require_ostree();
    let td = TempDir::new().unwrap();
    let ours = td.path().join("ours");
    let theirs = td.path().join("theirs");
    arbor_init(&ours, "archive");
    ostree_init(&theirs, "archive");
    let steps: &[&[&str]] = &[
        &[
            "add",
            "--no-gpg-verify",
            "origin",
            "http://127.0.0.1:8080/repo",
        ],
        &[
            "add",
            "--set=tls-permissive=true",
            "--set=a=b",
            "--no-gpg-verify",
            "o1",
            "http://a/repo",
        ],
        &[
            "add",
            "--no-sign-verify",
            "--set=gpg-verify=true",
            "o2",
            "http://b/r",
        ],
        &["add", "--set=url=http://override", "o3", "http://c/r"],
        &["delete", "o2"],
        &["add", "--if-not-exists", "o3", "http://ignored"],
        &["add", "--force", "o3", "http://new/r"],
        &["delete", "--if-exists", "nope"],
    ];
    for step in steps {
        let (sub, args) = step.split_first().unwrap();
        run_ok(
            arbor()
                .args(["remote", sub, "--repo"])
                .arg(&ours)
                .args(args),
        );
        run_ok(
            ostree()
                .args(["remote", sub])
                .arg(format!("--repo={}", theirs.display()))
                .args(args),
        );
        assert_eq!(config(&ours), config(&theirs), "after remote {step:?}");
    }
    let ours_list = run_ok(arbor().args(["remote", "list", "-u", "--repo"]).arg(&ours));
    let theirs_list = run_ok(
        ostree()
            .args(["remote", "list", "-u"])
            .arg(format!("--repo={}", theirs.display())),
    );
    assert_eq!(ours_list, theirs_list);
    let url = run_ok(
        arbor()
            .args(["remote", "show-url", "--repo"])
            .arg(&ours)
            .arg("o3"),
    );
    assert_eq!(url, "http://new/r\n");
    // Errors: as ostree, an existing remote, a missing one, a bad name.
    for args in [
        &["add", "origin", "http://dup"][..],
        &["delete", "nope"],
        &["show-url", "nope"],
        &["add", "bad/name", "http://x"],
    ] {
        let before = config(&ours);
        let (sub, rest) = args.split_first().unwrap();
        run_fail(
            arbor()
                .args(["remote", sub, "--repo"])
                .arg(&ours)
                .args(rest),
        );
        assert_eq!(
            config(&ours),
            before,
            "a failed {args:?} changed the config"
        );
    }
    // The repository still opens and is clean for ostree after our rewrites.
    run_ok(
        ostree()
            .args(["fsck"])
            .arg(format!("--repo={}", ours.display())),
    );
}

/// `--sign-verify` (Debian's ostree lacks ed25519, so the peer is the
/// layout documented from ostree 2025.7: key, then `sign-verify`).
#[test]
fn remote_sign_verify_layout() {
    let td = TempDir::new().unwrap();
    let repo = td.path().join("r");
    arbor_init(&repo, "archive");
    let key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    run_ok(
        arbor()
            .args(["remote", "add", "--repo"])
            .arg(&repo)
            .arg(format!("--sign-verify=ed25519=inline:{key}"))
            .args(["origin", "http://h/repo"]),
    );
    assert!(config(&repo).ends_with(&format!(
        "[remote \"origin\"]\nurl=http://h/repo\nverification-ed25519-key={key}\nsign-verify=ed25519\n"
    )), "{}", config(&repo));
    let shown: serde_json::Value = serde_json::from_str(&run_ok(
        arbor()
            .args(["remote", "show", "--json", "--repo"])
            .arg(&repo)
            .arg("origin"),
    ))
    .unwrap();
    assert_eq!(shown["url"], "http://h/repo");
    for bad in [
        "--sign-verify=rsa=inline:x",
        "--sign-verify=ed25519=inline:",
        "--sign-verify=ed25519",
    ] {
        run_fail(
            arbor()
                .args(["remote", "add", "--repo"])
                .arg(&repo)
                .args([bad, "o2", "http://x"]),
        );
    }
}
