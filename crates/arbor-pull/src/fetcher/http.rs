//! The one HTTP client, for `http://` and `https://` alike: ureq (HTTP/1.1
//! with keep-alive, one connection per worker) on rustls with ring.
//!
//! Why ureq and not reqwest (which negotiated HTTP/2 over TLS): measured
//! against nginx on this project's machine, HTTP/1.1 over a few kept-alive
//! connections pulls as fast over https as reqwest's single HTTP/2
//! connection did, and dropping reqwest removed tokio, hyper and h2 from
//! the build (see the commit that made this change for the figures).
//!
//! Trust policy, as ostree's libcurl fetcher (`ostree-fetcher-curl.c`,
//! `initiate_next_curl_request`) reads the remote's options:
//! - the system's CA bundle (the file curl is built to use; Debian's
//!   `/etc/ssl/certs/ca-certificates.crt`), or instead of it the PEM file
//!   `tls-ca-path` (`CURLOPT_CAINFO`: "trusted anchors instead of the system
//!   CA database", ostree.repo-config(5));
//! - `tls-permissive`: no certificate verification (`CURLOPT_SSL_VERIFYPEER
//!   0`);
//! - `tls-client-cert-path` and `tls-client-key-path` (PEM): a client
//!   certificate (`CURLOPT_SSLCERT`, `CURLOPT_SSLKEY`); ostree requires both
//!   or neither (`ostree-repo-pull.c`). `pkcs11:` URIs are not supported.
//!
//! Redirects are followed here, not inside ureq, so that each rule is ours:
//! - ostree sets `CURLOPT_FOLLOWLOCATION` and no `CURLOPT_MAXREDIRS`, so
//!   libcurl's default limit applies: 30 since curl 8.3.0 (before, none:
//!   ostree 2022.7 on Debian's curl 7.88.1 followed a redirect loop 2,266
//!   times until the server stopped). Arbor stops after [`MAX_REDIRECTS`].
//! - A redirect to another host is followed, with the same trust policy,
//!   as libcurl does; credentials of the URL (`user:password@`) go only to
//!   the origin they were given for (libcurl since 7.83.0, CVE-2022-27774).
//! - ostree allows `CURLOPT_PROTOCOLS` http, https and file, but libcurl's
//!   default `CURLOPT_REDIR_PROTOCOLS` excludes file: a server cannot
//!   redirect to a local file. Neither can it here.
//! - Stricter than libcurl: a redirect from https to http is refused, so a
//!   remote configured with https is only ever fetched over TLS.
//! - Every target is checked by the parser of remote URLs (a port out of
//!   range is an error, not port 80).
//!
//! A redirected object is still verified against its checksum by the
//! caller, like any other body.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arbor_repo::remote_url::{RemoteUrl, Scheme};
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig, TlsProvider};

use super::error::FetchError;
use super::FetchOptions;

/// Redirects followed per request (libcurl's default `CURLOPT_MAXREDIRS`).
pub(super) const MAX_REDIRECTS: u32 = 30;

/// CA bundles curl's `configure` looks for, in its order: the system trust
/// store ostree's libcurl uses.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/usr/share/ssl/certs/ca-bundle.crt",
    "/usr/local/share/certs/ca-root-nss.crt",
    "/etc/ssl/cert.pem",
];

/// As ostree's `CURLOPT_CONNECTTIMEOUT`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// From the request sent to the response's headers.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// The body of a redirect is read (to keep the connection) up to this.
const MAX_REDIRECT_BODY: u64 = 64 * 1024;

/// A response after redirects.
pub(super) struct Response {
    pub(super) status: u16,
    /// `Content-Length`, if announced.
    pub(super) len: Option<u64>,
    /// `HTTP/1.1`, ...
    pub(super) version: String,
    pub(super) body: Box<dyn Read + Send>,
    /// The URL that answered (the last redirect's target).
    pub(super) url: RemoteUrl,
}

/// An HTTP(S) client with the remote's trust policy.
#[derive(Debug)]
pub(super) struct HttpClient {
    agent: ureq::Agent,
    /// Set when no system CA bundle exists and nothing else says whom to
    /// trust: an https request then fails with this explanation.
    no_trust_anchors: Option<String>,
}

impl HttpClient {
    pub(super) fn new(opts: &FetchOptions) -> Result<HttpClient, FetchError> {
        let (tls, no_trust_anchors) = tls_config(opts)?;
        let per_read = opts.low_speed_time.max(Duration::from_secs(1));
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_idle_connections(opts.connections.max(1) * 2)
            .max_idle_connections_per_host(opts.connections.max(1))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .timeout_per_read(Some(per_read))
            .user_agent(concat!("arbor/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls)
            .build();
        Ok(HttpClient {
            agent: config.new_agent(),
            no_trust_anchors,
        })
    }

    /// GETs (or HEADs) `url`, following redirects.
    pub(super) fn send(&self, head: bool, url: &RemoteUrl) -> Result<Response, FetchError> {
        let mut current = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.send_once(head, &current)?;
            let status = resp.status().as_u16();
            let location = resp.headers().get("location").map(|l| l.to_str());
            let location = match (is_redirect(status), location) {
                (true, Some(Ok(l))) => l.to_string(),
                (true, Some(Err(_))) => {
                    return Err(refused(
                        &current,
                        "(not text)",
                        "invalid Location header".into(),
                    ))
                }
                _ => {
                    let len = resp
                        .headers()
                        .get("content-length")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    return Ok(Response {
                        status,
                        len,
                        version: format!("{:?}", resp.version()),
                        body: Box::new(resp.into_body().into_reader()),
                        url: current,
                    });
                }
            };
            drain(resp);
            current = redirect_target(&current, &location)?;
        }
        Err(FetchError::TooManyRedirects {
            url: url.to_string(),
            limit: MAX_REDIRECTS,
        })
    }

    fn send_once(
        &self,
        head: bool,
        url: &RemoteUrl,
    ) -> Result<ureq::http::Response<ureq::Body>, FetchError> {
        if let (Scheme::Https, Some(why)) = (url.scheme(), &self.no_trust_anchors) {
            return Err(FetchError::TlsSettings(format!("Fetching {url}: {why}")));
        }
        let uri = url.as_request_uri();
        let r = if head {
            self.agent.head(&uri).call()
        } else {
            self.agent.get(&uri).call()
        };
        r.map_err(|e| classify(url, e))
    }
}

/// 301, 302, 303, 307 and 308: the statuses libcurl follows for a GET.
fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Reads a little of a redirect's body so the connection can be reused.
fn drain(resp: ureq::http::Response<ureq::Body>) {
    let mut body = resp.into_body().into_reader().take(MAX_REDIRECT_BODY);
    if let Err(e) = std::io::copy(&mut body, &mut std::io::sink()) {
        tracing::debug!("discarding a redirect body: {e}");
    }
}

fn refused(from: &RemoteUrl, to: &str, reason: String) -> FetchError {
    FetchError::RedirectRefused {
        from: from.to_string(),
        to: to.to_string(),
        reason,
    }
}

/// Where a redirect from `from` to `location` leads, under the rules in
/// the module documentation.
pub(super) fn redirect_target(from: &RemoteUrl, location: &str) -> Result<RemoteUrl, FetchError> {
    let to = from
        .resolve(location)
        .map_err(|e| refused(from, &e.url, e.problem.to_string()))?;
    let rule = match (from.scheme(), to.scheme()) {
        (_, Scheme::File) => Some("a server cannot redirect to a local file"),
        (Scheme::Https, Scheme::Http) => Some("a downgrade from https to http"),
        _ => None,
    };
    if let Some(rule) = rule {
        return Err(refused(from, &to.to_string(), rule.into()));
    }
    // Credentials stay with their origin (a relative target has inherited
    // them from `from` already).
    Ok(if to.same_origin(from) && !to.has_userinfo() {
        to.with_userinfo_of(from)
    } else {
        to
    })
}

/// Sorts a ureq error by type: TLS failures are final, transport failures
/// transient, anything else (a malformed response, ...) final.
fn classify(url: &RemoteUrl, e: ureq::Error) -> FetchError {
    let url_s = url.to_string();
    let tls = |source: Box<dyn std::error::Error + Send + Sync>| FetchError::Tls {
        url: url_s.clone(),
        source,
    };
    match e {
        ureq::Error::Rustls(r) => tls(Box::new(r)),
        ureq::Error::Tls(_) | ureq::Error::Pem(_) => tls(Box::new(e)),
        ureq::Error::Io(io) if io.get_ref().is_some_and(|i| i.is::<rustls::Error>()) => {
            let inner = io.into_inner().expect("checked above");
            tls(inner)
        }
        ureq::Error::Io(_)
        | ureq::Error::Timeout(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_) => FetchError::Transport {
            url: url_s,
            source: Box::new(e),
        },
        other => FetchError::Http {
            url: url_s,
            source: Box::new(other),
        },
    }
}

/// The TLS configuration of the trust policy, and why https cannot work
/// if no trust anchor is available.
fn tls_config(opts: &FetchOptions) -> Result<(TlsConfig, Option<String>), FetchError> {
    let mut no_anchors = None;
    let roots = match &opts.tls_ca_path {
        Some(path) => read_certs(path, "tls-ca-path")?,
        None => match SYSTEM_CA_BUNDLES.iter().map(Path::new).find(|p| p.exists()) {
            Some(bundle) => read_certs(bundle, "the system CA bundle")?,
            None => {
                if !opts.tls_permissive {
                    no_anchors = Some(format!(
                        "no system CA bundle ({}): install ca-certificates, \
                         or set the remote's tls-ca-path",
                        SYSTEM_CA_BUNDLES.join(", ")
                    ));
                }
                Vec::new()
            }
        },
    };
    let client_cert = match (&opts.tls_client_cert_path, &opts.tls_client_key_path) {
        (Some(cert), Some(key)) => Some(client_cert(cert, key)?),
        (None, None) => None,
        _ => {
            return Err(FetchError::TlsSettings(
                "Both tls-client-cert-path and tls-client-key-path must be set, or neither".into(),
            ))
        }
    };
    let config = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(RootCerts::new_with_certs(&roots))
        .disable_verification(opts.tls_permissive)
        .client_cert(client_cert)
        .build();
    Ok((config, no_anchors))
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<PemItem<'static>>, FetchError> {
    let settings = |m: String| FetchError::TlsSettings(m);
    if path.to_str().is_some_and(|p| p.starts_with("pkcs11:")) {
        return Err(settings(format!(
            "{what} {}: pkcs11: URIs are not supported",
            path.display()
        )));
    }
    let pem = std::fs::read(path)
        .map_err(|e| settings(format!("Reading {what} {}: {e}", path.display())))?;
    ureq::tls::parse_pem(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| settings(format!("Parsing {what} {}: {e}", path.display())))
}

/// The certificates of a PEM file; an error if it has none.
fn read_certs(path: &Path, what: &str) -> Result<Vec<Certificate<'static>>, FetchError> {
    let certs: Vec<_> = read_pem(path, what)?
        .into_iter()
        .filter_map(|i| match i {
            PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(FetchError::TlsSettings(format!(
            "No certificate in {what} {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// A client certificate (chain) and its key, both PEM.
fn client_cert(cert: &Path, key: &Path) -> Result<ClientCert, FetchError> {
    let chain = read_certs(cert, "tls-client-cert-path")?;
    let key: Vec<PrivateKey<'static>> = read_pem(key, "tls-client-key-path")?
        .into_iter()
        .filter_map(|i| match i {
            PemItem::PrivateKey(k) => Some(k),
            _ => None,
        })
        .collect();
    match <[PrivateKey<'static>; 1]>::try_from(key) {
        Ok([k]) => Ok(ClientCert::new_with_certs(&chain, k)),
        Err(keys) => Err(FetchError::TlsSettings(format!(
            "tls-client-key-path: expected one private key, found {}",
            keys.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> RemoteUrl {
        RemoteUrl::parse(s).unwrap()
    }

    #[test]
    fn redirect_rules() {
        let https = url("https://a/repo/summary");
        let http = url("http://u:p@a/repo/summary");
        // Followed: same or other host, upgrade to https.
        for (from, loc, want) in [
            (&https, "https://b/x", "https://b/x"),
            (&https, "/x", "https://a/x"),
            (&http, "https://a/x", "https://a/x"),
            (&http, "http://b:8080/x", "http://b:8080/x"),
            (&http, "x", "http://u:p@a/repo/x"),
            (&http, "http://a/x?q", "http://u:p@a/x?q"),
            (&http, "//b/x", "http://b/x"),
        ] {
            let to = redirect_target(from, loc).unwrap_or_else(|e| panic!("{loc}: {e}"));
            assert_eq!(to.as_request_uri(), want, "{loc}");
        }
        // Refused.
        for (from, loc, why) in [
            (&https, "http://a/x", "downgrade"),
            (&https, "file:///etc/passwd", "local file"),
            (&http, "file:///srv/repo/summary", "local file"),
            (&http, "http://a:74277/x", "out of range"),
            (&http, "ftp://a/x", "unsupported scheme"),
        ] {
            let e = redirect_target(from, loc).expect_err(loc).to_string();
            assert!(e.contains(why), "{loc}: {e}");
        }
    }

    #[test]
    fn a_missing_client_key_is_an_error() {
        let opts = FetchOptions {
            tls_client_cert_path: Some("/c.pem".into()),
            ..FetchOptions::default()
        };
        let e = tls_config(&opts).unwrap_err().to_string();
        assert!(e.contains("tls-client-key-path"), "{e}");
    }
}
