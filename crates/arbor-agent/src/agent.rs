//! The update agent (Zincati's role): checks the deployment's origin on a
//! schedule, stages an update with its finalization locked, and reboots
//! into it when its strategy allows; with `fleet_lock`, reports a good
//! boot (steady-state) and asks for a slot before rebooting.
//!
//! [`Agent::step`] does what is due at the host's `now` and says when to
//! wake next; every effect goes through [`Host`], so tests drive the agent
//! with a fake clock, origin and server. The state it keeps is
//! [`crate::state::State`], saved when it changes.
//!
//! Rules that keep a machine safe:
//! - what is staged is read from the machine at every check and before a
//!   reboot, and the reboot names the release it may finalize, so an
//!   admin's own staging is never finalized on the agent's say-so;
//! - a release that was rolled back (recorded by `arbor health boot`) or
//!   that is the machine's rollback deployment (rolled back by hand) is
//!   never staged; if the record cannot be read, nothing is staged;
//! - no reboot before the health checks judged this boot (at most
//!   [`HEALTH_WAIT_MAX`] after the agent started), and the window or lock
//!   is judged at the time of the reboot, after a possibly long pull;
//! - with `fleet_lock`, a boot that rolled back a release keeps its slot
//!   (no steady-state): the fleet stops taking that release until an
//!   operator releases the slot (`arbor fleetlock release`) or a newer
//!   release boots well here.

use std::time::Duration;

use anyhow::Result;
use jiff::{SignedDuration, Timestamp};

use crate::config::{Config, Strategy};
use crate::fleetlock::client::{Answer, Backoff};
use crate::state::{Phase, Release, State};
use crate::window;

/// Spread of the check interval: ±10%.
pub const JITTER_PERCENT: u32 = 10;
/// First wait after a refused or failed FleetLock request.
pub const LOCK_RETRY_FIRST: Duration = Duration::from_secs(5);
/// Longest wait between FleetLock requests.
pub const LOCK_RETRY_MAX: Duration = Duration::from_secs(300);
/// Wait before retrying a failed reboot.
pub const ERROR_RETRY: Duration = Duration::from_secs(60);
/// Wait for the health checks' verdict on this boot.
pub const HEALTH_POLL: Duration = Duration::from_secs(10);
/// Once the verdict is known and bad: how often to look again (the checks
/// may be run again by hand).
pub const HEALTH_RECHECK: Duration = Duration::from_secs(300);
/// How long a reboot waits for the verdict on this boot (a machine whose
/// health unit does not run still updates).
pub const HEALTH_WAIT_MAX: Duration = Duration::from_secs(15 * 60);
/// A clock set back by more than this restarts the schedule.
const CLOCK_JUMP: SignedDuration = SignedDuration::from_secs(300);

/// The health checks' verdict on this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootHealth {
    /// Every required check passed.
    pub healthy: bool,
    /// This boot finished a rollback (the boot loader fell back).
    pub rolled_back: bool,
}

/// What the agent acts on: the machine, its origin, its FleetLock server
/// and the clock.
pub trait Host {
    /// The current time.
    fn now(&mut self) -> Timestamp;
    /// A random number (the check interval's jitter).
    fn random(&mut self) -> u64;
    /// The update the origin offers over what is booted or staged
    /// (`None`: up to date).
    fn check(&mut self) -> Result<Option<Release>>;
    /// The base commit of the rollback deployment (the one after the
    /// booted one), if any.
    fn rollback_commit(&mut self) -> Result<Option<String>>;
    /// The update staged for the next boot, if any.
    fn staged(&mut self) -> Result<Option<Release>>;
    /// Pulls and stages `release` with its finalization locked; fails if
    /// the origin offers another one by now. Returns what it staged.
    fn stage(&mut self, release: &Release) -> Result<Release>;
    /// Unlocks the finalization of `release` (refusing if something else
    /// is staged) and reboots; locks it again if the reboot fails.
    fn reboot(&mut self, release: &Release) -> Result<()>;
    /// FleetLock `pre-reboot`.
    fn pre_reboot(&mut self) -> Result<Answer>;
    /// FleetLock `steady-state`.
    fn steady_state(&mut self) -> Result<Answer>;
    /// The health checks' verdict on this boot (`None`: not yet).
    fn boot_health(&mut self) -> Result<Option<BootHealth>>;
    /// The releases that were rolled back.
    fn rolled_back(&mut self) -> Result<Vec<Release>>;
    /// Writes the state file.
    fn save(&mut self, state: &State) -> Result<()>;
}

/// What [`Agent::step`] asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Call `step` again at this time.
    At(Timestamp),
    /// The reboot was requested: call `step` again later only if the
    /// machine is still up.
    Rebooting,
}

/// How long from now until `t` (zero if past).
pub fn time_until(t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or_default()
}

/// The agent.
pub struct Agent<H: Host> {
    cfg: Config,
    host: H,
    state: State,
    saved: Option<State>,
    last_now: Option<Timestamp>,
    next_check: Option<Timestamp>,
    lock_retry: Option<(Timestamp, Backoff)>,
    steady_retry: Option<(Timestamp, Backoff)>,
    error_retry: Option<Timestamp>,
    /// Why steady-state is not reported yet.
    steady_blocker: Option<String>,
    /// This boot rolled back a release: the FleetLock slot is kept.
    held_after_rollback: bool,
    /// The verdict on this boot is known.
    health_known: bool,
    /// Until when a reboot waits for the verdict.
    health_deadline: Option<Timestamp>,
}

impl<H: Host> std::fmt::Debug for Agent<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("cfg", &self.cfg)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn strategy_name(s: &Strategy) -> &'static str {
    match s {
        Strategy::Immediate => "immediate",
        Strategy::Periodic { .. } => "periodic",
        Strategy::FleetLock { .. } => "fleet_lock",
    }
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

impl<H: Host> Agent<H> {
    /// An agent with configuration `cfg` acting on `host`.
    pub fn new(cfg: Config, host: H) -> Agent<H> {
        let state = State {
            strategy: strategy_name(&cfg.strategy).to_string(),
            steady_state_reported: matches!(cfg.strategy, Strategy::FleetLock { .. })
                .then_some(false),
            ..Default::default()
        };
        Agent {
            cfg,
            host,
            state,
            saved: None,
            last_now: None,
            next_check: None,
            lock_retry: None,
            steady_retry: None,
            error_retry: None,
            steady_blocker: None,
            held_after_rollback: false,
            health_known: false,
            health_deadline: None,
        }
    }

    /// The state as last saved.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The host (for tests to inspect).
    pub fn host(&self) -> &H {
        &self.host
    }

    /// The host, mutably (for tests to change the world).
    pub fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }

    fn fail(&mut self, what: &str, e: anyhow::Error) {
        let msg = format!("{what}: {e:#}");
        tracing::warn!(event = "error", "{msg}");
        self.state.last_error = Some(msg);
    }

    /// Does what is due now; saves the state if it changed; says when to
    /// come back.
    pub fn step(&mut self) -> Next {
        let now = self.host.now();
        if self.state.phase == Phase::Starting {
            self.start(now);
        }
        if self
            .last_now
            .is_some_and(|last| now < last.checked_sub(CLOCK_JUMP).unwrap_or(last))
        {
            tracing::warn!(
                event = "clock-jump",
                "the clock went back: schedule restarted"
            );
            self.next_check = Some(now);
            self.lock_retry = None;
            self.steady_retry = None;
            self.error_retry = None;
        }
        self.last_now = Some(now);
        self.report_steady_state(now);
        if self.next_check.is_none_or(|t| t <= now) {
            self.check(now);
            let base = Duration::from_secs(60 * self.cfg.check_interval_minutes.max(1));
            let r = self.host.random();
            let next = after(now, window::jittered(base, JITTER_PERCENT, r));
            self.next_check = Some(next);
            self.state.next_check = Some(next.to_string());
        }
        // A pull may have taken long: the window or lock is judged now.
        let now = self.host.now().max(now);
        let mut wake = self.next_check.unwrap_or(now);
        let rebooting = self.maybe_reboot(now, &mut wake);
        for t in [
            self.next_check,
            self.lock_retry.as_ref().map(|x| x.0),
            self.steady_retry.as_ref().map(|x| x.0),
            self.error_retry,
        ]
        .into_iter()
        .flatten()
        {
            wake = wake.min(t);
        }
        self.save(now);
        if rebooting {
            Next::Rebooting
        } else {
            Next::At(wake.max(now))
        }
    }

    /// Writes the state file if anything but its time changed.
    fn save(&mut self, now: Timestamp) {
        let same = self.saved.as_ref().is_some_and(|s| {
            State {
                updated: String::new(),
                ..s.clone()
            } == State {
                updated: String::new(),
                ..self.state.clone()
            }
        });
        if same {
            return;
        }
        self.state.updated = now.to_string();
        match self.host.save(&self.state) {
            Ok(()) => self.saved = Some(self.state.clone()),
            Err(e) => tracing::warn!(event = "error", "Writing the state file: {e:#}"),
        }
    }

    fn start(&mut self, now: Timestamp) {
        tracing::info!(
            event = "started",
            strategy = self.state.strategy.as_str(),
            "agent started, strategy {}",
            self.state.strategy
        );
        self.state.phase = Phase::Idle;
        self.next_check = Some(now);
        self.health_deadline = Some(after(now, HEALTH_WAIT_MAX));
    }

    /// The verdict on this boot, remembered once known.
    fn health(&mut self) -> Result<Option<BootHealth>> {
        let h = self.host.boot_health()?;
        if let Some(h) = h {
            self.health_known = true;
            self.held_after_rollback = h.rolled_back;
        }
        Ok(h)
    }

    /// With `fleet_lock`: once the health checks judged this boot good,
    /// gives the slot back (retrying with backoff until the server takes
    /// it). A bad boot, or one that rolled back a release, keeps its slot,
    /// so the fleet stops rebooting into what failed here.
    fn report_steady_state(&mut self, now: Timestamp) {
        if self.state.steady_state_reported != Some(false) {
            return;
        }
        if self.steady_retry.as_ref().is_some_and(|(t, _)| *t > now) {
            return;
        }
        let retry = |this: &mut Self, d: Option<Duration>| {
            let mut b = this
                .steady_retry
                .take()
                .map(|x| x.1)
                .unwrap_or_else(|| Backoff::new(LOCK_RETRY_FIRST, LOCK_RETRY_MAX));
            let d = d.unwrap_or_else(|| b.next().unwrap_or(LOCK_RETRY_MAX));
            this.steady_retry = Some((after(now, d), b));
        };
        let (blocker, wait) = match self.health() {
            Ok(Some(BootHealth {
                healthy: true,
                rolled_back: false,
            })) => (None, HEALTH_POLL),
            Ok(Some(BootHealth {
                healthy: true,
                rolled_back: true,
            })) => (
                Some(
                    "an operator: this boot rolled back a release, so the slot is kept and the \
                     fleet stops (arbor fleetlock release ID lets it go on)"
                        .to_string(),
                ),
                HEALTH_RECHECK,
            ),
            Ok(Some(_)) => (
                Some("a good boot (the required health checks failed)".to_string()),
                HEALTH_RECHECK,
            ),
            Ok(None) => (
                Some("the health checks of this boot".to_string()),
                HEALTH_POLL,
            ),
            Err(e) => {
                self.fail("Reading the boot's health", e);
                (
                    Some("the health checks' verdict (unreadable)".to_string()),
                    HEALTH_POLL,
                )
            }
        };
        if let Some(b) = blocker {
            if self.state.staged.is_none() {
                self.state.waiting_for = Some(b.clone());
            }
            self.steady_blocker = Some(b);
            return retry(self, Some(wait));
        }
        match self.host.steady_state() {
            Ok(Answer::Granted) => {
                tracing::info!(event = "steady-state", "reported steady-state to FleetLock");
                self.state.steady_state_reported = Some(true);
                self.state.waiting_for = None;
                self.steady_retry = None;
                self.steady_blocker = None;
            }
            Ok(Answer::Refused { status, refusal }) => {
                self.steady_blocker =
                    Some(format!("the server to accept it ({status}: {refusal})"));
                self.fail(
                    "FleetLock steady-state",
                    anyhow::anyhow!("refused ({status}): {refusal}"),
                );
                retry(self, None);
            }
            Err(e) => {
                self.steady_blocker = Some(format!("the server to accept it ({e:#})"));
                self.fail("FleetLock steady-state", e);
                retry(self, None);
            }
        }
    }

    fn check(&mut self, now: Timestamp) {
        self.state.last_check = Some(now.to_string());
        // Fail closed: without the record, a rolled-back release could be
        // staged again.
        match self.host.rolled_back() {
            Ok(r) => self.state.rolled_back = r,
            Err(e) => {
                self.state.last_check_result =
                    Some("not checked: the rolled-back releases are unreadable".into());
                return self.fail("Reading the rolled-back releases", e);
            }
        }
        // What is staged now (an admin may have staged or removed one).
        match self.host.staged() {
            Ok(s) => self.state.staged = s,
            Err(e) => {
                self.state.last_check_result = Some("failed".into());
                return self.fail("Reading the staged deployment", e);
            }
        }
        let found = match self.host.check() {
            Ok(f) => f,
            Err(e) => {
                self.state.last_check_result = Some("failed".into());
                return self.fail("Checking for an update", e);
            }
        };
        // A successful check ends an error, unless a failed reboot is
        // waiting for its retry.
        if self.error_retry.is_none() {
            self.state.last_error = None;
        }
        let Some(release) = found else {
            let what = match &self.state.staged {
                Some(s) => format!("no newer update than the staged {s}"),
                None => "up to date".to_string(),
            };
            tracing::debug!(event = "checked", "{what}");
            self.state.last_check_result = Some(what);
            return;
        };
        if self
            .state
            .rolled_back
            .iter()
            .any(|r| r.checksum == release.checksum)
        {
            let what = format!("skipped {release}: it was rolled back");
            tracing::info!(
                event = "skipped-rolled-back",
                checksum = release.checksum.as_str(),
                "{what}"
            );
            self.state.last_check_result = Some(what);
            return;
        }
        match self.host.rollback_commit() {
            Ok(Some(c)) if c == release.checksum => {
                let what = format!(
                    "skipped {release}: it is the rollback deployment (rolled back by hand)"
                );
                tracing::info!(
                    event = "skipped-rollback-deployment",
                    checksum = release.checksum.as_str(),
                    "{what}"
                );
                self.state.last_check_result = Some(what);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                self.state.last_check_result = Some("failed".into());
                return self.fail("Reading the rollback deployment", e);
            }
        }
        if self
            .state
            .staged
            .as_ref()
            .is_some_and(|s| s.checksum == release.checksum)
        {
            return;
        }
        tracing::info!(
            event = "update-found",
            checksum = release.checksum.as_str(),
            "update found: {release}"
        );
        match self.host.stage(&release) {
            Ok(staged) => {
                tracing::info!(
                    event = "staged",
                    checksum = staged.checksum.as_str(),
                    "staged {staged}, finalization locked"
                );
                self.state.last_check_result = Some(format!("staged {staged}"));
                self.state.staged = Some(staged);
                self.lock_retry = None;
            }
            Err(e) => {
                self.state.last_check_result = Some(format!("found {release}, staging failed"));
                self.fail("Staging the update", e);
            }
        }
    }

    /// Reboots into the staged update if the strategy allows it now;
    /// otherwise records what it waits for and lowers `wake` to when to
    /// look again. Returns whether the reboot was requested.
    fn maybe_reboot(&mut self, now: Timestamp, wake: &mut Timestamp) -> bool {
        let Some(staged) = self.state.staged.clone() else {
            self.state.phase = Phase::Idle;
            if self.state.steady_state_reported != Some(false) {
                self.state.waiting_for = None;
            } else {
                self.state.waiting_for = self.steady_blocker.clone();
            }
            return false;
        };
        if self.error_retry.is_some_and(|t| t > now) {
            return false;
        }
        self.error_retry = None;
        // The verdict on this boot first: a reboot now would leave it
        // unjudged (and its boot counter running).
        if !self.health_known && self.health_deadline.is_some_and(|d| d > now) {
            if let Err(e) = self.health() {
                self.fail("Reading the boot's health", e);
            }
            if !self.health_known {
                self.state.phase = Phase::WaitingForHealth;
                let until = self.health_deadline.unwrap_or(now);
                self.state.waiting_for = Some(format!(
                    "the health checks of this boot, before rebooting (at most until {until})"
                ));
                *wake = (*wake).min(after(now, HEALTH_POLL)).min(until);
                return false;
            }
        }
        let allowed = match &self.cfg.strategy {
            Strategy::Immediate => true,
            Strategy::Periodic {
                tz,
                tz_name,
                windows,
            } => {
                if window::current(windows, tz, now).is_some() {
                    true
                } else {
                    let next = window::next_start(windows, tz, now);
                    self.state.phase = Phase::WaitingForWindow;
                    self.state.waiting_for = Some(match next {
                        Some(t) => format!(
                            "the maintenance window opening at {} ({tz_name})",
                            t.to_zoned(tz.clone()).strftime("%a %Y-%m-%d %H:%M")
                        ),
                        None => "a maintenance window (none configured)".into(),
                    });
                    if let Some(t) = next {
                        *wake = (*wake).min(t);
                    }
                    false
                }
            }
            Strategy::FleetLock { base_url } => self.ask_lock(now, base_url.clone()),
        };
        if !allowed {
            return false;
        }
        self.state.phase = Phase::Rebooting;
        self.state.waiting_for = None;
        tracing::info!(
            event = "rebooting",
            checksum = staged.checksum.as_str(),
            "rebooting into {staged}"
        );
        // Saved before the reboot starts: monitoring sees why it went down.
        self.save(now);
        match self.host.reboot(&staged) {
            Ok(()) => true,
            Err(e) => {
                self.fail("Rebooting", e);
                self.state.phase = Phase::Idle;
                self.error_retry = Some(after(now, ERROR_RETRY));
                // The slot was granted for a reboot that did not happen:
                // give it back (after a good boot), ask again later.
                if self.state.steady_state_reported == Some(true) {
                    self.state.steady_state_reported = Some(false);
                }
                // What is staged is read again at the next check.
                self.next_check = Some(now);
                false
            }
        }
    }

    /// `fleet_lock`: asks for the slot (after the steady-state report, or
    /// holding it since a rollback), at most once per backoff step.
    fn ask_lock(&mut self, now: Timestamp, base_url: String) -> bool {
        self.state.phase = Phase::WaitingForLock;
        if self.state.steady_state_reported == Some(false) && !self.held_after_rollback {
            self.state.waiting_for = Some(format!(
                "the steady-state report to {base_url} (group {}), before asking to reboot: \
                 waiting for {}",
                self.cfg.group,
                self.steady_blocker.as_deref().unwrap_or("it")
            ));
            return false;
        }
        if self.lock_retry.as_ref().is_some_and(|(t, _)| *t > now) {
            return false;
        }
        let why = match self.host.pre_reboot() {
            Ok(Answer::Granted) => {
                tracing::info!(event = "lock-granted", "FleetLock slot granted");
                self.lock_retry = None;
                return true;
            }
            Ok(Answer::Refused { status, refusal }) => format!("{status}: {refusal}"),
            Err(e) => format!("{e:#}"),
        };
        let mut b = self
            .lock_retry
            .take()
            .map(|x| x.1)
            .unwrap_or_else(|| Backoff::new(LOCK_RETRY_FIRST, LOCK_RETRY_MAX));
        let d = b.next().unwrap_or(LOCK_RETRY_MAX);
        let at = after(now, d);
        tracing::info!(
            event = "lock-refused",
            "FleetLock slot not granted ({why}); asking again at {at}"
        );
        self.state.waiting_for = Some(format!(
            "a FleetLock slot in group {} at {base_url} (last answer: {why}; next try {at})",
            self.cfg.group
        ));
        self.lock_retry = Some((at, b));
        false
    }
}
