//! `agent`: the update agent ([`arbor_agent`]).

use std::io::Write;

use anyhow::{Context, Result};
use arbor_agent::agent::{Agent, Next};
use arbor_agent::config::{self, Strategy};
use arbor_agent::fleetlock::client::Client;
use arbor_agent::system::SystemHost;

use crate::cli_agent::{AgentCmd, AgentRunOpts};

/// Runs an `agent` subcommand.
pub fn agent(c: AgentCmd, out: &mut impl Write) -> Result<()> {
    match c {
        AgentCmd::Config(o) => {
            let c = config::load(&o.root)?;
            if c.sources.is_empty() {
                writeln!(out, "No configuration files: the defaults")?;
            }
            for s in &c.sources {
                writeln!(out, "read {}", s.display())?;
            }
            writeln!(out, "group: {}", c.group)?;
            writeln!(
                out,
                "check interval: {} min (with jitter)",
                c.check_interval_minutes
            )?;
            match &c.strategy {
                Strategy::Immediate => writeln!(out, "strategy: immediate")?,
                Strategy::FleetLock { base_url } => {
                    writeln!(out, "strategy: fleet_lock at {base_url}")?
                }
                Strategy::Periodic {
                    tz_name, windows, ..
                } => {
                    writeln!(out, "strategy: periodic, time zone {tz_name}")?;
                    for w in windows {
                        let days: Vec<String> = w.days.iter().map(|d| format!("{d:?}")).collect();
                        writeln!(
                            out,
                            "  window: {} at {} for {} min",
                            days.join(", "),
                            w.start.strftime("%H:%M"),
                            w.length_minutes
                        )?;
                    }
                }
            }
            Ok(())
        }
        AgentCmd::Run(o) => run(o, out),
    }
}

/// The reboot command's words.
pub fn command_words(cmd: &str) -> Result<Vec<String>> {
    let words: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
    anyhow::ensure!(!words.is_empty(), "The reboot command is empty");
    Ok(words)
}

/// `agent run`: the agent's loop, until it requested the reboot (or once).
fn run(o: AgentRunOpts, out: &mut impl Write) -> Result<()> {
    let cfg = config::load(&o.root)?;
    let fleetlock = match &cfg.strategy {
        Strategy::FleetLock { base_url } => {
            let id = arbor_agent::identity::fleetlock_id(
                &std::fs::read_to_string(o.root.join("etc/machine-id"))
                    .context("Reading etc/machine-id (the FleetLock id)")?,
            )?;
            Some(Client::new(base_url, &id, &cfg.group)?)
        }
        _ => None,
    };
    let path = o.sysroot.sysroot.clone();
    let open: arbor_agent::system::OpenSysroot =
        Box::new(move || crate::sysroot_cmds::open_sysroot(&path));
    let host = SystemHost::new(
        open,
        &o.sysroot.sysroot,
        fleetlock,
        command_words(&o.reboot_command)?,
    )?;
    let state_file = host
        .state_root()
        .join(arbor_agent::state::DIR)
        .join(arbor_agent::state::STATE_FILE);
    let mut agent = Agent::new(cfg, host);
    loop {
        let next = agent.step();
        let st = agent.state();
        if o.once {
            writeln!(
                out,
                "{:?}: {}",
                st.phase,
                st.last_check_result.as_deref().unwrap_or("")
            )?;
            if let Some(w) = &st.waiting_for {
                writeln!(out, "waiting for {w}")?;
            }
            if let Some(e) = &st.last_error {
                writeln!(out, "error: {e}")?;
            }
            writeln!(out, "state in {}", state_file.display())?;
            return Ok(());
        }
        match next {
            Next::Rebooting => return Ok(()),
            Next::At(t) => {
                // At most a minute: a clock set forward is noticed.
                let wait = arbor_agent::agent::time_until(t);
                std::thread::sleep(wait.min(std::time::Duration::from_secs(60)));
            }
        }
    }
}

/// What `status` shows of the agent: its state file, the rolled-back
/// releases and the boot counter; `None` when there is nothing (no agent
/// ran, nothing rolled back, no boot on probation).
pub fn agent_status(s: &arbor_sysroot::Sysroot) -> Result<Option<serde_json::Value>> {
    use arbor_sysroot::bootcount::{self, BootCount};
    let Some(stateroot) = arbor_agent::system::stateroot_of(s) else {
        return Ok(None);
    };
    let root = arbor_agent::system::state_root(s.path(), &stateroot);
    // A damaged file is reported in its place: the deployments are still
    // shown, and monitoring sees the error.
    let mut errors = Vec::new();
    let state = arbor_agent::state::read_state(&root).unwrap_or_else(|e| {
        errors.push(format!("{e:#}"));
        None
    });
    let rolled = arbor_agent::state::rolled_back(&root)
        .unwrap_or_else(|e| {
            errors.push(format!("{e:#}"));
            Default::default()
        })
        .releases;
    let count = bootcount::state(s).unwrap_or_else(|e| {
        errors.push(format!("{e:#}"));
        BootCount::Off
    });
    if state.is_none()
        && rolled.is_empty()
        && errors.is_empty()
        && matches!(count, BootCount::Off | BootCount::Idle)
    {
        return Ok(None);
    }
    Ok(Some(serde_json::json!({
        "state": state,
        "rolled_back": rolled,
        "boot_counter": count,
        "errors": errors,
    })))
}

/// Renders [`agent_status`] after the deployments of `status`.
pub fn render_agent_status(v: &serde_json::Value, out: &mut impl Write) -> Result<()> {
    let st: Option<arbor_agent::state::State> = serde_json::from_value(v["state"].clone())?;
    let rolled: Vec<arbor_agent::state::RolledBackRelease> =
        serde_json::from_value(v["rolled_back"].clone())?;
    match &st {
        Some(st) => {
            let phase = serde_json::to_value(st.phase)?;
            writeln!(
                out,
                "{AGENT_LABEL} {} ({})",
                phase.as_str().unwrap_or_default(),
                st.strategy
            )?;
            if let Some(c) = &st.last_check {
                writeln!(
                    out,
                    "    LastCheck: {c}: {}",
                    st.last_check_result.as_deref().unwrap_or("")
                )?;
            }
            if let Some(n) = &st.next_check {
                writeln!(out, "    NextCheck: {n}")?;
            }
            if let Some(r) = &st.staged {
                writeln!(out, "    Staged: {r}")?;
            }
            if let Some(w) = &st.waiting_for {
                writeln!(out, "    WaitingFor: {w}")?;
            }
            if let Some(e) = &st.last_error {
                writeln!(out, "    LastError: {e}")?;
            }
        }
        None => writeln!(out, "{AGENT_LABEL} not running")?,
    }
    for r in &rolled {
        writeln!(out, "    RolledBack: {} on {}", r.release, r.when)?;
    }
    for e in v["errors"].as_array().into_iter().flatten() {
        writeln!(out, "    Error: {}", e.as_str().unwrap_or_default())?;
    }
    match v["boot_counter"].as_str() {
        Some("fell-back") => writeln!(
            out,
            "    BootCounter: the boot loader fell back to the previous deployment"
        )?,
        _ => {
            if let Some(n) = v["boot_counter"]["counting"]["left"].as_u64() {
                writeln!(
                    out,
                    "    BootCounter: on probation, {n} more boots before falling back"
                )?;
            }
        }
    }
    Ok(())
}

/// The first line of the agent's part of `status`.
pub const AGENT_LABEL: &str = "Agent:";
