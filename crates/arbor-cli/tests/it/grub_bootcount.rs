//! Boot counting end to end, with Debian's real GRUB in QEMU: an update
//! staged with its finalization locked is not finalized; unlocked, its
//! finalization arms the counter in `/boot/grub/grubenv`; then GRUB, run
//! on a disk of that `/boot`, boots the new deployment while the counter
//! lasts, falls back to the previous one when it runs out, and stores
//! what it did in the block (read back from the disk with debugfs).

use std::path::Path;
use std::process::Command;

use arbor_sysroot::bootcount::{EnvBlock, ATTEMPTS_VAR, GRUBENV, PROBATION_VAR};

use crate::grub_boot::{disk, grub_image, have, run_qemu};
use crate::sysroot::{booted_root, needs_root};
use crate::sysroot_ops::{machine, sys_arbor};
use crate::util::{run_ok, s};

/// The titles of the entries of `boot/loader/entries`, default first
/// (highest `version`).
fn titles(sys: &Path) -> Vec<String> {
    let mut v: Vec<(u64, String)> = std::fs::read_dir(sys.join("boot/loader/entries"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some("conf".as_ref()))
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let key = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k} ")))
                    .unwrap()
                    .to_string()
            };
            (key("version").parse().unwrap(), key("title"))
        })
        .collect();
    v.sort_by_key(|b| std::cmp::Reverse(b.0));
    v.into_iter().map(|x| x.1).collect()
}

/// The block as GRUB left it on the disk image.
fn block_on_disk(disk: &Path) -> EnvBlock {
    let out = Command::new("debugfs")
        .args(["-R", "cat /grub/grubenv"])
        .arg(disk)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.len(), 1024, "GRUB keeps the block's size");
    EnvBlock::parse(&out.stdout).unwrap()
}

#[test]
fn grub_counts_boots_then_falls_back_to_the_previous_deployment() {
    if needs_root("grub_counts_boots_then_falls_back_to_the_previous_deployment") {
        return;
    }
    for tool in ["qemu-system-x86_64", "grub-mkimage", "mkfs.ext4", "debugfs"] {
        assert!(
            have(tool),
            "{tool} is not installed (apt-get install qemu-system-x86 grub-pc-bin e2fsprogs, as .ci/run does)"
        );
    }
    let mut m = machine();
    let sys = m.sys.clone();
    m.src.release_v2();
    // Two boots of probation (the block's own setting), not the default 3.
    let mut env = EnvBlock::default();
    env.set(ATTEMPTS_VAR, "2");
    std::fs::create_dir_all(sys.join("boot/grub")).unwrap();
    std::fs::write(sys.join(GRUBENV), env.encode().unwrap()).unwrap();
    let booted = booted_root(&sys, 0);
    // The health checks' unit is enabled (carried into v2's /etc): its
    // boots are counted.
    let wants = Path::new(&booted).join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/system/arbor-health.service",
        wants.join("arbor-health.service"),
    )
    .unwrap();
    let with_boot = |args: &[&str]| {
        let mut c = sys_arbor(&sys, args);
        c.env("ARBOR_TEST_ROOT", &booted);
        c
    };
    let lock_cmd = |args: &[&str]| {
        let mut c = crate::util::arbor();
        c.args(["admin", "lock-finalization", "--sysroot"])
            .arg(&sys)
            .args(args)
            .env("ARBOR_TEST_ROOT", &booted);
        c
    };
    let loader = || std::fs::read_link(sys.join("boot/loader")).unwrap();
    let before = loader();
    // Staged with its finalization locked: shutdown leaves it alone, and
    // the block is not touched.
    run_ok(&mut with_boot(&[
        "upgrade",
        "--stage",
        "--lock-finalization",
    ]));
    assert!(sys.join("run/ostree/staged-deployment-locked").is_file());
    let out = run_ok(&mut with_boot(&["finalize"]));
    assert!(out.contains("locked"), "{out}");
    assert_eq!(loader(), before);
    assert_eq!(
        std::fs::read(sys.join(GRUBENV)).unwrap(),
        env.encode().unwrap()
    );
    let out = run_ok(&mut lock_cmd(&["--unlock"]));
    assert!(out.contains("unlocked"), "{out}");
    assert!(!sys.join("run/ostree/staged-deployment-locked").exists());
    // Unlocked: finalized, and the new default is on probation.
    let out = run_ok(&mut with_boot(&["finalize"]));
    assert!(out.contains("Finalized"), "{out}");
    assert_ne!(loader(), before);
    let armed = EnvBlock::parse(&std::fs::read(sys.join(GRUBENV)).unwrap()).unwrap();
    assert_eq!(
        (armed.get("boot_counter"), armed.get("boot_success")),
        (Some("2"), Some("0"))
    );
    // The probation's token is the one the new menu counts for.
    let token = armed.get(PROBATION_VAR).unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(sys.join("boot/loader/probation")).unwrap(),
        token
    );
    let menu = std::fs::read_to_string(sys.join("boot/loader/grub.cfg")).unwrap();
    assert!(menu.contains(&format!("= {token} ]")), "{menu}");
    // Locking with nothing staged is refused.
    let out = lock_cmd(&[]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No deployment is staged"));

    let t = titles(&sys);
    assert_eq!(t.len(), 2, "{t:?}");
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(sys.join("boot"))
            .arg(&content),
    );
    std::fs::write(
        content.join("grub/grub.cfg"),
        arbor_sysroot::grub::grub_stub(),
    )
    .unwrap();
    let lnx = grub_image(dir.path(), "(hd0)/grub", &["loadenv"]);
    let d = disk(dir.path(), &content);
    let boot = |n: u32| {
        let out = run_qemu(&lnx, &d, |o| {
            o.contains("Press any key to continue") || o.contains("grub>")
        });
        let chosen = t
            .iter()
            .position(|title| out.contains(&format!("Booting `{title}'")))
            .unwrap_or_else(|| panic!("boot {n}: GRUB booted no entry:\n{out}"));
        let env = block_on_disk(&d);
        let counter = env.get("boot_counter").unwrap_or("").to_string();
        println!(
            "boot {n}: GRUB booted entry {chosen} ({}), boot_counter={counter}",
            t[chosen]
        );
        (chosen, counter)
    };
    // Two attempts of the new deployment, then the previous one, for good.
    assert_eq!(boot(1), (0, "1".to_string()));
    assert_eq!(boot(2), (0, "0".to_string()));
    assert_eq!(boot(3), (1, "-1".to_string()));
    assert_eq!(boot(4), (1, "-1".to_string()));
    assert_eq!(block_on_disk(&d).get("boot_success"), Some("0"));
    println!("GRUB on {}: counted down, then fell back", s(&d));
    // The blocks every other boot sees: the image's empty one, and the one
    // a good boot leaves; and a probation whose menu is gone (another
    // boot switch came after it: here `admin grub-config` rewrites the
    // menu, as any switch would, without a token). GRUB boots the default
    // and writes nothing.
    let mut good = armed.clone();
    good.set("boot_success", "1");
    good.unset("boot_counter");
    good.unset(PROBATION_VAR);
    let mut stale = armed.clone();
    stale.set("boot_counter", "0");
    run_ok(
        crate::util::arbor()
            .args(["admin", "grub-config", "--sysroot"])
            .arg(&sys),
    );
    let plain = dir.path().join("plain");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(sys.join("boot"))
            .arg(&plain),
    );
    std::fs::write(
        plain.join("grub/grub.cfg"),
        arbor_sysroot::grub::grub_stub(),
    )
    .unwrap();
    for (name, block, from) in [
        ("empty", EnvBlock::default(), &content),
        ("good", good, &content),
        ("stale", stale, &plain),
    ] {
        std::fs::write(from.join("grub/grubenv"), block.encode().unwrap()).unwrap();
        let d2 = dir.path().join(name);
        std::fs::create_dir(&d2).unwrap();
        let d = disk(&d2, from);
        let out = run_qemu(&lnx, &d, |o| {
            o.contains("Press any key to continue") || o.contains("grub>")
        });
        assert!(
            out.contains(&format!("Booting `{}'", t[0])),
            "{name}: {out}"
        );
        assert_eq!(block_on_disk(&d), block, "{name}: GRUB wrote nothing");
        println!("{name} block: GRUB booted entry 0 and wrote nothing");
    }
}
