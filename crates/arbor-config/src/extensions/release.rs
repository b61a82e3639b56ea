//! systemd-sysext's `extension-release` checks.
//!
//! An extension may carry one `usr/lib/extension-release.d/extension-release.NAME`
//! (NAME = the extension's name, as systemd-sysext requires the file to
//! match the image name). When it does, its keys are checked against the
//! base's os-release (`usr/lib/os-release`, else `usr/etc/os-release`) with
//! systemd's rules (`extension_release_validate` in systemd's
//! `src/shared/extension-util.c`), in systemd's order:
//!
//! 1. a file without any key is refused;
//! 2. `ARCHITECTURE`, when set and not `_any`, must be the architecture
//!    of the machine running the composition (the running kernel's
//!    `uname -m`, under systemd's name: `x86-64`, `arm64`, ...; see
//!    [`systemd_architecture`]): composing on a build host of another
//!    architecture checks against the build host;
//! 3. `ID` must be set; `ID=_any` fits every base (nothing more is checked);
//!    otherwise it must equal the base's `ID` or one of the words of the
//!    base's `ID_LIKE`;
//! 4. a base with neither `VERSION_ID` nor `SYSEXT_LEVEL` (a rolling
//!    release) accepts the extension;
//! 5. if both have `SYSEXT_LEVEL`, they must be equal;
//! 6. else, if the base has `VERSION_ID`, the extension must have the same
//!    `VERSION_ID` (an extension with neither key is refused here).
//!
//! Every refusal names the extension, the key and both values. Files are
//! parsed as os-release(5) (shell-like quoting, escapes, comments); their
//! size is capped, as they come from the extension.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;

use anyhow::{bail, Context, Result};
use arbor_format::{Checksum, DirTree};
use arbor_repo::objects::open_file_object;
use arbor_repo::Repo;
use arbor_sysroot::layered::ExtensionRef;
use fn_error_context::context;

use super::verify::{load_commit, load_dirtree};

/// Where an extension's release file lives.
pub const EXTENSION_RELEASE_DIR: &str = "usr/lib/extension-release.d";
/// The release file's name is this prefix plus the extension's name.
pub const EXTENSION_RELEASE_PREFIX: &str = "extension-release.";
/// The base's os-release, in the order they are tried.
pub const OS_RELEASE_PATHS: [&str; 2] = ["usr/lib/os-release", "usr/etc/os-release"];
/// Largest release file read (they are a few hundred bytes).
pub const MAX_RELEASE_SIZE: u64 = 64 * 1024;
/// Symlinks followed while resolving a path inside a tree.
const MAX_SYMLINK_HOPS: usize = 8;
/// The value of `ID` and `ARCHITECTURE` that fits everything.
const ANY: &str = "_any";

/// Checks that `ext` fits the base commit `base`: its
/// `usr/lib/extension-release.d/extension-release.NAME`, when present,
/// against the base's os-release (see the module docs). An extension
/// without a release file fits every base.
#[context("Checking extension {} against base {}", ext.name, short(base))]
pub fn check(repo: &Repo, base: &Checksum, ext: &ExtensionRef) -> Result<()> {
    let ext_root = load_commit(repo, &ext.commit)?.root_tree;
    let Some(ext_release) = extension_release(repo, &ext_root, &ext.name)? else {
        return Ok(());
    };
    let base_root = load_commit(repo, base)?.root_tree;
    let host = base_os_release(repo, &base_root)?.with_context(|| {
        format!(
            "Extension {} has an extension-release file, but base {} has no os-release \
             ({} or {})",
            ext.name,
            short(base),
            OS_RELEASE_PATHS[0],
            OS_RELEASE_PATHS[1]
        )
    })?;
    validate(&ext.name, &host, &ext_release, &systemd_architecture())
}

/// The first 12 hex digits of a checksum, as sources are named in errors.
pub(crate) fn short(c: &Checksum) -> String {
    c.to_hex()[..12].to_string()
}

/// Applies systemd-sysext's rules (module docs) to parsed files: `host` is
/// the base's os-release, `ext` the extension's release file, `arch` the
/// machine's architecture under systemd's name.
pub fn validate(
    name: &str,
    host: &BTreeMap<String, String>,
    ext: &BTreeMap<String, String>,
    arch: &str,
) -> Result<()> {
    let get =
        |m: &BTreeMap<String, String>, k: &str| -> String { m.get(k).cloned().unwrap_or_default() };
    if ext.is_empty() {
        bail!("Extension {name}: its extension-release file carries no data");
    }
    let ext_arch = get(ext, "ARCHITECTURE");
    if !ext_arch.is_empty() && ext_arch != ANY && ext_arch != arch {
        bail!("Extension {name} is for ARCHITECTURE={ext_arch:?}, but this machine is {arch:?}");
    }
    let (ext_id, host_id) = (get(ext, "ID"), get(host, "ID"));
    if ext_id.is_empty() {
        bail!("Extension {name} has no ID in its extension-release file (the base has ID={host_id:?}; use ID=_any to fit any OS)");
    }
    if ext_id == ANY {
        return Ok(());
    }
    if host_id.is_empty() {
        bail!("Extension {name} has ID={ext_id:?}, but the base's os-release has no ID");
    }
    let host_like = get(host, "ID_LIKE");
    if ext_id != host_id && !host_like.split_whitespace().any(|w| w == ext_id) {
        bail!(
            "Extension {name} has ID={ext_id:?}, but the base has ID={host_id:?} and \
             ID_LIKE={host_like:?}"
        );
    }
    // A base with neither VERSION_ID nor SYSEXT_LEVEL (a rolling release)
    // is matched by ID alone: neither branch below applies.
    let (host_version, host_level) = (get(host, "VERSION_ID"), get(host, "SYSEXT_LEVEL"));
    let ext_level = get(ext, "SYSEXT_LEVEL");
    if !host_level.is_empty() && !ext_level.is_empty() {
        if host_level != ext_level {
            bail!("Extension {name} has SYSEXT_LEVEL={ext_level:?}, but the base has SYSEXT_LEVEL={host_level:?}");
        }
    } else if !host_version.is_empty() {
        let ext_version = get(ext, "VERSION_ID");
        if ext_version.is_empty() && ext_level.is_empty() {
            bail!(
                "Extension {name} has neither SYSEXT_LEVEL nor VERSION_ID, but the base has \
                 VERSION_ID={host_version:?}"
            );
        }
        if ext_version.is_empty() {
            bail!(
                "Extension {name} has SYSEXT_LEVEL={ext_level:?} but no VERSION_ID, and the base \
                 has no SYSEXT_LEVEL but VERSION_ID={host_version:?}"
            );
        }
        if ext_version != host_version {
            bail!("Extension {name} has VERSION_ID={ext_version:?}, but the base has VERSION_ID={host_version:?}");
        }
    }
    Ok(())
}

/// The architecture of the machine running this (the running kernel's
/// machine, as `uname -m` prints it) under systemd's name, as
/// systemd-sysext compares `ARCHITECTURE` with it.
pub fn systemd_architecture() -> String {
    let uname = rustix::system::uname();
    let machine = uname.machine().to_string_lossy();
    systemd_architecture_of(&machine, usize::BITS).to_string()
}

/// systemd's name (`architecture_to_string`) of a kernel machine name
/// (`uname -m`), as systemd's `uname_architecture` maps it (its
/// `arch_map` in `src/basic/architecture.c`, the union over every
/// architecture it is built for). `pointer_bits` is the pointer width of
/// the running program, which decides the bare `riscv` (riscv32 or
/// riscv64) as it does for systemd. Byte order plays no part: systemd
/// maps `mips` and `mips64` to `mips` and `mips64` on either order. A
/// machine name systemd does not list keeps its kernel name.
pub fn systemd_architecture_of(machine: &str, pointer_bits: u32) -> &str {
    match machine {
        "aarch64" => "arm64",
        "aarch64_be" => "arm64-be",
        "armv8l" | "armv7ml" | "armv7l" | "armv6l" | "armv5tl" | "armv5tel" | "armv5tejl"
        | "armv4tl" | "armv4l" => "arm",
        "armv8b" | "armv7mb" | "armv7b" | "armv6b" | "armv5tejb" | "armv5teb" | "armv5tb"
        | "armv4tb" | "armv4b" => "arm-be",
        "alpha" => "alpha",
        "arc" => "arc",
        "arceb" => "arc-be",
        "crisv32" => "cris",
        "x86_64" => "x86-64",
        "i686" | "i586" | "i486" | "i386" => "x86",
        "x32" => "x32",
        "ia64" => "ia64",
        "parisc64" => "parisc64",
        "parisc" => "parisc",
        "loongarch64" => "loongarch64",
        "m68k" => "m68k",
        "mips64" => "mips64",
        "mips" => "mips",
        "nios2" => "nios2",
        "ppc64le" => "ppc64-le",
        "ppc64" => "ppc64",
        "ppcle" => "ppc-le",
        "ppc" => "ppc",
        "riscv64" => "riscv64",
        "riscv32" => "riscv32",
        "riscv" if pointer_bits == 32 => "riscv32",
        "riscv" if pointer_bits == 64 => "riscv64",
        "s390x" => "s390x",
        "s390" => "s390",
        "sh5" => "sh64",
        "sh4a" | "sh4" | "sh3" | "sh2a" | "sh2" => "sh",
        "sparc64" => "sparc64",
        "sparc" => "sparc",
        "tilegx" => "tilegx",
        other => other,
    }
}

/// The extension's release file, parsed; `None` when it has none.
fn extension_release(
    repo: &Repo,
    root: &Checksum,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>> {
    let Some(Found::Dir(dir)) = resolve(repo, root, EXTENSION_RELEASE_DIR)? else {
        return Ok(None);
    };
    let dt = load_dirtree(repo, &dir)?;
    let found: Vec<&str> = dt
        .files
        .iter()
        .map(|f| f.name.as_str())
        .filter(|n| n.starts_with(EXTENSION_RELEASE_PREFIX))
        .collect();
    let file = match found.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        many => bail!(
            "Extension {name} has {} extension-release files in /{EXTENSION_RELEASE_DIR} ({}): \
             expected one",
            many.len(),
            many.join(", ")
        ),
    };
    let suffix = &file[EXTENSION_RELEASE_PREFIX.len()..];
    if suffix != name {
        bail!(
            "Extension {name} carries /{EXTENSION_RELEASE_DIR}/{file}, which names extension \
             {suffix:?}: the file must be {EXTENSION_RELEASE_PREFIX}{name}"
        );
    }
    let path = format!("{EXTENSION_RELEASE_DIR}/{file}");
    match resolve(repo, root, &path)? {
        Some(Found::File(c)) => Ok(Some(parse_os_release(&read_text(repo, &c, &path)?))),
        _ => bail!("Extension {name}: /{path} is not a regular file inside the extension"),
    }
}

/// The base's os-release, parsed; `None` when it has none.
fn base_os_release(repo: &Repo, root: &Checksum) -> Result<Option<BTreeMap<String, String>>> {
    for path in OS_RELEASE_PATHS {
        if let Some(Found::File(c)) = resolve(repo, root, path)? {
            return Ok(Some(parse_os_release(&read_text(repo, &c, path)?)));
        }
    }
    Ok(None)
}

/// Reads a regular file object as UTF-8, refusing more than
/// [`MAX_RELEASE_SIZE`] bytes.
fn read_text(repo: &Repo, c: &Checksum, path: &str) -> Result<String> {
    let obj = open_file_object(repo, c).with_context(|| format!("Opening /{path}"))?;
    if !obj.header.is_regular() {
        bail!("/{path} is not a regular file");
    }
    if obj.size > MAX_RELEASE_SIZE {
        bail!(
            "/{path} is {} bytes, more than the {MAX_RELEASE_SIZE} allowed",
            obj.size
        );
    }
    let mut buf = Vec::new();
    obj.content
        .take(MAX_RELEASE_SIZE + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("Reading /{path}"))?;
    if buf.len() as u64 > MAX_RELEASE_SIZE {
        bail!("/{path} is more than {MAX_RELEASE_SIZE} bytes");
    }
    String::from_utf8(buf).with_context(|| format!("/{path} is not UTF-8"))
}

/// What a path inside a tree names.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// A directory (its dirtree).
    Dir(Checksum),
    /// A regular file (its file object).
    File(Checksum),
}

/// Resolves a relative path inside the tree `root`, following symlinks
/// (at most [`MAX_SYMLINK_HOPS`]) as if the tree were the root directory:
/// absolute targets start at the tree's root and `..` stops there, so
/// resolution never leaves the tree. `None` if the path does not exist.
fn resolve(repo: &Repo, root: &Checksum, path: &str) -> Result<Option<Found>> {
    let mut pending: VecDeque<String> = components(path).collect();
    let mut stack: Vec<Checksum> = vec![*root];
    let mut hops = 0;
    let mut cached: Option<(Checksum, DirTree)> = None;
    while let Some(comp) = pending.pop_front() {
        if comp == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let cur = *stack.last().expect("the stack always holds the root");
        if cached.as_ref().map(|(c, _)| c) != Some(&cur) {
            cached = Some((cur, load_dirtree(repo, &cur)?));
        }
        let (_, dt) = cached.as_ref().expect("just loaded");
        if let Some(d) = dt.dirs.iter().find(|d| d.name == comp) {
            stack.push(d.tree);
            continue;
        }
        let Some(f) = dt.files.iter().find(|f| f.name == comp) else {
            return Ok(None);
        };
        let obj = open_file_object(repo, &f.checksum)?;
        if !obj.header.is_symlink() {
            return Ok(pending.is_empty().then_some(Found::File(f.checksum)));
        }
        hops += 1;
        if hops > MAX_SYMLINK_HOPS {
            bail!("Resolving /{path}: more than {MAX_SYMLINK_HOPS} symlinks");
        }
        let target = &obj.header.symlink_target;
        if target.starts_with('/') {
            stack.truncate(1);
        }
        for c in components(target).collect::<Vec<_>>().into_iter().rev() {
            pending.push_front(c);
        }
    }
    Ok(Some(Found::Dir(
        *stack.last().expect("the stack always holds the root"),
    )))
}

fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
}

/// Parses an os-release(5) / extension-release file: `KEY=VALUE` lines,
/// `#` comments, values with shell-like quoting (`"..."` with `\"`, `\\`,
/// `` \` ``, `\$` escapes; `'...'` literal; a backslash outside quotes
/// escapes the next character, and before a newline continues the line).
/// Lines that are not assignments are ignored, as systemd does; a later
/// assignment of a key wins.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        // Start of a line: skip blanks and empty lines.
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            break;
        };
        if first == '#' || first == ';' {
            while chars.next_if(|c| *c != '\n').is_some() {}
            continue;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != '\n') {
            key.push(c);
        }
        let key = key.trim_end().to_string();
        if chars.next_if_eq(&'=').is_none() {
            continue; // no '=': not an assignment
        }
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        let value = parse_value(&mut chars);
        if valid_key(&key) {
            out.insert(key, value);
        }
    }
    out
}

/// Reads a value up to the end of its line.
fn parse_value(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> String {
    let mut value = String::new();
    // Length of `value` up to its last quoted character: trailing blanks
    // outside quotes are dropped, inside quotes kept.
    let mut keep = 0;
    while let Some(c) = chars.next() {
        match c {
            '\n' => break,
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(e) => {
                    value.push(e);
                    keep = value.len();
                }
            },
            '\'' => {
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    value.push(q);
                }
                keep = value.len();
            }
            '"' => {
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(e @ ('"' | '\\' | '`' | '$')) => value.push(e),
                            Some('\n') | None => {}
                            Some(e) => {
                                value.push('\\');
                                value.push(e);
                            }
                        },
                        q => value.push(q),
                    }
                }
                keep = value.len();
            }
            c => {
                value.push(c);
                if !c.is_whitespace() {
                    keep = value.len();
                }
            }
        }
    }
    value.truncate(keep);
    value
}

fn valid_key(key: &str) -> bool {
    let mut b = key.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}
