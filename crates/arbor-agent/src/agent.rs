//! The update agent (Zincati's role): checks the deployment's origin on a
//! schedule, stages an update with its finalization locked, and reboots
//! into it when its strategy allows; with `fleet_lock`, reports a good
//! boot (steady-state) and asks for a slot before rebooting.
//!
//! [`Agent::step`] does what is due at the host's `now` and says when to
//! wake next; every effect goes through [`Host`], so tests drive the agent
//! with a fake clock, origin and server. The state it keeps is
//! [`crate::state::State`], saved after every step.

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
/// Wait before retrying a failed stage or reboot.
pub const ERROR_RETRY: Duration = Duration::from_secs(60);
/// Wait for the health checks' verdict on this boot.
pub const HEALTH_POLL: Duration = Duration::from_secs(10);

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
    /// The update staged for the next boot, if any.
    fn staged(&mut self) -> Result<Option<Release>>;
    /// Pulls and stages the update (`release`, or what the origin offers
    /// by now), its finalization locked; returns what it staged.
    fn stage(&mut self, release: &Release) -> Result<Release>;
    /// Unlocks the finalization and reboots.
    fn reboot(&mut self) -> Result<()>;
    /// FleetLock `pre-reboot`.
    fn pre_reboot(&mut self) -> Result<Answer>;
    /// FleetLock `steady-state`.
    fn steady_state(&mut self) -> Result<Answer>;
    /// The health checks' verdict on this boot: good, bad, or not yet.
    fn boot_health(&mut self) -> Result<Option<bool>>;
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
    /// The reboot was requested: nothing more to do in this boot.
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
    next_check: Option<Timestamp>,
    lock_retry: Option<(Timestamp, Backoff)>,
    steady_retry: Option<(Timestamp, Backoff)>,
    error_retry: Option<Timestamp>,
    /// Why steady-state is not reported yet.
    steady_blocker: Option<String>,
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
            next_check: None,
            lock_retry: None,
            steady_retry: None,
            error_retry: None,
            steady_blocker: None,
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

    /// Does what is due now; saves the state; says when to come back.
    pub fn step(&mut self) -> Next {
        let now = self.host.now();
        if self.state.phase == Phase::Starting {
            self.start(now);
        }
        self.report_steady_state(now);
        if self.next_check.is_none_or(|t| t <= now) {
            self.check(now);
            let base = Duration::from_secs(60 * self.cfg.check_interval_minutes.max(1));
            let r = self.host.random();
            let next = after(now, window::jittered(base, JITTER_PERCENT, r));
            self.next_check = Some(next);
            self.state.next_check = Some(next.to_string());
        }
        let mut wake = self.next_check.unwrap_or(now);
        let rebooting = self.maybe_reboot(now, &mut wake);
        for t in [
            self.lock_retry.as_ref().map(|x| x.0),
            self.steady_retry.as_ref().map(|x| x.0),
            self.error_retry,
        ]
        .into_iter()
        .flatten()
        {
            wake = wake.min(t);
        }
        self.state.updated = now.to_string();
        if let Err(e) = self.host.save(&self.state) {
            tracing::warn!(event = "error", "Writing the state file: {e:#}");
        }
        if rebooting {
            Next::Rebooting
        } else {
            Next::At(wake.max(now))
        }
    }

    fn start(&mut self, now: Timestamp) {
        tracing::info!(
            event = "started",
            strategy = self.state.strategy.as_str(),
            "agent started, strategy {}",
            self.state.strategy
        );
        match self.host.rolled_back() {
            Ok(r) => self.state.rolled_back = r,
            Err(e) => self.fail("Reading the rolled-back releases", e),
        }
        match self.host.staged() {
            Ok(s) => self.state.staged = s,
            Err(e) => self.fail("Reading the staged deployment", e),
        }
        self.state.phase = Phase::Idle;
        self.next_check = Some(now);
    }

    /// With `fleet_lock`: once the health checks judged this boot good,
    /// gives the slot back (retrying with backoff until the server takes
    /// it). A bad boot keeps its slot, so the fleet stops rebooting.
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
        let blocker = match self.host.boot_health() {
            Ok(Some(true)) => None,
            Ok(Some(false)) => Some("a good boot (the required health checks failed)".to_string()),
            Ok(None) => Some("the health checks of this boot".to_string()),
            Err(e) => {
                self.fail("Reading the boot's health", e);
                Some("the health checks' verdict (unreadable)".to_string())
            }
        };
        if let Some(b) = blocker {
            self.state.waiting_for = Some(b.clone());
            self.steady_blocker = Some(b);
            return retry(self, Some(HEALTH_POLL));
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
                self.fail(
                    "FleetLock steady-state",
                    anyhow::anyhow!("refused ({status}): {refusal}"),
                );
                self.steady_blocker =
                    Some(format!("the server to accept it ({status}: {refusal})"));
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
        if let Ok(r) = self.host.rolled_back() {
            self.state.rolled_back = r;
        }
        let found = match self.host.check() {
            Ok(f) => f,
            Err(e) => {
                self.state.last_check_result = Some("failed".into());
                return self.fail("Checking for an update", e);
            }
        };
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
            Ok(release) => {
                tracing::info!(
                    event = "staged",
                    checksum = release.checksum.as_str(),
                    "staged {release}, finalization locked"
                );
                self.state.last_check_result = Some(format!("staged {release}"));
                self.state.staged = Some(release);
                self.state.last_error = None;
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
            }
            return false;
        };
        if self.error_retry.is_some_and(|t| t > now) {
            return false;
        }
        self.error_retry = None;
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
        self.state.updated = now.to_string();
        let _ = self.host.save(&self.state);
        match self.host.reboot() {
            Ok(()) => true,
            Err(e) => {
                self.fail("Rebooting", e);
                self.state.phase = Phase::Idle;
                self.error_retry = Some(after(now, ERROR_RETRY));
                false
            }
        }
    }

    /// `fleet_lock`: asks for the slot (after the steady-state report),
    /// at most once per backoff step.
    fn ask_lock(&mut self, now: Timestamp, base_url: String) -> bool {
        self.state.phase = Phase::WaitingForLock;
        if self.state.steady_state_reported == Some(false) {
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
