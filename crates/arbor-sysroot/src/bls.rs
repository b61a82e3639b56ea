//! Boot Loader Specification entries (`/boot/loader.N/entries/ostree-*.conf`),
//! read and written the way ostree's bootconfig parser does.

use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use rustix::fs::FileType;

use crate::fsutil;

/// Keys ostree writes first, in this order; any other keys follow in the
/// order they were set.
const KEY_ORDER: &[&str] = &[
    "title",
    "version",
    "options",
    "devicetree",
    "linux",
    "initrd",
];

/// Keys ostree also sets itself, written after [`KEY_ORDER`]'s.
const OTHER_OSTREE_KEYS: &[&str] = &["fdtdir", "aboot", "abootcfg"];

/// One BLS entry: `key value` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootEntry {
    entries: Vec<(String, String)>,
    /// `initrd` lines after the first: overlay initramfs images (ostree's
    /// `--overlay-initrd`), kept in order.
    pub overlay_initrds: Vec<String>,
}

impl BootEntry {
    /// Parses an entry as ostree's bootconfig parser does: lines starting
    /// with a letter are split at the first space or tab (a line with no
    /// value is ignored, as are comments and blank lines); a second and
    /// later `initrd` line is an overlay initrd.
    pub fn parse(text: &str) -> Result<BootEntry> {
        let mut e = BootEntry::default();
        for line in text.lines() {
            if !line.starts_with(|c: char| c.is_ascii_alphabetic()) {
                continue;
            }
            let Some(i) = line.find([' ', '\t']) else {
                continue;
            };
            let (k, v) = line.split_at(i);
            let v = &v[1..];
            if k == "initrd" && e.get("initrd").is_some() {
                e.overlay_initrds.push(v.to_string());
            } else {
                e.set(k, v);
            }
        }
        if e.entries.is_empty() {
            bail!("Invalid BLS entry: no 'key value' line");
        }
        Ok(e)
    }

    /// Keys that are not among those ostree writes itself (e.g. bootc's
    /// `x-options-source-*`): carried over when the entry is rewritten.
    pub fn extra_keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .filter(|(k, _)| {
                !KEY_ORDER.contains(&k.as_str()) && !OTHER_OSTREE_KEYS.contains(&k.as_str())
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key`, replacing an existing value in place.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_string(),
            None => self.entries.push((key.to_string(), value.to_string())),
        }
    }

    /// Serialises with ostree's key order: `title`, `version`, `options`,
    /// `devicetree`, `linux`, `initrd`, then the rest.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut put = |k: &str, v: &str| {
            out.push_str(k);
            out.push(' ');
            out.push_str(v);
            out.push('\n');
        };
        for key in KEY_ORDER {
            if let Some(v) = self.get(key) {
                put(key, v);
            }
            if *key == "initrd" && self.get(key).is_some() {
                for o in &self.overlay_initrds {
                    put(key, o);
                }
            }
        }
        for (k, v) in &self.entries {
            if !KEY_ORDER.contains(&k.as_str()) {
                put(k, v);
            }
        }
        out
    }
}

/// The `ostree-*.conf` entries (regular files, or symlinks to them, as
/// ostree reads them) of an `entries` directory,
/// sorted as ostree sorts them: by `version`, highest first (the default
/// entry first), entries without a version last.
pub fn read_entries(entries: impl AsFd) -> Result<Vec<(String, BootEntry)>> {
    let fd = entries.as_fd();
    let mut out = Vec::new();
    for name in fsutil::list_names(fd)? {
        if !(name.starts_with("ostree-") && name.ends_with(".conf")) {
            continue;
        }
        // Symlinks are followed, as ostree's fstatat(…, 0) follows them
        // (a dangling one fails the read there too).
        let st = rustix::fs::statat(fd, name.as_str(), rustix::fs::AtFlags::empty())
            .with_context(|| format!("Inspecting {name}"))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            continue;
        }
        let f = rustix::fs::openat(
            fd,
            name.as_str(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .with_context(|| format!("Opening {name}"))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(f), &mut text)
            .with_context(|| format!("Reading {name}"))?;
        let e = BootEntry::parse(&text).with_context(|| format!("Parsing {name}"))?;
        out.push((name, e));
    }
    out.sort_by(
        |(_, a), (_, b)| match (a.get("version"), b.get("version")) {
            (Some(x), Some(y)) => vercmp(y, x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, _) => std::cmp::Ordering::Greater,
        },
    );
    Ok(out)
}

/// Compares two version strings like glibc's `strverscmp` does for the
/// cases BLS `version` fields take (digit runs compared as numbers).
pub fn vercmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let na = std::str::from_utf8(&a[si..i])
                .unwrap_or("0")
                .trim_start_matches('0');
            let nb = std::str::from_utf8(&b[sj..j])
                .unwrap_or("0")
                .trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then(na.cmp(nb));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_ostree_order() {
        let text = "linux /ostree/x/vmlinuz-6.1\ntitle TestOS 1 1.0 (ostree:0)\n# c\noptions root=LABEL=rootfs quiet ostree=/ostree/boot.1/testos/abc/0\nversion 1\ninitrd /ostree/x/initramfs-6.1.img\nx-custom\tv\n";
        let e = BootEntry::parse(text).unwrap();
        assert_eq!(e.get("version"), Some("1"));
        assert_eq!(e.get("x-custom"), Some("v"));
        assert_eq!(
            e.to_text(),
            "title TestOS 1 1.0 (ostree:0)\nversion 1\noptions root=LABEL=rootfs quiet ostree=/ostree/boot.1/testos/abc/0\nlinux /ostree/x/vmlinuz-6.1\ninitrd /ostree/x/initramfs-6.1.img\nx-custom v\n"
        );
        assert!(BootEntry::parse("title\n").is_err());
        // A valueless line is ignored, as ostree does; extra initrd lines
        // are overlays, written back after the first.
        let e = BootEntry::parse(
            "title T\nbogus\ninitrd /a.img\ninitrd /ostree/initramfs-overlays/x.img\nx-options-source-tuned  a=1\n",
        )
        .unwrap();
        assert_eq!(e.get("bogus"), None);
        assert_eq!(e.overlay_initrds, ["/ostree/initramfs-overlays/x.img"]);
        assert_eq!(
            e.extra_keys().collect::<Vec<_>>(),
            [("x-options-source-tuned", " a=1")]
        );
        assert_eq!(
            e.to_text(),
            "title T\ninitrd /a.img\ninitrd /ostree/initramfs-overlays/x.img\nx-options-source-tuned  a=1\n"
        );
    }

    #[test]
    fn versions_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(vercmp("10", "9"), Greater);
        assert_eq!(vercmp("2", "2"), Equal);
        assert_eq!(vercmp("1", "2"), Less);
        assert_eq!(vercmp("1.10", "1.9"), Greater);
    }

    /// As ostree: a symlinked `ostree-*.conf` is read through the link; a
    /// symlink to a directory is skipped (not a regular file) and a
    /// dangling one fails the read (ostree's fstatat fails on it too).
    #[test]
    fn symlinked_entries_are_followed() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::write(d.join("real"), "title A\nversion 2\nlinux /k\n").unwrap();
        std::os::unix::fs::symlink("real", d.join("ostree-2-os.conf")).unwrap();
        std::fs::write(d.join("ostree-1-os.conf"), "title B\nversion 1\nlinux /k\n").unwrap();
        std::fs::create_dir(d.join("dir")).unwrap();
        std::os::unix::fs::symlink("dir", d.join("ostree-3-os.conf")).unwrap();
        let fd = fsutil::open_dir(rustix::fs::CWD, &d.to_string_lossy()).unwrap();
        let e = read_entries(&fd).unwrap();
        let names: Vec<&str> = e.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ostree-2-os.conf", "ostree-1-os.conf"]);
        assert_eq!(e[0].1.get("title"), Some("A"));
        std::os::unix::fs::symlink("missing", d.join("ostree-4-os.conf")).unwrap();
        assert!(read_entries(&fd).is_err());
    }
}
