//! Rendering: pure functions from data to text, matching `ostree`'s
//! layouts where ostree has one, and serde structs for `--json`.

use std::io::{self, Write};

use arbor_format::metadata::Value;
use arbor_format::summary::{
    CollectionRefs, COLLECTION_ID_KEY, COLLECTION_MAP_KEY, COMMIT_TIMESTAMP_KEY,
    COMMIT_VERSION_KEY, LAST_MODIFIED_KEY, MODE_KEY, TOMBSTONE_COMMITS_KEY,
};
use arbor_format::{Checksum, Commit, Summary, SummaryRef};
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

/// GLib's `g_format_size` (SI units), as `ostree summary --view` shows sizes.
pub fn format_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if n == 1 {
        return "1 byte".into();
    }
    if n < 1000 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// ostree's `uint64_secs_to_iso8601`.
fn iso8601(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|t| chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0))
        .map(|dt| dt.format("%Y-%m-%dT%H:%M:%S+00").to_string())
        .unwrap_or_else(|| "invalid".into())
}

/// A value as GLib's `g_variant_print (value, FALSE)` shows it for the
/// types summaries carry (no type annotations); others as [`Value::to_display`].
fn plain(v: &Value) -> String {
    let le = |d: &[u8]| -> Option<i128> {
        Some(match d.len() {
            1 => i128::from(d[0]),
            2 => i128::from(i16::from_le_bytes(d.try_into().ok()?)),
            4 => i128::from(i32::from_le_bytes(d.try_into().ok()?)),
            8 => i128::from(i64::from_le_bytes(d.try_into().ok()?)),
            _ => return None,
        })
    };
    match v {
        Value::U32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::StrArray(a) if a.is_empty() => "[]".into(),
        Value::Other { type_str, data } => match (type_str.as_str(), le(data)) {
            ("y" | "n" | "i" | "x", Some(n)) => n.to_string(),
            ("q", Some(n)) => (n as u16).to_string(),
            _ => v.to_display(),
        },
        _ => v.to_display(),
    }
}

/// One ref of a summary as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct SummaryRefJson {
    /// Collection ID, for collection repositories and the collection map.
    pub collection_id: Option<String>,
    /// Ref name.
    pub name: String,
    /// Size of the commit object.
    pub commit_size: u64,
    /// Commit checksum.
    pub checksum: String,
    /// `ostree.commit.timestamp`.
    pub timestamp: Option<u64>,
    /// `ostree.commit.version`.
    pub version: Option<String>,
}

/// A summary as `summary --view --json` prints it.
#[derive(Debug, Serialize)]
pub struct SummaryJson {
    /// Refs: the main list, then the collection map.
    pub refs: Vec<SummaryRefJson>,
    /// Additional metadata, values rendered as GVariant text.
    pub metadata: Vec<(String, String)>,
    /// Ed25519 signatures in `summary.sig` (0 if there is none).
    pub signatures: usize,
}

/// The refs of a summary with their collection IDs: the main list (under
/// `ostree.summary.collection-id`, if set), then the collection map.
pub type SummaryRefs<'a> = Vec<(Option<&'a str>, &'a SummaryRef)>;

/// Collects [`SummaryRefs`] from a summary and its decoded collection map.
pub fn summary_refs<'a>(s: &'a Summary, map: &'a [CollectionRefs]) -> SummaryRefs<'a> {
    let main = s.metadata.get_str(COLLECTION_ID_KEY);
    let mut out: SummaryRefs<'a> = s.refs.iter().map(|r| (main, r)).collect();
    for (id, refs) in map {
        out.extend(refs.iter().map(|r| (Some(id.as_str()), r)));
    }
    out
}

impl SummaryJson {
    /// Builds the JSON view.
    pub fn new(s: &Summary, map: &[CollectionRefs], signatures: usize) -> SummaryJson {
        SummaryJson {
            refs: summary_refs(s, map)
                .into_iter()
                .map(|(coll, r)| SummaryRefJson {
                    collection_id: coll.map(str::to_string),
                    name: r.name.clone(),
                    commit_size: r.commit_size,
                    checksum: r.checksum.to_hex(),
                    timestamp: r
                        .metadata
                        .get(COMMIT_TIMESTAMP_KEY)
                        .and_then(|v| v.as_u64_be()),
                    version: r.metadata.get_str(COMMIT_VERSION_KEY).map(str::to_string),
                })
                .collect(),
            metadata: s
                .metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_display()))
                .collect(),
            signatures,
        }
    }
}

/// A summary in `ostree summary --view` layout.
pub fn summary(w: &mut impl Write, s: &Summary, map: &[CollectionRefs]) -> io::Result<()> {
    for (coll, r) in summary_refs(s, map) {
        match coll {
            Some(c) => writeln!(w, "* ({c}, {})", r.name)?,
            None => writeln!(w, "* {}", r.name)?,
        }
        writeln!(w, "    Latest Commit ({}):", format_size(r.commit_size))?;
        writeln!(w, "      {}", r.checksum)?;
        for (k, v) in r.metadata.iter() {
            match (k, v) {
                (COMMIT_TIMESTAMP_KEY, Value::U64(_)) => {
                    let t = v.as_u64_be().unwrap_or_default();
                    writeln!(w, "    Timestamp ({k}): {}", iso8601(t))?
                }
                (COMMIT_VERSION_KEY, Value::Str(ver)) => writeln!(w, "    Version ({k}): {ver}")?,
                _ => writeln!(w, "    {k}: {}", plain(v))?,
            }
        }
        writeln!(w)?;
    }
    for (k, v) in s.metadata.iter() {
        let pretty = match (k, v) {
            (LAST_MODIFIED_KEY, Value::U64(_)) => {
                Some(("Last-Modified", iso8601(v.as_u64_be().unwrap_or_default())))
            }
            ("ostree.summary.expires", Value::U64(_)) => {
                Some(("Expires", iso8601(v.as_u64_be().unwrap_or_default())))
            }
            (COLLECTION_ID_KEY, Value::Str(c)) => Some(("Collection ID", c.clone())),
            (COLLECTION_MAP_KEY, _) => Some(("Collection Map", "(printed above)".into())),
            (MODE_KEY, Value::Str(m)) => Some((
                "Repository Mode",
                match m.parse::<arbor_format::RepoMode>() {
                    Ok(_) => m.clone(),
                    Err(_) => format!("Invalid (‘{m}’)"),
                },
            )),
            (TOMBSTONE_COMMITS_KEY, Value::Bool(b)) => Some((
                "Has Tombstone Commits",
                if *b { "Yes" } else { "No" }.into(),
            )),
            ("ostree.static-deltas", _) => Some(("Static Deltas", plain(v))),
            _ => None,
        };
        match pretty {
            Some((p, val)) => writeln!(w, "{p} ({k}): {val}")?,
            None => writeln!(w, "{k}: {}", plain(v))?,
        }
    }
    Ok(())
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
    fn summary_layout_matches_ostree() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/vectors/objects/summary-2022.7.sample"
        ))
        .unwrap();
        let s = Summary::decode(&bytes).unwrap();
        let mut out = Vec::new();
        summary(&mut out, &s, &[]).unwrap();
        // `ostree summary --view` of the same file (ostree 2022.7).
        let expected = "* example/x86_64/stable\n    Latest Commit (182 bytes):\n      \
02d3a739e72bc5dfb45a5112ed1d29f4faa4666a6308fa75d3fd26bdd1f20e55\n    \
Version (ostree.commit.version): 1.0\n    \
Timestamp (ostree.commit.timestamp): 2020-01-01T00:00:00+00\n\n\
Repository Mode (ostree.summary.mode): archive-z2\n\
Last-Modified (ostree.summary.last-modified): 2026-11-22T01:20:47+00\n\
Has Tombstone Commits (ostree.summary.tombstone-commits): No\n\
ostree.summary.indexed-deltas: true\n";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert_eq!(format_size(1), "1 byte");
        assert_eq!(format_size(999), "999 bytes");
        assert_eq!(format_size(1234), "1.2 kB");
        assert_eq!(format_size(5_000_000), "5.0 MB");
        let j = SummaryJson::new(&s, &[], 0);
        assert_eq!(j.refs[0].timestamp, Some(1577836800));
        assert_eq!(j.refs[0].version.as_deref(), Some("1.0"));
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

/// Bytes in binary units, one decimal: `512 B`, `1.5 KiB`, `20.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod bytes_tests {
    #[test]
    fn human_bytes() {
        assert_eq!(super::human_bytes(0), "0 B");
        assert_eq!(super::human_bytes(1023), "1023 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(20 * 1024 * 1024), "20.0 MiB");
    }
}

/// What `pull` prints: the objects and bytes fetched (or, for a dry run,
/// that would be) in `elapsed`, then each ref moved.
pub fn pull_stats(
    w: &mut impl Write,
    s: &arbor_pull::PullStats,
    elapsed: std::time::Duration,
) -> io::Result<()> {
    if s.dry_run {
        writeln!(
            w,
            "Would fetch {} objects: {} metadata ({} bytes, fetched to find the rest) and {} files ({} bytes)",
            s.metadata_fetched + s.content_fetched,
            s.metadata_fetched,
            s.bytes,
            s.content_fetched,
            s.content_bytes
        )?;
    } else {
        writeln!(
            w,
            "{} metadata, {} content objects fetched; {} in {} requests, {:.1}s",
            s.metadata_fetched,
            s.content_fetched,
            human_bytes(s.bytes),
            s.requests,
            elapsed.as_secs_f64()
        )?;
    }
    for (name, c) in &s.refs {
        let verb = if s.dry_run { "would be" } else { "is now" };
        writeln!(w, "{name} {verb} {c}")?;
    }
    Ok(())
}

/// What `pull-local` prints.
pub fn pull_local_stats(w: &mut impl Write, s: &arbor_pull::PullStats) -> io::Result<()> {
    writeln!(
        w,
        "{} metadata, {} content objects imported",
        s.metadata_fetched, s.content_fetched
    )
}

#[cfg(test)]
mod pull_tests {
    use super::*;

    fn stats(dry_run: bool) -> arbor_pull::PullStats {
        arbor_pull::PullStats {
            refs: vec![("origin:os/main".into(), "ab".repeat(32))],
            commits: 1,
            metadata_fetched: 3,
            content_fetched: 2,
            content_bytes: 100,
            requests: 6,
            bytes: 2048,
            dry_run,
            protocols: vec!["HTTP/1.1".into()],
        }
    }

    fn text(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn pull_stats_text() {
        let c = "ab".repeat(32);
        let t = std::time::Duration::from_millis(1250);
        assert_eq!(
            text(|w| pull_stats(w, &stats(false), t)),
            format!(
                "3 metadata, 2 content objects fetched; 2.0 KiB in 6 requests, 1.2s\n\
                 origin:os/main is now {c}\n"
            )
        );
        assert_eq!(
            text(|w| pull_stats(w, &stats(true), t)),
            format!(
                "Would fetch 5 objects: 3 metadata (2048 bytes, fetched to find the rest) \
                 and 2 files (100 bytes)\norigin:os/main would be {c}\n"
            )
        );
        assert_eq!(
            text(|w| pull_local_stats(w, &stats(false))),
            "3 metadata, 2 content objects imported\n"
        );
    }
}
