//! `health`: greenboot-style health checks ([`arbor_agent::health`]).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
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
        HealthCmd::Boot(o) => boot(o, out),
    }
}

/// `health boot`.
fn boot(o: crate::cli_health::HealthBootOpts, out: &mut impl Write) -> Result<ExitCode> {
    let reboot = crate::agent_cmds::command_words(&o.reboot_command)?;
    let path = o.sysroot.sysroot.clone();
    let open = move || crate::sysroot_cmds::open_sysroot(&path);
    let r = arbor_agent::boot::after_boot(
        &open,
        &o.sysroot.sysroot,
        &o.root,
        Duration::from_secs(o.timeout),
    )?;
    if let Some(rel) = &r.rolled_back {
        writeln!(
            out,
            "The boot loader fell back: {rel} did not boot well and is rolled back; \
             it will not be installed again"
        )?;
    }
    for c in &r.report.checks {
        if !matches!(c.outcome, Outcome::Passed | Outcome::Disabled) {
            writeln!(out, "{:?} check {}: {:?}", c.kind, c.name, c.outcome)?;
        }
    }
    if r.marked_good {
        writeln!(out, "healthy: boot marked good")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "UNHEALTHY: a required check did not pass")?;
    if r.reboot {
        writeln!(
            out,
            "The default deployment is on probation: rebooting ({})",
            o.reboot_command
        )?;
        out.flush()?;
        let st = std::process::Command::new(&reboot[0])
            .args(&reboot[1..])
            .status()
            .with_context(|| format!("Running {}", o.reboot_command))?;
        anyhow::ensure!(st.success(), "{} failed: {st}", o.reboot_command);
    }
    Ok(ExitCode::from(1))
}
