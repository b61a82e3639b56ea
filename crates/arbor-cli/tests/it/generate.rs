//! Man pages and shell completions generated from the CLI definition
//! (`arbor generate`), and `dist/install.sh` laying out an installation.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{arbor, run_ok, s};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn man_pages_exist_for_each_subcommand_and_parse() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("man");
    run_ok(arbor().args(["generate", "man", s(&dir)]));
    for (page, about) in [
        ("arbor.1", "image-based, transactional OS updates"),
        (
            "arbor-deploy.1",
            "Deploy a commit as the new default boot entry",
        ),
        ("arbor-export.1", "Write a commit as a tar stream"),
        ("arbor-admin-init-fs.1", "arbor-admin-init-fs"),
        ("arbor-upgrade.1", "Pull the origin"),
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie \\n(.g"), "{page} is not roff");
        assert!(text.contains(".SH NAME"), "{page}");
        // roff writes `-` as `\-`.
        let plain = text.replace("\\-", "-");
        assert!(plain.contains(about), "{page} lacks {about:?}:\n{text}");
        // groff parses it without a warning.
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(dir.join(page))
            .output()
            .expect("groff (Debian's groff-base)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff on {page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The top page lists the subcommands; hidden ones get no page.
    let top = std::fs::read_to_string(dir.join("arbor.1")).unwrap();
    assert!(top.contains("arbor\\-deploy(1)"), "{top}");
    assert!(!dir.join("arbor-generate.1").exists());
    // man renders it.
    if have("man") {
        let out = run_ok(
            Command::new("man")
                .args(["-l", "-P", "cat"])
                .arg(dir.join("arbor-export.1"))
                .env("MANWIDTH", "80"),
        );
        assert!(out.contains("arbor-export"), "{out}");
    }
}

/// What bash's completion for `arbor` offers at the end of `words`.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let cword = words.len() - 1;
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let prog = format!(
        "source '{}'\n\
         COMP_WORDS=({})\nCOMP_CWORD={cword}\nCOMP_LINE='{line}'\nCOMP_POINT=${{#COMP_LINE}}\n\
         _arbor arbor '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        words[cword],
        words[cword.saturating_sub(1)],
    );
    let out = run_ok(Command::new("bash").args(["--norc", "-c", &prog]));
    out.lines().map(str::to_string).collect()
}

#[test]
fn completions_parse_and_bash_completes_subcommands() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("c");
    for shell in ["bash", "zsh", "fish"] {
        run_ok(arbor().args(["generate", "completions", shell, s(&dir)]));
    }
    let bash = dir.join("arbor");
    for f in ["arbor", "_arbor", "arbor.fish"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    run_ok(Command::new("bash").arg("-n").arg(&bash));
    assert_eq!(bash_complete(&bash, &["arbor", "dep"]), ["deploy"]);
    let sub = bash_complete(&bash, &["arbor", "ex"]);
    assert!(sub.contains(&"export".to_string()), "{sub:?}");
    assert!(sub.contains(&"extension".to_string()), "{sub:?}");
    let opts = bash_complete(&bash, &["arbor", "export", "--"]);
    assert!(opts.contains(&"--repo".to_string()), "{opts:?}");
    assert!(opts.contains(&"--output".to_string()), "{opts:?}");
    for (shell, file) in [("zsh", "_arbor"), ("fish", "arbor.fish")] {
        if have(shell) {
            run_ok(Command::new(shell).arg("-n").arg(dir.join(file)));
        } else {
            println!("{shell} not installed: {file} not parsed");
        }
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist")
}

/// Runs `install.sh` of the dist directory `dist` into `dest` (with a
/// stand-in for arbor-prepare-root).
fn install(dist: &Path, dest: &Path, prefix: Option<&str>) -> String {
    let mut c = Command::new(dist.join("install.sh"));
    c.arg(dest)
        .args(prefix)
        .env("ARBOR_BIN", env!("CARGO_BIN_EXE_arbor"))
        .env("ARBOR_PREPARE_ROOT_BIN", env!("CARGO_BIN_EXE_arbor"));
    run_ok(&mut c)
}

#[test]
fn install_sh_leaves_the_initramfs_files_out_without_prepare_root() {
    // Installed on an ordinary machine without arbor-prepare-root, the
    // hook would make every later update-initramfs fail: not installed.
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("dist");
    run_ok(Command::new("cp").arg("-a").arg(dist()).arg(&d));
    let dest = t.path().join("root");
    std::fs::create_dir(&dest).unwrap();
    let out = Command::new(d.join("install.sh"))
        .arg(&dest)
        .env("ARBOR_BIN", env!("CARGO_BIN_EXE_arbor"))
        .env_remove("ARBOR_PREPARE_ROOT_BIN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(dest.join("usr/bin/arbor").is_file());
    assert!(!dest.join("usr/share/initramfs-tools").exists());
    assert!(
        err.contains("initramfs-tools hook and script not installed"),
        "{err}"
    );
}

#[test]
fn install_sh_lays_out_binary_units_initramfs_files_man_pages_and_completions() {
    let t = tempfile::tempdir().unwrap();
    // A copy of dist/ with an initramfs-tools file of each kind, so the
    // test does not depend on which ones the tree has today.
    let d = t.path().join("dist");
    run_ok(Command::new("cp").arg("-a").arg(dist()).arg(&d));
    let hooks = d.join("initramfs-tools/hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    std::fs::write(
        hooks.join("test-hook"),
        "#!/bin/sh\nexec /usr/lib/arbor/arbor-prepare-root\n",
    )
    .unwrap();
    std::fs::set_permissions(
        hooks.join("test-hook"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(d.join("initramfs-tools/conf-test"), "X=1\n").unwrap();
    let dest = t.path().join("root");
    std::fs::create_dir(&dest).unwrap();
    let out = install(&d, &dest, None);
    assert!(out.contains("installed /usr/bin/arbor"), "{out}");
    let u = dest.join("usr");
    assert_eq!(mode(&u.join("bin/arbor")), 0o755);
    assert_eq!(
        std::fs::read(u.join("bin/arbor")).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_arbor")).unwrap()
    );
    for unit in std::fs::read_dir(dist().join("systemd")).unwrap() {
        let name = unit.unwrap().file_name();
        let p = u.join("lib/systemd/system").join(&name);
        assert_eq!(mode(&p), 0o644, "{name:?}");
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(dist().join("systemd").join(&name)).unwrap()
        );
    }
    let i = u.join("share/initramfs-tools");
    assert_eq!(mode(&i.join("hooks/test-hook")), 0o755);
    assert_eq!(mode(&i.join("conf-test")), 0o644);
    // Every file the real dist/initramfs-tools has, too.
    if let Ok(real) = std::fs::read_dir(dist().join("initramfs-tools/hooks")) {
        for h in real {
            assert!(i.join("hooks").join(h.unwrap().file_name()).is_file());
        }
    }
    for page in ["arbor.1", "arbor-deploy.1", "arbor-export.1"] {
        assert_eq!(mode(&u.join("share/man/man1").join(page)), 0o644, "{page}");
    }
    for f in [
        "share/bash-completion/completions/arbor",
        "share/zsh/vendor-completions/_arbor",
        "share/fish/vendor_completions.d/arbor.fish",
    ] {
        assert_eq!(mode(&u.join(f)), 0o644, "{f}");
    }
    // Another prefix: the units and initramfs files name it; the
    // initramfs files stay where initramfs-tools reads them.
    let dest2 = t.path().join("root2");
    std::fs::create_dir(&dest2).unwrap();
    install(&d, &dest2, Some("/usr/local"));
    let l = dest2.join("usr/local");
    assert!(l.join("bin/arbor").is_file());
    let unit = std::fs::read_to_string(l.join("lib/systemd/system/arbor-finalize-staged.service"))
        .unwrap();
    assert!(unit.contains("/usr/local/bin/arbor finalize"), "{unit}");
    let hook =
        std::fs::read_to_string(dest2.join("usr/share/initramfs-tools/hooks/test-hook")).unwrap();
    assert!(
        hook.contains("/usr/local/lib/arbor/arbor-prepare-root"),
        "{hook}"
    );
    assert!(l.join("share/zsh/site-functions/_arbor").is_file());
    // Bad arguments: a usage message, nothing installed.
    let r = Command::new(d.join("install.sh")).output().unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("usage"));
    let r = Command::new(d.join("install.sh"))
        .arg(t.path().join("missing"))
        .env("ARBOR_BIN", env!("CARGO_BIN_EXE_arbor"))
        .output()
        .unwrap();
    assert!(!r.status.success());
}

/// Which binaries `install.sh` takes: ARBOR_PREPARE_ROOT_BIN when set;
/// else the newer of target/release and target/debug of its checkout (a
/// stale release build does not win over a fresh debug one).
#[test]
fn install_sh_takes_the_named_or_the_newest_binary() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("dist");
    run_ok(Command::new("cp").arg("-a").arg(dist()).arg(&d));
    let exe = |p: &Path, text: &str| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let target = t.path().join("target");
    let (rel, dbg) = (
        target.join("release/arbor-prepare-root"),
        target.join("debug/arbor-prepare-root"),
    );
    exe(&rel, "#!/bin/sh\n# release\n");
    exe(&dbg, "#!/bin/sh\n# debug\n");
    let touch = |p: &Path, when: &str| run_ok(Command::new("touch").args(["-d", when]).arg(p));
    let installed = |dest: &str, env: Option<&Path>| {
        let dest = t.path().join(dest);
        std::fs::create_dir(&dest).unwrap();
        let mut c = Command::new(d.join("install.sh"));
        c.arg(&dest)
            .env("ARBOR_BIN", env!("CARGO_BIN_EXE_arbor"))
            .env_remove("ARBOR_PREPARE_ROOT_BIN");
        if let Some(p) = env {
            c.env("ARBOR_PREPARE_ROOT_BIN", p);
        }
        run_ok(&mut c);
        std::fs::read_to_string(dest.join("usr/lib/arbor/arbor-prepare-root")).unwrap()
    };
    touch(&rel, "2020-01-01");
    touch(&dbg, "2024-01-01");
    assert!(installed("a", None).contains("debug"));
    touch(&rel, "2025-01-01");
    assert!(installed("b", None).contains("release"));
    // Only a debug build.
    std::fs::remove_file(&rel).unwrap();
    assert!(installed("c", None).contains("debug"));
    // Named: that one, whatever is built.
    let named = t.path().join("named/arbor-prepare-root");
    exe(&named, "#!/bin/sh\n# named\n");
    assert!(installed("e", Some(&named)).contains("named"));
    assert_eq!(
        mode(&t.path().join("e/usr/lib/arbor/arbor-prepare-root")),
        0o755
    );
}
