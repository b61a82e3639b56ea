//! The update agent and the boot verdict on a sysroot fed by `arbor
//! serve`, with a booted deployment (`ARBOR_TEST_ROOT`): `agent run
//! --once` stages with the finalization locked and waits for its window,
//! reboots (a command the test names) with the finalization unlocked;
//! `health boot` finishes a GRUB fall-back (rollback, the release
//! remembered), which the agent then skips, and reboots an unhealthy
//! deployment only while it is on probation.

use std::path::{Path, PathBuf};

use arbor_sysroot::bootcount::{EnvBlock, GRUBENV, PROBATION_VAR};

use crate::sysroot::{booted_root, needs_root, os_tree, ostree_commit, status_json};
use crate::sysroot_ops::{machine, sys_arbor};
use crate::util::{arbor, ostree, run_ok, s};

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// `arbor SUBCOMMAND... --sysroot SYS --root BOOTED --reboot-command
/// "touch MARKER"`, booted in `booted`: its output and exit status.
fn on_machine(sub: &[&str], sys: &Path, booted: &str, marker: &Path) -> (String, i32) {
    let out = arbor()
        .args(sub)
        .arg("--sysroot")
        .arg(sys)
        .arg("--root")
        .arg(booted)
        .arg("--reboot-command")
        .arg(format!("touch {}", s(marker)))
        .env("ARBOR_TEST_ROOT", booted)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.code().unwrap_or(-1))
}

/// `agent run --once`: its configuration and health checks under
/// `booted`, rebooting by touching `marker`.
fn agent_once(sys: &Path, booted: &str, marker: &Path) -> (String, i32) {
    on_machine(&["agent", "run", "--once"], sys, booted, marker)
}

/// `health boot` (checks limited to 20 s each).
fn health_boot(sys: &Path, booted: &str, marker: &Path) -> (String, i32) {
    on_machine(&["health", "boot", "--timeout", "20"], sys, booted, marker)
}

fn state_dir(sys: &Path) -> PathBuf {
    sys.join("ostree/deploy/testos/var/lib/arbor/agent")
}

fn block(sys: &Path) -> EnvBlock {
    EnvBlock::parse(&std::fs::read(sys.join(GRUBENV)).unwrap()).unwrap()
}

#[test]
fn agent_stages_locked_waits_for_its_window_then_reboots() {
    if needs_root("agent_stages_locked_waits_for_its_window_then_reboots") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    let booted = booted_root(&sys, 0);
    let marker = m.src.dir.path().join("rebooted");
    // A window that is closed now: it opens in 12 hours, for a minute.
    let date = |fmt: &str| {
        run_ok(std::process::Command::new("date").args(["-u", "-d", "+12 hours", fmt]))
            .trim()
            .to_string()
    };
    let (hhmm, opening) = (date("+%H:%M"), date("+%a %Y-%m-%d %H:%M"));
    let conf = Path::new(&booted).join("etc/arbor/agent.toml");
    write(
        &conf,
        &format!(
            "[updates]\nstrategy = \"periodic\"\n[[updates.periodic.window]]\n\
             days = [\"Mon\", \"Tue\", \"Wed\", \"Thu\", \"Fri\", \"Sat\", \"Sun\"]\n\
             start_time = \"{}\"\nlength_minutes = 1\n",
            hhmm
        ),
    );
    // The health unit's verdict on this boot (no checks: healthy); the
    // agent reboots only once it is known.
    let (out, code) = health_boot(&sys, &booted, &marker);
    assert_eq!(code, 0, "{out}");
    // Up to date.
    let (out, code) = agent_once(&sys, &booted, &marker);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Idle: up to date"), "{out}");
    // A release: staged, finalization locked, waiting for the window.
    m.src.release_v2();
    let (out, code) = agent_once(&sys, &booted, &marker);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("WaitingForWindow: staged 2.0"), "{out}");
    assert!(
        out.contains(&format!("the maintenance window opening at {opening}")),
        "{out}"
    );
    assert!(!marker.exists(), "no reboot outside the window");
    assert!(sys.join("run/ostree/staged-deployment-locked").is_file());
    let v = status_json(&sys, Some(&booted));
    assert_eq!(v["deployments"][0]["staged"], true);
    assert_eq!(v["deployments"][0]["checksum"], m.src.v2.as_str());
    assert_eq!(v["agent"]["state"]["phase"], "waiting-for-window");
    assert_eq!(v["agent"]["state"]["staged"]["checksum"], m.src.v2.as_str());
    let human = run_ok(sys_arbor(&sys, &["status"]).env("ARBOR_TEST_ROOT", &booted));
    assert!(
        human.contains("Agent: waiting-for-window (periodic)"),
        "{human}"
    );
    assert!(human.contains("    Staged: 2.0 ("), "{human}");
    assert!(
        human.contains(&format!(
            "    WaitingFor: the maintenance window opening at {opening} (UTC)"
        )),
        "{human}"
    );
    assert!(
        human.contains("    LastCheck: ") && human.contains(": staged 2.0 ("),
        "{human}"
    );
    // The state file, as monitoring reads it.
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir(&sys).join("state.json")).unwrap())
            .unwrap();
    assert_eq!(st["strategy"], "periodic");
    assert!(st["last_check"].as_str().unwrap().ends_with('Z'));
    // A shutdown now leaves it staged and unfinished.
    let out = run_ok(sys_arbor(&sys, &["finalize"]).env("ARBOR_TEST_ROOT", &booted));
    assert!(out.contains("locked"), "{out}");
    // The window is open (the strategy says immediate now): the agent
    // unlocks the finalization and reboots.
    write(&conf, "[updates]\nstrategy = \"immediate\"\n");
    let (out, code) = agent_once(&sys, &booted, &marker);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Rebooting"), "{out}");
    assert!(marker.exists(), "the reboot command ran");
    assert!(!sys.join("run/ostree/staged-deployment-locked").exists());
    let out = run_ok(sys_arbor(&sys, &["finalize"]).env("ARBOR_TEST_ROOT", &booted));
    assert!(out.contains("Finalized"), "{out}");
    // A configuration error is reported with its file and key.
    write(&conf, "[updates]\nstrategy = \"sometimes\"\n");
    let (out, code) = agent_once(&sys, &booted, &marker);
    assert_ne!(code, 0);
    assert!(
        out.contains("agent.toml") && out.contains("strategy"),
        "{out}"
    );
}

#[test]
fn health_boot_finishes_a_fall_back_and_the_agent_skips_that_release() {
    if needs_root("health_boot_finishes_a_fall_back_and_the_agent_skips_that_release") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    let v1_root = booted_root(&sys, 0);
    let marker = m.src.dir.path().join("rebooted");
    write(&sys.join(GRUBENV), "");
    std::fs::write(sys.join(GRUBENV), EnvBlock::default().encode().unwrap()).unwrap();
    write(
        &Path::new(&v1_root).join("etc/arbor/agent.toml"),
        "[updates]\nstrategy = \"immediate\"\n",
    );
    let (out, code) = health_boot(&sys, &v1_root, &marker);
    assert_eq!(code, 0, "{out}");
    // A pinned deployment ahead of the booted one: the fall-back and the
    // rollback must still be about the booted deployment.
    run_ok(sys_arbor(&sys, &["deploy", "--retain", &m.src.v1]).env("ARBOR_TEST_ROOT", &v1_root));
    run_ok(sys_arbor(&sys, &["pin", "0"]).env("ARBOR_TEST_ROOT", &v1_root));
    let v = status_json(&sys, Some(&v1_root));
    assert_eq!(v["deployments"][1]["booted"], true);
    assert_eq!(v["deployments"][0]["pinned"], true);
    // The agent stages v2 and "reboots"; the shutdown finalizes it. Not
    // on probation: nothing in v2 enables the health checks' unit.
    m.src.release_v2();
    let (out, _) = agent_once(&sys, &v1_root, &marker);
    assert!(out.contains("Rebooting"), "{out}");
    run_ok(sys_arbor(&sys, &["finalize"]).env("ARBOR_TEST_ROOT", &v1_root));
    assert_eq!(block(&sys).get("boot_counter"), None);
    run_ok(sys_arbor(&sys, &["undeploy", "0"]).env("ARBOR_TEST_ROOT", &v1_root));
    // The admin enables the unit (in v1's /etc, carried into v2's by the
    // merge): the next finalization puts v2 on probation.
    let wants = Path::new(&v1_root).join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/system/arbor-health.service",
        wants.join("arbor-health.service"),
    )
    .unwrap();
    std::fs::remove_file(&marker).unwrap();
    let (out, _) = agent_once(&sys, &v1_root, &marker);
    assert!(out.contains("Rebooting"), "{out}");
    run_ok(sys_arbor(&sys, &["finalize"]).env("ARBOR_TEST_ROOT", &v1_root));
    let armed = block(&sys);
    assert_eq!(armed.get("boot_counter"), Some("3"));
    let token = armed.get(PROBATION_VAR).unwrap().to_string();
    assert!(token.starts_with(&format!("{}.0-", m.src.v2)), "{token}");
    assert_eq!(
        std::fs::read_to_string(sys.join("boot/loader/probation")).unwrap(),
        token
    );
    // GRUB's entry 1 is the booted deployment, the pinned one after it.
    let v = status_json(&sys, Some(&v1_root));
    assert_eq!(v["deployments"][0]["checksum"], m.src.v2.as_str());
    assert_eq!(v["deployments"][1]["booted"], true);
    assert_eq!(v["deployments"][2]["pinned"], true);
    // v2 never boots well; GRUB counts down and falls back to v1 (what
    // the GRUB test shows for real): the block says -1, v1 is booted.
    let mut env = block(&sys);
    env.set("boot_counter", "-1");
    std::fs::write(sys.join(GRUBENV), env.encode().unwrap()).unwrap();
    let v = status_json(&sys, Some(&v1_root));
    assert_eq!(v["deployments"][0]["checksum"], m.src.v2.as_str());
    assert_eq!(v["agent"]["boot_counter"], "fell-back");
    let (out, code) = health_boot(&sys, &v1_root, &marker);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("2.0 (") && out.contains("is rolled back"),
        "{out}"
    );
    // v1 (the booted one, not the pinned one) is the default again, and
    // the block is cleared.
    let v = status_json(&sys, Some(&v1_root));
    assert_eq!(v["deployments"][0]["checksum"], m.src.v1.as_str());
    assert_eq!(v["deployments"][0]["booted"], true);
    assert_eq!(v["deployments"][1]["checksum"], m.src.v2.as_str());
    assert_eq!(v["deployments"][2]["pinned"], true);
    assert_eq!(v["agent"]["rolled_back"][0]["checksum"], m.src.v2.as_str());
    let env = block(&sys);
    assert_eq!(
        (env.get("boot_counter"), env.get("boot_success")),
        (None, Some("1"))
    );
    let verdict: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sys.join("run/arbor/health.json")).unwrap()).unwrap();
    assert_eq!(verdict["healthy"], true);
    // ostree agrees on the order.
    let ost = run_ok(ostree().args(["admin", "status", &format!("--sysroot={}", s(&sys))]));
    let first = ost.lines().find(|l| l.contains("testos ")).unwrap();
    assert!(first.contains(&m.src.v1), "{ost}");
    // The agent skips v2 from now on.
    std::fs::remove_file(&marker).unwrap();
    let (out, _) = agent_once(&sys, &v1_root, &marker);
    assert!(
        out.contains("skipped 2.0 (") && out.contains("rolled back"),
        "{out}"
    );
    assert!(!marker.exists());
    let v = status_json(&sys, Some(&v1_root));
    assert!(v["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["staged"] == false));

    // An unhealthy boot reboots only while on probation.
    let check = Path::new(&v1_root).join("etc/arbor/health.d/required.d/50-fails");
    write(
        &check,
        "#!/bin/sh\necho 'the service did not start'\nexit 1\n",
    );
    run_ok(std::process::Command::new("chmod").arg("755").arg(&check));
    let (out, code) = health_boot(&sys, &v1_root, &marker);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("UNHEALTHY"), "{out}");
    assert!(!marker.exists(), "not on probation: no reboot");
    let mut env = block(&sys);
    env.set("boot_counter", "1");
    env.set("boot_success", "0");
    // A probation whose token is not the active menu's is over: still no
    // reboot. (The rollback's switch wrote a menu without one.)
    assert!(!sys.join("boot/loader/probation").exists());
    env.set(PROBATION_VAR, &token);
    std::fs::write(sys.join(GRUBENV), env.encode().unwrap()).unwrap();
    let (out, code) = health_boot(&sys, &v1_root, &marker);
    assert_eq!(code, 1, "{out}");
    assert!(!marker.exists(), "a stale probation: no reboot");
    // A probation of the active menu (as a finalization makes it).
    std::fs::write(sys.join("boot/loader/probation"), "T1").unwrap();
    env.set(PROBATION_VAR, "T1");
    std::fs::write(sys.join(GRUBENV), env.encode().unwrap()).unwrap();
    let (out, code) = health_boot(&sys, &v1_root, &marker);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("on probation: rebooting"), "{out}");
    assert!(marker.exists(), "rebooted");
    assert_eq!(
        block(&sys).get("boot_counter"),
        Some("1"),
        "the block is GRUB's to count"
    );
    let verdict: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sys.join("run/arbor/health.json")).unwrap()).unwrap();
    assert_eq!(verdict["healthy"], false);
    assert!(verdict["failed"][0].as_str().unwrap().contains("50-fails"));
    std::fs::remove_file(&check).unwrap();

    // A newer release is taken as usual.
    let t3 = m.src.dir.path().join("tree3");
    os_tree(&t3, &[("os-release", "ID=testos\nVERSION_ID=3\n")]);
    let v3 = ostree_commit(&m.src.repo, &t3, "3.0", "1577923300");
    run_ok(ostree().args(["summary", "-u", &format!("--repo={}", s(&m.src.repo))]));
    std::fs::remove_file(&marker).unwrap();
    let (out, _) = agent_once(&sys, &v1_root, &marker);
    assert!(out.contains("Rebooting"), "{out}");
    let v = status_json(&sys, Some(&v1_root));
    assert_eq!(v["deployments"][0]["checksum"], v3.as_str());
    assert_eq!(v["deployments"][0]["staged"], true);
}

/// The agent's configuration comes from the declared configuration like
/// any file: applied, read by `agent config` in the new deployment,
/// checked (an error names the file and the key), and reverted to the
/// defaults when the declaration is removed.
#[test]
fn the_agent_configuration_comes_from_the_declared_configuration() {
    use crate::config_apply::{file, ign, root_of, Cfg};
    if needs_root("the_agent_configuration_comes_from_the_declared_configuration") {
        return;
    }
    let c = Cfg::new();
    let agent_config = |root: &Path| {
        arbor()
            .args(["agent", "config", "--root"])
            .arg(root)
            .output()
            .unwrap()
    };
    let toml = "[identity]\ngroup = \"workers\"\n[updates]\nstrategy = \"periodic\"\n\
                [[updates.periodic.window]]\ndays = [\"Sat\", \"Sun\"]\n\
                start_time = \"23:00\"\nlength_minutes = 90\n";
    let doc = |text: &str| {
        ign(serde_json::json!({ "storage": { "files": [file("/etc/arbor/agent.toml", text)] } }))
    };
    c.apply(&[("agent.ign", doc(toml))]);
    let out = agent_config(&root_of(&c.sys, 0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("group: workers"), "{text}");
    assert!(text.contains("strategy: periodic, time zone UTC"), "{text}");
    assert!(
        text.contains("window: Saturday, Sunday at 23:00 for 90 min"),
        "{text}"
    );
    // A declared mistake is named with its file and key.
    c.apply(&[(
        "agent.ign",
        doc(
            "[updates]\nstrategy = \"periodic\"\n[[updates.periodic.window]]\n\
             days = [\"Sat\"]\nstart_time = \"25:00\"\nlength_minutes = 90\n",
        ),
    )]);
    let out = agent_config(&root_of(&c.sys, 0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("etc/arbor/agent.toml") && err.contains("start_time"),
        "{err}"
    );
    // Removed from the declaration: back to the defaults.
    c.apply(&[("agent.ign", ign(serde_json::json!({})))]);
    let root = root_of(&c.sys, 0);
    assert!(!root.join("etc/arbor/agent.toml").exists());
    let out = agent_config(&root);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("No configuration files: the defaults"),
        "{text}"
    );
    assert!(text.contains("strategy: immediate"), "{text}");
}

/// On a remote that requires ed25519 signatures, the agent stages only a
/// signed release: an unsigned one is refused by the pull (nothing
/// staged, the error in its state), the same release once signed is
/// staged.
#[test]
fn the_agent_pulls_only_signed_releases_from_a_verifying_remote() {
    use crate::sign::{PUBLIC, SECRET};
    if needs_root("the_agent_pulls_only_signed_releases_from_a_verifying_remote") {
        return;
    }
    let mut m = machine();
    let sys = m.sys.clone();
    let booted = booted_root(&sys, 0);
    let marker = m.src.dir.path().join("rebooted");
    // The remote now requires signatures by PUBLIC.
    let config = sys.join("ostree/repo/config");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "[remote \"origin\"]\n",
        &format!("[remote \"origin\"]\nverification-ed25519-key={PUBLIC}\nsign-verify=ed25519\n"),
    );
    std::fs::write(&config, text).unwrap();
    write(
        &Path::new(&booted).join("etc/arbor/agent.toml"),
        "[updates]\nstrategy = \"immediate\"\n",
    );
    let (out, code) = health_boot(&sys, &booted, &marker);
    assert_eq!(code, 0, "{out}");
    m.src.release_v2();
    let (out, _) = agent_once(&sys, &booted, &marker);
    assert!(out.contains("staging failed"), "{out}");
    assert!(out.contains("error: Staging the update"), "{out}");
    assert!(!marker.exists());
    let v = status_json(&sys, Some(&booted));
    assert!(v["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["staged"] == false));
    // Signed upstream: staged and rebooted into.
    run_ok(
        arbor()
            .args(["sign", "--repo"])
            .arg(&m.src.repo)
            .args([&m.src.v2, SECRET]),
    );
    let (out, _) = agent_once(&sys, &booted, &marker);
    assert!(out.contains("Rebooting"), "{out}");
    assert!(marker.exists());
    let v = status_json(&sys, Some(&booted));
    assert_eq!(v["deployments"][0]["checksum"], m.src.v2.as_str());
    assert_eq!(v["deployments"][0]["staged"], true);
}
