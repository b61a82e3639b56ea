//! Parsing and rendering tests on in-memory documents.

mod parse;
mod prop;
mod rendering;
mod review;

use base64::Engine;
use serde_json::Value;

use crate::{render, InputError, Rendered};

pub fn doc(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap()
}

pub fn ign(storage_etc: Value) -> Value {
    let mut v = serde_json::json!({"ignition": {"version": "3.4.0"}});
    v.as_object_mut()
        .unwrap()
        .extend(storage_etc.as_object().unwrap().clone());
    v
}

pub fn files(f: Value) -> Value {
    ign(serde_json::json!({"storage": {"files": f}}))
}

pub fn render_docs(docs: &[(&str, Vec<u8>)]) -> Result<Rendered, InputError> {
    let inputs: Vec<(String, Vec<u8>)> = docs
        .iter()
        .map(|(n, b)| (n.to_string(), b.clone()))
        .collect();
    render(&inputs)
}

pub fn name_of(docs: &[(&str, Vec<u8>)]) -> String {
    render_docs(docs).unwrap().name
}

pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[track_caller]
pub fn refused(bytes: &[u8], path: &str, msg: &str) {
    let e = crate::parse_input("a.ign", bytes).unwrap_err();
    assert_eq!((e.file.as_str(), e.path.as_str()), ("a.ign", path), "{e}");
    assert!(e.message.contains(msg), "{e}");
    assert_eq!(e.to_string(), format!("a.ign: {path}: {}", e.message));
}
