//! Fixes from the review of input parsing and render: each test names
//! the behaviour it pins.

use serde_json::{json, Value};

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

/// Supplementary groups are a set: their order, in one file or across
/// files, does not change the rendered name.
#[test]
fn user_group_order_does_not_change_the_name() {
    let u = |groups: Value| {
        doc(ign(
            json!({"passwd": {"users": [{"name": "core", "groups": groups}]}}),
        ))
    };
    let ab = name_of(&[("a.ign", u(json!(["wheel", "adm"])))]);
    assert_eq!(ab, name_of(&[("a.ign", u(json!(["adm", "wheel"])))]));
    let split = name_of(&[
        ("a.ign", u(json!(["wheel"]))),
        ("b.ign", u(json!(["adm", "wheel"]))),
    ]);
    assert_eq!(ab, split);
    let c = parse_input("a.ign", &u(json!(["wheel", "adm"]))).unwrap();
    assert_eq!(c.users["core"].groups, ["adm", "wheel"]);
}

/// Empty unit contents are no contents (Ignition's NilOrEmpty): no
/// zero-byte unit file, which systemd reads as masked. A drop-in without
/// contents is skipped, as Ignition skips it.
#[test]
fn empty_unit_and_dropin_contents_are_absent() {
    let u = |unit: Value| doc(ign(json!({"systemd": {"units": [unit]}})));
    let c = parse_input(
        "a.ign",
        &u(
            json!({"name": "a.service", "contents": "", "enabled": false,
                   "dropins": [{"name": "1.conf", "contents": ""}, {"name": "2.conf"}]}),
        ),
    )
    .unwrap();
    assert_eq!(c.units["a.service"].contents, None);
    assert!(c.units["a.service"].dropins.is_empty());
    let absent = name_of(&[("a.ign", u(json!({"name": "a.service", "enabled": false})))]);
    let empty = name_of(&[(
        "a.ign",
        u(
            json!({"name": "a.service", "contents": "", "enabled": false,
                 "dropins": [{"name": "1.conf", "contents": ""}, {"name": "2.conf"}]}),
        ),
    )]);
    assert_eq!(absent, empty);
}

/// The YAML depth guard sees through node properties: a tag or an
/// anchor before `[` or `{` used to hide the bracket from the scan, and
/// libyaml then took seconds (quadratic) on 1 MiB of `!!seq [`.
#[test]
fn deep_yaml_behind_tags_and_anchors_fails_fast() {
    for unit in ["!!seq [", "&a [", "!t &b {c: ", "!!map {d: "] {
        let n = (1 << 20) / unit.len();
        let yaml = format!("x: {}\n", unit.repeat(n));
        let t = std::time::Instant::now();
        let e = crate::parse_input("a.yaml", yaml.as_bytes()).unwrap_err();
        assert!(
            e.message.contains("nested deeper than 100 levels"),
            "{unit}: {e}"
        );
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{unit}: {:?}",
            t.elapsed()
        );
    }
}

/// What `oc get machineconfig -o yaml` prints is accepted: Kubernetes
/// metadata is ignored, and zero values of unsupported keys (`fips:
/// false`, `""`, `[]`, `{}`, recursively) declare nothing, as Go's
/// omitempty and Ignition's NilOrEmpty read them. A non-zero value is
/// still refused with its path.
#[test]
fn ordinary_machine_configs_are_accepted() {
    let plain = json!({"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
        "metadata": {"name": "99-x"},
        "spec": {"config": {"ignition": {"version": "3.2.0"},
                 "storage": {"files": [{"path": "/etc/x", "contents": {"source": "data:,a"}}]}}}});
    let full = json!({"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
        "metadata": {"name": "99-x", "generation": 3, "resourceVersion": "1234",
                     "uid": "0b5d-...", "creationTimestamp": "2026-01-01T00:00:00Z",
                     "ownerReferences": [{"kind": "ControllerConfig", "name": "c"}],
                     "managedFields": [{"manager": "m"}], "labels": {"a": "b"},
                     "annotations": {"c": "d"}},
        "spec": {"fips": false, "kernelType": "", "osImageURL": "", "kernelArguments": [],
                 "extensions": [],
                 "config": {"ignition": {"version": "3.2.0", "config": {"merge": [], "replace": {}},
                                         "proxy": {}, "security": {"tls": {"certificateAuthorities": []}},
                                         "timeouts": {}},
                            "storage": {"disks": [], "filesystems": [], "raid": [], "luks": [],
                                        "files": [{"path": "/etc/x", "contents": {"source": "data:,a",
                                                   "httpHeaders": []}}]},
                            "passwd": {}, "systemd": {}}}});
    assert_eq!(
        name_of(&[("a.yaml", doc(plain))]),
        name_of(&[("a.yaml", doc(full.clone()))])
    );
    for (at, bad, path) in [
        ("fips", json!(true), "$.spec.fips"),
        ("kernelType", json!("realtime"), "$.spec.kernelType"),
    ] {
        let mut v = full.clone();
        v["spec"][at] = bad;
        refused(&doc(v), path, "not supported");
    }
    let mut v = full.clone();
    v["spec"]["config"]["storage"]["disks"] = json!([{"device": "/dev/sda", "wipeTable": false}]);
    refused(&doc(v), "$.spec.config.storage.disks", "not supported");
    let mut v = full.clone();
    v["spec"]["config"]["ignition"]["timeouts"] = json!({"httpTotal": 0});
    refused(&doc(v), "$.spec.config.ignition.timeouts", "not supported");
    // shouldExist: false deletes a user: not a zero value.
    let mut v = full;
    v["spec"]["config"]["passwd"] = json!({"users": [{"name": "a", "shouldExist": false}]});
    refused(
        &doc(v),
        "$.spec.config.passwd.users[0].shouldExist",
        "not supported",
    );
}

/// A render at the decoded-contents limit reads back: the canonical
/// document (contents in base64) fits the bound `from_canonical` reads,
/// which `apply` uses on the next apply and for drift.
#[test]
fn a_render_at_the_content_limit_reads_back() {
    use crate::input::dataurl::{tests::gz, MAX_FILE_BYTES, MAX_TOTAL_BYTES};
    use crate::render::MAX_RENDERED_BYTES;
    let big = format!(
        "data:;base64,{}",
        b64(&gz(&vec![b'x'; MAX_FILE_BYTES as usize]))
    );
    let n = (MAX_TOTAL_BYTES / MAX_FILE_BYTES) as usize;
    let f: Vec<Value> = (0..n)
        .map(|i| json!({"path": format!("/etc/big{i}"), "contents": {"source": big, "compression": "gzip"}}))
        .collect();
    let r = render_docs(&[("a.ign", doc(files(Value::Array(f.clone()))))]).unwrap();
    assert!((r.canonical.len() as u64) < MAX_RENDERED_BYTES);
    let back = Rendered::from_canonical(&r.canonical).unwrap();
    assert_eq!(back.name, r.name);
    assert_eq!(back.config, r.config);
    // One byte more is refused at render, not at the next apply.
    let mut more = f;
    more.push(json!({"path": "/etc/one", "contents": {"source": "data:,x"}}));
    let e = render_docs(&[("a.ign", doc(files(Value::Array(more))))]).unwrap_err();
    assert!(e.message.contains("exceed 32 MiB"), "{e}");
}

/// Declarations beyond file contents (unit texts of several inputs) can
/// also make the canonical document too large to read back: refused at
/// render.
#[test]
fn a_rendered_document_too_large_to_read_back_is_refused() {
    use crate::render::MAX_RENDERED_BYTES;
    let per = 14 << 20;
    let n = (MAX_RENDERED_BYTES as usize) / per + 1;
    let docs: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let text = "x".repeat(per);
            let d = ign(json!({"systemd": {"units": [{"name": format!("u{i}.service"), "contents": text}]}}));
            (format!("{i}.ign"), doc(d))
        })
        .collect();
    let e = render(&docs).unwrap_err();
    assert_eq!(e.path, "$");
    assert!(e.message.contains("more than the 64 MiB limit"), "{e}");
}

#[track_caller]
fn render_refused(docs: &[(&str, Value)], file: &str, path: &str, msg: &str) {
    let docs: Vec<(&str, Vec<u8>)> = docs.iter().map(|(n, v)| (*n, doc(v.clone()))).collect();
    let e = render_docs(&docs).unwrap_err();
    assert_eq!((e.file.as_str(), e.path.as_str()), (file, path), "{e}");
    assert!(e.message.contains(msg), "{e}");
}

/// What apply would refuse (with no file or JSON path to show) is
/// refused at render, naming both.
#[test]
fn render_refuses_what_apply_cannot_do() {
    let unit = |u: Value| ign(json!({"systemd": {"units": [u]}}));
    // Masked and with contents or enabled, in one file or across files.
    render_refused(
        &[(
            "a.ign",
            unit(json!({"name": "u.service", "mask": true, "contents": "[Unit]\n"})),
        )],
        "a.ign",
        "$.systemd.units[0].mask",
        "a.ign ($.systemd.units[0].contents) gives it contents",
    );
    render_refused(
        &[(
            "a.ign",
            unit(json!({"name": "u.service", "mask": true, "enabled": true})),
        )],
        "a.ign",
        "$.systemd.units[0].mask",
        "enabled: true",
    );
    render_refused(
        &[
            (
                "10-u.ign",
                unit(json!({"name": "u.service", "contents": "[Unit]\n"})),
            ),
            ("20-u.ign", unit(json!({"name": "u.service", "mask": true}))),
        ],
        "20-u.ign",
        "$.systemd.units[0].mask",
        "10-u.ign ($.systemd.units[0].contents)",
    );
    // Disabled and masked is fine.
    render_docs(&[(
        "a.ign",
        doc(unit(
            json!({"name": "u.service", "mask": true, "enabled": false}),
        )),
    )])
    .unwrap();
    // A storage entry where a unit or drop-in is written.
    let both = |storage: Value, u: Value| {
        let mut d = ign(json!({"storage": storage}));
        d["systemd"] = json!({"units": [u]});
        d
    };
    render_refused(
        &[(
            "a.ign",
            both(
                json!({"files": [{"path": "/etc/systemd/system/a.service"}]}),
                json!({"name": "a.service", "contents": "[Unit]\n"}),
            ),
        )],
        "a.ign",
        "$.storage.files[0]",
        "unit a.service (in a.ign ($.systemd.units[0])) writes /etc/systemd/system/a.service",
    );
    render_refused(
        &[
            (
                "a.ign",
                both(
                    json!({"links": [{"path": "/etc/systemd/system/a.service.d", "target": "/tmp"}]}),
                    json!({"name": "x.service"}),
                ),
            ),
            (
                "b.ign",
                unit(
                    json!({"name": "a.service", "dropins": [{"name": "1.conf", "contents": "x"}]}),
                ),
            ),
        ],
        "a.ign",
        "$.storage.links[0]",
        "declared as a symbolic link, but unit a.service (in b.ign",
    );
    // A declared directory for the drop-ins is fine.
    render_docs(&[(
        "a.ign",
        doc(both(
            json!({"directories": [{"path": "/etc/systemd/system/a.service.d"}]}),
            json!({"name": "a.service", "dropins": [{"name": "1.conf", "contents": "x"}]}),
        )),
    )])
    .unwrap();
    // Hard links apply cannot make.
    let links = |l: Value| ign(json!({"storage": {"links": l, "files": [{"path": "/etc/f"}]}}));
    for (l, at, msg) in [
        (
            json!([{"path": "/etc/s", "target": "/usr/share"}, {"path": "/etc/h", "target": "/etc/s/x", "hard": true}]),
            "$.storage.links[1].target",
            "below /etc/s, declared as a symbolic link",
        ),
        (
            json!([{"path": "/etc/s", "target": "f"}, {"path": "/etc/h", "target": "/etc/s", "hard": true}]),
            "$.storage.links[1].target",
            "declared as a symbolic link",
        ),
        (
            json!([{"path": "/etc/h", "target": "/etc/h", "hard": true}]),
            "$.storage.links[0].target",
            "to itself or a cycle",
        ),
        (
            json!([{"path": "/etc/h1", "target": "/etc/h2", "hard": true}, {"path": "/etc/h2", "target": "/etc/h1", "hard": true}]),
            "$.storage.links[0].target",
            "to itself or a cycle",
        ),
        (
            json!([{"path": "/var/h", "target": "/var/f", "hard": true}]),
            "$.storage.links[0].hard",
            "under /var are not supported",
        ),
        (
            json!([{"path": "/etc/h", "target": "/var/f", "hard": true}]),
            "$.storage.links[0].target",
            "must point to a file in /etc",
        ),
    ] {
        render_refused(&[("a.ign", links(l.clone()))], "a.ign", at, msg);
        refused(&doc(links(l)), at, msg);
    }
    // A chain of hard links to a file is fine.
    render_docs(&[("a.ign", doc(links(json!([{"path": "/etc/h1", "target": "/etc/h2", "hard": true},
                                             {"path": "/etc/h2", "target": "/etc/f", "hard": true}]))))])
        .unwrap();
}

/// Ignition keeps an existing file's mode when a file has no mode and no
/// contents (an `append`), and an existing directory's without mode and
/// overwrite: a line appended to the 0440 `/etc/sudoers` must not make
/// it 0644 (world-readable). With contents, the default is 0644.
#[test]
fn append_keeps_the_os_default_mode() {
    use crate::compose::tests::{compose, Sys};
    use std::os::unix::fs::PermissionsExt;
    let d = ign(json!({"storage": {
        "files": [{"path": "/etc/sudoers", "append": [{"source": "data:,%25admin%20ALL%3D(ALL)%20ALL%0A"}]},
                  {"path": "/etc/new.conf", "append": [{"source": "data:,x"}]},
                  {"path": "/etc/chrony/chrony.conf", "contents": {"source": "data:,pool%20x%0A"}}],
        "directories": [{"path": "/etc/sudoers.d"}, {"path": "/etc/newdir"}]}}));
    let r = render_docs(&[("a.ign", doc(d))]).unwrap();
    assert_eq!(r.config.files["/etc/sudoers"].mode, None);
    assert_eq!(r.config.files["/etc/chrony/chrony.conf"].mode, Some(0o644));
    assert_eq!(r.config.directories["/etc/sudoers.d"].mode, None);
    // The canonical form leaves the mode out, and reads back the same.
    assert_eq!(Rendered::from_canonical(&r.canonical).unwrap(), r);
    let s = Sys::new();
    let d1 = s.os("d1");
    std::fs::set_permissions(
        d1.root.join("usr/etc/sudoers.d"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    compose(None, None, &d1, &r.config, true).unwrap();
    let mode = |rel: &str| d1.path(rel).metadata().unwrap().permissions().mode() & 0o7777;
    assert!(d1.read("sudoers").ends_with("%admin ALL=(ALL) ALL\n"));
    assert_eq!(mode("sudoers"), 0o440);
    assert_eq!(mode("sudoers.d"), 0o750);
    assert_eq!(mode("new.conf"), 0o644);
    assert_eq!(mode("newdir"), 0o755);
    assert_eq!(mode("chrony/chrony.conf"), 0o644);
}

/// MachineConfigs merge in metadata.name order, as MCO merges them;
/// Ignition files (no name) by file name.
#[test]
fn machine_configs_merge_by_metadata_name() {
    let mc = |name: &str, karg: &str, contents: &str, overwrite: bool| {
        doc(
            json!({"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
            "metadata": {"name": name},
            "spec": {"kernelArguments": [karg],
                     "config": {"ignition": {"version": "3.2.0"},
                                "storage": {"files": [{"path": "/etc/x", "overwrite": overwrite,
                                                       "contents": {"source": format!("data:,{contents}")}}]}}}}),
        )
    };
    // File names say z then a; metadata names say a (00-) then z (99-).
    let r = render_docs(&[
        ("a.yaml", mc("99-z", "z=1", "late", true)),
        ("z.yaml", mc("00-a", "a=1", "early", true)),
    ])
    .unwrap();
    assert_eq!(r.config.kernel_arguments, ["a=1", "z=1"]);
    assert_eq!(
        r.config.files["/etc/x"].contents.as_deref(),
        Some(&b"late"[..])
    );
    // An Ignition file takes its place by file name among the names.
    let ignf = doc(files(
        json!([{"path": "/etc/x", "overwrite": true, "contents": {"source": "data:,ign"}}]),
    ));
    let r = render_docs(&[
        ("a.yaml", mc("99-z", "z=1", "late", true)),
        ("50-b.ign", ignf.clone()),
        ("z.yaml", mc("00-a", "a=1", "early", true)),
    ])
    .unwrap();
    assert_eq!(
        r.config.files["/etc/x"].contents.as_deref(),
        Some(&b"late"[..])
    );
    let r = render_docs(&[
        ("a.yaml", mc("10-z", "z=1", "mc", true)),
        ("50-b.ign", ignf),
    ])
    .unwrap();
    assert_eq!(
        r.config.files["/etc/x"].contents.as_deref(),
        Some(&b"ign"[..])
    );
}

/// A long chain of hard links (each to the next, the last to a file) is
/// checked in linear time: 20,000 links render in well under a second of
/// checking (following each chain from every link was cubic: 6,000 links
/// took minutes), and a cycle at the end of a long chain is still found.
#[test]
fn a_long_hard_link_chain_renders_quickly() {
    const N: usize = 20_000;
    let chain = |last: &str| -> Vec<u8> {
        let links: Vec<Value> = (0..N)
            .map(|i| {
                let to = if i + 1 < N {
                    format!("/etc/h/l{}", i + 1)
                } else {
                    last.to_string()
                };
                json!({"path": format!("/etc/h/l{i}"), "target": to, "hard": true})
            })
            .collect();
        doc(ign(
            json!({"storage": {"links": links, "files": [{"path": "/etc/h/file"}]}}),
        ))
    };
    let start = std::time::Instant::now();
    render_docs(&[("a.ign", chain("/etc/h/file"))]).unwrap();
    let took = start.elapsed();
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    let e = render_docs(&[("a.ign", chain("/etc/h/l0"))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("a hard link to itself or a cycle"), "{e}");
}
