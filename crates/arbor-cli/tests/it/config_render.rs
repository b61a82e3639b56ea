//! `arbor config render`: output, determinism and refusals through the
//! binary.

use std::path::{Path, PathBuf};

use crate::util::{arbor, run_fail, run_ok};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const CHRONY_IGN: &str = r#"{"ignition": {"version": "3.4.0"},
  "storage": {"files": [{"path": "/etc/chrony.conf", "mode": 420,
    "contents": {"source": "data:,server%20ntp.example.com%0A"}}]}}"#;

const CHRONY_MC_YAML: &str = "\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 50-chrony
spec:
  kernelArguments: [quiet]
  config:
    ignition:
      version: 3.2.0
    storage:
      files:
        - path: /etc/chrony.conf
          contents:
            source: data:;base64,c2VydmVyIG50cC5leGFtcGxlLmNvbQo=
";

const CHRONY_MC_JSON: &str = r#"{"kind": "MachineConfig",
  "apiVersion": "machineconfiguration.openshift.io/v1",
  "spec": {"config": {"storage": {"files": [{"contents": {"source": "data:,server%20ntp.example.com%0A"},
    "path": "/etc/chrony.conf", "mode": 420}]}, "ignition": {"version": "3.4.0"}},
    "kernelArguments": ["quiet"]}}"#;

/// Splits `render` output into the canonical document and the name line.
fn split(out: &str) -> (String, String) {
    let mut lines = out.lines();
    let doc = lines.next().expect("document line").to_owned();
    let name = lines.next().expect("name line").to_owned();
    assert_eq!(lines.next(), None, "{out}");
    (doc, name)
}

#[test]
fn config_render_prints_canonical_document_and_name() {
    let d = tempfile::tempdir().unwrap();
    let a = write(d.path(), "10-chrony.ign", CHRONY_IGN);
    let out = run_ok(arbor().args(["config", "render"]).arg(&a));
    let (doc, name) = split(&out);
    assert_eq!(name, arbor_config::rendered_name(doc.as_bytes()));
    assert!(
        name.starts_with("rendered-") && name.len() == 9 + 64,
        "{name}"
    );
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(v["kind"], "MachineConfig");
    assert_eq!(v["spec"]["config"]["ignition"]["version"], "3.4.0");
    assert_eq!(
        v["spec"]["config"]["storage"]["files"][0]["contents"]["source"],
        "data:;base64,c2VydmVyIG50cC5leGFtcGxlLmNvbQo="
    );
    // Canonical: re-serializing gives the same bytes, and it reads back.
    assert_eq!(
        arbor_config::Rendered::from_canonical(doc.as_bytes())
            .unwrap()
            .name,
        name
    );
    // --json wraps the same document and name.
    let j = run_ok(arbor().args(["config", "render", "--json"]).arg(&a));
    let jv: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(jv["name"], name.as_str());
    assert_eq!(jv["config"], v);
}

/// Same inputs, same bytes and name: across runs, argument orders, YAML
/// vs JSON, and a rendered document fed back in.
#[test]
fn config_render_is_deterministic() {
    let d = tempfile::tempdir().unwrap();
    let y = write(d.path(), "50-chrony.yaml", CHRONY_MC_YAML);
    let j = write(d.path(), "50-chrony.json", CHRONY_MC_JSON);
    let first = run_ok(arbor().args(["config", "render"]).arg(&y));
    let second = run_ok(arbor().args(["config", "render"]).arg(&y));
    assert_eq!(first, second);
    assert_eq!(run_ok(arbor().args(["config", "render"]).arg(&j)), first);
    let (doc, _) = split(&first);
    let back = write(d.path(), "rendered.json", &doc);
    assert_eq!(run_ok(arbor().args(["config", "render"]).arg(&back)), first);
    let extra = write(
        d.path(),
        "60-x.ign",
        r#"{"ignition":{"version":"3.0.0"},"storage":{"directories":[{"path":"/var/lib/x"}]}}"#,
    );
    assert_eq!(
        run_ok(arbor().args(["config", "render"]).arg(&extra).arg(&y)),
        run_ok(arbor().args(["config", "render"]).arg(&y).arg(&extra))
    );
}

/// No input: the empty configuration, whose name is fixed.
#[test]
fn config_render_of_nothing_is_the_empty_config() {
    let out = run_ok(arbor().args(["config", "render"]));
    let (_, name) = split(&out);
    assert_eq!(
        name,
        "rendered-aeb9b5643af585e00d733acf1a5346e0ea1093f8679a684e7808143beccfa9a6"
    );
    assert_eq!(name, arbor_config::Rendered::empty().name);
}

#[track_caller]
fn refused(files: &[&Path], want: &str) {
    let out = run_fail(arbor().args(["config", "render"]).args(files));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(want), "want {want:?} in:\n{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn config_render_refuses_bad_input_naming_file_and_path() {
    let d = tempfile::tempdir().unwrap();
    let ok = write(d.path(), "10-ok.ign", CHRONY_IGN);
    let remote = write(
        d.path(),
        "20-remote.ign",
        r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/a"},{"path":"/etc/b"},
            {"path":"/etc/c","contents":{"source":"https://example.com/c"}}]}}"#,
    );
    refused(
        &[&ok, &remote],
        &format!(
            "{}: $.storage.files[2].contents.source: remote sources are not supported",
            remote.display()
        ),
    );
    let usr = write(
        d.path(),
        "usr.ign",
        r#"{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/usr/lib/x"}]}}"#,
    );
    refused(
        &[&usr],
        &format!(
            "{}: $.storage.files[0].path: \"/usr/lib/x\" is under /usr",
            usr.display()
        ),
    );
    let v2 = write(d.path(), "old.ign", r#"{"ignition":{"version":"2.2.0"}}"#);
    refused(
        &[&v2],
        "old.ign: $.ignition.version: Ignition spec 2.2.0 is not supported",
    );
    let bad_json = write(d.path(), "bad.ign", "{\"ignition\": {");
    refused(&[&bad_json], "bad.ign: $: invalid JSON");
    let bad_yaml = write(d.path(), "bad.yaml", "apiVersion: [\n");
    refused(&[&bad_yaml], "bad.yaml: $: invalid YAML");
    let unknown = write(
        d.path(),
        "unknown.yaml",
        &CHRONY_MC_YAML.replace("kernelArguments", "kernelArgs"),
    );
    refused(&[&unknown], "unknown.yaml: $.spec.kernelArgs: unknown key");
    let missing = d.path().join("missing.ign");
    refused(&[&missing], "missing.ign: $: reading");
}

#[test]
fn config_render_conflict_names_both_files() {
    let d = tempfile::tempdir().unwrap();
    let a = write(d.path(), "10-a.ign", CHRONY_IGN);
    let b = write(
        d.path(),
        "20-b.ign",
        &CHRONY_IGN.replace("server%20", "pool%20"),
    );
    refused(
        &[&b, &a],
        &format!(
            "{}: $.storage.files[0]: /etc/chrony.conf is declared differently by {} ($.storage.files[0])",
            b.display(),
            a.display()
        ),
    );
    // The later file's overwrite replaces the earlier declaration.
    let c = write(
        d.path(),
        "30-c.ign",
        &CHRONY_IGN
            .replace("server%20", "pool%20")
            .replace("\"mode\"", "\"overwrite\": true, \"mode\""),
    );
    let out = run_ok(arbor().args(["config", "render"]).args([&c, &a]));
    assert!(
        out.contains("\"source\":\"data:;base64,cG9vbCBudHAuZXhhbXBsZS5jb20K\""),
        "{out}"
    );
}

/// A real 100 MB file is refused from its size, before it is read or
/// parsed.
#[test]
fn config_render_refuses_a_100_mb_config() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("huge.ign");
    let mut text = String::from("{\"ignition\":{\"version\":\"3.4.0\"}}");
    text.push_str(&" ".repeat(100_000_000 - text.len()));
    std::fs::write(&p, &text).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 100_000_000);
    let t = std::time::Instant::now();
    refused(
        &[&p],
        "huge.ign: $: the document is 100000000 bytes, more than the 16 MiB limit",
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        t.elapsed()
    );
}
