//! Repository verification: every object re-hashed and parsed, then every
//! commit's tree checked for missing objects, and every ref for a commit.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, Result};
use arbor_format::{Checksum, Commit, DirTree, ObjectType};
use fn_error_context::context;
use rayon::prelude::*;
use serde::Serialize;

use crate::mutex::lock_recovering;
use crate::objects::{checksum_file_object, read_metadata};
use crate::progress::Progress;
use crate::repo::Repo;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FsckError {
    /// The object (`CHECKSUM.TYPE`), ref or file concerned.
    pub object: String,
    /// What is wrong.
    pub message: String,
}

/// Result of [`fsck`].
#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    /// Objects verified.
    pub objects: u64,
    /// Commit objects found.
    pub commits: u64,
    /// Commits marked partial (skipped for completeness checks).
    pub partial_commits: u64,
    /// Problems, sorted.
    pub errors: Vec<FsckError>,
}

/// Lists every loose object; unexpected files are reported as errors.
pub fn list_objects(
    repo: &Repo,
    errors: &mut Vec<FsckError>,
) -> Result<Vec<(ObjectType, Checksum)>> {
    let mut out = Vec::new();
    for ent in arbor_fs::list_dir(&repo.objects).context("Listing objects/")? {
        let Some(prefix) = arbor_fs::utf8_name(&ent.name) else {
            errors.push(FsckError {
                object: format!("objects/{}", String::from_utf8_lossy(&ent.name)),
                message: "unexpected entry in objects/".into(),
            });
            continue;
        };
        if prefix.len() != 2 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            errors.push(FsckError {
                object: format!("objects/{prefix}"),
                message: "unexpected entry in objects/".into(),
            });
            continue;
        }
        let dir = arbor_fs::open_dir(&repo.objects, prefix)?;
        for obj in arbor_fs::list_dir(&dir)? {
            let name = String::from_utf8_lossy(&obj.name).into_owned();
            let parsed = name.split_once('.').and_then(|(rest, ext)| {
                let t = ObjectType::from_extension(ext)?;
                let c = Checksum::from_hex(&format!("{prefix}{rest}")).ok()?;
                Some((t, c))
            });
            match parsed {
                Some(p) => out.push(p),
                None => errors.push(FsckError {
                    object: format!("objects/{prefix}/{name}"),
                    message: "unexpected file in objects/".into(),
                }),
            }
        }
    }
    Ok(out)
}

enum Parsed {
    Commit(Commit),
    Tree(DirTree),
    Other,
}

fn verify_object(repo: &Repo, t: ObjectType, c: &Checksum) -> Result<Parsed, String> {
    match t {
        ObjectType::File => {
            let actual = checksum_file_object(repo, c).map_err(|e| format!("{e:#}"))?;
            if actual != *c {
                return Err(format!("corrupted file object: content hashes to {actual}"));
            }
            Ok(Parsed::Other)
        }
        ObjectType::DirTree | ObjectType::DirMeta | ObjectType::Commit => {
            let data = read_metadata(repo, t, c).map_err(|e| format!("{e:#}"))?;
            let actual = Checksum::digest(&data);
            if actual != *c {
                return Err(format!("corrupted {t} object: content hashes to {actual}"));
            }
            match t {
                ObjectType::DirTree => DirTree::decode(&data).map(Parsed::Tree),
                ObjectType::DirMeta => arbor_format::DirMeta::decode(&data).map(|_| Parsed::Other),
                _ => Commit::decode(&data).map(Parsed::Commit),
            }
            .map_err(|e| format!("invalid {t} object: {e}"))
        }
        ObjectType::CommitMeta | ObjectType::TombstoneCommit => {
            let data = read_metadata(repo, t, c).map_err(|e| format!("{e:#}"))?;
            if data.is_empty() {
                return Ok(Parsed::Other);
            }
            arbor_format::Metadata::decode(&data)
                .map(|_| Parsed::Other)
                .map_err(|e| format!("invalid {t} object: {e}"))
        }
        _ => Ok(Parsed::Other),
    }
}

struct Walk<'a> {
    present: &'a HashSet<(ObjectType, Checksum)>,
    trees: &'a HashMap<Checksum, DirTree>,
    seen: HashSet<Checksum>,
    errors: Vec<FsckError>,
}

impl Walk<'_> {
    fn missing(&mut self, commit: &Checksum, t: ObjectType, c: &Checksum, path: &str) {
        self.errors.push(FsckError {
            object: format!("{c}.{t}"),
            message: format!("missing {t} object (at {path} in commit {commit})"),
        });
    }

    /// Checks a tree and everything below it. Iterative, in the order a
    /// recursive walk would report, so any depth works.
    fn tree(&mut self, commit: &Checksum, tree: &Checksum, path: &str) {
        let mut stack = vec![(*tree, path.to_string())];
        while let Some((tree, path)) = stack.pop() {
            if !self.seen.insert(tree) {
                continue;
            }
            if !self.present.contains(&(ObjectType::DirTree, tree)) {
                self.missing(commit, ObjectType::DirTree, &tree, &path);
                continue;
            }
            // A corrupt dirtree was reported already; nothing to descend into.
            let Some(dt) = self.trees.get(&tree) else {
                continue;
            };
            for f in &dt.files {
                if !self.present.contains(&(ObjectType::File, f.checksum)) {
                    self.missing(
                        commit,
                        ObjectType::File,
                        &f.checksum,
                        &format!("{path}/{}", f.name),
                    );
                }
            }
            let mut subdirs = Vec::with_capacity(dt.dirs.len());
            for d in &dt.dirs {
                let p = format!("{path}/{}", d.name);
                if !self.present.contains(&(ObjectType::DirMeta, d.meta)) {
                    self.missing(commit, ObjectType::DirMeta, &d.meta, &p);
                }
                subdirs.push((d.tree, p));
            }
            stack.extend(subdirs.into_iter().rev());
        }
    }
}

/// Verifies the whole repository. Problems are returned in the report,
/// not as an error; an error means the check itself could not run.
#[context("Checking repository {}", repo.path().display())]
pub fn fsck(repo: &Repo, progress: &dyn Progress) -> Result<FsckReport> {
    let mut errors = Vec::new();
    let objects = list_objects(repo, &mut errors)?;
    progress.start("Verifying objects", objects.len() as u64);
    let errs = Mutex::new(Vec::new());
    let parsed: Vec<(Checksum, Parsed)> = objects
        .par_iter()
        .filter_map(|(t, c)| {
            let r = verify_object(repo, *t, c);
            progress.inc(1);
            match r {
                Ok(p) => Some((*c, p)),
                Err(message) => {
                    // A panicked task is reported by rayon itself; the
                    // error list it may have left half-pushed is still a
                    // list, so the report goes on.
                    lock_recovering(&errs).push(FsckError {
                        object: format!("{c}.{t}"),
                        message,
                    });
                    None
                }
            }
        })
        .collect();
    progress.finish();
    errors.extend(errs.into_inner().unwrap_or_else(PoisonError::into_inner));
    let present: HashSet<(ObjectType, Checksum)> = objects.iter().copied().collect();
    let mut trees = HashMap::new();
    let mut commits = Vec::new();
    for (c, p) in parsed {
        match p {
            Parsed::Tree(t) => {
                trees.insert(c, t);
            }
            Parsed::Commit(cm) => commits.push((c, cm)),
            Parsed::Other => {}
        }
    }
    let mut report = FsckReport {
        objects: objects.len() as u64,
        commits: commits.len() as u64,
        ..Default::default()
    };
    let (refs, bad_refs) = crate::refs::list_refs_lenient(repo)?;
    for (name, c) in refs {
        if !present.contains(&(ObjectType::Commit, c)) {
            errors.push(FsckError {
                object: format!("ref {name}"),
                message: format!("points to missing commit {c}"),
            });
        }
    }
    // An unreadable or garbage ref is a finding; the other refs are still checked.
    for (name, e) in bad_refs {
        errors.push(FsckError {
            object: format!("ref {name}"),
            message: format!("{e:#}"),
        });
    }
    let mut walk = Walk {
        present: &present,
        trees: &trees,
        seen: HashSet::new(),
        errors: Vec::new(),
    };
    commits.sort_by_key(|(c, _)| *c);
    for (c, cm) in &commits {
        if repo.is_partial(c)? {
            report.partial_commits += 1;
            continue;
        }
        if !present.contains(&(ObjectType::DirMeta, cm.root_meta)) {
            walk.missing(c, ObjectType::DirMeta, &cm.root_meta, "/");
        }
        walk.tree(c, &cm.root_tree, "");
    }
    errors.extend(walk.errors);
    errors.sort();
    errors.dedup();
    report.errors = errors;
    Ok(report)
}
