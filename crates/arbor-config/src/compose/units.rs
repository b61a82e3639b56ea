//! systemd units: unit files and drop-ins in `/etc/systemd/system`, and
//! the symlinks `systemctl enable`, `disable` and `mask` would leave.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;

use anyhow::{bail, Context, Result};
use rustix::fs::FileType;

use super::files::default_content;
use super::users::read_regular;
use super::{Desired, Out};
use crate::model::Config;

/// The unit directory of `/etc`, relative to it.
const UNIT_DIR: &str = "systemd/system";
/// The dependency directories `systemctl enable` fills, per `[Install]` key.
const DEP_KEYS: [(&str, &str); 3] = [
    ("WantedBy", "wants"),
    ("RequiredBy", "requires"),
    ("UpheldBy", "upholds"),
];

/// A unit's `[Install]` section.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Install {
    /// `WantedBy=`, `RequiredBy=`, `UpheldBy=` values, with their
    /// directory suffix.
    deps: Vec<(&'static str, String)>,
    alias: Vec<String>,
    also: Vec<String>,
    default_instance: Option<String>,
    /// Whether the section exists at all.
    present: bool,
}

/// Parses the `[Install]` section of a unit file (continuation lines,
/// comments, and an empty assignment resetting a list, as systemd does).
pub(crate) fn parse_install(content: &str) -> Install {
    let mut inst = Install::default();
    let mut in_install = false;
    let mut logical = String::new();
    for raw in content.lines() {
        if let Some(l) = raw.strip_suffix('\\') {
            logical.push_str(l);
            logical.push(' ');
            continue;
        }
        logical.push_str(raw);
        let line = std::mem::take(&mut logical);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            in_install = line == "[Install]";
            inst.present |= in_install;
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        let words = || v.split_whitespace().map(str::to_string);
        if let Some((_, suffix)) = DEP_KEYS.iter().find(|(key, _)| *key == k) {
            if v.is_empty() {
                inst.deps.retain(|(s, _)| s != suffix);
            }
            inst.deps.extend(words().map(|w| (*suffix, w)));
        } else if k == "Alias" {
            if v.is_empty() {
                inst.alias.clear();
            }
            inst.alias.extend(words());
        } else if k == "Also" {
            if v.is_empty() {
                inst.also.clear();
            }
            inst.also.extend(words());
        } else if k == "DefaultInstance" {
            inst.default_instance = (!v.is_empty()).then(|| v.to_string());
        }
    }
    inst
}

/// Whether `n` can be a unit's file name (no `/`, no leading `.`, and
/// no `%`: specifiers are not expanded here, so they are refused rather
/// than written literally).
fn valid_unit_name(n: &str) -> bool {
    !n.is_empty() && !n.starts_with('.') && !n.contains(['/', '%']) && n.contains('.')
}

/// `foo@bar.service` → (`foo@.service`, `bar`); `foo@.service` →
/// (`foo@.service`, ``); a plain unit → `None`.
fn split_instance(name: &str) -> Option<(String, String)> {
    let (prefix, rest) = name.split_once('@')?;
    let (inst, suffix) = rest.rsplit_once('.')?;
    Some((format!("{prefix}@.{suffix}"), inst.to_string()))
}

/// Where the unit file `name` is: the path `systemctl enable` links to,
/// and its content. Searched in the config, the OS's `/etc` defaults,
/// then `/lib/systemd/system` (when `/lib` is a real directory) and
/// `/usr/lib/systemd/system` of `root`.
fn find_unit(
    name: &str,
    config: &Config,
    defaults: &OwnedFd,
    root: Option<&OwnedFd>,
) -> Result<(String, String)> {
    if let Some(c) = config.units.get(name).and_then(|u| u.contents.as_ref()) {
        return Ok((format!("/etc/{UNIT_DIR}/{name}"), c.clone()));
    }
    let text =
        |b: Vec<u8>| String::from_utf8(b).with_context(|| format!("Unit {name} is not UTF-8"));
    if let Some(b) = default_content(defaults, &format!("{UNIT_DIR}/{name}"))? {
        return Ok((format!("/etc/{UNIT_DIR}/{name}"), text(b)?));
    }
    if let Some(root) = root {
        for dir in ["lib/systemd/system", "usr/lib/systemd/system"] {
            let Some(d) = arbor_sysroot::fsutil::open_tree_dir(root, dir)? else {
                continue;
            };
            match arbor_sysroot::fsutil::file_type(&d, name)? {
                Some(FileType::RegularFile) => {
                    let b = read_regular(&d, name)?
                        .with_context(|| format!("/{dir}/{name} vanished"))?;
                    return Ok((format!("/{dir}/{name}"), text(b)?));
                }
                Some(FileType::Symlink) => bail!(
                    "Unit {name}: /{dir}/{name} is a symlink (an alias); enable the unit it names"
                ),
                _ => {}
            }
        }
    }
    bail!("Unit {name} is enabled by the config, but neither the config nor the OS has it")
}

/// Substitutes the instance into a template name (`getty@.target` with
/// `tty1` is `getty@tty1.target`).
fn with_instance(unit: &str, instance: &str) -> String {
    match split_instance(unit) {
        Some((_, i)) if i.is_empty() && !instance.is_empty() => {
            let (p, s) = unit.split_once("@.").expect("a template has '@.'");
            format!("{p}@{instance}.{s}")
        }
        _ => unit.to_string(),
    }
}

/// The symlinks of `systemctl enable NAME` (and of its `Also=` units).
fn enable(
    name: &str,
    config: &Config,
    defaults: &OwnedFd,
    root: Option<&OwnedFd>,
    seen: &mut BTreeSet<String>,
    out: &mut Out,
) -> Result<()> {
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let (file, instance) = match split_instance(name) {
        Some((template, inst)) => (template, Some(inst)),
        None => (name.to_string(), None),
    };
    let (target, content) = match find_unit(name, config, defaults, root) {
        Ok(f) => f,
        Err(e) if file != name => find_unit(&file, config, defaults, root).context(e)?,
        Err(e) => return Err(e),
    };
    let inst = parse_install(&content);
    for n in inst
        .deps
        .iter()
        .map(|(_, n)| n)
        .chain(&inst.alias)
        .chain(&inst.also)
    {
        if !valid_unit_name(n) {
            bail!("Unit {name}: [Install] names {n:?}, which is not a unit name");
        }
    }
    if !inst.present || (inst.deps.is_empty() && inst.alias.is_empty() && inst.also.is_empty()) {
        bail!("Unit {name} has no [Install] section (WantedBy=, RequiredBy=, Alias=, Also=): it cannot be enabled");
    }
    let instance = match instance {
        Some(i) if i.is_empty() => Some(inst.default_instance.clone().with_context(|| {
            format!("Unit {name} is a template without DefaultInstance=: enable an instance (NAME@INSTANCE)")
        })?),
        i => i,
    };
    let link_name = match &instance {
        Some(i) => with_instance(&file, i),
        None => name.to_string(),
    };
    let origin = format!("the enablement of unit {name}");
    let sym = || Desired::Symlink {
        target: target.clone(),
        uid: 0,
        gid: 0,
    };
    for (suffix, dep) in &inst.deps {
        let dep = with_instance(dep, instance.as_deref().unwrap_or_default());
        out.insert(
            &format!("{UNIT_DIR}/{dep}.{suffix}/{link_name}"),
            sym(),
            &origin,
        )?;
    }
    for a in &inst.alias {
        out.insert(&format!("{UNIT_DIR}/{a}"), sym(), &origin)?;
    }
    for also in &inst.also {
        enable(also, config, defaults, root, seen, out)
            .with_context(|| format!("Also= of unit {name}"))?;
    }
    Ok(())
}

/// `Absent` for each enablement symlink of `name` the OS defaults have.
fn disable(name: &str, defaults: &OwnedFd, out: &mut Out) -> Result<()> {
    let origin = format!("unit {name} (enabled: false)");
    for p in enablement_links(name, defaults)? {
        out.insert(&p, Desired::Absent, &origin)?;
    }
    Ok(())
}

/// The enablement symlinks of `name` in `etc` (an `/etc` or `/usr/etc`),
/// relative to it: in a `*.wants`, `*.requires` or `*.upholds` directory
/// (named `name`, or an instance of the template `name`), or an alias
/// linking to it.
fn enablement_links(name: &str, etc: &OwnedFd) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let Some(dir) = arbor_sysroot::fsutil::open_tree_dir(etc, UNIT_DIR)? else {
        return Ok(found);
    };
    let is_template = split_instance(name).is_some_and(|(_, i)| i.is_empty());
    let links_here = |d: &OwnedFd, e: &str| -> Result<bool> {
        let Some(t) = arbor_sysroot::fsutil::readlink_optional(d, e)? else {
            return Ok(false);
        };
        let base = t.rsplit('/').next().unwrap_or_default();
        Ok(e == name || (base == name && (is_template || !e.contains('@'))))
    };
    let mut names = arbor_sysroot::fsutil::list_names(&dir)?;
    names.sort();
    for sub in names {
        let ft = arbor_sysroot::fsutil::file_type(&dir, &sub)?;
        if ft == Some(FileType::Directory)
            && DEP_KEYS
                .iter()
                .any(|(_, s)| sub.ends_with(&format!(".{s}")))
        {
            let d = arbor_sysroot::fsutil::open_dir(&dir, &sub)?;
            let mut entries = arbor_sysroot::fsutil::list_names(&d)?;
            entries.sort();
            for e in entries {
                if arbor_sysroot::fsutil::file_type(&d, &e)? == Some(FileType::Symlink)
                    && links_here(&d, &e)?
                {
                    found.push(format!("{UNIT_DIR}/{sub}/{e}"));
                }
            }
        } else if ft == Some(FileType::Symlink) && sub != name && links_here(&dir, &sub)? {
            found.push(format!("{UNIT_DIR}/{sub}"));
        }
    }
    Ok(found)
}

/// The enablement symlinks in `etc` of the units `config` disables that
/// `managed` does not cover: links the admin made (`systemctl enable` by
/// hand), carried into a composed `/etc`, which the config's
/// `enabled: false` overrides.
pub(crate) fn local_enablement_links(
    config: &Config,
    etc: &OwnedFd,
    managed: &super::Managed,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (name, _) in config
        .units
        .iter()
        .filter(|(_, u)| u.enabled == Some(false))
    {
        for p in enablement_links(name, etc)? {
            if !managed.contains_key(&p) && !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Unit files, drop-ins, masks, enablement and disablement of `config`.
pub(crate) fn units(
    config: &Config,
    defaults: &OwnedFd,
    root: Option<&OwnedFd>,
    out: &mut Out,
) -> Result<()> {
    let mut seen = BTreeSet::new();
    for (name, u) in &config.units {
        if !valid_unit_name(name) {
            bail!("Unit {name:?}: not a unit name");
        }
        let file = |c: &[u8]| Desired::File {
            content: c.to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        };
        let origin = format!("unit {name}");
        if u.mask {
            if u.contents.is_some() || u.enabled == Some(true) {
                bail!("Unit {name}: a masked unit cannot also have contents or be enabled");
            }
            let d = Desired::Symlink {
                target: "/dev/null".into(),
                uid: 0,
                gid: 0,
            };
            out.insert(&format!("{UNIT_DIR}/{name}"), d, &origin)?;
        } else if let Some(c) = &u.contents {
            out.insert(&format!("{UNIT_DIR}/{name}"), file(c.as_bytes()), &origin)?;
        }
        for (d, dropin) in &u.dropins {
            if d.contains('/') || d.starts_with('.') || d.is_empty() {
                bail!("Unit {name}: drop-in {d:?} is not a file name");
            }
            let c = dropin.contents.as_deref().unwrap_or_default();
            out.insert(
                &format!("{UNIT_DIR}/{name}.d/{d}"),
                file(c.as_bytes()),
                &origin,
            )?;
        }
        match u.enabled {
            Some(true) => enable(name, config, defaults, root, &mut seen, out)?,
            Some(false) => disable(name, defaults, out)?,
            None => {}
        }
    }
    Ok(())
}
