//! OpenShift `MachineConfig` documents: `spec.config` (Ignition 3.0.0 to
//! 3.4.0), `spec.kernelArguments`, `spec.extensions`. `metadata` (the
//! standard Kubernetes keys) is accepted and ignored: the rendered name
//! comes from the content. The other `spec` keys are refused unless they
//! hold a zero value (`fips: false`, `osImageURL: ""`), which declares
//! nothing.

use serde_json::Value;

use super::dataurl::Budget;
use super::json::Src;
use super::validate::{check_kernel_argument, extension_entry_name};
use super::{ignition, InputError, Parsed};

/// `apiVersion` of a MachineConfig.
pub const API_VERSION: &str = "machineconfiguration.openshift.io/v1";
/// `kind` of a MachineConfig.
pub const KIND: &str = "MachineConfig";

const NOT_OURS: &str =
    "not supported: arbor takes spec.config, spec.kernelArguments and spec.extensions only";

/// Kubernetes `ObjectMeta` keys (`kubectl get -o yaml` prints those the
/// API server fills in): accepted and ignored, like the name.
const K8S_METADATA: &[&str] = &[
    "name",
    "labels",
    "annotations",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Parses a MachineConfig document into `out`.
pub fn parse(src: Src, v: &Value, out: &mut Parsed, budget: &mut Budget) -> Result<(), InputError> {
    let root = src.object(v, "$", &["apiVersion", "kind", "metadata", "spec"], &[])?;
    match root.str("apiVersion")? {
        Some(API_VERSION) => {}
        Some(a) => {
            return Err(root.err(
                "apiVersion",
                format!("expected {API_VERSION:?}, found {a:?}"),
            ))
        }
        None => return Err(root.err("apiVersion", format!("missing (expected {API_VERSION:?})"))),
    }
    match root.str("kind")? {
        Some(KIND) => {}
        Some(k) => return Err(root.err("kind", format!("expected {KIND:?}, found {k:?}"))),
        None => return Err(root.err("kind", format!("missing (expected {KIND:?})"))),
    }
    if let Some(m) = root.get("metadata") {
        let m = src.object(m, "$.metadata", K8S_METADATA, &[])?;
        out.merge_name = m.str("name")?.filter(|n| !n.is_empty()).map(str::to_owned);
        for k in ["labels", "annotations"] {
            match m.get(k) {
                None | Some(Value::Object(_)) => {}
                Some(_) => return Err(m.err(k, "expected an object")),
            }
        }
    }
    let Some(spec) = root.get("spec") else {
        return Ok(());
    };
    let unsupported = [
        ("osImageURL", NOT_OURS),
        ("baseOSExtensionsContainerImage", NOT_OURS),
        ("kernelType", NOT_OURS),
        ("fips", NOT_OURS),
    ];
    let spec = src.object(
        spec,
        "$.spec",
        &["config", "kernelArguments", "extensions"],
        &unsupported,
    )?;
    if let Some(c) = spec.get("config") {
        ignition::parse(src, c, "$.spec.config", out, budget)?;
    }
    for (p, a) in spec.strings("kernelArguments")? {
        check_kernel_argument(a).map_err(|e| src.err(&p, e))?;
        push_unique(&mut out.config.kernel_arguments, a);
    }
    for (p, x) in spec.strings("extensions")? {
        let name = extension_entry_name(x).map_err(|e| src.err(&p, e))?;
        if let Some(other) = out
            .config
            .extensions
            .iter()
            .find(|o| *o != x && extension_entry_name(o).is_ok_and(|n| n == name))
        {
            return Err(src.err(
                &p,
                format!("extension {name} given twice: {other:?} and {x:?}"),
            ));
        }
        out.origin
            .entry(format!("extension {name}"))
            .or_insert_with(|| p.clone());
        push_unique(&mut out.config.extensions, x);
    }
    Ok(())
}

/// Appends `s` unless present: the first occurrence keeps its place.
pub(crate) fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_owned());
    }
}
