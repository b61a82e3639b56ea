//! One checksum naming the whole intended state of a deployment.
//!
//! The state of a deployment is a function of four named inputs: its base
//! commit, its extensions, its rendered configuration and its kernel
//! arguments. `state-<sha256>` is the SHA-256 (lowercase hex) of the RFC
//! 8785 (JCS) canonical JSON of this object:
//!
//! ```json
//! {"base":"<commit, 64 hex>","config":"rendered-<sha256>","extensions":["tools:<commit, 64 hex>"],"kernel-arguments":["quiet","root=LABEL=r"]}
//! ```
//!
//! - `base`: the deployment's base commit: the commit its composed commit
//!   records (`arbor.base-commit`), else its commit.
//! - `config`: the name of its rendered configuration (the `[arbor]
//!   rendered-config` key of its origin); a deployment without one has
//!   the empty configuration's name, so "no configuration" and "an empty
//!   configuration" are the same state.
//! - `extensions`: the extensions layered on the base, in order, each as
//!   `NAME:COMMIT` (64 hex); `[]` for a deployment of a plain commit.
//! - `kernel-arguments`: the deployment's kernel arguments as its boot
//!   entry lists them, in order, without `ostree=` and without the
//!   `init=/ostree/boot.…/ostree-prepare-root` written for a kernel without
//!   initramfs (both name the boot version, not the state).
//!
//! JCS for this object: the keys in the order above (sorted by UTF-16 code
//! units), no whitespace, strings escaped as ECMAScript's `JSON.stringify`
//! does (`"` and `\` escaped, `\b \t \n \f \r`, other control characters as
//! `\u00xx` with lowercase hex, everything else literal UTF-8).
//!
//! Two deployments with the same state checksum have the same `/usr` (the
//! base commit composed with the same extensions: composition is
//! deterministic), the same managed `/etc` (the rendered configuration
//! applied to that commit's defaults) and the same kernel command line,
//! whatever their histories.

use arbor_format::Checksum;
use arbor_sysroot::Deployment;
use serde::Serialize;

/// The prefix of a state checksum.
pub const STATE_PREFIX: &str = "state-";

/// The four inputs of a deployment's state, and its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentState {
    /// The base commit.
    pub base: String,
    /// Extensions, `NAME:COMMIT` in order.
    pub extensions: Vec<String>,
    /// `rendered-<sha256>`.
    pub config: String,
    /// Kernel arguments, without `ostree=`.
    #[serde(rename = "kernel-arguments")]
    pub kernel_arguments: Vec<String>,
    /// `state-<sha256>`.
    pub state: String,
}

/// The JCS canonical document of the four inputs (see the module docs).
pub fn canonical_state(
    base: &Checksum,
    config: &str,
    extensions: &[String],
    kernel_arguments: &[String],
) -> Vec<u8> {
    crate::canonical::to_canonical(&serde_json::json!({
        "base": base.to_hex(),
        "config": config,
        "extensions": extensions,
        "kernel-arguments": kernel_arguments,
    }))
}

/// `state-<sha256>` of the four inputs.
pub fn state_checksum(
    base: &Checksum,
    config: &str,
    extensions: &[String],
    kernel_arguments: &[String],
) -> String {
    let doc = canonical_state(base, config, extensions, kernel_arguments);
    format!("{STATE_PREFIX}{}", Checksum::digest(&doc).to_hex())
}

/// The state of `d`; `empty_config` is the empty configuration's rendered
/// name, used when `d` records none.
pub fn deployment_state(d: &Deployment, empty_config: &str) -> DeploymentState {
    let config = crate::store::recorded_name(d)
        .unwrap_or(empty_config)
        .to_string();
    let kernel_arguments = state_kargs(d);
    let extensions = entries(d.extensions());
    let base = d.base_commit();
    DeploymentState {
        base: base.to_hex(),
        state: state_checksum(&base, &config, &extensions, &kernel_arguments),
        extensions,
        config,
        kernel_arguments,
    }
}

/// The `NAME:COMMIT` entries of `list`.
pub fn entries(list: &[arbor_sysroot::layered::ExtensionRef]) -> Vec<String> {
    list.iter().map(|e| e.to_entry()).collect()
}

/// `d`'s kernel arguments without those naming the boot version.
pub fn state_kargs(d: &Deployment) -> Vec<String> {
    d.kargs_without_ostree()
        .args()
        .iter()
        .filter(|a| !a.starts_with("init=/ostree/boot."))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoding_is_pinned() {
        let base = Checksum::from_hex(&"ab".repeat(32)).unwrap();
        let config = format!("rendered-{}", "cd".repeat(32));
        let kargs = vec![
            "quiet".to_string(),
            "x=\"a b\"".to_string(),
            "t=\u{1}\té".to_string(),
        ];
        let doc = canonical_state(&base, &config, &[], &kargs);
        let want = format!(
            "{{\"base\":\"{}\",\"config\":\"{config}\",\"extensions\":[],\
             \"kernel-arguments\":[\"quiet\",\"x=\\\"a b\\\"\",\"t=\\u0001\\té\"]}}",
            "ab".repeat(32)
        );
        assert_eq!(String::from_utf8(doc.clone()).unwrap(), want);
        // The same object through a JSON parser: the keys are sorted and
        // the bytes are what a JCS encoder produces.
        let v: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(serde_json::to_vec(&v).unwrap(), doc);
        let st = state_checksum(&base, &config, &[], &kargs);
        assert_eq!(st, format!("state-{}", Checksum::digest(&doc).to_hex()));
        // Every input matters, the order of the arguments too.
        let mut rev = kargs.clone();
        rev.reverse();
        let others = [
            state_checksum(
                &Checksum::from_hex(&"ac".repeat(32)).unwrap(),
                &config,
                &[],
                &kargs,
            ),
            state_checksum(&base, "rendered-x", &[], &kargs),
            state_checksum(&base, &config, &["e".into()], &kargs),
            state_checksum(&base, &config, &[], &rev),
            state_checksum(&base, &config, &[], &[]),
        ];
        for o in &others {
            assert_ne!(o, &st);
        }
    }

    #[test]
    fn extensions_are_pinned_in_order() {
        let base = Checksum::from_hex(&"ab".repeat(32)).unwrap();
        let exts = [
            format!("tools:{}", "01".repeat(32)),
            format!("a:{}", "02".repeat(32)),
        ];
        let doc = canonical_state(&base, "rendered-x", &exts, &[]);
        let want = format!(
            "{{\"base\":\"{}\",\"config\":\"rendered-x\",\"extensions\":[\"tools:{}\",\"a:{}\"],\
             \"kernel-arguments\":[]}}",
            "ab".repeat(32),
            "01".repeat(32),
            "02".repeat(32)
        );
        assert_eq!(String::from_utf8(doc).unwrap(), want);
        let mut swapped = exts.clone();
        swapped.reverse();
        assert_ne!(
            state_checksum(&base, "rendered-x", &exts, &[]),
            state_checksum(&base, "rendered-x", &swapped, &[])
        );
    }

    #[test]
    fn a_composed_deployment_states_its_base_and_list() {
        use arbor_sysroot::layered::{ExtensionRef, Layers};
        let base = Checksum::from_array([1; 32]);
        let tools = ExtensionRef {
            name: "tools".into(),
            commit: Checksum::from_array([2; 32]),
        };
        let mut d = Deployment {
            stateroot: "os".into(),
            csum: Checksum::from_array([3; 32]),
            deployserial: 0,
            bootcsum: String::new(),
            bootserial: 0,
            origin: None,
            kargs: arbor_sysroot::kargs::Kargs::parse("root=x ostree=/o"),
            version: None,
            layers: Some(Layers {
                base,
                extensions: vec![tools.clone()],
            }),
            layers_unknown: false,
            staged: false,
            bootconfig: Default::default(),
        };
        let st = deployment_state(&d, "rendered-e");
        assert_eq!(st.base, base.to_hex());
        assert_eq!(st.extensions, [tools.to_entry()]);
        assert_eq!(
            st.state,
            state_checksum(&base, "rendered-e", &[tools.to_entry()], &["root=x".into()])
        );
        // Without layers: the commit itself, no extensions.
        d.layers = None;
        let plain = deployment_state(&d, "rendered-e");
        assert_eq!(plain.base, d.csum.to_hex());
        assert!(plain.extensions.is_empty());
        assert_ne!(plain.state, st.state);
    }
}
