//! `arbor image build` keeps what is not the commit out of the images:
//! the builder's umask, a default ACL on the output directory, GRUB files
//! reached through a symbolic link on the build host, the work directory
//! of an interrupted build. Also trees that span several ext4 block
//! groups and a `--from-sysroot` source on another filesystem.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::image_build::{
    basic_tree, build_cmd, debugfs, dump_sysroot, extract, image_source, partitions, sha256, TS,
};
use crate::sysroot::put;
use crate::util::{arbor, dir_names, ostree, run_ok, s};

/// `cmd` run by `sh` under `umask 077`.
fn under_umask_077(cmd: &Command) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("umask 077 && exec \"$0\" \"$@\"")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// A build under umask 077 into a directory whose default ACL grants a
/// further uid everything gives the same bytes as a plain build, and the
/// image's repository stays one `ostree fsck` accepts.
#[test]
fn the_umask_and_a_default_acl_do_not_reach_the_images() {
    let (dir, repo, _) = image_source(basic_tree);
    let (plain, acl) = (dir.path().join("plain"), dir.path().join("acl"));
    run_ok(&mut build_cmd(&repo, "raw,erofs", &plain, &[]));
    std::fs::create_dir(&acl).unwrap();
    run_ok(
        Command::new("setfacl")
            .args(["-d", "-m", "u:4321:rwx,m::rwx"])
            .arg(&acl),
    );
    assert!(run_ok(Command::new("getfacl").arg(&acl)).contains("default:user:4321:rwx"));
    let text = run_ok(&mut under_umask_077(&build_cmd(
        &repo,
        "raw,erofs",
        &acl,
        &[],
    )));
    assert!(text.contains("raw: "), "{text}");
    for f in ["disk.raw", "root.erofs"] {
        assert_eq!(
            sha256(&plain.join(f)),
            sha256(&acl.join(f)),
            "{f}: the umask or the output's default ACL changed the image"
        );
    }
    let sys = dir.path().join("sys");
    dump_sysroot(&acl.join("disk.raw"), dir.path(), &sys);
    run_ok(ostree().args([&format!("--repo={}", s(&sys.join("ostree/repo"))), "fsck"]));
    let var = std::fs::metadata(sys.join("ostree/deploy/default/var")).unwrap();
    assert_eq!(var.permissions().mode() & 0o777, 0o755);
    let acls = run_ok(Command::new("getfacl").args(["-R", "-s", "-p"]).arg(&sys));
    assert!(acls.is_empty(), "files with ACLs in the image:\n{acls}");
    // The images themselves (a whole OS: /etc/shadow...) keep the
    // caller's umask, and so does an output directory the build makes.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&acl.join("disk.raw")), 0o600);
    assert_eq!(mode(&plain.join("disk.raw")), 0o644);
    let private = dir.path().join("private");
    run_ok(&mut under_umask_077(&build_cmd(
        &repo,
        "erofs",
        &private,
        &[],
    )));
    assert_eq!(
        (mode(&private), mode(&private.join("root.erofs"))),
        (0o700, 0o600)
    );
}

/// A build finds the work directory of a build that was killed (marked
/// as one) and removes it, and leaves alone a directory of the user's of
/// a similar name; a second build into a directory another build is
/// writing into fails at once and leaves it alone.
#[test]
fn leftovers_go_and_a_busy_output_is_refused() {
    use rustix::fs::{flock, FlockOperation};
    let (dir, repo, _) = image_source(basic_tree);
    let out = dir.path().join("out");
    put(
        &out.join(".arbor-image-Xk3j9a/sysroot/ostree/repo/config"),
        "x\n",
    );
    put(&out.join(".arbor-image-Xk3j9a/.arbor-image-work"), "");
    put(&out.join(".arbor-image-mine/notes.txt"), "mine\n");
    put(&out.join("keep.txt"), "mine\n");
    run_ok(&mut build_cmd(&repo, "erofs", &out, &[]));
    let now = [".arbor-image-mine", "keep.txt", "root.erofs"];
    assert_eq!(dir_names(&out), now);

    let held = std::fs::File::open(&out).unwrap();
    flock(&held, FlockOperation::LockExclusive).unwrap();
    let o = crate::util::run_fail(&mut build_cmd(&repo, "raw", &out, &[]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Another image build is writing into"), "{err}");
    assert_eq!(dir_names(&out), now);
}

/// A commit whose `usr/lib/grub` is a symbolic link to a directory of the
/// build host: the build does not follow it (it would copy the host's
/// files into the image), and uses the host's own GRUB instead. A commit
/// that ships GRUB's directory for real, with a symbolic link among its
/// modules: that one is left out.
#[test]
fn grub_files_are_not_read_through_a_symlink_in_the_commit() {
    let host = tempfile::tempdir().unwrap();
    let fake = host.path().join("grub");
    run_ok(Command::new("cp").arg("-r").arg("/usr/lib/grub").arg(&fake));
    put(&fake.join("i386-pc/secret.mod"), "HOST SECRET\n");
    let linked_dir = |t: &Path| std::os::unix::fs::symlink(&fake, t.join("usr/lib/grub")).unwrap();
    let linked_file = |t: &Path| {
        run_ok(
            Command::new("cp")
                .arg("-r")
                .arg("/usr/lib/grub")
                .arg(t.join("usr/lib/grub")),
        );
        std::os::unix::fs::symlink(
            fake.join("i386-pc/secret.mod"),
            t.join("usr/lib/grub/i386-pc/secret.mod"),
        )
        .unwrap();
    };
    for (what, link) in [
        ("directory", &linked_dir as &dyn Fn(&Path)),
        ("module", &linked_file),
    ] {
        let (dir, repo, _) = image_source(|t| {
            basic_tree(t);
            link(t);
        });
        let out = dir.path().join("out");
        run_ok(&mut build_cmd(&repo, "raw", &out, &[]));
        let (_, parts) = partitions(&out.join("disk.raw"));
        let boot = dir.path().join("boot.img");
        extract(&out.join("disk.raw"), &parts[1], &boot);
        let mods = debugfs(&boot, "ls /grub/i386-pc");
        assert!(mods.contains("normal.mod"), "{what}: {mods}");
        assert!(
            !mods.contains("secret.mod"),
            "{what}: a host file in the image: {mods}"
        );
    }
}

/// More inodes than one block group holds (8192 per 128 MiB group): the
/// inode-time pass reaches every group, and both filesystems stay clean.
#[test]
fn a_tree_over_several_block_groups() {
    let (dir, repo, c) = image_source(|t| {
        basic_tree(t);
        let d = t.join("usr/share/many");
        for i in 0..9000 {
            put(&d.join(format!("{}/f{i}", i % 50)), &format!("file {i}\n"));
        }
    });
    let out = dir.path().join("out");
    run_ok(&mut build_cmd(&repo, "raw", &out, &[]));
    let disk = out.join("disk.raw");
    let (_, parts) = partitions(&disk);
    let root = dir.path().join("root.img");
    extract(&disk, &parts[2], &root);
    run_ok(Command::new("e2fsck").arg("-fn").arg(&root));
    let sb = run_ok(Command::new("dumpe2fs").arg("-h").arg(&root));
    let per_group: u64 = sb
        .lines()
        .find_map(|l| l.strip_prefix("Inodes per group:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // mke2fs walks the tree in alphasort order: `9` is the last of the
    // directories, its files among the last inodes made.
    let deployment = format!("/ostree/deploy/default/deploy/{c}.0");
    let ls = debugfs(&root, &format!("ls -l {deployment}/usr/share/many/9"));
    let ino: u64 = ls
        .lines()
        .filter(|l| l.contains(" f"))
        .map(|l| l.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .max()
        .unwrap();
    assert!(ino > per_group, "inode {ino} is in the first group: {ls}");
    let stat = debugfs(&root, &format!("stat <{ino}>"));
    for f in ["ctime", "atime", "mtime", "crtime"] {
        assert!(
            stat.contains(&format!("{f}: 0x{TS:08x}:00000000")),
            "inode {ino} {f}: {stat}"
        );
    }
}

/// `--from-sysroot` with the output on another filesystem (a tmpfs in a
/// private mount namespace): hard links cannot cross it, so the tree is
/// copied, its hard links kept.
#[test]
fn from_sysroot_across_filesystems() {
    let (dir, repo, c) = image_source(basic_tree);
    let sys = crate::image_interop::ostree_sysroot(dir.path(), &repo);
    let (mnt, kept) = (dir.path().join("tmpfs"), dir.path().join("kept"));
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(&kept).unwrap();
    let build = {
        let mut b = arbor();
        b.args([
            "image",
            "build",
            "--from-sysroot",
            s(&sys),
            "--format",
            "raw",
        ])
        .arg("-o")
        .arg(mnt.join("out"));
        b
    };
    let script = format!(
        "set -e; mount -t tmpfs -o size=3g tmpfs {m}; \"$0\" \"$@\"; cp --sparse=always {m}/out/disk.raw {k}/",
        m = s(&mnt),
        k = s(&kept)
    );
    let text = run_ok(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .arg(build.get_program())
            .args(build.get_args()),
    );
    assert!(text.contains(&format!("Built {c}")), "{text}");
    let (_, parts) = partitions(&kept.join("disk.raw"));
    let root = dir.path().join("root.img");
    extract(&kept.join("disk.raw"), &parts[2], &root);
    run_ok(Command::new("e2fsck").arg("-fn").arg(&root));
    let tool = debugfs(
        &root,
        &format!("stat /ostree/deploy/testos/deploy/{c}.0/usr/bin/tool"),
    );
    assert!(tool.contains("Links: 2"), "hard link lost: {tool}");
    crate::sysroot::unseal_all(dir.path());
}

/// An existing image of the same name is replaced; where one of the
/// files cannot be (a directory of that name), the build fails before it
/// moves anything: the older images stay as they were.
#[test]
fn older_images_stay_when_publishing_fails() {
    let (dir, repo, _) = image_source(basic_tree);
    let out = dir.path().join("out");
    put(&out.join("disk.raw"), "an older image\n");
    std::fs::create_dir_all(out.join("root.erofs/mine")).unwrap();
    let o = crate::util::run_fail(&mut build_cmd(&repo, "raw,erofs", &out, &[]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("root.erofs exists and is not a regular file"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("disk.raw")).unwrap(),
        "an older image\n"
    );
    assert_eq!(dir_names(&out), ["disk.raw", "root.erofs"]);
    assert_eq!(dir_names(&out.join("root.erofs")), ["mine"]);
    std::fs::remove_dir_all(out.join("root.erofs")).unwrap();
    run_ok(&mut build_cmd(&repo, "raw,erofs", &out, &[]));
    assert!(std::fs::metadata(out.join("disk.raw")).unwrap().len() > 1 << 20);
}

/// A `--from-sysroot` source whose `boot/grub` is a symbolic link to a
/// directory of the build host: the build replaces it in its copy and
/// writes nothing there.
#[test]
fn from_sysroot_grub_symlink_is_not_followed() {
    let (dir, repo, _) = image_source(basic_tree);
    let sys = crate::image_interop::ostree_sysroot(dir.path(), &repo);
    let host = tempfile::tempdir().unwrap();
    put(&host.path().join("grub.cfg"), "the host's\n");
    std::os::unix::fs::symlink(host.path(), sys.join("boot/grub")).unwrap();
    let out = dir.path().join("out");
    run_ok(
        arbor()
            .args([
                "image",
                "build",
                "--from-sysroot",
                s(&sys),
                "--format",
                "raw",
            ])
            .arg("-o")
            .arg(&out),
    );
    assert_eq!(dir_names(host.path()), ["grub.cfg"]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("grub.cfg")).unwrap(),
        "the host's\n"
    );
    let (_, parts) = partitions(&out.join("disk.raw"));
    let boot = dir.path().join("boot.img");
    extract(&out.join("disk.raw"), &parts[1], &boot);
    assert!(debugfs(&boot, "cat /grub/grub.cfg").contains("loader/grub.cfg"));
    assert!(debugfs(&boot, "ls /grub/i386-pc").contains("normal.mod"));
    crate::sysroot::unseal_all(dir.path());
}
