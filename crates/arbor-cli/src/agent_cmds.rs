//! `agent`: the update agent ([`arbor_agent`]).

use std::io::Write;

use anyhow::Result;
use arbor_agent::config::{self, Strategy};

use crate::cli_agent::AgentCmd;

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
    }
}
