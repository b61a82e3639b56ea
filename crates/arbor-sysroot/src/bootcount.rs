//! Boot counting and automatic rollback through GRUB's environment block,
//! the scheme of Fedora's GRUB and greenboot (variables `boot_counter` and
//! `boot_success` in `/boot/grub/grubenv`).
//!
//! - When a staged deployment is finalized (it becomes the default at
//!   shutdown) and the new deployment runs the health checks' unit
//!   ([`HEALTH_UNIT`] enabled), [`arm`] sets `boot_counter=N` (default
//!   [`DEFAULT_ATTEMPTS`]), `boot_success=0` and [`PROBATION_VAR`], a token
//!   naming the deployment and unique to this switch; the boot switch then
//!   writes a menu that counts for that token only (and the token beside
//!   it, [`PROBATION_FILE`]). Every other boot switch writes a menu that
//!   counts nothing: an old probation can never apply to a later list.
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
//! makes have one) and the health unit will judge the boots: a machine
//! without them boots as before. GRUB writes the block in place (it cannot
//! allocate), so arbor keeps it exactly [`ENV_SIZE`] bytes, replaced
//! atomically, and the replacement reaches the filesystem proper (GRUB
//! does not replay the journal): `/boot` is frozen and thawed, as for the
//! boot switch.

use std::io::Read;

use anyhow::{bail, Context, Result};
use fn_error_context::context;

use crate::deployment::Deployment;
use crate::fsutil;
use crate::sysroot::Sysroot;

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
/// The block's variable holding the probation's token.
pub const PROBATION_VAR: &str = "arbor_probation";
/// The file, in `loader.N/`, holding the token its menu counts for.
pub const PROBATION_FILE: &str = "probation";
/// The unit that judges boots: boots are counted only for a deployment
/// that enables it.
pub const HEALTH_UNIT: &str = "arbor-health.service";
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

fn read_block(s: &Sysroot) -> Result<Option<EnvBlock>> {
    match fsutil::read_optional(&s.fd, GRUBENV)? {
        Some(b) => Ok(Some(
            EnvBlock::parse(&b).with_context(|| format!("Reading {GRUBENV}"))?,
        )),
        None => Ok(None),
    }
}

fn write_block(s: &Sysroot, env: &EnvBlock) -> Result<()> {
    let data = env.encode()?;
    let dir = fsutil::open_dir(&s.fd, "boot/grub")?;
    arbor_fs::atomic_write(&dir, "grubenv", &data, 0o644)?;
    arbor_fs::fsync_dir(&dir)?;
    let boot = fsutil::open_dir(&s.fd, "boot")?;
    rustix::fs::syncfs(&boot).context("Syncing /boot")?;
    crate::write::boot_freeze_thaw(s, &boot)
}

/// A new probation token for deployment `d`: `CSUM.SERIAL-RANDOM`.
pub fn new_token(d: &Deployment) -> Result<String> {
    let mut r = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut r))
        .context("Reading /dev/urandom")?;
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{}-{hex}", d.dir_name()))
}

/// The deployment (`CSUM.SERIAL`) a token names.
pub fn token_deployment(token: &str) -> &str {
    token.rsplit_once('-').map_or(token, |x| x.0)
}

/// The token the active menu (`boot/loader/`) counts for, if any.
fn active_token(s: &Sysroot) -> Result<Option<String>> {
    Ok(
        fsutil::read_optional(&s.fd, &format!("boot/loader/{PROBATION_FILE}"))?
            .map(|b| String::from_utf8_lossy(&b).trim().to_string()),
    )
}

/// The state of the sysroot's block, for the active menu: a probation
/// whose token is not the active menu's is over (another boot switch came
/// after it) and counts as [`BootCount::Idle`].
pub fn state(s: &Sysroot) -> Result<BootCount> {
    Ok(probation(s)?.map_or(BootCount::Off, |(c, _)| c))
}

/// [`state`] and the token of the probation in force (`None` without a
/// block).
pub fn probation(s: &Sysroot) -> Result<Option<(BootCount, Option<String>)>> {
    let Some(env) = read_block(s)? else {
        return Ok(None);
    };
    if env.get("boot_success") != Some("0") {
        return Ok(Some((BootCount::Idle, None)));
    }
    let Some(token) = env.get(PROBATION_VAR).filter(|t| !t.is_empty()) else {
        return Ok(Some((BootCount::Idle, None)));
    };
    if active_token(s)?.as_deref() != Some(token) {
        return Ok(Some((BootCount::Idle, None)));
    }
    let c = match env.get("boot_counter") {
        None | Some("") => BootCount::Idle,
        Some("-1") => BootCount::FellBack,
        Some(n) => BootCount::Counting {
            left: n.parse().unwrap_or(0),
        },
    };
    Ok(Some((c, Some(token.to_string()))))
}

/// Whether a new deployment whose root is `root` gets boots counted: the
/// sysroot has a block, and the deployment enables [`HEALTH_UNIT`] (in
/// its `/etc` or `/usr/lib` `systemd/system/multi-user.target.wants`), so
/// that something marks its good boots.
pub fn wanted(s: &Sysroot, root: &std::os::fd::OwnedFd) -> Result<bool> {
    if fsutil::file_type(&s.fd, GRUBENV)?.is_none() {
        return Ok(false);
    }
    for dir in ["etc", "usr/lib"] {
        let link = format!("{dir}/systemd/system/multi-user.target.wants/{HEALTH_UNIT}");
        if fsutil::file_type(root, &link)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Puts the default deployment of the coming boot switch on probation,
/// if the sysroot has a block: `boot_counter` = its [`ATTEMPTS_VAR`] (else
/// [`DEFAULT_ATTEMPTS`]), `boot_success=0`, [`PROBATION_VAR`] = `token`
/// (see [`new_token`]; the switch must be made with
/// [`crate::write::write_deployments_with`] and the same token). Returns
/// the count, or `None` when boots are not counted. Durable when it
/// returns; a block that cannot be read or names a wrong count is an
/// error (and nothing is written).
#[context("Arming the boot counter")]
pub fn arm(s: &Sysroot, token: &str) -> Result<Option<u32>> {
    let Some(mut env) = read_block(s)? else {
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
    env.set(PROBATION_VAR, token);
    write_block(s, &env)?;
    Ok(Some(n))
}

/// Ends the probation: `boot_success=1`, no counter, no token (what
/// greenboot's `grub2-set-success` does). No-op without a block.
#[context("Marking the boot good")]
pub fn mark_good(s: &Sysroot) -> Result<()> {
    let Some(mut env) = read_block(s)? else {
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
    write_block(s, &env)
}

/// Ends a fall-back once the rollback is the default (as [`mark_good`]:
/// the health checks then judge the boot as any other).
pub fn clear(s: &Sysroot) -> Result<()> {
    mark_good(s)
}

/// The GRUB script that counts boots for the probation `token`, for the
/// menu its boot switch writes (after its `set default=0`):
/// `${arbor_boot}/grub/grubenv` is `/boot/grub/grubenv`.
pub fn grub_snippet(token: &str) -> String {
    let file = "${arbor_boot}/grub/grubenv";
    let token = crate::grub::quote(token);
    let mut s = format!(
        "if [ -f {file} ]; then\n  \
         load_env --file {file} boot_counter boot_success {PROBATION_VAR}\n  \
         if [ \"${{boot_success}}\" = \"0\" -a \"${{{PROBATION_VAR}}}\" = {token} ]; then\n    \
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
    fn tokens_name_their_deployment() {
        assert_eq!(
            token_deployment(&format!("{}.0-0123456789abcdef", "ab".repeat(32))),
            format!("{}.0", "ab".repeat(32))
        );
        // A token is one plain GRUB word: compared literally by the menu.
        let t = format!("{}.3-0123456789abcdef", "ab".repeat(32));
        assert_eq!(crate::grub::quote(&t), t);
        assert!(grub_snippet(&t).contains(&format!("\"${{arbor_probation}}\" = {t} ]")));
    }
}
