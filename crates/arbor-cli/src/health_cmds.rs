//! `health`: greenboot-style health checks ([`arbor_agent::health`]).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use arbor_agent::health::{self, Kind, Outcome};

use crate::cli_health::HealthCmd;

/// Runs a `health` subcommand.
pub fn health(c: HealthCmd, out: &mut impl Write) -> Result<ExitCode> {
    match c {
        HealthCmd::Check(o) => {
            let r = health::run(&o.root, Duration::from_secs(o.timeout))?;
            if o.json {
                serde_json::to_writer_pretty(&mut *out, &r)?;
                writeln!(out)?;
            } else {
                for c in &r.checks {
                    let kind = match c.kind {
                        Kind::Required => "required",
                        Kind::Wanted => "wanted",
                    };
                    let what = match &c.outcome {
                        Outcome::Passed => "passed".to_string(),
                        Outcome::Failed { status } => format!("FAILED ({status})"),
                        Outcome::TimedOut => format!("TIMED OUT after {} s", o.timeout),
                        Outcome::NotRun { error } => format!("NOT RUN ({error})"),
                        Outcome::Disabled => "disabled (not executable)".to_string(),
                    };
                    writeln!(out, "{kind} {}: {what} in {} ms", c.name, c.millis)?;
                    if !matches!(c.outcome, Outcome::Passed | Outcome::Disabled) {
                        for l in c.output.lines() {
                            writeln!(out, "  | {l}")?;
                        }
                    }
                }
                writeln!(
                    out,
                    "{}",
                    if r.healthy {
                        "healthy: every required check passed"
                    } else {
                        "UNHEALTHY: a required check did not pass"
                    }
                )?;
            }
            Ok(if r.healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
