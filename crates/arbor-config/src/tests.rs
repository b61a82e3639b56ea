//! Parsing and rendering tests on in-memory documents.

use base64::Engine;
use serde_json::{json, Value};

use crate::input::dataurl::tests::{bomb, gz};
use crate::model::{Config, FileEntry, Owner};
use crate::{parse_input, render, to_ignition, InputError, Rendered};

fn doc(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

fn ign(storage_etc: Value) -> Value {
    let mut v = json!({"ignition": {"version": "3.4.0"}});
    v.as_object_mut()
        .unwrap()
        .extend(storage_etc.as_object().unwrap().clone());
    v
}

fn files(f: Value) -> Value {
    ign(json!({"storage": {"files": f}}))
}

fn render_docs(docs: &[(&str, Vec<u8>)]) -> Result<Rendered, InputError> {
    let inputs: Vec<(String, Vec<u8>)> = docs
        .iter()
        .map(|(n, b)| (n.to_string(), b.clone()))
        .collect();
    render(&inputs)
}

fn name_of(docs: &[(&str, Vec<u8>)]) -> String {
    render_docs(docs).unwrap().name
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[track_caller]
fn refused(bytes: &[u8], path: &str, msg: &str) {
    let e = parse_input("a.ign", bytes).unwrap_err();
    assert_eq!((e.file.as_str(), e.path.as_str()), ("a.ign", path), "{e}");
    assert!(e.message.contains(msg), "{e}");
    assert_eq!(e.to_string(), format!("a.ign: {path}: {}", e.message));
}

#[test]
fn parses_the_supported_subset() {
    let d = ign(json!({
        "storage": {
            "files": [{"path": "/etc/a.conf", "mode": 384, "overwrite": true,
                       "contents": {"source": "data:,x%3Dy%0A"},
                       "append": [{"source": "data:;base64,Wgo="}],
                       "user": {"name": "core"}, "group": {"id": 10}}],
            "directories": [{"path": "/var/lib/x", "mode": 448}],
            "links": [{"path": "/etc/l", "target": "../usr/x"},
                      {"path": "/etc/h", "target": "/etc/a.conf", "hard": true}]
        },
        "systemd": {"units": [{"name": "x.service", "contents": "[Unit]\n", "enabled": true,
                               "dropins": [{"name": "10-a.conf", "contents": "[Service]\n"}]},
                              {"name": "getty@.service", "mask": true}]},
        "passwd": {"users": [{"name": "core", "uid": 1000, "groups": ["wheel"],
                              "passwordHash": "$6$x", "sshAuthorizedKeys": ["ssh-ed25519 AAAA k"]}],
                   "groups": [{"name": "admins", "gid": 2000}]}
    }));
    let c = parse_input("a.ign", &doc(d)).unwrap();
    assert_eq!(
        c.files["/etc/a.conf"],
        FileEntry {
            contents: Some(b"x=y\n".to_vec()),
            append: vec![b"Z\n".to_vec()],
            mode: 0o600,
            user: Owner::Name("core".into()),
            group: Owner::Id(10),
        }
    );
    assert_eq!(c.directories["/var/lib/x"].mode, 0o700);
    assert!(!c.links["/etc/l"].hard && c.links["/etc/h"].hard);
    assert_eq!(c.units["x.service"].enabled, Some(true));
    assert!(c.units["getty@.service"].mask);
    assert_eq!(
        c.units["x.service"].dropins["10-a.conf"]
            .contents
            .as_deref(),
        Some("[Service]\n")
    );
    assert_eq!(c.users["core"].uid, Some(1000));
    assert_eq!(c.users["core"].ssh_authorized_keys, ["ssh-ed25519 AAAA k"]);
    assert_eq!(c.groups["admins"].gid, Some(2000));
}

#[test]
fn every_spec_3_version_is_accepted() {
    for v in ["3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0"] {
        let d = json!({"ignition": {"version": v},
                       "storage": {"files": [{"path": "/etc/x", "contents": {"source": "data:,a"}}]}});
        let c = parse_input("a.ign", &doc(d)).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(c.files["/etc/x"].contents.as_deref(), Some(&b"a"[..]));
    }
}

/// Keys that a later spec version introduced are unknown keys in earlier
/// ones; in the versions that have them they are refused as unsupported.
#[test]
fn keys_follow_the_declared_version() {
    let res = |v: &str, extra: Value| {
        let mut d = json!({"ignition": {"version": v}});
        d.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        parse_input("a.ign", &doc(d)).unwrap_err()
    };
    let headers = json!({"storage": {"files": [{"path": "/etc/x",
        "contents": {"source": "data:,a", "httpHeaders": [{"name": "a", "value": "b"}]}}]}});
    let e = res("3.0.0", headers.clone());
    assert_eq!(
        (e.path.as_str(), e.message.as_str()),
        ("$.storage.files[0].contents.httpHeaders", "unknown key")
    );
    assert!(res("3.1.0", headers).message.contains("not supported"));
    let luks = json!({"storage": {"luks": [{"name": "x", "device": "/dev/x"}]}});
    assert_eq!(res("3.1.0", luks.clone()).message, "unknown key");
    assert!(res("3.2.0", luks).message.contains("not supported"));
    let should = json!({"passwd": {"users": [{"name": "a", "shouldExist": false}]}});
    assert_eq!(res("3.1.0", should.clone()).message, "unknown key");
    assert!(res("3.2.0", should).message.contains("not supported"));
    let kargs = json!({"kernelArguments": {"shouldExist": ["quiet"]}});
    assert_eq!(res("3.2.0", kargs.clone()).message, "unknown key");
    assert!(res("3.3.0", kargs).message.contains("spec.kernelArguments"));
    let proxy = json!({"ignition": {"version": "3.0.0", "proxy": {"httpProxy": "x"}}});
    assert_eq!(
        parse_input("a.ign", &doc(proxy)).unwrap_err().message,
        "unknown key"
    );
    // sha256 verification exists from 3.1.
    let sha = |v: &str| {
        let h = crate::canonical::sha256_hex(b"a");
        json!({"ignition": {"version": v}, "storage": {"files": [{"path": "/etc/x",
            "contents": {"source": "data:,a", "verification": {"hash": format!("sha256-{h}")}}}]}})
    };
    assert!(parse_input("a.ign", &doc(sha("3.0.0")))
        .unwrap_err()
        .message
        .contains("unsupported hash type"));
    assert!(parse_input("a.ign", &doc(sha("3.1.0"))).is_ok());
}

#[test]
fn verification_hash_is_checked() {
    let d = files(json!([{"path": "/etc/x", "contents": {"source": "data:,a",
        "verification": {"hash": "sha512-00"}}}]));
    refused(
        &doc(d),
        "$.storage.files[0].contents.verification.hash",
        "hash mismatch",
    );
}

/// The issue's list of bad inputs that belong to parsing, each refused
/// with the file and the JSON path.
#[test]
fn bad_inputs_are_refused_with_file_and_path() {
    refused(b"{\"ignition\": ", "$", "invalid JSON");
    refused(b"apiVersion: [unclosed\n", "$", "invalid YAML");
    refused(
        &doc(json!({"ignition": {"version": "2.2.0"}})),
        "$.ignition.version",
        "Ignition spec 2.2.0 is not supported",
    );
    refused(
        &doc(json!({"ignition": {}})),
        "$.ignition.version",
        "missing",
    );
    refused(&doc(json!({"storage": {}})), "$", "not an Ignition config");
    refused(
        &doc(json!({"ignition": {"version": "3.5.0"}})),
        "$.ignition.version",
        "unsupported",
    );
    refused(
        &doc(ign(json!({"storage": {"filez": []}}))),
        "$.storage.filez",
        "unknown key",
    );
    refused(
        &doc(files(json!([{"path": "/etc/x", "colour": 1}]))),
        "$.storage.files[0].colour",
        "unknown key",
    );
    refused(&doc(ign(json!({"bogus": 1}))), "$.bogus", "unknown key");
    for (i, url) in [
        "https://example.com/x",
        "http://x/y",
        "s3://b/k",
        "tftp://h/f",
        "gs://b/o",
        "arn:aws:s3:::b/k",
    ]
    .iter()
    .enumerate()
    {
        let mut f: Vec<Value> = (0..i)
            .map(|j| json!({"path": format!("/etc/ok{j}")}))
            .collect();
        f.push(json!({"path": "/etc/x", "contents": {"source": url}}));
        refused(
            &doc(files(Value::Array(f))),
            &format!("$.storage.files[{i}].contents.source"),
            "remote sources are not supported",
        );
    }
    refused(
        &doc(files(
            json!([{"path": "/etc/x", "append": [{"source": "https://x/y"}]}]),
        )),
        "$.storage.files[0].append[0].source",
        "remote sources are not supported",
    );
    refused(
        &doc(ign(json!({"storage": {"disks": [{"device": "/dev/sda"}]}}))),
        "$.storage.disks",
        "not supported",
    );
    refused(
        &doc(ign(
            json!({"storage": {"filesystems": [{"device": "/dev/sda"}]}}),
        )),
        "$.storage.filesystems",
        "not supported",
    );
    refused(
        &doc(json!({"ignition": {"version": "3.4.0", "config": {"merge": []}}})),
        "$.ignition.config",
        "not supported",
    );
    refused(
        &doc(files(json!([{"path": "/usr/bin/x"}]))),
        "$.storage.files[0].path",
        "under /usr",
    );
    refused(
        &doc(files(json!([{"path": "/opt/x"}]))),
        "$.storage.files[0].path",
        "outside /etc and /var",
    );
    refused(
        &doc(files(json!([{"path": "/etc/../usr/x"}]))),
        "$.storage.files[0].path",
        "\"..\"",
    );
    refused(
        &doc(files(json!([{"path": "etc/x"}]))),
        "$.storage.files[0].path",
        "absolute",
    );
    refused(
        &doc(ign(json!({"storage": {"directories": [{"path": "/etc"}]}}))),
        "$.storage.directories[0].path",
        "itself",
    );
    refused(
        &doc(ign(
            json!({"storage": {"links": [{"path": "/etc/l", "target": "/usr/x", "hard": true}]}}),
        )),
        "$.storage.links[0].target",
        "under /usr",
    );
    refused(
        &doc(ign(
            json!({"storage": {"links": [{"path": "/etc/l", "target": "/usr"}],
        "files": [{"path": "/etc/l/passwd"}]}}),
        )),
        "$.storage.files[0]",
        "below /etc/l, declared as a symbolic link",
    );
    refused(
        &doc(files(json!([{"path": "/etc/x", "mode": 4096}]))),
        "$.storage.files[0].mode",
        "above 0o7777",
    );
    refused(
        &doc(files(json!([{"path": "/etc/x", "mode": "0644"}]))),
        "$.storage.files[0].mode",
        "not a non-negative integer",
    );
    refused(
        &doc(files(
            json!([{"path": "/etc/x", "contents": {"source": "data:text/plain"}}]),
        )),
        "$.storage.files[0].contents.source",
        "invalid data URL",
    );
    refused(
        &doc(files(
            json!([{"path": "/etc/x", "contents": {"source": "data:;base64,!!"}}]),
        )),
        "$.storage.files[0].contents.source",
        "bad base64",
    );
    let bomb_url = format!("data:;base64,{}", b64(&bomb()));
    refused(
        &doc(files(
            json!([{"path": "/etc/x", "contents": {"source": bomb_url, "compression": "gzip"}}]),
        )),
        "$.storage.files[0].contents.source",
        "larger than 64 MiB",
    );
    refused(
        &doc(files(json!([{"path": "/etc/x", "user": {"id": -1}}]))),
        "$.storage.files[0].user.id",
        "not a valid id",
    );
    refused(
        &doc(files(
            json!([{"path": "/etc/x", "user": {"id": 4294967295u64}}]),
        )),
        "$.storage.files[0].user.id",
        "4294967295",
    );
    refused(
        &doc(files(
            json!([{"path": "/etc/x", "group": {"name": "Bad Name"}}]),
        )),
        "$.storage.files[0].group.name",
        "not a valid name",
    );
    let users = |u: Value| doc(ign(json!({"passwd": {"users": [u]}})));
    refused(
        &users(json!({"name": "root:x"})),
        "$.passwd.users[0].name",
        "not a valid name",
    );
    refused(
        &users(json!({"name": "a".repeat(33)})),
        "$.passwd.users[0].name",
        "longer than 32",
    );
    refused(
        &users(json!({"name": "u", "uid": "1000"})),
        "$.passwd.users[0].uid",
        "not a valid id",
    );
    refused(
        &users(json!({"name": "u", "uid": 1.5})),
        "$.passwd.users[0].uid",
        "not a valid id",
    );
    refused(
        &users(json!({"name": "u", "uid": 4294967296u64})),
        "$.passwd.users[0].uid",
        "not a valid id",
    );
    refused(
        &users(json!({"name": "u", "shell": "/bin/sh"})),
        "$.passwd.users[0].shell",
        "not supported",
    );
    refused(
        &users(json!({"name": "u", "passwordHash": "a:b"})),
        "$.passwd.users[0].passwordHash",
        "':'",
    );
    let units = |u: Value| doc(ign(json!({"systemd": {"units": [u]}})));
    refused(
        &units(json!({"name": "x"})),
        "$.systemd.units[0].name",
        "unit type",
    );
    refused(
        &units(json!({"name": "x.service", "dropins": [{"name": "a/b.conf"}]})),
        "$.systemd.units[0].dropins[0].name",
        "'/'",
    );
    refused(
        &units(json!({"name": "x.service", "dropins": [{"name": "a.txt"}]})),
        "$.systemd.units[0].dropins[0].name",
        ".conf",
    );
    refused(
        &doc(files(json!([{"path": "/etc/x"}, {"path": "/etc/x"}]))),
        "$.storage.files[1].path",
        "declared twice",
    );
}

/// Two equal keys in one object are refused (JSON and YAML), where a
/// plain serde_json::Value would keep the last silently.
#[test]
fn duplicate_keys_are_refused() {
    let j = br#"{"ignition": {"version": "3.4.0"}, "storage": {"files": [{"path": "/etc/a", "path": "/usr/b"}]}}"#;
    refused(j, "$", "duplicate key \"path\"");
    let y = MC_YAML.replace("  extensions:", "  kernelArguments: [a]\n  extensions:");
    refused(y.as_bytes(), "$", "duplicate");
}

/// YAML alias expansion is bounded (a "billion laughs" document fails
/// instead of exhausting memory).
#[test]
fn yaml_alias_bomb_is_refused() {
    let mut y = String::from("apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let p = i - 1;
        y.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let e = parse_input("a.yaml", y.as_bytes()).unwrap_err();
    assert_eq!(e.path, "$");
    assert!(e.message.contains("invalid YAML"), "{e}");
}

#[test]
fn oversized_documents_are_refused_before_parsing() {
    let big = vec![b' '; (16 << 20) + 1];
    refused(&big, "$", "more than the 16 MiB limit");
}

#[test]
fn a_100_mb_file_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.ign");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(100_000_000).unwrap();
    let e = crate::input::read_input_file(&p).unwrap_err();
    assert_eq!(e.path, "$");
    assert!(
        e.message
            .contains("100000000 bytes, more than the 16 MiB limit"),
        "{e}"
    );
}

const MC_YAML: &str = "\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 50-example
  labels:
    machineconfiguration.openshift.io/role: worker
spec:
  kernelArguments:
    - quiet
    - console=ttyS0
  extensions:
    - usbguard
  config:
    ignition:
      version: 3.2.0
    storage:
      files:
        - path: /etc/chrony.conf
          mode: 420
          contents:
            source: data:,server%20ntp.example.com%0A
";

fn mc_json() -> Value {
    json!({
        "spec": {
            "config": {
                "storage": {"files": [{"contents": {"source": "data:,server%20ntp.example.com%0A"},
                                       "path": "/etc/chrony.conf"}]},
                "ignition": {"version": "3.2.0"}
            },
            "extensions": ["usbguard"],
            "kernelArguments": ["quiet", "console=ttyS0"]
        },
        "metadata": {"name": "other-name"},
        "kind": "MachineConfig",
        "apiVersion": "machineconfiguration.openshift.io/v1"
    })
}

#[test]
fn machine_config_yaml_and_json_render_the_same() {
    let y = render_docs(&[("50-example.yaml", MC_YAML.as_bytes().to_vec())]).unwrap();
    assert_eq!(y.config.kernel_arguments, ["quiet", "console=ttyS0"]);
    assert_eq!(y.config.extensions, ["usbguard"]);
    let j = render_docs(&[("50-example.json", doc(mc_json()))]).unwrap();
    assert_eq!(y.canonical, j.canonical);
    assert_eq!(y.name, j.name);
    // Pretty-printed with other whitespace: the same.
    let pretty = serde_json::to_vec_pretty(&mc_json()).unwrap();
    assert_eq!(name_of(&[("x.json", pretty)]), y.name);
    // And the same declarations as a plain Ignition file (of another spec
    // version) plus a MachineConfig carrying only the kernel arguments.
    let plain = json!({"ignition": {"version": "3.4.0"}, "storage": {"files": [{"path": "/etc/chrony.conf",
        "contents": {"source": format!("data:;base64,{}", b64(b"server ntp.example.com\n"))}}]}});
    let kargs = json!({"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
        "spec": {"kernelArguments": ["quiet", "console=ttyS0"], "extensions": ["usbguard"]}});
    assert_eq!(
        name_of(&[("a.ign", doc(plain)), ("b.json", doc(kargs))]),
        y.name
    );
}

#[test]
fn machine_config_refusals() {
    let mut v = mc_json();
    v["spec"]["osImageURL"] = json!("quay.io/x");
    refused(&doc(v), "$.spec.osImageURL", "not supported");
    let mut v = mc_json();
    v["spec"]["fips"] = json!(true);
    refused(&doc(v), "$.spec.fips", "not supported");
    let mut v = mc_json();
    v["kind"] = json!("KubeletConfig");
    refused(&doc(v), "$.kind", "expected \"MachineConfig\"");
    let mut v = mc_json();
    v["spec"]["config"]["ignition"]["version"] = json!("2.2.0");
    refused(&doc(v), "$.spec.config.ignition.version", "not supported");
    let mut v = mc_json();
    v["spec"]["config"]["storage"]["files"][0]["contents"]["source"] = json!("https://x/y");
    refused(
        &doc(v),
        "$.spec.config.storage.files[0].contents.source",
        "remote sources",
    );
    let mut v = mc_json();
    v["spec"]["kernelArguments"] = json!(["a b"]);
    refused(&doc(v), "$.spec.kernelArguments[0]", "whitespace");
    let mut v = mc_json();
    v["metadata"]["uid"] = json!("x");
    refused(&doc(v), "$.metadata.uid", "unknown key");
    refused(
        b"storage:\n  files: []\n",
        "$",
        "Ignition configs must be JSON",
    );
}

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
        ("a.ign", unit(json!({"name": "x.service", "contents": "A", "enabled": true, "mask": true,
                              "dropins": [{"name": "1.conf", "contents": "d1"}]}))),
        ("b.ign", unit(json!({"name": "x.service", "enabled": false,
                              "dropins": [{"name": "1.conf", "contents": "d1"}, {"name": "2.conf"}]}))),
    ])
    .unwrap();
    let u = &r.config.units["x.service"];
    assert_eq!(
        (u.contents.as_deref(), u.enabled, u.mask),
        (Some("A"), Some(false), true)
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
    assert_eq!(u.groups, ["wheel", "adm"]);
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
