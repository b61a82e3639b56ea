//! The FleetLock protocol (Zincati's reboot coordination,
//! `coreos/zincati` `docs/development/fleetlock/protocol.md`), and a
//! counting semaphore per group as Airlock keeps it.
//!
//! A client sends `POST /v1/pre-reboot` before rebooting and `POST
//! /v1/steady-state` after a good boot, with the header
//! `fleet-lock-protocol: true` and the body `{"client_params": {"id":
//! ID, "group": GROUP}}`. 200 means granted (or released); any other
//! status is a refusal, with a body `{"kind": ..., "value": ...}`.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

/// The protocol's request header (its value must be `true`).
pub const PROTOCOL_HEADER: &str = "fleet-lock-protocol";
/// The pre-reboot endpoint.
pub const PRE_REBOOT: &str = "/v1/pre-reboot";
/// The steady-state endpoint.
pub const STEADY_STATE: &str = "/v1/steady-state";
/// The group when none is configured.
pub const DEFAULT_GROUP: &str = "default";

/// A request's body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Request {
    /// Who asks.
    pub client_params: ClientParams,
}

/// Who asks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientParams {
    /// The machine's identity ([`crate::identity`]).
    pub id: String,
    /// Its reboot group.
    pub group: String,
}

/// A refusal's body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal (`failed_lock`, `bad_request`, ...).
    pub kind: String,
    /// For people.
    pub value: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.value)
    }
}

/// A group's counting semaphore, stored in etcd as Airlock stores it
/// (`coreos/airlock` `internal/lock/semaphore.go`): `{"total_slots": N,
/// "holders": [ID, ...]}`, the holders sorted. Airlock and arbor servers
/// can share one etcd, and a fleet can move from one to the other.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Semaphore {
    /// Slots.
    pub total_slots: u64,
    /// Who holds one, sorted.
    pub holders: Vec<String>,
}

impl Semaphore {
    /// An empty semaphore of `total_slots` slots.
    pub fn new(total_slots: u64) -> Semaphore {
        Semaphore {
            total_slots,
            holders: Vec::new(),
        }
    }

    /// Takes a slot for `id`: `Ok(true)` if it was taken now, `Ok(false)`
    /// if `id` already held one (a repeated request is granted again),
    /// `Err(())` if every slot is held by others.
    #[allow(clippy::result_unit_err)]
    pub fn lock(&mut self, id: &str) -> Result<bool, ()> {
        match self.holders.binary_search_by(|h| h.as_str().cmp(id)) {
            Ok(_) => Ok(false),
            Err(_) if self.holders.len() as u64 >= self.total_slots => Err(()),
            Err(at) => {
                self.holders.insert(at, id.to_string());
                Ok(true)
            }
        }
    }

    /// Gives back `id`'s slot; whether it held one.
    pub fn unlock(&mut self, id: &str) -> bool {
        let before = self.holders.len();
        self.holders.retain(|h| h != id);
        self.holders.len() != before
    }
}

/// Whether `s` can be an id or a group: 1 to 253 characters of letters,
/// digits, `-`, `_` and `.` (a group is a DNS-label-like name in Zincati;
/// an id is hex).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semaphore_counts_and_is_reentrant() {
        let mut s = Semaphore::new(2);
        assert_eq!(s.lock("b"), Ok(true));
        assert_eq!(s.lock("b"), Ok(false));
        assert_eq!(s.lock("a"), Ok(true));
        assert_eq!(s.lock("c"), Err(()));
        assert_eq!(s.holders, ["a", "b"]);
        assert!(s.unlock("a"));
        assert!(!s.unlock("a"));
        assert_eq!(s.lock("c"), Ok(true));
        assert_eq!(s.holders, ["b", "c"]);
        // Airlock's JSON, both ways.
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, r#"{"total_slots":2,"holders":["b","c"]}"#);
        let a: Semaphore = serde_json::from_str(r#"{"total_slots":3,"holders":["x"]}"#).unwrap();
        assert_eq!(
            a,
            Semaphore {
                total_slots: 3,
                holders: vec!["x".into()]
            }
        );
    }

    #[test]
    fn names() {
        assert!(valid_name("default") && valid_name("web-1.eu_west"));
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(254)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
