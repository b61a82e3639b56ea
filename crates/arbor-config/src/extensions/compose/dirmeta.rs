//! Explaining a directory metadata (dirmeta) conflict: what differs, and
//! a chmod/chown hint where that fixes it.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use arbor_format::{Checksum, DirMeta};

use super::union::{Src, Union};
use crate::extensions::verify::load_dirmeta;

impl Union<'_> {
    pub(super) fn meta_conflict(
        &mut self,
        path: &str,
        a: (Checksum, Src),
        b: (Checksum, Src),
    ) -> anyhow::Error {
        let (na, nb) = self.pair(path, a.1, b.1);
        let (ma, mb) = match (load_dirmeta(self.repo, &a.0), load_dirmeta(self.repo, &b.0)) {
            (Ok(ma), Ok(mb)) => (ma, mb),
            (ra, rb) => {
                let show = |r: Result<DirMeta>, c: Checksum| match r {
                    Ok(_) => format!("dirmeta {c}"),
                    Err(e) => format!("dirmeta {c} ({e:#})"),
                };
                return anyhow!(
                    "{path}: directory metadata differs: {na} has {}, {nb} has {}",
                    show(ra, a.0),
                    show(rb, b.0)
                );
            }
        };
        let summary = |m: &DirMeta| {
            let names: Vec<String> = m.xattrs.iter().map(|x| escape(&x.name)).collect();
            format!(
                "mode {:04o} uid {} gid {} xattrs [{}]",
                m.mode & 0o7777,
                m.uid,
                m.gid,
                names.join(", ")
            )
        };
        let mut msg = format!(
            "{path}: directory metadata differs: {na} has {}, {nb} has {} (differs: {})",
            summary(&ma),
            summary(&mb),
            meta_differences(&ma, &mb).join("; ")
        );
        // Only a mode or owner difference gets the chmod/chown hint: an
        // xattr (say security.selinux) is not fixed by either.
        let owner_or_mode = ma.mode != mb.mode || (ma.uid, ma.gid) != (mb.uid, mb.gid);
        if (path == "/" || path == "/usr") && owner_or_mode {
            msg.push_str(&format!(
                "; hint: the extension's directories must have the base's mode and owner: \
                 chmod {:04o}, chown {}:{}",
                ma.mode & 0o7777,
                ma.uid,
                ma.gid
            ));
        }
        anyhow!("{msg}")
    }
}

/// Bytes shown escaped (`\xNN` for anything not printable ASCII),
/// truncated to 64 bytes.
fn escape(b: &[u8]) -> String {
    const MAX: usize = 64;
    let mut out: String = b
        .iter()
        .take(MAX)
        .flat_map(|c| std::ascii::escape_default(*c))
        .map(char::from)
        .collect();
    if b.len() > MAX {
        out.push_str(&format!("...({} bytes)", b.len()));
    }
    out
}

/// What differs between two dirmetas, one item per difference: mode,
/// owner, each xattr whose value differs or is absent on one side; when
/// none of those does (the same xattrs, listed in another order or with
/// a name repeated), that.
pub(crate) fn meta_differences(ma: &DirMeta, mb: &DirMeta) -> Vec<String> {
    let mut diffs = Vec::new();
    if ma.mode != mb.mode {
        diffs.push(format!(
            "mode {:04o} vs {:04o}",
            ma.mode & 0o7777,
            mb.mode & 0o7777
        ));
    }
    if (ma.uid, ma.gid) != (mb.uid, mb.gid) {
        diffs.push(format!(
            "owner {}:{} vs {}:{}",
            ma.uid, ma.gid, mb.uid, mb.gid
        ));
    }
    let xa: BTreeMap<&[u8], &[u8]> = ma
        .xattrs
        .iter()
        .map(|x| (&x.name[..], &x.value[..]))
        .collect();
    let xb: BTreeMap<&[u8], &[u8]> = mb
        .xattrs
        .iter()
        .map(|x| (&x.name[..], &x.value[..]))
        .collect();
    let keys: std::collections::BTreeSet<&[u8]> = xa.keys().chain(xb.keys()).copied().collect();
    let value = |v: Option<&&[u8]>| match v {
        Some(v) => format!("\"{}\"", escape(v)),
        None => "absent".to_string(),
    };
    for k in keys {
        let (va, vb) = (xa.get(k), xb.get(k));
        if va != vb {
            diffs.push(format!(
                "xattr {} {} vs {}",
                escape(k),
                value(va),
                value(vb)
            ));
        }
    }
    if diffs.is_empty() && ma.xattrs != mb.xattrs {
        fn sorted(m: &DirMeta) -> Vec<(&[u8], &[u8])> {
            let mut v: Vec<(&[u8], &[u8])> = m
                .xattrs
                .iter()
                .map(|x| (&x.name[..], &x.value[..]))
                .collect();
            v.sort();
            v
        }
        let repeated = |m: &DirMeta| {
            let mut names: Vec<&[u8]> = m.xattrs.iter().map(|x| &x.name[..]).collect();
            names.sort();
            let mut r: Vec<String> = names
                .windows(2)
                .filter(|w| w[0] == w[1])
                .map(|w| escape(w[0]))
                .collect();
            r.dedup();
            r
        };
        if sorted(ma) == sorted(mb) {
            diffs.push("xattr order".to_string());
        } else {
            let (ra, rb) = (repeated(ma), repeated(mb));
            diffs.push(format!(
                "repeated xattr names [{}] vs [{}]",
                ra.join(", "),
                rb.join(", ")
            ));
        }
    }
    if diffs.is_empty() {
        // Equal fields with different checksums: cannot happen for two
        // decoded dirmetas, but say so rather than print nothing.
        diffs.push("encoding only".to_string());
    }
    diffs
}
