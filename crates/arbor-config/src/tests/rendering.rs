//! Rendering: canonical form, merge rules, round trips.

use serde_json::{json, Value};

use super::*;
use crate::input::dataurl::tests::gz;
use crate::model::Config;
use crate::{parse_input, render, to_ignition};

#[test]
fn canonical_form_ignores_spelling() {
    let base = files(json!([{"path": "/etc/x", "contents": {"source": "data:,hello%0A"}}]));
    let n = name_of(&[("a.ign", doc(base.clone()))]);
    // Keys reordered and whitespace.
    let text = "{ \"storage\" : { \"files\" : [ { \"contents\" : { \"source\" : \"data:,hello%0A\" } ,\n\t\"path\" : \"/etc/x\" } ] } ,\n \"ignition\" : { \"version\" : \"3.4.0\" } }";
    assert_eq!(name_of(&[("a.ign", text.as_bytes().to_vec())]), n);
    // Defaults spelled out.
    let explicit = files(json!([{"path": "/etc/x", "mode": 420, "overwrite": false,
        "user": {"id": 0}, "group": {}, "append": [],
        "contents": {"source": "data:,hello%0A", "compression": null}}]));
    assert_eq!(name_of(&[("a.ign", doc(explicit))]), n);
    // Base64 and gzip encodings of the same bytes.
    let b = files(
        json!([{"path": "/etc/x", "contents": {"source": format!("data:text/plain;base64,{}", b64(b"hello\n"))}}]),
    );
    assert_eq!(name_of(&[("a.ign", doc(b))]), n);
    let g = files(
        json!([{"path": "/etc/x", "contents": {"compression": "gzip",
        "source": format!("data:;base64,{}", b64(&gz(b"hello\n")))}}]),
    );
    assert_eq!(name_of(&[("a.ign", doc(g))]), n);
    // An empty source is no source, as in Ignition.
    let none = files(json!([{"path": "/etc/x"}]));
    let empty = files(json!([{"path": "/etc/x", "contents": {"source": ""}}]));
    assert_eq!(
        name_of(&[("a.ign", doc(empty))]),
        name_of(&[("a.ign", doc(none))])
    );
    // Another spec version.
    let mut v30 = base.clone();
    v30["ignition"]["version"] = json!("3.0.0");
    assert_eq!(name_of(&[("a.ign", doc(v30))]), n);
    // A different content is a different name.
    let other = files(json!([{"path": "/etc/x", "contents": {"source": "data:,hello"}}]));
    assert_ne!(name_of(&[("a.ign", doc(other))]), n);
    let mode =
        files(json!([{"path": "/etc/x", "mode": 384, "contents": {"source": "data:,hello%0A"}}]));
    assert_ne!(name_of(&[("a.ign", doc(mode))]), n);
}

#[test]
fn canonical_document_shape() {
    let r = render_docs(&[(
        "a.ign",
        doc(files(
            json!([{"path": "/etc/x", "contents": {"source": "data:,hi"}}]),
        )),
    )])
    .unwrap();
    let text = std::str::from_utf8(&r.canonical).unwrap();
    assert!(text.starts_with("{\"apiVersion\":\"machineconfiguration.openshift.io/v1\",\"kind\":\"MachineConfig\",\"spec\":{\"config\":{\"ignition\":{\"version\":\"3.4.0\"}"), "{text}");
    assert!(text.contains("{\"append\":[],\"contents\":{\"source\":\"data:;base64,aGk=\"},\"group\":{\"id\":0},\"mode\":420,\"path\":\"/etc/x\",\"user\":{\"id\":0}}"), "{text}");
    assert!(!text.contains("metadata"));
    assert_eq!(
        r.name,
        format!("rendered-{}", crate::canonical::sha256_hex(&r.canonical))
    );
    assert_eq!(r.name.len(), "rendered-".len() + 64);
}

#[test]
fn empty_render_has_a_fixed_name() {
    let e = render(&[]).unwrap();
    assert_eq!(e, Rendered::empty());
    assert!(e.config.is_empty());
    let only_version = name_of(&[("a.ign", doc(json!({"ignition": {"version": "3.0.0"}})))]);
    assert_eq!(only_version, e.name);
}

/// render(render(x).canonical) gives the same bytes and name, and the
/// canonical document reads back with from_canonical; anything else
/// (pretty-printed, or a plain Ignition config) does not.
#[test]
fn round_trip_and_from_canonical() {
    let full = json!({
        "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
        "spec": {"kernelArguments": ["b", "a", "b"], "extensions": ["z", "y"],
                 "config": ign(json!({
        "storage": {
            "files": [{"path": "/etc/b", "contents": {"source": "data:,x"}, "append": [{"source": "data:,y"}]},
                      {"path": "/etc/a", "mode": 256, "user": {"name": "core"}},
                      {"path": "/var/lib/e", "contents": {"source": "data:,"}}],
            "directories": [{"path": "/var/d", "group": {"name": "wheel"}}],
            "links": [{"path": "/etc/s", "target": "b"}, {"path": "/etc/h", "target": "/etc/b", "hard": true}]
        },
        "systemd": {"units": [{"name": "b.service", "enabled": false, "dropins": [{"name": "x.conf"}]},
                              {"name": "a.timer", "contents": "[Timer]\n", "mask": false}]},
        "passwd": {"users": [{"name": "u2", "sshAuthorizedKeys": ["k2", "k1"]}, {"name": "u1", "uid": 5}],
                   "groups": [{"name": "g", "passwordHash": "!"}]}}))}
    });
    let r = render_docs(&[("x.json", doc(full))]).unwrap();
    assert_eq!(r.config.kernel_arguments, ["b", "a"]);
    let again = render_docs(&[("rendered.json", r.canonical.clone())]).unwrap();
    assert_eq!(again.canonical, r.canonical);
    assert_eq!(again.name, r.name);
    assert_eq!(again.config, r.config);
    assert_eq!(Rendered::from_canonical(&r.canonical).unwrap(), r);
    let pretty =
        serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&r.canonical).unwrap()).unwrap();
    assert!(Rendered::from_canonical(&pretty)
        .unwrap_err()
        .message
        .contains("not a canonical"));
    let ign_only = doc(to_ignition(&r.config));
    assert!(Rendered::from_canonical(&ign_only).is_err());
    // to_ignition parses back to the same declarations (but kargs and extensions).
    let back = parse_input("drift.ign", &ign_only).unwrap();
    let mut want = r.config.clone();
    want.kernel_arguments.clear();
    want.extensions.clear();
    assert_eq!(back, want);
}

#[test]
fn render_is_deterministic_across_input_order() {
    let a = doc(files(
        json!([{"path": "/etc/a", "contents": {"source": "data:,1"}}]),
    ));
    let b = doc(files(
        json!([{"path": "/etc/b", "contents": {"source": "data:,2"}}]),
    ));
    assert_eq!(
        name_of(&[("10-a.ign", a.clone()), ("20-b.ign", b.clone())]),
        name_of(&[("20-b.ign", b), ("10-a.ign", a)])
    );
}

fn mc_kargs(k: &[&str], x: &[&str]) -> Vec<u8> {
    doc(
        json!({"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
               "spec": {"kernelArguments": k, "extensions": x}}),
    )
}

#[test]
fn merge_order_and_conflicts() {
    let one = |content: &str, overwrite: bool| {
        doc(files(json!([{"path": "/etc/x", "overwrite": overwrite,
                          "contents": {"source": format!("data:,{content}")}}])))
    };
    // Identical duplicates are fine.
    let r = render_docs(&[("a.ign", one("1", false)), ("b.ign", one("1", false))]).unwrap();
    assert_eq!(
        r.config.files["/etc/x"].contents.as_deref(),
        Some(&b"1"[..])
    );
    // Different contents: an error naming both files, in name order
    // whatever the argument order.
    for docs in [
        [("b.ign", one("2", false)), ("a.ign", one("1", false))],
        [("a.ign", one("1", false)), ("b.ign", one("2", false))],
    ] {
        let e = render_docs(&docs).unwrap_err();
        assert_eq!(
            (e.file.as_str(), e.path.as_str()),
            ("b.ign", "$.storage.files[0]"),
            "{e}"
        );
        assert!(
            e.message.contains("a.ign ($.storage.files[0])") && e.message.contains("overwrite"),
            "{e}"
        );
    }
    // The later file's overwrite replaces the entry; the earlier's does not.
    let r = render_docs(&[("b.ign", one("2", true)), ("a.ign", one("1", false))]).unwrap();
    assert_eq!(
        r.config.files["/etc/x"].contents.as_deref(),
        Some(&b"2"[..])
    );
    assert!(render_docs(&[("a.ign", one("1", true)), ("b.ign", one("2", false))]).is_err());
    // Sorting is by base name: dir/z sorts after other/a.
    let r = render_docs(&[
        ("dir/z.ign", one("2", true)),
        ("other/a.ign", one("1", false)),
    ])
    .unwrap();
    assert_eq!(
        r.config.files["/etc/x"].contents.as_deref(),
        Some(&b"2"[..])
    );
    // A kind change is a conflict too, and overwrite allows it.
    let dir = |ow: bool| {
        doc(ign(
            json!({"storage": {"directories": [{"path": "/etc/x", "overwrite": ow}]}}),
        ))
    };
    let e = render_docs(&[("a.ign", one("1", false)), ("b.ign", dir(false))]).unwrap_err();
    assert!(e.message.contains("declared as a file by a.ign"), "{e}");
    let r = render_docs(&[("a.ign", one("1", false)), ("b.ign", dir(true))]).unwrap();
    assert!(r.config.files.is_empty() && r.config.directories.contains_key("/etc/x"));
    // Kernel arguments and extensions: concatenated in file order, first kept.
    let r = render_docs(&[
        ("b.yaml", mc_kargs(&["x", "quiet"], &["e2"])),
        ("a.yaml", mc_kargs(&["quiet", "y"], &["e1", "e2"])),
    ])
    .unwrap();
    assert_eq!(r.config.kernel_arguments, ["quiet", "y", "x"]);
    assert_eq!(r.config.extensions, ["e1", "e2"]);
}

#[test]
fn units_users_and_groups_merge() {
    let unit = |u: Value| doc(ign(json!({"systemd": {"units": [u]}})));
    let r = render_docs(&[
        ("a.ign", unit(json!({"name": "x.service", "enabled": true, "mask": true,
                              "dropins": [{"name": "1.conf", "contents": "d1"}]}))),
        ("b.ign", unit(json!({"name": "x.service", "enabled": false,
                              "dropins": [{"name": "1.conf", "contents": "d1"}, {"name": "2.conf", "contents": "d2"}]}))),
    ])
    .unwrap();
    let u = &r.config.units["x.service"];
    assert_eq!(
        (u.contents.as_deref(), u.enabled, u.mask),
        (None, Some(false), true)
    );
    assert_eq!(u.dropins.len(), 2);
    let e = render_docs(&[
        ("a.ign", unit(json!({"name": "x.service", "contents": "A"}))),
        ("b.ign", unit(json!({"name": "x.service", "contents": "B"}))),
    ])
    .unwrap_err();
    assert_eq!(e.file, "b.ign");
    assert!(e.message.contains("a.ign ($.systemd.units[0])"), "{e}");
    let e = render_docs(&[
        (
            "a.ign",
            unit(json!({"name": "x.service", "dropins": [{"name": "1.conf", "contents": "a"}]})),
        ),
        (
            "b.ign",
            unit(json!({"name": "x.service", "dropins": [{"name": "1.conf", "contents": "b"}]})),
        ),
    ])
    .unwrap_err();
    assert!(
        e.message.contains("drop-in x.service/1.conf") && e.message.contains("a.ign"),
        "{e}"
    );

    let user = |u: Value| doc(ign(json!({"passwd": {"users": [u]}})));
    let r = render_docs(&[("a.ign", user(json!({"name": "core", "sshAuthorizedKeys": ["k1", "k2"], "groups": ["wheel"]}))),
                          ("b.ign", user(json!({"name": "core", "uid": 1000, "sshAuthorizedKeys": ["k2", "k3"], "groups": ["adm"]})))]).unwrap();
    let u = &r.config.users["core"];
    assert_eq!(u.ssh_authorized_keys, ["k1", "k2", "k3"]);
    assert_eq!(
        u.groups,
        ["adm", "wheel"],
        "sorted: membership has no order"
    );
    assert_eq!(u.uid, Some(1000));
    let e = render_docs(&[
        (
            "a.ign",
            user(json!({"name": "core", "passwordHash": "$6$a"})),
        ),
        (
            "b.ign",
            user(json!({"name": "core", "passwordHash": "$6$b"})),
        ),
    ])
    .unwrap_err();
    assert!(
        e.message.contains("passwordHash differs") && e.message.contains("a.ign"),
        "{e}"
    );
    let group = |g: Value| doc(ign(json!({"passwd": {"groups": [g]}})));
    let e = render_docs(&[
        ("a.ign", group(json!({"name": "g", "gid": 1}))),
        ("b.ign", group(json!({"name": "g", "gid": 2}))),
    ])
    .unwrap_err();
    assert!(e.message.contains("gid differs"), "{e}");
}

#[test]
fn conflicts_in_the_tree_span_files() {
    let link = doc(ign(
        json!({"storage": {"links": [{"path": "/etc/ssh", "target": "/usr/share"}]}}),
    ));
    let file = doc(files(json!([{"path": "/etc/ssh/sshd_config"}])));
    let e = render_docs(&[("a.ign", link), ("b.ign", file)]).unwrap_err();
    assert_eq!(
        (e.file.as_str(), e.path.as_str()),
        ("b.ign", "$.storage.files[0]"),
        "{e}"
    );
    assert!(e.message.contains("a.ign ($.storage.links[0])"), "{e}");
}

#[test]
fn empty_config_is_empty() {
    assert!(Config::default().is_empty());
}

/// The canonical form is a stored format: names of rendered documents
/// written by earlier versions must stay valid. Pinned bytes and names
/// (checked with sha256sum) for the empty config and a small one.
#[test]
fn canonical_bytes_and_names_are_pinned() {
    const EMPTY: &str = "{\"apiVersion\":\"machineconfiguration.openshift.io/v1\",\"kind\":\"MachineConfig\",\
        \"spec\":{\"config\":{\"ignition\":{\"version\":\"3.4.0\"},\"passwd\":{\"groups\":[],\"users\":[]},\
        \"storage\":{\"directories\":[],\"files\":[],\"links\":[]},\"systemd\":{\"units\":[]}},\
        \"extensions\":[],\"kernelArguments\":[]}}";
    let e = Rendered::empty();
    assert_eq!(std::str::from_utf8(&e.canonical).unwrap(), EMPTY);
    assert_eq!(
        e.name,
        "rendered-aeb9b5643af585e00d733acf1a5346e0ea1093f8679a684e7808143beccfa9a6"
    );
    let small = br#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/motd","contents":{"source":"data:,hello%0A"}}]},"systemd":{"units":[{"name":"a.service","enabled":true}]}}"#;
    let r = render_docs(&[("g.ign", small.to_vec())]).unwrap();
    assert_eq!(
        std::str::from_utf8(&r.canonical).unwrap(),
        "{\"apiVersion\":\"machineconfiguration.openshift.io/v1\",\"kind\":\"MachineConfig\",\
         \"spec\":{\"config\":{\"ignition\":{\"version\":\"3.4.0\"},\"passwd\":{\"groups\":[],\"users\":[]},\
         \"storage\":{\"directories\":[],\"files\":[{\"append\":[],\"contents\":{\"source\":\"data:;base64,aGVsbG8K\"},\
         \"group\":{\"id\":0},\"mode\":420,\"path\":\"/etc/motd\",\"user\":{\"id\":0}}],\"links\":[]},\
         \"systemd\":{\"units\":[{\"dropins\":[],\"enabled\":true,\"mask\":false,\"name\":\"a.service\"}]}},\
         \"extensions\":[],\"kernelArguments\":[]}}"
    );
    assert_eq!(
        r.name,
        "rendered-c2302513f4898bd448439fc2f0c9c5b5b881fe21714d5a76fa5c88e1210e11b6"
    );
}
