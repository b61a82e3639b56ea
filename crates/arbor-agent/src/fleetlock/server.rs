//! A FleetLock server with Airlock's semantics and storage: one counting
//! semaphore per group, kept in etcd under
//! `com.coreos.airlock/groups/GROUP/v1/semaphore` in Airlock's JSON
//! ([`Semaphore`]). The first request of a group creates its semaphore
//! with the slots this server is configured with; from then on the stored
//! number counts (as with Airlock: servers configured differently cannot
//! disagree about it; change it in etcd). Every change reads the key with
//! its revision and writes it back only if the revision is unchanged
//! (retrying otherwise), so any number of servers on one etcd never grant
//! more slots than the group has.
//!
//! The HTTP side: `POST /v1/pre-reboot` and `POST /v1/steady-state`, one
//! request per connection (answered with `Connection: close`), the whole
//! request read within [`REQUEST_DEADLINE`], heads and bodies bounded, a
//! thread per connection (at most [`MAX_CONNECTIONS`]; more get a 503).
//! Refusals say what was wrong with the request, never the server's
//! internals (those go to the log).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{valid_name, Refusal, Request, Semaphore, PRE_REBOOT, PROTOCOL_HEADER, STEADY_STATE};
use crate::etcd::Etcd;

/// Connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest request body accepted (a FleetLock body is a few dozen bytes).
pub const MAX_BODY: u64 = 16 << 10;
/// The whole request (head and body) must arrive within this.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Longest request or header line.
const MAX_LINE: u64 = 4 << 10;
/// Most header lines.
const MAX_HEADERS: usize = 32;
/// After the answer, what the client still sends is read (and dropped)
/// for at most this long, and this much, before the close.
const LINGER: Duration = Duration::from_secs(2);
const MAX_DRAIN: u64 = 4 << 20;
/// Compare-and-swap tries before giving up on a contended group.
const CAS_TRIES: usize = 64;

/// The etcd key of `group`'s semaphore (Airlock's).
pub fn key(group: &str) -> String {
    format!("com.coreos.airlock/groups/{group}/v1/semaphore")
}

/// The stored value of a group is not a semaphore.
#[derive(Debug)]
pub struct CorruptSemaphore(pub String);

impl std::fmt::Display for CorruptSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "The value at {} in etcd is not a semaphore", self.0)
    }
}

impl std::error::Error for CorruptSemaphore {}

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
    /// A server for `groups` (name → slots of a new semaphore, at least
    /// one each).
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

    /// Takes a slot of `group` for `id`: `None` for an unknown group.
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
        if path != PRE_REBOOT && path != STEADY_STATE {
            return refusal(404, "not_found", format!("No such endpoint: {path}"));
        }
        if method != "POST" {
            return refusal(
                405,
                "method_not_allowed",
                format!("{path} takes POST, not {method}"),
            );
        }
        if protocol != Some("true") {
            return refusal(
                400,
                "missing_protocol_header",
                format!("The header {PROTOCOL_HEADER}: true is missing"),
            );
        }
        let req: Request = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return refusal(
                    400,
                    "bad_request",
                    format!("Not a FleetLock request body: {e}"),
                )
            }
        };
        let (id, group) = (&req.client_params.id, &req.client_params.group);
        if !valid_name(id) || !valid_name(group) {
            return refusal(400, "bad_request", "Invalid id or group".into());
        }
        let lock = path == PRE_REBOOT;
        let r = if lock {
            self.pre_reboot(id, group)
        } else {
            self.steady_state(id, group)
                .map(|o| o.map(|_| Outcome::Granted))
        };
        match r {
            Ok(None) => refusal(404, "unknown_group", format!("No group {group} here")),
            Ok(Some(Outcome::Granted)) => {
                let what = if lock {
                    "slot granted"
                } else {
                    "slot released"
                };
                tracing::info!(id, group, "{what}");
                (200, "{}".into())
            }
            Ok(Some(Outcome::Full(s))) => refusal(
                409,
                "failed_lock",
                format!(
                    "All {} reboot slots of group {group} are held",
                    s.total_slots
                ),
            ),
            Err(e) if e.downcast_ref::<CorruptSemaphore>().is_some() => {
                tracing::error!("{e:#}");
                refusal(
                    500,
                    "corrupt_semaphore",
                    format!("The lock of group {group} is damaged; an operator must reset it"),
                )
            }
            Err(e) => {
                tracing::warn!("etcd: {e:#}");
                refusal(
                    503,
                    "store_unavailable",
                    "The lock store is not available; try again later".into(),
                )
            }
        }
    }

    /// Serves on `listener` until the process ends.
    pub fn serve(self: Arc<Self>, listener: TcpListener) {
        let open = Arc::new(AtomicUsize::new(0));
        for conn in listener.incoming() {
            let mut conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, say: do not spin.
                    tracing::warn!("Accepting a connection: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let slot = Slot::take(&open);
            if slot.is_none() {
                let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
                let (status, body) = refusal(503, "busy", "Too many connections".into());
                let _ = respond(&mut conn, status, &body);
                continue;
            }
            let me = self.clone();
            std::thread::spawn(move || {
                let _slot = slot;
                if let Err(e) = me.connection(conn) {
                    tracing::debug!("FleetLock connection: {e:#}");
                }
            });
        }
    }

    fn connection(&self, conn: TcpStream) -> Result<()> {
        conn.set_write_timeout(Some(REQUEST_DEADLINE))?;
        let mut w = conn.try_clone()?;
        let mut r = BufReader::new(conn);
        let deadline = Instant::now() + REQUEST_DEADLINE;
        let (status, body) = match read_request(&mut r, deadline) {
            Ok(req) => self.answer(&req.method, &req.path, req.protocol.as_deref(), &req.body),
            Err(BadRequest(status, kind, why)) => refusal(status, kind, why),
        };
        respond(&mut w, status, &body)?;
        // A lingering close: the client may still be sending (a body
        // refused unread); closing now would reset the connection and
        // could destroy the answer before the client read it.
        w.shutdown(std::net::Shutdown::Write)?;
        let until = Instant::now() + LINGER;
        let mut buf = [0u8; 8192];
        let mut drained = 0u64;
        while drained < MAX_DRAIN {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            r.get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n as u64,
            }
        }
        Ok(())
    }
}

/// A connection's place among [`MAX_CONNECTIONS`], given back when
/// dropped (also when its thread panics).
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Option<Slot> {
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A refusal: (status, `{"kind", "value"}`).
fn refusal(status: u16, kind: &str, value: String) -> (u16, String) {
    let r = Refusal {
        kind: kind.into(),
        value,
    };
    (status, serde_json::to_string(&r).unwrap_or_default())
}

fn respond(w: &mut impl Write, status: u16, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    write!(
        w,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

/// Binds `addr` (`127.0.0.1:0` picks a free port). Each answer is one
/// write followed by the close, so Nagle's algorithm delays nothing.
pub fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("Listening on {addr}"))
}

/// Reads `group`'s semaphore, applies `f`, and writes it back if it
/// changed, all only if no one else wrote it meanwhile (else again). A
/// missing semaphore is created with `create_slots` slots (Airlock's
/// first use); with `None` it stays missing and `f` sees an empty one.
pub fn update<R>(
    etcd: &Etcd,
    group: &str,
    create_slots: Option<u64>,
    mut f: impl FnMut(&mut Semaphore) -> R,
) -> Result<R> {
    let key = key(group);
    for _ in 0..CAS_TRIES {
        let (mut sem, rev) = match etcd.get(&key)? {
            None => match create_slots {
                Some(n) => (Semaphore::new(n), 0),
                None => return Ok(f(&mut Semaphore::new(0))),
            },
            Some(v) => (parse(&key, &v.value)?, v.mod_revision),
        };
        let before = sem.clone();
        let r = f(&mut sem);
        if sem == before && rev != 0 {
            return Ok(r);
        }
        if etcd.put_if(&key, &serde_json::to_vec(&sem)?, rev)? {
            return Ok(r);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!("Too many concurrent changes of {key}: try again")
}

fn parse(key: &str, value: &[u8]) -> Result<Semaphore> {
    let s: Semaphore =
        serde_json::from_slice(value).map_err(|_| CorruptSemaphore(key.to_string()))?;
    // Sorted and unique, as Airlock keeps them (more holders than slots
    // is fine: an operator lowered the number).
    if !s.holders.windows(2).all(|w| w[0] < w[1]) {
        return Err(CorruptSemaphore(key.to_string()).into());
    }
    Ok(s)
}

/// The stored semaphore of `group`, if there is one.
pub fn semaphore(etcd: &Etcd, group: &str) -> Result<Option<Semaphore>> {
    let key = key(group);
    etcd.get(&key)?.map(|v| parse(&key, &v.value)).transpose()
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

/// A request refused before it reached [`Server::answer`]: status, kind, why.
#[derive(Debug)]
struct BadRequest(u16, &'static str, String);

fn bad(why: impl Into<String>) -> BadRequest {
    BadRequest(400, "bad_request", why.into())
}

impl From<std::io::Error> for BadRequest {
    fn from(e: std::io::Error) -> BadRequest {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            return BadRequest(408, "timeout", "The request did not arrive in time".into());
        }
        bad(format!("Reading the request: {e}"))
    }
}

/// Sets the read timeout of the stream under `r` to what is left until
/// `deadline`.
fn until(r: &BufReader<TcpStream>, deadline: Instant) -> Result<(), BadRequest> {
    let left = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| BadRequest(408, "timeout", "The request did not arrive in time".into()))?;
    r.get_ref().set_read_timeout(Some(left))?;
    Ok(())
}

trait Source: BufRead {
    fn before(&self, deadline: Instant) -> Result<(), BadRequest>;
}

impl Source for BufReader<TcpStream> {
    fn before(&self, deadline: Instant) -> Result<(), BadRequest> {
        until(self, deadline)
    }
}

impl Source for &[u8] {
    fn before(&self, _: Instant) -> Result<(), BadRequest> {
        Ok(())
    }
}

fn read_line(r: &mut impl Source, deadline: Instant) -> Result<String, BadRequest> {
    let mut buf = Vec::new();
    loop {
        r.before(deadline)?;
        let n = r
            .by_ref()
            .take(MAX_LINE + 1 - buf.len() as u64)
            .read_until(b'\n', &mut buf)?;
        if buf.len() as u64 > MAX_LINE {
            return Err(BadRequest(
                431,
                "too_large",
                "A request line is too long".into(),
            ));
        }
        if n == 0 || buf.ends_with(b"\n") {
            break;
        }
    }
    if !buf.ends_with(b"\n") {
        return Err(bad("The request ended in its head"));
    }
    let s = String::from_utf8(buf).map_err(|_| bad("The request head is not UTF-8"))?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

fn read_request(r: &mut impl Source, deadline: Instant) -> Result<HttpRequest, BadRequest> {
    let line = read_line(r, deadline)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("Not an HTTP request line"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(bad(format!("Unsupported HTTP version {version}")));
    }
    let mut protocol = None;
    let mut length: Option<u64> = None;
    for n in 0.. {
        let h = read_line(r, deadline)?;
        if h.is_empty() {
            break;
        }
        if n >= MAX_HEADERS {
            return Err(BadRequest(431, "too_large", "Too many header lines".into()));
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(bad(format!("Not a header line: {h:?}")));
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => {
                let n = value
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| value.parse().ok())
                    .flatten()
                    .ok_or_else(|| bad("Bad content-length"))?;
                if length.replace(n).is_some_and(|old| old != n) {
                    return Err(bad("Conflicting content-length headers"));
                }
            }
            "transfer-encoding" => {
                return Err(bad(
                    "Chunked bodies are not accepted: send a content-length",
                ))
            }
            n if n == PROTOCOL_HEADER => protocol = Some(value.to_string()),
            _ => {}
        }
    }
    let len = match (length, method) {
        (Some(n), _) => n,
        (None, "POST") => {
            return Err(BadRequest(
                411,
                "length_required",
                "A POST needs a content-length".into(),
            ))
        }
        (None, _) => 0,
    };
    if len > MAX_BODY {
        return Err(BadRequest(
            413,
            "too_large",
            format!("The body is {len} bytes; at most {MAX_BODY} are accepted"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    let mut got = 0;
    while got < body.len() {
        r.before(deadline)?;
        match r.read(&mut body[got..])? {
            0 => return Err(bad("The request ended in its body")),
            n => got += n,
        }
    }
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

    fn read(raw: &str) -> Result<HttpRequest, BadRequest> {
        read_request(&mut raw.as_bytes(), Instant::now() + Duration::from_secs(5))
    }

    #[test]
    fn request_heads() {
        let body = r#"{"client_params":{"id":"a","group":"default"}}"#;
        let raw = format!(
            "POST /v1/pre-reboot HTTP/1.1\r\nHost: x\r\nFleet-Lock-Protocol: true\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = read(&raw).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v1/pre-reboot")
        );
        assert_eq!(r.protocol.as_deref(), Some("true"));
        assert_eq!(r.body, body.as_bytes());
        let cases = [
            (
                "POST /v1/pre-reboot HTTP/1.1\r\ncontent-length: 1048576\r\n\r\n",
                413,
            ),
            ("POST /v1/pre-reboot HTTP/1.1\r\n\r\n", 411),
            (
                "POST / HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nab",
                400,
            ),
            ("POST / HTTP/1.1\r\ncontent-length: +2\r\n\r\nab", 400),
            ("POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nab", 400),
            ("POST / HTTP/1.1\r\nx: y", 400),
            ("GARBAGE\r\n\r\n", 400),
            ("POST / HTTP/2\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nnocolon\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            assert_eq!(read(raw).unwrap_err().0, status, "{raw:?}");
        }
        let long = format!("POST / HTTP/1.1\r\nx: {}\r\n\r\n", "y".repeat(5000));
        assert_eq!(read(&long).unwrap_err().0, 431);
        let many = format!("POST / HTTP/1.1\r\n{}\r\n", "x: y\r\n".repeat(40));
        assert_eq!(read(&many).unwrap_err().0, 431);
    }

    #[test]
    fn stored_values_that_are_not_semaphores() {
        assert!(parse("k", br#"{"total_slots":2,"holders":["a","b"]}"#).is_ok());
        for bad in [
            &b"garbage"[..],
            br#"{"semaphore":{}}"#,
            br#"{"total_slots":2,"holders":["b","a"]}"#,
        ] {
            let e = parse("k", bad).unwrap_err();
            assert!(e.downcast_ref::<CorruptSemaphore>().is_some(), "{e}");
        }
    }
}
