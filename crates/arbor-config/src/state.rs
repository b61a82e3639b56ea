//! One checksum naming the whole intended state of a deployment.
//!
//! The state of a deployment is a function of four named inputs: its base
//! commit, its extensions, its rendered configuration and its kernel
//! arguments. `state-<sha256>` is the SHA-256 (lowercase hex) of the RFC
//! 8785 (JCS) canonical JSON of this object:
//!
//! ```json
//! {"base":"<commit, 64 hex>","config":"rendered-<sha256>","extensions":[],"kernel-arguments":["quiet","root=LABEL=r"]}
//! ```
//!
//! - `base`: the deployment's commit checksum.
//! - `config`: the name of its rendered configuration (the `[arbor]
//!   rendered-config` key of its origin); a deployment without one has
//!   the empty configuration's name, so "no configuration" and "an empty
//!   configuration" are the same state.
//! - `extensions`: the extensions layered on the base, in order (none
//!   exist yet: always `[]`).
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
//! base commit), the same managed `/etc` (the rendered configuration
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
    /// Extensions (always empty for now).
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
    let extensions = Vec::new();
    DeploymentState {
        base: d.csum.to_hex(),
        state: state_checksum(&d.csum, &config, &extensions, &kernel_arguments),
        extensions,
        config,
        kernel_arguments,
    }
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
}
