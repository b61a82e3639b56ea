//! `arbor agent config` and `arbor health check` on a directory laid out
//! as a machine's root.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::util::{arbor, run_ok, s};

fn put(root: &Path, rel: &str, text: &str, mode: u32) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn agent_config_reads_fragments_and_names_bad_keys() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let out = run_ok(arbor().args(["agent", "config", "--root", s(r)]));
    assert!(
        out.contains("the defaults") && out.contains("strategy: immediate"),
        "{out}"
    );
    put(r, "usr/lib/arbor/agent.d/10-os.toml", "[updates]\nstrategy = \"periodic\"\n[[updates.periodic.window]]\ndays = [\"Sat\"]\nstart_time = \"03:00\"\nlength_minutes = 45\n", 0o644);
    put(
        r,
        "etc/arbor/agent.toml",
        "[updates.periodic]\ntime_zone = \"Europe/Berlin\"\n[identity]\ngroup = \"web\"\n",
        0o644,
    );
    let out = run_ok(arbor().args(["agent", "config", "--root", s(r)]));
    assert!(out.contains("group: web"), "{out}");
    assert!(
        out.contains("strategy: periodic, time zone Europe/Berlin"),
        "{out}"
    );
    assert!(
        out.contains("window: Saturday at 03:00 for 45 min"),
        "{out}"
    );
    put(
        r,
        "etc/arbor/agent.d/50-typo.toml",
        "[updates.periodic]\ntime_zon = \"UTC\"\n",
        0o644,
    );
    let o = arbor()
        .args(["agent", "config", "--root", s(r)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("50-typo.toml") && err.contains("updates.periodic.time_zon: unknown key"),
        "{err}"
    );
}

#[test]
fn health_check_exit_status_and_report() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    put(
        r,
        "usr/lib/arbor/health.d/required.d/10-net",
        "#!/bin/sh\necho up\n",
        0o755,
    );
    put(
        r,
        "etc/arbor/health.d/wanted.d/20-extra",
        "#!/bin/sh\necho missing >&2\nexit 1\n",
        0o755,
    );
    let out = run_ok(arbor().args(["health", "check", "--root", s(r)]));
    assert!(out.contains("required 10-net: passed"), "{out}");
    assert!(
        out.contains("wanted 20-extra: FAILED") && out.contains("  | missing"),
        "{out}"
    );
    assert!(
        out.trim_end()
            .ends_with("healthy: every required check passed"),
        "{out}"
    );
    put(
        r,
        "etc/arbor/health.d/required.d/30-app",
        "#!/bin/sh\necho app down\nexit 4\n",
        0o755,
    );
    let o = arbor()
        .args(["health", "check", "--root", s(r), "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["healthy"], false);
    assert_eq!(j["checks"][1]["name"], "30-app");
    assert_eq!(j["checks"][1]["result"], "failed");
    assert_eq!(j["checks"][1]["output"], "app down\n");
}

/// The units of `dist/systemd`, enabled as images enable them, make no
/// ordering cycle with `multi-user.target` (systemd would drop a unit of
/// the cycle at boot: the agent, say).
#[test]
fn the_units_enabled_in_images_start_without_an_ordering_cycle() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("usr/lib/systemd/system");
    let wants = t.path().join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::create_dir_all(&wants).unwrap();
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/systemd");
    let mut n = 0;
    for e in std::fs::read_dir(&dist).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        std::fs::copy(&p, lib.join(&name)).unwrap();
        // mkdebian.sh enables every arbor unit in multi-user.target.
        std::os::unix::fs::symlink(lib.join(&name), wants.join(&name)).unwrap();
        n += 1;
    }
    assert!(
        n >= 4,
        "the agent, health, finalize and boot-complete units"
    );
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "multi-user.target"])
        .env(
            "SYSTEMD_UNIT_PATH",
            format!("{}:{}:", lib.display(), wants.parent().unwrap().display()),
        )
        .output()
        .expect("systemd-analyze (Debian package systemd, as .ci/run installs)");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("ordering cycle"), "{text}");
    assert!(!text.contains("deleted to break"), "{text}");
}
