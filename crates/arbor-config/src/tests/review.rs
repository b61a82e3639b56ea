//! Fixes from the review of input parsing and render: each test names
//! the behaviour it pins.

use serde_json::json;

use super::*;
use crate::parse_input;

/// An empty `passwordHash` is Ignition's "locked" for a user ("*") and
/// nothing for a group: never an empty shadow field (no password).
#[test]
fn empty_password_hash_locks_the_account() {
    let d = ign(json!({"passwd": {
        "users": [{"name": "core", "passwordHash": ""}],
        "groups": [{"name": "admins", "passwordHash": ""}]}}));
    let c = parse_input("a.ign", &doc(d)).unwrap();
    assert_eq!(c.users["core"].password_hash.as_deref(), Some("*"));
    assert_eq!(c.groups["admins"].password_hash, None);
    // One canonical form: "" and "*" render the same.
    let star = ign(json!({"passwd": {
        "users": [{"name": "core", "passwordHash": "*"}],
        "groups": [{"name": "admins"}]}}));
    let empty = ign(json!({"passwd": {
        "users": [{"name": "core", "passwordHash": ""}],
        "groups": [{"name": "admins", "passwordHash": ""}]}}));
    assert_eq!(
        name_of(&[("a.ign", doc(star))]),
        name_of(&[("a.ign", doc(empty))])
    );
}
