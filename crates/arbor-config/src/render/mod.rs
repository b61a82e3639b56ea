//! Rendering: several input files merged into one canonical document and
//! its name.
//!
//! Merge rules (inputs sorted by file name, then by the name as given):
//! - Files, directories and links share one namespace of paths. A path
//!   declared again by a later file must be declared identically (same
//!   kind, content and attributes, after defaults are filled), unless
//!   the later declaration sets `overwrite: true`, which replaces the
//!   earlier entry whole. Anything else is a conflict naming both files.
//! - Units (which have no `overwrite` in Ignition) merge field by field:
//!   `contents` may come from one file, or several identically;
//!   `enabled` and `mask` from the last file that sets them; drop-ins by
//!   name, each with one content (identical repeats are fine).
//! - Users and groups merge by name: `uid`, `gid` and `passwordHash` may
//!   be given by several files only identically; supplementary groups
//!   and ssh keys are the union in file order (MCO likewise concatenates
//!   the keys of all MachineConfigs).
//! - Kernel arguments and extensions are concatenated in file order, a
//!   repeated entry keeping its first place.
//!
//! The canonical document is the RFC 8785 JSON of a `MachineConfig`
//! without `metadata`: `spec.config` is Ignition [`IGNITION_VERSION`](crate::input::IGNITION_VERSION)
//! with every default spelled out, file contents as `data:;base64,` of
//! the decoded bytes, arrays sorted by path or name;
//! `spec.kernelArguments` and `spec.extensions` in order. Its name is
//! `rendered-<sha256 of those bytes>`.

mod emit;

use std::collections::BTreeMap;

pub use emit::{to_ignition, to_machine_config};

use crate::canonical::{sha256_hex, to_canonical};
use crate::input::machineconfig::push_unique;
use crate::input::{self, Budget, InputError, Parsed};
use crate::model::{Config, DirEntry, FileEntry, Group, LinkEntry, Unit, User};

/// Prefix of a rendered configuration's name.
pub const RENDERED_PREFIX: &str = "rendered-";

/// The name used in errors about a stored rendered document.
const CANONICAL_NAME: &str = "rendered document";

/// A rendered configuration: the merged [`Config`], its canonical
/// document and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The merged, validated configuration.
    pub config: Config,
    /// The canonical document (RFC 8785 JSON of a MachineConfig).
    pub canonical: Vec<u8>,
    /// `rendered-<sha256 hex of canonical>`.
    pub name: String,
}

impl Rendered {
    /// The rendering of `config` (assumed valid, e.g. from [`render`] or
    /// [`input::parse_input`]).
    pub fn from_config(config: Config) -> Rendered {
        let canonical = to_canonical(&to_machine_config(&config));
        let name = rendered_name(&canonical);
        Rendered {
            config,
            canonical,
            name,
        }
    }

    /// The rendering of no input: the empty configuration.
    pub fn empty() -> Rendered {
        Rendered::from_config(Config::default())
    }

    /// Reads back a stored canonical document, checking that it parses
    /// and that its bytes are exactly the canonical form of what it
    /// declares (so its name is its content's).
    pub fn from_canonical(bytes: &[u8]) -> Result<Rendered, InputError> {
        let config = input::parse_input(CANONICAL_NAME, bytes)?;
        let r = Rendered::from_config(config);
        if r.canonical != bytes {
            return Err(InputError::new(
                CANONICAL_NAME,
                "$",
                "not a canonical rendered document (RFC 8785 JSON of the rendered MachineConfig)",
            ));
        }
        Ok(r)
    }
}

/// `rendered-<sha256 hex>` of canonical bytes.
pub fn rendered_name(canonical: &[u8]) -> String {
    format!("{RENDERED_PREFIX}{}", sha256_hex(canonical))
}

/// Renders input documents `(name, bytes)`: parsed, merged in name order
/// (see the module docs), checked, canonicalized.
pub fn render(inputs: &[(String, Vec<u8>)]) -> Result<Rendered, InputError> {
    let mut order: Vec<&(String, Vec<u8>)> = inputs.iter().collect();
    order.sort_by(|a, b| (base_name(&a.0), &a.0).cmp(&(base_name(&b.0), &b.0)));
    let mut budget = Budget::default();
    let mut m = Merger::default();
    for (name, bytes) in order {
        let parsed = input::parse(name, bytes, &mut budget)?;
        m.add(name, parsed)?;
    }
    check_tree_with(&m.config, |key| {
        m.origin
            .get(key)
            .cloned()
            .unwrap_or_else(|| (String::new(), "$".into()))
    })?;
    Ok(Rendered::from_config(m.config))
}

fn base_name(n: &str) -> &str {
    n.rsplit('/').next().unwrap_or(n)
}

/// One filesystem entry, for comparing declarations of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    File(FileEntry),
    Dir(DirEntry),
    Link(LinkEntry),
}

impl Node {
    fn what(&self) -> &'static str {
        match self {
            Node::File(_) => "a file",
            Node::Dir(_) => "a directory",
            Node::Link(l) if l.hard => "a hard link",
            Node::Link(_) => "a symbolic link",
        }
    }
}

fn take_node(c: &mut Config, p: &str) -> Option<Node> {
    c.files
        .remove(p)
        .map(Node::File)
        .or_else(|| c.directories.remove(p).map(Node::Dir))
        .or_else(|| c.links.remove(p).map(Node::Link))
}

fn put_node(c: &mut Config, p: String, n: Node) {
    match n {
        Node::File(f) => c.files.insert(p, f).is_none(),
        Node::Dir(d) => c.directories.insert(p, d).is_none(),
        Node::Link(l) => c.links.insert(p, l).is_none(),
    };
}

/// The merged configuration and where each declaration came from.
#[derive(Debug, Default)]
struct Merger {
    config: Config,
    /// Key (as in `Parsed::origin`) -> (file, JSON path).
    origin: BTreeMap<String, (String, String)>,
}

impl Merger {
    fn add(&mut self, file: &str, mut p: Parsed) -> Result<(), InputError> {
        let mut nodes: Vec<(String, Node)> = Vec::new();
        let c = &mut p.config;
        nodes.extend(
            std::mem::take(&mut c.files)
                .into_iter()
                .map(|(k, v)| (k, Node::File(v))),
        );
        nodes.extend(
            std::mem::take(&mut c.directories)
                .into_iter()
                .map(|(k, v)| (k, Node::Dir(v))),
        );
        nodes.extend(
            std::mem::take(&mut c.links)
                .into_iter()
                .map(|(k, v)| (k, Node::Link(v))),
        );
        for (path, node) in nodes {
            self.node(file, &p, path, node)?;
        }
        for (name, unit) in std::mem::take(&mut p.config.units) {
            self.unit(file, &p, name, unit)?;
        }
        for (name, user) in std::mem::take(&mut p.config.users) {
            self.user(file, &p, name, user)?;
        }
        for (name, group) in std::mem::take(&mut p.config.groups) {
            self.group(file, &p, name, group)?;
        }
        for a in &p.config.kernel_arguments {
            push_unique(&mut self.config.kernel_arguments, a);
        }
        for x in &p.config.extensions {
            push_unique(&mut self.config.extensions, x);
        }
        Ok(())
    }

    /// A file, directory or link: identical, or replacing with overwrite.
    fn node(&mut self, file: &str, p: &Parsed, path: String, node: Node) -> Result<(), InputError> {
        let key = format!("path {path}");
        let jpath = here(p, &key);
        match take_node(&mut self.config, &path) {
            Some(old) if old == node => put_node(&mut self.config, path, old),
            Some(old) if !p.overwrite.contains(&path) => {
                let (ofile, opath) = &origin_of(&self.origin, &key);
                let how = if std::mem::discriminant(&old) == std::mem::discriminant(&node) {
                    format!("declared differently by {ofile} ({opath})")
                } else {
                    format!("declared as {} by {ofile} ({opath})", old.what())
                };
                return Err(InputError::new(
                    file,
                    &jpath,
                    format!(
                        "{path} is {how}; set \"overwrite\": true here to replace that declaration"
                    ),
                ));
            }
            _ => {
                put_node(&mut self.config, path, node);
                self.origin.insert(key, (file.to_owned(), jpath));
            }
        }
        Ok(())
    }

    fn user(&mut self, file: &str, p: &Parsed, name: String, user: User) -> Result<(), InputError> {
        let key = format!("user {name}");
        let jpath = here(p, &key);
        let Some(e) = self.config.users.get_mut(&name) else {
            self.config.users.insert(name, user);
            self.origin.insert(key, (file.to_owned(), jpath));
            return Ok(());
        };
        let o = &origin_of(&self.origin, &key);
        let conflict = |what: &str| conflict(file, &jpath, &format!("user {name}"), what, o);
        same_or_set(&mut e.uid, user.uid, || conflict("uid"))?;
        same_or_set(&mut e.password_hash, user.password_hash, || {
            conflict("passwordHash")
        })?;
        for g in &user.groups {
            push_unique(&mut e.groups, g);
        }
        for k in &user.ssh_authorized_keys {
            push_unique(&mut e.ssh_authorized_keys, k);
        }
        Ok(())
    }

    fn group(
        &mut self,
        file: &str,
        p: &Parsed,
        name: String,
        group: Group,
    ) -> Result<(), InputError> {
        let key = format!("group {name}");
        let jpath = here(p, &key);
        let Some(e) = self.config.groups.get_mut(&name) else {
            self.config.groups.insert(name, group);
            self.origin.insert(key, (file.to_owned(), jpath));
            return Ok(());
        };
        let o = &origin_of(&self.origin, &key);
        let conflict = |what: &str| conflict(file, &jpath, &format!("group {name}"), what, o);
        same_or_set(&mut e.gid, group.gid, || conflict("gid"))?;
        same_or_set(&mut e.password_hash, group.password_hash, || {
            conflict("passwordHash")
        })
    }

    fn unit(&mut self, file: &str, p: &Parsed, name: String, unit: Unit) -> Result<(), InputError> {
        let key = format!("unit {name}");
        let jpath = here(p, &key);
        let Some(e) = self.config.units.get_mut(&name) else {
            for d in unit.dropins.keys() {
                let dk = format!("dropin {name}/{d}");
                let dp = p.origin.get(&dk).cloned().unwrap_or_else(|| jpath.clone());
                self.origin.insert(dk, (file.to_owned(), dp));
            }
            self.config.units.insert(name, unit);
            self.origin.insert(key, (file.to_owned(), jpath));
            return Ok(());
        };
        let o = &origin_of(&self.origin, &key);
        same_or_set(&mut e.contents, unit.contents, || {
            conflict(
                file,
                &jpath,
                &format!("unit {name}"),
                "contents (units cannot be overwritten: declare its contents in one file)",
                o,
            )
        })?;
        if unit.enabled.is_some() {
            e.enabled = unit.enabled;
        }
        if p.mask_set.contains(&name) {
            e.mask = unit.mask;
        }
        for (dname, d) in unit.dropins {
            let dk = format!("dropin {name}/{dname}");
            let dp = p.origin.get(&dk).cloned().unwrap_or_else(|| jpath.clone());
            match e.dropins.get(&dname) {
                Some(old) if *old != d => {
                    let o = &origin_of(&self.origin, &dk);
                    return Err(conflict(
                        file,
                        &dp,
                        &format!("drop-in {name}/{dname}"),
                        "contents",
                        o,
                    ));
                }
                Some(_) => {}
                None => {
                    e.dropins.insert(dname, d);
                    self.origin.insert(dk, (file.to_owned(), dp));
                }
            }
        }
        Ok(())
    }
}

/// The JSON path of `key`'s declaration in `p`.
fn here(p: &Parsed, key: &str) -> String {
    p.origin.get(key).cloned().unwrap_or_else(|| "$".into())
}

/// Where `key` was first declared (every merged key has an origin).
fn origin_of(origin: &BTreeMap<String, (String, String)>, key: &str) -> (String, String) {
    origin
        .get(key)
        .cloned()
        .unwrap_or_else(|| ("an earlier file".into(), "$".into()))
}

fn conflict(
    file: &str,
    jpath: &str,
    what: &str,
    field: &str,
    (ofile, opath): &(String, String),
) -> InputError {
    InputError::new(
        file,
        jpath,
        format!("{what}: {field} differs from the declaration in {ofile} ({opath})"),
    )
}

/// Sets `old` from `new` when unset; a different value is `err()`.
fn same_or_set<T: PartialEq>(
    old: &mut Option<T>,
    new: Option<T>,
    err: impl FnOnce() -> InputError,
) -> Result<(), InputError> {
    match (old.as_ref(), new) {
        (_, None) => Ok(()),
        (None, Some(n)) => {
            *old = Some(n);
            Ok(())
        }
        (Some(o), Some(n)) if *o == n => Ok(()),
        _ => Err(err()),
    }
}

/// Checks what only the whole tree shows: no entry below a declared file
/// or link (a path through a symlink could leave /etc), and no hard link
/// to a declared directory. `origin` maps a key (`path P`) to its
/// (file, JSON path).
pub(crate) fn check_tree(
    file: &str,
    c: &Config,
    origin: &BTreeMap<String, String>,
) -> Result<(), InputError> {
    check_tree_with(c, |k| {
        (
            file.to_owned(),
            origin.get(k).cloned().unwrap_or_else(|| "$".into()),
        )
    })
}

fn check_tree_with(
    c: &Config,
    origin: impl Fn(&str) -> (String, String),
) -> Result<(), InputError> {
    let all = c
        .files
        .keys()
        .chain(c.directories.keys())
        .chain(c.links.keys());
    for p in all {
        let mut anc = p.as_str();
        while let Some((parent, _)) = anc.rsplit_once('/') {
            anc = parent;
            let what = if c.files.contains_key(anc) {
                "a file"
            } else if c.links.get(anc).is_some_and(|l| !l.hard) {
                "a symbolic link (a path through a link could leave /etc and /var)"
            } else if c.links.contains_key(anc) {
                "a hard link"
            } else {
                continue;
            };
            let (f, jp) = origin(&format!("path {p}"));
            let (af, ajp) = origin(&format!("path {anc}"));
            return Err(InputError::new(
                &f,
                &jp,
                format!("{p} is below {anc}, declared as {what} in {af} ({ajp})"),
            ));
        }
    }
    for (p, l) in &c.links {
        if l.hard && c.directories.contains_key(&l.target) {
            let (f, jp) = origin(&format!("path {p}"));
            return Err(InputError::new(
                &f,
                &format!("{jp}.target"),
                format!(
                    "hard link to {}, which is declared as a directory",
                    l.target
                ),
            ));
        }
    }
    Ok(())
}
