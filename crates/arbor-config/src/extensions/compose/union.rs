//! The lazy tree merge: the base and each extension are merged into an
//! arena of the directories where trees meet; a directory only one tree
//! has stays as its (dirtree, dirmeta) checksums.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use anyhow::{anyhow, bail, Result};
use arbor_format::{Checksum, Commit, DirTree, DirTreeDir, DirTreeFile};
use arbor_repo::Repo;
use arbor_sysroot::layered::ExtensionRef;

use super::{covers, OVERRIDES_KEY};
use crate::extensions::release::short;
use crate::extensions::verify::{child_path, join, load_dirmeta, load_dirtree};

/// Which tree an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Src {
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
pub(super) struct Union<'r> {
    pub(super) repo: &'r Repo,
    base_short: String,
    pub(super) names: Vec<String>,
    /// Dirtrees read (and verified), by checksum.
    trees: HashMap<Checksum, Rc<DirTree>>,
    /// Extension dirtrees already checked (whiteouts, file objects).
    pub(super) checked: HashSet<Checksum>,
    /// Dirmetas already verified.
    metas: HashSet<Checksum>,
    /// Each extension's overrides (normalised absolute paths).
    pub(super) overrides: Vec<Vec<String>>,
    nodes: Vec<Node>,
}

impl<'r> Union<'r> {
    pub(super) fn new(repo: &'r Repo, base: &Checksum, base_commit: &Commit) -> Result<Union<'r>> {
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
    pub(super) fn pair(&self, path: &str, a: Src, b: Src) -> (String, String) {
        let (na, nb) = (self.src_name(a), self.src_name(b));
        match path.strip_prefix("/usr") {
            Some(etc) if a == b && etc.starts_with("/etc") => {
                (format!("{na}'s {path}"), format!("{nb}'s {etc}"))
            }
            _ => (na, nb),
        }
    }

    pub(super) fn tree(&mut self, c: &Checksum) -> Result<Rc<DirTree>> {
        if let Some(t) = self.trees.get(c) {
            return Ok(t.clone());
        }
        let t = Rc::new(load_dirtree(self.repo, c)?);
        self.trees.insert(*c, t.clone());
        Ok(t)
    }

    pub(super) fn verify_meta(&mut self, c: &Checksum) -> Result<()> {
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

    /// Merges extension `i` (checked already) into the union.
    pub(super) fn merge_extension(
        &mut self,
        i: usize,
        e: &ExtensionRef,
        commit: &Commit,
    ) -> Result<()> {
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

    /// Writes nothing: encodes every node, children first, refusing one
    /// larger than `max_object` bytes (readers refuse those). Returns the
    /// root dirtree and the encoded dirtrees.
    pub(super) fn finish(self, max_object: u64) -> Result<(Checksum, Vec<Vec<u8>>)> {
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
