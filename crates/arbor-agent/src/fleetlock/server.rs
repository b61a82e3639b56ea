//! A FleetLock server with Airlock's semantics: one counting semaphore
//! per group, with the number of slots the server is configured with,
//! kept in etcd under `com.coreos.airlock/groups/GROUP/v1/semaphore`.
//! Every change reads the key with its revision and writes it back only
//! if the revision is unchanged (retrying otherwise), so any number of
//! servers on one etcd never grant more slots than the group has.
//!
//! The HTTP side: `POST /v1/pre-reboot` and `POST /v1/steady-state`, one
//! request per connection (answered with `Connection: close`), request
//! heads and bodies bounded, a thread per connection (at most
//! [`MAX_CONNECTIONS`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{
    valid_name, Refusal, Request, Semaphore, Stored, PRE_REBOOT, PROTOCOL_HEADER, STEADY_STATE,
};
use crate::etcd::Etcd;

/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest request body accepted (a FleetLock body is a few dozen bytes).
pub const MAX_BODY: u64 = 16 << 10;
/// Longest request or header line.
const MAX_LINE: u64 = 8 << 10;
/// Most header lines.
const MAX_HEADERS: usize = 64;
/// A client that sends nothing for this long is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long, and how much, a refused request's rest is read before the
/// connection is closed.
const LINGER: Duration = Duration::from_secs(2);
const MAX_DRAIN: u64 = 4 << 20;
/// Compare-and-swap tries before giving up on a contended group.
const CAS_TRIES: usize = 64;

/// The etcd key of `group`'s semaphore (Airlock's).
pub fn key(group: &str) -> String {
    format!("com.coreos.airlock/groups/{group}/v1/semaphore")
}

/// What [`Server::pre_reboot`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The slot is the client's (now or already).
    Granted,
    /// Every slot is held by others.
    Full(Semaphore),
}

/// The semaphores of the configured groups, in etcd.
#[derive(Debug)]
pub struct Server {
    etcd: Etcd,
    groups: BTreeMap<String, u64>,
}

impl Server {
    /// A server for `groups` (name → slots, at least one each).
    pub fn new(etcd: Etcd, groups: BTreeMap<String, u64>) -> Result<Server> {
        if groups.is_empty() {
            bail!("No group configured");
        }
        for (g, n) in &groups {
            if !valid_name(g) {
                bail!("Invalid group name {g:?} (letters, digits, '-', '_', '.')");
            }
            if *n == 0 {
                bail!("Group {g} has no slots: give it at least 1");
            }
        }
        Ok(Server { etcd, groups })
    }

    /// The configured groups.
    pub fn groups(&self) -> &BTreeMap<String, u64> {
        &self.groups
    }

    /// Takes a slot of `group` for `id`.
    pub fn pre_reboot(&self, id: &str, group: &str) -> Result<Option<Outcome>> {
        let Some(&slots) = self.groups.get(group) else {
            return Ok(None);
        };
        update(&self.etcd, group, Some(slots), |s| match s.lock(id) {
            Ok(_) => Outcome::Granted,
            Err(()) => Outcome::Full(s.clone()),
        })
        .map(Some)
    }

    /// Gives back `id`'s slot of `group` (if it held one): `None` for an
    /// unknown group.
    pub fn steady_state(&self, id: &str, group: &str) -> Result<Option<bool>> {
        let Some(&slots) = self.groups.get(group) else {
            return Ok(None);
        };
        update(&self.etcd, group, Some(slots), |s| s.unlock(id)).map(Some)
    }

    /// Answers one HTTP request: (status, JSON body).
    pub fn answer(
        &self,
        method: &str,
        path: &str,
        protocol: Option<&str>,
        body: &[u8],
    ) -> (u16, String) {
        let refuse = |status: u16, kind: &str, value: String| {
            let r = Refusal {
                kind: kind.into(),
                value,
            };
            (status, serde_json::to_string(&r).unwrap_or_default())
        };
        if path != PRE_REBOOT && path != STEADY_STATE {
            return refuse(404, "not_found", format!("No such endpoint: {path}"));
        }
        if method != "POST" {
            return refuse(
                405,
                "method_not_allowed",
                format!("{path} takes POST, not {method}"),
            );
        }
        if protocol != Some("true") {
            return refuse(
                400,
                "missing_protocol_header",
                format!("The header {PROTOCOL_HEADER}: true is missing"),
            );
        }
        let req: Request = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return refuse(
                    400,
                    "bad_request",
                    format!("Not a FleetLock request body: {e}"),
                )
            }
        };
        let (id, group) = (&req.client_params.id, &req.client_params.group);
        if !valid_name(id) || !valid_name(group) {
            return refuse(400, "bad_request", "Invalid id or group".into());
        }
        let r = if path == PRE_REBOOT {
            self.pre_reboot(id, group).map(|o| o.map(|o| (o, true)))
        } else {
            self.steady_state(id, group)
                .map(|o| o.map(|_| (Outcome::Granted, false)))
        };
        match r {
            Ok(None) => refuse(404, "unknown_group", format!("No group {group} here")),
            Ok(Some((Outcome::Granted, lock))) => {
                tracing::info!(
                    id,
                    group,
                    "{}",
                    if lock {
                        "slot granted"
                    } else {
                        "slot released"
                    }
                );
                (200, "{}".into())
            }
            Ok(Some((Outcome::Full(s), _))) => refuse(
                409,
                "failed_lock",
                format!(
                    "All {} reboot slots of group {group} are held ({})",
                    s.max,
                    s.holders.join(", ")
                ),
            ),
            Err(e) => {
                tracing::warn!("etcd: {e:#}");
                refuse(503, "etcd_error", format!("{e:#}"))
            }
        }
    }

    /// Serves on `listener` until the process ends.
    pub fn serve(self: Arc<Self>, listener: TcpListener) {
        let open = Arc::new(AtomicUsize::new(0));
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                open.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let (me, open) = (self.clone(), open.clone());
            std::thread::spawn(move || {
                if let Err(e) = me.connection(conn) {
                    tracing::debug!("FleetLock connection: {e:#}");
                }
                open.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }

    fn connection(&self, conn: TcpStream) -> Result<()> {
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut w = conn.try_clone()?;
        let mut r = BufReader::new(conn);
        let (status, body) = match read_request(&mut r) {
            Ok(req) => self.answer(&req.method, &req.path, req.protocol.as_deref(), &req.body),
            Err(BadRequest(status, why)) => {
                let r = Refusal {
                    kind: if status == 413 {
                        "too_large"
                    } else {
                        "bad_request"
                    }
                    .into(),
                    value: why,
                };
                (status, serde_json::to_string(&r)?)
            }
        };
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            413 => "Payload Too Large",
            _ => "Service Unavailable",
        };
        write!(
            w,
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )?;
        w.flush()?;
        // A lingering close: the client may still be sending (a body
        // refused unread); closing now would reset the connection and
        // could destroy the answer before the client read it.
        w.shutdown(std::net::Shutdown::Write)?;
        r.get_ref().set_read_timeout(Some(LINGER))?;
        let _ = std::io::copy(&mut r.take(MAX_DRAIN), &mut std::io::sink());
        Ok(())
    }
}

/// Binds `addr` (`127.0.0.1:0` picks a free port). Each answer is one
/// write followed by the close, so Nagle's algorithm delays nothing.
pub fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("Listening on {addr}"))
}

/// Reads `group`'s semaphore, applies `f`, and writes it back if it
/// changed, all only if no one else wrote it meanwhile (else again).
/// `slots`: the configured number (the stored one is replaced by it);
/// `None` keeps the stored one (and an absent key stays absent).
pub fn update<R>(
    etcd: &Etcd,
    group: &str,
    slots: Option<u64>,
    mut f: impl FnMut(&mut Semaphore) -> R,
) -> Result<R> {
    let key = key(group);
    for _ in 0..CAS_TRIES {
        let (mut sem, rev) = match etcd.get(&key)? {
            None => match slots {
                Some(n) => (Semaphore::new(n), 0),
                None => return Ok(f(&mut Semaphore::new(0))),
            },
            Some(v) => {
                let s: Stored = serde_json::from_slice(&v.value)
                    .with_context(|| format!("The semaphore at {key} in etcd is not one"))?;
                (s.semaphore, v.mod_revision)
            }
        };
        if let Some(n) = slots {
            sem.max = n;
        }
        let before = sem.clone();
        let r = f(&mut sem);
        if sem == before && rev != 0 {
            return Ok(r);
        }
        let value = serde_json::to_vec(&Stored { semaphore: sem })?;
        if etcd.put_if(&key, &value, rev)? {
            return Ok(r);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!("Too many concurrent changes of {key}: try again")
}

/// The stored semaphore of `group`, if there is one.
pub fn semaphore(etcd: &Etcd, group: &str) -> Result<Option<Semaphore>> {
    let key = key(group);
    match etcd.get(&key)? {
        None => Ok(None),
        Some(v) => Ok(Some(
            serde_json::from_slice::<Stored>(&v.value)
                .with_context(|| format!("The semaphore at {key} in etcd is not one"))?
                .semaphore,
        )),
    }
}

/// Gives back `id`'s slot of `group` whatever its state (an operator's
/// `fleetlock release`, for a machine that never came back): whether it
/// held one.
pub fn release(etcd: &Etcd, group: &str, id: &str) -> Result<bool> {
    update(etcd, group, None, |s| s.unlock(id))
}

/// A parsed request.
#[derive(Debug)]
struct HttpRequest {
    method: String,
    path: String,
    protocol: Option<String>,
    body: Vec<u8>,
}

/// A request refused before it reached [`Server::answer`].
#[derive(Debug)]
struct BadRequest(u16, String);

impl From<std::io::Error> for BadRequest {
    fn from(e: std::io::Error) -> BadRequest {
        BadRequest(400, format!("Reading the request: {e}"))
    }
}

fn read_line(r: &mut impl BufRead) -> Result<String, BadRequest> {
    let mut buf = Vec::new();
    r.by_ref().take(MAX_LINE + 1).read_until(b'\n', &mut buf)?;
    if buf.len() as u64 > MAX_LINE {
        return Err(BadRequest(400, "A request line is too long".into()));
    }
    let s = String::from_utf8(buf)
        .map_err(|_| BadRequest(400, "The request head is not UTF-8".into()))?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

fn read_request(r: &mut impl BufRead) -> Result<HttpRequest, BadRequest> {
    let line = read_line(r)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest(400, "Not an HTTP request line".into()));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(BadRequest(
            400,
            format!("Unsupported HTTP version {version}"),
        ));
    }
    let mut protocol = None;
    let mut length: Option<u64> = None;
    for n in 0.. {
        let h = read_line(r)?;
        if h.is_empty() {
            break;
        }
        if n >= MAX_HEADERS {
            return Err(BadRequest(400, "Too many header lines".into()));
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(BadRequest(400, format!("Not a header line: {h:?}")));
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => {
                length = Some(
                    value
                        .parse()
                        .map_err(|_| BadRequest(400, "Bad content-length".into()))?,
                )
            }
            "transfer-encoding" => {
                return Err(BadRequest(
                    400,
                    "Chunked bodies are not accepted: send a content-length".into(),
                ))
            }
            n if n == PROTOCOL_HEADER => protocol = Some(value.to_string()),
            _ => {}
        }
    }
    let len = length.unwrap_or(0);
    if len > MAX_BODY {
        return Err(BadRequest(
            413,
            format!("The body is {len} bytes; at most {MAX_BODY} are accepted"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    let path = target.split('?').next().unwrap_or(target).to_string();
    Ok(HttpRequest {
        method: method.to_string(),
        path,
        protocol,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let body = r#"{"client_params":{"id":"a","group":"default"}}"#;
        let raw = format!(
            "POST /v1/pre-reboot HTTP/1.1\r\nHost: x\r\nFleet-Lock-Protocol: true\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = read_request(&mut raw.as_bytes()).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v1/pre-reboot")
        );
        assert_eq!(r.protocol.as_deref(), Some("true"));
        assert_eq!(r.body, body.as_bytes());
        let big = "POST /v1/pre-reboot HTTP/1.1\r\ncontent-length: 1048576\r\n\r\n";
        assert_eq!(read_request(&mut big.as_bytes()).unwrap_err().0, 413);
        for bad in [
            "GARBAGE\r\n\r\n",
            "POST / HTTP/2\r\n\r\n",
            "POST / HTTP/1.1\r\nnocolon\r\n\r\n",
        ] {
            assert_eq!(
                read_request(&mut bad.as_bytes()).unwrap_err().0,
                400,
                "{bad:?}"
            );
        }
    }
}
