//! Deployments of composed commits: a base commit plus extensions.
//!
//! A deployment with extensions runs a *composed commit* (built by
//! arbor-config from the base's and the extensions' trees). The composed
//! commit describes itself in its metadata, so a deployment's base and
//! extension list are read from its commit ([`Layers::from_commit`]) and a
//! rollback restores the previous list with the previous deployment:
//!
//! - [`BASE_COMMIT_KEY`] (`s`): the base commit, 64 hex;
//! - [`EXTENSIONS_KEY`] (`as`): one `NAME:COMMIT` string per extension, in
//!   the order they were composed.
//!
//! A composed commit's parent is its base. The keys are honoured only on
//! such a commit: a commit whose [`BASE_COMMIT_KEY`] is not its parent
//! (say, a composed commit's metadata copied onto a vendor's release) is a
//! plain commit, its own base, with no extensions ([`Layers::from_commit`],
//! [`base_of`]).
//!
//! Three families of local refs keep what deployments need through `prune`
//! and `cleanup` (arbor's, and ostree's `prune --refs-only` and
//! `admin cleanup`, which prune at depth 0, alike):
//! [`COMPOSED_REF_PREFIX`]`<COMPOSED-HEX>` for each composed commit,
//! [`BASE_REF_PREFIX`]`<BASE-HEX>` for its base (which no other ref names
//! once the base's branch moves on, and which a later `extension add` or
//! `remove` composes on), both set with the composed commit, and
//! [`EXTENSION_REF_PREFIX`]`<NAME>/<COMMIT-HEX>` for each listed extension
//! (re-composed on every upgrade). [`collect_refs`] deletes those no
//! deployment uses and sets those missing for a composed deployment (a
//! composed commit written before its base had a ref, a ref deleted by
//! hand); [`crate::write::cleanup`] runs it before pruning.
//!
//! Loading is lenient, as `status` must work on any sysroot: a deployment
//! whose commit has malformed [`BASE_COMMIT_KEY`]/[`EXTENSIONS_KEY`]
//! values is loaded without layers (a plain commit: its base is itself, it
//! lists no extension), and the reason is logged at debug level
//! ([`crate::Sysroot::commit_details`]). A deployment whose commit cannot
//! be read at all is loaded without layers too, but marked
//! [`crate::Deployment::layers_unknown`]: it may be a composed commit whose
//! base and extensions are unknown, so [`collect_refs`] deletes no ref
//! while any deployment is so (with a warning naming it and the remedy:
//! pull its commit again, or undeploy it). The cleanup's prune still runs:
//! the refs left in place keep what such a deployment can need.
//!
//! The deploy hook that produces composed commits is
//! [`crate::compose::CommitLayering`] (`DeployOptions::layering`).

use anyhow::{bail, Context, Result};
use arbor_format::metadata::Value;
use arbor_format::{Checksum, Commit};

/// Refuses a deploy or switch target naming one of arbor's internal refs
/// ([`COMPOSED_REF_PREFIX`], [`BASE_REF_PREFIX`], [`EXTENSION_REF_PREFIX`]):
/// the new deployment's origin would follow that ref, which arbor moves
/// and deletes itself, so every later upgrade would fail.
pub fn refuse_internal_ref(revision: &str) -> Result<()> {
    for prefix in [COMPOSED_REF_PREFIX, BASE_REF_PREFIX, EXTENSION_REF_PREFIX] {
        if revision.starts_with(prefix) {
            bail!(
                "{revision} is one of arbor's internal refs ({prefix}*), not a deploy target: \
                 deploy the ref or commit the deployment follows (see 'arbor status'); \
                 'arbor rollback' returns to the previous deployment"
            );
        }
    }
    Ok(())
}

/// Commit metadata key: the base commit of a composed commit.
pub const BASE_COMMIT_KEY: &str = "arbor.base-commit";
/// Commit metadata key: the extensions of a composed commit (`as` of
/// `NAME:COMMIT`).
pub const EXTENSIONS_KEY: &str = "arbor.extensions";
/// Ref prefix of composed commits: `arbor/composed/<COMMIT-HEX>`.
pub const COMPOSED_REF_PREFIX: &str = "arbor/composed/";
/// Ref prefix of the bases of composed commits: `arbor/bases/<COMMIT-HEX>`,
/// set with the composed commit, so that a depth-0 prune (ostree's own
/// `admin cleanup`) keeps the base a later `extension add` or `remove`
/// composes on.
pub const BASE_REF_PREFIX: &str = "arbor/bases/";
/// Ref prefix of listed extensions: `arbor/extensions/<NAME>/<COMMIT-HEX>`.
pub const EXTENSION_REF_PREFIX: &str = "arbor/extensions/";

/// One extension of a composed commit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtensionRef {
    /// Its name (unique in a list).
    pub name: String,
    /// Its commit.
    pub commit: Checksum,
}

impl ExtensionRef {
    /// `NAME:COMMIT`, the form in [`EXTENSIONS_KEY`] and in state checksums.
    pub fn to_entry(&self) -> String {
        format!("{}:{}", self.name, self.commit.to_hex())
    }

    /// Parses `NAME:COMMIT`.
    pub fn parse(entry: &str) -> Result<ExtensionRef> {
        let (name, commit) = entry
            .split_once(':')
            .with_context(|| format!("Invalid extension entry {entry:?}: expected NAME:COMMIT"))?;
        validate_name(name)?;
        let commit = Checksum::from_hex(commit)
            .with_context(|| format!("Invalid extension entry {entry:?}"))?;
        Ok(ExtensionRef {
            name: name.to_string(),
            commit,
        })
    }

    /// The ref that keeps this extension's commit:
    /// `arbor/extensions/<NAME>/<COMMIT-HEX>`.
    pub fn ref_name(&self) -> String {
        format!(
            "{EXTENSION_REF_PREFIX}{}/{}",
            self.name,
            self.commit.to_hex()
        )
    }
}

/// Checks an extension name: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        bail!(
            "Invalid extension name {name:?}: expected a letter or digit, then up to 63 \
             letters, digits, '.', '_' or '-'"
        );
    }
    Ok(())
}

/// The base and extensions of a composed commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers {
    /// The base commit.
    pub base: Checksum,
    /// The extensions, in order (never empty for a composed commit).
    pub extensions: Vec<ExtensionRef>,
}

impl Layers {
    /// The layers a commit's metadata records; `None` for a commit that
    /// was not composed: no [`BASE_COMMIT_KEY`], or one that is not the
    /// commit's parent (a composed commit's parent is its base). Malformed
    /// keys are an error (which deployment loading logs and ignores).
    pub fn from_commit(commit: &Commit) -> Result<Option<Layers>> {
        let Some(base) = commit.metadata.get(BASE_COMMIT_KEY) else {
            return Ok(None);
        };
        let base = base
            .as_str()
            .with_context(|| format!("{BASE_COMMIT_KEY} is not a string"))?;
        let base =
            Checksum::from_hex(base).with_context(|| format!("Invalid {BASE_COMMIT_KEY}"))?;
        if commit.parent != Some(base) {
            return Ok(None);
        }
        let extensions = match commit.metadata.get(EXTENSIONS_KEY) {
            Some(Value::StrArray(v)) => v
                .iter()
                .map(|e| ExtensionRef::parse(e))
                .collect::<Result<Vec<_>>>()?,
            Some(_) => bail!("{EXTENSIONS_KEY} is not a string array"),
            None => bail!("A commit with {BASE_COMMIT_KEY} lacks {EXTENSIONS_KEY}"),
        };
        Ok(Some(Layers { base, extensions }))
    }
}

/// The base of `commit`: its [`BASE_COMMIT_KEY`] if it is a composed
/// commit (the key names its parent, [`Layers::from_commit`]), else the
/// commit itself.
pub fn base_of(repo: &arbor_repo::Repo, commit: &Checksum) -> Result<Checksum> {
    let c = arbor_repo::objects::load_commit(repo, commit)?;
    Ok(Layers::from_commit(&c)?.map_or(*commit, |l| l.base))
}

/// Brings the extension refs in line with the deployments: deletes the
/// [`COMPOSED_REF_PREFIX`] refs whose commit no deployment (staged
/// included) runs, the [`BASE_REF_PREFIX`] refs whose commit is no
/// deployment's base ([`crate::Deployment::base_commit`]), and the
/// [`EXTENSION_REF_PREFIX`] refs whose extension no deployment lists;
/// and sets those a deployment needs that are missing (a composition
/// written before base refs existed, a ref deleted by hand): for each
/// composed deployment its `arbor/composed/<HEX>`, its base's
/// `arbor/bases/<HEX>` and each listed extension's
/// `arbor/extensions/<NAME>/<HEX>`, when that commit is in the
/// repository. With those refs, a prune (arbor's, or ostree's at depth 0)
/// keeps everything a deployment's re-composition needs. Returns the refs
/// deleted, sorted (the refs set are logged at debug level).
///
/// The deployments are read again first (every stateroot, the staged one
/// on a booted system): the lock may have been released and taken again
/// since `s` was loaded, and another command may have deployed a composed
/// commit meanwhile, whose refs a stale list would delete. While any
/// deployment's layers are unknown (its commit could not be read,
/// [`crate::Deployment::layers_unknown`]) nothing is deleted (the refs
/// set still are): a warning names the deployment and the remedy. Only
/// refs named as arbor names them are considered: `arbor/composed/<HEX>`,
/// `arbor/bases/<HEX>` and `arbor/extensions/<NAME>/<HEX>` pointing at
/// the commit `HEX`; anything else under those prefixes (another layout,
/// a ref re-pointed by hand) is neither deleted nor reset. All changes are
/// one ref transaction, under the repository lock.
pub fn collect_refs(s: &mut crate::sysroot::SysrootLock<'_>) -> Result<Vec<String>> {
    use arbor_format::{ObjectType, RefName};
    use arbor_repo::refs::{RefSpec, RefUpdate};
    use std::collections::{BTreeMap, BTreeSet};
    s.load()?;
    let deployments = s.deployments();
    let unknown = deployments.iter().find(|d| d.layers_unknown);
    if let Some(d) = unknown {
        tracing::warn!(
            "Not deleting unused extension refs: {}",
            unknown_layers_remedy(s, d)
        );
    }
    let running: BTreeSet<Checksum> = deployments.iter().map(|d| d.csum).collect();
    let bases: BTreeSet<Checksum> = deployments.iter().map(|d| d.base_commit()).collect();
    let listed: BTreeSet<&ExtensionRef> = deployments.iter().flat_map(|d| d.extensions()).collect();
    // The refs the composed deployments need: name -> commit.
    let mut needed: BTreeMap<String, Checksum> = BTreeMap::new();
    for d in deployments {
        let Some(l) = &d.layers else {
            continue;
        };
        needed.insert(format!("{COMPOSED_REF_PREFIX}{}", d.csum.to_hex()), d.csum);
        needed.insert(format!("{BASE_REF_PREFIX}{}", l.base.to_hex()), l.base);
        for e in &l.extensions {
            needed.insert(e.ref_name(), e.commit);
        }
    }
    let repo = s.repo();
    // Every ref under the three prefixes, with its target: a needed name
    // that is missing or names another commit is (re)set below.
    let mut existing: BTreeMap<String, Checksum> = BTreeMap::new();
    let mut doomed = Vec::new();
    for (prefix, keep) in [(COMPOSED_REF_PREFIX, &running), (BASE_REF_PREFIX, &bases)] {
        let dir = prefix.trim_end_matches('/');
        for (name, c) in arbor_repo::refs::list_refs_under(repo, &format!("heads/{dir}"))? {
            existing.insert(format!("{prefix}{name}"), c);
            if Checksum::from_hex(&name).ok() == Some(c) && !keep.contains(&c) {
                doomed.push(format!("{prefix}{name}"));
            }
        }
    }
    let extensions = EXTENSION_REF_PREFIX.trim_end_matches('/');
    for (name, c) in arbor_repo::refs::list_refs_under(repo, &format!("heads/{extensions}"))? {
        existing.insert(format!("{EXTENSION_REF_PREFIX}{name}"), c);
        let Some((ext, hex)) = name.split_once('/') else {
            continue;
        };
        if validate_name(ext).is_err() || Checksum::from_hex(hex).ok() != Some(c) {
            continue;
        }
        let e = ExtensionRef {
            name: ext.to_string(),
            commit: c,
        };
        if !listed.contains(&e) {
            doomed.push(e.ref_name());
        }
    }
    if unknown.is_some() {
        doomed.clear();
    }
    doomed.sort();
    let mut added = Vec::new();
    for (name, c) in &needed {
        if existing.get(name) != Some(c) && repo.has_object(ObjectType::Commit, c)? {
            added.push((name.clone(), *c));
        }
    }
    if !doomed.is_empty() || !added.is_empty() {
        let mut updates = added
            .iter()
            .map(|(n, c)| Ok(RefUpdate::set(RefSpec::local(RefName::new(n.clone())?), *c)))
            .collect::<Result<Vec<_>>>()?;
        for n in &doomed {
            updates.push(RefUpdate::delete(RefSpec::local(RefName::new(n.clone())?)));
        }
        arbor_repo::refs::update_refs(&repo.lock(false)?, &updates)
            .context("Updating the extension refs")?;
        tracing::debug!("set missing refs: {added:?}; deleted unused refs: {doomed:?}");
    }
    Ok(doomed)
}

/// Why a deployment's layers are unknown, and what to do about it.
pub(crate) fn unknown_layers_remedy(s: &crate::Sysroot, d: &crate::Deployment) -> String {
    let index = s
        .deployments()
        .iter()
        .position(|x| x.same(d))
        .map_or_else(|| "?".to_string(), |i| i.to_string());
    format!(
        "the commit {} of deployment {index} ({}) cannot be read, so the base and \
         extensions it needs are unknown: pull that commit again from its remote, or \
         undeploy the deployment (`arbor undeploy {index}`)",
        d.csum,
        d.dir_name(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let e = ExtensionRef {
            name: "tools".into(),
            commit: Checksum::from_array([7; 32]),
        };
        assert_eq!(ExtensionRef::parse(&e.to_entry()).unwrap(), e);
        assert_eq!(
            e.ref_name(),
            format!("arbor/extensions/tools/{}", "07".repeat(32))
        );
        for bad in [
            "",
            "tools",
            ":ab",
            "a/b:00",
            &format!(".x:{}", "0".repeat(64)),
        ] {
            assert!(ExtensionRef::parse(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
#[path = "layered_tests.rs"]
mod sysroot_tests;

#[cfg(test)]
#[path = "layered_refs_tests.rs"]
mod refs_tests;
