//! arbor-agent: automatic updates, as Fedora CoreOS has them with Zincati
//! (the agent), Airlock (the reboot coordinator) and greenboot (health
//! checks), compatible with their protocols.
//!
//! Reboot coordination is the FleetLock protocol:
//!
//! - [`fleetlock::client`]: what an agent asks before it reboots
//!   (`POST /v1/pre-reboot`) and says after a good boot (`POST
//!   /v1/steady-state`), with Zincati's machine identity ([`identity`]);
//! - [`fleetlock::server`]: Airlock's semantics, a counting semaphore per
//!   group whose state lives in etcd ([`etcd`]), changed only by
//!   compare-and-swap transactions, so several servers on one etcd stay
//!   correct.
//!
//! The agent itself ([`agent`], a state machine over a [`agent::Host`];
//! [`system::SystemHost`] on a real sysroot) checks the origin on a
//! schedule, stages with the finalization locked and reboots as its
//! configuration ([`config`], Zincati's format) allows: at once, inside a
//! maintenance window ([`window`]), or with a FleetLock slot. Its state
//! for monitoring is [`state`]. After each boot, [`boot`] gives the
//! verdict: greenboot-style health checks ([`health`]), boot counting in
//! GRUB's environment block (`arbor_sysroot::bootcount`), and the
//! automatic rollback of a release that used up its boots.
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
