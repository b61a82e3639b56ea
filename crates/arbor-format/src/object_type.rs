//! Object types and repository modes.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The kind of an object in `objects/` (OSTree `OstreeObjectType`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum ObjectType {
    /// Content object (regular file or symlink): `.file` / `.filez`.
    File,
    /// Directory listing: `.dirtree`.
    DirTree,
    /// Directory metadata: `.dirmeta`.
    DirMeta,
    /// Commit: `.commit`.
    Commit,
    /// Tombstone of a deleted commit: `.commit-tombstone`.
    TombstoneCommit,
    /// Detached commit metadata: `.commitmeta`.
    CommitMeta,
    /// Payload link (bare modes, optional): `.payload-link`.
    PayloadLink,
    /// Split xattrs (`bare-split-xattrs`): `.file-xattrs`.
    FileXattrs,
    /// Link to split xattrs: `.file-xattrs-link`.
    FileXattrsLink,
}

impl ObjectType {
    /// All object types, in OSTree enum order.
    pub const ALL: [ObjectType; 9] = [
        ObjectType::File,
        ObjectType::DirTree,
        ObjectType::DirMeta,
        ObjectType::Commit,
        ObjectType::TombstoneCommit,
        ObjectType::CommitMeta,
        ObjectType::PayloadLink,
        ObjectType::FileXattrs,
        ObjectType::FileXattrsLink,
    ];

    /// File-name extension (without the dot) in a repo of mode `mode`.
    pub fn extension(self, mode: RepoMode) -> &'static str {
        match self {
            ObjectType::File if mode == RepoMode::Archive => "filez",
            ObjectType::File => "file",
            ObjectType::DirTree => "dirtree",
            ObjectType::DirMeta => "dirmeta",
            ObjectType::Commit => "commit",
            ObjectType::TombstoneCommit => "commit-tombstone",
            ObjectType::CommitMeta => "commitmeta",
            ObjectType::PayloadLink => "payload-link",
            ObjectType::FileXattrs => "file-xattrs",
            ObjectType::FileXattrsLink => "file-xattrs-link",
        }
    }

    /// Parses an extension; both `file` and `filez` give [`ObjectType::File`].
    pub fn from_extension(ext: &str) -> Option<ObjectType> {
        Some(match ext {
            "file" | "filez" => ObjectType::File,
            "dirtree" => ObjectType::DirTree,
            "dirmeta" => ObjectType::DirMeta,
            "commit" => ObjectType::Commit,
            "commit-tombstone" => ObjectType::TombstoneCommit,
            "commitmeta" => ObjectType::CommitMeta,
            "payload-link" => ObjectType::PayloadLink,
            "file-xattrs" => ObjectType::FileXattrs,
            "file-xattrs-link" => ObjectType::FileXattrsLink,
            _ => return None,
        })
    }

    /// True for the GVariant "metadata" object types (dirtree, dirmeta,
    /// commit, tombstone, commitmeta).
    pub fn is_metadata(self) -> bool {
        matches!(
            self,
            ObjectType::DirTree
                | ObjectType::DirMeta
                | ObjectType::Commit
                | ObjectType::TombstoneCommit
                | ObjectType::CommitMeta
        )
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names as printed by libostree's ostree_object_type_to_string().
        f.write_str(match self {
            ObjectType::File => "file",
            ObjectType::DirTree => "dirtree",
            ObjectType::DirMeta => "dirmeta",
            ObjectType::Commit => "commit",
            ObjectType::TombstoneCommit => "tombstone-commit",
            ObjectType::CommitMeta => "commitmeta",
            ObjectType::PayloadLink => "payload-link",
            ObjectType::FileXattrs => "file-xattrs",
            ObjectType::FileXattrsLink => "file-xattrs-link",
        })
    }
}

/// Repository storage mode (`[core] mode` in the repo config).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RepoMode {
    /// `archive` / `archive-z2`: compressed `.filez` content objects.
    Archive,
    /// `bare`: files stored as-is with real ownership and xattrs.
    Bare,
    /// `bare-user`: metadata in the `user.ostreemeta` xattr.
    BareUser,
    /// `bare-user-only`: canonical permissions, no xattrs.
    BareUserOnly,
    /// `bare-split-xattrs`: xattrs in separate objects (experimental).
    BareSplitXattrs,
}

impl RepoMode {
    /// The value written to `[core] mode` (`archive-z2` for archive repos).
    pub fn config_name(self) -> &'static str {
        match self {
            RepoMode::Archive => "archive-z2",
            other => other.name(),
        }
    }

    /// True for every mode except archive.
    pub fn is_bare(self) -> bool {
        self != RepoMode::Archive
    }

    fn name(self) -> &'static str {
        match self {
            RepoMode::Archive => "archive",
            RepoMode::Bare => "bare",
            RepoMode::BareUser => "bare-user",
            RepoMode::BareUserOnly => "bare-user-only",
            RepoMode::BareSplitXattrs => "bare-split-xattrs",
        }
    }
}

impl fmt::Display for RepoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RepoMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "archive" | "archive-z2" => RepoMode::Archive,
            "bare" => RepoMode::Bare,
            "bare-user" => RepoMode::BareUser,
            "bare-user-only" => RepoMode::BareUserOnly,
            "bare-split-xattrs" => RepoMode::BareSplitXattrs,
            _ => return Err(Error::invalid("repo mode", format!("unknown mode {s:?}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_round_trip() {
        for t in ObjectType::ALL {
            for mode in [RepoMode::Archive, RepoMode::Bare] {
                assert_eq!(ObjectType::from_extension(t.extension(mode)), Some(t));
            }
        }
        assert_eq!(ObjectType::File.extension(RepoMode::Archive), "filez");
        assert_eq!(ObjectType::File.extension(RepoMode::BareUserOnly), "file");
        assert_eq!(ObjectType::from_extension("txt"), None);
        assert!(ObjectType::Commit.is_metadata());
        assert!(!ObjectType::File.is_metadata());
        assert_eq!(ObjectType::TombstoneCommit.to_string(), "tombstone-commit");
    }

    #[test]
    fn modes() {
        let table = [
            ("archive", RepoMode::Archive, "archive-z2"),
            ("archive-z2", RepoMode::Archive, "archive-z2"),
            ("bare", RepoMode::Bare, "bare"),
            ("bare-user", RepoMode::BareUser, "bare-user"),
            ("bare-user-only", RepoMode::BareUserOnly, "bare-user-only"),
            (
                "bare-split-xattrs",
                RepoMode::BareSplitXattrs,
                "bare-split-xattrs",
            ),
        ];
        for (s, m, cfg) in table {
            assert_eq!(s.parse::<RepoMode>().unwrap(), m);
            assert_eq!(m.config_name(), cfg);
            assert_eq!(m.to_string().parse::<RepoMode>().unwrap(), m);
        }
        assert!(RepoMode::Bare.is_bare());
        assert!(!RepoMode::Archive.is_bare());
        assert!(matches!(
            "Bare".parse::<RepoMode>(),
            Err(Error::Invalid {
                what: "repo mode",
                ..
            })
        ));
    }
}
