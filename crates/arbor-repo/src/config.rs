//! GLib key files: the repository `config` and deployment `.origin` files.
//!
//! Only the subset ostree writes is supported: `[group]` headers,
//! `key=value` lines, comments (`#`) and blank lines. Unknown content is
//! preserved verbatim when the file is rewritten, so a config edited by
//! `ostree` survives a round trip through arbor.
//!
//! Values are stored escaped exactly as `g_key_file_set_string` escapes
//! them (ostree writes every string that way) and read back unescaped as
//! `g_key_file_get_string` does: `\n`, `\r`, `\\` always, a leading
//! space or tab as `\s` / `\t`. So a value can never add a line, a group
//! or a key to the file. Group and key names cannot be escaped: names
//! GLib would refuse, and names with control characters, are refused.

use std::borrow::Cow;

use anyhow::{bail, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A comment or blank line, kept as written.
    Raw(String),
    /// `key=value`.
    Entry(Entry),
}

/// One `key=value` line: the value as written (escaped) and as read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    key: String,
    raw: String,
    value: String,
}

impl Entry {
    fn new(key: &str, value: &str) -> Entry {
        Entry {
            key: key.to_string(),
            raw: escape_value(value).into_owned(),
            value: value.to_string(),
        }
    }
}

/// Escapes a string value as `g_key_file_set_string` does (GLib's
/// `g_key_file_parse_string_as_value` without list separators): newline,
/// carriage return and backslash always; spaces and tabs only in the
/// leading run, because the parser strips leading whitespace of a value.
pub fn escape_value(value: &str) -> Cow<'_, str> {
    let leading_blank = value.starts_with([' ', '\t']);
    if !leading_blank && !value.contains(['\n', '\r', '\\']) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    // GLib leaves the leading run at the first character other than a
    // space, tab, newline or carriage return.
    let mut leading = true;
    for ch in value.chars() {
        match ch {
            ' ' if leading => out.push_str("\\s"),
            '\t' if leading => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            ' ' | '\t' => out.push(ch),
            '\\' => {
                out.push_str("\\\\");
                leading = false;
            }
            _ => {
                out.push(ch);
                leading = false;
            }
        }
    }
    Cow::Owned(out)
}

/// Unescapes a value as `g_key_file_get_string` does. GLib refuses a value
/// with an unknown escape (`\q`, or `\;` written by `set_string_list`) or
/// a trailing backslash; arbor keeps such a sequence verbatim instead, so
/// one odd key in an origin written by another tool does not make the
/// whole file unreadable.
pub fn unescape_value(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// Refuses a group name GLib would refuse (`g_key_file_is_group_name`:
/// empty, `[`, `]`, ASCII control characters), which would otherwise close the
/// header early or start a new line.
pub fn validate_group_name(name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("Invalid key-file group name: empty");
    }
    // g_ascii_iscntrl: C0 controls and DEL; GLib accepts C1 controls.
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '[' | ']') || c.is_ascii_control())
    {
        bail!("Invalid key-file group name {name:?}: contains {c:?}");
    }
    Ok(())
}

/// Refuses a key name that would not read back as the same key: empty,
/// `=`, `[`, `]` (GLib's `g_key_file_is_key_name`; locale suffixes are not
/// written by arbor), control characters such as a newline, leading or
/// trailing whitespace (stripped by the parser), or a leading `#` (a
/// comment).
pub fn validate_key_name(key: &str) -> Result<()> {
    if key.is_empty() {
        bail!("Invalid key-file key name: empty");
    }
    if let Some(c) = key
        .chars()
        .find(|c| matches!(c, '=' | '[' | ']') || c.is_control())
    {
        bail!("Invalid key-file key name {key:?}: contains {c:?}");
    }
    if key.starts_with(char::is_whitespace) || key.ends_with(char::is_whitespace) {
        bail!("Invalid key-file key name {key:?}: leading or trailing whitespace");
    }
    if key.starts_with('#') {
        bail!("Invalid key-file key name {key:?}: starts with '#'");
    }
    Ok(())
}

/// A key name as GLib's parser accepts it: `g_key_file_is_key_name`,
/// including a `[locale]` suffix.
fn is_parsed_key_name(key: &str) -> bool {
    let (base, locale) = match key.find('[') {
        Some(i) => (&key[..i], Some(&key[i..])),
        None => (key, None),
    };
    if base.is_empty() || base.contains([']', '=']) || base.starts_with(' ') || base.ends_with(' ')
    {
        return false;
    }
    match locale {
        None => true,
        Some(l) => l
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
            .is_some_and(|l| {
                l.chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
            }),
    }
}

/// GLib's `g_ascii_isspace`.
fn is_glib_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
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
    /// Parses key-file text with GLib's rules (`g_key_file_parse_line`):
    /// leading whitespace of a line and of a value is skipped, trailing
    /// whitespace of a key is dropped, a value keeps its trailing
    /// whitespace, and a `\r` before a newline is dropped (not one ending
    /// the last line without a newline). Errors name the offending line.
    pub fn parse(text: &str) -> Result<KeyFile> {
        let mut kf = KeyFile::default();
        let count = text.split_terminator('\n').count();
        for (n, raw) in text.split_terminator('\n').enumerate() {
            let terminated = n + 1 < count || text.ends_with('\n');
            let raw = match raw.strip_suffix('\r') {
                Some(r) if terminated => r,
                _ => raw,
            };
            let line = raw.trim_start_matches(is_glib_space);
            if line.is_empty() || line.starts_with('#') {
                match kf.groups.last_mut() {
                    Some(g) => g.lines.push(Line::Raw(raw.to_string())),
                    None => kf.preamble.push(raw.to_string()),
                }
            } else if let Some(rest) = line.strip_prefix('[') {
                let Some((name, after)) = rest.split_once(']') else {
                    bail!("Parsing config line {}: unterminated group header", n + 1);
                };
                if !after.trim_start_matches([' ', '\t']).is_empty() {
                    bail!("Parsing config line {}: text after the group header", n + 1);
                }
                validate_group_name(name)
                    .map_err(|e| anyhow::anyhow!("Parsing config line {}: {e}", n + 1))?;
                kf.groups.push(Group {
                    name: name.to_string(),
                    lines: Vec::new(),
                });
            } else if let Some((k, v)) = line.split_once('=').filter(|(k, _)| !k.is_empty()) {
                let Some(g) = kf.groups.last_mut() else {
                    bail!("Parsing config line {}: key outside of any group", n + 1);
                };
                let key = k.trim_end_matches(is_glib_space);
                if !is_parsed_key_name(key) {
                    bail!("Parsing config line {}: invalid key name {key:?}", n + 1);
                }
                let raw = v.trim_start_matches(is_glib_space);
                g.lines.push(Line::Entry(Entry {
                    key: key.to_string(),
                    raw: raw.to_string(),
                    value: unescape_value(raw).into_owned(),
                }));
            } else {
                bail!("Parsing config line {}: expected key=value", n + 1);
            }
        }
        Ok(kf)
    }

    /// The value of `key` in `group`, unescaped, if set (the last one
    /// wins, as in GLib).
    pub fn get(&self, group: &str, key: &str) -> Option<&str> {
        self.groups
            .iter()
            .filter(|g| g.name == group)
            .flat_map(|g| g.lines.iter())
            .filter_map(|l| match l {
                Line::Entry(e) if e.key == key => Some(e.value.as_str()),
                _ => None,
            })
            .next_back()
    }

    /// A boolean value (`true`/`false`/`1`/`0`, trailing whitespace
    /// ignored, as `g_key_file_get_boolean` accepts them), or `default`.
    /// Like GLib, it reads the value as written, before unescaping: `true\s`
    /// is not a boolean.
    pub fn get_bool(&self, group: &str, key: &str, default: bool) -> Result<bool> {
        let raw = self
            .groups
            .iter()
            .filter(|g| g.name == group)
            .flat_map(|g| g.lines.iter())
            .filter_map(|l| match l {
                Line::Entry(e) if e.key == key => Some(e.raw.as_str()),
                _ => None,
            })
            .next_back();
        match raw.map(|v| v.trim_end_matches(is_glib_space)) {
            None => Ok(default),
            Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(v) => bail!("Invalid boolean '{v}' for {group}.{key} in config"),
        }
    }

    /// Sets `key` in `group` to the string `value` (escaped as
    /// `g_key_file_set_string` does), creating the group at the end if
    /// needed. Names that cannot be written safely, and values with a NUL
    /// (GLib would cut the value there), are refused.
    pub fn set(&mut self, group: &str, key: &str, value: &str) -> Result<()> {
        validate_group_name(group)?;
        validate_key_name(key)?;
        if value.contains('\0') {
            bail!("Invalid value for {group}.{key}: contains a NUL byte");
        }
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
            if let Line::Entry(e) = l {
                if e.key == key {
                    *e = Entry::new(key, value);
                    return Ok(());
                }
            }
        }
        g.lines.push(Line::Entry(Entry::new(key, value)));
        Ok(())
    }

    /// The `key=value` entries of a group, in file order, unescaped.
    pub fn entries(&self, group: &str) -> Vec<(&str, &str)> {
        self.groups
            .iter()
            .filter(|g| g.name == group)
            .flat_map(|g| g.lines.iter())
            .filter_map(|l| match l {
                Line::Entry(e) => Some((e.key.as_str(), e.value.as_str())),
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
                .retain(|l| !matches!(l, Line::Entry(e) if e.key == key));
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
                    Line::Entry(e) => {
                        out.push_str(&e.key);
                        out.push('=');
                        // A raw "\r" read at the end of an unterminated last
                        // line would be dropped before the newline: escape it.
                        match e.raw.strip_suffix('\r') {
                            Some(r) => {
                                out.push_str(r);
                                out.push_str("\\r");
                            }
                            None => out.push_str(&e.raw),
                        }
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
    fn carriage_return_is_dropped_only_before_a_newline() {
        // GLib's g_key_file_parse_data: "\r\n" ends a line; a "\r" that
        // ends the file without a newline is part of the value.
        let kf = KeyFile::parse("[a]\r\nk=v\r\nl=w\r").unwrap();
        assert_eq!(kf.get("a", "k"), Some("v"));
        assert_eq!(kf.get("a", "l"), Some("w\r"));
        let again = KeyFile::parse(&kf.to_text()).unwrap();
        assert_eq!(again.get("a", "l"), Some("w\r"));
        let kf = KeyFile::parse("[a]\nl=w\r\n").unwrap();
        assert_eq!(kf.get("a", "l"), Some("w"));
        // A raw "\r" inside a line is kept.
        let kf = KeyFile::parse("[a]\nk=x\ry\n").unwrap();
        assert_eq!(kf.get("a", "k"), Some("x\ry"));
    }

    #[test]
    fn group_names_refuse_ascii_controls_only() {
        // g_key_file_is_group_name uses g_ascii_iscntrl.
        for bad in ["a\nb", "a\x7fb", "a\tb", "a]b", "[", ""] {
            assert!(validate_group_name(bad).is_err(), "{bad:?}");
        }
        for good in ["remote \"x\"", "a\u{85}b", "a\u{9f}b", "caf\u{e9}"] {
            validate_group_name(good).unwrap();
            let kf = KeyFile::parse(&format!("[{good}]\nk=v\n")).unwrap();
            assert_eq!(kf.get(good, "k"), Some("v"));
        }
    }

    #[test]
    fn booleans_are_read_from_the_escaped_value() {
        // g_key_file_get_boolean parses g_key_file_get_value (not unescaped):
        // trailing raw whitespace is ignored, an escaped one is not.
        let kf = KeyFile::parse("[a]\nt=true \t\nf=0\ns=true\\s\nn=\\n1\n").unwrap();
        assert!(kf.get_bool("a", "t", false).unwrap());
        assert!(!kf.get_bool("a", "f", true).unwrap());
        assert!(kf.get_bool("a", "s", false).is_err());
        assert!(kf.get_bool("a", "n", false).is_err());
        assert!(kf.get_bool("a", "missing", true).unwrap());
        // A value written by set() reads back as GLib would read it.
        let mut kf = KeyFile::default();
        kf.set("a", "lead", " true").unwrap();
        assert!(kf.get_bool("a", "lead", false).is_err());
        kf.set("a", "plain", "false").unwrap();
        assert!(!kf.get_bool("a", "plain", true).unwrap());
    }

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
        kf.set("core", "mode", "bare-user").unwrap();
        kf.set("core", "fsync", "false").unwrap();
        assert_eq!(kf.to_text(), "[core]\nmode=bare-user\nfsync=false\n");
        kf.set("remote \"o\"", "url", "http://x").unwrap();
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

    #[test]
    fn escapes_as_glib_set_string() {
        // Expected outputs from g_key_file_set_string + g_key_file_to_data.
        for (value, escaped) in [
            ("plain", "plain"),
            ("", ""),
            ("a b\tc", "a b\tc"),
            ("  two", "\\s\\stwo"),
            ("\t x", "\\t\\sx"),
            ("\n x", "\\n\\sx"),
            ("x\n[core]\nmode=bare", "x\\n[core]\\nmode=bare"),
            ("c:\\dir\\", "c:\\\\dir\\\\"),
            ("\\ x", "\\\\ x"),
            ("cr\r\nlf", "cr\\r\\nlf"),
            ("trailing  ", "trailing  "),
        ] {
            assert_eq!(escape_value(value), escaped, "{value:?}");
            assert_eq!(unescape_value(escaped), value, "{escaped:?}");
        }
    }

    #[test]
    fn reads_ostree_escapes() {
        let kf = KeyFile::parse(
            "[remote \"o\"]\nurl=http://x/\\nnext\nk = \\s\\tv \nodd=\\q\\;\\\nbool=true \n",
        )
        .unwrap();
        assert_eq!(kf.get("remote \"o\"", "url"), Some("http://x/\nnext"));
        assert_eq!(kf.get("remote \"o\"", "k"), Some(" \tv "));
        // Unknown escapes and a trailing backslash are kept verbatim.
        assert_eq!(kf.get("remote \"o\"", "odd"), Some("\\q\\;\\"));
        assert!(kf.get_bool("remote \"o\"", "bool", false).unwrap());
    }

    #[test]
    fn hostile_values_stay_in_their_key() {
        let mut kf = KeyFile::parse("[core]\nrepo_version=1\nmode=archive-z2\n").unwrap();
        let hostile = "x\n[core]\nmode=bare\r\n\\n ";
        kf.set("remote \"r\"", "url", hostile).unwrap();
        kf.set("remote \"r\"", "opt", " lead").unwrap();
        let text = kf.to_text();
        assert_eq!(
            text.lines().filter(|l| l.starts_with('[')).count(),
            2,
            "{text}"
        );
        let back = KeyFile::parse(&text).unwrap();
        assert_eq!(back.get("core", "mode"), Some("archive-z2"));
        assert_eq!(back.get("remote \"r\"", "url"), Some(hostile));
        assert_eq!(back.get("remote \"r\"", "opt"), Some(" lead"));
        assert_eq!(back, kf);
    }

    #[test]
    fn unsafe_names_are_refused() {
        let mut kf = KeyFile::default();
        for key in [
            "", "a=b", "a]", "[a", "a\nb", "a\rb", " a", "a ", "#a", "a\0",
        ] {
            assert!(kf.set("core", key, "v").is_err(), "key {key:?}");
        }
        for group in ["", "a]", "a[", "a\nb", "remote \"x\"]\n[core"] {
            assert!(kf.set(group, "k", "v").is_err(), "group {group:?}");
        }
        assert!(kf.set("core", "k", "a\0b").is_err());
        assert_eq!(kf, KeyFile::default());
        kf.set("remote \"a.b-c_1\"", "tls-ca-path", "/x").unwrap();
        assert!(KeyFile::parse("[core]\nName[de]=x\n").is_ok());
        assert!(KeyFile::parse("[core]\na]=x\n").is_err());
        assert!(KeyFile::parse("[co]re]\n").is_err());
    }
}
