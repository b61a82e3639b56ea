//! arbor-agent: automatic updates, as Fedora CoreOS has them with Zincati
//! (the agent), Airlock (the reboot coordinator) and greenboot (health
//! checks), compatible with their protocols.
//!
//! This first part is reboot coordination, the FleetLock protocol:
//!
//! - [`fleetlock::client`]: what an agent asks before it reboots
//!   (`POST /v1/pre-reboot`) and says after a good boot (`POST
//!   /v1/steady-state`), with Zincati's machine identity ([`identity`]);
//! - [`fleetlock::server`]: Airlock's semantics, a counting semaphore per
//!   group whose state lives in etcd ([`etcd`]), changed only by
//!   compare-and-swap transactions, so several servers on one etcd stay
//!   correct.
//!
//! The agent's configuration ([`config`], Zincati's format), its
//! maintenance windows ([`window`]) and greenboot-style health checks
//! ([`health`]) come next.
//!
//! The library prints nothing; the CLI renders.

pub mod agent;
#[cfg(test)]
mod agent_tests;
pub mod boot;
pub mod config;
pub mod etcd;
pub mod fleetlock;
pub mod health;
pub mod identity;
pub mod state;
pub mod system;
pub mod window;
