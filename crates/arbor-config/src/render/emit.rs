//! The rendered document: a [`Config`] as Ignition [`IGNITION_VERSION`]
//! and as a MachineConfig, every default explicit, arrays in key order.
//! A mode that is the existing entry's (`None`) is absent, which is how
//! Ignition reads it back.

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::input::{IGNITION_VERSION, MACHINE_CONFIG_API_VERSION, MACHINE_CONFIG_KIND};
use crate::model::{Config, FileEntry, Group, LinkEntry, Owner, Unit, User};

fn owner(o: &Owner) -> Value {
    match o {
        Owner::Id(id) => json!({ "id": id }),
        Owner::Name(n) => json!({ "name": n }),
    }
}

fn data_url(bytes: &[u8]) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    json!({ "source": format!("data:;base64,{b64}") })
}

fn file(path: &str, f: &FileEntry) -> Value {
    let mut o = Map::new();
    o.insert("path".into(), json!(path));
    if let Some(c) = &f.contents {
        o.insert("contents".into(), data_url(c));
    }
    let append = f.append.iter().map(|a| data_url(a)).collect();
    o.insert("append".into(), append);
    if let Some(m) = f.mode {
        o.insert("mode".into(), json!(m));
    }
    o.insert("user".into(), owner(&f.user));
    o.insert("group".into(), owner(&f.group));
    Value::Object(o)
}

/// A link; a hard link has no owner of its own (Ignition ignores one).
fn link(path: &str, l: &LinkEntry) -> Value {
    if l.hard {
        json!({"path": path, "target": l.target, "hard": true})
    } else {
        json!({"path": path, "target": l.target, "hard": false,
               "user": owner(&l.user), "group": owner(&l.group)})
    }
}

fn unit(name: &str, u: &Unit) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(name));
    if let Some(c) = &u.contents {
        o.insert("contents".into(), json!(c));
    }
    if let Some(e) = u.enabled {
        o.insert("enabled".into(), json!(e));
    }
    o.insert("mask".into(), json!(u.mask));
    let dropins: Vec<Value> = u
        .dropins
        .iter()
        .map(|(dn, d)| match &d.contents {
            Some(c) => json!({"name": dn, "contents": c}),
            None => json!({ "name": dn }),
        })
        .collect();
    o.insert("dropins".into(), Value::Array(dropins));
    Value::Object(o)
}

fn user(name: &str, u: &User) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(name));
    if let Some(uid) = u.uid {
        o.insert("uid".into(), json!(uid));
    }
    o.insert("groups".into(), json!(u.groups));
    if let Some(h) = &u.password_hash {
        o.insert("passwordHash".into(), json!(h));
    }
    o.insert("sshAuthorizedKeys".into(), json!(u.ssh_authorized_keys));
    Value::Object(o)
}

fn group(name: &str, g: &Group) -> Value {
    let mut o = Map::new();
    o.insert("name".into(), json!(name));
    if let Some(gid) = g.gid {
        o.insert("gid".into(), json!(gid));
    }
    if let Some(h) = &g.password_hash {
        o.insert("passwordHash".into(), json!(h));
    }
    Value::Object(o)
}

/// The Ignition [`IGNITION_VERSION`] config declaring `config`'s files,
/// directories, links, units, users and groups, every default explicit
/// (kernel arguments and extensions are not Ignition: see
/// [`to_machine_config`]). It parses back through
/// [`crate::input::parse_input`] to the same declarations.
pub fn to_ignition(config: &Config) -> Value {
    let dir = |(p, d): (&String, &crate::model::DirEntry)| {
        let mut o = json!({"path": p, "user": owner(&d.user), "group": owner(&d.group)});
        if let Some(m) = d.mode {
            o["mode"] = json!(m);
        }
        o
    };
    let files: Vec<Value> = config.files.iter().map(|(p, f)| file(p, f)).collect();
    let dirs: Vec<Value> = config.directories.iter().map(dir).collect();
    let links: Vec<Value> = config.links.iter().map(|(p, l)| link(p, l)).collect();
    let units: Vec<Value> = config.units.iter().map(|(n, u)| unit(n, u)).collect();
    let users: Vec<Value> = config.users.iter().map(|(n, u)| user(n, u)).collect();
    let groups: Vec<Value> = config.groups.iter().map(|(n, g)| group(n, g)).collect();
    json!({
        "ignition": {"version": IGNITION_VERSION},
        "storage": {"files": files, "directories": dirs, "links": links},
        "systemd": {"units": units},
        "passwd": {"users": users, "groups": groups},
    })
}

/// The rendered MachineConfig document (without `metadata`): what the
/// canonical bytes serialize.
pub fn to_machine_config(config: &Config) -> Value {
    json!({
        "apiVersion": MACHINE_CONFIG_API_VERSION,
        "kind": MACHINE_CONFIG_KIND,
        "spec": {
            "config": to_ignition(config),
            "kernelArguments": config.kernel_arguments,
            "extensions": config.extensions,
        }
    })
}
