//! `arbor quickstart [DIR]`: a self-contained tour. It generates a small
//! but realistic OS tree, commits two versions into an archive repository,
//! and runs the everyday commands, printing each as the user would type it.
//! Everything happens inside DIR; no root is needed.

use std::fmt::Write as _;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::cli::Opt;

/// Packages of the sample tree; each gets a binary, 8 libraries and docs.
const PACKAGES: &[&str] = &[
    "coreutils",
    "bash",
    "systemd",
    "openssh",
    "util-linux",
    "iproute2",
    "curl",
    "less",
    "nano",
    "procps",
    "grep",
    "sed",
    "tar",
    "gzip",
    "findutils",
    "shadow",
    "kmod",
    "dbus",
    "ca-certificates",
    "tzdata",
    "e2fsprogs",
    "mount",
    "login",
    "passwd",
    "hostname",
    "diffutils",
    "sudo",
    "rsync",
    "vim-tiny",
    "chrony",
];

fn write_file(root: &Path, rel: &str, content: &str, mode: u32) -> Result<()> {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&p, content).with_context(|| format!("Writing {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Generates the sample OS tree for `version` (1 or 2) in `root`.
pub fn make_tree(root: &Path, version: u32) -> Result<usize> {
    let mut n = 0;
    for d in [
        "usr/bin",
        "usr/lib",
        "usr/share/doc",
        "usr/etc",
        "var",
        "sysroot",
        "boot",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    for (i, pkg) in PACKAGES.iter().enumerate() {
        // v2 updates every seventh package.
        let rel = if version == 2 && i % 7 == 0 { 2 } else { 1 };
        let ver = format!("{}.{}.{rel}", 1 + i % 4, i % 7);
        let mut script = format!("#!/bin/sh\n# {pkg} {ver}\necho \"{pkg} version {ver}\"\n");
        for k in 0..(i % 5) {
            let _ = writeln!(script, "# option {k}");
        }
        write_file(root, &format!("usr/bin/{pkg}"), &script, 0o755)?;
        n += 1;
        for lib in 0..8 {
            let mut body = String::new();
            for line in 0..(40 + lib * 13 + i) {
                let _ = writeln!(
                    body,
                    "{pkg} lib{lib} v{ver} symbol_{line:04} = 0x{:08x}",
                    line * 2654435761usize % 0xffff_ffff
                );
            }
            write_file(
                root,
                &format!("usr/lib/{pkg}/lib{pkg}-{lib}.so"),
                &body,
                0o644,
            )?;
            n += 1;
        }
        for doc in ["README", "copyright"] {
            let text = format!("{pkg} {doc}\n");
            write_file(root, &format!("usr/share/doc/{pkg}/{doc}"), &text, 0o644)?;
        }
        let news = format!("{pkg} {ver}: bug fixes\n");
        write_file(root, &format!("usr/share/doc/{pkg}/NEWS"), &news, 0o644)?;
        n += 3;
    }
    // A (fake) kernel and initramfs where ostree and arbor look for them.
    for (name, text) in [
        ("vmlinuz", "demo kernel 6.1.0\n"),
        ("initramfs.img", "demo initramfs\n"),
    ] {
        write_file(
            root,
            &format!("usr/lib/modules/6.1.0-demo/{name}"),
            text,
            0o644,
        )?;
        n += 1;
    }
    let os_release = format!(
        "NAME=\"Arbor Demo OS\"\nVERSION_ID={version}\nID=arbor-demo\nSYSEXT_LEVEL=1\nPRETTY_NAME=\"Arbor Demo OS\"\n"
    );
    write_file(root, "usr/lib/os-release", &os_release, 0o644)?;
    write_file(root, "usr/etc/hostname", "arbor-demo\n", 0o644)?;
    write_file(
        root,
        "usr/etc/motd",
        &format!("Welcome to Arbor Demo OS {version}\n"),
        0o644,
    )?;
    write_file(
        root,
        "usr/etc/ssh/sshd_config",
        "PermitRootLogin no\nPasswordAuthentication no\n",
        0o600,
    )?;
    n += 4;
    if version == 2 {
        write_file(
            root,
            "usr/etc/arbor-demo/new-in-v2.conf",
            "feature=enabled\n",
            0o644,
        )?;
        n += 1;
    } else {
        write_file(
            root,
            "usr/share/doc/legacy-notes.txt",
            "removed in v2\n",
            0o644,
        )?;
        n += 1;
    }
    symlink("../usr/lib/os-release", root.join("usr/etc/os-release"))?;
    for (link, target) in [("bin", "usr/bin"), ("lib", "usr/lib"), ("sbin", "usr/bin")] {
        symlink(target, root.join(link))?;
    }
    symlink("sysroot/ostree", root.join("ostree"))?;
    n += 5;
    Ok(n)
}

/// Joins arguments, single-quoting those a shell would split.
fn shell_words(args: &[&str]) -> String {
    let quote = |a: &&str| {
        if !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=^:@".contains(&b))
        {
            a.to_string()
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    };
    args.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// Runs `args` as an `arbor` command, echoing it first like a shell would.
fn step(out: &mut dyn Write, comment: &str, args: &[&str]) -> Result<()> {
    writeln!(out, "\n# {comment}")?;
    writeln!(out, "$ arbor {}", shell_words(args))?;
    out.flush()?;
    let mut argv = vec!["arbor"];
    argv.extend_from_slice(args);
    let opt = Opt::try_parse_from(&argv)?;
    let code = crate::cmds::dispatch(opt, out)?;
    if code != std::process::ExitCode::SUCCESS {
        bail!("'arbor {}' failed", shell_words(args));
    }
    Ok(())
}

/// Runs `arbor drift ARGS`, which must exit with `want` (0: clean,
/// 1: drift found), and prints that exit status as a shell would show it.
fn drift_step(out: &mut dyn Write, comment: &str, args: &[&str], want: u8) -> Result<()> {
    writeln!(out, "\n# {comment}")?;
    writeln!(
        out,
        "$ arbor {}; echo \"exit status $?\"",
        shell_words(args)
    )?;
    out.flush()?;
    let mut argv = vec!["arbor"];
    argv.extend_from_slice(args);
    let code = crate::cmds::dispatch(Opt::try_parse_from(&argv)?, out)?;
    if code != std::process::ExitCode::from(want) {
        bail!("'arbor {}' did not exit with {want}", shell_words(args));
    }
    writeln!(out, "exit status {want}")?;
    Ok(())
}

/// The machine's declared configuration (a MachineConfig, as OpenShift
/// writes them): a sudoers drop-in, a unit enabled at boot, a user with an
/// ssh key and a kernel argument.
const BASE_CONFIG: &str = "\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 10-base
spec:
  kernelArguments: [quiet]
  config:
    ignition:
      version: 3.4.0
    storage:
      files:
        - path: /etc/sudoers.d/wheel
          mode: 0o440
          contents:
            source: data:,%25wheel%20ALL%3D(ALL)%20ALL%0A
    systemd:
      units:
        - name: hello.service
          enabled: true
          contents: |
            [Unit]
            Description=Say hello at boot
            [Service]
            Type=oneshot
            ExecStart=/usr/bin/echo hello
            [Install]
            WantedBy=multi-user.target
    passwd:
      users:
        - name: ops
          sshAuthorizedKeys:
            - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDemoKeyOnlyForTheQuickstart0000000000 ops@demo
";

/// The state checksum of the default deployment, from `status --json`.
fn default_state(sys: &str) -> Result<String> {
    let mut buf = Vec::new();
    let opt = Opt::try_parse_from(["arbor", "status", "--json", "--sysroot", sys])?;
    crate::cmds::dispatch(opt, &mut buf)?;
    let v: serde_json::Value = serde_json::from_slice(&buf)?;
    v["deployments"][0]["state"]
        .as_str()
        .map(str::to_string)
        .context("status --json has no state")
}

/// Declared configuration: render, apply, drift by hand, adopt, revert.
fn config_tour(dir: &Path, sys: &str, out: &mut dyn Write) -> Result<()> {
    let cfg = dir.join("config");
    std::fs::create_dir_all(&cfg)?;
    let base = cfg.join("10-base.yaml").to_string_lossy().into_owned();
    let adopted = cfg.join("50-adopted.ign").to_string_lossy().into_owned();
    std::fs::write(&base, BASE_CONFIG)?;
    writeln!(
        out,
        "\n# Declared configuration: the machine's config as a MachineConfig document\n$ cat {}",
        shell_words(&[&base])
    )?;
    write!(out, "{BASE_CONFIG}")?;
    step(
        out,
        "Render it: the canonical document and its name (same inputs, same name, on any machine)",
        &["config", "render", &base],
    )?;
    step(
        out,
        "What applying it would change, per path, unit and user (nothing is changed)",
        &["config", "apply", "--sysroot", sys, "--dry-run", &base],
    )?;
    step(
        out,
        "Apply it: a new deployment of the same base commit, /etc rebuilt from the OS defaults plus the config",
        &["config", "apply", "--sysroot", sys, &base],
    )?;
    let before = default_state(sys)?;
    step(
        out,
        "One checksum names the whole state: base commit, extensions, config, kernel arguments",
        &["status", "--sysroot", sys],
    )?;
    // The admin changes a file that nothing declares.
    let s = crate::sysroot_cmds::open_sysroot(Path::new(sys))?;
    let hostname = Path::new(sys)
        .join(s.deployments()[0].relpath())
        .join("etc/hostname");
    writeln!(
        out,
        "\n# The admin renames the machine by hand (nothing declares /etc/hostname)\n$ echo edge-42 > {}",
        shell_words(&[&hostname.to_string_lossy()])
    )?;
    std::fs::write(&hostname, "edge-42\n")?;
    drift_step(
        out,
        "Drift: everything on the machine that nothing declared (exit status 1: drift found)",
        &["drift", "--sysroot", sys, "--etc-only"],
        1,
    )?;
    drift_step(
        out,
        "Adopt it: write the drift as an Ignition file, to review and add to the config",
        &[
            "drift",
            "--sysroot",
            sys,
            "--etc-only",
            "--to-config",
            &adopted,
        ],
        1,
    )?;
    step(
        out,
        "Apply the config with the adopted file",
        &["config", "apply", "--sysroot", sys, &base, &adopted],
    )?;
    drift_step(
        out,
        "Nothing undeclared is left (exit status 0)",
        &["drift", "--sysroot", sys, "--etc-only"],
        0,
    )?;
    let after = default_state(sys)?;
    writeln!(
        out,
        "\n# The state checksum before and after adopting the hostname:\n#   before: {before}\n#   after:  {after}"
    )?;
    step(
        out,
        "Remove 10-base.yaml from the config: its sudoers file, unit, user, key and kernel argument revert to the OS defaults",
        &["config", "apply", "--sysroot", sys, &adopted],
    )?;
    let s = crate::sysroot_cmds::open_sysroot(Path::new(sys))?;
    let etc = Path::new(sys)
        .join(s.deployments()[0].relpath())
        .join("etc");
    let gone = [
        "sudoers.d/wheel",
        "systemd/system/hello.service",
        "ssh/authorized_keys.d/ops",
    ];
    for p in gone {
        if etc.join(p).exists() {
            bail!("/etc/{p} is still there after its removal from the config");
        }
    }
    writeln!(
        out,
        "\n# Gone from the new deployment's /etc: {}\n$ cat {}",
        gone.map(|p| format!("/etc/{p}")).join(", "),
        shell_words(&[&etc.join("hostname").to_string_lossy()])
    )?;
    write!(out, "{}", std::fs::read_to_string(etc.join("hostname"))?)?;
    Ok(())
}

/// The extension's ref in the served repository.
const EXT_BRANCH: &str = "demo/x86_64/extensions/demo-top";

/// Generates the sample extension in `root`: one tool, its unit, and the
/// extension-release file that ties it to the demo OS (any version with
/// `SYSEXT_LEVEL=1`).
pub fn make_extension(root: &Path) -> Result<()> {
    write_file(
        root,
        "usr/bin/demo-top",
        "#!/bin/sh\necho \"demo-top 1.0: all quiet\"\n",
        0o755,
    )?;
    write_file(
        root,
        "usr/lib/systemd/system/demo-top.service",
        "[Unit]\nDescription=Demo top\n\n[Service]\nExecStart=/usr/bin/demo-top\n\n\
         [Install]\nWantedBy=multi-user.target\n",
        0o644,
    )?;
    write_file(
        root,
        "usr/lib/extension-release.d/extension-release.demo-top",
        "ID=arbor-demo\nSYSEXT_LEVEL=1\n",
        0o644,
    )?;
    Ok(())
}

/// Extensions: publish one, add it to the machine, upgrade (it is
/// re-applied on the new base), roll back, remove it.
fn extension_tour(
    dir: &Path,
    repo: &str,
    sys: &str,
    sysrepo: &str,
    out: &mut dyn Write,
) -> Result<()> {
    let tree = dir.join("tree-demo-top");
    make_extension(&tree)?;
    let tree = tree.to_string_lossy().into_owned();
    let origin_ref = format!("origin:{EXT_BRANCH}");
    writeln!(
        out,
        "\n# Extensions: a tree published next to the OS (one tool and its unit, with an\n\
         # extension-release file naming the OS it fits), listed per machine, re-applied on every upgrade"
    )?;
    let steps: Steps<'_> = vec![
        (
            "Publish the extension on its own branch",
            vec![
                "commit", "--repo", repo, "-b", EXT_BRANCH, "-s", "demo-top 1.0", &tree,
            ],
        ),
        (
            "Update the summary",
            vec!["summary", "--repo", repo, "--update"],
        ),
        (
            "The machine fetches it",
            vec!["pull", "--repo", sysrepo, "origin", EXT_BRANCH],
        ),
        (
            "Add it: the base composed with the extension at the object level, deployed (the name is the ref's last component)",
            vec!["extension", "add", "--sysroot", sys, &origin_ref],
        ),
        (
            "What boots next: its base and its extensions",
            vec!["extension", "list", "--sysroot", sys],
        ),
        (
            "Status shows the base commit and each extension; the state checksum covers the list",
            vec!["status", "--sysroot", sys],
        ),
        (
            "Upgrade: version 2 is deployed with the extension composed on it again",
            vec!["upgrade", "--sysroot", sys],
        ),
        (
            "Status after the upgrade: the new default's base commit is version 2, the extension re-applied on it",
            vec!["status", "--sysroot", sys],
        ),
    ];
    for (comment, args) in steps {
        step(out, comment, &args)?;
    }
    let s = crate::sysroot_cmds::open_sysroot(Path::new(sys))?;
    let tool = Path::new(sys)
        .join(s.deployments()[0].relpath())
        .join("usr/bin/demo-top");
    writeln!(
        out,
        "\n# The tool is in the upgraded deployment\n$ cat {}",
        shell_words(&[&tool.to_string_lossy()])
    )?;
    write!(out, "{}", std::fs::read_to_string(&tool)?)?;
    let steps: Steps<'_> = vec![
        (
            "Roll back: version 1 with its extension list",
            vec!["rollback", "--sysroot", sys],
        ),
        (
            "Remove the extension: a deployment of the plain base, every file of the extension gone",
            vec!["extension", "remove", "--sysroot", sys, "demo-top"],
        ),
        ("Back to the plain base", vec!["status", "--sysroot", sys]),
    ];
    for (comment, args) in steps {
        step(out, comment, &args)?;
    }
    let s = crate::sysroot_cmds::open_sysroot(Path::new(sys))?;
    let root = Path::new(sys).join(s.deployments()[0].relpath());
    if root.join("usr/bin/demo-top").exists() {
        bail!("/usr/bin/demo-top is still there after the extension was removed");
    }
    Ok(())
}

/// The quickstart itself.
pub fn run(dir: &Path, out: &mut dyn Write) -> Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty; choose another DIR",
            dir.display()
        );
    }
    if dir.to_str().is_none() {
        bail!("{} is not valid UTF-8; choose another DIR", dir.display());
    }
    std::fs::create_dir_all(dir)?;
    let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
    let (repo, v1, v2, co) = (d("repo"), d("tree-v1"), d("tree-v2"), d("checkout-v2"));
    let n1 = make_tree(Path::new(&v1), 1)?;
    let n2 = make_tree(Path::new(&v2), 2)?;
    writeln!(out, "# arbor quickstart in {}", dir.display())?;
    writeln!(
        out,
        "# Generated two versions of a sample OS tree: {v1} ({n1} entries) and {v2} ({n2} entries)."
    )?;
    let (first, second) = tour(&repo, &v1, &v2, &co);
    for (comment, args) in first {
        step(out, comment, &args)?;
    }
    // Publish: serve the repository over HTTP; a machine's sysroot follows
    // it from version 1 on.
    let url = crate::serve::serve_background(Path::new(&repo), "127.0.0.1:0")?;
    writeln!(
        out,
        "\n# Serve the repository over HTTP (here in the background, on a free port)\n\
         $ arbor serve --repo {} --addr {}",
        shell_words(&[&repo]),
        url.trim_start_matches("http://").trim_end_matches('/')
    )?;
    let (sys, sysrepo) = (d("sysroot"), d("sysroot/ostree/repo"));
    // Deployments are sealed with `chattr +i` when run as root, as on a
    // real machine; the tour's sysroot is a throwaway that `rm -rf` must
    // be able to remove, so it is left mutable (see the README).
    std::env::set_var(
        crate::sysroot_cmds::SYSROOT_DEBUG_ENV,
        "mutable-deployments",
    );
    for (comment, args) in sysroot_tour_v1(&sys, &sysrepo, &url) {
        step(out, comment, &args)?;
    }
    // The admin changes a configuration file of the running system.
    let s = crate::sysroot_cmds::open_sysroot(Path::new(&sys))?;
    let v1_dir = Path::new(&sys).join(s.deployments()[0].relpath());
    let motd = v1_dir.join("etc/motd");
    let local = "Maintenance window: Sundays 02:00\n";
    writeln!(
        out,
        "\n# The admin edits /etc/motd on the machine (a local change)\n$ echo {} >> {}",
        shell_words(&[local.trim_end()]),
        shell_words(&[&motd.to_string_lossy()])
    )?;
    let mut text = std::fs::read_to_string(&motd)?;
    text.push_str(local);
    std::fs::write(&motd, text)?;
    for (comment, args) in second {
        step(out, comment, &args)?;
    }
    let client = d("client");
    for (comment, args) in pull_tour(&client, &url) {
        step(out, comment, &args)?;
    }
    for (comment, args) in sysroot_upgrade(&sys) {
        step(out, comment, &args)?;
    }
    let s = crate::sysroot_cmds::open_sysroot(Path::new(&sys))?;
    let merged = Path::new(&sys)
        .join(s.deployments()[0].relpath())
        .join("etc/motd");
    writeln!(
        out,
        "\n# The new deployment's /etc/motd: version 2's default was replaced by the\n\
         # admin's file (a locally changed file wins over new defaults; untouched ones follow them)\n\
         $ cat {}",
        shell_words(&[&merged.to_string_lossy()])
    )?;
    write!(out, "{}", std::fs::read_to_string(&merged)?)?;
    for (comment, args) in sysroot_rollback(&sys, &sysrepo) {
        step(out, comment, &args)?;
    }
    extension_tour(dir, &repo, &sys, &sysrepo, out)?;
    config_tour(dir, &sys, out)?;
    writeln!(
        out,
        "\n# Done. Everything is in {}; remove it when finished.",
        dir.display()
    )?;
    Ok(())
}

/// The machine: a sysroot in DIR deploying version 1 from the server.
fn sysroot_tour_v1<'a>(sys: &'a str, sysrepo: &'a str, url: &'a str) -> Steps<'a> {
    const BRANCH: &str = "origin:demo/x86_64/stable";
    vec![
        (
            "A machine's root filesystem, in a directory: boot/, ostree/repo, ...",
            vec!["admin", "init-fs", sys],
        ),
        (
            "A stateroot: where deployments of this OS live, with one shared /var",
            vec!["admin", "os-init", "--sysroot", sys, "demo"],
        ),
        (
            "The machine follows the served repository",
            vec![
                "remote",
                "add",
                "--repo",
                sysrepo,
                "--no-gpg-verify",
                "origin",
                url,
            ],
        ),
        (
            "Fetch version 1",
            vec!["pull", "--repo", sysrepo, "origin", "demo/x86_64/stable"],
        ),
        (
            "Deploy it: a hardlinked checkout, /etc from /usr/etc, a boot entry",
            vec![
                "deploy",
                "--sysroot",
                sys,
                "--os",
                "demo",
                "--karg=root=LABEL=demo",
                BRANCH,
            ],
        ),
        (
            "The machine's deployments",
            vec!["status", "--sysroot", sys],
        ),
    ]
}

/// After version 2 is published: check for it, preview and upgrade.
fn sysroot_upgrade(sys: &str) -> Steps<'_> {
    vec![
        (
            "Is there an update for the machine?",
            vec!["upgrade", "--sysroot", sys, "--check"],
        ),
        (
            "Download it without deploying",
            vec!["upgrade", "--sysroot", sys, "--download-only"],
        ),
        (
            "What will happen to /etc, per file (nothing is changed)",
            vec![
                "deploy",
                "--sysroot",
                sys,
                "--dry-run",
                "origin:demo/x86_64/stable",
            ],
        ),
        (
            "Upgrade: pull version 2, deploy it with /etc merged; it boots next",
            vec!["upgrade", "--sysroot", sys],
        ),
    ]
}

/// Status, rollback, status.
fn sysroot_rollback<'a>(sys: &'a str, sysrepo: &'a str) -> Steps<'a> {
    vec![
        (
            "Both deployments; version 2 is the default",
            vec!["status", "--sysroot", sys],
        ),
        (
            "Roll back: version 1 becomes the default again",
            vec!["rollback", "--sysroot", sys],
        ),
        (
            "The boot order after the rollback",
            vec!["status", "--sysroot", sys],
        ),
        (
            "The machine's repository is intact",
            vec!["fsck", "--repo", sysrepo],
        ),
    ]
}

/// The second part: a client repository pulling from the served one.
fn pull_tour<'a>(client: &'a str, url: &'a str) -> Steps<'a> {
    vec![
        (
            "A client repository (bare-user: files stored as they are checked out)",
            vec!["init", "--repo", client, "--mode", "bare-user"],
        ),
        (
            "Point it at the server (a real deployment would verify ed25519 signatures: --sign-verify)",
            vec!["remote", "add", "--repo", client, "--no-gpg-verify", "origin", url],
        ),
        (
            "The refs the server offers (from its summary)",
            vec!["remote", "refs", "--repo", client, "origin"],
        ),
        (
            "How much would a pull fetch? (only metadata is read, nothing is written)",
            vec!["pull", "--repo", client, "--dry-run", "origin", "demo/x86_64/stable"],
        ),
        (
            "Pull version 2 with its parent; every object is verified before it is stored",
            vec!["pull", "--repo", client, "--depth=1", "origin", "demo/x86_64/stable"],
        ),
        (
            "The client has the same history, under origin:",
            vec!["log", "--repo", client, "origin:demo/x86_64/stable"],
        ),
        (
            "Pulling again fetches nothing new",
            vec!["pull", "--repo", client, "origin", "demo/x86_64/stable"],
        ),
        ("Verify the client repository", vec!["fsck", "--repo", client]),
    ]
}

/// A tour step: the comment printed before it, and the arguments.
type Steps<'a> = Vec<(&'static str, Vec<&'a str>)>;

/// The repository tour: before serving (version 1 and its summary), and
/// after (version 2 and the everyday commands).
fn tour<'a>(repo: &'a str, v1: &'a str, v2: &'a str, co: &'a str) -> (Steps<'a>, Steps<'a>) {
    const BRANCH: &str = "demo/x86_64/stable";
    const PREVIOUS: &str = "demo/x86_64/stable^";
    let first = vec![
        (
            "Create an archive repository (the format served over HTTP)",
            vec!["init", "--repo", repo, "--mode", "archive"],
        ),
        (
            "Commit version 1",
            vec![
                "commit",
                "--repo",
                repo,
                "-b",
                BRANCH,
                "-s",
                "Demo OS 1",
                "--add-metadata-string",
                "version=1",
                v1,
            ],
        ),
        (
            "Publish a summary: the list of refs that clients read first",
            vec!["summary", "--repo", repo, "--update"],
        ),
    ];
    let second = vec![
        (
            "Commit version 2 on the same branch (its parent is version 1)",
            vec![
                "commit",
                "--repo",
                repo,
                "-b",
                BRANCH,
                "-s",
                "Demo OS 2",
                "--add-metadata-string",
                "version=2",
                v2,
            ],
        ),
        (
            "Update the summary: clients now see version 2",
            vec!["summary", "--repo", repo, "--update"],
        ),
        ("The branch history", vec!["log", "--repo", repo, BRANCH]),
        (
            "What changed from version 1 to version 2",
            vec!["diff", "--repo", repo, PREVIOUS, BRANCH],
        ),
        (
            "The default configuration shipped in /usr/etc",
            vec!["ls", "--repo", repo, "-R", BRANCH, "/usr/etc"],
        ),
        (
            "Read a file straight from the repository",
            vec!["cat", "--repo", repo, BRANCH, "/usr/lib/os-release"],
        ),
        (
            "Check out version 2",
            vec!["checkout", "--repo", repo, "-U", BRANCH, co],
        ),
        (
            "Verify every object in the repository",
            vec!["fsck", "--repo", repo],
        ),
    ];
    (first, second)
}
