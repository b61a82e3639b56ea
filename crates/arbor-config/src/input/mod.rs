//! Input files: Ignition v3 configs (JSON) and OpenShift `MachineConfig`
//! documents (YAML or JSON), parsed strictly into a [`Config`].
//!
//! Every refusal is an [`InputError`] naming the file and the JSON path
//! (`a.ign: $.storage.files[2].contents.source: remote sources are not
//! supported`). Rules:
//! - Ignition spec 3.0.0 to 3.4.0; spec 1 and 2 are refused. Keys that the
//!   declared version does not define are unknown keys.
//! - A key whose value is `null` is absent (Ignition's reading of JSON).
//!   Keys of the spec outside the supported subset are refused when set
//!   to anything but a zero value (`false`, `""`, `[]`, `{}`, recursively:
//!   Go's omitempty), except `shouldExist` (`false` deletes a user);
//!   unknown keys are refused always. A MachineConfig's standard
//!   Kubernetes `metadata` keys are accepted and ignored.
//! - A document starting with `{` is JSON, anything else YAML (which must
//!   then be a MachineConfig). Duplicate keys in an object are refused in
//!   both. YAML nested deeper than 100 flow levels is refused before
//!   parsing (libyaml's cost grows with that depth on every token).
//! - A document is at most [`MAX_INPUT_BYTES`]; decoded file contents are
//!   bounded per file and in total ([`dataurl`]), so that a render's
//!   canonical document (contents in base64, 4/3 of their size) stays
//!   well within [`crate::render::MAX_RENDERED_BYTES`], the bound at
//!   which a stored rendered document is read back. Sources are inline
//!   `data:` URLs only (an empty source is none, as in Ignition);
//!   `verification.hash` (sha512, and sha256 from 3.1) is checked on the
//!   decompressed bytes.
//! - Paths are absolute, normalized, strictly below `/etc` or `/var`, free
//!   of control characters; no entry may lie below a declared file or
//!   link; a hard link's target is such a path too (absolute).

pub mod dataurl;
mod ignition;
mod json;
pub(crate) mod machineconfig;
pub mod validate;
mod yamlscan;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

pub use dataurl::Budget;
pub use ignition::NEWEST as IGNITION_VERSION;
pub use machineconfig::{API_VERSION as MACHINE_CONFIG_API_VERSION, KIND as MACHINE_CONFIG_KIND};

use crate::model::Config;

/// Largest input document accepted (checked before parsing).
pub const MAX_INPUT_BYTES: u64 = 16 << 20;

/// A refused input: the file, the JSON path (`$` for the whole document)
/// and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {path}: {message}")]
pub struct InputError {
    /// The input's name (as given to [`parse_input`] or `render`).
    pub file: String,
    /// JSONPath of the offending value, e.g. `$.storage.files[2].mode`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl InputError {
    /// An error in `file` at `path`.
    pub fn new(file: &str, path: &str, message: impl Into<String>) -> Self {
        InputError {
            file: file.to_owned(),
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// One parsed input with what merging needs beyond the [`Config`].
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    /// The declarations.
    pub config: Config,
    /// JSON path of each declaration, keyed `path P`, `unit U`,
    /// `dropin U/D`, `user N`, `group N`.
    pub origin: BTreeMap<String, String>,
    /// Entry paths declared with `overwrite: true`.
    pub overwrite: BTreeSet<String>,
    /// Units whose `mask` is set (true or false) rather than absent.
    pub mask_set: BTreeSet<String>,
    /// A MachineConfig's `metadata.name`: its place in the merge order.
    pub merge_name: Option<String>,
}

/// Parses one input document (Ignition v3 JSON, or a `MachineConfig` in
/// YAML or JSON) named `name` (used in errors only).
pub fn parse_input(name: &str, bytes: &[u8]) -> Result<Config, InputError> {
    parse_input_within(name, bytes, MAX_INPUT_BYTES)
}

/// [`parse_input`] of a document of at most `max` bytes (a stored
/// rendered document may be larger than an input: see
/// [`crate::render::MAX_RENDERED_BYTES`]).
pub(crate) fn parse_input_within(name: &str, bytes: &[u8], max: u64) -> Result<Config, InputError> {
    let parsed = parse_within(name, bytes, &mut Budget::default(), max)?;
    crate::render::check_tree(name, &parsed.config, &parsed.origin)?;
    Ok(parsed.config)
}

/// Reads an input file, refusing one larger than [`MAX_INPUT_BYTES`]
/// before reading it. Returns the path as given (the input's name) and
/// its bytes.
pub fn read_input_file(path: &Path) -> Result<(String, Vec<u8>), InputError> {
    let name = path.display().to_string();
    let io = |e: std::io::Error| InputError::new(&name, "$", format!("reading: {e}"));
    let f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len > MAX_INPUT_BYTES {
        return Err(too_large(&name, len, MAX_INPUT_BYTES));
    }
    let mut bytes = Vec::new();
    f.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(too_large(&name, bytes.len() as u64, MAX_INPUT_BYTES));
    }
    Ok((name, bytes))
}

fn too_large(name: &str, len: u64, max: u64) -> InputError {
    InputError::new(
        name,
        "$",
        format!(
            "the document is {len} bytes, more than the {} MiB limit",
            max >> 20
        ),
    )
}

/// Parses a document into its declarations, charging decoded contents to
/// `budget`.
pub(crate) fn parse(name: &str, bytes: &[u8], budget: &mut Budget) -> Result<Parsed, InputError> {
    parse_within(name, bytes, budget, MAX_INPUT_BYTES)
}

/// [`parse`] of a document of at most `max` bytes.
fn parse_within(
    name: &str,
    bytes: &[u8],
    budget: &mut Budget,
    max: u64,
) -> Result<Parsed, InputError> {
    if bytes.len() as u64 > max {
        return Err(too_large(name, bytes.len() as u64, max));
    }
    let src = json::Src { file: name };
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let (value, yaml) = if first == Some(&b'{') {
        let v = serde_json::from_slice::<json::StrictValue>(bytes)
            .map_err(|e| src.err("$", format!("invalid JSON: {e}")))?;
        (v.0, false)
    } else {
        let depth = yamlscan::flow_depth(bytes, yamlscan::MAX_FLOW_DEPTH);
        if depth > yamlscan::MAX_FLOW_DEPTH {
            return Err(src.err(
                "$",
                format!(
                    "invalid YAML: collections nested deeper than {} levels",
                    yamlscan::MAX_FLOW_DEPTH
                ),
            ));
        }
        let v = serde_norway::from_slice::<json::StrictValue>(bytes)
            .map_err(|e| src.err("$", format!("invalid YAML: {e}")))?;
        (v.0, true)
    };
    let mut out = Parsed::default();
    let Some(obj) = value.as_object() else {
        return Err(src.err(
            "$",
            format!("expected an object, found {}", json::kind(&value)),
        ));
    };
    if obj.contains_key("apiVersion") || obj.contains_key("kind") {
        machineconfig::parse(src, &value, &mut out, budget)?;
    } else if yaml {
        return Err(src.err(
            "$",
            "not a MachineConfig (no apiVersion/kind); Ignition configs must be JSON",
        ));
    } else {
        ignition::parse(src, &value, "$", &mut out, budget)?;
    }
    Ok(out)
}
