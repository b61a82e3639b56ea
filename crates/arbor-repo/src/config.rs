//! The repository `config` file: a GLib key file.
//!
//! Only the subset ostree writes is supported: `[group]` headers,
//! `key=value` lines, comments (`#`) and blank lines. Unknown content is
//! preserved verbatim when the file is rewritten, so a config edited by
//! `ostree` survives a round trip through arbor.

use anyhow::{bail, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A comment or blank line, kept as written.
    Raw(String),
    /// `key=value`.
    Entry(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    name: String,
    lines: Vec<Line>,
}

/// A parsed key file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFile {
    /// Lines before the first group (comments only).
    preamble: Vec<String>,
    groups: Vec<Group>,
}

impl KeyFile {
    /// Parses key-file text. Errors name the offending line.
    pub fn parse(text: &str) -> Result<KeyFile> {
        let mut kf = KeyFile::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                match kf.groups.last_mut() {
                    Some(g) => g.lines.push(Line::Raw(raw.to_string())),
                    None => kf.preamble.push(raw.to_string()),
                }
            } else if let Some(rest) = line.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    bail!("Parsing config line {}: unterminated group header", n + 1);
                };
                kf.groups.push(Group {
                    name: name.to_string(),
                    lines: Vec::new(),
                });
            } else if let Some((k, v)) = line.split_once('=') {
                let Some(g) = kf.groups.last_mut() else {
                    bail!("Parsing config line {}: key outside of any group", n + 1);
                };
                g.lines.push(Line::Entry(
                    k.trim().to_string(),
                    v.trim_start().to_string(),
                ));
            } else {
                bail!("Parsing config line {}: expected key=value", n + 1);
            }
        }
        Ok(kf)
    }

    /// The value of `key` in `group`, if set (the last one wins, as in GLib).
    pub fn get(&self, group: &str, key: &str) -> Option<&str> {
        self.groups
            .iter()
            .filter(|g| g.name == group)
            .flat_map(|g| g.lines.iter())
            .filter_map(|l| match l {
                Line::Entry(k, v) if k == key => Some(v.as_str()),
                _ => None,
            })
            .next_back()
    }

    /// A boolean value (`true`/`false`, as GLib accepts them), or `default`.
    pub fn get_bool(&self, group: &str, key: &str, default: bool) -> Result<bool> {
        match self.get(group, key) {
            None => Ok(default),
            Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(v) => bail!("Invalid boolean '{v}' for {group}.{key} in config"),
        }
    }

    /// Sets `key` in `group`, creating the group at the end if needed.
    pub fn set(&mut self, group: &str, key: &str, value: &str) {
        let idx = match self.groups.iter().position(|g| g.name == group) {
            Some(i) => i,
            None => {
                // GLib separates a new group from the previous one by a
                // blank line (kept as that group's trailing line).
                if let Some(last) = self.groups.last_mut() {
                    if !matches!(last.lines.last(), Some(Line::Raw(r)) if r.trim().is_empty()) {
                        last.lines.push(Line::Raw(String::new()));
                    }
                }
                self.groups.push(Group {
                    name: group.to_string(),
                    lines: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[idx];
        for l in g.lines.iter_mut() {
            if let Line::Entry(k, v) = l {
                if k == key {
                    *v = value.to_string();
                    return;
                }
            }
        }
        g.lines
            .push(Line::Entry(key.to_string(), value.to_string()));
    }

    /// The `key=value` entries of a group, in file order.
    pub fn entries(&self, group: &str) -> Vec<(&str, &str)> {
        self.groups
            .iter()
            .filter(|g| g.name == group)
            .flat_map(|g| g.lines.iter())
            .filter_map(|l| match l {
                Line::Entry(k, v) => Some((k.as_str(), v.as_str())),
                Line::Raw(_) => None,
            })
            .collect()
    }

    /// Names of all groups, in file order.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().map(|g| g.name.as_str())
    }

    /// Removes `key` from `group`; returns whether it was set.
    pub fn remove_key(&mut self, group: &str, key: &str) -> bool {
        let mut removed = false;
        for g in self.groups.iter_mut().filter(|g| g.name == group) {
            let before = g.lines.len();
            g.lines
                .retain(|l| !matches!(l, Line::Entry(k, _) if k == key));
            removed |= before != g.lines.len();
        }
        removed
    }

    /// Removes a whole group; returns whether it existed.
    pub fn remove_group(&mut self, group: &str) -> bool {
        let before = self.groups.len();
        self.groups.retain(|g| g.name != group);
        // The blank line that separated it from the previous group goes too.
        if let Some(last) = self.groups.last_mut() {
            while matches!(last.lines.last(), Some(Line::Raw(r)) if r.trim().is_empty()) {
                last.lines.pop();
            }
        }
        before != self.groups.len()
    }

    /// Serialises in GLib's layout (LF endings, a blank line between groups
    /// is not added: ostree does not add one either).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for l in &self.preamble {
            out.push_str(l);
            out.push('\n');
        }
        for g in &self.groups {
            out.push('[');
            out.push_str(&g.name);
            out.push_str("]\n");
            for l in &g.lines {
                match l {
                    Line::Raw(r) => out.push_str(r),
                    Line::Entry(k, v) => {
                        out.push_str(k);
                        out.push('=');
                        out.push_str(v);
                    }
                }
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_ostree_config() {
        let text = "[core]\nrepo_version=1\nmode=archive-z2\n\n# hi\n[remote \"origin\"]\nurl=http://x/repo\ngpg-verify=false\n";
        let kf = KeyFile::parse(text).unwrap();
        assert_eq!(kf.get("core", "mode"), Some("archive-z2"));
        assert_eq!(kf.get("remote \"origin\"", "url"), Some("http://x/repo"));
        assert!(!kf
            .get_bool("remote \"origin\"", "gpg-verify", true)
            .unwrap());
        assert_eq!(kf.to_text(), text);
    }

    #[test]
    fn set_and_errors() {
        let mut kf = KeyFile::parse("[core]\nmode=bare\n").unwrap();
        kf.set("core", "mode", "bare-user");
        kf.set("core", "fsync", "false");
        assert_eq!(kf.to_text(), "[core]\nmode=bare-user\nfsync=false\n");
        kf.set("remote \"o\"", "url", "http://x");
        assert_eq!(
            kf.to_text(),
            "[core]\nmode=bare-user\nfsync=false\n\n[remote \"o\"]\nurl=http://x\n"
        );
        assert_eq!(kf.entries("remote \"o\""), vec![("url", "http://x")]);
        assert!(KeyFile::parse("x=1\n").is_err());
        assert!(KeyFile::parse("[core\n").is_err());
        assert!(KeyFile::parse("[core]\nnovalue\n").is_err());
        assert!(kf.get_bool("core", "mode", true).is_err());
    }
}
