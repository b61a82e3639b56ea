//! Typed fetch errors: how a request failed decides whether it is retried,
//! never the wording of a message.

use arbor_repo::remote_url::InvalidUrl;

/// Why fetching a URL failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The remote URL, or a redirect's target, is not a URL arbor fetches.
    #[error(transparent)]
    InvalidUrl(#[from] InvalidUrl),
    /// The TLS handshake failed: an untrusted or invalid certificate, a
    /// client certificate the server refused, no common protocol. The same
    /// server presents the same certificate again: not retried.
    #[error("TLS with {url} failed")]
    Tls {
        /// The URL requested.
        url: String,
        /// What rustls reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The connection failed, timed out or broke: retried.
    #[error("Fetching {url}")]
    Transport {
        /// The URL requested.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Any other failure of the HTTP client (a malformed response, ...):
    /// not retried.
    #[error("Fetching {url}")]
    Http {
        /// The URL requested.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A redirect arbor does not follow (see `fetcher::http`).
    #[error("Refusing the redirect from {from} to {to}: {reason}")]
    RedirectRefused {
        /// The URL that answered with the redirect.
        from: String,
        /// Its `Location`, resolved.
        to: String,
        /// Which rule refused it.
        reason: String,
    },
    /// More redirects in a row than the limit.
    #[error("Too many redirects fetching {url}: gave up after {limit}")]
    TooManyRedirects {
        /// The URL first requested.
        url: String,
        /// The limit.
        limit: u32,
    },
    /// The server answered with a failure status.
    #[error("Server returned HTTP {status} for {url}")]
    Status {
        /// The URL requested (after redirects).
        url: String,
        /// The status.
        status: u16,
    },
    /// The TLS settings of the remote cannot be used.
    #[error("{0}")]
    TlsSettings(String),
}

impl FetchError {
    /// Whether trying again may succeed: a transport failure, or a status
    /// meaning "not now" (408, 429, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Transport { .. } => true,
            FetchError::Status { status, .. } => retryable_status(*status),
            _ => false,
        }
    }
}

/// 408 Request Timeout, 429 Too Many Requests and 5xx.
pub(crate) fn retryable_status(s: u16) -> bool {
    s == 408 || s == 429 || (500..=599).contains(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

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
