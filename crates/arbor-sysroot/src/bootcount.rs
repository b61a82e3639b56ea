//! Boot counting and automatic rollback through GRUB's environment block,
//! the scheme of Fedora's GRUB and greenboot (variables `boot_counter` and
//! `boot_success` in `/boot/grub/grubenv`).
//!
//! - When a staged deployment is finalized (it becomes the default at
//!   shutdown), [`arm`] sets `boot_counter=N` (default [`DEFAULT_ATTEMPTS`]),
//!   `boot_success=0` and [`PROBATION_VAR`], the `loader.N` directory the
//!   finalization is about to switch to: the new deployment is on
//!   probation, and only the menu of that directory counts (a later boot
//!   switch, such as the rollback, ends the probation by itself: GRUB's
//!   fall-back to "entry 1" must never apply to a list it was not meant
//!   for).
//! - Each boot, the menu that [`crate::grub`] generates loads the block and,
//!   while `boot_success` is `0`, counts down: `3` becomes `2`, ... `1`
//!   becomes `0`, so the new deployment boots at most N times. At `0` the
//!   menu boots entry 1 (the previous deployment) instead and stores `-1`.
//! - After a boot, the health checks' unit calls [`mark_good`] when every
//!   required check passed (`boot_success=1`, no counter), or reboots
//!   while the counter is above `-1`.
//! - Booted into the previous deployment with `boot_counter=-1`, the unit
//!   makes that deployment the default again (a rollback) and calls
//!   [`clear`].
//!
//! Why GRUB's environment block rather than the root setup in the initramfs
//! counting boots: the counter is decremented before any of the new
//! deployment runs, so a kernel that panics, an initramfs that cannot find
//! the root, or a hang before userspace all count as failed boots; only the
//! boot loader sees every attempt. BLS boot counting (`+3-0` entry names)
//! needs a loader that reads BLS entries, which Debian's GRUB does not.
//!
//! Armed only where the block exists (images that `arbor image build`
//! makes have one): a machine without `/boot/grub/grubenv` boots as before.
//! GRUB writes the block in place (it cannot allocate), so arbor keeps it
//! exactly [`ENV_SIZE`] bytes, replaced atomically.

use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use fn_error_context::context;

use crate::fsutil;

/// The block, relative to the sysroot.
pub const GRUBENV: &str = "boot/grub/grubenv";
/// The block's size: GRUB's `DEFAULT_ENVBLK_SIZE`.
pub const ENV_SIZE: usize = 1024;
/// The first line of a block (GRUB's `GRUB_ENVBLK_SIGNATURE`).
const SIGNATURE: &str = "# GRUB Environment Block\n";
/// Boots a new deployment gets when the block names no other number.
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// The block's variable that overrides [`DEFAULT_ATTEMPTS`] (1 to 9).
pub const ATTEMPTS_VAR: &str = "arbor_boot_attempts";
/// The block's variable naming the `loader.N` whose menu counts.
pub const PROBATION_VAR: &str = "arbor_probation";
/// The largest count the generated menu can decrement (it has no
/// arithmetic: one `elif` per value).
pub const MAX_ATTEMPTS: u32 = 9;

/// A GRUB environment block: its variables, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvBlock {
    vars: Vec<(String, String)>,
}

impl EnvBlock {
    /// Parses a block as GRUB does (`grub-core/lib/envblk.c`): the
    /// signature, then `name=value` lines (`\` escapes the next byte),
    /// then `#` padding; comment lines are skipped.
    pub fn parse(data: &[u8]) -> Result<EnvBlock> {
        let Some(rest) = data.strip_prefix(SIGNATURE.as_bytes()) else {
            bail!("Not a GRUB environment block (no signature)");
        };
        let mut vars = Vec::new();
        let mut i = 0;
        while i < rest.len() {
            if rest[i] == b'#' {
                // A comment or the padding: skip to the end of the line.
                while i < rest.len() && rest[i] != b'\n' {
                    i += 1;
                }
                i += 1;
                continue;
            }
            let mut line = Vec::new();
            while i < rest.len() && rest[i] != b'\n' {
                if rest[i] == b'\\' && i + 1 < rest.len() {
                    i += 1;
                }
                line.push(rest[i]);
                i += 1;
            }
            i += 1;
            if line.is_empty() {
                continue;
            }
            let line = String::from_utf8(line).context("GRUB environment block: not UTF-8")?;
            let Some((k, v)) = line.split_once('=') else {
                bail!("GRUB environment block: a line without '=': {line:?}");
            };
            vars.push((k.to_string(), v.to_string()));
        }
        Ok(EnvBlock { vars })
    }

    /// The block as GRUB stores it: exactly [`ENV_SIZE`] bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = SIGNATURE.as_bytes().to_vec();
        for (k, v) in &self.vars {
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            for b in v.bytes() {
                if b == b'\\' || b == b'\n' {
                    out.push(b'\\');
                }
                out.push(b);
            }
            out.push(b'\n');
        }
        if out.len() > ENV_SIZE {
            bail!("GRUB environment block: its variables exceed {ENV_SIZE} bytes");
        }
        out.resize(ENV_SIZE, b'#');
        Ok(out)
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` (in place if present, else appended).
    pub fn set(&mut self, name: &str, value: &str) {
        match self.vars.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value.to_string(),
            None => self.vars.push((name.to_string(), value.to_string())),
        }
    }

    /// Removes `name`.
    pub fn unset(&mut self, name: &str) {
        self.vars.retain(|(k, _)| k != name);
    }
}

/// The boot-counting state of a sysroot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootCount {
    /// No `/boot/grub/grubenv`: boots are not counted.
    Off,
    /// Nothing on probation (the last new deployment was marked good).
    Idle,
    /// The default deployment is on probation: `left` boots remain after
    /// the current one before the boot loader falls back.
    Counting {
        /// `boot_counter`.
        left: u32,
    },
    /// The boot loader fell back to the previous deployment
    /// (`boot_counter=-1`): the rollback is not yet made the default.
    FellBack,
}

fn read_block(sysroot: impl AsFd) -> Result<Option<EnvBlock>> {
    match fsutil::read_optional(sysroot.as_fd(), GRUBENV)? {
        Some(b) => Ok(Some(
            EnvBlock::parse(&b).with_context(|| format!("Reading {GRUBENV}"))?,
        )),
        None => Ok(None),
    }
}

fn write_block(sysroot: impl AsFd, env: &EnvBlock) -> Result<()> {
    let data = env.encode()?;
    let dir = fsutil::open_dir(sysroot.as_fd(), "boot/grub")?;
    arbor_fs::atomic_write(&dir, "grubenv", &data, 0o644)?;
    arbor_fs::fsync_dir(&dir)
}

/// The state of the sysroot's block, for the active `boot/loader`: a
/// probation recorded for the other `loader.N` is over (a boot switch
/// came after it) and counts as [`BootCount::Idle`].
pub fn state(sysroot: impl AsFd) -> Result<BootCount> {
    let Some(env) = read_block(sysroot.as_fd())? else {
        return Ok(BootCount::Off);
    };
    if env.get("boot_success") != Some("0") {
        return Ok(BootCount::Idle);
    }
    let active = rustix::fs::readlinkat(sysroot.as_fd(), "boot/loader", Vec::new())
        .ok()
        .map(|t| t.to_string_lossy().into_owned());
    if env.get(PROBATION_VAR) != active.as_deref() {
        return Ok(BootCount::Idle);
    }
    Ok(match env.get("boot_counter") {
        None | Some("") => BootCount::Idle,
        Some("-1") => BootCount::FellBack,
        Some(n) => BootCount::Counting {
            left: n.parse().unwrap_or(0),
        },
    })
}

/// Puts the default deployment of `loader` (`loader.N`, the directory
/// the coming boot switch writes) on probation, if the sysroot has a
/// block: `boot_counter` = its [`ATTEMPTS_VAR`] (else
/// [`DEFAULT_ATTEMPTS`]), `boot_success=0`, [`PROBATION_VAR`] = `loader`.
/// Returns the count, or `None` when boots are not counted. Durable when
/// it returns.
#[context("Arming the boot counter")]
pub fn arm(sysroot: impl AsFd, loader: &str) -> Result<Option<u32>> {
    let Some(mut env) = read_block(sysroot.as_fd())? else {
        return Ok(None);
    };
    let n = match env.get(ATTEMPTS_VAR) {
        None => DEFAULT_ATTEMPTS,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_ATTEMPTS).contains(&n) => n,
            _ => bail!("{GRUBENV}: {ATTEMPTS_VAR}={v:?} is not a number from 1 to {MAX_ATTEMPTS}"),
        },
    };
    env.set("boot_counter", &n.to_string());
    env.set("boot_success", "0");
    env.set(PROBATION_VAR, loader);
    write_block(sysroot, &env)?;
    Ok(Some(n))
}

/// Marks the current boot good: `boot_success=1`, no counter (what
/// greenboot's `grub2-set-success` does). No-op without a block.
#[context("Marking the boot good")]
pub fn mark_good(sysroot: impl AsFd) -> Result<()> {
    let Some(mut env) = read_block(sysroot.as_fd())? else {
        return Ok(());
    };
    if env.get("boot_success") == Some("1")
        && env.get("boot_counter").is_none()
        && env.get(PROBATION_VAR).is_none()
    {
        return Ok(());
    }
    env.set("boot_success", "1");
    env.unset("boot_counter");
    env.unset(PROBATION_VAR);
    write_block(sysroot, &env)
}

/// Ends a fallback once the rollback is the default: no counter,
/// `boot_success=1` (the health checks then judge the boot as any other).
pub fn clear(sysroot: impl AsFd) -> Result<()> {
    mark_good(sysroot)
}

/// The GRUB script that counts boots, for the menu of `loader_dir`
/// (after its `set default=0`): `${arbor_boot}/grub/grubenv` is
/// `/boot/grub/grubenv`. It counts only while the probation is this
/// directory's.
pub fn grub_snippet(loader_dir: &str) -> String {
    let file = "${arbor_boot}/grub/grubenv";
    let mut s = format!(
        "if [ -f {file} ]; then\n  \
         load_env --file {file} boot_counter boot_success {PROBATION_VAR}\n  \
         if [ \"${{boot_success}}\" = \"0\" -a \"${{{PROBATION_VAR}}}\" = \"{loader_dir}\" ]; then\n    \
         if [ \"${{boot_counter}}\" = \"0\" -o \"${{boot_counter}}\" = \"-1\" ]; then\n      \
         set default=1\n      \
         set boot_counter=-1\n"
    );
    for n in 1..=MAX_ATTEMPTS {
        s.push_str(&format!(
            "    elif [ \"${{boot_counter}}\" = \"{n}\" ]; then\n      set boot_counter={}\n",
            n - 1
        ));
    }
    s.push_str(&format!(
        "    fi\n    save_env --file {file} boot_counter\n  fi\nfi\n"
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_round_trips_as_grub_editenv_writes_it() {
        // grub-editenv's output for `set a=1 b='x\y'`.
        let mut want = b"# GRUB Environment Block\na=1\nb=x\\\\y\n".to_vec();
        want.resize(1024, b'#');
        let env = EnvBlock::parse(&want).unwrap();
        assert_eq!(env.get("a"), Some("1"));
        assert_eq!(env.get("b"), Some("x\\y"));
        assert_eq!(env.encode().unwrap(), want);
        assert!(EnvBlock::parse(b"a=1\n").is_err());
        let mut big = EnvBlock::default();
        big.set("x", &"y".repeat(1100));
        assert!(big.encode().is_err());
    }

    #[test]
    fn arm_count_and_mark_good() {
        let t = tempfile::tempdir().unwrap();
        let root = rustix::fs::open(
            t.path(),
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        assert_eq!(
            arm(&root, "loader.1").unwrap(),
            None,
            "no block: not counted"
        );
        assert_eq!(state(&root).unwrap(), BootCount::Off);
        std::fs::create_dir_all(t.path().join("boot/grub")).unwrap();
        std::fs::write(
            t.path().join(GRUBENV),
            EnvBlock::default().encode().unwrap(),
        )
        .unwrap();
        std::os::unix::fs::symlink("loader.1", t.path().join("boot/loader")).unwrap();
        assert_eq!(state(&root).unwrap(), BootCount::Idle);
        assert_eq!(arm(&root, "loader.1").unwrap(), Some(3));
        assert_eq!(state(&root).unwrap(), BootCount::Counting { left: 3 });
        // Another boot switch ends the probation.
        std::fs::remove_file(t.path().join("boot/loader")).unwrap();
        std::os::unix::fs::symlink("loader.0", t.path().join("boot/loader")).unwrap();
        assert_eq!(state(&root).unwrap(), BootCount::Idle);
        std::fs::remove_file(t.path().join("boot/loader")).unwrap();
        std::os::unix::fs::symlink("loader.1", t.path().join("boot/loader")).unwrap();
        let bytes = std::fs::read(t.path().join(GRUBENV)).unwrap();
        assert_eq!(bytes.len(), ENV_SIZE);
        mark_good(&root).unwrap();
        assert_eq!(state(&root).unwrap(), BootCount::Idle);
        let env = EnvBlock::parse(&std::fs::read(t.path().join(GRUBENV)).unwrap()).unwrap();
        assert_eq!(env.get("boot_success"), Some("1"));
        assert_eq!(env.get("boot_counter"), None);
        assert_eq!(env.get(PROBATION_VAR), None);

        let mut env = EnvBlock::default();
        env.set(ATTEMPTS_VAR, "2");
        env.set("boot_counter", "-1");
        env.set("boot_success", "0");
        env.set(PROBATION_VAR, "loader.1");
        std::fs::write(t.path().join(GRUBENV), env.encode().unwrap()).unwrap();
        assert_eq!(state(&root).unwrap(), BootCount::FellBack);
        assert_eq!(arm(&root, "loader.1").unwrap(), Some(2));
        env.set(ATTEMPTS_VAR, "10");
        std::fs::write(t.path().join(GRUBENV), env.encode().unwrap()).unwrap();
        let e = format!("{:#}", arm(&root, "loader.1").unwrap_err());
        assert!(e.contains("arbor_boot_attempts=\"10\""), "{e}");
    }
}
