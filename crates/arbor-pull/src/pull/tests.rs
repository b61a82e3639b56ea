//! The engine over an in-memory [`Source`]: what any source gets.

use std::collections::HashMap;

use arbor_format::{DirMeta, DirTree, DirTreeDir, Metadata, RepoMode};
use arbor_repo::progress::NullProgress;

use super::source::{FileStream, Transfer};
use super::*;

/// Objects by type and checksum; `lie` serves other bytes under a name.
#[derive(Default)]
struct MemSource {
    objects: HashMap<(ObjectType, Checksum), Vec<u8>>,
    lie: Option<(ObjectType, Checksum, Vec<u8>)>,
}

impl MemSource {
    fn add(&mut self, t: ObjectType, data: Vec<u8>) -> Checksum {
        let c = Checksum::digest(&data);
        self.objects.insert((t, c), data);
        c
    }

    /// A tree `depth` directories deep (no files), and a chain of
    /// `commits` commits on it; returns the newest.
    fn history(&mut self, depth: usize, commits: usize) -> Checksum {
        let meta = self.add(
            ObjectType::DirMeta,
            DirMeta {
                uid: 0,
                gid: 0,
                mode: 0o40755,
                xattrs: vec![],
            }
            .encode(),
        );
        let mut tree = self.add(ObjectType::DirTree, DirTree::default().encode());
        for _ in 0..depth {
            let dt = DirTree {
                files: vec![],
                dirs: vec![DirTreeDir {
                    name: "d".into(),
                    tree,
                    meta,
                }],
            };
            tree = self.add(ObjectType::DirTree, dt.encode());
        }
        let mut parent = None;
        for i in 0..commits {
            let commit = Commit {
                metadata: Metadata::new(),
                parent,
                related: vec![],
                subject: format!("c{i}"),
                body: String::new(),
                timestamp: i as u64,
                root_tree: tree,
                root_meta: meta,
            };
            parent = Some(self.add(ObjectType::Commit, commit.encode()));
        }
        parent.expect("at least one commit")
    }
}

impl Source for MemSource {
    fn name(&self) -> &str {
        "memory"
    }

    fn metadata(&self, t: ObjectType, c: &Checksum, _limit: u64) -> Result<Option<Vec<u8>>> {
        if let Some((lt, lc, bytes)) = &self.lie {
            if (*lt, lc) == (t, c) {
                return Ok(Some(bytes.clone()));
            }
        }
        Ok(self.objects.get(&(t, *c)).cloned())
    }

    fn file(
        &self,
        _c: &Checksum,
        _store: &mut dyn FnMut(FileStream<'_>) -> Result<()>,
    ) -> Result<Option<u64>> {
        Ok(None)
    }

    fn file_size(&self, _c: &Checksum) -> Result<Option<u64>> {
        Ok(None)
    }

    fn transfer(&self) -> Transfer {
        Transfer::default()
    }
}

fn engine<'a>(repo: &'a RepoLock<'a>, source: &'a MemSource, depth: Option<u32>) -> Engine<'a> {
    Engine {
        repo,
        source,
        checks: Checks {
            keys: None,
            collection_id: None,
            verify_bindings: true,
            allow_downgrade: false,
            ref_remote: None,
        },
        depth,
        commit_metadata_only: false,
        dry_run: false,
        workers: 4,
        phase: "test",
        progress: &NullProgress,
    }
}

fn wanted(commit: Checksum) -> Vec<Wanted> {
    vec![Wanted {
        name: Some(RefName::new("main").expect("valid")),
        commit,
        size: None,
    }]
}

#[test]
fn depth_counts_parents_and_none_is_all() {
    for (depth, commits) in [(Some(0), 1), (Some(1), 2), (Some(7), 4), (None, 4)] {
        let td = tempfile::tempdir().expect("tempdir");
        let repo = Repo::init(td.path(), RepoMode::BareUser).expect("init");
        let repo = repo.lock(false).expect("lock");
        let mut src = MemSource::default();
        let head = src.history(2, 4);
        let stats = engine(&repo, &src, depth).run(&wanted(head)).expect("pull");
        assert_eq!(stats.commits, commits, "{depth:?}");
        // The shared tree is fetched once: 3 dirtrees and the dirmeta.
        assert_eq!(stats.metadata_fetched, commits + 4, "{depth:?}");
    }
}

#[test]
fn a_deep_tree_is_walked_without_recursion() {
    // Far deeper than a recursive walk survives on a worker's 2 MiB
    // stack. A dry run keeps what it fetches in memory: no disk I/O.
    let td = tempfile::tempdir().expect("tempdir");
    let repo = Repo::init(td.path(), RepoMode::BareUser).expect("init");
    let repo = repo.lock(false).expect("lock");
    let mut src = MemSource::default();
    let head = src.history(50_000, 1);
    let mut e = engine(&repo, &src, Some(0));
    e.dry_run = true;
    let stats = e.run(&wanted(head)).expect("pull");
    assert_eq!(stats.metadata_fetched, 50_000 + 3);
}

#[test]
fn an_object_that_does_not_hash_to_its_name_is_refused() {
    let td = tempfile::tempdir().expect("tempdir");
    let repo = Repo::init(td.path(), RepoMode::BareUser).expect("init");
    let repo = repo.lock(false).expect("lock");
    let mut src = MemSource::default();
    let head = src.history(3, 1);
    let commit = Commit::decode(&src.objects[&(ObjectType::Commit, head)]).expect("commit");
    let other = DirTree::default().encode();
    src.lie = Some((ObjectType::DirTree, commit.root_tree, other));
    let err = engine(&repo, &src, Some(0))
        .run(&wanted(head))
        .expect_err("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "Corrupted dirtree object {} from memory",
            commit.root_tree
        )),
        "{msg}"
    );
    assert!(arbor_repo::refs::list_refs(&repo).expect("refs").is_empty());
    assert!(!repo
        .has_object(ObjectType::Commit, &head)
        .expect("has_object"));
}

/// The commits of the chain ending at `head`, newest first.
fn chain(src: &MemSource, head: Checksum) -> Vec<Checksum> {
    let mut out = vec![head];
    while let Some(p) = Commit::decode(&src.objects[&(ObjectType::Commit, out[out.len() - 1])])
        .expect("commit")
        .parent
    {
        out.push(p);
    }
    out
}

#[test]
fn a_parent_missing_on_the_source_ends_the_history() {
    // As ostree: a source may end in a dangling parent, with or without
    // detached metadata for it (a shallow mirror keeps commitmeta).
    for with_meta in [false, true] {
        for depth in [Some(5), None] {
            let td = tempfile::tempdir().expect("tempdir");
            let repo = Repo::init(td.path(), RepoMode::BareUser).expect("init");
            let repo = repo.lock(false).expect("lock");
            let mut src = MemSource::default();
            let head = src.history(2, 4);
            let oldest = *chain(&src, head).last().expect("oldest");
            src.objects.remove(&(ObjectType::Commit, oldest));
            if with_meta {
                src.objects
                    .insert((ObjectType::CommitMeta, oldest), Metadata::new().encode());
            }
            let stats = engine(&repo, &src, depth)
                .run(&wanted(head))
                .unwrap_or_else(|e| panic!("{with_meta} {depth:?}: {e:#}"));
            assert_eq!(stats.commits, 3, "{with_meta} {depth:?}");
            assert_eq!(
                arbor_repo::refs::list_refs(&repo).expect("refs"),
                vec![("main".to_string(), head)]
            );
            assert!(!repo
                .has_object(ObjectType::Commit, &oldest)
                .expect("has_object"));
        }
    }
}

#[test]
fn a_requested_commit_missing_on_the_source_fails() {
    for depth in [Some(0), Some(5), None] {
        let td = tempfile::tempdir().expect("tempdir");
        let repo = Repo::init(td.path(), RepoMode::BareUser).expect("init");
        let repo = repo.lock(false).expect("lock");
        let mut src = MemSource::default();
        let head = src.history(2, 2);
        src.objects.remove(&(ObjectType::Commit, head));
        let err = engine(&repo, &src, depth)
            .run(&wanted(head))
            .expect_err("a missing requested commit");
        assert!(
            format!("{err:#}").contains(&format!("commit object {head} not found on memory")),
            "{depth:?}: {err:#}"
        );
        assert!(arbor_repo::refs::list_refs(&repo).expect("refs").is_empty());
    }
}
