//! The FleetLock server on a real etcd (Debian's etcd-server, started on
//! 127.0.0.1): many agents, two servers, the slot count never exceeded;
//! malformed requests refused without touching etcd; the identity as
//! systemd derives it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbor_agent::etcd::Etcd;
use arbor_agent::fleetlock::client::{lock_with_retries, Answer, Backoff, Client};
use arbor_agent::fleetlock::server::{self, Server};
use arbor_agent::fleetlock::Semaphore;
use arbor_testutil::EtcdServer;

/// Starts a server for `groups` on a free port; returns its URL.
fn start_server(etcd: &str, groups: &[(&str, u64)]) -> String {
    let groups: BTreeMap<String, u64> = groups.iter().map(|(g, n)| (g.to_string(), *n)).collect();
    let s = Arc::new(Server::new(Etcd::new(etcd).unwrap(), groups).unwrap());
    let l = server::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || s.serve(l));
    url
}

/// 20 agents in one group of 2 slots, asking two servers on the same etcd
/// (alternately) until each got its slot, held it 40 ms, and gave it back.
/// Every grant is recorded; at no time do more than 2 agents hold a slot
/// (by the agents' own count, and by etcd's state, polled meanwhile).
#[test]
fn twenty_agents_two_slots_two_servers() {
    let etcd = EtcdServer::start();
    let servers = [
        start_server(&etcd.url, &[("workers", 2)]),
        start_server(&etcd.url, &[("workers", 2)]),
    ];
    let holding = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let grants = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let polled_most = {
        let (e, done) = (Etcd::new(&etcd.url).unwrap(), done.clone());
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(Ordering::Acquire) {
                if let Some(s) = server::semaphore(&e, "workers").unwrap() {
                    most = most.max(s.holders.len());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        })
    };
    let t0 = Instant::now();
    let agents: Vec<_> = (0..20)
        .map(|i| {
            let id = format!("agent-{i:02}");
            let c = Client::new(&servers[i % 2], &id, "workers").unwrap();
            let e = Etcd::new(&etcd.url).unwrap();
            let (holding, most, grants) = (holding.clone(), most.clone(), grants.clone());
            std::thread::spawn(move || {
                let mut tries = 0;
                loop {
                    tries += 1;
                    assert!(t0.elapsed() < Duration::from_secs(120), "agent {i} starved");
                    match c.pre_reboot().unwrap() {
                        Answer::Granted => break,
                        Answer::Refused { status, refusal } => {
                            assert_eq!((status, refusal.kind.as_str()), (409, "failed_lock"));
                            std::thread::sleep(Duration::from_millis(5 + (i as u64 % 7)));
                        }
                    }
                }
                // A lost update would drop a holder: every agent finds
                // itself in etcd's holders from its grant to its release.
                let held = |when: &str| {
                    let s = server::semaphore(&e, "workers").unwrap().unwrap();
                    assert!(
                        s.holders.contains(&id),
                        "{id} missing from etcd {when}: {s:?}"
                    );
                };
                held("after its grant");
                let now = holding.fetch_add(1, Ordering::AcqRel) + 1;
                most.fetch_max(now, Ordering::AcqRel);
                grants.lock().unwrap().push((i, t0.elapsed(), tries));
                std::thread::sleep(Duration::from_millis(40));
                holding.fetch_sub(1, Ordering::AcqRel);
                held("before its release");
                assert_eq!(c.steady_state().unwrap(), Answer::Granted);
            })
        })
        .collect();
    for a in agents {
        a.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let polled = polled_most.join().unwrap();
    let grants = grants.lock().unwrap();
    eprintln!(
        "20 agents, 2 slots, 2 servers: all done in {:?}; most holders seen by agents {}, in etcd {polled}; tries per agent {:?}",
        t0.elapsed(),
        most.load(Ordering::Acquire),
        grants.iter().map(|g| g.2).collect::<Vec<_>>()
    );
    assert_eq!(grants.len(), 20);
    assert_eq!(most.load(Ordering::Acquire), 2, "the agents' count");
    assert_eq!(polled, 2, "etcd's holders");
    let s = server::semaphore(&Etcd::new(&etcd.url).unwrap(), "workers")
        .unwrap()
        .unwrap();
    assert_eq!((s.total_slots, s.holders.len()), (2, 0));
}

/// A holder that never reports steady-state keeps its slot (asking again
/// is granted again), until an operator releases it.
#[test]
fn a_holder_keeps_its_slot_until_released() {
    let etcd = EtcdServer::start();
    let url = start_server(&etcd.url, &[("solo", 1)]);
    let (a, b) = (
        Client::new(&url, "aaa", "solo").unwrap(),
        Client::new(&url, "bbb", "solo").unwrap(),
    );
    assert_eq!(a.pre_reboot().unwrap(), Answer::Granted);
    for _ in 0..3 {
        let Answer::Refused { status, refusal } = b.pre_reboot().unwrap() else {
            panic!("bbb got the slot aaa holds");
        };
        assert_eq!((status, refusal.kind.as_str()), (409, "failed_lock"));
        assert!(
            refusal
                .value
                .contains("All 1 reboot slots of group solo are held"),
            "{refusal:?}"
        );
    }
    assert_eq!(a.pre_reboot().unwrap(), Answer::Granted, "re-entrant");
    // b retries with backoff (no real sleeping), still refused.
    let mut slept = Vec::new();
    let (last, tries) = lock_with_retries(
        &b,
        Backoff::new(Duration::from_secs(1), Duration::from_secs(4)),
        4,
        |d| slept.push(d.as_secs()),
    )
    .unwrap();
    assert!(matches!(last, Answer::Refused { status: 409, .. }));
    assert_eq!((tries, slept), (4, vec![1, 2, 4]));
    let e = Etcd::new(&etcd.url).unwrap();
    assert!(server::release(&e, "solo", "aaa").unwrap());
    assert!(!server::release(&e, "solo", "aaa").unwrap());
    assert_eq!(b.pre_reboot().unwrap(), Answer::Granted);
    assert_eq!(
        server::semaphore(&e, "solo").unwrap().unwrap().holders,
        ["bbb"]
    );
}

/// Sends `raw` to the server and returns (status, body).
fn raw_request(url: &str, raw: &[u8]) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    // The server may answer (413) before it read everything.
    let _ = c.write_all(raw);
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let status = resp.split(' ').nth(1).unwrap().parse().unwrap();
    let body = resp
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

fn post(path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Malformed requests get a clear HTTP error and change nothing in etcd
/// (its revision stays the same).
#[test]
fn malformed_requests_change_nothing() {
    let etcd = EtcdServer::start();
    let url = start_server(&etcd.url, &[("default", 1)]);
    let e = Etcd::new(&etcd.url).unwrap();
    let good = r#"{"client_params":{"id":"abc","group":"default"}}"#;
    let proto = "fleet-lock-protocol: true\r\n";
    let big = format!(
        "POST /v1/pre-reboot HTTP/1.1\r\n{proto}Content-Length: {}\r\n\r\n{}",
        1 << 20,
        "x".repeat(1 << 20)
    );
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "no protocol header",
            post("/v1/pre-reboot", "", good),
            400,
            "missing_protocol_header",
        ),
        (
            "protocol false",
            post("/v1/pre-reboot", "fleet-lock-protocol: false\r\n", good),
            400,
            "missing_protocol_header",
        ),
        (
            "bad JSON",
            post("/v1/pre-reboot", proto, "{not json"),
            400,
            "bad_request",
        ),
        (
            "no client_params",
            post("/v1/pre-reboot", proto, r#"{"id":"abc"}"#),
            400,
            "bad_request",
        ),
        (
            "bad id",
            post(
                "/v1/pre-reboot",
                proto,
                r#"{"client_params":{"id":"a/../b","group":"default"}}"#,
            ),
            400,
            "bad_request",
        ),
        (
            "unknown group",
            post(
                "/v1/pre-reboot",
                proto,
                r#"{"client_params":{"id":"abc","group":"other"}}"#,
            ),
            404,
            "unknown_group",
        ),
        ("1 MB body", big.into_bytes(), 413, "too_large"),
        (
            "GET",
            b"GET /v1/pre-reboot HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            405,
            "method_not_allowed",
        ),
        (
            "other path",
            post("/v1/other", proto, good),
            404,
            "not_found",
        ),
        (
            "garbage",
            b"\x00\x01\x02 nonsense\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
    ];
    let before = e.revision().unwrap();
    for (what, raw, status, kind) in cases {
        let (s, body) = raw_request(&url, &raw);
        assert_eq!(s, status, "{what}: {body}");
        let r: arbor_agent::fleetlock::Refusal = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{what}: not a refusal body ({e}): {body:?}"));
        assert_eq!(r.kind, kind, "{what}: {body}");
        assert!(!r.value.is_empty(), "{what}");
    }
    assert_eq!(
        e.revision().unwrap(),
        before,
        "a malformed request changed etcd"
    );
    assert!(server::semaphore(&e, "default").unwrap().is_none());
    // A good one does change it.
    let (s, _) = raw_request(&url, &post("/v1/pre-reboot", proto, good));
    assert_eq!(s, 200);
    assert!(e.revision().unwrap() > before);
}

/// The id is the one `systemd-id128 machine-id -a APP` prints for
/// Zincati's application ID (what Zincati sends), for this machine.
#[test]
fn identity_is_systemds_app_specific_id() {
    let out = std::process::Command::new("systemd-id128")
        .args(["machine-id", "-a", "de35106b6ec24688b63afddaa156679b"])
        .output()
        .expect("systemd-id128 (Debian package systemd)");
    assert!(out.status.success(), "{out:?}");
    let want = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(arbor_agent::identity::this_machine().unwrap(), want);
}

/// The compare-and-swap every change rests on, against etcd itself: of
/// two writers that read the same revision, exactly one wins; "only if
/// absent" fails on an existing key; an old revision fails after the
/// key changed.
#[test]
fn etcd_compare_and_swap() {
    let etcd = EtcdServer::start();
    let e = Etcd::new(&etcd.url).unwrap();
    assert_eq!(e.get("k").unwrap(), None);
    assert!(e.put_if("k", b"one", 0).unwrap());
    assert!(!e.put_if("k", b"two", 0).unwrap(), "created twice");
    let v = e.get("k").unwrap().unwrap();
    assert_eq!(v.value, b"one");
    let (a, b) = (
        e.put_if("k", b"a", v.mod_revision).unwrap(),
        e.put_if("k", b"b", v.mod_revision).unwrap(),
    );
    assert!(
        a && !b,
        "both writers of revision {} won: {a} {b}",
        v.mod_revision
    );
    assert_eq!(e.get("k").unwrap().unwrap().value, b"a");
    assert!(
        !e.put_if("k", b"c", v.mod_revision).unwrap(),
        "a stale revision won"
    );
}

/// A semaphore Airlock wrote is read and kept in Airlock's form, and its
/// stored slot count counts, not this server's.
#[test]
fn airlock_semaphores_are_shared() {
    let etcd = EtcdServer::start();
    let e = Etcd::new(&etcd.url).unwrap();
    let key = server::key("solo");
    assert_eq!(key, "com.coreos.airlock/groups/solo/v1/semaphore");
    assert!(e
        .put_if(&key, br#"{"total_slots":1,"holders":["zeta"]}"#, 0)
        .unwrap());
    let url = start_server(&etcd.url, &[("solo", 3)]);
    let alpha = Client::new(&url, "alpha", "solo").unwrap();
    assert!(matches!(
        alpha.pre_reboot().unwrap(),
        Answer::Refused { status: 409, .. }
    ));
    assert!(server::release(&e, "solo", "zeta").unwrap());
    assert_eq!(
        e.get(&key).unwrap().unwrap().value,
        br#"{"total_slots":1,"holders":[]}"#
    );
    assert_eq!(alpha.pre_reboot().unwrap(), Answer::Granted);
    let beta = Client::new(&url, "beta", "solo").unwrap();
    assert!(matches!(
        beta.pre_reboot().unwrap(),
        Answer::Refused { status: 409, .. }
    ));
    assert_eq!(
        server::semaphore(&e, "solo").unwrap().unwrap(),
        Semaphore {
            total_slots: 1,
            holders: vec!["alpha".into()]
        }
    );
    assert_eq!(
        e.get(&key).unwrap().unwrap().value,
        br#"{"total_slots":1,"holders":["alpha"]}"#
    );
}

/// A damaged stored value, and an etcd that is gone: the server says what
/// kind of failure it is without its internals (the URL, etcd's text).
#[test]
fn store_failures_are_reported_without_internals() {
    let etcd = EtcdServer::start();
    let e = Etcd::new(&etcd.url).unwrap();
    assert!(e.put_if(&server::key("broken"), b"not json", 0).unwrap());
    let url = start_server(&etcd.url, &[("broken", 1)]);
    let c = Client::new(&url, "abc", "broken").unwrap();
    let Answer::Refused { status, refusal } = c.pre_reboot().unwrap() else {
        panic!("granted on a damaged semaphore");
    };
    assert_eq!((status, refusal.kind.as_str()), (500, "corrupt_semaphore"));
    assert!(!refusal.value.contains("127.0.0.1"), "{refusal:?}");
    let gone = format!("http://127.0.0.1:{}", arbor_testutil::free_port());
    let url = start_server(&gone, &[("default", 1)]);
    let c = Client::new(&url, "abc", "default").unwrap();
    let Answer::Refused { status, refusal } = c.pre_reboot().unwrap() else {
        panic!("granted without etcd");
    };
    assert_eq!((status, refusal.kind.as_str()), (503, "store_unavailable"));
    assert!(!refusal.value.contains("127.0.0.1"), "{refusal:?}");
}
