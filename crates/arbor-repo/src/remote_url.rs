//! Remote URLs, checked once by one parser: by `remote add` before the URL
//! is written to the config, by a pull before it connects, and for every
//! redirect a server answers with.
//!
//! The grammar is RFC 3986's absolute URI, restricted to what a remote can
//! be: `http://`, `https://` (a host is required, the port is 1–65535) or
//! `file:///absolute/path` (no host but `localhost`). Only ASCII
//! characters RFC 3986 allows may appear (others must be percent-encoded).
//! ostree's `GUri` refuses the same malformed URLs ("Port ‘74277’ in URI
//! is out of range", "Invalid URI scheme"), but only when a pull starts;
//! arbor refuses them when the remote is added. An unchecked port was
//! once handed to the HTTP client, which parsed `74277` as "no port" and
//! connected to port 80.

use std::fmt;

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlProblem {
    /// No `scheme://` at the start.
    #[error("not an absolute URL (expected http://, https:// or file://)")]
    NotAbsolute,
    /// A scheme other than http, https and file.
    #[error("unsupported scheme '{0}' (use http://, https:// or file://)")]
    UnsupportedScheme(String),
    /// `http://` or `https://` without a host.
    #[error("no host")]
    NoHost,
    /// An invalid host (e.g. a malformed IPv6 literal).
    #[error("invalid host '{0}'")]
    InvalidHost(String),
    /// A port that is not a number from 1 to 65535.
    #[error("port '{0}' is out of range (1-65535)")]
    InvalidPort(String),
    /// A character RFC 3986 does not allow (unencoded).
    #[error("invalid character {0:?} (percent-encode it)")]
    InvalidCharacter(char),
    /// `%` not followed by two hexadecimal digits.
    #[error("invalid percent-encoding")]
    InvalidPercentEncoding,
    /// A remote's base URL with `?query` or `#fragment`: object paths are
    /// appended to it, which these would break.
    #[error("a remote URL cannot have a query or a fragment")]
    QueryOrFragment,
    /// `file://HOST/...` with a host other than `localhost`.
    #[error("file:// URLs cannot name a host (use file:///path)")]
    FileHost,
}

/// A URL arbor refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid URL '{url}': {problem}")]
pub struct InvalidUrl {
    /// The URL as given (any password replaced by `***`).
    pub url: String,
    /// Why.
    pub problem: UrlProblem,
}

/// The schemes a remote can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http://`.
    Http,
    /// `https://`.
    Https,
    /// `file://`: a repository on a local filesystem.
    File,
}

impl Scheme {
    /// The scheme's name, lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::File => "file",
        }
    }

    fn default_port(self) -> Option<u16> {
        match self {
            Scheme::Http => Some(80),
            Scheme::Https => Some(443),
            Scheme::File => None,
        }
    }
}

/// A checked absolute URL: a remote's base URL or a URL derived from it.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    scheme: Scheme,
    /// `user[:password]`, still percent-encoded.
    userinfo: Option<String>,
    /// As written, lower-cased (IPv6 literals keep their brackets).
    host: String,
    port: Option<u16>,
    /// Starts with `/`.
    path: String,
    /// Without the `?`; only in URLs derived by [`RemoteUrl::resolve`].
    query: Option<String>,
}

/// Characters RFC 3986 allows unencoded somewhere in a URI.
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/?#[]%".contains(c)
}

/// Refuses characters RFC 3986 does not allow and broken `%XX`.
fn check_characters(s: &str) -> Result<(), UrlProblem> {
    let b = s.as_bytes();
    for (i, c) in s.char_indices() {
        if !allowed(c) {
            return Err(UrlProblem::InvalidCharacter(c));
        }
        if c == '%' {
            let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return Err(UrlProblem::InvalidPercentEncoding);
            }
        }
    }
    Ok(())
}

/// The scheme of `s` (`Some("http")` for `http:...`), RFC 3986 §3.1.
fn scheme_of(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first_alpha = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    (first_alpha && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))).then_some(scheme)
}

/// Splits `host[:port]` of an authority (without userinfo).
fn host_port(hostport: &str) -> Result<(String, Option<u16>), UrlProblem> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| UrlProblem::InvalidHost(hostport.to_string()))?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(UrlProblem::InvalidHost(hostport.to_string()));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| UrlProblem::InvalidHost(hostport.to_string()))?,
            ),
        };
        (format!("[{v6}]"), port)
    } else {
        let (h, p) = match hostport.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        };
        if h.contains(['[', ']']) {
            return Err(UrlProblem::InvalidHost(hostport.to_string()));
        }
        (h, p)
    };
    let port = match port {
        // RFC 3986 §3.2.3: an empty port means the scheme's default.
        None | Some("") => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(UrlProblem::InvalidPort(p.to_string())),
        },
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// RFC 3986 §5.2.4: resolves `.` and `..` segments of an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                // A trailing `.` or `..` leaves a directory: keep the `/`.
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

impl RemoteUrl {
    /// Parses and checks a remote's base URL.
    pub fn parse(url: &str) -> Result<RemoteUrl, InvalidUrl> {
        Self::parse_inner(url, false).map_err(|problem| InvalidUrl {
            url: redact(url),
            problem,
        })
    }

    fn parse_inner(url: &str, allow_query: bool) -> Result<RemoteUrl, UrlProblem> {
        check_characters(url)?;
        let scheme = scheme_of(url).ok_or(UrlProblem::NotAbsolute)?;
        let rest = &url[scheme.len() + 1..];
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "file" => Scheme::File,
            _ => return Err(UrlProblem::UnsupportedScheme(scheme.to_string())),
        };
        let rest = rest.strip_prefix("//").ok_or(UrlProblem::NotAbsolute)?;
        let (rest, fragment) = match rest.split_once('#') {
            Some((r, _)) => (r, true),
            None => (rest, false),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q.to_string())),
            None => (rest, None),
        };
        if !allow_query && (fragment || query.is_some()) {
            return Err(UrlProblem::QueryOrFragment);
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = host_port(hostport)?;
        if scheme == Scheme::File {
            if !(host.is_empty() || host == "localhost") || userinfo.is_some() || port.is_some() {
                return Err(UrlProblem::FileHost);
            }
        } else if host.is_empty() {
            return Err(UrlProblem::NoHost);
        }
        Ok(RemoteUrl {
            scheme,
            userinfo,
            host,
            port,
            path: remove_dot_segments(if path.is_empty() { "/" } else { path }),
            query,
        })
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host, lower-cased (an IPv6 literal in brackets); empty for
    /// `file://`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, the scheme's default if the URL names none.
    pub fn port(&self) -> Option<u16> {
        self.port.or(self.scheme.default_port())
    }

    /// The path (percent-encoded, starting with `/`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the URL carries `user[:password]@`.
    pub fn has_userinfo(&self) -> bool {
        self.userinfo.is_some()
    }

    /// Scheme, host and port are the same (RFC 6454 origin): where a
    /// client may send credentials it was given for the other.
    pub fn same_origin(&self, other: &RemoteUrl) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port() == other.port()
    }

    /// This URL with the credentials of `other` (none if it has none): for
    /// a redirect within one origin.
    pub fn with_userinfo_of(&self, other: &RemoteUrl) -> RemoteUrl {
        RemoteUrl {
            userinfo: other.userinfo.clone(),
            ..self.clone()
        }
    }

    /// `relative` (e.g. `objects/ab/cd.filez`) under this URL as a
    /// directory, whether or not its path ends with `/`.
    pub fn join(&self, relative: &str) -> RemoteUrl {
        let sep = if self.path.ends_with('/') { "" } else { "/" };
        RemoteUrl {
            path: format!("{}{sep}{}", self.path, relative.trim_start_matches('/')),
            query: None,
            ..self.clone()
        }
    }

    /// Resolves a redirect's `Location` against this URL (RFC 3986 §5.2;
    /// RFC 9110 §10.2.2), checking the result as [`RemoteUrl::parse`]
    /// does, except that it may have a query (a fragment is dropped).
    pub fn resolve(&self, location: &str) -> Result<RemoteUrl, InvalidUrl> {
        let invalid = |problem| InvalidUrl {
            url: redact(location),
            problem,
        };
        let location = location.trim();
        let absolute = if scheme_of(location).is_some() {
            location.to_string()
        } else if location.starts_with("//") {
            format!("{}:{location}", self.scheme.as_str())
        } else {
            let location = location.split('#').next().unwrap_or_default();
            let (path, query) = match location.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (location, None),
            };
            let path = if path.is_empty() {
                self.path.clone()
            } else if path.starts_with('/') {
                path.to_string()
            } else {
                let dir = &self.path[..self.path.rfind('/').map_or(0, |i| i + 1)];
                format!("{dir}{path}")
            };
            let query = match (query, location.is_empty()) {
                (Some(q), _) => format!("?{q}"),
                (None, true) => self
                    .query
                    .as_ref()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default(),
                (None, false) => String::new(),
            };
            format!("{}{path}{query}", self.origin_prefix())
        };
        Self::parse_inner(&absolute, true).map_err(invalid)
    }

    /// `scheme://[userinfo@]host[:port]`.
    fn origin_prefix(&self) -> String {
        let mut s = format!("{}://", self.scheme.as_str());
        if let Some(u) = &self.userinfo {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.host);
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s
    }

    /// The full URL, credentials included: what is sent.
    pub fn as_request_uri(&self) -> String {
        let mut s = self.origin_prefix();
        s.push_str(&self.path);
        if let Some(q) = &self.query {
            s.push('?');
            s.push_str(q);
        }
        s
    }
}

/// Shows the URL with any password replaced by `***`.
impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.as_request_uri()))
    }
}

impl fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteUrl({self})")
    }
}

/// `scheme://user:***@host/...` for `scheme://user:password@host/...`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let at = userinfo.len();
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_urls() {
        for (url, scheme, host, port, path) in [
            ("http://example.com", Scheme::Http, "example.com", 80, "/"),
            (
                "HTTPS://Example.COM:8443/repo/",
                Scheme::Https,
                "example.com",
                8443,
                "/repo/",
            ),
            (
                "http://127.0.0.1:65535/a/b",
                Scheme::Http,
                "127.0.0.1",
                65535,
                "/a/b",
            ),
            ("http://[::1]:8080/r", Scheme::Http, "[::1]", 8080, "/r"),
            ("http://[::1]/r", Scheme::Http, "[::1]", 80, "/r"),
            ("http://h:/r", Scheme::Http, "h", 80, "/r"),
            ("http://u:p%40ss@h/r", Scheme::Http, "h", 80, "/r"),
            ("http://h/a/./b/../c", Scheme::Http, "h", 80, "/a/c"),
            ("http://h/%7Erepo", Scheme::Http, "h", 80, "/%7Erepo"),
        ] {
            let u = RemoteUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                (u.scheme(), u.host(), u.port(), u.path()),
                (scheme, host, Some(port), path),
                "{url}"
            );
        }
        let f = RemoteUrl::parse("file:///srv/repo").unwrap();
        assert_eq!(
            (f.scheme(), f.host(), f.path()),
            (Scheme::File, "", "/srv/repo")
        );
        assert!(RemoteUrl::parse("file://localhost/srv/repo").is_ok());
    }

    #[test]
    fn invalid_urls_say_why() {
        use UrlProblem::*;
        for (url, problem) in [
            ("http://127.0.0.1:74277/", InvalidPort("74277".into())),
            ("http://h:0/", InvalidPort("0".into())),
            ("http://h:-1/", InvalidPort("-1".into())),
            ("http://h:+80/", InvalidPort("+80".into())),
            ("http://h:8o/", InvalidPort("8o".into())),
            ("http:///repo", NoHost),
            ("https://", NoHost),
            ("http://:80/", NoHost),
            ("ftp://host/", UnsupportedScheme("ftp".into())),
            ("127.0.0.1/repo", NotAbsolute),
            ("/srv/repo", NotAbsolute),
            ("http:repo", NotAbsolute),
            ("", NotAbsolute),
            ("http://[::1/", InvalidHost("[::1".into())),
            ("http://[zz]/", InvalidHost("[zz]".into())),
            ("http://[::1]x/", InvalidHost("[::1]x".into())),
            ("http://a b/", InvalidCharacter(' ')),
            ("http://h/r\n[core]", InvalidCharacter('\n')),
            ("http://h/ré", InvalidCharacter('é')),
            ("http://h/%zz", InvalidPercentEncoding),
            ("http://h/r?x=1", QueryOrFragment),
            ("http://h/r#f", QueryOrFragment),
            ("file://host/srv", FileHost),
        ] {
            let err = RemoteUrl::parse(url).expect_err(url);
            assert_eq!(err.problem, problem, "{url}");
            assert_eq!(err.url, url);
            assert!(err.to_string().contains(&format!("'{url}'")), "{err}");
        }
    }

    #[test]
    fn passwords_are_not_shown() {
        let err = RemoteUrl::parse("http://me:secret@h:99999/").unwrap_err();
        assert_eq!(err.url, "http://me:***@h:99999/");
        let u = RemoteUrl::parse("http://me:secret@h/r").unwrap();
        assert_eq!(u.to_string(), "http://me:***@h/r");
        assert_eq!(u.as_request_uri(), "http://me:secret@h/r");
    }

    #[test]
    fn join_appends_under_the_base() {
        for base in ["http://h/repo", "http://h/repo/"] {
            let u = RemoteUrl::parse(base).unwrap().join("objects/ab/cd.filez");
            assert_eq!(u.as_request_uri(), "http://h/repo/objects/ab/cd.filez");
        }
        let u = RemoteUrl::parse("http://h").unwrap().join("summary");
        assert_eq!(u.as_request_uri(), "http://h/summary");
    }

    #[test]
    fn redirects_resolve_as_rfc_3986() {
        let base = RemoteUrl::parse("http://u:p@h:8080/repo/objects/ab/cd.filez")
            .unwrap()
            .resolve("?q")
            .unwrap();
        assert_eq!(
            base.as_request_uri(),
            "http://u:p@h:8080/repo/objects/ab/cd.filez?q"
        );
        for (loc, want) in [
            ("https://cdn/x?sig=1#frag", "https://cdn/x?sig=1"),
            ("//cdn:81/x", "http://cdn:81/x"),
            ("/other", "http://u:p@h:8080/other"),
            ("ef.filez", "http://u:p@h:8080/repo/objects/ab/ef.filez"),
            ("../../summary", "http://u:p@h:8080/repo/summary"),
            ("../../../../..", "http://u:p@h:8080/"),
            ("", "http://u:p@h:8080/repo/objects/ab/cd.filez?q"),
            ("#f", "http://u:p@h:8080/repo/objects/ab/cd.filez?q"),
        ] {
            let r = base.resolve(loc).unwrap_or_else(|e| panic!("{loc}: {e}"));
            assert_eq!(r.as_request_uri(), want, "{loc}");
        }
        for loc in ["http://h:74277/x", "gopher://h/", "http:///x", "/a b"] {
            assert!(base.resolve(loc).is_err(), "{loc}");
        }
    }

    #[test]
    fn origins() {
        let a = RemoteUrl::parse("http://h/x").unwrap();
        assert!(a.same_origin(&RemoteUrl::parse("http://H:80/y").unwrap()));
        for other in ["https://h/x", "http://h:81/x", "http://g/x"] {
            assert!(!a.same_origin(&RemoteUrl::parse(other).unwrap()), "{other}");
        }
    }
}
