//! HTTP: the real ostree pulls an arbor-written archive repository served
//! by nginx (the reference static server, over HTTP and HTTPS) and by
//! `arbor serve`. Both servers must behave as static servers (GET/HEAD with
//! Content-Length, 404 for missing files, keep-alive) and never send a byte
//! from outside the repository.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::interop::{make_second_tree, SECOND_ARGS};
use crate::nginx::Nginx;
use crate::util::*;

/// Size of the incompressible file in the trees (several deflate blocks,
/// above tiny_http's 32 KiB chunked-encoding threshold).
const BIG_FILE: usize = 300 * 1024;
/// Content the servers must never send.
const SECRET: &str = "TOP-SECRET: outside the repository\n";
/// Keep-alive GETs on one connection; with Nagle's 40 ms stall per request
/// they would take at least 8 s.
const KEEPALIVE_GETS: usize = 200;
const KEEPALIVE_LIMIT: Duration = Duration::from_secs(4);

/// Deterministic incompressible bytes (xorshift64).
fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An archive repository written by arbor with two commits on
/// [`VECTOR_REF`]: `c1` of `tree1`, then `c2` of `tree2` (files, symlinks,
/// an executable, subdirectories, xattrs, a big file).
struct Fixture {
    _td: TempDir,
    tree1: PathBuf,
    tree2: PathBuf,
    repo: PathBuf,
    c1: String,
    c2: String,
}

fn fixture() -> Fixture {
    let td = TempDir::new().unwrap();
    let tree1 = td.path().join("tree1");
    make_vector_tree(&tree1);
    std::fs::write(tree1.join("usr/big.bin"), pseudo_random(BIG_FILE, 1)).unwrap();
    let tree2 = td.path().join("tree2");
    make_second_tree(&tree2);
    std::fs::write(tree2.join("usr/big.bin"), pseudo_random(BIG_FILE, 2)).unwrap();
    let repo = td.path().join("srv/repo");
    arbor_init(&repo, "archive");
    let c1 = arbor_commit(&repo, VECTOR_COMMIT_ARGS, &tree1);
    let c2 = arbor_commit(&repo, SECOND_ARGS, &tree2);
    Fixture {
        _td: td,
        tree1,
        tree2,
        repo,
        c1,
        c2,
    }
}

fn commit_object(repo: &Path, c: &str) -> PathBuf {
    repo.join(format!("objects/{}/{}.commit", &c[..2], &c[2..]))
}

/// `ostree pull --repo=DEST ARGS.. origin REF`.
#[track_caller]
fn ostree_pull(dest: &Path, args: &[&str]) {
    run_ok(
        ostree()
            .arg("pull")
            .arg(format!("--repo={}", dest.display()))
            .args(args)
            .args(["origin", VECTOR_REF])
            .env("no_proxy", "127.0.0.1"),
    );
}

/// Checks `rev` out of `repo` with ostree and compares it with `tree`:
/// in user mode, and as root also with ownership and xattrs applied.
#[track_caller]
fn check_ostree_checkout(repo: &Path, rev: &str, tree: &Path) {
    let td = TempDir::new().unwrap();
    let co = td.path().join("user");
    ostree_ok("checkout", repo, &["-U", rev, s(&co)]);
    assert_same_tree(tree, &co, false);
    if !needs_root("a root ostree checkout (ownership and xattrs)") {
        let co = td.path().join("root");
        ostree_ok("checkout", repo, &[rev, s(&co)]);
        assert_same_tree(tree, &co, true);
    }
}

/// For archive and bare-user destinations: `ostree pull` (depth 0) of the
/// branch, then `--depth=1`; after each, `ostree fsck` is clean, the ref is
/// arbor's commit and checkouts equal the committed trees.
#[track_caller]
fn check_ostree_pulls(f: &Fixture, url: &str, remote_opts: &[&str]) {
    let work = TempDir::new().unwrap();
    for mode in ["archive", "bare-user"] {
        let dest = work.path().join(mode);
        ostree_init(&dest, mode);
        ostree_ok(
            "remote",
            &dest,
            &[
                &["add", "--no-gpg-verify"][..],
                remote_opts,
                &["origin", url],
            ]
            .concat(),
        );
        ostree_pull(&dest, &[]);
        ostree_ok("fsck", &dest, &[]);
        let rev = ostree_ok("rev-parse", &dest, &[&format!("origin:{VECTOR_REF}")]);
        assert_eq!(rev.trim(), f.c2, "{mode}");
        assert!(
            !commit_object(&dest, &f.c1).exists(),
            "{mode}: depth 0 fetched the parent"
        );
        check_ostree_checkout(&dest, &f.c2, &f.tree2);
        ostree_pull(&dest, &["--depth=1"]);
        ostree_ok("fsck", &dest, &[]);
        assert!(commit_object(&dest, &f.c1).exists(), "{mode}: no parent");
        check_ostree_checkout(&dest, &f.c1, &f.tree1);
    }
}

/// Every object file of `repo`, as request paths.
fn object_uris(repo: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in dir_names(&repo.join("objects")) {
        for n in dir_names(&repo.join("objects").join(&d)) {
            out.insert(format!("/objects/{d}/{n}"));
        }
    }
    out
}

/// What the four pulls of [`check_ostree_pulls`] fetched, per nginx's log.
fn check_pull_requests(repo: &Path, log: &[crate::nginx::Request]) {
    let optional = |u: &str| {
        u == "/summary"
            || u == "/summary.sig"
            || u.ends_with(".commitmeta")
            || u.starts_with("/deltas/")
            || u.starts_with("/delta-indexes/")
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in log {
        assert_eq!(r.method, "GET", "{r:?}");
        assert!(r.request_time >= 0.0, "{r:?}");
        match r.status {
            200 => {
                let len = std::fs::metadata(repo.join(&r.uri[1..])).unwrap().len();
                assert_eq!(r.body_bytes, len, "{r:?}");
                *counts.entry(&r.uri).or_default() += 1;
            }
            404 => assert!(optional(&r.uri), "required file missing: {r:?}"),
            _ => panic!("unexpected status: {r:?}"),
        }
    }
    // Each pull reads the ref once; each destination fetches each object
    // at most once (commits are read again to pick up new metadata).
    assert_eq!(counts[format!("/refs/heads/{VECTOR_REF}").as_str()], 4);
    for (uri, n) in &counts {
        if uri.starts_with("/objects/") && !uri.ends_with(".commit") {
            assert!(*n <= 2, "{uri} fetched {n} times");
        }
    }
    // Two commits, one branch: the pulls needed every object.
    let fetched: BTreeSet<String> = counts
        .keys()
        .filter(|u| u.starts_with("/objects/"))
        .map(|u| u.to_string())
        .collect();
    assert_eq!(fetched, object_uris(repo));
}

#[test]
fn ostree_pulls_from_nginx() {
    require_ostree();
    let f = fixture();
    let nginx = Nginx::start(&f.repo).unwrap();
    check_ostree_pulls(&f, &nginx.url(), &[]);
    check_pull_requests(&f.repo, &nginx.requests());
}

#[test]
fn ostree_pulls_from_arbor_serve() {
    require_ostree();
    let f = fixture();
    let server = ArborServe::start(&f.repo);
    check_ostree_pulls(&f, server.url(), &[]);
}

#[test]
fn ostree_and_rustls_pull_over_https_from_nginx() {
    require_ostree();
    let f = fixture();
    let nginx = Nginx::start_tls(&f.repo).unwrap();
    let url = nginx.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = nginx.ca_path().expect("a TLS server has a CA");
    check_ostree_pulls(&f, &url, &[&format!("--set=tls-ca-path={}", s(&ca))]);

    // Without the CA, ostree refuses the certificate.
    let td = TempDir::new().unwrap();
    let dest = td.path().join("untrusting");
    ostree_init(&dest, "archive");
    ostree_ok("remote", &dest, &["add", "--no-gpg-verify", "origin", &url]);
    let out = run_fail(
        ostree()
            .arg("pull")
            .arg(format!("--repo={}", dest.display()))
            .args(["origin", VECTOR_REF]),
    );
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("certificate"), "{err}");

    // rustls (what arbor's puller uses) accepts the server certificate
    // with the CA as its only root, and refuses it with the system's roots.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let agent = |roots: Vec<ureq::tls::Certificate<'static>>| {
        let roots = ureq::tls::RootCerts::Specific(Arc::new(roots));
        let tls = ureq::tls::TlsConfig::builder().root_certs(roots).build();
        ureq::Agent::new_with_config(ureq::Agent::config_builder().tls_config(tls).build())
    };
    let config = std::fs::read(f.repo.join("config")).unwrap();
    let cert = ureq::tls::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let agent_with_ca = agent(vec![cert]);
    let body = agent_with_ca
        .get(format!("{url}config"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_vec()
        .unwrap();
    assert_eq!(body, config);
    let system = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap();
    let system: Vec<_> = ureq::tls::parse_pem(&system)
        .filter_map(|i| match i.unwrap() {
            ureq::tls::PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    assert!(system.len() > 10, "{} system roots", system.len());
    let public = agent(system).get(format!("{url}config")).call();
    assert!(public.is_err(), "{public:?}");
}

/// A minimal HTTP/1.1 client on one connection. Every response must carry
/// a Content-Length (no chunked bodies, no close-delimited bodies).
struct Conn {
    r: BufReader<TcpStream>,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Conn {
    fn open(url: &str) -> Conn {
        let hostport = url
            .strip_prefix("http://")
            .and_then(|u| u.strip_suffix('/'))
            .expect("an http://HOST:PORT/ URL");
        let s = TcpStream::connect(hostport).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Conn {
            r: BufReader::new(s),
        }
    }

    fn request(&mut self, method: &str, target: &str) -> Reply {
        let mut body = Vec::new();
        let mut reply = self.request_into(method, target, &mut body);
        reply.body = body;
        reply
    }

    /// Sends a request and streams the response body into `sink`.
    fn request_into(&mut self, method: &str, target: &str, sink: &mut dyn Write) -> Reply {
        let req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.r.get_mut().write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status = line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|l| l.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{method} {target}: status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').expect("a header line");
            headers.push((n.to_string(), v.trim().to_string()));
        }
        let reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        assert!(
            reply.header("transfer-encoding").is_none(),
            "{method} {target}: {reply:?}"
        );
        let len: u64 = reply
            .header("content-length")
            .unwrap_or_else(|| panic!("{method} {target}: no Content-Length: {reply:?}"))
            .parse()
            .unwrap();
        if method != "HEAD" {
            let n = std::io::copy(&mut (&mut self.r).take(len), sink).unwrap();
            assert_eq!(n, len, "{method} {target}: short body");
        }
        reply
    }
}

/// A small archive repository in `srv/repo` with a 64 KiB `big.bin` and
/// a 4 KiB `small.bin`,
/// secrets in `srv/secret` and `srv/etc/passwd`, and symlinks from the
/// repository to them, to its parent and to /etc.
fn safety_fixture() -> (TempDir, PathBuf) {
    let td = TempDir::new().unwrap();
    let srv = td.path().join("srv");
    let repo = srv.join("repo");
    arbor_init(&repo, "archive");
    let tree = td.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("hello"), "hello\n").unwrap();
    arbor_commit(&repo, &["-b", "main", "--timestamp=@1"], &tree);
    std::fs::write(repo.join("big.bin"), pseudo_random(64 * 1024, 3)).unwrap();
    std::fs::write(repo.join("small.bin"), pseudo_random(4096, 4)).unwrap();
    std::fs::write(srv.join("secret"), SECRET).unwrap();
    std::fs::create_dir(srv.join("etc")).unwrap();
    std::fs::write(srv.join("etc/passwd"), SECRET).unwrap();
    let link = |target: &Path, name: &str| std::os::unix::fs::symlink(target, repo.join(name));
    link(Path::new("../secret"), "escape").unwrap();
    link(&srv.join("secret"), "escape-abs").unwrap();
    link(Path::new(".."), "updir").unwrap();
    link(Path::new("/etc"), "etc-link").unwrap();
    (td, repo)
}

/// Request targets that point outside the repository, literally, encoded
/// or through symlinks.
const ESCAPES: &[&str] = &[
    "/..",
    "/../secret",
    "/%2e%2e/secret",
    "/%2E%2E/etc/passwd",
    "/.%2e/secret",
    "/..%2fsecret",
    "/%2e%2e%2fsecret",
    "/objects/../../secret",
    "/objects/../../etc/passwd",
    "/objects/%2e%2e/%2e%2e/etc/passwd",
    "/objects%2f..%2f..%2fetc%2fpasswd",
    "//etc/passwd",
    "/etc/passwd",
    "/config%00",
    "/config%00/../../secret",
    "http://127.0.0.1/../secret",
    "/escape",
    "/escape-abs",
    "/updir/secret",
    "/updir/etc/passwd",
    "/updir/repo/config",
    "/etc-link/passwd",
];

fn check_stays_inside(url: &str) {
    for target in ESCAPES {
        let r = Conn::open(url).request("GET", target);
        assert!([400, 403, 404].contains(&r.status), "{url} {target}: {r:?}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            !body.contains(SECRET) && !body.contains("root:x:0:0"),
            "{url} {target}: leaked {body}"
        );
    }
}

#[test]
fn servers_stay_inside_the_repository() {
    let (_td, repo) = safety_fixture();
    let server = ArborServe::start(&repo);
    check_stays_inside(server.url());
    let nginx = Nginx::start(&repo).unwrap();
    check_stays_inside(&nginx.url());
    // The same requests, seen from nginx's side (no parsed URI for the
    // ones it rejects outright).
    let log = nginx.requests();
    assert_eq!(log.len(), ESCAPES.len(), "{log:?}");
    assert!(log.iter().all(|r| r.status >= 400), "{log:?}");
}

/// GET/HEAD of files with Content-Length, 404 for missing files and
/// directories, 405 for other methods, on one kept-alive connection.
fn check_static_semantics(url: &str, repo: &Path) {
    let mut c = Conn::open(url);
    for file in ["config", "big.bin", "small.bin", "refs/heads/main"] {
        let content = std::fs::read(repo.join(file)).unwrap();
        let target = format!("/{file}");
        let get = c.request("GET", &target);
        assert_eq!((get.status, &get.body), (200, &content), "{url}{file}");
        let head = c.request("HEAD", &target);
        assert_eq!(head.status, 200, "{url}{file}");
        assert!(head.body.is_empty());
        assert_eq!(
            head.header("content-length"),
            Some(content.len().to_string().as_str())
        );
    }
    let c1 = std::fs::read_to_string(repo.join("refs/heads/main")).unwrap();
    let c1 = c1.trim();
    for missing in [
        "/summary".to_string(),
        "/summary.sig".to_string(),
        format!("/objects/{}/{}.commitmeta", &c1[..2], &c1[2..]),
        "/deltas/aa/bb/superblock".to_string(),
        "/".to_string(),
        "/objects".to_string(),
        "/objects/".to_string(),
        "/refs/heads/".to_string(),
    ] {
        for method in ["GET", "HEAD"] {
            let r = c.request(method, &missing);
            assert_eq!(r.status, 404, "{url} {method} {missing}: {r:?}");
        }
    }
    // Servers may close the connection after refusing a method.
    for method in ["PUT", "DELETE", "OPTIONS"] {
        let r = Conn::open(url).request(method, "/config");
        assert_eq!(r.status, 405, "{url} {method}: {r:?}");
    }
}

#[test]
fn servers_answer_like_static_servers() {
    let (_td, repo) = safety_fixture();
    let server = ArborServe::start(&repo);
    check_static_semantics(server.url(), &repo);
    // Requests are logged at debug level only.
    assert_eq!(server.stderr(), "");
    let nginx = Nginx::start(&repo).unwrap();
    check_static_semantics(&nginx.url(), &repo);
}

/// Many GETs of a 4 KiB file on one connection, quickly: keep-alive works
/// and nothing waits for delayed ACKs. (A server writing headers and body
/// separately without TCP_NODELAY holds a body shorter than a segment
/// until the client's delayed ACK of the headers, 40 ms later.)
fn check_keep_alive(url: &str, repo: &Path) {
    let content = std::fs::read(repo.join("small.bin")).unwrap();
    let mut c = Conn::open(url);
    let start = Instant::now();
    for i in 0..KEEPALIVE_GETS {
        let r = c.request("GET", "/small.bin");
        assert!(r.status == 200 && r.body == content, "{url} request {i}");
    }
    let took = start.elapsed();
    assert!(
        took < KEEPALIVE_LIMIT,
        "{url}: {KEEPALIVE_GETS} keep-alive GETs took {took:?}"
    );
}

#[test]
fn servers_keep_connections_alive_without_delay() {
    let (_td, repo) = safety_fixture();
    let server = ArborServe::start(&repo);
    check_keep_alive(server.url(), &repo);
    let nginx = Nginx::start(&repo).unwrap();
    check_keep_alive(&nginx.url(), &repo);
    assert_eq!(nginx.requests().len(), KEEPALIVE_GETS);
}

/// Peak resident memory of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    line.trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// Counts bytes instead of keeping them.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn serve_streams_large_files() {
    const SIZE: u64 = 256 << 20;
    const MAX_RSS_KIB: u64 = 64 << 10;
    let (_td, repo) = safety_fixture();
    // Sparse: costs no disk space.
    std::fs::File::create(repo.join("huge.bin"))
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    let server = ArborServe::start(&repo);
    let mut count = Counter(0);
    let r = Conn::open(server.url()).request_into("GET", "/huge.bin", &mut count);
    assert_eq!(r.status, 200);
    assert_eq!(count.0, SIZE);
    let hwm = vm_hwm_kib(server.pid());
    assert!(
        hwm < MAX_RSS_KIB,
        "serving {SIZE} bytes peaked at {hwm} KiB"
    );
}

#[test]
fn serve_refuses_non_archive_repositories() {
    let td = TempDir::new().unwrap();
    for mode in ["bare", "bare-user", "bare-user-only"] {
        let repo = td.path().join(mode);
        arbor_init(&repo, mode);
        let out = run_fail(
            arbor()
                .args(["serve", "--addr", "127.0.0.1:0", "--repo"])
                .arg(&repo),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("Refusing to serve") && err.contains(&format!("mode is {mode}")),
            "{err}"
        );
        assert!(err.contains("archive"), "{err}");
        assert!(out.stdout.is_empty());
    }
    let out = run_fail(
        arbor()
            .args(["serve", "--addr", "127.0.0.1:0", "--repo"])
            .arg(td.path()),
    );
    assert!(out.stdout.is_empty());
}
