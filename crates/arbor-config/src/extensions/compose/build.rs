//! Building a composition: the checks in order, the union of the trees,
//! then the composed commit object.

use std::collections::HashSet;

use anyhow::{bail, Context, Result};
use arbor_format::commit::VERSION_KEY;
use arbor_format::metadata::Value;
use arbor_format::{Checksum, Commit, Metadata};
use arbor_repo::Repo;
use arbor_sysroot::layered::{
    validate_name, ExtensionRef, Layers, BASE_COMMIT_KEY, EXTENSIONS_KEY,
};
use fn_error_context::context;

use super::union::Union;
use super::Composed;
use crate::extensions::release::short;
use crate::extensions::verify::{load_commit, require_complete};

/// A composition, in memory.
pub(super) struct Built {
    pub(super) composed: Composed,
    /// Encoded dirtrees of the directories where trees meet.
    pub(super) trees: Vec<Vec<u8>>,
    /// The encoded commit (`None` for an empty list).
    pub(super) commit_bytes: Option<Vec<u8>>,
}

#[context(
    "Composing {} on base {}",
    if extensions.is_empty() { "no extensions".to_string() } else { names(extensions) },
    short(base)
)]
pub(super) fn build(
    repo: &Repo,
    base: &Checksum,
    extensions: &[ExtensionRef],
    max_object: u64,
) -> Result<Built> {
    let base_commit = load_commit(repo, base)?;
    if extensions.is_empty() {
        return Ok(Built {
            composed: Composed {
                commit: *base,
                layers: Layers {
                    base: *base,
                    extensions: Vec::new(),
                },
                dirtrees: 0,
            },
            trees: Vec::new(),
            commit_bytes: None,
        });
    }
    require_complete(repo, base)?;
    if let Some(layers) = Layers::from_commit(&base_commit)? {
        bail!(
            "{base} is itself a composed commit (base {}): compose on its base",
            layers.base
        );
    }
    let mut seen = HashSet::new();
    for e in extensions {
        validate_name(&e.name)?;
        if !seen.insert(e.name.as_str()) {
            bail!("Extension {} is listed twice", e.name);
        }
    }
    let mut u = Union::new(repo, base, &base_commit)?;
    let mut commits = Vec::with_capacity(extensions.len());
    for (i, e) in extensions.iter().enumerate() {
        let c = u.check_extension(i, e)?;
        crate::extensions::release::check(repo, base, e)?;
        commits.push(c);
    }
    for (i, (e, c)) in extensions.iter().zip(&commits).enumerate() {
        u.merge_extension(i, e, c)
            .with_context(|| format!("Adding extension {}", e.name))?;
    }
    let (root_tree, trees) = u.finish(max_object)?;
    let mut metadata = Metadata::new();
    if let Some(v) = base_commit.metadata.get_str(VERSION_KEY) {
        metadata.push(VERSION_KEY, Value::Str(v.to_string()));
    }
    metadata.push(BASE_COMMIT_KEY, Value::Str(base.to_hex()));
    let entries = extensions.iter().map(ExtensionRef::to_entry).collect();
    metadata.push(EXTENSIONS_KEY, Value::StrArray(entries));
    let commit = Commit {
        metadata,
        parent: Some(*base),
        related: Vec::new(),
        subject: format!("Extensions: {}", names(extensions)),
        body: String::new(),
        timestamp: base_commit.timestamp,
        root_tree,
        root_meta: base_commit.root_meta,
    };
    let bytes = commit.encode();
    Ok(Built {
        composed: Composed {
            commit: Checksum::digest(&bytes),
            layers: Layers {
                base: *base,
                extensions: extensions.to_vec(),
            },
            dirtrees: trees.len(),
        },
        trees,
        commit_bytes: Some(bytes),
    })
}

fn names(extensions: &[ExtensionRef]) -> String {
    let v: Vec<&str> = extensions.iter().map(|e| e.name.as_str()).collect();
    v.join(", ")
}
