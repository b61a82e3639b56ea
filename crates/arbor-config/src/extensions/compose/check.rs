//! Checking an extension before it is merged: complete, allowed top
//! level, no whiteouts, every object present and verified, no os-release.

use anyhow::{bail, Context, Result};
use arbor_format::{Commit, ObjectType};
use arbor_sysroot::layered::ExtensionRef;

use super::union::Union;
use super::{
    overrides, ALLOWED_TOP_LEVEL, FORBIDDEN_PATHS, OSTREE_WHITEOUT_PREFIX, WHITEOUT_PREFIX,
};
use crate::extensions::verify::{child_path, join, load_commit, require_complete};

impl Union<'_> {
    /// Checks extension `i` once, all of it: complete, top level allowed,
    /// no whiteouts, every dirtree and dirmeta verified, every file object
    /// present. Returns its commit.
    pub(super) fn check_extension(&mut self, i: usize, e: &ExtensionRef) -> Result<Commit> {
        let what = || format!("Checking extension {} ({})", e.name, e.commit);
        require_complete(self.repo, &e.commit).with_context(what)?;
        let commit = load_commit(self.repo, &e.commit).with_context(what)?;
        self.names.push(e.name.clone());
        self.overrides.push(overrides(&commit).with_context(what)?);
        self.walk_extension(&commit).with_context(what)?;
        self.refuse_forbidden(&commit).with_context(what)?;
        debug_assert_eq!(self.names.len(), i + 1);
        Ok(commit)
    }

    fn walk_extension(&mut self, commit: &Commit) -> Result<()> {
        self.verify_meta(&commit.root_meta).context("At /")?;
        let root = self.tree(&commit.root_tree).context("At /")?;
        if let Some(f) = root.files.first() {
            bail!("/{}: only directories {ALLOWED_TOP_LEVEL:?} are allowed at the top level of an extension", f.name);
        }
        if let Some(d) = root
            .dirs
            .iter()
            .find(|d| !ALLOWED_TOP_LEVEL.contains(&d.name.as_str()))
        {
            bail!(
                "/{}: only {ALLOWED_TOP_LEVEL:?} are allowed at the top level of an extension",
                d.name
            );
        }
        // Iterative, so a tree of any depth is fine.
        let mut stack = vec![(commit.root_tree, "/".to_string())];
        while let Some((tree, path)) = stack.pop() {
            if !self.checked.insert(tree) {
                continue;
            }
            let dt = self.tree(&tree).with_context(|| format!("At {path}"))?;
            for f in &dt.files {
                whiteout(&path, &f.name)?;
                if !self.repo.has_object(ObjectType::File, &f.checksum)? {
                    bail!(
                        "{}: file object {} is missing",
                        join(&path, &f.name),
                        f.checksum
                    );
                }
            }
            for d in dt.dirs.iter().rev() {
                whiteout(&path, &d.name)?;
                let p = child_path(&path, &d.name)?;
                self.verify_meta(&d.meta)
                    .with_context(|| format!("At {p}"))?;
                stack.push((d.tree, p));
            }
        }
        Ok(())
    }

    /// Refuses an extension carrying any of [`FORBIDDEN_PATHS`] (as any
    /// kind of entry).
    fn refuse_forbidden(&mut self, commit: &Commit) -> Result<()> {
        for path in FORBIDDEN_PATHS {
            let (dir, name) = path.rsplit_once('/').expect("the paths have a directory");
            let mut tree = Some(commit.root_tree);
            for comp in dir.split('/') {
                tree = match tree {
                    Some(t) => self
                        .tree(&t)?
                        .dirs
                        .iter()
                        .find(|d| d.name == comp)
                        .map(|d| d.tree),
                    None => None,
                };
            }
            let Some(t) = tree else { continue };
            let dt = self.tree(&t)?;
            if dt.files.iter().any(|f| f.name == name) || dt.dirs.iter().any(|d| d.name == name) {
                bail!(
                    "/{path}: an extension must not carry an os-release (systemd-sysext \
                     refuses such extensions; use {}/{}NAME)",
                    crate::extensions::release::EXTENSION_RELEASE_DIR,
                    crate::extensions::release::EXTENSION_RELEASE_PREFIX
                );
            }
        }
        Ok(())
    }
}

fn whiteout(path: &str, name: &str) -> Result<()> {
    if name.starts_with(WHITEOUT_PREFIX) || name.starts_with(OSTREE_WHITEOUT_PREFIX) {
        bail!(
            "{}: whiteouts ({WHITEOUT_PREFIX}* and {OSTREE_WHITEOUT_PREFIX}*) are not supported \
             in extensions",
            join(path, name)
        );
    }
    Ok(())
}
