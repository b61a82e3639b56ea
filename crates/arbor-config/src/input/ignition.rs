//! Ignition spec 3.0.0 to 3.4.0, the supported subset (see the crate
//! docs): keys of the declared version only, everything outside the
//! subset refused with its JSON path.

use std::collections::btree_map::Entry;

use ring::digest;
use serde_json::Value;

use super::dataurl::{self, Budget};
use super::json::{kind, Obj, Src};
use super::validate::*;
use super::{InputError, Parsed};
use crate::model::{DirEntry, Dropin, FileEntry, Group, LinkEntry, Owner, Unit, User};

/// The minor version of a supported spec (3.MINOR.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u8);

/// The newest supported spec: what rendered documents declare.
pub const NEWEST: &str = "3.4.0";

const DISKS: &str =
    "disks, partitions, RAID, filesystems and LUKS are not supported: arbor configures files in /etc and /var only";

/// Reads `$.ignition.version`.
fn version(src: Src, v: &Value, path: &str) -> Result<Version, InputError> {
    let ign = v.get("ignition").filter(|v| !v.is_null()).ok_or_else(|| {
        src.err(
            path,
            "missing \"ignition\" (with \"version\"): not an Ignition config",
        )
    })?;
    let vpath = format!("{path}.ignition.version");
    let ver = match ign.get("version") {
        Some(Value::String(s)) => s.as_str(),
        None | Some(Value::Null) => return Err(src.err(&vpath, "missing Ignition spec version")),
        Some(v) => return Err(src.err(&vpath, format!("expected a string, found {}", kind(v)))),
    };
    if ver.starts_with("2.") || ver.starts_with("1.") {
        return Err(src.err(
            &vpath,
            format!(
                "Ignition spec {ver} is not supported: only spec 3 (3.0.0 to {NEWEST}); translate it to spec 3 (e.g. with ign-converter or Butane)"
            ),
        ));
    }
    match ver {
        "3.0.0" => Ok(Version(0)),
        "3.1.0" => Ok(Version(1)),
        "3.2.0" => Ok(Version(2)),
        "3.3.0" => Ok(Version(3)),
        "3.4.0" => Ok(Version(4)),
        _ => Err(src.err(
            &vpath,
            format!("unsupported Ignition spec version {ver:?} (supported: 3.0.0 to {NEWEST})"),
        )),
    }
}

/// Keys present from a spec version on: before it they are unknown keys.
fn since<'a>(ver: Version, min: u8, items: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    if ver.0 >= min {
        items.to_vec()
    } else {
        Vec::new()
    }
}

/// Parses an Ignition config at `path` (`$` or `$.spec.config`) into `out`.
pub fn parse(
    src: Src,
    v: &Value,
    path: &str,
    out: &mut Parsed,
    budget: &mut Budget,
) -> Result<(), InputError> {
    let ver = version(src, v, path)?;
    let unsupported = since(
        ver,
        3,
        &[(
            "kernelArguments",
            "Ignition kernelArguments are not supported: use a MachineConfig's spec.kernelArguments",
        )],
    );
    let root = src.object(
        v,
        path,
        &["ignition", "storage", "systemd", "passwd"],
        &unsupported,
    )?;
    let ign_unsupported = {
        let mut u = vec![
            (
                "config",
                "ignition.config (merge/replace of other configs) is not supported",
            ),
            (
                "security",
                "ignition.security (TLS settings) is not supported",
            ),
            ("timeouts", "ignition.timeouts is not supported"),
        ];
        u.extend(since(
            ver,
            1,
            &[("proxy", "ignition.proxy is not supported")],
        ));
        u
    };
    if let Some(i) = root.get("ignition") {
        src.object(i, &root.at("ignition"), &["version"], &ign_unsupported)?;
    }
    let mut p = Parser {
        src,
        ver,
        out,
        budget,
    };
    if let Some(s) = root.get("storage") {
        p.storage(s, &root.at("storage"))?;
    }
    if let Some(s) = root.get("systemd") {
        p.systemd(s, &root.at("systemd"))?;
    }
    if let Some(s) = root.get("passwd") {
        p.passwd(s, &root.at("passwd"))?;
    }
    Ok(())
}

struct Parser<'a, 'b> {
    src: Src<'a>,
    ver: Version,
    out: &'b mut Parsed,
    budget: &'b mut Budget,
}

impl Parser<'_, '_> {
    fn storage(&mut self, v: &Value, path: &str) -> Result<(), InputError> {
        let mut unsupported = vec![("disks", DISKS), ("raid", DISKS), ("filesystems", DISKS)];
        unsupported.extend(since(self.ver, 2, &[("luks", DISKS)]));
        let o = self
            .src
            .object(v, path, &["files", "directories", "links"], &unsupported)?;
        for (p, f) in o.array("files")? {
            self.file(f, &p)?;
        }
        for (p, d) in o.array("directories")? {
            self.directory(d, &p)?;
        }
        for (p, l) in o.array("links")? {
            self.link(l, &p)?;
        }
        Ok(())
    }

    /// Records a path's declaration, refusing a second one in this file.
    fn claim(&mut self, o: &Obj, entry_path: &str) -> Result<(), InputError> {
        check_entry_path(entry_path).map_err(|m| o.err("path", m))?;
        let key = format!("path {entry_path}");
        match self.out.origin.entry(key) {
            Entry::Occupied(e) => Err(o.err(
                "path",
                format!("{entry_path} is declared twice (also at {})", e.get()),
            )),
            Entry::Vacant(e) => {
                e.insert(o.path.clone());
                if o.bool("overwrite")? == Some(true) {
                    self.out.overwrite.insert(entry_path.to_owned());
                }
                Ok(())
            }
        }
    }

    fn file(&mut self, v: &Value, path: &str) -> Result<(), InputError> {
        let o = self.src.object(
            v,
            path,
            &[
                "path",
                "overwrite",
                "contents",
                "append",
                "mode",
                "user",
                "group",
            ],
            &[],
        )?;
        let p = o.req_str("path")?;
        self.claim(&o, p)?;
        let contents = match o.get("contents") {
            Some(c) => self.resource(c, &o.at("contents"), false)?,
            None => None,
        };
        if o.bool("overwrite")? == Some(true) && contents.is_none() {
            return Err(o.err("overwrite", "overwrite: true requires contents.source"));
        }
        let mut append = Vec::new();
        for (ap, a) in o.array("append")? {
            append.push(self.resource(a, &ap, true)?.unwrap_or_default());
        }
        // Ignition: 0644, or the existing file's mode when there are no
        // contents (and so no overwrite).
        let mode = self.mode(&o, contents.is_some().then_some(0o644))?;
        let entry = FileEntry {
            contents,
            append,
            mode,
            user: self.owner(&o, "user")?,
            group: self.owner(&o, "group")?,
        };
        self.out.config.files.insert(p.to_owned(), entry);
        Ok(())
    }

    /// A `contents` or `append[]` resource: decoded bytes, `None` without
    /// a source.
    fn resource(
        &mut self,
        v: &Value,
        path: &str,
        required: bool,
    ) -> Result<Option<Vec<u8>>, InputError> {
        let unsupported = since(
            self.ver,
            1,
            &[(
                "httpHeaders",
                "HTTP headers are not supported: remote sources are not supported",
            )],
        );
        let o = self.src.object(
            v,
            path,
            &["source", "compression", "verification"],
            &unsupported,
        )?;
        let gzip = match o.str("compression")? {
            None | Some("") => false,
            Some("gzip") => true,
            Some(c) => {
                return Err(o.err(
                    "compression",
                    format!("unsupported compression {c:?} (only gzip)"),
                ))
            }
        };
        // Ignition reads an empty source as none (util.NilOrEmpty).
        let Some(url) = o.str("source")?.filter(|u| !u.is_empty()) else {
            if required {
                return Err(self.src.err(path, "missing required key \"source\""));
            }
            if gzip || o.get("verification").is_some() {
                return Err(self
                    .src
                    .err(path, "compression or verification without a source"));
            }
            return Ok(None);
        };
        let bytes = dataurl::decode(url, gzip, self.budget).map_err(|m| o.err("source", m))?;
        if let Some(ver) = o.get("verification") {
            self.verify(ver, &o.at("verification"), &bytes)?;
        }
        Ok(Some(bytes))
    }

    /// `verification.hash`: `sha512-HEX` (and `sha256-HEX` from 3.1),
    /// over the decompressed bytes, checked now.
    fn verify(&self, v: &Value, path: &str, bytes: &[u8]) -> Result<(), InputError> {
        let o = self.src.object(v, path, &["hash"], &[])?;
        let Some(h) = o.str("hash")? else {
            return Ok(());
        };
        let (alg, want) = h
            .split_once('-')
            .ok_or_else(|| o.err("hash", "expected TYPE-HEX (e.g. sha512-...)"))?;
        let alg = match alg {
            "sha512" => &digest::SHA512,
            "sha256" if self.ver.0 >= 1 => &digest::SHA256,
            _ => return Err(o.err("hash", format!("unsupported hash type {alg:?}"))),
        };
        let got = hex::encode(digest::digest(alg, bytes));
        if !got.eq_ignore_ascii_case(want) {
            return Err(o.err("hash", format!("hash mismatch: the content's is {got}")));
        }
        Ok(())
    }

    /// `mode`, else `default` (`None`: the existing entry's mode).
    fn mode(&self, o: &Obj, default: Option<u32>) -> Result<Option<u32>, InputError> {
        match o.get("mode") {
            None => Ok(default),
            Some(m) => check_mode(m).map(Some).map_err(|e| o.err("mode", e)),
        }
    }

    fn owner(&self, o: &Obj, key: &str) -> Result<Owner, InputError> {
        let Some(v) = o.get(key) else {
            return Ok(Owner::default());
        };
        let w = self.src.object(v, &o.at(key), &["id", "name"], &[])?;
        match (w.get("id"), w.str("name")?) {
            (Some(_), Some(_)) => Err(self.src.err(&w.path, "give either id or name, not both")),
            (Some(id), None) => check_id(id).map(Owner::Id).map_err(|e| w.err("id", e)),
            (None, Some(n)) => {
                check_account_name(n).map_err(|e| w.err("name", e))?;
                Ok(Owner::Name(n.to_owned()))
            }
            (None, None) => Ok(Owner::default()),
        }
    }

    fn directory(&mut self, v: &Value, path: &str) -> Result<(), InputError> {
        let o = self.src.object(
            v,
            path,
            &["path", "overwrite", "mode", "user", "group"],
            &[],
        )?;
        let p = o.req_str("path")?;
        self.claim(&o, p)?;
        // Ignition: 0755, or the existing directory's mode unless
        // overwrite is set.
        let overwrite = o.bool("overwrite")? == Some(true);
        let entry = DirEntry {
            mode: self.mode(&o, overwrite.then_some(0o755))?,
            user: self.owner(&o, "user")?,
            group: self.owner(&o, "group")?,
        };
        self.out.config.directories.insert(p.to_owned(), entry);
        Ok(())
    }

    fn link(&mut self, v: &Value, path: &str) -> Result<(), InputError> {
        let o = self.src.object(
            v,
            path,
            &["path", "overwrite", "target", "hard", "user", "group"],
            &[],
        )?;
        let p = o.req_str("path")?;
        self.claim(&o, p)?;
        let target = o.req_str("target")?;
        let hard = o.bool("hard")?.unwrap_or(false);
        if hard {
            check_entry_path(target)
                .map_err(|e| o.err("target", format!("hard link target: {e}")))?;
            for k in ["user", "group"] {
                if o.get(k).is_some() {
                    return Err(o.err(
                        k,
                        "a hard link has no owner of its own (Ignition ignores it)",
                    ));
                }
            }
        } else {
            check_symlink_target(target).map_err(|e| o.err("target", e))?;
        }
        let entry = LinkEntry {
            target: target.to_owned(),
            hard,
            user: self.owner(&o, "user")?,
            group: self.owner(&o, "group")?,
        };
        self.out.config.links.insert(p.to_owned(), entry);
        Ok(())
    }

    fn systemd(&mut self, v: &Value, path: &str) -> Result<(), InputError> {
        let o = self.src.object(v, path, &["units"], &[])?;
        for (up, u) in o.array("units")? {
            self.unit(u, &up)?;
        }
        Ok(())
    }

    fn unit(&mut self, v: &Value, path: &str) -> Result<(), InputError> {
        let o = self.src.object(
            v,
            path,
            &["name", "contents", "enabled", "mask", "dropins"],
            &[],
        )?;
        let name = o.req_str("name")?;
        check_unit_name(name).map_err(|e| o.err("name", e))?;
        self.unique(&o, format!("unit {name}"), "name", name)?;
        // Ignition reads empty contents as none (util.NilOrEmpty): an
        // empty unit file would mask the unit.
        let mut unit = Unit {
            contents: o
                .str("contents")?
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
            enabled: o.bool("enabled")?,
            mask: o.bool("mask")?.unwrap_or(false),
            dropins: Default::default(),
        };
        if o.get("mask").is_some() {
            self.out.mask_set.insert(name.to_owned());
        }
        // Where each field is set, for errors about their combination.
        for field in ["contents", "enabled", "mask"] {
            if o.get(field).is_some() {
                self.out
                    .origin
                    .insert(format!("{field} {name}"), o.at(field));
            }
        }
        for (dp, d) in o.array("dropins")? {
            let d = self.src.object(d, &dp, &["name", "contents"], &[])?;
            let dname = d.req_str("name")?;
            check_dropin_name(dname).map_err(|e| d.err("name", e))?;
            self.unique(&d, format!("dropin {name}/{dname}"), "name", dname)?;
            // Ignition skips a drop-in without (or with empty) contents.
            if let Some(c) = d.str("contents")?.filter(|c| !c.is_empty()) {
                let dropin = Dropin {
                    contents: Some(c.to_owned()),
                };
                unit.dropins.insert(dname.to_owned(), dropin);
            }
        }
        self.out.config.units.insert(name.to_owned(), unit);
        Ok(())
    }

    /// Records `key`'s declaration at `o`, refusing a second one.
    fn unique(&mut self, o: &Obj, key: String, field: &str, shown: &str) -> Result<(), InputError> {
        match self.out.origin.entry(key) {
            Entry::Occupied(e) => Err(o.err(
                field,
                format!("{shown} is declared twice (also at {})", e.get()),
            )),
            Entry::Vacant(e) => {
                e.insert(o.path.clone());
                Ok(())
            }
        }
    }

    fn passwd(&mut self, v: &Value, path: &str) -> Result<(), InputError> {
        let o = self.src.object(v, path, &["users", "groups"], &[])?;
        for (up, u) in o.array("users")? {
            self.user(u, &up)?;
        }
        for (gp, g) in o.array("groups")? {
            self.group(g, &gp)?;
        }
        Ok(())
    }

    fn user(&mut self, v: &Value, path: &str) -> Result<(), InputError> {
        const WHY: &str =
            "not supported: users take only name, uid, groups, passwordHash and sshAuthorizedKeys";
        let mut unsupported: Vec<(&str, &str)> = [
            "gecos",
            "homeDir",
            "noCreateHome",
            "primaryGroup",
            "noUserGroup",
            "noLogInit",
            "shell",
            "system",
        ]
        .iter()
        .map(|k| (*k, WHY))
        .collect();
        unsupported.extend(since(self.ver, 2, &[("shouldExist", WHY)]));
        let o = self.src.object(
            v,
            path,
            &["name", "uid", "groups", "passwordHash", "sshAuthorizedKeys"],
            &unsupported,
        )?;
        let name = o.req_str("name")?;
        check_account_name(name).map_err(|e| o.err("name", e))?;
        self.unique(&o, format!("user {name}"), "name", name)?;
        let uid = match o.get("uid") {
            Some(u) => Some(check_id(u).map_err(|e| o.err("uid", e))?),
            None => None,
        };
        let mut groups = Vec::new();
        for (gp, g) in o.strings("groups")? {
            check_account_name(g).map_err(|e| self.src.err(&gp, e))?;
            if groups.iter().any(|x| x == g) {
                return Err(self.src.err(&gp, format!("group {g:?} listed twice")));
            }
            groups.push(g.to_owned());
        }
        // Membership has no order: one canonical form.
        groups.sort();
        // Ignition writes an empty hash as "*" (locked), never as an
        // empty shadow field (a passwordless login).
        let password_hash = o.str("passwordHash")?.map(|h| match h {
            "" => "*".to_owned(),
            h => h.to_owned(),
        });
        if let Some(h) = &password_hash {
            check_field("passwordHash", h, false).map_err(|e| o.err("passwordHash", e))?;
        }
        let mut keys = Vec::new();
        for (kp, k) in o.strings("sshAuthorizedKeys")? {
            check_field("an ssh key", k, true).map_err(|e| self.src.err(&kp, e))?;
            if k.trim().is_empty() {
                return Err(self.src.err(&kp, "empty ssh key"));
            }
            if keys.iter().any(|x| x == k) {
                return Err(self
                    .src
                    .err(&kp, "ssh key listed twice (Ignition requires unique keys)"));
            }
            keys.push(k.to_owned());
        }
        let user = User {
            uid,
            groups,
            password_hash,
            ssh_authorized_keys: keys,
        };
        self.out.config.users.insert(name.to_owned(), user);
        Ok(())
    }

    fn group(&mut self, v: &Value, path: &str) -> Result<(), InputError> {
        const WHY: &str = "not supported: groups take only name, gid and passwordHash";
        let mut unsupported = vec![("system", WHY)];
        unsupported.extend(since(self.ver, 2, &[("shouldExist", WHY)]));
        let o = self
            .src
            .object(v, path, &["name", "gid", "passwordHash"], &unsupported)?;
        let name = o.req_str("name")?;
        check_account_name(name).map_err(|e| o.err("name", e))?;
        self.unique(&o, format!("group {name}"), "name", name)?;
        let gid = match o.get("gid") {
            Some(g) => Some(check_id(g).map_err(|e| o.err("gid", e))?),
            None => None,
        };
        // Ignition ignores an empty group hash (no passwordless group).
        let password_hash = o
            .str("passwordHash")?
            .filter(|h| !h.is_empty())
            .map(str::to_owned);
        if let Some(h) = &password_hash {
            check_field("passwordHash", h, false).map_err(|e| o.err("passwordHash", e))?;
        }
        self.out
            .config
            .groups
            .insert(name.to_owned(), Group { gid, password_hash });
        Ok(())
    }
}
