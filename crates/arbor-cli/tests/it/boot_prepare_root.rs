//! `arbor prepare-root` on a sysroot arbor deployed, in a private mount
//! namespace made to look like an initramfs; and the writing commands on a
//! booted system whose `/sysroot` is read-only (`arbor_sysroot::writable`).

#[path = "../../../arbor-boot/tests/common/mod.rs"]
mod boot_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use boot_common::{check_prepared, run_in_boot_namespace, Expect};

use crate::sysroot::{needs_root, os_tree};
use crate::util::{arbor, run_ok, s};

/// A sysroot with one arbor deployment of a tree that follows the ostree
/// conventions (`sysroot/`, `ostree -> sysroot/ostree`): (sysroot, tree).
fn arbor_sysroot(top: &Path) -> (PathBuf, PathBuf) {
    let tree = top.join("tree");
    os_tree(&tree, &[("hostname", "testos\n")]);
    // Mount points, and the merged-/usr links of a Debian tree (the
    // status test runs the host's programs in it).
    for d in ["sysroot", "var", "run", "boot", "proc", "dev", "mnt"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::os::unix::fs::symlink("sysroot/ostree", tree.join("ostree")).unwrap();
    for l in ["bin", "sbin", "lib", "lib64"] {
        std::os::unix::fs::symlink(format!("usr/{l}"), tree.join(l)).unwrap();
    }
    let sys = top.join("sys");
    run_ok(arbor().args(["admin", "init-fs"]).arg(&sys));
    run_ok(arbor().args(["admin", "os-init", "--sysroot", s(&sys), "testos"]));
    let repo = sys.join("ostree/repo");
    run_ok(
        arbor()
            .args([
                "commit",
                "--repo",
                s(&repo),
                "--branch=testos/stable",
                "--subject=v1",
            ])
            .arg(&tree),
    );
    deploy(&sys, &[]).unwrap();
    (sys, tree)
}

fn deploy(sys: &Path, env: &[(&str, &Path)]) -> Result<String, String> {
    let mut c = arbor();
    c.env("ARBOR_SYSROOT_DEBUG", "mutable-deployments");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c
        .args(["deploy", "--sysroot", s(sys), "--os", "testos"])
        .args(["--karg=root=LABEL=root", "--karg=rw", "testos/stable"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The default deployment's directory and its boot entry's options line.
fn default_entry(sys: &Path) -> (String, String) {
    let st = crate::sysroot::status_json(sys, None);
    let d = &st["deployments"][0];
    let dir = format!(
        "ostree/deploy/testos/deploy/{}.{}",
        d["checksum"].as_str().unwrap(),
        d["deployserial"]
    );
    let entries = sys.join("boot/loader/entries");
    let mut names: Vec<_> = std::fs::read_dir(&entries)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let text = std::fs::read_to_string(names.last().unwrap()).unwrap();
    let options = text
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .unwrap()
        .to_string();
    (dir, options)
}

/// The options of the boot entry whose `ostree=` resolves to `deployment`.
fn entry_options_for(sys: &Path, deployment: &str) -> String {
    let root = std::fs::File::open(sys).unwrap();
    for e in std::fs::read_dir(sys.join("boot/loader/entries")).unwrap() {
        let p = e.unwrap().path();
        if p.extension() != Some("conf".as_ref()) {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap();
        let options = text
            .lines()
            .find_map(|l| l.strip_prefix("options "))
            .unwrap();
        let karg = arbor_boot::find_karg(options, arbor_boot::OSTREE_KARG).unwrap();
        let d = arbor_boot::resolve_deployment(&root, karg).unwrap();
        if d.relpath == Path::new(deployment) {
            return options.to_string();
        }
    }
    panic!("no boot entry for {deployment}");
}

#[test]
fn prepare_root_boots_an_arbor_deployment() {
    if needs_root("prepare_root_boots_an_arbor_deployment") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (sys, _) = arbor_sysroot(t.path());
    let (deployment, options) = default_entry(&sys);
    let cmdline = format!("BOOT_IMAGE=/vmlinuz {options} quiet\n");
    let sections = run_in_boot_namespace(
        &sys,
        &cmdline,
        &[env!("CARGO_BIN_EXE_arbor"), "prepare-root"],
    )
    .unwrap();
    let e = Expect {
        sysroot: &sys,
        deployment: &deployment,
        stateroot: "testos",
        readonly: true,
    };
    let (root, booted) = check_prepared(&sections, &e);
    // What arbor status reads on the booted machine names this root.
    assert_eq!(
        arbor_sysroot::sysroot::backing_root_devino(&booted).unwrap(),
        Some(root)
    );
    // Without ostree= nothing is mounted and the error says why.
    let err = run_in_boot_namespace(
        &sys,
        "root=LABEL=root rw\n",
        &[env!("CARGO_BIN_EXE_arbor"), "prepare-root"],
    )
    .unwrap_err();
    assert!(
        err.contains("No ostree= argument on the kernel command line"),
        "{err}"
    );
}

#[test]
fn arbor_and_ostree_status_mark_the_deployment_booted_by_prepare_root() {
    if needs_root("arbor_and_ostree_status_mark_the_deployment_booted_by_prepare_root") {
        return;
    }
    crate::util::require_ostree();
    let t = tempfile::tempdir().unwrap();
    let (sys, _) = arbor_sysroot(t.path());
    // A second deployment, so that "booted" is not just "the only one";
    // the first (now index 1) is the one booted.
    let (booted_dir, _) = default_entry(&sys);
    deploy(&sys, &[]).unwrap();
    let options = entry_options_for(&sys, &booted_dir);
    let cmdline = t.path().join("cmdline");
    std::fs::write(&cmdline, format!("{options}\n")).unwrap();
    let arbor_bin = Path::new(env!("CARGO_BIN_EXE_arbor"));
    // After prepare-root, what initramfs-tools and systemd do: /run, /proc
    // and /dev into the new root; then the host's /usr (the test tree has
    // no programs) and arbor's build directory on /mnt, and both tools'
    // status run chrooted in the new root with --sysroot /.
    let script = r#"set -e
sys=$1 cmdline=$2 arbor=$3
mount --bind "$sys" "$sys"
mount -t tmpfs tmpfs /run
mount --bind "$cmdline" /proc/cmdline
"$arbor" prepare-root "$sys" >&2
mount --rbind /run "$sys/run"
mount -t proc proc "$sys/proc"
mount --rbind /dev "$sys/dev"
mount --bind /usr "$sys/usr"
mount --bind "$(dirname "$arbor")" "$sys/mnt"
echo "== ostree"
chroot "$sys" ostree admin status
echo "== arbor"
chroot "$sys" "/mnt/$(basename "$arbor")" status --json
# A deploy on the booted system, /sysroot read-only: done in the command's
# own namespace (no test switch), still read-only here afterwards.
export ARBOR_SYSROOT_DEBUG=mutable-deployments
chroot "$sys" "/mnt/$(basename "$arbor")" deploy --os testos --karg=rw --karg=arbor.test=after testos/stable >&2
echo "== after"
if touch "$sys/sysroot/probe" 2>/dev/null; then echo "sysroot writable"; else echo "sysroot read-only"; fi
# Another sysroot path than /, even the booted physical root itself: no
# namespace, the read-only mount is refused.
echo "== explicit"
chroot "$sys" "/mnt/$(basename "$arbor")" deploy --sysroot /sysroot --os testos testos/stable 2>&1 || echo "exit $?"
"#;
    let out = run_ok(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .args([&sys, &cmdline, arbor_bin]),
    );
    let (ostree_text, rest) = out
        .strip_prefix("== ostree\n")
        .and_then(|o| o.split_once("== arbor\n"))
        .unwrap_or_else(|| panic!("{out}"));
    let (arbor_json, after) = rest.split_once("== after\n").unwrap();
    let (after, explicit) = after.split_once("== explicit\n").unwrap();
    assert_eq!(after, "sysroot read-only\n", "{out}");
    assert!(
        explicit.contains("is mounted read-only") && explicit.ends_with("exit 1\n"),
        "deploy --sysroot /sysroot on the booted system: {explicit}"
    );
    let entries = std::fs::read_dir(sys.join("boot/loader/entries")).unwrap();
    let deployed = entries
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .any(|t| t.contains(" arbor.test=after"));
    assert!(
        deployed,
        "the deploy on the booted system wrote no boot entry"
    );
    eprintln!("{ostree_text}");
    let csum_serial = booted_dir.rsplit('/').next().unwrap();
    let booted_line = format!("* testos {csum_serial}");
    assert!(
        ostree_text.lines().any(|l| l.starts_with(&booted_line)),
        "ostree admin status does not mark {csum_serial} booted:\n{ostree_text}"
    );
    assert_eq!(ostree_text.matches("* ").count(), 1, "{ostree_text}");
    let st: serde_json::Value = serde_json::from_str(arbor_json).unwrap();
    let booted: Vec<_> = st["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["booted"] == true)
        .map(|d| format!("{}.{}", d["checksum"].as_str().unwrap(), d["deployserial"]))
        .collect();
    assert_eq!(booted, [csum_serial], "{arbor_json}");
}

#[test]
fn writing_commands_remount_a_read_only_sysroot_in_their_own_namespace() {
    if needs_root("writing_commands_remount_a_read_only_sysroot_in_their_own_namespace") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (sys, _) = arbor_sysroot(t.path());
    // In a test namespace: the sysroot read-only, as /sysroot on a booted
    // machine. A plain sysroot is still refused; one that is the booted
    // system's (here: named by the test switch) is deployed to, and the
    // namespace of the caller still sees it read-only afterwards.
    let script = r#"
set -u
sys=$1 arbor=$2
mount --bind "$sys" "$sys" && mount -o remount,bind,ro "$sys" || exit 2
deploy() { "$arbor" deploy --sysroot "$sys" --os testos --karg=root=LABEL=root --karg=rw testos/stable; }
export ARBOR_SYSROOT_DEBUG=mutable-deployments
if deploy 2>/tmp/err.$$; then echo "plain: deployed"; else echo "plain: $(cat /tmp/err.$$)"; fi
rm -f /tmp/err.$$
if ARBOR_TEST_PHYSICAL_ROOT="$sys" deploy >/dev/null; then echo "booted: deployed"; else echo "booted: failed"; fi
if touch "$sys/probe" 2>/dev/null; then echo "after: writable"; else echo "after: read-only"; fi
"$arbor" status --sysroot "$sys" --json
"#;
    let out = run_ok(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&sys)
            .arg(env!("CARGO_BIN_EXE_arbor")),
    );
    let (report, json) = out.split_at(out.find('{').unwrap());
    eprintln!("{report}");
    let lines: Vec<&str> = report.lines().collect();
    assert!(
        lines[0].starts_with("plain: ") && lines[0].contains("is mounted read-only"),
        "{report}"
    );
    assert_eq!(
        lines[1..],
        ["booted: deployed", "after: read-only"],
        "{report}"
    );
    let st: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(st["deployments"].as_array().unwrap().len(), 2, "{json}");
}

#[test]
fn repository_commands_remount_a_read_only_sysroot_in_their_own_namespace() {
    if needs_root("repository_commands_remount_a_read_only_sysroot_in_their_own_namespace") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (sys, _) = arbor_sysroot(t.path());
    // /ostree/repo of a booted machine is on the read-only /sysroot: the
    // repository commands that write (remote add, pull-local, refs
    // --create, init of a new one) get a private writable namespace, as the sysroot
    // commands do; without the booted machine's physical root they still
    // fail, and the caller's namespace stays read-only.
    let script = r#"
set -u
sys=$1 arbor=$2
src=$(mktemp -d) && "$arbor" init --repo "$src/r" --mode archive >/dev/null &&
  mkdir "$src/t" && echo x >"$src/t/f" &&
  c=$("$arbor" commit --repo "$src/r" -b other "$src/t") || exit 2
mount --bind "$sys" "$sys" && mount -o remount,bind,ro "$sys" || exit 2
r=$sys/ostree/repo
writes() {
  "$arbor" remote add --repo "$r" --no-gpg-verify host http://127.0.0.1:9/ &&
  "$arbor" pull-local --repo "$r" "$src/r" other >/dev/null &&
  "$arbor" refs --repo "$r" --create copied "$c" &&
  "$arbor" init --repo "$sys/ostree/new-repo" --mode bare
}
if writes 2>/tmp/err.$$; then echo "plain: written"; else echo "plain: $(tail -1 /tmp/err.$$)"; fi
rm -f /tmp/err.$$
if ARBOR_TEST_PHYSICAL_ROOT="$sys" writes; then echo "booted: written"; else echo "booted: failed"; fi
if touch "$sys/probe" 2>/dev/null; then echo "after: writable"; else echo "after: read-only"; fi
"$arbor" refs --repo "$r" copied
"$arbor" remote list --repo "$r"
test -f "$sys/ostree/new-repo/config" && echo "new-repo"
"#;
    let out = run_ok(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&sys)
            .arg(env!("CARGO_BIN_EXE_arbor")),
    );
    eprintln!("{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("plain: ") && lines[0].contains("Read-only file system"),
        "{out}"
    );
    assert_eq!(
        lines[1..],
        [
            "booted: written",
            "after: read-only",
            "copied",
            "host",
            "new-repo"
        ],
        "{out}"
    );
}

#[test]
fn non_root_users_and_checks_enter_no_namespace() {
    if needs_root("non_root_users_and_checks_enter_no_namespace") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (sys, _) = arbor_sysroot(t.path());
    // Readable by another user, as a real /sysroot is.
    run_ok(Command::new("chmod").arg("0755").arg(t.path()));
    // A booted system's read-only /sysroot (the test switch): a user who
    // is not root gets the real error (the lock), not a failed unshare;
    // `upgrade --check` only reads, so it works for them.
    let script = r#"
set -u
sys=$1 arbor=$2
mount --bind "$sys" "$sys" && mount -o remount,bind,ro "$sys" || exit 2
export ARBOR_TEST_PHYSICAL_ROOT="$sys" ARBOR_SYSROOT_DEBUG=mutable-deployments
user() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
echo "== deploy"
user "$arbor" deploy --sysroot "$sys" --os testos testos/stable 2>&1
echo "exit $?"
echo "== check"
user "$arbor" upgrade --sysroot "$sys" --os testos --check 2>&1
echo "exit $?"
"#;
    let out = run_ok(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&sys)
            .arg(env!("CARGO_BIN_EXE_arbor")),
    );
    eprintln!("{out}");
    let (deploy, check) = out
        .strip_prefix("== deploy\n")
        .and_then(|o| o.split_once("== check\n"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(!deploy.contains("unshare"), "{out}");
    assert!(
        deploy.contains("Locking the sysroot") && deploy.ends_with("exit 1\n"),
        "{out}"
    );
    assert_eq!(check, "No update available.\nexit 77\n", "{out}");
}

#[test]
fn a_read_only_filesystem_is_remounted_writable_in_the_namespace() {
    if needs_root("a_read_only_filesystem_is_remounted_writable_in_the_namespace") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (sys, _) = arbor_sysroot(t.path());
    let ro = t.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    // The physical root's filesystem itself read-only (a remount of the
    // mount alone leaves it so): the command remounts the filesystem in its
    // namespace, as ostree does; the caller's mount stays read-only.
    let script = r#"
set -u
sys=$1 arbor=$2 ro=$3
mount -t tmpfs tmpfs "$ro" && cp -a "$sys/." "$ro/" && mount -o remount,ro "$ro" || exit 2
export ARBOR_SYSROOT_DEBUG=mutable-deployments
if ARBOR_TEST_PHYSICAL_ROOT="$ro" "$arbor" deploy --sysroot "$ro" --os testos --karg=rw testos/stable >/dev/null; then
  echo "booted: deployed"
else
  echo "booted: failed"
fi
if touch "$ro/probe" 2>/dev/null; then echo "after: writable"; else echo "after: read-only"; fi
"$arbor" status --sysroot "$ro" --json
"#;
    let out = run_ok(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&sys)
            .arg(env!("CARGO_BIN_EXE_arbor"))
            .arg(&ro),
    );
    let (report, json) = out.split_at(out.find('{').unwrap_or(out.len()));
    assert_eq!(report, "booted: deployed\nafter: read-only\n", "{out}");
    let st: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(st["deployments"].as_array().unwrap().len(), 2, "{json}");
}

/// `prune --no-prune` (deletes nothing, takes the shared lock) works on
/// a read-only repository without a writable namespace (here: not the
/// booted system's, so none is made), and waits while a writer holds the
/// lock; `prune` itself is refused there.
#[test]
fn prune_no_prune_reads_a_read_only_repository_without_a_namespace() {
    if needs_root("prune_no_prune_reads_a_read_only_repository_without_a_namespace") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (sys, _) = arbor_sysroot(t.path());
    let repo = sys.join("ostree/repo");
    // An unreachable object for prune to find.
    run_ok(arbor().args(["refs", "--repo", s(&repo), "--create=gone", "testos/stable"]));
    let tree = t.path().join("t2");
    crate::sysroot::put(&tree.join("only-here"), "x\n");
    run_ok(
        arbor()
            .args(["commit", "--repo", s(&repo), "-b", "gone"])
            .arg(&tree),
    );
    run_ok(arbor().args(["refs", "--repo", s(&repo), "--delete", "gone"]));
    let script = r#"
set -u
sys=$1 arbor=$2
r=$sys/ostree/repo
# A writer's lock (POSIX locks and arbor's OFD locks exclude each other).
python3 -c 'import fcntl, sys, time
f = open(sys.argv[1], "r+"); fcntl.lockf(f, fcntl.LOCK_EX); print("held", flush=True); time.sleep(3)' \
  "$r/.lock" >/tmp/held.$$ &
until grep -q held /tmp/held.$$ 2>/dev/null; do sleep 0.05; done
mount --bind "$sys" "$sys" && mount -o remount,bind,ro "$sys" || exit 2
timeout 1 "$arbor" prune --repo "$r" --refs-only --no-prune >/dev/null 2>&1
echo "while a writer holds the lock: $?"
wait
rm -f /tmp/held.$$
run() { if "$@" >/tmp/out.$$ 2>&1; then echo "ok: $(tail -1 /tmp/out.$$)"; else echo "failed: $(tail -1 /tmp/out.$$)"; fi; }
run "$arbor" prune --repo "$sys/ostree/repo" --refs-only --no-prune
run "$arbor" prune --repo "$sys/ostree/repo" --refs-only
rm -f /tmp/out.$$
"#;
    let out = run_ok(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&sys)
            .arg(env!("CARGO_BIN_EXE_arbor")),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    // timeout's status: still waiting after a second.
    assert_eq!(lines[0], "while a writer holds the lock: 124", "{out}");
    assert!(lines[1].starts_with("ok: Would delete: "), "{out}");
    assert!(
        lines[2].starts_with("failed: ") && lines[2].contains("Read-only file system"),
        "{out}"
    );
    // Nothing was deleted: a real prune (writable now) still finds it.
    let pruned = run_ok(arbor().args(["prune", "--repo", s(&repo), "--refs-only"]));
    assert!(!pruned.contains("No unreachable objects"), "{pruned}");
}
