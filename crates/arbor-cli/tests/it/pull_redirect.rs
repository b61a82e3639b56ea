//! Redirects during `arbor pull`, under the rules of the one HTTP client
//! (`arbor-pull/src/fetcher/http.rs`, which cites what ostree's libcurl
//! fetcher does): another host is followed, without the URL's credentials;
//! https never goes to http, nothing goes to file://; a chain stops after
//! 30 redirects; every target is checked like a remote URL; a redirected
//! object is verified like any other. And invalid remote URLs are refused
//! by `remote add` and `pull` alike.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use crate::nginx::Nginx;
use crate::pull_hostile::refused;
use crate::pull_http::{filez_path, some_file, Fixture};
use crate::testserver::{Reply, TestServer};
use crate::util::*;
use crate::util::{pull_cmd as pull, rev_opt as rev};

/// The ref every test pulls, and the path it is fetched from when the
/// remote has no summary (the fixture has none).
const REF: &str = "os/main";
const REF_PATH: &str = "refs/heads/os/main";

/// `Authorization` for `user:secret`.
const BASIC: &str = "Basic dXNlcjpzZWNyZXQ=";

/// A fresh bare-user repository with remote `origin` at `url`.
fn dest_for(f: &Fixture, name: &str, url: &str, extra: &[&str]) -> std::path::PathBuf {
    let d = f.path(name);
    arbor_init(&d, "bare-user");
    run_ok(
        arbor()
            .args(["remote", "add", "--repo"])
            .arg(&d)
            .args(["--no-gpg-verify", "--set=n-network-retries=0"])
            .args(extra)
            .args(["origin", url]),
    );
    d
}

fn pull_error(dest: &Path) -> String {
    let out = run_fail(&mut pull(dest, &["origin", REF]));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// ostree's libcurl follows a redirect to another host (and so does
/// arbor), but sends the URL's `user:password` only to the host it was
/// given for.
#[test]
fn redirects_to_another_host_are_followed_without_the_credentials() {
    let f = Fixture::new();
    // A front server on 127.0.0.1 sends everything to the fixture's
    // server under its other name.
    let front = TestServer::start(&f.src);
    front.redirect_all(&f.server.url_as("localhost"));
    let url = front.url().replace("http://", "http://user:secret@");
    let dest = dest_for(&f, "dest", &url, &[]);
    run_ok(&mut pull(&dest, &["origin", REF]));
    assert_eq!(rev(&dest, &format!("origin:{REF}")), Some(f.v2.clone()));
    assert!(arbor_fsck_json(&dest).0);
    let front_auth = front.authorizations();
    assert!(front_auth.len() > 10, "{front_auth:?}");
    assert!(
        front_auth.iter().all(|a| a.as_deref() == Some(BASIC)),
        "{front_auth:?}"
    );
    // Every request went on to the other host, none with credentials.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(f.server.requests()), sorted(front.requests()));
    assert!(
        f.server.authorizations().iter().all(Option::is_none),
        "credentials sent to another host: {:?}",
        f.server.authorizations()
    );
}

/// Chains of `n` redirects from the ref's path to `/hop/n`, which serves
/// the ref.
fn chain(f: &Fixture, n: usize) {
    for i in 0..n {
        let from = if i == 0 {
            REF_PATH.to_string()
        } else {
            format!("hop/{i}")
        };
        let location = format!("/hop/{}", i + 1);
        f.server.set(
            &from,
            Reply::Redirect {
                status: [301, 302, 303, 307, 308][i % 5],
                location,
            },
        );
    }
    f.server.set(
        &format!("hop/{n}"),
        Reply::Bytes(format!("{}\n", f.v2).into()),
    );
}

/// libcurl's default CURLOPT_MAXREDIRS (ostree sets none): 30 redirects
/// are followed, the 31st is an error naming the URL; a loop ends there.
#[test]
fn redirect_chains_stop_after_30() {
    let f = Fixture::new();
    chain(&f, 30);
    let dest = dest_for(&f, "thirty", &f.server.url(), &[]);
    run_ok(&mut pull(&dest, &["origin", REF]));
    assert_eq!(rev(&dest, &format!("origin:{REF}")), Some(f.v2.clone()));

    chain(&f, 31);
    let dest = dest_for(&f, "thirty-one", &f.server.url(), &[]);
    let err = pull_error(&dest);
    assert!(
        err.contains("Too many redirects")
            && err.contains("gave up after 30")
            && err.contains(&format!("{}{REF_PATH}", f.server.url())),
        "{err}"
    );
    let hops = |f: &Fixture| {
        f.server
            .requests()
            .iter()
            .filter(|p| p.starts_with("/hop/31"))
            .count()
    };
    assert_eq!(hops(&f), 0, "the 31st redirect was followed");

    // A loop: the ref's path redirects to itself.
    f.server.set(
        REF_PATH,
        Reply::Redirect {
            status: 302,
            location: "main".into(),
        },
    );
    let before = f.server.requests().len();
    let dest = dest_for(&f, "loop", &f.server.url(), &[]);
    let err = pull_error(&dest);
    assert!(err.contains("Too many redirects"), "{err}");
    let asked = f.server.requests()[before..]
        .iter()
        .filter(|p| p.ends_with(REF_PATH))
        .count();
    assert_eq!(asked, 31, "the first request and 30 redirects");
}

/// A remote configured with https:// is only fetched over TLS: a redirect
/// to http:// is refused before any plain-text request (stricter than
/// libcurl, which follows it).
#[test]
fn https_to_http_redirects_are_refused() {
    let f = Fixture::new();
    // nginx serves the repository over TLS but sends the ref to the plain
    // server (which serves the same repository).
    let directives = format!(
        "location = /{REF_PATH} {{ return 302 {}{REF_PATH}; }}",
        f.server.url()
    );
    let nginx = Nginx::start_tls_with(&f.src, &directives).unwrap();
    let ca = nginx.ca_path().unwrap();
    let dest = dest_for(
        &f,
        "dest",
        &nginx.url(),
        &[&format!("--set=tls-ca-path={}", s(&ca))],
    );
    let err = pull_error(&dest);
    assert!(
        err.contains("downgrade from https to http")
            && err.contains(&format!("{}{REF_PATH}", nginx.url()))
            && err.contains(&format!("{}{REF_PATH}", f.server.url())),
        "{err}"
    );
    assert_eq!(f.server.requests(), Vec::<String>::new());
    assert_eq!(rev(&dest, &format!("origin:{REF}")), None);

    // Redirects from https to https are followed: here every object is
    // sent to the same path with a query string.
    let directives = "location /objects/ { if ($args = \"\") { return 302 $uri?moved; } }";
    let nginx = Nginx::start_tls_with(&f.src, directives).unwrap();
    let ca = nginx.ca_path().unwrap();
    let dest = dest_for(
        &f,
        "https-to-https",
        &nginx.url(),
        &[&format!("--set=tls-ca-path={}", s(&ca))],
    );
    run_ok(&mut pull(&dest, &["origin", REF]));
    assert_eq!(rev(&dest, &format!("origin:{REF}")), Some(f.v2.clone()));
    let log = nginx.requests();
    let moved = log.iter().filter(|r| r.uri.ends_with("?moved")).count();
    let redirected = log.iter().filter(|r| r.status == 302).count();
    assert!(moved > 10 && moved == redirected, "{log:?}");
    assert_eq!(f.server.requests(), Vec::<String>::new());
}

/// libcurl's default CURLOPT_REDIR_PROTOCOLS excludes file://: a server
/// cannot make a client read its local files.
#[test]
fn redirects_to_local_files_are_refused() {
    let f = Fixture::new();
    f.server.set(
        REF_PATH,
        Reply::Redirect {
            status: 302,
            location: format!("file://{}/{REF_PATH}", s(&f.src)),
        },
    );
    let dest = dest_for(&f, "dest", &f.server.url(), &[]);
    let err = pull_error(&dest);
    assert!(
        err.contains("a server cannot redirect to a local file")
            && err.contains(&format!("file://{}/{REF_PATH}", s(&f.src))),
        "{err}"
    );
    assert_eq!(rev(&dest, &format!("origin:{REF}")), None);
}

/// Port 80 of 127.0.0.1, watched: where a port out of range used to send
/// the connection. One test at a time holds it.
struct Port80 {
    listener: TcpListener,
    _lock: std::sync::MutexGuard<'static, ()>,
}

static PORT_80: Mutex<()> = Mutex::new(());

impl Port80 {
    /// `None` if port 80 is taken (the check is then skipped).
    fn watch() -> Option<Port80> {
        let lock = PORT_80.lock().unwrap_or_else(|e| e.into_inner());
        let listener = TcpListener::bind("127.0.0.1:80").ok()?;
        listener.set_nonblocking(true).unwrap();
        Some(Port80 {
            listener,
            _lock: lock,
        })
    }

    /// Whether anything connected (and sent what).
    fn connections(&self) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok((mut c, _)) = self.listener.accept() {
            c.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = [0u8; 256];
            let n = c.read(&mut buf).unwrap_or(0);
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        seen
    }
}

/// A redirect's target is checked like a remote URL: a port out of range
/// is an error naming it, not a request to port 80.
#[test]
fn redirect_targets_are_checked() {
    let f = Fixture::new();
    let port80 = Port80::watch();
    f.server.set(
        REF_PATH,
        Reply::Redirect {
            status: 302,
            location: format!("http://127.0.0.1:74277/{REF_PATH}"),
        },
    );
    let dest = dest_for(&f, "dest", &f.server.url(), &[]);
    let err = pull_error(&dest);
    assert!(
        err.contains(&format!("Invalid URL 'http://127.0.0.1:74277/{REF_PATH}'"))
            || (err.contains(&format!("http://127.0.0.1:74277/{REF_PATH}"))
                && err.contains("port '74277' is out of range")),
        "{err}"
    );
    if let Some(p) = port80 {
        assert_eq!(p.connections(), Vec::<String>::new());
    }
}

/// Following a redirect changes where bytes come from, not what they must
/// be: an object redirected to another object's bytes is refused by its
/// checksum, for a file object and a metadata object alike.
#[test]
fn redirected_objects_are_still_verified() {
    let f = Fixture::new();
    let readme = some_file(&f.src, REF, "/README.txt");
    let deep = some_file(&f.src, REF, "/newdir/sub/deep.txt");
    // README's path redirects to deep.txt's object (valid, but another).
    f.server.set(
        &filez_path(&readme),
        Reply::Redirect {
            status: 302,
            location: format!("/{}", filez_path(&deep)),
        },
    );
    refused(&f, "bare-user", &readme, "hashes to");
    f.server.set(
        &filez_path(&readme),
        Reply::Redirect {
            status: 307,
            location: format!("{}{}", f.server.url_as("localhost"), filez_path(&deep)),
        },
    );
    refused(&f, "archive", &readme, "hashes to");
    // The commit redirects to its parent's commit object.
    let commit = |c: &str| format!("objects/{}/{}.commit", &c[..2], &c[2..]);
    let good = std::fs::read(f.src.join(filez_path(&readme))).unwrap();
    f.server.set(&filez_path(&readme), Reply::Bytes(good));
    f.server.set(
        &commit(&f.v2),
        Reply::Redirect {
            status: 301,
            location: format!("/{}", commit(&f.v1)),
        },
    );
    refused(&f, "bare-user", &f.v2, "hashes to");
}

/// `remote add` refuses an invalid URL (the config is unchanged) and
/// `pull` refuses one another tool wrote (ostree's `remote add` accepts
/// anything), each naming the URL, before any connection.
#[test]
fn invalid_remote_urls_are_refused_by_remote_add_and_pull() {
    require_ostree();
    let td = tempfile::TempDir::new().unwrap();
    let repo = td.path().join("repo");
    arbor_init(&repo, "bare-user");
    let port80 = Port80::watch();
    for (url, why) in [
        (
            "http://127.0.0.1:74277/",
            "port '74277' is out of range (1-65535)",
        ),
        ("https://127.0.0.1:0/", "port '0' is out of range"),
        ("http:///srv/repo", "no host"),
        ("https://", "no host"),
        ("ftp://127.0.0.1/repo", "unsupported scheme 'ftp'"),
        ("127.0.0.1/repo", "not an absolute URL"),
        ("http://[::1/", "invalid host"),
        ("http://example.com/a b", "invalid character ' '"),
    ] {
        let named = format!("Invalid URL '{url}': {why}");
        let config = std::fs::read(repo.join("config")).unwrap();
        let out = run_fail(arbor().args(["remote", "add", "--repo"]).arg(&repo).args([
            "--no-gpg-verify",
            "bad",
            url,
        ]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&named), "remote add {url}: {err}");
        // So does a `--set url=` that would replace a valid URL.
        let out = run_fail(
            arbor()
                .args(["remote", "add", "--repo"])
                .arg(&repo)
                .arg(format!("--set=url={url}"))
                .args(["--no-gpg-verify", "bad", "http://127.0.0.1/"]),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&named), "remote add --set=url={url}: {err}");
        assert_eq!(std::fs::read(repo.join("config")).unwrap(), config);

        ostree_ok(
            "remote",
            &repo,
            &["add", "--force", "--no-gpg-verify", "bad", url],
        );
        let out = run_fail(&mut pull(&repo, &["bad", "main"]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&named), "pull from {url}: {err}");
        let out = run_fail(
            arbor()
                .args(["remote", "refs", "--repo"])
                .arg(&repo)
                .arg("bad"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&named), "remote refs {url}: {err}");
    }
    if let Some(p) = port80 {
        assert_eq!(p.connections(), Vec::<String>::new());
    }
}
