//! The agent's state machine driven by a fake host: a clock the test sets,
//! an origin, a FleetLock server that answers from a script.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use jiff::Timestamp;

use crate::agent::{Agent, BootHealth, Host, Next};
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
    rolled_back_unreadable: bool,
    rollback_commit: Option<String>,
    health: Option<BootHealth>,
    /// How long a stage takes (the clock moves).
    stage_takes: Option<jiff::SignedDuration>,
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
    fn rollback_commit(&mut self) -> Result<Option<String>> {
        Ok(self.rollback_commit.clone())
    }
    fn staged(&mut self) -> Result<Option<Release>> {
        Ok(self.staged.clone())
    }
    fn stage(&mut self, r: &Release) -> Result<Release> {
        if self.fail_stage {
            bail!("no space left on device");
        }
        if let Some(d) = self.stage_takes {
            self.now = Some(self.now.unwrap() + d);
        }
        self.log.push(format!(
            "stage {} {}",
            r.version.as_deref().unwrap(),
            self.at()
        ));
        self.staged = Some(r.clone());
        Ok(r.clone())
    }
    fn reboot(&mut self, r: &Release) -> Result<()> {
        // As SystemHost: only the release the agent staged is finalized.
        if self.staged.as_ref() != Some(r) {
            bail!("staged by someone else");
        }
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
    fn boot_health(&mut self) -> Result<Option<BootHealth>> {
        Ok(self.health)
    }
    fn rolled_back(&mut self) -> Result<Vec<Release>> {
        if self.rolled_back_unreadable {
            bail!("rolled-back.json: expected value at line 1");
        }
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

const GOOD: BootHealth = BootHealth {
    healthy: true,
    rolled_back: false,
};

/// An agent on a machine whose boot was judged good.
fn agent(toml: &str, now: &str) -> Agent<Fake> {
    let fake = Fake {
        now: Some(t(now)),
        health: Some(GOOD),
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
    // Nothing before it opens, checks all along.
    assert!(matches!(
        run_until(&mut a, t("2026-12-12T22:29:59Z")),
        Next::At(_)
    ));
    assert!(!a.host().log.iter().any(|l| l.starts_with("reboot")));
    assert!(a.host().log.len() > 1000, "checked every 5 minutes");
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
    a.host_mut().health = None;
    a.host_mut().offered = Some(rel(2));
    let Next::At(w) = a.step() else { panic!() };
    assert_eq!(w, t("2026-12-04T12:00:10Z"), "polls the health verdict");
    assert_eq!(a.state().steady_state_reported, Some(false));
    assert_eq!(a.state().phase, Phase::WaitingForHealth);
    assert!(a
        .state()
        .waiting_for
        .as_deref()
        .unwrap()
        .contains("the health checks of this boot, before rebooting"));
    assert!(!a.host().log.iter().any(|l| l.starts_with("pre-reboot")));
    // Good boot: steady-state (refused once: retried after 5 s), then
    // pre-reboot, refused twice (5 s, then 10 s), then granted.
    a.host_mut().health = Some(GOOD);
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
    a.host_mut().health = Some(BootHealth {
        healthy: false,
        rolled_back: false,
    });
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
    // The reboot failed at the second check (12:04:30), then once a
    // minute (12:05:30; next 12:06:30), what is staged read again after
    // each failure.
    assert_eq!(w, t("2026-12-04T12:06:30Z"), "{:?}", a.host().log);
    assert!(!a.host().log.iter().any(|l| l.starts_with("reboot")));
    assert!(a
        .host()
        .log
        .contains(&"check 2026-12-04T12:04:30.001Z".to_string()));
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

#[test]
fn a_long_pull_past_the_window_waits_for_the_next_one() {
    let toml = "[updates]\nstrategy = \"periodic\"\n\
                [[updates.periodic.window]]\ndays = [\"Sat\"]\nstart_time = \"22:30\"\nlength_minutes = 60\n";
    // Checked inside the window (23:20), but the pull takes 40 minutes.
    let mut a = agent(toml, "2026-12-05T23:20:00Z");
    a.host_mut().offered = Some(rel(2));
    a.host_mut().stage_takes = Some(jiff::SignedDuration::from_mins(40));
    assert!(matches!(a.step(), Next::At(_)));
    assert!(!a.host().log.iter().any(|l| l.starts_with("reboot")));
    assert_eq!(a.state().phase, Phase::WaitingForWindow);
    assert!(a
        .state()
        .waiting_for
        .as_deref()
        .unwrap()
        .contains("Sat 2026-12-12 22:30"));
}

#[test]
fn what_is_staged_is_read_from_the_machine() {
    let toml = "[updates]\nstrategy = \"periodic\"\n\
                [[updates.periodic.window]]\ndays = [\"Fri\"]\nstart_time = \"12:02\"\nlength_minutes = 60\n";
    let mut a = agent(toml, "2026-12-04T12:00:00Z");
    a.host_mut().offered = Some(rel(2));
    a.step();
    assert_eq!(a.state().staged, Some(rel(2)));
    // An admin stages another deployment before the window opens: the
    // agent does not reboot into it on the strength of its own staging.
    a.host_mut().staged = Some(rel(9));
    set_now(&mut a, t("2026-12-04T12:02:00Z"));
    assert!(matches!(a.step(), Next::At(_)));
    assert!(!a.host().log.iter().any(|l| l.starts_with("reboot")));
    assert!(a
        .state()
        .last_error
        .as_deref()
        .unwrap()
        .contains("staged by someone else"));
    // An admin removes the staged deployment: it is staged again at the
    // next check, and rebooted into inside the window.
    a.host_mut().staged = None;
    assert_eq!(
        run_until(&mut a, t("2026-12-04T12:10:00Z")),
        Next::Rebooting
    );
    let stages = a
        .host()
        .log
        .iter()
        .filter(|l| l.starts_with("stage 2"))
        .count();
    assert_eq!(stages, 2, "{:?}", a.host().log);
}

#[test]
fn an_unreadable_record_of_rollbacks_stages_nothing() {
    let mut a = agent(
        "[updates]\nstrategy = \"immediate\"\n",
        "2026-12-04T12:00:00Z",
    );
    a.host_mut().offered = Some(rel(2));
    a.host_mut().rolled_back_unreadable = true;
    run_until(&mut a, t("2026-12-04T13:00:00Z"));
    assert!(!a.host().log.iter().any(|l| !l.starts_with("check")));
    assert!(a
        .state()
        .last_error
        .as_deref()
        .unwrap()
        .contains("rolled-back releases"));
    // Read again: taken as usual.
    a.host_mut().rolled_back_unreadable = false;
    assert_eq!(
        run_until(&mut a, t("2026-12-04T14:00:00Z")),
        Next::Rebooting
    );
    assert_eq!(a.state().last_error, None);
}

#[test]
fn a_release_rolled_back_by_hand_is_skipped() {
    let mut a = agent(
        "[updates]\nstrategy = \"immediate\"\n",
        "2026-12-04T12:00:00Z",
    );
    a.host_mut().offered = Some(rel(2));
    a.host_mut().rollback_commit = Some(rel(2).checksum);
    run_until(&mut a, t("2026-12-04T13:00:00Z"));
    assert!(a.host().log.iter().all(|l| l.starts_with("check")));
    assert!(a
        .state()
        .last_check_result
        .as_deref()
        .unwrap()
        .contains("the rollback deployment"));
}

#[test]
fn no_verdict_on_this_boot_delays_the_reboot_fifteen_minutes_at_most() {
    let mut a = agent(
        "[updates]\nstrategy = \"immediate\"\n",
        "2026-12-04T12:00:00Z",
    );
    a.host_mut().health = None;
    a.host_mut().offered = Some(rel(2));
    assert_eq!(
        run_until(&mut a, t("2026-12-04T13:00:00Z")),
        Next::Rebooting
    );
    assert_eq!(a.host().log.last().unwrap(), "reboot 2026-12-04T12:15:00Z");
    // A verdict (even a bad one) ends the wait.
    let mut a = agent(
        "[updates]\nstrategy = \"immediate\"\n",
        "2026-12-04T12:00:00Z",
    );
    a.host_mut().health = None;
    a.host_mut().offered = Some(rel(2));
    a.step();
    set_now(&mut a, t("2026-12-04T12:03:00Z"));
    a.host_mut().health = Some(BootHealth {
        healthy: false,
        rolled_back: false,
    });
    assert_eq!(a.step(), Next::Rebooting);
}

fn fleet(now: &str) -> Agent<Fake> {
    agent(
        "[updates]\nstrategy = \"fleet_lock\"\n\
         [updates.fleet_lock]\nbase_url = \"http://10.0.2.2:3333\"\n",
        now,
    )
}

#[test]
fn a_failed_reboot_gives_the_fleet_lock_slot_back() {
    let mut a = fleet("2026-12-04T12:00:00Z");
    a.host_mut().offered = Some(rel(2));
    a.host_mut().fail_reboot = true;
    a.step();
    let log = a.host().log.clone();
    assert_eq!(
        log.iter()
            .filter(|l| !l.starts_with("check"))
            .collect::<Vec<_>>(),
        [
            "steady-state 2026-12-04T12:00:00Z",
            "stage 2 2026-12-04T12:00:00Z",
            "pre-reboot 2026-12-04T12:00:00Z"
        ]
    );
    assert_eq!(a.state().steady_state_reported, Some(false));
    a.host_mut().fail_reboot = false;
    run_until(&mut a, t("2026-12-04T12:02:00Z"));
    let log: Vec<&str> = a
        .host()
        .log
        .iter()
        .map(String::as_str)
        .filter(|l| !l.starts_with("check"))
        .collect();
    // The slot is given back right after the failure, asked for again a
    // minute later.
    assert_eq!(
        log[3..],
        [
            "steady-state 2026-12-04T12:00:00Z",
            "pre-reboot 2026-12-04T12:01:00Z",
            "reboot 2026-12-04T12:01:00Z"
        ]
    );
}

#[test]
fn after_a_rollback_the_fleet_slot_is_kept_until_a_newer_release() {
    let mut a = fleet("2026-12-04T12:00:00Z");
    a.host_mut().health = Some(BootHealth {
        healthy: true,
        rolled_back: true,
    });
    a.host_mut().rolled_back = vec![rel(2)];
    a.host_mut().offered = Some(rel(2));
    run_until(&mut a, t("2026-12-04T14:00:00Z"));
    assert!(
        a.host().log.iter().all(|l| l.starts_with("check")),
        "{:?}",
        a.host().log
    );
    assert_eq!(a.state().steady_state_reported, Some(false));
    assert!(a
        .state()
        .waiting_for
        .as_deref()
        .unwrap()
        .contains("rolled back a release"));
    // A newer release: the machine holds the slot, asks (granted again).
    a.host_mut().offered = Some(rel(3));
    assert_eq!(
        run_until(&mut a, t("2026-12-04T15:00:00Z")),
        Next::Rebooting
    );
    let tail: Vec<&str> = a
        .host()
        .log
        .iter()
        .map(String::as_str)
        .filter(|l| !l.starts_with("check"))
        .collect();
    assert_eq!(tail.len(), 3, "{tail:?}");
    assert!(tail[0].starts_with("stage 3") && tail[1].starts_with("pre-reboot"));
    assert!(tail[2].starts_with("reboot"));
}

#[test]
fn the_state_file_is_written_when_it_changes() {
    let toml = "[updates]\nstrategy = \"periodic\"\n\
                [[updates.periodic.window]]\ndays = [\"Sat\"]\nstart_time = \"22:30\"\nlength_minutes = 60\n";
    let mut a = agent(toml, "2026-12-04T12:00:00Z");
    a.step();
    let n = a.host().saved.len();
    // Steps that change nothing but time write nothing.
    for s in 1..10 {
        set_now(
            &mut a,
            t("2026-12-04T12:00:00Z") + jiff::SignedDuration::from_secs(s),
        );
        a.step();
    }
    assert_eq!(a.host().saved.len(), n);
}

#[test]
fn a_clock_set_back_restarts_the_schedule() {
    let mut a = agent(
        "[updates]\nstrategy = \"immediate\"\n",
        "2026-12-04T12:00:00Z",
    );
    a.step();
    // The clock goes back a day: the next check is now, not in a day.
    set_now(&mut a, t("2026-12-03T12:00:00Z"));
    let Next::At(w) = a.step() else { panic!() };
    assert_eq!(a.host().log.len(), 2, "{:?}", a.host().log);
    assert!(w < t("2026-12-03T12:06:00Z"));
}
