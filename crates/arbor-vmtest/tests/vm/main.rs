//! Machines that really boot: a Debian bookworm OS tree (built by
//! `dist/os/mkdebian.sh`, cached), committed, made into disk images by
//! `arbor image build`, and booted in QEMU (TCG unless a KVM probe boots).
//!
//! Each test prints what its VM does; the console logs are kept under
//! `$ARBOR_VM_DIR` (default `/var/tmp/arbor-vmtest`). Needs root,
//! qemu-system-x86, debootstrap and a Debian mirror on the first run.

mod agent;
mod harness;

use harness::{ostree_status_booted, sh, status_booted, top, Vm};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(300);
const CMD: Duration = Duration::from_secs(600);

/// What every test shares: the binaries, the OS commits, the images and a
/// server for the upgrade's repository.
#[derive(Debug)]
struct Fixture {
    dir: PathBuf,
    arbor: PathBuf,
    repo: PathBuf,
    v1: String,
    v2: String,
    images: PathBuf,
    kernel: PathBuf,
    url: String,
    _server: Server,
}

/// The upgrade server. The fixture is a static, never dropped: the
/// server runs under a shell that kills it when its stdin (held here)
/// closes, which the kernel does when the test process exits, however it
/// exits.
#[derive(Debug)]
struct Server {
    child: Child,
    _stdin: Option<std::process::ChildStdin>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // A server under the shell: closing its stdin makes the shell kill
        // it and exit (killing the shell itself would orphan the server).
        if self._stdin.take().is_some() {
            for _ in 0..100 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    let dir = PathBuf::from(
        std::env::var("ARBOR_VM_DIR").unwrap_or_else(|_| "/var/tmp/arbor-vmtest".into()),
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let top = top();
    eprintln!("[vm] building the release binaries");
    sh(Command::new("cargo").current_dir(&top).args([
        "build",
        "--release",
        "-q",
        "-p",
        "arbor-cli",
    ]));
    sh(Command::new("cargo").current_dir(&top).args([
        "rustc",
        "--release",
        "-q",
        "-p",
        "arbor-boot",
        "--bin",
        "arbor-prepare-root",
        "--",
        "-C",
        "target-feature=+crt-static",
    ]));
    let arbor = top.join("target/release/arbor");
    let repo = dir.join("repo");
    let mkos = |version: &str, extra: &Path| mkos(&repo, version, extra);
    let rel = |n: &str| release_dir(&dir, n);
    let v2 = mkos("2", &rel("2"));
    // v2 goes to the served repository; v1 is what the images hold.
    let served = dir.join("served");
    sh(Command::new(&arbor)
        .args(["init", "--mode", "archive", "--repo"])
        .arg(&served));
    sh(Command::new(&arbor)
        .args(["pull-local", "--repo"])
        .arg(&served)
        .arg(&repo)
        .arg(&v2));
    sh(Command::new(&arbor)
        .args(["refs", "--repo"])
        .arg(&served)
        .args(["--create", "vm/os", &v2]));
    let v1 = mkos("1", &rel("1"));

    let images = dir.join("images");
    eprintln!("[vm] arbor image build --format raw,qcow2,erofs");
    let t0 = std::time::Instant::now();
    sh(Command::new(&arbor)
        .args(["image", "build", "--repo"])
        .arg(&repo)
        .args(["--format", "raw,qcow2,erofs", "-o"])
        .arg(&images)
        .arg("vm/os"));
    eprintln!("[vm] images in {:.0} s", t0.elapsed().as_secs_f64());

    // The kernel, for the accelerator probe.
    let kernel = dir.join("vmlinuz");
    let ls = sh(Command::new(&arbor)
        .args(["ls", "--repo"])
        .arg(&repo)
        .args(["vm/os", "/usr/lib/modules"]));
    let kdir = ls
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .find(|p| p.len() > "/usr/lib/modules/".len())
        .expect("a kernel directory")
        .to_string();
    let bytes = Command::new(&arbor)
        .args(["cat", "--repo"])
        .arg(&repo)
        .arg("vm/os")
        .arg(format!("{kdir}/vmlinuz"))
        .output()
        .unwrap()
        .stdout;
    std::fs::write(&kernel, bytes).unwrap();

    // The upgrade's server (the guest reaches the host's 127.0.0.1 as 10.0.2.2).
    let (server, port) = serve(&arbor, &served);
    Fixture {
        dir,
        arbor,
        repo,
        v1,
        v2,
        images,
        kernel,
        url: format!("http://10.0.2.2:{port}"),
        _server: server,
    }
}

/// Builds an OS commit with `dist/os/mkdebian.sh` (the release binaries
/// built), its version `version`, the test overlay and `extra` on top,
/// onto `vm/os` of `repo`; returns its checksum.
fn mkos(repo: &Path, version: &str, extra: &Path) -> String {
    let top = top();
    eprintln!("[vm] building the OS commit, version {version} (dist/os/mkdebian.sh)");
    let t0 = std::time::Instant::now();
    let out = sh(Command::new(top.join("dist/os/mkdebian.sh"))
        .args(["--repo"])
        .arg(repo)
        .args(["--ref", "vm/os", "--version", version, "--arbor"])
        .arg(top.join("target/release/arbor"))
        .arg("--prepare-root")
        .arg(top.join("target/release/arbor-prepare-root"))
        .arg("--extra")
        .arg(top.join("crates/arbor-vmtest/overlay"))
        .arg("--extra")
        .arg(extra)
        .args(["--enable", "arbor-test-marker.service"])
        .args(["--enable", "arbor-test-agent.service"])
        .args(["--enable", "systemd-networkd.service"]));
    eprintln!(
        "[vm] OS commit {version} in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    out.trim().to_string()
}

/// A tree for `--extra` with `/usr/share/arbor-test/release` saying `n`.
fn release_dir(dir: &Path, n: &str) -> PathBuf {
    let d = dir.join(format!("release-{n}"));
    std::fs::create_dir_all(d.join("usr/share/arbor-test")).unwrap();
    std::fs::write(d.join("usr/share/arbor-test/release"), format!("{n}\n")).unwrap();
    d
}

/// `arbor serve` of `repo` on 127.0.0.1 (a free port, returned), until
/// the [`Server`] is dropped or the test process ends.
fn serve(arbor: &Path, repo: &Path) -> (Server, u16) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" serve --addr 127.0.0.1:0 --repo "$1" & pid=$!; cat >/dev/null; kill $pid"#)
        .arg(arbor)
        .arg(repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let port = first
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {first:?}"));
    (
        Server {
            child,
            _stdin: stdin,
        },
        port,
    )
}

/// A machine on a copy-on-write overlay of the qcow2 image, so that each
/// test starts from the image as built.
fn machine(name: &str) -> Vm {
    let f = fixture();
    let d = f.dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let disk = d.join("disk.qcow2");
    sh(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(f.images.join("disk.qcow2"))
        .arg(&disk));
    Vm::new(name, &d, &disk, &f.kernel)
}

/// Test 1 (and 5, raw): the raw image boots through GRUB and arbor's
/// prepare-root into its deployment, which `arbor status` and
/// `ostree admin status` mark booted; `/sysroot` and `/usr` are read-only,
/// `/etc` and `/var` writable.
#[test]
fn raw_image_boots_and_status_marks_it() {
    let f = fixture();
    let d = f.dir.join("raw");
    std::fs::create_dir_all(&d).unwrap();
    let disk = d.join("disk.raw");
    sh(Command::new("cp")
        .args(["--sparse=always"])
        .arg(f.images.join("disk.raw"))
        .arg(&disk));
    let mut vm = Vm::new("raw", &d, &disk, &f.kernel);
    vm.boot();
    let (booted, console) = vm.wait_booted(BOOT);
    assert_eq!(booted, f.v1, "the image's deployment is booted");
    assert_eq!(
        status_booted(&console).as_deref(),
        Some(f.v1.as_str()),
        "arbor status"
    );
    assert_eq!(
        ostree_status_booted(&console).as_deref(),
        Some(f.v1.as_str()),
        "ostree admin status"
    );
    let mounts = vm.ok("findmnt -rno TARGET,OPTIONS", CMD);
    eprintln!("{mounts}");
    let opt = |t: &str| {
        mounts
            .lines()
            .rfind(|l| l.split(' ').next() == Some(t))
            .map(|l| l.split(' ').nth(1).unwrap_or("").to_string())
    };
    assert!(
        opt("/sysroot").is_some_and(|o| o.starts_with("ro")),
        "{mounts}"
    );
    assert!(opt("/usr").is_some_and(|o| o.starts_with("ro")), "{mounts}");
    assert!(opt("/var").is_some_and(|o| o.starts_with("rw")), "{mounts}");
    vm.ok("touch /etc/arbor-test-rw && rm /etc/arbor-test-rw", CMD);
    let (st, _) = vm.run("touch /usr/arbor-test-ro", CMD);
    assert_ne!(st, 0, "/usr is read-only");
    vm.kill();
}

/// Tests 2 and 3: upgrade from the host's repository, reboot into it with
/// a local /etc edit kept, then roll back and reboot into the old one.
#[test]
fn upgrade_reboot_then_rollback() {
    let f = fixture();
    let mut vm = machine("upgrade");
    vm.boot();
    let (booted, _) = vm.wait_booted(BOOT);
    assert_eq!(booted, f.v1);
    vm.ok("echo 'kept across upgrades' > /etc/arbor-test-local", CMD);
    vm.ok(
        &format!(
            "arbor remote add --repo /ostree/repo --no-gpg-verify host {}",
            f.url
        ),
        CMD,
    );
    let t0 = std::time::Instant::now();
    vm.ok("arbor switch host:vm/os", CMD);
    vm.say(&format!(
        "upgrade (pull + deploy) took {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    vm.reboot(BOOT);
    vm.boot();
    let (booted, console) = vm.wait_booted(BOOT);
    assert_eq!(booted, f.v2, "the upgrade is booted");
    assert_eq!(status_booted(&console).as_deref(), Some(f.v2.as_str()));
    assert_eq!(vm.ok("cat /usr/share/arbor-test/release", CMD).trim(), "2");
    assert_eq!(
        vm.ok("cat /etc/arbor-test-local", CMD).trim(),
        "kept across upgrades"
    );
    vm.ok("arbor rollback", CMD);
    vm.reboot(BOOT);
    vm.boot();
    let (booted, console) = vm.wait_booted(BOOT);
    assert_eq!(booted, f.v1, "the rollback is booted");
    assert_eq!(status_booted(&console).as_deref(), Some(f.v1.as_str()));
    assert_eq!(vm.ok("cat /usr/share/arbor-test/release", CMD).trim(), "1");
    vm.kill();
}

/// Test 4: power loss during an upgrade, at moments chosen by a printed
/// seed (`ARBOR_VM_SEED` repeats a run, `ARBOR_VM_KILLS` sets how many):
/// the next boot is exactly the old or the new deployment, and `arbor
/// fsck` in the VM is clean.
#[test]
fn power_loss_during_upgrade_boots_old_or_new() {
    let f = fixture();
    let seed: u64 = std::env::var("ARBOR_VM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let kills: usize = std::env::var("ARBOR_VM_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    eprintln!("[vm] power-loss seed {seed} (ARBOR_VM_SEED={seed} repeats it), {kills} kill points");
    let mut rng = seed;
    let mut next = move || {
        // xorshift64*
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    // The phases the kill points are spread over: the pull, the deploy
    // (checkout, /etc merge), and right after the boot switch.
    let phases = ["pull", "deploy", "switched"];
    let mut vm = machine("powerloss");
    vm.boot();
    vm.wait_booted(BOOT);
    vm.ok(
        &format!(
            "arbor remote add --repo /ostree/repo --no-gpg-verify host {}",
            f.url
        ),
        CMD,
    );
    for k in 0..kills {
        let phase = phases[k % phases.len()];
        let delay_ms = next() % 3000;
        vm.say(&format!("kill point {k}: phase {phase}, +{delay_ms} ms"));
        // The upgrade in the background; its phases are printed by the
        // shell around arbor's own steps.
        let cmd = match phase {
            "pull" => "arbor pull --repo /ostree/repo host vm/os && echo @@phase-pulled && arbor switch host:vm/os && echo @@phase-switched".to_string(),
            "deploy" => "arbor pull --repo /ostree/repo host vm/os && echo @@phase-pull-done; echo @@phase-deploy-start; arbor switch host:vm/os && echo @@phase-switched".to_string(),
            _ => "arbor switch host:vm/os && echo @@phase-switched".to_string(),
        };
        vm.send(&cmd);
        match phase {
            "pull" => {}
            "deploy" => {
                vm.wait_output("@@phase-deploy-start", CMD);
            }
            _ => {
                vm.wait_output("@@phase-switched", CMD);
            }
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        vm.kill();
        vm.boot();
        let (booted, console) = vm.wait_booted(BOOT);
        assert!(
            booted == f.v1 || booted == f.v2,
            "kill point {k}: booted {booted}, neither old {} nor new {}",
            f.v1,
            f.v2
        );
        assert_eq!(status_booted(&console).as_deref(), Some(booted.as_str()));
        vm.say(&format!(
            "kill point {k} ({phase}, +{delay_ms} ms): came up in the {} deployment",
            if booted == f.v1 { "old" } else { "new" }
        ));
        vm.ok("arbor fsck --repo /ostree/repo", CMD);
        back_to_old(&mut vm, f, booted == f.v2);
    }
    vm.kill();
}

/// Undoes an upgrade completely, so the next kill point pulls and deploys
/// again: boots the old deployment if the new one is booted, undeploys the
/// new one, deletes its ref and prunes its objects.
fn back_to_old(vm: &mut Vm, f: &Fixture, new_booted: bool) {
    if new_booted {
        vm.ok("arbor rollback", CMD);
        vm.reboot(BOOT);
        vm.boot();
        let (b, _) = vm.wait_booted(BOOT);
        assert_eq!(b, f.v1, "the rollback is booted");
    }
    let st: serde_json::Value =
        serde_json::from_str(&vm.ok("arbor status --json", CMD)).expect("status --json");
    let deps = st["deployments"].as_array().expect("deployments").clone();
    for (i, d) in deps.iter().enumerate().rev() {
        if d["checksum"] == f.v2.as_str() {
            vm.ok(&format!("arbor undeploy {i}"), CMD);
        }
    }
    vm.ok(
        "arbor refs --repo /ostree/repo --delete host:vm/os; arbor cleanup",
        CMD,
    );
    let (st, _) = vm.run(&format!("arbor show --repo /ostree/repo {}", f.v2), CMD);
    assert_ne!(
        st, 0,
        "the new commit is pruned, so the next upgrade pulls it again"
    );
}

/// Test 5: the erofs image holds exactly the deployment's tree; two builds
/// of the same commit are byte-identical.
#[test]
fn images_are_reproducible_and_erofs_is_the_deployment() {
    let f = fixture();
    let again = f.dir.join("images-again");
    sh(Command::new(&f.arbor)
        .args(["image", "build", "--repo"])
        .arg(&f.repo)
        .args(["--format", "raw,qcow2,erofs", "-o"])
        .arg(&again)
        .arg("vm/os"));
    for name in ["disk.raw", "disk.qcow2", "root.erofs"] {
        let a = sh(Command::new("sha256sum").arg(f.images.join(name)));
        let b = sh(Command::new("sha256sum").arg(again.join(name)));
        assert_eq!(
            a.split_whitespace().next(),
            b.split_whitespace().next(),
            "{name} differs between two builds"
        );
        eprintln!(
            "[vm] {name}: {} (identical twice)",
            a.split_whitespace().next().unwrap()
        );
    }
    let _ = std::fs::remove_dir_all(&again);

    // The erofs image, mounted read-only, holds the deployment's /usr
    // exactly (content, modes, owners, xattrs, symlinks).
    let co = f.dir.join("checkout-usr");
    let _ = std::fs::remove_dir_all(&co);
    sh(Command::new(&f.arbor)
        .args(["checkout", "-H", "--subpath", "/usr", "--repo"])
        .arg(&f.repo)
        .arg("vm/os")
        .arg(&co));
    let script = r#"
set -eu
m=$(mktemp -d)
mount -t erofs -o loop,ro "$1" "$m"
grep -q '^ID=debian' "$m/usr/lib/os-release"
touch "$m/usr/x" 2>/dev/null && { echo "erofs is writable"; exit 1; }
diff -r --no-dereference "$m/usr" "$2" && echo "usr identical"
(cd "$m/usr" && find . -printf '%p %m %U %G %l\n' | sort) >"$m.a"
(cd "$2" && find . -printf '%p %m %U %G %l\n' | sort) >"$m.b"
cmp "$m.a" "$m.b" && echo "metadata identical"
(cd "$m/usr" && getfattr -R -d -m - --absolute-names . 2>/dev/null | sort) >"$m.c"
(cd "$2" && getfattr -R -d -m - --absolute-names . 2>/dev/null | sort) >"$m.d"
cmp "$m.c" "$m.d" && echo "xattrs identical"
umount "$m"
"#;
    let out = sh(Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(f.images.join("root.erofs"))
        .arg(&co));
    eprintln!("[vm] root.erofs: {}", out.trim().replace('\n', ", "));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["usr identical", "metadata identical", "xattrs identical"]
    );
    let _ = std::fs::remove_dir_all(&co);

    // export round-trips: the OS commit as a tar stream, committed again,
    // has the same root tree and metadata.
    let tar = f.dir.join("export.tar");
    sh(Command::new(&f.arbor)
        .args(["export", "--repo"])
        .arg(&f.repo)
        .arg("vm/os")
        .arg("-o")
        .arg(&tar));
    let again = f.dir.join("reimport");
    let _ = std::fs::remove_dir_all(&again);
    sh(Command::new(&f.arbor)
        .args(["init", "--mode", "bare", "--repo"])
        .arg(&again));
    let c2 = sh(Command::new(&f.arbor)
        .args(["commit", "-b", "again", "--repo"])
        .arg(&again)
        .arg("--tar")
        .arg(&tar));
    let root = |repo: &Path, rev: &str| {
        sh(Command::new("ostree")
            .arg(format!("--repo={}", repo.display()))
            .args(["ls", "-d", "-C", rev, "/"]))
    };
    assert_eq!(
        root(&f.repo, &f.v1),
        root(&again, c2.trim()),
        "export then commit --tar gives the same root tree"
    );
    eprintln!(
        "[vm] export round-trips: root {}",
        root(&f.repo, &f.v1).trim()
    );
    let _ = std::fs::remove_dir_all(&again);
    let _ = std::fs::remove_file(&tar);
}

/// Test 6: a sysroot that `ostree admin deploy` made (Debian's ostree, with
/// no bootloader of its own) becomes an image with `image build
/// --from-sysroot`, and boots through arbor's GRUB menu and
/// `arbor-prepare-root`; both tools mark its deployment booted.
#[test]
fn ostree_deployed_sysroot_boots_through_arbor_prepare_root() {
    let f = fixture();
    let d = f.dir.join("ostree-sysroot");
    let _ = std::fs::remove_dir_all(&d);
    let sys = d.join("sysroot");
    std::fs::create_dir_all(&sys).unwrap();
    let ostree = |args: &[&str]| sh(Command::new("ostree").args(args));
    let s = sys.to_str().unwrap();
    let repo = format!("--repo={s}/ostree/repo");
    ostree(&["admin", "init-fs", s]);
    ostree(&["admin", "os-init", "--sysroot", s, "debian"]);
    ostree(&["config", &repo, "set", "sysroot.bootloader", "none"]);
    ostree(&["pull-local", &repo, f.repo.to_str().unwrap(), &f.v1]);
    ostree(&["refs", &repo, "--create=vm/os", &f.v1]);
    ostree(&[
        "admin",
        "deploy",
        "--sysroot",
        s,
        "--os=debian",
        "--karg=root=LABEL=root",
        "--karg=rw",
        "--karg=console=ttyS0,115200n8",
        "vm/os",
    ]);
    let out = d.join("images");
    sh(Command::new(&f.arbor)
        .args(["image", "build", "--format", "raw", "--from-sysroot"])
        .arg(&sys)
        .arg("-o")
        .arg(&out));
    let mut vm = Vm::new("ostree-sysroot", &d, &out.join("disk.raw"), &f.kernel);
    vm.boot();
    let (booted, console) = vm.wait_booted(BOOT);
    assert_eq!(booted, f.v1);
    assert_eq!(status_booted(&console).as_deref(), Some(f.v1.as_str()));
    assert_eq!(
        ostree_status_booted(&console).as_deref(),
        Some(f.v1.as_str())
    );
    vm.kill();
    let _ = std::fs::remove_dir_all(&d);
}
