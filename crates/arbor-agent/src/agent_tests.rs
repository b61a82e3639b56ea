//! The agent's state machine driven by a fake host: a clock the test sets,
//! an origin, a FleetLock server that answers from a script.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use jiff::Timestamp;

use crate::agent::{Agent, Host, Next};
use crate::config::{parse, Config};
use crate::fleetlock::client::Answer;
use crate::fleetlock::Refusal;
use crate::state::{Phase, Release, State};

#[derive(Default)]
struct Fake {
    now: Option<Timestamp>,
    random: u64,
    /// What the origin offers over what is booted.
    offered: Option<Release>,
    staged: Option<Release>,
    rolled_back: Vec<Release>,
    health: Option<bool>,
    lock_answers: VecDeque<Result<Answer>>,
    steady_answers: VecDeque<Result<Answer>>,
    fail_stage: bool,
    fail_reboot: bool,
    /// Every call that changes something, with the time.
    log: Vec<String>,
    saved: Vec<State>,
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn rel(n: u8) -> Release {
    Release {
        checksum: format!("{n:02x}").repeat(32),
        version: Some(n.to_string()),
    }
}

fn refused() -> Answer {
    Answer::Refused {
        status: 409,
        refusal: Refusal {
            kind: "failed_lock".into(),
            value: "semaphore is full".into(),
        },
    }
}

impl Fake {
    fn at(&self) -> String {
        self.now.unwrap().to_string()
    }
}

impl Host for Fake {
    fn now(&mut self) -> Timestamp {
        self.now.unwrap()
    }
    fn random(&mut self) -> u64 {
        self.random
    }
    fn check(&mut self) -> Result<Option<Release>> {
        self.log.push(format!("check {}", self.at()));
        // As Upgrader::check: the staged update is not offered again.
        Ok(self
            .offered
            .clone()
            .filter(|o| Some(o) != self.staged.as_ref()))
    }
    fn staged(&mut self) -> Result<Option<Release>> {
        Ok(self.staged.clone())
    }
    fn stage(&mut self, r: &Release) -> Result<Release> {
        if self.fail_stage {
            bail!("no space left on device");
        }
        self.log.push(format!(
            "stage {} {}",
            r.version.as_deref().unwrap(),
            self.at()
        ));
        self.staged = Some(r.clone());
        Ok(r.clone())
    }
    fn reboot(&mut self) -> Result<()> {
        if self.fail_reboot {
            bail!("systemctl failed");
        }
        self.log.push(format!("reboot {}", self.at()));
        Ok(())
    }
    fn pre_reboot(&mut self) -> Result<Answer> {
        self.log.push(format!("pre-reboot {}", self.at()));
        self.lock_answers.pop_front().unwrap_or(Ok(Answer::Granted))
    }
    fn steady_state(&mut self) -> Result<Answer> {
        self.log.push(format!("steady-state {}", self.at()));
        self.steady_answers
            .pop_front()
            .unwrap_or(Ok(Answer::Granted))
    }
    fn boot_health(&mut self) -> Result<Option<bool>> {
        Ok(self.health)
    }
    fn rolled_back(&mut self) -> Result<Vec<Release>> {
        Ok(self.rolled_back.clone())
    }
    fn save(&mut self, s: &State) -> Result<()> {
        self.saved.push(s.clone());
        Ok(())
    }
}

fn config(toml: &str) -> Config {
    parse(&[(PathBuf::from("/etc/arbor/agent.toml"), toml.to_string())]).unwrap()
}

fn agent(toml: &str, now: &str) -> Agent<Fake> {
    let fake = Fake {
        now: Some(t(now)),
        ..Default::default()
    };
    Agent::new(config(toml), fake)
}

fn set_now(a: &mut Agent<Fake>, now: Timestamp) {
    a.host_mut().now = Some(now);
}

/// Steps the agent as its loop does, from its clock to `until`: each
/// wake-up time becomes the clock. Returns the last answer.
fn run_until(a: &mut Agent<Fake>, until: Timestamp) -> Next {
    loop {
        match a.step() {
            Next::Rebooting => return Next::Rebooting,
            Next::At(w) if w > until => return Next::At(w),
            Next::At(w) => {
                let now = a.host().now.unwrap();
                // Never a busy loop: time moves forward, or the step was
                // the last at this instant.
                set_now(a, w.max(now + jiff::SignedDuration::from_millis(1)));
            }
        }
    }
}

#[test]
fn immediate_stages_and_reboots_at_the_first_check() {
    let mut a = agent(
        "[updates]\nstrategy = \"immediate\"\n",
        "2026-12-04T12:00:00Z",
    );
    a.host_mut().offered = Some(rel(2));
    assert_eq!(a.step(), Next::Rebooting);
    assert_eq!(
        a.host().log,
        [
            "check 2026-12-04T12:00:00Z",
            "stage 2 2026-12-04T12:00:00Z",
            "reboot 2026-12-04T12:00:00Z"
        ]
    );
    let last = a.host().saved.last().unwrap();
    assert_eq!(last.phase, Phase::Rebooting);
    assert_eq!(last.staged, Some(rel(2)));
    assert_eq!(last.strategy, "immediate");
}

#[test]
fn checks_are_spaced_by_the_interval_with_jitter() {
    let toml = "[agent]\ncheck_interval_minutes = 10\n[updates]\nstrategy = \"immediate\"\n";
    let start = t("2026-12-04T12:00:00Z");
    // The random value spans the whole ±10% (600 s ± 60 s).
    for (r, want) in [(0u64, 540.0), (60_000, 600.0), (120_000, 660.0)] {
        let mut a = agent(toml, "2026-12-04T12:00:00Z");
        a.host_mut().random = r;
        let Next::At(w) = a.step() else { panic!() };
        assert_eq!(w.duration_since(start).as_secs_f64(), want, "random {r}");
        assert_eq!(a.state().last_check_result.as_deref(), Some("up to date"));
        assert_eq!(a.state().phase, Phase::Idle);
        // Nothing happens before then.
        set_now(&mut a, w - jiff::SignedDuration::from_secs(1));
        a.step();
        assert_eq!(a.host().log.len(), 1, "{:?}", a.host().log);
    }
    // Over many random values, never outside the bounds.
    for r in (0..10_000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
        let d = crate::window::jittered(Duration::from_secs(600), 10, r);
        assert!((540..=660).contains(&d.as_secs()), "{d:?}");
    }
}

#[test]
fn periodic_waits_for_the_window_then_reboots_inside_it() {
    // Saturday 22:30 UTC for 60 minutes; it is Friday noon.
    let toml = "[updates]\nstrategy = \"periodic\"\n\
                [[updates.periodic.window]]\ndays = [\"Sat\"]\nstart_time = \"22:30\"\nlength_minutes = 60\n";
    let mut a = agent(toml, "2026-12-04T12:00:00Z");
    a.host_mut().offered = Some(rel(2));
    let Next::At(w) = a.step() else { panic!() };
    assert_eq!(a.state().phase, Phase::WaitingForWindow);
    assert!(
        a.state()
            .waiting_for
            .as_deref()
            .unwrap()
            .contains("Sat 2026-12-05 22:30 (UTC)"),
        "{:?}",
        a.state().waiting_for
    );
    // The next wake-up is the next check (5 minutes), not the window.
    assert_eq!(w, t("2026-12-04T12:04:30Z"));
    // A newer release while waiting replaces the staged one.
    set_now(&mut a, t("2026-12-05T10:00:00Z"));
    a.host_mut().offered = Some(rel(3));
    run_until(&mut a, t("2026-12-05T22:29:59Z"));
    let log = &a.host().log;
    assert!(
        log.contains(&"stage 3 2026-12-05T10:00:00Z".to_string()),
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.starts_with("reboot")), "{log:?}");
    // At the window's opening (a wake-up of its own), the reboot.
    let next = run_until(&mut a, t("2026-12-06T00:00:00Z"));
    assert_eq!(next, Next::Rebooting);
    assert_eq!(
        a.host().log.last().unwrap(),
        "reboot 2026-12-05T22:30:00Z",
        "{:?}",
        a.host().log
    );
}

#[test]
fn periodic_after_the_window_closed_waits_a_week() {
    let toml = "[updates]\nstrategy = \"periodic\"\n\
                [[updates.periodic.window]]\ndays = [\"Sat\"]\nstart_time = \"22:30\"\nlength_minutes = 60\n";
    // Saturday 23:30: the window just closed.
    let mut a = agent(toml, "2026-12-05T23:30:00Z");
    a.host_mut().offered = Some(rel(2));
    a.step();
    assert!(a
        .state()
        .waiting_for
        .as_deref()
        .unwrap()
        .contains("Sat 2026-12-12 22:30"));
    // Inside it (23:29:59 of a later Saturday is inside): reboots.
    set_now(&mut a, t("2026-12-12T23:29:59Z"));
    assert_eq!(a.step(), Next::Rebooting);
}

#[test]
fn fleet_lock_reports_steady_state_then_waits_for_the_slot_with_backoff() {
    let toml = "[identity]\ngroup = \"workers\"\n[updates]\nstrategy = \"fleet_lock\"\n\
                [updates.fleet_lock]\nbase_url = \"http://10.0.2.2:3333\"\n";
    let mut a = agent(toml, "2026-12-04T12:00:00Z");
    // The health checks have not judged this boot yet: no steady-state.
    a.host_mut().offered = Some(rel(2));
    let Next::At(w) = a.step() else { panic!() };
    assert_eq!(w, t("2026-12-04T12:00:10Z"), "polls the health verdict");
    assert_eq!(a.state().steady_state_reported, Some(false));
    assert_eq!(a.state().phase, Phase::WaitingForLock);
    assert!(a
        .state()
        .waiting_for
        .as_deref()
        .unwrap()
        .contains("steady-state"));
    assert!(!a.host().log.iter().any(|l| l.starts_with("pre-reboot")));
    // Good boot: steady-state (refused once: retried after 5 s), then
    // pre-reboot, refused twice (5 s, then 10 s), then granted.
    a.host_mut().health = Some(true);
    a.host_mut().steady_answers.push_back(Ok(refused()));
    a.host_mut().lock_answers.push_back(Ok(refused()));
    a.host_mut()
        .lock_answers
        .push_back(Err(anyhow::anyhow!("connection refused")));
    set_now(&mut a, w);
    assert_eq!(
        run_until(&mut a, t("2026-12-04T13:00:00Z")),
        Next::Rebooting
    );
    let log: Vec<&str> = a
        .host()
        .log
        .iter()
        .map(String::as_str)
        .filter(|l| !l.starts_with("check"))
        .collect();
    assert_eq!(
        log,
        [
            "stage 2 2026-12-04T12:00:00Z",
            "steady-state 2026-12-04T12:00:10Z",
            "steady-state 2026-12-04T12:00:15Z",
            "pre-reboot 2026-12-04T12:00:15Z",
            "pre-reboot 2026-12-04T12:00:20Z",
            "pre-reboot 2026-12-04T12:00:30Z",
            "reboot 2026-12-04T12:00:30Z",
        ]
    );
    let saved = &a.host().saved;
    let waiting = saved
        .iter()
        .find_map(|s| {
            s.waiting_for
                .as_deref()
                .filter(|w| w.contains("FleetLock slot"))
        })
        .unwrap();
    assert!(
        waiting.contains("group workers at http://10.0.2.2:3333"),
        "{waiting}"
    );
    assert!(waiting.contains("409: failed_lock"), "{waiting}");
}

#[test]
fn fleet_lock_after_a_bad_boot_keeps_the_slot_and_does_not_reboot() {
    let toml = "[updates]\nstrategy = \"fleet_lock\"\n\
                [updates.fleet_lock]\nbase_url = \"http://10.0.2.2:3333\"\n";
    let mut a = agent(toml, "2026-12-04T12:00:00Z");
    a.host_mut().health = Some(false);
    a.host_mut().offered = Some(rel(2));
    run_until(&mut a, t("2026-12-04T14:00:00Z"));
    assert!(a
        .host()
        .log
        .iter()
        .all(|l| l.starts_with("check") || l.starts_with("stage")));
    assert!(a
        .state()
        .waiting_for
        .as_deref()
        .unwrap()
        .contains("health checks failed"));
}

#[test]
fn a_rolled_back_release_is_never_staged_a_newer_one_is() {
    let mut a = agent(
        "[updates]\nstrategy = \"immediate\"\n",
        "2026-12-04T12:00:00Z",
    );
    a.host_mut().rolled_back = vec![rel(2)];
    a.host_mut().offered = Some(rel(2));
    run_until(&mut a, t("2026-12-04T13:00:00Z"));
    assert!(a.host().log.iter().all(|l| l.starts_with("check")));
    assert!(a.host().log.len() >= 10, "checked all along");
    let r = a.state().last_check_result.as_deref().unwrap();
    assert!(
        r.starts_with("skipped 2 (0202") && r.ends_with("it was rolled back"),
        "{r}"
    );
    assert_eq!(a.state().rolled_back, [rel(2)]);
    a.host_mut().offered = Some(rel(3));
    assert_eq!(
        run_until(&mut a, t("2026-12-04T14:00:00Z")),
        Next::Rebooting
    );
    assert!(a.host().log.iter().any(|l| l.starts_with("stage 3")));
}

#[test]
fn failures_are_reported_and_retried() {
    let mut a = agent(
        "[updates]\nstrategy = \"immediate\"\n",
        "2026-12-04T12:00:00Z",
    );
    a.host_mut().offered = Some(rel(2));
    a.host_mut().fail_stage = true;
    a.step();
    assert!(a
        .state()
        .last_error
        .as_deref()
        .unwrap()
        .contains("no space left"));
    assert_eq!(a.state().staged, None);
    // The next check stages it.
    a.host_mut().fail_stage = false;
    a.host_mut().fail_reboot = true;
    let Next::At(w) = run_until(&mut a, t("2026-12-04T12:06:00Z")) else {
        panic!()
    };
    assert!(a
        .state()
        .last_error
        .as_deref()
        .unwrap()
        .contains("systemctl failed"));
    assert_eq!(a.state().phase, Phase::Idle);
    assert!(w <= t("2026-12-04T12:06:00Z") + jiff::SignedDuration::from_secs(60));
    a.host_mut().fail_reboot = false;
    assert_eq!(
        run_until(&mut a, t("2026-12-04T12:10:00Z")),
        Next::Rebooting
    );
}

#[test]
fn a_restarted_agent_picks_up_its_staged_update() {
    let toml = "[updates]\nstrategy = \"periodic\"\n\
                [[updates.periodic.window]]\ndays = [\"Fri\"]\nstart_time = \"11:00\"\nlength_minutes = 120\n";
    let mut a = agent(toml, "2026-12-04T12:00:00Z");
    a.host_mut().staged = Some(rel(2));
    a.host_mut().offered = Some(rel(2));
    // Inside the window already: reboots without staging again.
    assert_eq!(a.step(), Next::Rebooting);
    assert_eq!(
        a.host().log,
        ["check 2026-12-04T12:00:00Z", "reboot 2026-12-04T12:00:00Z"]
    );
}
