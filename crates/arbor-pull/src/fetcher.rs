//! Fetching files of a remote repository over HTTP(S) (or from a local
//! `file://` directory), with bounded bodies and retries.
//!
//! Transient failures (connection errors, timeouts, a body cut short, HTTP
//! 408, 429 and 5xx) are retried with exponential backoff, the way
//! ostree's `n-network-retries` does; 404, 403 and 410 mean "not there"
//! (optional files such as `summary` or `.commitmeta`); any other status
//! and any verification failure of the caller is final. Bodies are
//! streamed to the caller, never buffered whole unless asked for, and
//! never read past a limit.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Options of a [`Fetcher`], from the remote's configuration.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Retries after the first attempt (ostree's `n-network-retries`, 5).
    pub retries: u32,
    /// PEM file of CA certificates to trust instead of the built-in roots
    /// (ostree's `tls-ca-path`).
    pub tls_ca_path: Option<PathBuf>,
    /// Skip TLS certificate verification (ostree's `tls-permissive`).
    pub tls_permissive: bool,
    /// Connections kept open to the server (one per worker).
    pub connections: usize,
    /// First backoff delay; doubled on each retry.
    pub backoff: Duration,
    /// A body arriving slower than `low_speed_limit` bytes per second over
    /// this long is a (retryable) transport failure, as curl's
    /// `LOW_SPEED_TIME` in ostree (30 s, 1000 B/s).
    pub low_speed_time: Duration,
    /// See `low_speed_time`.
    pub low_speed_limit: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            retries: 5,
            tls_ca_path: None,
            tls_permissive: false,
            connections: 8,
            backoff: Duration::from_millis(100),
            low_speed_time: Duration::from_secs(30),
            low_speed_limit: 1000,
        }
    }
}

#[derive(Debug)]
enum Base {
    /// `http://`: ureq, HTTP/1.1 keep-alive (plain-text HTTP/2 is only
    /// offered to clients that know it in advance, which ostree's are not).
    Http {
        agent: ureq::Agent,
        url: String,
    },
    /// `https://`: reqwest, which negotiates HTTP/2 by ALPN when the server
    /// offers it (one connection then carries every request at once), else
    /// HTTP/1.1.
    Https {
        client: reqwest::blocking::Client,
        url: String,
    },
    File(PathBuf),
}

/// Fetches paths relative to a remote repository's URL.
#[derive(Debug)]
pub struct Fetcher {
    base: Base,
    opts: FetchOptions,
    requests: AtomicU64,
    bytes: AtomicU64,
    /// HTTP versions the server answered with (e.g. `HTTP/2.0`).
    versions: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// A response body handed to the caller: counts bytes, enforces a limit,
/// and remembers whether the transport failed (which makes the whole fetch
/// retryable) as opposed to the caller rejecting what it read.
pub struct Body<'a> {
    inner: Box<dyn Read + 'a>,
    limit: u64,
    read: u64,
    transport_failed: bool,
    counter: &'a AtomicU64,
    path: &'a str,
    /// Start of the current low-speed window and bytes received in it.
    window: (std::time::Instant, u64),
    low_speed: (Duration, u64),
}

impl std::fmt::Debug for Body<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("path", &self.path)
            .field("read", &self.read)
            .field("limit", &self.limit)
            .finish()
    }
}

impl Body<'_> {
    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Lowers the limit (a body longer than it is an error, not retried).
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = self.limit.min(limit);
    }
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read >= self.limit {
            // One byte past the limit tells "exactly at the limit" from "more".
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe) {
                Ok(0) => Ok(0),
                Ok(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is larger than {} bytes", self.path, self.limit),
                )),
                Err(e) => {
                    self.transport_failed = true;
                    Err(e)
                }
            };
        }
        let want = buf
            .len()
            .min((self.limit - self.read).min(usize::MAX as u64) as usize);
        match self.inner.read(&mut buf[..want]) {
            Ok(n) => {
                self.read += n as u64;
                self.counter.fetch_add(n as u64, Ordering::Relaxed);
                self.window.1 += n as u64;
                let (time, limit) = self.low_speed;
                let elapsed = self.window.0.elapsed();
                // At the end of the body there is nothing left to be slow.
                if n > 0 && elapsed >= time {
                    let needed = (limit as f64 * elapsed.as_secs_f64()) as u64;
                    if self.window.1 < needed {
                        self.transport_failed = true;
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "{}: {} bytes in {elapsed:.0?}, slower than {limit} bytes/s",
                                self.path, self.window.1
                            ),
                        ));
                    }
                    self.window = (std::time::Instant::now(), 0);
                }
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.transport_failed = true;
                Err(e)
            }
        }
    }
}

/// Outcome of one attempt.
/// A response's status, announced length and body, from either stack.
struct Response {
    status: u16,
    len: Option<u64>,
    body: Box<dyn Read>,
}

/// The outcome of sending a request.
enum Sent {
    Got(Response),
    /// A failure that may go away (connection, timeout, ...).
    Transient(anyhow::Error),
}

/// What a status means to a client of a static server.
enum Class {
    Ok,
    /// 404, 403 and 410: the file is not there (optional files are probed).
    Missing,
    /// 408, 429 and 5xx.
    Retry(anyhow::Error),
}

/// Classifies a status; any other failure status is a final error.
fn classify(status: u16, path: &str) -> Result<Class> {
    match status {
        200..=299 => Ok(Class::Ok),
        404 | 403 | 410 => Ok(Class::Missing),
        s if retryable_status(s) => {
            Ok(Class::Retry(anyhow!("Server returned HTTP {s} for {path}")))
        }
        s => bail!("Server returned HTTP {s} for {path}"),
    }
}

enum Attempt<T> {
    Done(Option<T>),
    Retry(anyhow::Error),
}

impl Fetcher {
    /// A fetcher for `url` (`http://`, `https://` or `file://`).
    pub fn new(url: &str, opts: FetchOptions) -> Result<Fetcher> {
        let base = if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                bail!("file:// URLs must be absolute: {url}");
            }
            Base::File(PathBuf::from(path))
        } else if url.starts_with("https://") {
            // rustls with ring, installed once per process (reqwest is
            // built without a crypto provider of its own).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut b = reqwest::blocking::Client::builder()
                .pool_max_idle_per_host(opts.connections.max(1))
                .connect_timeout(Duration::from_secs(30))
                // Per response and per body read, not for the whole body.
                .timeout(opts.low_speed_time.max(Duration::from_secs(1)))
                .user_agent(concat!("arbor/", env!("CARGO_PKG_VERSION")))
                // At most 5 redirects, never from https:// to http://.
                .redirect(reqwest::redirect::Policy::custom(|attempt| {
                    if attempt.url().scheme() != "https" {
                        attempt.error("refusing a redirect from https:// to another scheme")
                    } else if attempt.previous().len() > 5 {
                        attempt.error("too many redirects")
                    } else {
                        attempt.follow()
                    }
                }));
            if let Some(ca) = &opts.tls_ca_path {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("Reading tls-ca-path {}", ca.display()))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .with_context(|| format!("Parsing {}", ca.display()))?;
                if certs.is_empty() {
                    bail!("No certificate in tls-ca-path {}", ca.display());
                }
                b = b.tls_certs_only(certs);
            }
            // Otherwise the system's trust store (as ostree's libcurl).
            if opts.tls_permissive {
                b = b.tls_danger_accept_invalid_certs(true);
            }
            let mut url = url.to_string();
            if !url.ends_with('/') {
                url.push('/');
            }
            Base::Https {
                client: b.build().context("Setting up the HTTPS client")?,
                url,
            }
        } else if url.starts_with("http://") {
            // TLS settings still matter: a server may redirect to https://.
            let mut tls = ureq::tls::TlsConfig::builder();
            if let Some(ca) = &opts.tls_ca_path {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("Reading tls-ca-path {}", ca.display()))?;
                let mut certs = Vec::new();
                for item in ureq::tls::parse_pem(&pem) {
                    if let ureq::tls::PemItem::Certificate(c) =
                        item.with_context(|| format!("Parsing {}", ca.display()))?
                    {
                        certs.push(c);
                    }
                }
                if certs.is_empty() {
                    bail!("No certificate in tls-ca-path {}", ca.display());
                }
                tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
            }
            if opts.tls_permissive {
                tls = tls.disable_verification(true);
            }
            let config = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(5)
                .max_idle_connections(opts.connections.max(1) * 2)
                .max_idle_connections_per_host(opts.connections.max(1))
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_recv_response(Some(Duration::from_secs(60)))
                .timeout_per_read(Some(opts.low_speed_time.max(Duration::from_secs(1))))
                .user_agent(concat!("arbor/", env!("CARGO_PKG_VERSION")))
                .tls_config(tls.build())
                .build();
            let mut url = url.to_string();
            if !url.ends_with('/') {
                url.push('/');
            }
            Base::Http {
                agent: config.new_agent(),
                url,
            }
        } else {
            bail!("Unsupported URL '{url}': use http://, https:// or file://");
        };
        Ok(Fetcher {
            base,
            opts,
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            versions: Default::default(),
        })
    }

    /// Requests made so far (including retries).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The HTTP versions responses came with (e.g. `HTTP/1.1`, `HTTP/2.0`).
    pub fn versions(&self) -> Vec<String> {
        self.versions
            .lock()
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn saw_version(&self, v: impl std::fmt::Debug) {
        if let Ok(mut set) = self.versions.lock() {
            if set.len() < 4 {
                set.insert(format!("{v:?}"));
            }
        }
    }

    /// Body bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// GETs `path` (relative to the remote URL) and hands the body to `f`.
    /// `Ok(None)` if the server says it does not exist. A transport error,
    /// including one while `f` reads the body, is retried (calling `f`
    /// again from the start, so `f` must clean up after itself on error);
    /// an error `f` raises about the content is returned as is.
    pub fn fetch<T>(
        &self,
        path: &str,
        limit: u64,
        mut f: impl FnMut(&mut Body<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        self.retrying(path, || self.attempt(path, limit, &mut f))
    }

    /// Runs `once` until it is done, retrying transient failures with
    /// exponential backoff (at most 5 s apart) up to `retries` times.
    fn retrying<T>(
        &self,
        path: &str,
        mut once: impl FnMut() -> Result<Attempt<T>>,
    ) -> Result<Option<T>> {
        let mut attempt = 0u32;
        loop {
            match once()? {
                Attempt::Done(v) => return Ok(v),
                Attempt::Retry(e) if attempt < self.opts.retries => {
                    let delay = self.opts.backoff * 2u32.saturating_pow(attempt.min(6));
                    tracing::debug!("retrying {path} in {delay:?}: {e:#}");
                    std::thread::sleep(delay.min(Duration::from_secs(5)));
                    attempt += 1;
                }
                Attempt::Retry(e) => {
                    return Err(e.context(format!(
                        "Fetching {path} failed after {} attempts",
                        attempt + 1
                    )))
                }
            }
        }
    }

    /// GETs `path` whole (at most `limit` bytes); `None` if absent.
    pub fn fetch_bytes(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
        self.fetch(path, limit, |body| {
            let mut v = Vec::new();
            body.read_to_end(&mut v)?;
            Ok(v)
        })
    }

    /// The size of `path` without fetching it (HEAD); `None` if absent.
    pub fn size(&self, path: &str) -> Result<Option<u64>> {
        match &self.base {
            Base::File(dir) => match std::fs::metadata(dir.join(path)) {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("Reading {path}")),
            },
            Base::Http { .. } | Base::Https { .. } => self.retrying(path, || {
                Ok(match self.send(true, path)? {
                    Sent::Transient(e) => Attempt::Retry(e),
                    Sent::Got(r) => match classify(r.status, path)? {
                        Class::Missing => Attempt::Done(None),
                        Class::Retry(e) => Attempt::Retry(e),
                        Class::Ok => Attempt::Done(Some(
                            r.len
                                .ok_or_else(|| anyhow!("No Content-Length for {path}"))?,
                        )),
                    },
                })
            }),
        }
    }

    /// Sends a GET (or HEAD) through whichever HTTP stack serves the URL.
    fn send(&self, head: bool, path: &str) -> Result<Sent> {
        let method = if head { "HEAD" } else { "GET" };
        let length = |h: &ureq::http::HeaderMap| -> Option<u64> {
            h.get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        };
        match &self.base {
            Base::File(_) => unreachable!("file:// is read directly"),
            Base::Http { agent, url } => {
                let u = format!("{url}{path}");
                let r = if head {
                    agent.head(u).call()
                } else {
                    agent.get(u).call()
                };
                match r {
                    Ok(resp) => {
                        self.saw_version(resp.version());
                        let (status, len) = (resp.status().as_u16(), length(resp.headers()));
                        Ok(Sent::Got(Response {
                            status,
                            len,
                            body: Box::new(resp.into_body().into_reader()),
                        }))
                    }
                    Err(e) if retryable_error(&e) => Ok(Sent::Transient(
                        anyhow!(e).context(format!("{method} {path}")),
                    )),
                    Err(e) => Err(e).with_context(|| format!("{method} {path}")),
                }
            }
            Base::Https { client, url } => {
                let u = format!("{url}{path}");
                let r = if head {
                    client.head(u).send()
                } else {
                    client.get(u).send()
                };
                match r {
                    Ok(resp) => {
                        self.saw_version(resp.version());
                        let (status, len) = (resp.status().as_u16(), length(resp.headers()));
                        Ok(Sent::Got(Response {
                            status,
                            len,
                            body: Box::new(resp),
                        }))
                    }
                    Err(e) if reqwest_retryable(&e) => Ok(Sent::Transient(
                        anyhow!(error_chain(&e)).context(format!("{method} {path}")),
                    )),
                    Err(e) => {
                        Err(anyhow!(error_chain(&e))).with_context(|| format!("{method} {path}"))
                    }
                }
            }
        }
    }

    fn attempt<T>(
        &self,
        path: &str,
        limit: u64,
        f: &mut impl FnMut(&mut Body<'_>) -> Result<T>,
    ) -> Result<Attempt<T>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let inner: Box<dyn Read> = match &self.base {
            Base::File(dir) => match std::fs::File::open(dir.join(path)) {
                Ok(file) => Box::new(file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Attempt::Done(None))
                }
                Err(e) => return Err(e).with_context(|| format!("Reading {path}")),
            },
            Base::Http { .. } | Base::Https { .. } => {
                let r = match self.send(false, path)? {
                    Sent::Transient(e) => return Ok(Attempt::Retry(e)),
                    Sent::Got(r) => r,
                };
                match classify(r.status, path)? {
                    Class::Ok => {}
                    Class::Missing => return Ok(Attempt::Done(None)),
                    Class::Retry(e) => return Ok(Attempt::Retry(e)),
                }
                if let Some(len) = r.len.filter(|len| *len > limit) {
                    bail!("Server announces {len} bytes for {path}, more than the {limit} allowed");
                }
                r.body
            }
        };
        let mut body = Body {
            inner,
            limit,
            read: 0,
            transport_failed: false,
            counter: &self.bytes,
            path,
            window: (std::time::Instant::now(), 0),
            low_speed: (self.opts.low_speed_time, self.opts.low_speed_limit),
        };
        match f(&mut body) {
            Ok(v) => Ok(Attempt::Done(Some(v))),
            Err(e) if body.transport_failed => Ok(Attempt::Retry(e)),
            Err(e) => Err(e),
        }
    }
}

/// Whether a reqwest error may go away on retry: not a bad request, a
/// refused redirect, or a certificate the server will present again.
fn reqwest_retryable(e: &reqwest::Error) -> bool {
    if e.is_builder() || e.is_redirect() {
        return false;
    }
    let chain = error_chain(e).to_ascii_lowercase();
    !(chain.contains("certificate") || chain.contains("unknownissuer"))
}

/// An error with its sources ("error sending request: ... certificate
/// ...") on one line: reqwest's top-level message alone hides the cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn retryable_status(s: u16) -> bool {
    s == 408 || s == 429 || (500..=599).contains(&s)
}

fn retryable_error(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Protocol(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields one byte per read, sleeping `delay` before each.
    struct Trickle(Duration);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(self.0);
            buf[0] = b'x';
            Ok(1)
        }
    }

    fn body<'a>(inner: impl Read + 'a, counter: &'a AtomicU64, limit: u64) -> Body<'a> {
        Body {
            inner: Box::new(inner),
            limit,
            read: 0,
            transport_failed: false,
            counter,
            path: "objects/x",
            window: (std::time::Instant::now(), 0),
            low_speed: (Duration::from_millis(200), 1000),
        }
    }

    #[test]
    fn a_trickling_body_is_a_transport_failure() {
        let counter = AtomicU64::new(0);
        let mut b = body(Trickle(Duration::from_millis(20)), &counter, u64::MAX);
        let mut buf = [0u8; 16];
        let err = loop {
            match b.read(&mut buf) {
                Ok(n) => assert!(n <= 1),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        assert!(b.transport_failed, "a stall must be retried");
        assert!(b.bytes_read() < 20);
    }

    /// Yields up to `chunk` bytes per read after `delay`, `total` in all.
    struct Paced {
        delay: Duration,
        chunk: usize,
        total: usize,
    }

    impl Read for Paced {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.total == 0 {
                return Ok(0);
            }
            std::thread::sleep(self.delay);
            let n = self.chunk.min(buf.len()).min(self.total);
            self.total -= n;
            buf[..n].fill(b'y');
            Ok(n)
        }
    }

    #[test]
    fn a_body_above_the_rate_survives_many_windows() {
        let counter = AtomicU64::new(0);
        // 1000 B/s needed; 500 bytes every 50 ms = 10 kB/s, over 5 windows.
        let mut b = body(
            Paced {
                delay: Duration::from_millis(50),
                chunk: 500,
                total: 10_000,
            },
            &counter,
            u64::MAX,
        );
        let mut out = Vec::new();
        b.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 10_000);
    }

    #[test]
    fn the_end_of_a_body_is_never_slow() {
        let counter = AtomicU64::new(0);
        let mut b = body(
            Paced {
                delay: Duration::ZERO,
                chunk: 10,
                total: 10,
            },
            &counter,
            u64::MAX,
        );
        let mut buf = [0u8; 64];
        assert_eq!(b.read(&mut buf).unwrap(), 10);
        // The caller pauses longer than the window before reading EOF.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(b.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_body_over_its_limit_is_refused_not_retried() {
        let counter = AtomicU64::new(0);
        let data = [7u8; 100];
        let mut b = body(&data[..], &counter, 50);
        let mut out = Vec::new();
        let err = b.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(!b.transport_failed);
        assert_eq!(out.len(), 50);
        // Exactly at the limit is fine.
        let mut b = body(&data[..50], &counter, 50);
        let mut out = Vec::new();
        b.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 50);
        assert_eq!(counter.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 301, 400, 401, 403, 404, 410] {
            assert!(!retryable_status(s), "{s}");
        }
    }
}
