//! The library reads no environment policy (issue 11, point 7): with
//! `SOURCE_DATE_EPOCH` set, a library commit still takes the time it is
//! given, or now. (The CLI honours the variable and passes it in.)
//!
//! Its own test binary, so setting the variable races with no other test.

// The library's dependencies, unused by this test
// (`-W unused-crate-dependencies`).
use {
    anyhow as _, arbor_fs as _, base64 as _, flate2 as _, fn_error_context as _, hex as _,
    rayon as _, ring as _, rustix as _, serde as _, tar as _, thiserror as _, tracing as _,
    zeroize as _,
};

use arbor_format::RepoMode;
use arbor_repo::commit::{commit, CommitOptions, CommitSource};
use arbor_repo::objects::load_commit;
use arbor_repo::{NullProgress, Repo};

#[test]
fn source_date_epoch_does_not_reach_a_library_commit() {
    std::env::set_var("SOURCE_DATE_EPOCH", "1");
    let td = tempfile::tempdir().unwrap();
    let tree = td.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("f"), "x").unwrap();
    let repo = Repo::init(&td.path().join("repo"), RepoMode::BareUserOnly).unwrap();
    let repo = repo.lock(false).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let c = commit(
        &repo,
        CommitSource::Dir(&tree),
        &CommitOptions::default(),
        &NullProgress,
    )
    .unwrap();
    let t = load_commit(&repo, &c).unwrap().timestamp;
    assert!(t >= now && t - now < 120, "timestamp {t}, now {now}");
    let given = CommitOptions {
        timestamp: Some(1577836800),
        ..Default::default()
    };
    let c = commit(&repo, CommitSource::Dir(&tree), &given, &NullProgress).unwrap();
    assert_eq!(load_commit(&repo, &c).unwrap().timestamp, 1577836800);
}
