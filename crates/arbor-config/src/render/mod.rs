//! Rendering: several input files merged into one canonical document and
//! its name.
//!
//! Merge order: as MCO, which merges MachineConfigs sorted by
//! `metadata.name`, a MachineConfig document takes its place by its
//! `metadata.name`; an Ignition file (which has no name), or a
//! MachineConfig without one, by its file name (the last path
//! component). Ties keep file-name order. So `99-x.yaml` holding
//! `metadata.name: 00-x` merges before `50-y.ign`.
//!
//! Merge rules:
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
//!   are the union, sorted (membership has no order); ssh keys are the
//!   union in file order (MCO likewise concatenates the keys of all
//!   MachineConfigs).
//! - Kernel arguments and extensions are concatenated in file order, a
//!   repeated entry keeping its first place.
//!
//! The merged configuration is then checked for what apply could not
//! write, so that the error names a file and JSON path: no entry below a
//! declared file or link; a masked unit has no contents and is not
//! enabled (whichever files set them); unit files and drop-ins are not
//! also storage entries; hard links lie in `/etc`, point to a file in
//! `/etc` (not a directory, not through or to a symbolic link), and do
//! not loop.
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

/// Largest canonical document: [`render`] refuses a larger one, and
/// [`Rendered::from_canonical`] reads up to this much back. Above
/// [`input::MAX_INPUT_BYTES`] since a render merges several inputs and
/// writes file contents in base64; the decoded contents' own bound
/// ([`input::dataurl::MAX_TOTAL_BYTES`], 32 MiB, 43 MiB in base64) leaves
/// room for the rest.
pub const MAX_RENDERED_BYTES: u64 = 64 << 20;

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
        let config = input::parse_input_within(CANONICAL_NAME, bytes, MAX_RENDERED_BYTES)?;
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
    let mut parsed = Vec::with_capacity(order.len());
    for (name, bytes) in order {
        parsed.push((name.as_str(), input::parse(name, bytes, &mut budget)?));
    }
    // MCO's order: a MachineConfig by its metadata.name, any other
    // document by its file name (stable: the file names break ties).
    parsed.sort_by(|(a, pa), (b, pb)| merge_key(a, pa).cmp(merge_key(b, pb)));
    let mut m = Merger::default();
    for (name, p) in parsed {
        m.add(name, p)?;
    }
    check_tree_with(&m.config, |key| {
        m.origin
            .get(key)
            .cloned()
            .unwrap_or_else(|| (String::new(), "$".into()))
    })?;
    let r = Rendered::from_config(m.config);
    if r.canonical.len() as u64 > MAX_RENDERED_BYTES {
        let names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
        return Err(InputError::new(
            &names.join(", "),
            "$",
            format!(
                "the rendered document would be {} bytes, more than the {} MiB limit (file contents count 4/3 in base64): declare less",
                r.canonical.len(),
                MAX_RENDERED_BYTES >> 20
            ),
        ));
    }
    Ok(r)
}

/// Where a parsed input merges: MachineConfigs by `metadata.name` (as
/// MCO orders them), other documents by file name.
fn merge_key<'a>(file: &'a str, p: &'a Parsed) -> &'a str {
    p.merge_name.as_deref().unwrap_or_else(|| base_name(file))
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
            // Validated at parse time; two entries may not give one name.
            let name = crate::input::validate::extension_entry_name(x).unwrap_or_default();
            let key = format!("extension {name}");
            let jpath = here(&p, &key);
            if let Some(other) = self.config.extensions.iter().find(|o| {
                *o != x && crate::input::validate::extension_entry_name(o).is_ok_and(|n| n == name)
            }) {
                let (ofile, opath) = origin_of(&self.origin, &key);
                return Err(InputError::new(
                    file,
                    &jpath,
                    format!(
                        "extension {name} given twice: {x:?} here and {other:?} in {ofile} ({opath})"
                    ),
                ));
            }
            self.origin
                .entry(key)
                .or_insert_with(|| (file.to_owned(), jpath));
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
        e.groups.extend(user.groups);
        e.groups.sort();
        e.groups.dedup();
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
        for field in ["contents", "enabled", "mask"] {
            let fk = format!("{field} {name}");
            if let Some(fp) = p.origin.get(&fk) {
                self.origin.insert(fk, (file.to_owned(), fp.clone()));
            }
        }
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
    check_hard_links(c, &origin)?;
    check_units(c, &origin)
}

/// What is declared at `p` and cannot have entries below it, if anything.
fn leaf_kind(c: &Config, p: &str) -> Option<&'static str> {
    if c.files.contains_key(p) {
        Some("a file")
    } else {
        match c.links.get(p) {
            Some(l) if l.hard => Some("a hard link"),
            Some(_) => Some("a symbolic link"),
            None => None,
        }
    }
}

/// Hard links as apply can make them: in /etc, to a regular file in
/// /etc, not through a declared link, not to themselves or in a cycle.
fn check_hard_links(
    c: &Config,
    origin: &impl Fn(&str) -> (String, String),
) -> Result<(), InputError> {
    // Links whose chain is known to end at a file: each chain is followed
    // once, so a long chain costs linear time, not cubic.
    let mut ends_at_file: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for (p, l) in c.links.iter().filter(|(_, l)| l.hard) {
        let (f, jp) = origin(&format!("path {p}"));
        let err = |at: &str, m: String| Err(InputError::new(&f, &format!("{jp}{at}"), m));
        if p.starts_with("/var/") {
            return err(
                ".hard",
                format!("{p}: hard links under /var are not supported (/var is shared by all deployments and only systemd-tmpfiles writes it)"),
            );
        }
        if !l.target.starts_with("/etc/") {
            return err(
                ".target",
                format!(
                    "{p}: a hard link in /etc must point to a file in /etc, not {}",
                    l.target
                ),
            );
        }
        if c.directories.contains_key(&l.target) {
            return err(
                ".target",
                format!(
                    "hard link to {}, which is declared as a directory",
                    l.target
                ),
            );
        }
        let mut anc = l.target.as_str();
        while let Some((parent, _)) = anc.rsplit_once('/') {
            anc = parent;
            if let Some(what) = leaf_kind(c, anc) {
                return err(
                    ".target",
                    format!(
                        "hard link to {}, which is below {anc}, declared as {what}",
                        l.target
                    ),
                );
            }
        }
        // Follow declared hard links: the chain must end at a file.
        let mut seen = vec![p.as_str()];
        let mut seen_set: std::collections::HashSet<&str> = [p.as_str()].into();
        let mut to = l.target.as_str();
        loop {
            if ends_at_file.contains(to) {
                break;
            }
            if seen_set.contains(to) {
                return err(
                    ".target",
                    format!("hard link {p} leads back to {to}: a hard link to itself or a cycle"),
                );
            }
            match c.links.get(to) {
                Some(next) if next.hard => {
                    seen.push(to);
                    seen_set.insert(to);
                    to = &next.target;
                }
                Some(_) => {
                    return err(
                        ".target",
                        format!("hard link to {to}, which is declared as a symbolic link"),
                    )
                }
                None => break,
            }
        }
        ends_at_file.extend(seen);
    }
    Ok(())
}

/// Units as apply can write them: a masked unit has no contents and is
/// not enabled (in any file), and the unit files and drop-ins are not
/// declared as storage entries too (nor below a declared file or link).
fn check_units(c: &Config, origin: &impl Fn(&str) -> (String, String)) -> Result<(), InputError> {
    for (name, u) in &c.units {
        if u.mask {
            let (mf, mp) = origin(&format!("mask {name}"));
            for (field, set) in [
                ("contents", u.contents.is_some()),
                ("enabled", u.enabled == Some(true)),
            ] {
                if set {
                    let (f, p) = origin(&format!("{field} {name}"));
                    return Err(InputError::new(
                        &mf,
                        &mp,
                        format!(
                            "unit {name} is masked, but {f} ({p}) gives it {}",
                            if field == "enabled" {
                                "enabled: true"
                            } else {
                                "contents"
                            }
                        ),
                    ));
                }
            }
        }
        let mut written = Vec::new();
        if u.mask || u.contents.is_some() {
            written.push(format!("{UNIT_DIR}/{name}"));
        }
        written.extend(u.dropins.keys().map(|d| format!("{UNIT_DIR}/{name}.d/{d}")));
        for w in &written {
            let mut at = w.as_str();
            let mut what =
                leaf_kind(c, at).or(c.directories.contains_key(at).then_some("a directory"));
            while what.is_none() {
                let Some((parent, _)) = at.rsplit_once('/') else {
                    break;
                };
                at = parent;
                what = leaf_kind(c, at);
            }
            if let Some(what) = what {
                let (f, p) = origin(&format!("path {at}"));
                let (uf, up) = origin(&format!("unit {name}"));
                return Err(InputError::new(
                    &f,
                    &p,
                    format!(
                        "{at} is declared as {what}, but unit {name} (in {uf} ({up})) writes {w}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Where unit files and drop-ins are written.
const UNIT_DIR: &str = "/etc/systemd/system";
