//! Automatic updates on machines that boot: images whose deployment
//! follows `host:vm/os` on a server of the host, with the agent's
//! configuration in their `/etc`. Nothing is typed into the machine but
//! commands that look (`cat`, `arbor status`, `journalctl`): the agent
//! stages, waits for its window or FleetLock slot, and reboots by itself;
//! GRUB counts the boots of a release whose health check fails, falls
//! back, and the health unit makes the rollback the default.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::harness::{sh, Vm};
use crate::{fixture, mkos, release_dir, serve, Server, BOOT, CMD};

/// The releases the agent tests publish beyond the fixture's v1 and v2,
/// built once into their own repository.
struct Releases {
    repo: PathBuf,
    /// Release 3: a required health check that always fails.
    bad: String,
    /// Release 4: good.
    good: String,
}

fn releases() -> &'static Releases {
    static R: OnceLock<Releases> = OnceLock::new();
    R.get_or_init(|| {
        let f = fixture();
        let repo = f.dir.join("agent-repo");
        let d3 = release_dir(&f.dir, "3");
        let check = d3.join("usr/lib/arbor/health.d/required.d/50-release-3-is-bad");
        std::fs::create_dir_all(check.parent().unwrap()).unwrap();
        std::fs::write(
            &check,
            "#!/bin/sh\necho 'release 3: the service this machine runs does not start'\nexit 1\n",
        )
        .unwrap();
        sh(Command::new("chmod").arg("755").arg(&check));
        let bad = mkos(&repo, "3", &d3);
        let good = mkos(&repo, "4", &release_dir(&f.dir, "4"));
        Releases { repo, bad, good }
    })
}

/// A machine whose image follows `host:vm/os` on its own server (holding
/// v1), with `agent_toml` as `/etc/arbor/agent.toml`.
struct AgentMachine {
    vm: Vm,
    served: PathBuf,
    _server: Server,
}

impl AgentMachine {
    fn new(name: &str, agent_toml: &str) -> AgentMachine {
        let f = fixture();
        let d = f.dir.join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let arbor = |args: &[&str]| sh(Command::new(&f.arbor).args(args));
        let p = |p: &Path| p.to_str().unwrap().to_string();
        // The server, with v1 on vm/os.
        let served = d.join("served");
        arbor(&["init", "--mode", "archive", "--repo", &p(&served)]);
        arbor(&["pull-local", "--repo", &p(&served), &p(&f.repo), &f.v1]);
        arbor(&["refs", "--repo", &p(&served), "--create", "vm/os", &f.v1]);
        // The agent's check reads the remote's refs from its summary.
        arbor(&["summary", "--repo", &p(&served), "--update"]);
        let (server, port) = serve(&f.arbor, &served);
        // A sysroot deployed from it (the host reaches it at 127.0.0.1),
        // the remote then named as the machine reaches it (10.0.2.2).
        let sys = d.join("sysroot");
        let repo = p(&sys.join("ostree/repo"));
        arbor(&["admin", "init-fs", &p(&sys)]);
        arbor(&["admin", "os-init", "--sysroot", &p(&sys), "default"]);
        arbor(&[
            "remote",
            "add",
            "--repo",
            &repo,
            "--no-gpg-verify",
            "host",
            &format!("http://127.0.0.1:{port}"),
        ]);
        arbor(&["pull", "--repo", &repo, "host", "vm/os"]);
        arbor(&[
            "deploy",
            "--sysroot",
            &p(&sys),
            "--os",
            "default",
            "--karg=root=LABEL=root",
            "--karg=rw",
            "--karg=console=ttyS0,115200n8",
            "host:vm/os",
        ]);
        // The machine reaches the server at 10.0.2.2.
        let config = sys.join("ostree/repo/config");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains(&format!("http://127.0.0.1:{port}")), "{text}");
        std::fs::write(
            &config,
            text.replace(
                &format!("http://127.0.0.1:{port}"),
                &format!("http://10.0.2.2:{port}"),
            ),
        )
        .unwrap();
        let etc = sys
            .join("ostree/deploy/default/deploy")
            .join(format!("{}.0", f.v1))
            .join("etc/arbor");
        // The deployment root is immutable, its /etc is not.
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("agent.toml"), agent_toml).unwrap();
        let images = d.join("images");
        sh(Command::new(&f.arbor)
            .args(["image", "build", "--format", "qcow2", "--from-sysroot"])
            .arg(&sys)
            .arg("-o")
            .arg(&images));
        let _ = Command::new("chattr").args(["-R", "-i"]).arg(&sys).status();
        let _ = std::fs::remove_dir_all(&sys);
        let vm = Vm::new(name, &d, &images.join("disk.qcow2"), &f.kernel);
        AgentMachine {
            vm,
            served,
            _server: server,
        }
    }

    /// Publishes `commit` (from `from`) as the new `vm/os`.
    fn publish(&self, from: &Path, commit: &str, what: &str) {
        let f = fixture();
        let served = self.served.to_str().unwrap();
        sh(Command::new(&f.arbor)
            .args(["pull-local", "--repo", served])
            .arg(from)
            .arg(commit));
        sh(Command::new(&f.arbor).args(["refs", "--repo", served, "--delete", "vm/os"]));
        sh(Command::new(&f.arbor).args(["refs", "--repo", served, "--create", "vm/os", commit]));
        sh(Command::new(&f.arbor).args(["summary", "--repo", served, "--update"]));
        self.vm
            .say(&format!("host: published {what} {commit} on vm/os"));
    }

    /// The agent's state file, read in the machine.
    fn state(&mut self) -> serde_json::Value {
        let (st, out) = self.vm.run("cat /var/lib/arbor/agent/state.json", CMD);
        if st != 0 {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&out).unwrap_or(serde_json::Value::Null)
    }

    /// Polls the state file until `pred` holds (or fails after `timeout`).
    fn wait_state(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            let v = self.state();
            if pred(&v) {
                self.vm.say(&format!(
                    "agent state: {what} ({:.0} s): {}",
                    t0.elapsed().as_secs_f64(),
                    serde_json::to_string(&v).unwrap()
                ));
                return v;
            }
            assert!(
                t0.elapsed() < timeout,
                "agent state: no {what} within {timeout:?}; last: {v}"
            );
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    /// Prints the journal of the agent and the health checks (this boot).
    fn journal(&mut self) {
        // The harness prints the output.
        self.vm.ok(
            "SYSTEMD_COLORS=0 journalctl -b -o short-monotonic --no-pager -u arbor-health -u arbor-agent -u arbor-finalize-staged",
            CMD,
        );
    }
}

/// The GRUB menu entry a boot's console shows, and the boots that did not
/// come up healthy: waits for QEMU to end a boot the machine ends itself.
fn boot_until_it_reboots(vm: &mut Vm, timeout: Duration) -> String {
    vm.boot();
    vm.wait_exit(timeout);
    vm.console()
}

/// `HH:MM` and the instant of the next whole minute at least `min` from now.
fn minute_from_now(min: u64) -> (String, std::time::SystemTime) {
    let now = std::time::SystemTime::now();
    let secs = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 60 * min;
    let start = secs.div_ceil(60) * 60;
    let hhmm = format!("{:02}:{:02}", (start / 3600) % 24, (start / 60) % 60);
    (hhmm, std::time::UNIX_EPOCH + Duration::from_secs(start))
}

/// Issue 15, first VM point and the rollback point on one machine:
/// `periodic` with a window that opens 4 minutes after the image is
/// built. Release 2 is published; the agent stages it and waits for the
/// window, then reboots into it. Release 3 fails a required health check:
/// it boots 3 times (the default counter), GRUB falls back to release 2,
/// the health unit makes release 2 the default again and the agent skips
/// release 3. Release 4 is installed as usual.
#[test]
fn agent_updates_in_its_window_and_rolls_back_a_bad_release() {
    let f = fixture();
    let r = releases();
    let (hhmm, opens) = minute_from_now(4);
    let toml = format!(
        "[agent]\ncheck_interval_minutes = 1\n\
         [updates]\nstrategy = \"periodic\"\n\
         [[updates.periodic.window]]\n\
         days = [\"Mon\", \"Tue\", \"Wed\", \"Thu\", \"Fri\", \"Sat\", \"Sun\"]\n\
         start_time = \"{hhmm}\"\nlength_minutes = 60\n"
    );
    let mut m = AgentMachine::new("agent-window", &toml);
    m.vm.say(&format!("window: every day at {hhmm} UTC for 60 minutes"));
    m.publish(&f.repo, &f.v2, "release 2");
    m.vm.boot();
    let (booted, _) = m.vm.wait_booted(BOOT);
    assert_eq!(booted, f.v1);
    let st = m.wait_state("release 2 staged, waiting for the window", BOOT, |v| {
        v["phase"] == "waiting-for-window"
    });
    assert_eq!(st["staged"]["checksum"], f.v2.as_str());
    assert!(
        std::time::SystemTime::now() < opens,
        "staged only after the window opened: the test cannot tell the window mattered"
    );
    m.vm.ok("arbor status", CMD);
    m.journal();
    // Structured events in the journal, searchable by their fields.
    let ev = m.vm.ok(
        &format!(
            "journalctl -b --no-pager -o cat EVENT=staged CHECKSUM={}",
            f.v2
        ),
        CMD,
    );
    assert!(ev.contains("staged 2 ("), "{ev}");
    m.vm.say("waiting for the machine to reboot itself in its window");
    m.vm.wait_exit(BOOT + Duration::from_secs(300));
    let ended = std::time::SystemTime::now();
    assert!(
        ended >= opens,
        "the machine rebooted before its window opened"
    );
    m.vm.boot();
    let (booted, _) = m.vm.wait_booted(BOOT);
    assert_eq!(booted, f.v2, "the update is booted, with no command typed");
    assert_eq!(
        m.vm.ok("cat /usr/share/arbor-test/release", CMD).trim(),
        "2"
    );
    m.wait_state("checked after the reboot", BOOT, |v| {
        v["phase"] == "idle" && v["last_check_result"] == "up to date"
    });
    m.journal();

    // Release 3 fails its health check.
    m.publish(&r.repo, &r.bad, "release 3 (fails a required health check)");
    m.vm.wait_exit(BOOT);
    for n in 1..=3 {
        let console = boot_until_it_reboots(&mut m.vm, BOOT);
        assert!(
            console.contains(&format!("arbor-booted {}", r.bad)) || console.contains("UNHEALTHY"),
            "boot {n} of release 3 is not release 3"
        );
        assert!(
            console.contains("on probation: rebooting"),
            "boot {n} of release 3 did not reboot for its failed check"
        );
        m.vm.say(&format!("release 3, boot {n}: unhealthy, rebooted itself"));
    }
    m.vm.boot();
    let (booted, _) = m.vm.wait_booted(BOOT);
    assert_eq!(booted, f.v2, "GRUB fell back to release 2");
    // The health unit says so on the console.
    m.vm.wait_console("is rolled back", BOOT);
    let st = m.wait_state("release 3 skipped", BOOT, |v| {
        v["last_check_result"]
            .as_str()
            .is_some_and(|r| r.contains("rolled back"))
    });
    assert_eq!(st["rolled_back"][0]["checksum"], r.bad.as_str());
    let status = m.vm.ok("arbor status", CMD);
    let first = status.lines().find(|l| l.contains("default ")).unwrap();
    assert!(
        first.starts_with("* ") && first.contains(&f.v2),
        "release 2 is booted and the default:\n{status}"
    );
    assert!(
        status.contains(&format!("RolledBack: 3 ({})", r.bad)),
        "{status}"
    );
    m.journal();

    // Release 4 is taken as usual.
    m.publish(&r.repo, &r.good, "release 4");
    m.vm.wait_exit(BOOT);
    m.vm.boot();
    let (booted, _) = m.vm.wait_booted(BOOT);
    assert_eq!(booted, r.good, "release 4 is booted");
    m.vm.kill();
}

/// Issue 15, the FleetLock point: the machine's slot is taken by another
/// machine; the agent reports steady-state after its good boot, stages
/// release 2 and waits for the lock; when the operator releases the
/// other machine, it gets the slot, reboots into release 2 and gives the
/// slot back (steady-state) after its good boot.
#[test]
fn agent_waits_for_the_fleet_lock_and_reports_steady_state() {
    let f = fixture();
    let etcd = arbor_testutil::EtcdServer::start();
    let port = arbor_testutil::free_port();
    let mut child = Command::new(&f.arbor)
        .args(["fleetlock", "serve", "--etcd", &etcd.url])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(
        first.starts_with("FleetLock server at http://127.0.0.1:"),
        "{first}"
    );
    let flock = Server {
        child,
        _stdin: None,
    };
    let host_url = format!("http://127.0.0.1:{port}");
    let status = || {
        let out =
            sh(Command::new(&f.arbor).args(["fleetlock", "status", "--json", "--etcd", &etcd.url]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v
    };
    let holders = || -> Vec<String> {
        let v = status();
        v["default"]["holders"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|h| h.as_str().unwrap().to_string())
            .collect()
    };
    // Another machine holds the only slot.
    sh(Command::new(&f.arbor).args([
        "fleetlock",
        "pre-reboot",
        "--url",
        &host_url,
        "--id",
        "another-machine",
    ]));
    assert_eq!(holders(), ["another-machine"]);
    let toml = format!(
        "[agent]\ncheck_interval_minutes = 1\n\
         [updates]\nstrategy = \"fleet_lock\"\n\
         [updates.fleet_lock]\nbase_url = \"http://10.0.2.2:{port}\"\n"
    );
    let mut m = AgentMachine::new("agent-fleetlock", &toml);
    m.publish(&f.repo, &f.v2, "release 2");
    m.vm.boot();
    let (booted, _) = m.vm.wait_booted(BOOT);
    assert_eq!(booted, f.v1);
    let st = m.wait_state("waiting for the FleetLock slot", BOOT, |v| {
        v["steady_state_reported"] == true
            && v["waiting_for"]
                .as_str()
                .is_some_and(|w| w.contains("FleetLock slot"))
    });
    assert_eq!(st["staged"]["checksum"], f.v2.as_str());
    m.vm.ok("arbor status", CMD);
    assert_eq!(holders(), ["another-machine"], "no second holder");
    m.vm.say("host: fleetlock release another-machine");
    sh(Command::new(&f.arbor).args([
        "fleetlock",
        "release",
        "--etcd",
        &etcd.url,
        "another-machine",
    ]));
    m.vm.wait_exit(BOOT);
    let h = holders();
    m.vm.say(&format!("host: the slot's holder while it reboots: {h:?}"));
    assert_eq!(h.len(), 1);
    assert_ne!(h[0], "another-machine");
    m.vm.boot();
    let (booted, _) = m.vm.wait_booted(BOOT);
    assert_eq!(booted, f.v2, "the update is booted");
    // The state file of the previous boot says "reported" too: the
    // server is what shows this boot's report.
    let t0 = Instant::now();
    while !holders().is_empty() {
        assert!(
            t0.elapsed() < BOOT,
            "the slot was not given back: {:?}",
            holders()
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    m.vm.say(&format!(
        "host: steady-state received {:.0} s after the boot, the slot is free",
        t0.elapsed().as_secs_f64()
    ));
    let st = m.state();
    assert_eq!(st["steady_state_reported"], true, "{st}");
    m.journal();
    m.vm.kill();
    drop(flock);
}
