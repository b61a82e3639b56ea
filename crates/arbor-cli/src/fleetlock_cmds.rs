//! `fleetlock`: FleetLock server, operator commands and client requests
//! ([`arbor_agent::fleetlock`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arbor_agent::etcd::Etcd;
use arbor_agent::fleetlock::client::{Answer, Client};
use arbor_agent::fleetlock::server::{self, Server};
use arbor_agent::fleetlock::{valid_name, DEFAULT_GROUP};

use crate::cli_fleetlock::{FleetlockClientOpts, FleetlockCmd};

/// Runs a `fleetlock` subcommand.
pub fn fleetlock(c: FleetlockCmd, out: &mut impl Write) -> Result<ExitCode> {
    match c {
        FleetlockCmd::Serve(o) => {
            let groups = parse_groups(&o.groups)?;
            let etcd = Etcd::new(&o.etcd.etcd)?;
            // Fail now, not at the first request, if etcd is not there.
            etcd.revision()
                .with_context(|| format!("Reaching etcd at {}", etcd.url()))?;
            let server = Arc::new(Server::new(etcd.clone(), groups)?);
            let listener = server::bind(&o.listen)?;
            let addr = listener.local_addr()?;
            let list: Vec<String> = server
                .groups()
                .iter()
                .map(|(g, n)| format!("{g}={n}"))
                .collect();
            writeln!(
                out,
                "FleetLock server at http://{addr}/ (etcd {}; groups {})",
                etcd.url(),
                list.join(", ")
            )?;
            out.flush()?;
            server.serve(listener);
            Ok(ExitCode::SUCCESS)
        }
        FleetlockCmd::Status(o) => {
            let etcd = Etcd::new(&o.etcd.etcd)?;
            let groups = if o.groups.is_empty() {
                vec![DEFAULT_GROUP.to_string()]
            } else {
                o.groups.clone()
            };
            let mut all = BTreeMap::new();
            for g in &groups {
                check_name("group", g)?;
                all.insert(g.clone(), server::semaphore(&etcd, g)?);
            }
            if o.json {
                serde_json::to_writer_pretty(&mut *out, &all)?;
                writeln!(out)?;
                return Ok(ExitCode::SUCCESS);
            }
            for (g, s) in &all {
                match s {
                    None => writeln!(out, "{g}: no semaphore yet (no request so far)")?,
                    Some(s) => writeln!(
                        out,
                        "{g}: {} of {} slots held{}{}",
                        s.holders.len(),
                        s.total_slots,
                        if s.holders.is_empty() { "" } else { ": " },
                        s.holders.join(", ")
                    )?,
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        FleetlockCmd::Release(o) => {
            check_name("group", &o.group)?;
            check_name("id", &o.id)?;
            let etcd = Etcd::new(&o.etcd.etcd)?;
            if server::release(&etcd, &o.group, &o.id)? {
                writeln!(out, "Released the slot of {} in group {}", o.id, o.group)?;
            } else {
                writeln!(out, "{} held no slot in group {}", o.id, o.group)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        FleetlockCmd::PreReboot(o) => request(&o, true, out),
        FleetlockCmd::SteadyState(o) => request(&o, false, out),
    }
}

fn request(o: &FleetlockClientOpts, pre: bool, out: &mut impl Write) -> Result<ExitCode> {
    let id = match &o.id {
        Some(id) => id.clone(),
        None => arbor_agent::identity::this_machine()?,
    };
    let c = Client::new(&o.url, &id, &o.group)?;
    let answer = if pre {
        c.pre_reboot()?
    } else {
        c.steady_state()?
    };
    match answer {
        Answer::Granted => {
            let what = if pre { "granted" } else { "released" };
            writeln!(out, "{id} (group {}): slot {what}", o.group)?;
            Ok(ExitCode::SUCCESS)
        }
        Answer::Refused { status, refusal } => {
            writeln!(
                out,
                "{id} (group {}): refused ({status} {}): {}",
                o.group, refusal.kind, refusal.value
            )?;
            Ok(ExitCode::from(1))
        }
    }
}

fn check_name(what: &str, s: &str) -> Result<()> {
    if !valid_name(s) {
        bail!("Invalid {what} {s:?} (letters, digits, '-', '_', '.')");
    }
    Ok(())
}

/// `NAME=SLOTS` arguments (default: `default=1`).
fn parse_groups(args: &[String]) -> Result<BTreeMap<String, u64>> {
    let mut groups = BTreeMap::new();
    for a in args {
        let Some((name, slots)) = a.split_once('=') else {
            bail!("--group takes NAME=SLOTS, not {a:?}");
        };
        let n: u64 = slots
            .parse()
            .with_context(|| format!("--group {a}: SLOTS is not a number"))?;
        if groups.insert(name.to_string(), n).is_some() {
            bail!("--group {name} given twice");
        }
    }
    if groups.is_empty() {
        groups.insert(DEFAULT_GROUP.to_string(), 1);
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_arguments() {
        assert_eq!(
            parse_groups(&[]).unwrap(),
            BTreeMap::from([("default".into(), 1)])
        );
        let g = parse_groups(&["a=2".into(), "b=5".into()]).unwrap();
        assert_eq!(g, BTreeMap::from([("a".into(), 2), ("b".into(), 5)]));
        for bad in ["a", "a=x", "a=-1"] {
            assert!(parse_groups(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(parse_groups(&["a=1".into(), "a=2".into()]).is_err());
    }
}
