//! The object-level union of a base commit and its extensions.
//!
//! The composed tree is built from dirtree and dirmeta objects only (no
//! checkout, no file content read or hashed): a directory only one tree
//! has keeps its existing (dirtree, dirmeta) checksums, and only the
//! directories where trees meet are loaded and get new dirtrees. The
//! result equals what `ostree commit --tree=ref=BASE --tree=ref=EXT...`
//! writes for the same trees, as long as no rule below refuses them, with
//! one exception: an extension's top-level `etc` is moved to `usr/etc`,
//! which ostree does not do. The composition of such an extension equals
//! `ostree commit --tree=ref=BASE --tree=dir=D` where D is the extension
//! checked out with its `etc` moved into `usr/etc`.
//!
//! Rules (the trees are taken in order: base, then each extension):
//! - a directory present in several trees must have the same dirmeta
//!   (mode, owner, xattrs), else it is a conflict (ostree would silently
//!   take the last one's);
//! - a path that is a file (regular or symlink) in two trees must have the
//!   same file object, unless the later extension lists the path (or a
//!   directory above it) in its commit metadata [`OVERRIDES_KEY`], then
//!   the later one wins; a file against a directory is always an error;
//! - an extension's top level may hold only `usr`, `opt` and `etc`; its
//!   `etc/...` is composed into `usr/etc/...` (the OS defaults, which the
//!   /etc three-way merge brings to /etc), under the same rules (an
//!   override of `/etc/X` means `/usr/etc/X`);
//! - whiteouts (names starting with `.wh.`, or `.ostree-wh.` as ostree
//!   quotes overlay whiteouts) are refused anywhere in an extension;
//! - an extension must not carry an os-release (`usr/lib/os-release`,
//!   `usr/etc/os-release`, `etc/os-release`), override or not, as
//!   systemd-sysext refuses such extensions;
//! - an extension with both `etc/X` and `usr/etc/X` must give them the
//!   same content (override or not);
//! - no directory path may reach [`MAX_PATH`] bytes (`PATH_MAX`, NUL
//!   included): this bounds the work on hostile deep trees, and is no
//!   exact checkout check (file names are not counted, and each dirtree
//!   is measured once, at the first path the walk meets it; see
//!   [`MAX_PATH`]);
//! - each composed dirtree must fit [`MAX_METADATA_SIZE`], which every
//!   reader of the repository enforces;
//! - each extension must fit the base ([`super::release::check`]);
//! - every extension commit is complete: not partial, every dirtree and
//!   dirmeta hashes to its name and parses, every file object exists.
//!
//! The composed commit: metadata `version` (the base's, when it has one),
//! [`BASE_COMMIT_KEY`], [`EXTENSIONS_KEY`] in that order; subject
//! `Extensions: a, b`; empty body; parent and timestamp the base's; no ref
//! bindings. [`compose`] also sets `arbor/composed/<HEX>` and
//! `arbor/bases/<BASE-HEX>` in the transaction that writes it. Nothing depends on time, randomness or hash-map order, so the
//! same inputs give the same checksum on any machine.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use anyhow::{anyhow, bail, Context, Result};
use arbor_format::commit::VERSION_KEY;
use arbor_format::metadata::Value;
use arbor_format::RefName;
use arbor_format::{
    Checksum, Commit, DirMeta, DirTree, DirTreeDir, DirTreeFile, Metadata, ObjectType,
};
use arbor_repo::objects::MAX_METADATA_SIZE;
use arbor_repo::refs::{RefSpec, RefUpdate};
use arbor_repo::repo::RepoLock;
use arbor_repo::txn::Transaction;
use arbor_repo::Repo;
use arbor_sysroot::layered::{
    validate_name, ExtensionRef, Layers, BASE_COMMIT_KEY, BASE_REF_PREFIX, COMPOSED_REF_PREFIX,
    EXTENSIONS_KEY,
};
use fn_error_context::context;

use super::release::short;
pub use super::verify::MAX_PATH;
use super::verify::{child_path, join, load_commit, load_dirmeta, load_dirtree, require_complete};

/// Commit metadata key of an extension: the paths it may replace (`as` of
/// absolute paths; an entry covers that path and everything below it).
pub const OVERRIDES_KEY: &str = "arbor.extension.overrides";

/// The only top-level directories an extension may have.
pub const ALLOWED_TOP_LEVEL: [&str; 3] = ["usr", "opt", "etc"];

/// Prefix of the names of whiteout files (refused).
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Prefix of ostree's quoted overlay whiteouts (refused too).
pub const OSTREE_WHITEOUT_PREFIX: &str = ".ostree-wh.";
/// Paths an extension must not carry (systemd-sysext refuses extensions
/// with an os-release).
pub const FORBIDDEN_PATHS: [&str; 3] =
    ["usr/lib/os-release", "usr/etc/os-release", "etc/os-release"];

/// A composed commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    /// The composed commit (the base itself for an empty list).
    pub commit: Checksum,
    /// Its base and extensions.
    pub layers: Layers,
    /// Dirtree objects the composition made (directories where trees meet).
    pub dirtrees: usize,
}

/// Composes `extensions` on `base`, writes the dirtrees, the commit, its
/// `arbor/composed/<HEX>` ref and the base's `arbor/bases/<BASE-HEX>` ref
/// in one transaction. An empty list writes nothing and returns the base.
///
/// Crash guarantee: that of [`Transaction::commit`]; the ref appears only
/// with the complete commit, and a crash leaves at worst unreferenced
/// dirtrees for `prune`.
pub fn compose(
    lock: &RepoLock<'_>,
    base: &Checksum,
    extensions: &[ExtensionRef],
) -> Result<Composed> {
    let built = build(lock.repo(), base, extensions, MAX_METADATA_SIZE)?;
    let Some(commit_bytes) = &built.commit_bytes else {
        return Ok(built.composed);
    };
    let c = built.composed.commit;
    let refs = [
        (
            RefName::new(format!("{COMPOSED_REF_PREFIX}{}", c.to_hex()))?,
            c,
        ),
        (
            RefName::new(format!("{BASE_REF_PREFIX}{}", base.to_hex()))?,
            *base,
        ),
    ];
    if already_written(lock.repo(), &built, &refs)? {
        return Ok(built.composed);
    }
    let txn = Transaction::begin(lock)?;
    for tree in &built.trees {
        txn.write_metadata(ObjectType::DirTree, tree)?;
    }
    let written = txn.write_metadata(ObjectType::Commit, commit_bytes)?;
    debug_assert_eq!(written, c);
    let updates: Vec<RefUpdate> = refs
        .into_iter()
        .map(|(name, target)| RefUpdate::set(RefSpec::local(name), target))
        .collect();
    txn.commit(&updates)
        .with_context(|| format!("Writing composed commit {c}"))?;
    Ok(built.composed)
}

/// Whether the composition is already in the repository: its commit, each
/// dirtree it made, and its refs (composed and base) naming their commits
/// (an earlier `compose` of the same inputs). Then there is nothing to
/// write and no transaction (nor its syncs) to pay for; anything missing
/// is written again.
fn already_written(repo: &Repo, built: &Built, refs: &[(RefName, Checksum)]) -> Result<bool> {
    let c = built.composed.commit;
    for (name, target) in refs {
        if arbor_repo::refs::read_ref(repo, &RefSpec::local(name.clone()))? != Some(*target) {
            return Ok(false);
        }
    }
    if !repo.has_object(ObjectType::Commit, &c)? || repo.is_partial(&c)? {
        return Ok(false);
    }
    for tree in &built.trees {
        if !repo.has_object(ObjectType::DirTree, &Checksum::digest(tree))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What [`compose`] would produce (every check included), writing nothing.
pub fn plan(repo: &Repo, base: &Checksum, extensions: &[ExtensionRef]) -> Result<Composed> {
    Ok(build(repo, base, extensions, MAX_METADATA_SIZE)?.composed)
}

/// [`plan`] with another limit than [`MAX_METADATA_SIZE`] on the size of
/// a composed dirtree (for tests: building a 128 MiB directory is slow).
#[cfg(test)]
pub(super) fn plan_with_limit(
    repo: &Repo,
    base: &Checksum,
    extensions: &[ExtensionRef],
    max_object: u64,
) -> Result<Composed> {
    Ok(build(repo, base, extensions, max_object)?.composed)
}

/// A composition, in memory.
struct Built {
    composed: Composed,
    /// Encoded dirtrees of the directories where trees meet.
    trees: Vec<Vec<u8>>,
    /// The encoded commit (`None` for an empty list).
    commit_bytes: Option<Vec<u8>>,
}

#[context(
    "Composing {} on base {}",
    if extensions.is_empty() { "no extensions".to_string() } else { names(extensions) },
    short(base)
)]
fn build(
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
        super::release::check(repo, base, e)?;
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

/// Which tree an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    Base,
    Ext(usize),
}

#[derive(Debug, Clone, Copy)]
struct FileEnt {
    checksum: Checksum,
    src: Src,
}

/// A subdirectory of a directory where trees meet.
#[derive(Debug, Clone, Copy)]
enum Child {
    /// A directory only one tree has (so far): kept as its checksums.
    Lazy {
        tree: Checksum,
        meta: Checksum,
        src: Src,
    },
    /// A directory where trees meet: an index into [`Union::nodes`].
    Node(usize),
}

/// A directory where trees meet, loaded.
#[derive(Debug)]
struct Node {
    /// The parent node and this directory's name in it (the root: 0, "").
    parent: usize,
    name: String,
    meta: Checksum,
    meta_src: Src,
    files: BTreeMap<String, FileEnt>,
    dirs: BTreeMap<String, Child>,
}

/// One subdirectory of an extension to merge into a node.
struct Pending {
    parent: usize,
    name: String,
    tree: Checksum,
    meta: Checksum,
    path: String,
}

/// The tree being composed. Nodes live in an arena: a node's children
/// always have larger indices than the node (a child is loaded after its
/// parent), which [`Union::finish`] relies on, and nothing recurses, so
/// trees of any depth are fine.
struct Union<'r> {
    repo: &'r Repo,
    base_short: String,
    names: Vec<String>,
    /// Dirtrees read (and verified), by checksum.
    trees: HashMap<Checksum, Rc<DirTree>>,
    /// Extension dirtrees already checked (whiteouts, file objects).
    checked: HashSet<Checksum>,
    /// Dirmetas already verified.
    metas: HashSet<Checksum>,
    /// Each extension's overrides (normalised absolute paths).
    overrides: Vec<Vec<String>>,
    nodes: Vec<Node>,
}

impl<'r> Union<'r> {
    fn new(repo: &'r Repo, base: &Checksum, base_commit: &Commit) -> Result<Union<'r>> {
        let mut u = Union {
            repo,
            base_short: short(base),
            names: Vec::new(),
            trees: HashMap::new(),
            checked: HashSet::new(),
            metas: HashSet::new(),
            overrides: Vec::new(),
            nodes: Vec::new(),
        };
        u.verify_meta(&base_commit.root_meta)?;
        let root = u.load_node(
            (0, ""),
            &base_commit.root_tree,
            base_commit.root_meta,
            Src::Base,
        )?;
        u.nodes.push(root);
        Ok(u)
    }

    fn src_name(&self, s: Src) -> String {
        match s {
            Src::Base => format!("base {}", self.base_short),
            Src::Ext(i) => format!("extension {}", self.names[i]),
        }
    }

    /// Names the two sources of a clash at `path` (composed). When both are
    /// the same extension, the clash is between its `usr/etc/X` (merged
    /// first) and its `etc/X`: both paths are named.
    fn pair(&self, path: &str, a: Src, b: Src) -> (String, String) {
        let (na, nb) = (self.src_name(a), self.src_name(b));
        match path.strip_prefix("/usr") {
            Some(etc) if a == b && etc.starts_with("/etc") => {
                (format!("{na}'s {path}"), format!("{nb}'s {etc}"))
            }
            _ => (na, nb),
        }
    }

    fn tree(&mut self, c: &Checksum) -> Result<Rc<DirTree>> {
        if let Some(t) = self.trees.get(c) {
            return Ok(t.clone());
        }
        let t = Rc::new(load_dirtree(self.repo, c)?);
        self.trees.insert(*c, t.clone());
        Ok(t)
    }

    fn verify_meta(&mut self, c: &Checksum) -> Result<()> {
        if !self.metas.contains(c) {
            load_dirmeta(self.repo, c)?;
            self.metas.insert(*c);
        }
        Ok(())
    }

    fn load_node(
        &mut self,
        (parent, name): (usize, &str),
        tree: &Checksum,
        meta: Checksum,
        src: Src,
    ) -> Result<Node> {
        let dt = self.tree(tree)?;
        let files = dt
            .files
            .iter()
            .map(|f| {
                let ent = FileEnt {
                    checksum: f.checksum,
                    src,
                };
                (f.name.clone(), ent)
            })
            .collect();
        let dirs = dt
            .dirs
            .iter()
            .map(|d| {
                let child = Child::Lazy {
                    tree: d.tree,
                    meta: d.meta,
                    src,
                };
                (d.name.clone(), child)
            })
            .collect();
        Ok(Node {
            parent,
            name: name.to_string(),
            meta,
            meta_src: src,
            files,
            dirs,
        })
    }

    /// Checks extension `i` once, all of it: complete, top level allowed,
    /// no whiteouts, every dirtree and dirmeta verified, every file object
    /// present. Returns its commit.
    fn check_extension(&mut self, i: usize, e: &ExtensionRef) -> Result<Commit> {
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
                    super::release::EXTENSION_RELEASE_DIR,
                    super::release::EXTENSION_RELEASE_PREFIX
                );
            }
        }
        Ok(())
    }

    /// Merges extension `i` (checked already) into the union.
    fn merge_extension(&mut self, i: usize, e: &ExtensionRef, commit: &Commit) -> Result<()> {
        let src = Src::Ext(i);
        if self.nodes[0].meta != commit.root_meta {
            let (m, s) = (self.nodes[0].meta, self.nodes[0].meta_src);
            return Err(self.meta_conflict("/", (m, s), (commit.root_meta, src)));
        }
        let root = self.tree(&commit.root_tree)?;
        let mut etc = None;
        for d in &root.dirs {
            if d.name == "etc" {
                etc = Some(d.clone());
                continue;
            }
            self.merge_dir(
                Pending {
                    parent: 0,
                    name: d.name.clone(),
                    tree: d.tree,
                    meta: d.meta,
                    path: format!("/{}", d.name),
                },
                src,
            )?;
        }
        if let Some(etc) = etc {
            let usr = match self.nodes[0].dirs.get("usr") {
                Some(_) => self.expand(0, "usr")?,
                None => bail!(
                    "Extension {} has /etc, composed into /usr/etc, but there is no /usr",
                    e.name
                ),
            };
            self.merge_dir(
                Pending {
                    parent: usr,
                    name: "etc".into(),
                    tree: etc.tree,
                    meta: etc.meta,
                    path: "/usr/etc".into(),
                },
                src,
            )?;
        }
        Ok(())
    }

    /// Merges one directory of an extension (and all below it) into the
    /// node `p.parent`.
    fn merge_dir(&mut self, first: Pending, src: Src) -> Result<()> {
        let mut work = vec![first];
        while let Some(p) = work.pop() {
            let node = &self.nodes[p.parent];
            if let Some(f) = node.files.get(&p.name) {
                let (a, b) = self.pair(&p.path, f.src, src);
                bail!("{}: a file in {a} but a directory in {b}", p.path);
            }
            let (old_meta, old_src, old_tree) = match node.dirs.get(&p.name) {
                None => {
                    let child = Child::Lazy {
                        tree: p.tree,
                        meta: p.meta,
                        src,
                    };
                    self.nodes[p.parent].dirs.insert(p.name, child);
                    continue;
                }
                Some(Child::Lazy { tree, meta, src }) => (*meta, *src, Some(*tree)),
                Some(Child::Node(j)) => (self.nodes[*j].meta, self.nodes[*j].meta_src, None),
            };
            if old_meta != p.meta {
                return Err(self.meta_conflict(&p.path, (old_meta, old_src), (p.meta, src)));
            }
            if old_tree == Some(p.tree) {
                continue; // the same directory, all of it
            }
            let idx = self.expand(p.parent, &p.name)?;
            let dt = self.tree(&p.tree)?;
            for f in &dt.files {
                self.merge_file(idx, f, &join(&p.path, &f.name), src)?;
            }
            for d in dt.dirs.iter().rev() {
                work.push(Pending {
                    parent: idx,
                    name: d.name.clone(),
                    tree: d.tree,
                    meta: d.meta,
                    path: child_path(&p.path, &d.name)?,
                });
            }
        }
        Ok(())
    }

    fn merge_file(&mut self, idx: usize, f: &DirTreeFile, path: &str, src: Src) -> Result<()> {
        let dir_src = match self.nodes[idx].dirs.get(&f.name) {
            Some(Child::Lazy { src: s, .. }) => Some(*s),
            Some(Child::Node(j)) => Some(self.nodes[*j].meta_src),
            None => None,
        };
        if let Some(s) = dir_src {
            let (a, b) = self.pair(path, s, src);
            bail!("{path}: a directory in {a} but a file in {b}");
        }
        let covered = match src {
            Src::Ext(i) => self.overrides[i].iter().any(|o| covers(o, path)),
            Src::Base => false,
        };
        match self.nodes[idx].files.get_mut(&f.name) {
            None => {
                let ent = FileEnt {
                    checksum: f.checksum,
                    src,
                };
                self.nodes[idx].files.insert(f.name.clone(), ent);
            }
            Some(old) if old.checksum == f.checksum => {}
            Some(old) if old.src == src => {
                // Only etc/X and usr/etc/X of one extension meet here.
                let (a, b) = self.pair(path, src, src);
                bail!("{path}: {a} and {b} have different content (an extension may not give both; no override allows it)");
            }
            Some(old) if covered => {
                old.checksum = f.checksum;
                old.src = src;
            }
            Some(old) => {
                let s = old.src;
                bail!(
                    "{path}: provided by both {} and {} (an extension replaces a file only \
                     when its {OVERRIDES_KEY} lists the path)",
                    self.src_name(s),
                    self.src_name(src)
                );
            }
        }
        Ok(())
    }

    /// Makes the subdirectory `name` of node `parent` a node (loading its
    /// dirtree if it was lazy); returns its index.
    fn expand(&mut self, parent: usize, name: &str) -> Result<usize> {
        match self.nodes[parent].dirs.get(name) {
            Some(Child::Node(j)) => Ok(*j),
            Some(Child::Lazy { tree, meta, src }) => {
                let (tree, meta, src) = (*tree, *meta, *src);
                let node = self.load_node((parent, name), &tree, meta, src)?;
                let idx = self.nodes.len();
                self.nodes.push(node);
                self.nodes[parent]
                    .dirs
                    .insert(name.to_string(), Child::Node(idx));
                Ok(idx)
            }
            None => Err(anyhow!("No directory {name:?} to expand")),
        }
    }

    fn meta_conflict(
        &mut self,
        path: &str,
        a: (Checksum, Src),
        b: (Checksum, Src),
    ) -> anyhow::Error {
        let (na, nb) = self.pair(path, a.1, b.1);
        let (ma, mb) = match (load_dirmeta(self.repo, &a.0), load_dirmeta(self.repo, &b.0)) {
            (Ok(ma), Ok(mb)) => (ma, mb),
            (ra, rb) => {
                let show = |r: Result<DirMeta>, c: Checksum| match r {
                    Ok(_) => format!("dirmeta {c}"),
                    Err(e) => format!("dirmeta {c} ({e:#})"),
                };
                return anyhow!(
                    "{path}: directory metadata differs: {na} has {}, {nb} has {}",
                    show(ra, a.0),
                    show(rb, b.0)
                );
            }
        };
        let summary = |m: &DirMeta| {
            let names: Vec<String> = m.xattrs.iter().map(|x| escape(&x.name)).collect();
            format!(
                "mode {:04o} uid {} gid {} xattrs [{}]",
                m.mode & 0o7777,
                m.uid,
                m.gid,
                names.join(", ")
            )
        };
        let mut msg = format!(
            "{path}: directory metadata differs: {na} has {}, {nb} has {} (differs: {})",
            summary(&ma),
            summary(&mb),
            meta_differences(&ma, &mb).join("; ")
        );
        // Only a mode or owner difference gets the chmod/chown hint: an
        // xattr (say security.selinux) is not fixed by either.
        let owner_or_mode = ma.mode != mb.mode || (ma.uid, ma.gid) != (mb.uid, mb.gid);
        if (path == "/" || path == "/usr") && owner_or_mode {
            msg.push_str(&format!(
                "; hint: the extension's directories must have the base's mode and owner: \
                 chmod {:04o}, chown {}:{}",
                ma.mode & 0o7777,
                ma.uid,
                ma.gid
            ));
        }
        anyhow!("{msg}")
    }

    /// Writes nothing: encodes every node, children first, refusing one
    /// larger than `max_object` bytes (readers refuse those). Returns the
    /// root dirtree and the encoded dirtrees.
    fn finish(self, max_object: u64) -> Result<(Checksum, Vec<Vec<u8>>)> {
        let mut sums = vec![None; self.nodes.len()];
        let mut out = Vec::with_capacity(self.nodes.len());
        for (idx, node) in self.nodes.iter().enumerate().rev() {
            let files = node
                .files
                .iter()
                .map(|(name, f)| DirTreeFile {
                    name: name.clone(),
                    checksum: f.checksum,
                })
                .collect();
            let dirs = node
                .dirs
                .iter()
                .map(|(name, c)| {
                    let (tree, meta) = match c {
                        Child::Lazy { tree, meta, .. } => (*tree, *meta),
                        Child::Node(j) => (
                            sums[*j].expect("children have larger indices"),
                            self.nodes[*j].meta,
                        ),
                    };
                    DirTreeDir {
                        name: name.clone(),
                        tree,
                        meta,
                    }
                })
                .collect();
            let bytes = DirTree { files, dirs }.encode();
            if bytes.len() as u64 > max_object {
                bail!(
                    "{}: the composed directory would be a dirtree object of {} bytes, more \
                     than the {max_object} bytes a repository object may have",
                    self.node_path(idx),
                    bytes.len()
                );
            }
            sums[idx] = Some(Checksum::digest(&bytes));
            out.push(bytes);
        }
        Ok((sums[0].expect("the root is node 0"), out))
    }

    /// The path of node `idx`.
    fn node_path(&self, mut idx: usize) -> String {
        let mut names = Vec::new();
        while idx != 0 {
            names.push(self.nodes[idx].name.as_str());
            idx = self.nodes[idx].parent;
        }
        names.reverse();
        format!("/{}", names.join("/"))
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

/// Bytes shown escaped (`\xNN` for anything not printable ASCII),
/// truncated to 64 bytes.
fn escape(b: &[u8]) -> String {
    const MAX: usize = 64;
    let mut out: String = b
        .iter()
        .take(MAX)
        .flat_map(|c| std::ascii::escape_default(*c))
        .map(char::from)
        .collect();
    if b.len() > MAX {
        out.push_str(&format!("...({} bytes)", b.len()));
    }
    out
}

/// An extension's [`OVERRIDES_KEY`], normalised: absolute, no `.`/`..`/
/// empty components, `/etc...` as `/usr/etc...`.
fn overrides(commit: &Commit) -> Result<Vec<String>> {
    let list = match commit.metadata.get(OVERRIDES_KEY) {
        None => return Ok(Vec::new()),
        Some(Value::StrArray(v)) => v,
        Some(v) => bail!("{OVERRIDES_KEY} is {}, expected as", v.type_str()),
    };
    list.iter().map(|p| normalize_override(p)).collect()
}

/// Normalises one [`OVERRIDES_KEY`] entry: absolute, no `.`/`..`/empty
/// components, `/etc...` as `/usr/etc...` (where extensions' etc goes).
pub fn normalize_override(p: &str) -> Result<String> {
    let Some(rest) = p.strip_prefix('/') else {
        bail!("{OVERRIDES_KEY} entry {p:?} is not an absolute path");
    };
    let comps: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
    if comps.iter().any(|c| *c == "." || *c == "..") {
        bail!("{OVERRIDES_KEY} entry {p:?} has . or .. components");
    }
    let mut out = String::new();
    if comps.first() == Some(&"etc") {
        out.push_str("/usr");
    }
    for c in comps {
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Whether the override `o` (normalised) covers `path`.
fn covers(o: &str, path: &str) -> bool {
    o == "/"
        || path == o
        || path
            .strip_prefix(o)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// What differs between two dirmetas, one item per difference: mode,
/// owner, each xattr whose value differs or is absent on one side; when
/// none of those does (the same xattrs, listed in another order or with
/// a name repeated), that.
pub(crate) fn meta_differences(ma: &DirMeta, mb: &DirMeta) -> Vec<String> {
    let mut diffs = Vec::new();
    if ma.mode != mb.mode {
        diffs.push(format!(
            "mode {:04o} vs {:04o}",
            ma.mode & 0o7777,
            mb.mode & 0o7777
        ));
    }
    if (ma.uid, ma.gid) != (mb.uid, mb.gid) {
        diffs.push(format!(
            "owner {}:{} vs {}:{}",
            ma.uid, ma.gid, mb.uid, mb.gid
        ));
    }
    let xa: BTreeMap<&[u8], &[u8]> = ma
        .xattrs
        .iter()
        .map(|x| (&x.name[..], &x.value[..]))
        .collect();
    let xb: BTreeMap<&[u8], &[u8]> = mb
        .xattrs
        .iter()
        .map(|x| (&x.name[..], &x.value[..]))
        .collect();
    let keys: std::collections::BTreeSet<&[u8]> = xa.keys().chain(xb.keys()).copied().collect();
    let value = |v: Option<&&[u8]>| match v {
        Some(v) => format!("\"{}\"", escape(v)),
        None => "absent".to_string(),
    };
    for k in keys {
        let (va, vb) = (xa.get(k), xb.get(k));
        if va != vb {
            diffs.push(format!(
                "xattr {} {} vs {}",
                escape(k),
                value(va),
                value(vb)
            ));
        }
    }
    if diffs.is_empty() && ma.xattrs != mb.xattrs {
        fn sorted(m: &DirMeta) -> Vec<(&[u8], &[u8])> {
            let mut v: Vec<(&[u8], &[u8])> = m
                .xattrs
                .iter()
                .map(|x| (&x.name[..], &x.value[..]))
                .collect();
            v.sort();
            v
        }
        let repeated = |m: &DirMeta| {
            let mut names: Vec<&[u8]> = m.xattrs.iter().map(|x| &x.name[..]).collect();
            names.sort();
            let mut r: Vec<String> = names
                .windows(2)
                .filter(|w| w[0] == w[1])
                .map(|w| escape(w[0]))
                .collect();
            r.dedup();
            r
        };
        if sorted(ma) == sorted(mb) {
            diffs.push("xattr order".to_string());
        } else {
            let (ra, rb) = (repeated(ma), repeated(mb));
            diffs.push(format!(
                "repeated xattr names [{}] vs [{}]",
                ra.join(", "),
                rb.join(", ")
            ));
        }
    }
    if diffs.is_empty() {
        // Equal fields with different checksums: cannot happen for two
        // decoded dirmetas, but say so rather than print nothing.
        diffs.push("encoding only".to_string());
    }
    diffs
}
