//! A small client of etcd's v3 API through its JSON gateway (etcd 3.4:
//! `POST /v3/kv/range`, `/v3/kv/txn`; keys and values base64): reading a
//! key with its revision, and writing it only if it did not change since
//! (a transaction comparing the key's `mod_revision`). That is all a
//! FleetLock server needs, and it keeps gRPC out of the build.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

/// Longest etcd answer read.
const MAX_RESPONSE: u64 = 4 << 20;

/// An etcd cluster, by one client URL (`http://127.0.0.1:2379`).
#[derive(Debug, Clone)]
pub struct Etcd {
    base: String,
    agent: ureq::Agent,
}

/// A key's value and the revision that last changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Vec<u8>,
    /// The key's `mod_revision` (never 0 for a key that exists).
    pub mod_revision: i64,
}

impl Etcd {
    /// A client of the etcd at `url` (`http://host:port`).
    pub fn new(url: &str) -> Result<Etcd> {
        let base = url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            bail!(
                "The etcd URL must start with http:// (TLS to etcd is not supported yet: \
                 keep etcd on a trusted network or behind a TLS-terminating proxy): {url:?}"
            );
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build();
        Ok(Etcd {
            base,
            agent: config.new_agent(),
        })
    }

    /// The client URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn call(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut resp = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body.to_string())
            .with_context(|| format!("Asking etcd at {url}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_string()
            .with_context(|| format!("Reading etcd's answer from {url}"))?;
        if status != 200 {
            bail!("etcd at {url} answered {status}: {}", text.trim());
        }
        serde_json::from_str(&text).with_context(|| format!("etcd's answer from {url}"))
    }

    /// The value of `key` and its revision, `None` if it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<Versioned>> {
        let v = self.call("/v3/kv/range", &json!({ "key": B64.encode(key) }))?;
        let Some(kv) = v["kvs"].as_array().and_then(|a| a.first()) else {
            return Ok(None);
        };
        let value = match kv["value"].as_str() {
            Some(s) => B64
                .decode(s)
                .context("etcd returned a value that is not base64")?,
            None => Vec::new(),
        };
        Ok(Some(Versioned {
            value,
            mod_revision: int(&kv["mod_revision"]).context("etcd returned no mod_revision")?,
        }))
    }

    /// Sets `key` to `value` only if its `mod_revision` is still
    /// `expected` (0: only if it does not exist). Returns whether it did.
    pub fn put_if(&self, key: &str, value: &[u8], expected: i64) -> Result<bool> {
        let k = B64.encode(key);
        let v = self.call(
            "/v3/kv/txn",
            &json!({
                "compare": [{
                    "key": k,
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": expected.to_string(),
                }],
                "success": [{ "request_put": { "key": k, "value": B64.encode(value) } }],
            }),
        )?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }

    /// The cluster's current revision (changes with every write).
    pub fn revision(&self) -> Result<i64> {
        let v = self.call("/v3/kv/range", &json!({ "key": B64.encode("\0") }))?;
        int(&v["header"]["revision"]).context("etcd returned no revision")
    }
}

/// An int64 of the JSON gateway (a string, or a number).
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}
