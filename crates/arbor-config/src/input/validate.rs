//! Validators for the names and paths a configuration declares. Each
//! returns the reason a value is refused; the caller adds file and path.

/// Longest path accepted (Linux `PATH_MAX` less the NUL).
const MAX_PATH_BYTES: usize = 4095;
/// Longest path component or unit/drop-in name (`NAME_MAX`).
const MAX_NAME_BYTES: usize = 255;
/// Longest user or group name, as shadow-utils' `useradd` accepts.
const MAX_ACCOUNT_NAME: usize = 32;
/// The highest permission bits (setuid, setgid, sticky and rwx).
pub const MAX_MODE: u64 = 0o7777;
/// `(uid_t) -1`, which chown(2) reads as "unchanged": never a real id.
const INVALID_ID: u64 = u32::MAX as u64;

/// The systemd unit types (`systemd.unit(5)`).
const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
];

/// A path a file, directory or link may be declared at: absolute,
/// normalized (no empty, `.` or `..` component, no trailing `/`), no NUL,
/// strictly below `/etc` or `/var`.
pub fn check_entry_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    if p.chars().any(char::is_control) {
        return Err(format!("{p:?} contains a control character"));
    }
    if p.len() > MAX_PATH_BYTES {
        return Err(format!("path longer than {MAX_PATH_BYTES} bytes"));
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(format!("{p:?} is not an absolute path"));
    };
    if p.ends_with('/') {
        return Err(format!("{p:?} ends with '/'"));
    }
    let comps: Vec<&str> = rest.split('/').collect();
    for c in &comps {
        match *c {
            "" => return Err(format!("{p:?} contains '//'")),
            "." | ".." => return Err(format!("{p:?} contains a {c:?} component")),
            _ if c.len() > MAX_NAME_BYTES => {
                return Err(format!(
                    "{p:?} has a component longer than {MAX_NAME_BYTES} bytes"
                ))
            }
            _ => {}
        }
    }
    match comps.first().copied() {
        Some("etc") | Some("var") if comps.len() >= 2 => Ok(()),
        Some("etc") | Some("var") => Err(format!(
            "{p:?} itself cannot be declared, only paths below it"
        )),
        Some("usr") => Err(format!(
            "{p:?} is under /usr, which belongs to the OS commit: only /etc and /var can be configured"
        )),
        _ => Err(format!(
            "{p:?} is outside /etc and /var: only paths below them can be configured"
        )),
    }
}

/// A symbolic link's target: non-empty text without NUL.
pub fn check_symlink_target(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("empty link target".into());
    }
    if t.contains('\0') {
        return Err("link target contains a NUL byte".into());
    }
    if t.chars().any(char::is_control) {
        return Err(format!("link target {t:?} contains a control character"));
    }
    if t.len() > MAX_PATH_BYTES {
        return Err(format!("link target longer than {MAX_PATH_BYTES} bytes"));
    }
    Ok(())
}

/// A user or group name as shadow-utils accepts by default:
/// `[a-z_][a-z0-9_-]*[$]?`, at most 32 bytes.
pub fn check_account_name(n: &str) -> Result<(), String> {
    if n.is_empty() {
        return Err("empty name".into());
    }
    if n.len() > MAX_ACCOUNT_NAME {
        return Err(format!(
            "{n:?} is longer than {MAX_ACCOUNT_NAME} characters"
        ));
    }
    let body = n.strip_suffix('$').unwrap_or(n);
    let mut chars = body.chars();
    let first_ok = matches!(chars.next(), Some('a'..='z' | '_'));
    let rest_ok = chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'));
    if !first_ok || !rest_ok {
        return Err(format!(
            "{n:?} is not a valid name (expected [a-z_][a-z0-9_-]*[$]?)"
        ));
    }
    Ok(())
}

/// A numeric user or group id: an integer in `0..4294967295`.
pub fn check_id(v: &serde_json::Value) -> Result<u32, String> {
    match v.as_u64() {
        Some(n) if n < INVALID_ID => Ok(n as u32),
        Some(n) if n == INVALID_ID => Err("4294967295 ((uid_t) -1) is not a valid id".into()),
        _ => Err(format!(
            "{v} is not a valid id (an integer from 0 to 4294967294)"
        )),
    }
}

/// Permission bits: an integer (decimal in JSON) at most 0o7777.
pub fn check_mode(v: &serde_json::Value) -> Result<u32, String> {
    match v.as_u64() {
        Some(n) if n <= MAX_MODE => Ok(n as u32),
        Some(n) => Err(format!(
            "mode {n} (0o{n:o}) is above 0o7777 (4095); modes are decimal in Ignition, e.g. 420 for 0644"
        )),
        None => match v.as_str() {
            // YAML 1.1 (and Go's yaml, which MCO uses) read 0644 as octal;
            // YAML 1.2 readers give a string: say how to write it.
            Some(s) if s.starts_with('0') && u32::from_str_radix(s, 8).is_ok() => Err(format!(
                "mode {s:?} is a string: write it as a decimal integer ({}) or, in YAML, 0o{}",
                u32::from_str_radix(s, 8).unwrap_or_default(),
                s.trim_start_matches('0')
            )),
            _ => Err(format!("mode {v} is not a non-negative integer")),
        },
    }
}

/// A unit name: `PREFIX.TYPE` or a template `PREFIX@.TYPE` or instance
/// `PREFIX@INSTANCE.TYPE`, with a known type and systemd's characters.
pub fn check_unit_name(n: &str) -> Result<(), String> {
    if n.len() > MAX_NAME_BYTES {
        return Err(format!("unit name longer than {MAX_NAME_BYTES} bytes"));
    }
    let Some((stem, ty)) = n.rsplit_once('.') else {
        return Err(format!("{n:?} has no unit type suffix (e.g. .service)"));
    };
    if !UNIT_TYPES.contains(&ty) {
        return Err(format!("{n:?} has an unknown unit type {ty:?}"));
    }
    let valid_chars = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\'))
    };
    let (prefix, instance) = match stem.split_once('@') {
        Some((p, i)) => (p, Some(i)),
        None => (stem, None),
    };
    if prefix.is_empty() {
        return Err(format!("{n:?} has an empty unit name"));
    }
    if !valid_chars(prefix) || instance.is_some_and(|i| !valid_chars(i)) {
        return Err(format!("{n:?} is not a valid unit name"));
    }
    Ok(())
}

/// A drop-in file name: `NAME.conf`, one path component.
pub fn check_dropin_name(n: &str) -> Result<(), String> {
    if n.contains('/') || n.chars().any(char::is_control) {
        return Err(format!(
            "drop-in name {n:?} contains '/' or a control character"
        ));
    }
    if n.len() > MAX_NAME_BYTES {
        return Err(format!("drop-in name longer than {MAX_NAME_BYTES} bytes"));
    }
    match n.strip_suffix(".conf") {
        Some(stem) if !stem.is_empty() && !stem.starts_with('.') => Ok(()),
        _ => Err(format!("drop-in name {n:?} must be NAME.conf")),
    }
}

/// One kernel argument: non-empty, no control characters, no whitespace
/// outside double quotes (`foo="a b"` is one argument).
pub fn check_kernel_argument(a: &str) -> Result<(), String> {
    if a.is_empty() {
        return Err("empty kernel argument".into());
    }
    if a.chars().any(|c| c.is_control()) {
        return Err(format!(
            "kernel argument {a:?} contains a control character"
        ));
    }
    let mut quoted = false;
    for c in a.chars() {
        if c == '"' {
            quoted = !quoted;
        } else if c.is_whitespace() && !quoted {
            return Err(format!(
                "kernel argument {a:?} contains whitespace: give one argument per entry"
            ));
        }
    }
    if quoted {
        return Err(format!("kernel argument {a:?} has an unbalanced '\"'"));
    }
    Ok(())
}

/// An extension entry `[NAME=]REF` (see `crate::extensions::source`): an
/// optional name, then a ref (`[REMOTE:]` and `/`-separated components
/// `[A-Za-z0-9_][A-Za-z0-9._-]*`, ostree's ref syntax) or a 64-hex
/// checksum; at most 255 bytes. Its name is derived as `extension add`
/// and `config apply` derive it ([`crate::extensions::source::name_of`]):
/// the explicit one, else the ref's last component, and must be a valid
/// extension name (`[A-Za-z0-9][A-Za-z0-9._-]{0,63}`); a checksum needs
/// an explicit name. Returns the name. That the ref exists is checked
/// when the configuration is applied.
pub fn extension_entry_name(n: &str) -> Result<String, String> {
    use crate::extensions::source::{name_of, split_entry, SourceKind};
    fn word(w: &str) -> bool {
        let mut chars = w.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    }
    let invalid = |why: &str| Err(format!("{n:?} is not a valid extension entry: {why}"));
    if n.len() > MAX_NAME_BYTES {
        return invalid(&format!("longer than {MAX_NAME_BYTES} bytes"));
    }
    let (name, source) = split_entry(n);
    let rev = match source.split_once(':') {
        Some((remote, r)) if word(remote) => r,
        Some(_) => return invalid("expected [NAME=][REMOTE:]REF or [NAME=]CHECKSUM"),
        None => source,
    };
    if !rev.split('/').all(word) {
        return invalid(
            "a ref is '/'-separated components of letters, digits, '.', '_' and '-', \
             each starting with a letter, digit or '_'",
        );
    }
    name_of(name, source, SourceKind::Rev).map_err(|e| format!("{n:?}: {e:#}"))
}

/// [`extension_entry_name`], for its verdict only.
pub fn check_extension_name(n: &str) -> Result<(), String> {
    extension_entry_name(n).map(|_| ())
}

/// A line of `/etc/shadow`-family text (password hash, ssh key): no
/// newline, no NUL, and (for passwd fields) no ':'.
pub fn check_field(what: &str, v: &str, colon_ok: bool) -> Result<(), String> {
    if v.contains(['\n', '\r', '\0']) || (!colon_ok && v.contains(':')) {
        let extra = if colon_ok { "" } else { ", ':'" };
        return Err(format!("{what} must not contain a newline, NUL{extra}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_entries_are_name_equals_ref() {
        let hex = "ab".repeat(32);
        let named_hex = format!("t={hex}");
        for ok in [
            "usbguard",
            "t2=exts/tools",
            "t=origin:exts/x86_64/tools",
            "origin:exts/x86_64/kernel-devel_extra",
            "x=exts/_private",
            named_hex.as_str(),
        ] {
            assert_eq!(check_extension_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            extension_entry_name("origin:exts/x86_64/tools").as_deref(),
            Ok("tools")
        );
        assert_eq!(extension_entry_name("t=exts/tools").as_deref(), Ok("t"));
        let long = format!("exts/{}", "a".repeat(65));
        for bad in [
            "",
            "=x",
            "a b",
            ".x=y",
            "t=",
            "t=a//b",
            "t=:x",
            "a=b=c",
            "-x",
            // ostree's ref syntax has no '+'.
            "origin:exts/x86_64/kernel-devel+extra",
            // A checksum gives no name.
            hex.as_str(),
            // Derived names must be valid names.
            "exts/_private",
            long.as_str(),
            "_x=exts/tools",
        ] {
            assert!(check_extension_name(bad).is_err(), "{bad}");
        }
        assert!(extension_entry_name(&hex).unwrap_err().contains("name it"));
    }

    #[test]
    fn two_extension_entries_giving_one_name_are_refused_naming_both() {
        let mc = |name: &str, exts: &[&str]| {
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": "machineconfiguration.openshift.io/v1",
                "kind": "MachineConfig",
                "metadata": {"name": name},
                "spec": {"extensions": exts},
            }))
            .unwrap()
        };
        let render = |inputs: Vec<(&str, Vec<u8>)>| {
            crate::render::render(
                &inputs
                    .into_iter()
                    .map(|(n, b)| (n.to_string(), b))
                    .collect::<Vec<_>>(),
            )
        };
        // One document.
        let e = render(vec![(
            "a.json",
            mc("50-a", &["exts/tools", "tools=other/t"]),
        )])
        .unwrap_err()
        .to_string();
        assert!(e.contains("extension tools given twice"), "{e}");
        assert!(
            e.contains("exts/tools") && e.contains("tools=other/t"),
            "{e}"
        );
        assert!(e.contains("a.json"), "{e}");
        // Two documents.
        let e = render(vec![
            ("a.json", mc("50-a", &["exts/tools"])),
            ("b.json", mc("60-b", &["x=y", "origin:exts/tools"])),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("extension tools given twice"), "{e}");
        assert!(
            e.contains("exts/tools") && e.contains("origin:exts/tools"),
            "{e}"
        );
        assert!(e.contains("a.json") && e.contains("b.json"), "{e}");
        // The same entry twice is one entry.
        let r = render(vec![
            ("a.json", mc("50-a", &["exts/tools"])),
            ("b.json", mc("60-b", &["exts/tools"])),
        ])
        .unwrap();
        assert_eq!(r.config.extensions, ["exts/tools"]);
    }

    #[test]
    fn entry_paths() {
        for ok in ["/etc/a", "/etc/a/b.conf", "/var/lib/x", "/etc/.hidden"] {
            assert_eq!(check_entry_path(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("etc/a", "absolute"),
            ("/etc", "itself"),
            ("/var", "itself"),
            ("/etc/", "ends with"),
            ("/etc/a/", "ends with"),
            ("/etc//a", "'//'"),
            ("/etc/../usr/x", "\"..\""),
            ("/etc/./a", "\".\""),
            ("/usr/etc/a", "under /usr"),
            ("/usr", "under /usr"),
            ("/opt/a", "outside /etc and /var"),
            ("/etcetera/a", "outside"),
            ("/etc/a\0b", "NUL"),
            ("/etc/a\nb", "control character"),
        ] {
            let e = check_entry_path(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn account_names() {
        for ok in ["core", "_x", "a-b_1", "machine$", "a".repeat(32).as_str()] {
            assert_eq!(check_account_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Root",
            "1abc",
            "a b",
            "a:b",
            "a$b",
            "a".repeat(33).as_str(),
            "é",
        ] {
            assert!(check_account_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_and_modes() {
        use serde_json::json;
        assert_eq!(check_id(&json!(0)), Ok(0));
        assert_eq!(check_id(&json!(4294967294u64)), Ok(4294967294));
        for bad in [
            json!(4294967295u64),
            json!(-1),
            json!(1.5),
            json!("1000"),
            json!(1u64 << 40),
        ] {
            assert!(check_id(&bad).is_err(), "{bad}");
        }
        assert_eq!(check_mode(&json!(420)), Ok(0o644));
        assert_eq!(check_mode(&json!(4095)), Ok(0o7777));
        assert!(check_mode(&json!(4096))
            .unwrap_err()
            .contains("above 0o7777"));
        assert_eq!(
            check_mode(&json!("0644")).unwrap_err(),
            "mode \"0644\" is a string: write it as a decimal integer (420) or, in YAML, 0o644"
        );
        assert!(check_mode(&json!(420.5)).is_err());
    }

    #[test]
    fn unit_and_dropin_names() {
        for ok in [
            "a.service",
            "getty@.service",
            "getty@tty1.service",
            "x-y:z.timer",
            "-.mount",
        ] {
            assert_eq!(check_unit_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "a",
            "a.conf",
            ".service",
            "@.service",
            "a/b.service",
            "a b.service",
        ] {
            assert!(check_unit_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_dropin_name("10-x.conf"), Ok(()));
        for bad in ["x", ".conf", "a/b.conf", "x.con", "a\nb.conf"] {
            assert!(check_dropin_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kernel_arguments() {
        for ok in ["quiet", "console=ttyS0,115200", "foo=\"a b\""] {
            assert_eq!(check_kernel_argument(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a b", "a\nb", "x=\"a"] {
            assert!(check_kernel_argument(bad).is_err(), "{bad:?}");
        }
    }
}
