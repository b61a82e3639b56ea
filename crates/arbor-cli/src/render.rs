//! Rendering: pure functions from data to text, matching `ostree`'s
//! layouts where ostree has one, and serde structs for `--json`.

use std::io::{self, Write};

use arbor_format::{Checksum, Commit};
use arbor_repo::diff::DiffEntry;
use arbor_repo::fsck::FsckReport;
use serde::Serialize;

use crate::time::format_date;

/// A commit as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct CommitJson {
    /// Commit checksum.
    pub checksum: String,
    /// Parent checksum.
    pub parent: Option<String>,
    /// Subject.
    pub subject: String,
    /// Body.
    pub body: String,
    /// Seconds since the epoch.
    pub timestamp: u64,
    /// `version` metadata.
    pub version: Option<String>,
    /// SHA-256 of root dirtree ‖ root dirmeta.
    pub content_checksum: String,
    /// Root dirtree.
    pub root_tree: String,
    /// Root dirmeta.
    pub root_meta: String,
    /// Metadata, values rendered as GVariant text.
    pub metadata: Vec<(String, String)>,
}

impl CommitJson {
    /// Builds the JSON view of a commit.
    pub fn new(c: &Checksum, commit: &Commit) -> CommitJson {
        CommitJson {
            checksum: c.to_hex(),
            parent: commit.parent.map(|p| p.to_hex()),
            subject: commit.subject.clone(),
            body: commit.body.clone(),
            timestamp: commit.timestamp,
            version: commit.version().map(str::to_string),
            content_checksum: commit.content_checksum().to_hex(),
            root_tree: commit.root_tree.to_hex(),
            root_meta: commit.root_meta.to_hex(),
            metadata: commit
                .metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_display()))
                .collect(),
        }
    }
}

/// One commit in `ostree log` / `ostree show` layout.
pub fn commit(w: &mut impl Write, c: &Checksum, commit: &Commit) -> io::Result<()> {
    writeln!(w, "commit {c}")?;
    if let Some(p) = &commit.parent {
        writeln!(w, "Parent:  {p}")?;
    }
    writeln!(w, "ContentChecksum:  {}", commit.content_checksum())?;
    writeln!(w, "Date:  {}", format_date(commit.timestamp))?;
    if let Some(v) = commit.version() {
        writeln!(w, "Version: {v}")?;
    }
    writeln!(w)?;
    if commit.subject.is_empty() {
        writeln!(w, "    (no subject)")?;
    } else {
        writeln!(w, "    {}", commit.subject)?;
    }
    writeln!(w)?;
    if !commit.body.is_empty() {
        for line in commit.body.lines() {
            writeln!(w, "    {line}")?;
        }
        writeln!(w)?;
    }
    Ok(())
}

/// One `ls` entry.
#[derive(Debug, Clone, Serialize)]
pub struct LsEntry {
    /// `d`, `-` or `l`.
    pub kind: char,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Content size (0 for dirs and symlinks).
    pub size: u64,
    /// File object or dirtree checksum.
    pub checksum: String,
    /// Dirmeta checksum (directories).
    pub meta_checksum: Option<String>,
    /// Path in the commit.
    pub path: String,
    /// Symlink target.
    pub target: Option<String>,
}

/// An `ls` line in `ostree ls` layout (`-C` adds checksums).
pub fn ls_line(w: &mut impl Write, e: &LsEntry, checksums: bool) -> io::Result<()> {
    write!(
        w,
        "{}{:05o} {} {} {:6} ",
        e.kind,
        e.mode & 0o7777,
        e.uid,
        e.gid,
        e.size
    )?;
    if checksums {
        write!(w, "{} ", e.checksum)?;
        if let Some(m) = &e.meta_checksum {
            write!(w, "{m} ")?;
        }
    }
    write!(w, "{}", e.path)?;
    if let Some(t) = &e.target {
        write!(w, " -> {t}")?;
    }
    writeln!(w)
}

/// `diff` output as `ostree diff` prints it: modified, then deleted, then
/// added, each `X    /path`.
pub fn diff(w: &mut impl Write, entries: &[DiffEntry]) -> io::Result<()> {
    for kind in ['M', 'D', 'A'] {
        for e in entries.iter().filter(|e| e.kind == kind) {
            writeln!(w, "{kind}    {}", e.path)?;
        }
    }
    Ok(())
}

/// `fsck` summary.
pub fn fsck(w: &mut impl Write, r: &FsckReport) -> io::Result<()> {
    for e in &r.errors {
        writeln!(w, "error: {}: {}", e.object, e.message)?;
    }
    if r.errors.is_empty() {
        writeln!(
            w,
            "fsck of {} objects in {} commits ({} partial) completed successfully - no errors found.",
            r.objects, r.commits, r.partial_commits
        )
    } else {
        writeln!(
            w,
            "fsck found {} errors in {} objects.",
            r.errors.len(),
            r.objects
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_format::metadata::Value;
    use arbor_format::Metadata;

    #[test]
    fn commit_layout_matches_ostree_log() {
        let mut metadata = Metadata::new();
        metadata.push("version", Value::Str("1.0".into()));
        metadata.push(
            "ostree.ref-binding",
            Value::StrArray(vec!["example/x86_64/stable".into()]),
        );
        let cm = Commit {
            metadata,
            parent: None,
            related: vec![],
            subject: "Test vector commit".into(),
            body: "Body line one.".into(),
            timestamp: 1577836800,
            root_tree: "0ff0979438cd043026438fc4791ba9097036aa88610909812fb6cd4e407146de"
                .parse()
                .unwrap(),
            root_meta: "446a0ef11b7cc167f3b603e585c7eeeeb675faa412d5ec73f62988eb0b6c5488"
                .parse()
                .unwrap(),
        };
        let c = cm.checksum();
        let mut out = Vec::new();
        commit(&mut out, &c, &cm).unwrap();
        // Captured from `ostree log` on the vector repository.
        let expected = "commit 02d3a739e72bc5dfb45a5112ed1d29f4faa4666a6308fa75d3fd26bdd1f20e55\n\
ContentChecksum:  f86ec72f56c3024aea3e0a1bcd296dca87e5b1f0dc71843a2adc8c297b46073c\n\
Date:  2020-01-01 00:00:00 +0000\nVersion: 1.0\n\n    Test vector commit\n\n    Body line one.\n\n";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn ls_and_diff_layout() {
        let e = LsEntry {
            kind: 'l',
            mode: 0o777,
            uid: 0,
            gid: 0,
            size: 0,
            checksum: "48390b650b4bbe3c220dc80f7bdb37bd606251e43734107fd70699c8adcbb213".into(),
            meta_checksum: None,
            path: "/link-to-readme".into(),
            target: Some("README.txt".into()),
        };
        let mut out = Vec::new();
        ls_line(&mut out, &e, true).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(),
            "l00777 0 0      0 48390b650b4bbe3c220dc80f7bdb37bd606251e43734107fd70699c8adcbb213 /link-to-readme -> README.txt\n");
        let d = vec![
            DiffEntry {
                kind: 'A',
                path: "/newf".into(),
            },
            DiffEntry {
                kind: 'M',
                path: "/README.txt".into(),
            },
            DiffEntry {
                kind: 'D',
                path: "/empty".into(),
            },
        ];
        let mut out = Vec::new();
        diff(&mut out, &d).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "M    /README.txt\nD    /empty\nA    /newf\n"
        );
    }
}
