//! Parsing: the supported subset, versions, refusals.

use serde_json::{json, Value};

use super::*;
use crate::input::dataurl::tests::bomb;
use crate::model::{FileEntry, Owner};
use crate::parse_input;

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
            mode: Some(0o600),
            user: Owner::Name("core".into()),
            group: Owner::Id(10),
        }
    );
    assert_eq!(c.directories["/var/lib/x"].mode, Some(0o700));
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
        &doc(
            json!({"ignition": {"version": "3.4.0", "config": {"merge": [{"source": "data:,"}]}}}),
        ),
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
        &doc(ign(
            json!({"storage": {"links": [{"path": "/etc/l", "target": "a\nb"}]}}),
        )),
        "$.storage.links[0].target",
        "control character",
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
        "write it as a decimal integer (420)",
    );
    refused(
        &doc(files(json!([{"path": "/etc/x", "mode": -1}]))),
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
        "larger than 16 MiB",
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

/// Deep nesting is an error, not a stack overflow (JSON and YAML).
#[test]
fn deep_nesting_is_refused() {
    let json = format!("{{\"a\":{}{}}}", "[".repeat(2_000), "]".repeat(2_000));
    refused(json.as_bytes(), "$", "invalid JSON");
    let yaml = format!("a: {}{}\n", "[".repeat(2_000), "]".repeat(2_000));
    refused(yaml.as_bytes(), "$", "invalid YAML");
}

/// libyaml's time grows with the flow depth on every token: 16 MiB of
/// `[` would take hours. The pre-scan refuses it at once.
#[test]
fn deep_yaml_fails_fast() {
    let yaml = format!("a: {}\n", "[".repeat((16 << 20) - 10));
    let t = std::time::Instant::now();
    refused(yaml.as_bytes(), "$", "nested deeper than 100 levels");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    // A real document with brackets in scalars still parses.
    let ok = MC_YAML.replace("  extensions:", "  # [[[ comment\n  extensions:");
    parse_input("a.yaml", ok.as_bytes()).unwrap();
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

/// YAML modes: `0o644` is octal; `0644` (octal in YAML 1.1 and for
/// MCO's Go reader, a string for YAML 1.2) is refused with a hint rather
/// than read as decimal 644.
#[test]
fn yaml_modes() {
    let with = |m: &str| MC_YAML.replace("mode: 420", &format!("mode: {m}"));
    let c = parse_input("a.yaml", with("0o600").as_bytes()).unwrap();
    assert_eq!(c.files["/etc/chrony.conf"].mode, Some(0o600));
    refused(
        with("0644").as_bytes(),
        "$.spec.config.storage.files[0].mode",
        "as a decimal integer (420) or, in YAML, 0o644",
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
    v["metadata"]["colour"] = json!("x");
    refused(&doc(v), "$.metadata.colour", "unknown key");
    refused(
        b"storage:\n  files: []\n",
        "$",
        "Ignition configs must be JSON",
    );
}
