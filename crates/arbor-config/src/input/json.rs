//! Strict access to a JSON object tree: every key is either read, refused
//! as unsupported (with the reason), or an unknown-key error; `null`
//! counts as absent, as in Ignition, and so does a zero value of an
//! unsupported key ([`is_zero`]).

use serde_json::{Map, Value};

use super::InputError;

/// The file being parsed, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Src<'a> {
    /// The input's name.
    pub file: &'a str,
}

impl<'s> Src<'s> {
    /// An error at `path`.
    pub fn err(&self, path: &str, msg: impl Into<String>) -> InputError {
        InputError::new(self.file, path, msg)
    }

    /// `v` as an object whose keys are all in `known` or, unless their
    /// value is a zero value ([`is_zero`]), refused with the message
    /// `unsupported` gives for them.
    pub fn object<'v>(
        &self,
        v: &'v Value,
        path: &str,
        known: &[&str],
        unsupported: &[(&str, &str)],
    ) -> Result<Obj<'s, 'v>, InputError> {
        let Some(map) = v.as_object() else {
            return Err(self.err(path, format!("expected an object, found {}", kind(v))));
        };
        for (k, val) in map {
            if known.contains(&k.as_str()) {
                continue;
            }
            let p = format!("{path}.{k}");
            match unsupported.iter().find(|(n, _)| n == k) {
                Some(_) if is_zero(val) && !ZERO_MEANS_SOMETHING.contains(&k.as_str()) => {}
                Some((_, why)) => return Err(self.err(&p, *why)),
                None => return Err(self.err(&p, "unknown key")),
            }
        }
        Ok(Obj {
            src: *self,
            map,
            path: path.to_owned(),
        })
    }
}

/// Unsupported keys whose zero value still declares something: a user's
/// `shouldExist: false` deletes the user.
const ZERO_MEANS_SOMETHING: &[&str] = &["shouldExist"];

/// Whether `v` is a zero value: `null`, `false`, `""`, or an array or
/// object of zero values only (`[]`, `{}`, `{"merge": []}`). An
/// unsupported key holding one declares nothing, as Go's `omitempty` and
/// Ignition's `NilOrEmpty` read it, so that ordinary MachineConfigs
/// (`fips: false`, `kernelType: ""`, `"disks": []`) are accepted.
pub fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_zero),
        Value::Object(o) => o.values().all(is_zero),
        Value::Bool(true) | Value::Number(_) => false,
    }
}

/// A checked object.
#[derive(Debug)]
pub struct Obj<'s, 'v> {
    src: Src<'s>,
    map: &'v Map<String, Value>,
    /// Its JSON path.
    pub path: String,
}

impl<'v> Obj<'_, 'v> {
    /// The path of a key.
    pub fn at(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// A key's value; `None` when absent or null.
    pub fn get(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// An error at `key`.
    pub fn err(&self, key: &str, msg: impl Into<String>) -> InputError {
        self.src.err(&self.at(key), msg)
    }

    /// An optional string.
    pub fn str(&self, key: &str) -> Result<Option<&'v str>, InputError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(key, format!("expected a string, found {}", kind(v)))),
        }
    }

    /// A required string.
    pub fn req_str(&self, key: &str) -> Result<&'v str, InputError> {
        self.str(key)?.ok_or_else(|| {
            self.src
                .err(&self.path, format!("missing required key {key:?}"))
        })
    }

    /// An optional boolean.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, InputError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(key, format!("expected a boolean, found {}", kind(v)))),
        }
    }

    /// An optional array (empty when absent), with each element's path.
    pub fn array(&self, key: &str) -> Result<Vec<(String, &'v Value)>, InputError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{}[{i}]", self.at(key)), v))
                .collect()),
            Some(v) => Err(self.err(key, format!("expected an array, found {}", kind(v)))),
        }
    }

    /// An optional array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<(String, &'v str)>, InputError> {
        self.array(key)?
            .into_iter()
            .map(|(p, v)| match v {
                Value::String(s) => Ok((p, s.as_str())),
                v => Err(self
                    .src
                    .err(&p, format!("expected a string, found {}", kind(v)))),
            })
            .collect()
    }
}

/// A JSON type's name, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON value read with every object's keys unique: serde_json (and the
/// YAML reader) would otherwise keep the last of two equal keys silently,
/// so `{"path": "/etc/a", "path": "/usr/b"}` would declare what a reviewer
/// does not see.
#[derive(Debug)]
pub struct StrictValue(pub Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a JSON number")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut v = Vec::new();
        while let Some(StrictValue(x)) = a.next_element()? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        while let Some(k) = a.next_key::<String>()? {
            let StrictValue(v) = a.next_value()?;
            if m.contains_key(&k) {
                return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
            }
            m.insert(k, v);
        }
        Ok(Value::Object(m))
    }
}
