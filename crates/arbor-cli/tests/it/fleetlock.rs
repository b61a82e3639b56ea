//! `arbor fleetlock`: the server on a real etcd, the operator commands
//! (`status`, `release`) and the client requests (`pre-reboot`,
//! `steady-state`), as an operator and a machine use them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use arbor_testutil::EtcdServer;

use crate::util::{arbor, run_ok};

/// A server process, killed when dropped (a failing test too).
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `arbor fleetlock serve` on a free port; returns the process and the
/// URL its first line names.
fn serve(etcd: &str, groups: &[&str]) -> (Served, String) {
    let mut c = arbor();
    c.args([
        "fleetlock",
        "serve",
        "--etcd",
        etcd,
        "--listen",
        "127.0.0.1:0",
    ]);
    for g in groups {
        c.args(["--group", g]);
    }
    let mut child = c.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("FleetLock server at http://127.0.0.1:") && line.contains("groups solo=1"),
        "{line}"
    );
    let url = line.split_whitespace().nth(3).unwrap().to_string();
    (Served(child), url)
}

fn client(cmd: &str, url: &str, id: &str) -> (bool, String) {
    let o = arbor()
        .args([
            "fleetlock",
            cmd,
            "--url",
            url,
            "--group",
            "solo",
            "--id",
            id,
        ])
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn serve_status_release_and_client_requests() {
    let etcd = EtcdServer::start();
    let (_server, url) = serve(&etcd.url, &["solo=1"]);
    let status = || {
        run_ok(arbor().args([
            "fleetlock",
            "status",
            "--etcd",
            &etcd.url,
            "--group",
            "solo",
        ]))
    };
    assert!(status().contains("solo: no semaphore yet"), "{}", status());

    let (ok, out) = client("pre-reboot", &url, "machine-a");
    assert!(
        ok && out.contains("machine-a (group solo): slot granted"),
        "{out}"
    );
    let (ok, out) = client("pre-reboot", &url, "machine-b");
    assert!(!ok, "{out}");
    assert!(
        out.contains("refused (409 failed_lock): All 1 reboot slots of group solo are held"),
        "{out}"
    );
    assert_eq!(status().trim(), "solo: 1 of 1 slots held: machine-a");

    // machine-a never comes back: the operator releases its slot.
    let rel = run_ok(arbor().args([
        "fleetlock",
        "release",
        "--etcd",
        &etcd.url,
        "--group",
        "solo",
        "machine-a",
    ]));
    assert!(rel.contains("Released the slot of machine-a"), "{rel}");
    let (ok, out) = client("pre-reboot", &url, "machine-b");
    assert!(ok, "{out}");
    let (ok, out) = client("steady-state", &url, "machine-b");
    assert!(ok && out.contains("slot released"), "{out}");
    assert_eq!(status().trim(), "solo: 0 of 1 slots held");
    let json: serde_json::Value = serde_json::from_str(&run_ok(arbor().args([
        "fleetlock",
        "status",
        "--etcd",
        &etcd.url,
        "--group",
        "solo",
        "--json",
    ])))
    .unwrap();
    assert_eq!(json["solo"]["total_slots"], 1);

    // An unknown group: refused with the server's reason.
    let o = arbor()
        .args([
            "fleetlock",
            "pre-reboot",
            "--url",
            &url,
            "--group",
            "nope",
            "--id",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("404 unknown_group"));
}

#[test]
fn serve_refuses_bad_groups_and_an_absent_etcd() {
    let o = arbor()
        .args([
            "fleetlock",
            "serve",
            "--etcd",
            "http://127.0.0.1:9",
            "--group",
            "a=0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("Reaching etcd at http://127.0.0.1:9"),
        "{err}"
    );
    let etcd = EtcdServer::start();
    for (g, want) in [
        ("a=0", "has no slots"),
        ("a/b=1", "Invalid group name"),
        ("a", "NAME=SLOTS"),
    ] {
        let o = arbor()
            .args(["fleetlock", "serve", "--etcd", &etcd.url, "--group", g])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{g}: {err}");
    }
}
