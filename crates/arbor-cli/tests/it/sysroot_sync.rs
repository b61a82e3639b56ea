//! The sysroot's sync discipline, observed with strace (a killed process
//! keeps its page cache, so only the order of the syscalls shows that a
//! power loss is survived): everything the new boot configuration refers
//! to (entries, kernels, origins, bootlinks, `loader.tmp`) is written, then
//! `syncfs`, then the one atomic rename that switches, then the directory
//! holding it is synced.

use std::path::Path;
use std::process::Command;

use crate::sysroot::needs_root;
use crate::sysroot_ops::{machine, sys_arbor};
use crate::util::run_ok;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Ev {
    /// A name the new configuration refers to: an entry, a kernel, an
    /// origin, a bootlink, `loader.tmp`, an inactive `boot.B` link.
    Prepare,
    /// `syncfs` of the sysroot's `ostree/` (deployments, repository).
    SyncSysroot,
    /// `syncfs` of `/boot`.
    SyncBoot,
    /// Any other `syncfs` (the repository's, during a pull).
    Sync,
    /// `rename(boot/loader.tmp, boot/loader)`.
    LoaderSwap,
    /// `rename(ostree/.boot.B.tmp-PID-N, ostree/boot.B)` (a unique
    /// temporary name, arbor_fs::symlink_replace).
    BootlinkSwap,
    /// `fsync` of `/boot` or `ostree/`.
    DirSync,
    /// `ioctl(FIFREEZE)` / `ioctl(FITHAW)` (by `fsfreeze`).
    Freeze,
    Thaw,
}

fn traced(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Vec<Ev> {
    let ok = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "strace is required and must be able to trace");
    let log = dir.join("sysroot.strace");
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-y",
        "-e",
        "trace=syncfs,fsync,rename,renameat,renameat2,symlinkat,ioctl",
        "-o",
    ])
    .arg(&log)
    .arg(env!("CARGO_BIN_EXE_arbor"))
    .args(args)
    .envs(env.iter().copied());
    run_ok(&mut cmd);
    classify(&std::fs::read_to_string(&log).unwrap())
}

fn classify(text: &str) -> Vec<Ev> {
    let mut evs = Vec::new();
    for line in text.lines() {
        if line.contains("= -1") || line.contains("resumed>") || line.contains("+++") {
            continue;
        }
        let call = line.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
        let rename = call.starts_with("rename");
        if call.starts_with("ioctl(") && call.contains("FIFREEZE") {
            evs.push(Ev::Freeze);
        } else if call.starts_with("ioctl(") && call.contains("FITHAW") {
            evs.push(Ev::Thaw);
        } else if call.starts_with("syncfs(") && call.contains("/ostree>)") {
            evs.push(Ev::SyncSysroot);
        } else if call.starts_with("syncfs(") && call.contains("/boot>)") {
            evs.push(Ev::SyncBoot);
        } else if call.starts_with("syncfs(") {
            evs.push(Ev::Sync);
        } else if rename && call.contains("\"loader.tmp\"") && call.contains("\"loader\"") {
            evs.push(Ev::LoaderSwap);
        } else if rename && call.contains("/ostree>, \".boot.") && call.contains(".tmp-") {
            evs.push(Ev::BootlinkSwap);
        } else if call.starts_with("fsync(")
            && (call.contains("/boot>)") || call.contains("/ostree>)"))
        {
            evs.push(Ev::DirSync);
        } else if (rename
            && (call.contains("/entries>")
                || call.contains("/boot/ostree/")
                || call.contains(".origin\"")))
            || (call.starts_with("symlinkat(")
                && (call.contains("/ostree/boot.") || call.contains("\"loader.tmp\"")))
        {
            evs.push(Ev::Prepare);
        }
    }
    evs
}

/// Asserts: every preparation, then a sync, then `swap` (exactly once),
/// then a sync of its directory. `BootlinkSwap`s other than the switch
/// (the inactive boot version's link) count as preparations.
fn assert_switch_order(evs: &[Ev], swap: Ev) {
    let swaps: Vec<usize> = (0..evs.len()).filter(|&i| evs[i] == swap).collect();
    let [s] = swaps[..] else {
        panic!("expected exactly one {swap:?}: {evs:?}");
    };
    let is_prep = |e: &Ev| *e == Ev::Prepare || (swap == Ev::LoaderSwap && *e == Ev::BootlinkSwap);
    let last_prep = evs
        .iter()
        .rposition(is_prep)
        .unwrap_or_else(|| panic!("nothing prepared: {evs:?}"));
    assert!(last_prep < s, "written after the switch: {evs:?}");
    assert!(
        evs[last_prep..s].contains(&Ev::SyncSysroot) && evs[last_prep..s].contains(&Ev::SyncBoot),
        "switched before the sysroot and /boot were synced: {evs:?}"
    );
    assert!(
        evs[s..].contains(&Ev::DirSync),
        "switch not synced: {evs:?}"
    );
}

#[test]
fn switch_checker_rejects_wrong_orders() {
    use Ev::*;
    assert_switch_order(
        &[
            Prepare,
            BootlinkSwap,
            SyncSysroot,
            SyncBoot,
            LoaderSwap,
            DirSync,
        ],
        LoaderSwap,
    );
    assert_switch_order(
        &[Prepare, SyncSysroot, SyncBoot, BootlinkSwap, DirSync],
        BootlinkSwap,
    );
    for (bad, swap) in [
        (
            vec![Prepare, LoaderSwap, SyncSysroot, SyncBoot, DirSync],
            LoaderSwap,
        ),
        (
            vec![SyncSysroot, SyncBoot, Prepare, LoaderSwap, DirSync],
            LoaderSwap,
        ),
        (
            vec![
                Prepare,
                SyncSysroot,
                SyncBoot,
                BootlinkSwap,
                LoaderSwap,
                DirSync,
            ],
            LoaderSwap,
        ),
        (vec![Prepare, SyncSysroot, SyncBoot, LoaderSwap], LoaderSwap),
        (vec![Prepare, SyncSysroot, LoaderSwap, DirSync], LoaderSwap),
        (
            vec![Prepare, SyncBoot, Sync, LoaderSwap, DirSync],
            LoaderSwap,
        ),
        (
            vec![Prepare, SyncSysroot, SyncBoot, LoaderSwap, Prepare, DirSync],
            LoaderSwap,
        ),
        (
            vec![
                Prepare,
                SyncSysroot,
                SyncBoot,
                LoaderSwap,
                LoaderSwap,
                DirSync,
            ],
            LoaderSwap,
        ),
    ] {
        let r = std::panic::catch_unwind(|| assert_switch_order(&bad, swap));
        assert!(r.is_err(), "{bad:?} accepted");
    }
}

#[test]
fn deployments_are_synced_before_the_boot_switch() {
    if needs_root("deployments_are_synced_before_the_boot_switch") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    m.src.release_v2();
    let base = m.src.dir.path().to_path_buf();
    let s = sys.to_str().unwrap();
    // A new boot version: entries, kernel, origin, bootlinks, loader swap.
    let evs = traced(&base, &["upgrade", "--sysroot", s], &[]);
    assert_switch_order(&evs, Ev::LoaderSwap);
    // Same entries, new order: only the bootlinks are swapped.
    run_ok(&mut sys_arbor(&sys, &["deploy", "--retain", &m.src.v2]));
    let evs = traced(&base, &["rollback", "--sysroot", s], &[]);
    assert!(!evs.contains(&Ev::LoaderSwap), "{evs:?}");
    assert_switch_order(&evs, Ev::BootlinkSwap);
    // A staged deployment's finalization switches the same way.
    let booted = crate::sysroot::booted_root(&sys, 0);
    run_ok(sys_arbor(&sys, &["deploy", "--stage", &m.src.v1]).env("ARBOR_TEST_ROOT", &booted));
    let evs = traced(
        &base,
        &["finalize", "--sysroot", s],
        &[("ARBOR_TEST_ROOT", booted.as_str())],
    );
    assert_switch_order(&evs, Ev::LoaderSwap);
}

/// A loop-mounted ext4 over `dir` (its content copied in); on drop, thawed
/// (should a test fail while it is frozen) and unmounted.
struct LoopMount(std::path::PathBuf);

impl LoopMount {
    fn over(dir: &Path, work: &Path) -> LoopMount {
        let img = work.join("boot.img");
        let copy = work.join("boot-copy");
        run_ok(Command::new("truncate").arg("-s").arg("64M").arg(&img));
        run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
        run_ok(Command::new("cp").arg("-a").arg(dir).arg(&copy));
        run_ok(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(dir),
        );
        let m = LoopMount(dir.to_path_buf());
        run_ok(Command::new("cp").arg("-a").arg(copy.join(".")).arg(dir));
        m
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze")
            .arg("--unfreeze")
            .arg(&self.0)
            .output();
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_separate_boot_is_frozen_and_thawed_before_the_switch() {
    if needs_root("a_separate_boot_is_frozen_and_thawed_before_the_switch") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    let base = m.src.dir.path().to_path_buf();
    let _boot = LoopMount::over(&sys.join("boot"), &base);
    m.src.release_v2();
    let s = sys.to_str().unwrap();
    let evs = traced(&base, &["upgrade", "--sysroot", s], &[]);
    assert_switch_order(&evs, Ev::LoaderSwap);
    let pos = |e: Ev| evs.iter().position(|x| *x == e);
    let (f, t, swap) = (
        pos(Ev::Freeze).unwrap_or_else(|| panic!("no freeze: {evs:?}")),
        pos(Ev::Thaw).unwrap_or_else(|| panic!("no thaw: {evs:?}")),
        pos(Ev::LoaderSwap).unwrap(),
    );
    let last_prep = evs.iter().rposition(|e| *e == Ev::Prepare).unwrap();
    assert!(last_prep < f && f < t && t < swap, "{evs:?}");
    // And again right after the switch, as ostree's swap_bootloader: GRUB
    // does not replay a journal, so the rename itself must be flushed.
    let after = &evs[swap..];
    let f2 = after.iter().position(|e| *e == Ev::Freeze);
    let t2 = after.iter().position(|e| *e == Ev::Thaw);
    assert!(
        matches!((f2, t2), (Some(a), Some(b)) if a < b),
        "no freeze/thaw after the switch: {evs:?}"
    );
    // arbor issues both ioctls itself (no `fsfreeze` child): they carry
    // the pid of arbor's first traced call.
    let log = std::fs::read_to_string(base.join("sysroot.strace")).unwrap();
    let pid = |l: &str| l.split_whitespace().next().unwrap_or_default().to_string();
    let main_pid = pid(log.lines().next().unwrap());
    for op in ["FIFREEZE", "FITHAW"] {
        let line = log
            .lines()
            .find(|l| l.contains(op) && l.contains("= 0"))
            .unwrap();
        assert_eq!(pid(line), main_pid, "{op} not issued by arbor: {line}");
    }
    // Killed while /boot is frozen: the watchdog thaws it, the old list
    // stays, and the operation completes when run again.
    let before = crate::sysroot_ops::checksums(&sys);
    let out = sys_arbor(&sys, &["rollback"])
        .env("ARBOR_FAILPOINT", arbor_fs::failpoint::BOOT_FROZEN)
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    let probe = Command::new("timeout")
        .arg("20")
        .arg("touch")
        .arg(sys.join("boot/thawed"))
        .status()
        .unwrap();
    assert!(probe.success(), "/boot stayed frozen");
    assert_eq!(crate::sysroot_ops::checksums(&sys), before);
    run_ok(&mut sys_arbor(&sys, &["rollback"]));
    let after = crate::sysroot_ops::checksums(&sys);
    assert_eq!(after, [before[1].clone(), before[0].clone()]);
}
