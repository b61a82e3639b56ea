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
//!
//! `http://` and `https://` go through one client (`fetcher/http.rs`: its trust
//! policy, timeouts and redirect rules); failures are [`FetchError`]s,
//! sorted into transient or final by type. The URL is checked first by
//! [`arbor_repo::remote_url`], the same parser `remote add` uses.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use arbor_repo::remote_url::{RemoteUrl, Scheme};

mod error;
mod http;

pub use error::FetchError;
use http::HttpClient;

/// Options of a [`Fetcher`], from the remote's configuration.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Retries after the first attempt (ostree's `n-network-retries`, 5).
    pub retries: u32,
    /// PEM file of CA certificates to trust instead of the system's
    /// (ostree's `tls-ca-path`).
    pub tls_ca_path: Option<PathBuf>,
    /// Skip TLS certificate verification (ostree's `tls-permissive`).
    pub tls_permissive: bool,
    /// PEM client certificate (ostree's `tls-client-cert-path`); set
    /// together with `tls_client_key_path`.
    pub tls_client_cert_path: Option<PathBuf>,
    /// PEM private key of the client certificate (`tls-client-key-path`).
    pub tls_client_key_path: Option<PathBuf>,
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
            tls_client_cert_path: None,
            tls_client_key_path: None,
            connections: 8,
            backoff: Duration::from_millis(100),
            low_speed_time: Duration::from_secs(30),
            low_speed_limit: 1000,
        }
    }
}

#[derive(Debug)]
enum Base {
    /// `http://` and `https://`, through the one client (`fetcher/http.rs`).
    Http { client: HttpClient, url: RemoteUrl },
    /// `file://`: a directory.
    File(PathBuf),
}

/// Fetches paths relative to a remote repository's URL.
#[derive(Debug)]
pub struct Fetcher {
    base: Base,
    opts: FetchOptions,
    requests: AtomicU64,
    bytes: AtomicU64,
    /// HTTP versions the server answered with (`HTTP/1.1`).
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

/// A response, sorted by what it means to a client of a static server.
enum Reply {
    /// 2xx.
    Got(http::Response),
    /// 404, 403 and 410: not there (optional files are probed).
    Missing,
    /// A transport failure, 408, 429 or 5xx.
    Retry(anyhow::Error),
}

enum Attempt<T> {
    Done(Option<T>),
    Retry(anyhow::Error),
}

impl Fetcher {
    /// A fetcher for `url` (`http://`, `https://` or `file://`); an
    /// invalid URL or unusable TLS settings are an error here, before any
    /// connection.
    pub fn new(url: &str, opts: FetchOptions) -> Result<Fetcher> {
        let url = RemoteUrl::parse(url)?;
        let base = match url.scheme() {
            Scheme::File => Base::File(percent_decode(url.path())),
            Scheme::Http | Scheme::Https => Base::Http {
                client: HttpClient::new(&opts)?,
                url,
            },
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

    /// The HTTP versions responses came with (`HTTP/1.1`).
    pub fn versions(&self) -> Vec<String> {
        self.versions
            .lock()
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn saw_version(&self, v: &str) {
        if let Ok(mut set) = self.versions.lock() {
            if set.len() < 4 && !set.contains(v) {
                set.insert(v.to_string());
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
            Base::Http { client, url } => self.retrying(path, || {
                let r = match self.response(client, true, &url.join(path))? {
                    Reply::Got(r) => r,
                    Reply::Missing => return Ok(Attempt::Done(None)),
                    Reply::Retry(e) => return Ok(Attempt::Retry(e)),
                };
                let len = r
                    .len
                    .ok_or_else(|| anyhow!("No Content-Length for {}", r.url))?;
                Ok(Attempt::Done(Some(len)))
            }),
        }
    }

    /// The response to a GET (or HEAD) of `url`, sorted; a failure not
    /// worth retrying is an error.
    fn response(&self, client: &HttpClient, head: bool, url: &RemoteUrl) -> Result<Reply> {
        let e = match client.send(head, url) {
            Ok(r) => {
                self.saw_version(&r.version);
                match r.status {
                    200..=299 => return Ok(Reply::Got(r)),
                    404 | 403 | 410 => return Ok(Reply::Missing),
                    status => FetchError::Status {
                        url: r.url.to_string(),
                        status,
                    },
                }
            }
            Err(e) => e,
        };
        if e.is_transient() {
            Ok(Reply::Retry(e.into()))
        } else {
            Err(e.into())
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
            Base::Http { client, url } => {
                let r = match self.response(client, false, &url.join(path))? {
                    Reply::Got(r) => r,
                    Reply::Missing => return Ok(Attempt::Done(None)),
                    Reply::Retry(e) => return Ok(Attempt::Retry(e)),
                };
                if let Some(len) = r.len.filter(|len| *len > limit) {
                    anyhow::bail!(
                        "Server announces {len} bytes for {}, more than the {limit} allowed",
                        r.url
                    );
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

/// A `file://` URL's path as a filesystem path (`%XX` decoded).
fn percent_decode(path: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out).into()
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
    fn file_urls_are_decoded() {
        assert_eq!(
            percent_decode("/srv/my%20repo%2f"),
            PathBuf::from("/srv/my repo/")
        );
        assert_eq!(percent_decode("/a%2"), PathBuf::from("/a%2"));
    }
}
