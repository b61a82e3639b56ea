//! One deployment: a checkout of a commit in a stateroot, with its origin
//! and the boot entry that selects it.

use anyhow::{bail, Result};
use arbor_format::Checksum;
use arbor_repo::config::KeyFile;

use crate::bls::BootEntry;
use crate::kargs::Kargs;

/// A deployment, as listed in the boot entries (or created by a deploy).
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Stateroot ("osname").
    pub stateroot: String,
    /// Commit checked out.
    pub csum: Checksum,
    /// Distinguishes several deployments of one commit.
    pub deployserial: u32,
    /// Checksum of the kernel, initramfs and devicetree.
    pub bootcsum: String,
    /// Index among the deployments sharing `bootcsum`.
    pub bootserial: u32,
    /// The `.origin` key file, if present.
    pub origin: Option<KeyFile>,
    /// Kernel arguments as in the boot entry's `options` (an `ostree=`
    /// argument keeps its position and is replaced when entries are written).
    pub kargs: Kargs,
    /// The commit's `version` metadata.
    pub version: Option<String>,
    /// The base and extensions its commit records, when it is a composed
    /// commit ([`crate::layered`]).
    pub layers: Option<crate::layered::Layers>,
    /// Its commit could not be read when it was loaded (pruned, corrupt):
    /// `layers` is `None`, yet it may be a composed commit whose base and
    /// extensions are unknown. `status` shows it as a plain commit; ref
    /// collection deletes no ref while any deployment is so
    /// ([`crate::layered::collect_refs`]), and those refs keep what it
    /// may need through a prune.
    pub layers_unknown: bool,
    /// Staged: checked out, waiting for `finalize` (no boot entry yet).
    pub staged: bool,
    /// The boot entry it was loaded from (empty for a new deployment):
    /// keys arbor does not set itself and overlay initrds are written
    /// back unchanged when the entries are rewritten, as ostree does.
    pub bootconfig: BootEntry,
}

/// Parses a deployment directory name `CSUM.SERIAL`.
pub fn parse_dir_name(name: &str) -> Result<(Checksum, u32)> {
    let Some((c, s)) = name.rsplit_once('.') else {
        bail!("Invalid deployment directory name {name:?}: expected CHECKSUM.SERIAL");
    };
    let csum = Checksum::from_hex(c)
        .map_err(|e| anyhow::anyhow!("Invalid deployment directory name {name:?}: {e}"))?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        bail!("Invalid deployment directory name {name:?}: bad serial");
    }
    Ok((csum, s.parse()?))
}

/// Validates a stateroot name (used as a path component).
pub fn validate_stateroot(name: &str) -> Result<()> {
    arbor_format::validate_filename(name)
        .map_err(|e| anyhow::anyhow!("Invalid stateroot name {name:?}: {e}"))?;
    if name.starts_with('.') || name.contains(char::is_whitespace) {
        bail!("Invalid stateroot name {name:?}");
    }
    Ok(())
}

impl Deployment {
    /// `CSUM.SERIAL`.
    pub fn dir_name(&self) -> String {
        format!("{}.{}", self.csum, self.deployserial)
    }

    /// The deployment root, relative to the sysroot.
    pub fn relpath(&self) -> String {
        format!(
            "ostree/deploy/{}/deploy/{}",
            self.stateroot,
            self.dir_name()
        )
    }

    /// The `.origin` file, relative to the sysroot.
    pub fn origin_relpath(&self) -> String {
        format!("{}.origin", self.relpath())
    }

    /// `origin.refspec`.
    pub fn refspec(&self) -> Option<&str> {
        self.origin.as_ref()?.get("origin", "refspec")
    }

    /// Pinned deployments (`[libostree-transient] pinned=true`) are never
    /// dropped by a deploy.
    pub fn pinned(&self) -> bool {
        self.origin
            .as_ref()
            .and_then(|o| o.get_bool("libostree-transient", "pinned", false).ok())
            .unwrap_or(false)
    }

    /// The kernel arguments without `ostree=`.
    pub fn kargs_without_ostree(&self) -> Kargs {
        let mut k = self.kargs.clone();
        k.remove_key("ostree");
        k
    }

    /// The base commit: the one its composed commit records, else its
    /// commit.
    pub fn base_commit(&self) -> Checksum {
        self.layers.as_ref().map_or(self.csum, |l| l.base)
    }

    /// Its extensions, in order (none for a plain commit).
    pub fn extensions(&self) -> &[crate::layered::ExtensionRef] {
        self.layers
            .as_ref()
            .map_or(&[][..], |l| l.extensions.as_slice())
    }

    /// Same deployment (stateroot, commit and serial).
    pub fn same(&self, other: &Deployment) -> bool {
        self.stateroot == other.stateroot
            && self.csum == other.csum
            && self.deployserial == other.deployserial
    }

    /// Whether two deployments can share boot entries (ostree's
    /// `deployment_bootconfigs_equal`): same kernel, overlay initrds,
    /// kernel arguments, version and stateroot.
    pub fn bootconfig_equal(&self, other: &Deployment) -> bool {
        self.bootcsum == other.bootcsum
            && self.bootconfig.overlay_initrds == other.bootconfig.overlay_initrds
            && self.kargs_without_ostree() == other.kargs_without_ostree()
            && self.version == other.version
            && self.stateroot == other.stateroot
    }
}
