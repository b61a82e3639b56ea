//! A real nginx serving a directory, the reference static web server for
//! HTTP tests (plain HTTP, or HTTPS with a CA made at test time).
//!
//! Each [`Nginx`] is one `nginx` process (`master_process off`, so killing
//! it stops everything) with its own configuration, pid file, logs and
//! temporary directories in a private temporary directory, listening on a
//! free port of 127.0.0.1. It is killed and reaped on drop. Requests are
//! logged one per line in a tab-separated format that [`Nginx::requests`]
//! parses, so tests can count what a client fetched.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

/// The nginx binary (Debian package `nginx`, which has the ssl and http2
/// modules).
const NGINX: &str = "nginx";
/// How long nginx may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at a free port (another process may take the one we picked
/// between our probe and nginx's bind).
const PORT_ATTEMPTS: usize = 5;
/// The access log line: method, request URI (`-` for unparsable requests),
/// status, body bytes sent, request time in seconds.
const LOG_FORMAT: &str =
    r#""$request_method\t$request_uri\t$status\t$body_bytes_sent\t$request_time""#;

/// One line of the access log.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The request target as sent (`-` when nginx could not parse it).
    pub uri: String,
    /// The response status.
    pub status: u16,
    /// Body bytes sent (0 for HEAD).
    pub body_bytes: u64,
    /// Seconds from the first request byte to the log write.
    pub request_time: f64,
}

/// A running nginx; killed and waited for on drop.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    dir: TempDir,
    port: u16,
    control_port: u16,
    tls: bool,
}

impl Nginx {
    /// Serves `root` (a directory) over HTTP on 127.0.0.1.
    pub fn start(root: &Path) -> Result<Nginx> {
        Nginx::start_with(root, false, "")
    }

    /// Serves `root` over HTTPS (and HTTP/2) on 127.0.0.1, with a
    /// certificate for `127.0.0.1` and `localhost` signed by a fresh CA; see
    /// [`Nginx::ca_path`].
    pub fn start_tls(root: &Path) -> Result<Nginx> {
        Nginx::start_with(root, true, "")
    }

    /// As [`Nginx::start_tls`], with `directives` added to the server
    /// block (e.g. `location = /summary { return 302 http://...; }`).
    /// `@DIR@` in them stands for the directory of the certificates.
    pub fn start_tls_with(root: &Path, directives: &str) -> Result<Nginx> {
        Nginx::start_with(root, true, directives)
    }

    /// A client certificate and its key signed by the CA of
    /// [`Nginx::ca_path`] (for `ssl_verify_client`); `None` without TLS.
    pub fn client_cert(&self) -> Option<(PathBuf, PathBuf)> {
        self.tls.then(|| {
            let d = self.dir.path();
            (d.join("client.pem"), d.join("client.key"))
        })
    }

    /// `http://127.0.0.1:PORT/` (or `https://`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// The CA certificate (PEM) that signed the server certificate, for
    /// clients' custom trust roots (`tls-ca-path`); `None` without TLS.
    pub fn ca_path(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.path().join("ca.pem"))
    }

    /// nginx's error log (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Every request logged so far, in order. Every request whose response
    /// the caller has fully received is included: nginx (one process, one
    /// thread) writes a log line right after a response's last byte, and
    /// this first makes a request to a control port, which nginx can only
    /// answer after that.
    pub fn requests(&self) -> Vec<Request> {
        self.log_barrier()
            .unwrap_or_else(|e| panic!("nginx log barrier: {e:#}\n{}", self.error_log()));
        let path = self.dir.path().join("access.log");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        text.lines()
            .map(|l| parse_log_line(l).unwrap_or_else(|e| panic!("access log line {l:?}: {e:#}")))
            .collect()
    }

    fn log_barrier(&self) -> Result<()> {
        let mut s = TcpStream::connect(("127.0.0.1", self.control_port))?;
        s.set_read_timeout(Some(START_TIMEOUT))?;
        s.write_all(b"GET /barrier HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply)?;
        if !reply.starts_with(b"HTTP/1.1 204") {
            bail!("unexpected reply {:?}", String::from_utf8_lossy(&reply));
        }
        Ok(())
    }

    fn start_with(root: &Path, tls: bool, directives: &str) -> Result<Nginx> {
        let root = root
            .canonicalize()
            .with_context(|| format!("Resolving {}", root.display()))?;
        let dir = TempDir::new()?;
        std::fs::create_dir(dir.path().join("tmp"))?;
        if tls {
            make_certificates(dir.path())?;
        }
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let (port, control_port) = two_free_ports()?;
            let directives = directives.replace("@DIR@", dir.path().to_str().expect("UTF-8"));
            let conf = config(dir.path(), &root, port, control_port, tls, &directives);
            std::fs::write(dir.path().join("nginx.conf"), conf)?;
            let _ = std::fs::remove_file(dir.path().join("error.log"));
            let mut child = Command::new(NGINX)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("Starting nginx (apt-get install nginx)")?;
            let ready = wait_ready(&mut child, &[port, control_port]);
            if !matches!(ready, Ok(true)) {
                // Exited (reaped by try_wait), timed out or failed: make
                // sure it is gone before reporting.
                let _ = child.kill();
                let _ = child.wait();
            }
            let log = || std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            match ready {
                Ok(true) => {
                    return Ok(Nginx {
                        child,
                        dir,
                        port,
                        control_port,
                        tls,
                    })
                }
                Ok(false) if log().contains("Address already in use") => last_error = log(),
                Ok(false) => bail!("nginx exited:\n{}", log()),
                Err(e) => bail!("{e:#}:\n{}", log()),
            }
        }
        bail!("nginx found no free port:\n{last_error}")
    }
}

/// Waits until all `ports` accept connections (`true`) or `child` exits
/// (`false`).
fn wait_ready(child: &mut Child, ports: &[u16]) -> Result<bool> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        if ports
            .iter()
            .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        {
            return Ok(true);
        }
        if Instant::now() > deadline {
            bail!("nginx did not accept connections within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Errors only mean it already exited; wait reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two distinct ports that were free a moment ago.
fn two_free_ports() -> Result<(u16, u16)> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// `"PATH"` for the nginx configuration.
fn quoted(p: &Path) -> String {
    let s = p.to_str().expect("UTF-8 path");
    assert!(!s.contains(['"', '\\', '$']), "unusual path {s:?}");
    format!("\"{s}\"")
}

/// The configuration: one worker process, everything inside `dir`, the
/// static site for `root` on `port` (with `directives`) and the log barrier
/// on `control_port`.
fn config(
    dir: &Path,
    root: &Path,
    port: u16,
    control_port: u16,
    tls: bool,
    directives: &str,
) -> String {
    let d = |name: &str| quoted(&dir.join(name));
    // As root, nginx would otherwise run as `nobody`, which cannot enter
    // the 0700 temporary directories.
    let user = if rustix::process::geteuid().is_root() {
        "user root;"
    } else {
        ""
    };
    let listen = if tls {
        format!(
            "listen 127.0.0.1:{port} ssl http2;\n\
             ssl_certificate {};\n\
             ssl_certificate_key {};\n\
             ssl_protocols TLSv1.2 TLSv1.3;",
            d("server.pem"),
            d("server.key")
        )
    } else {
        format!("listen 127.0.0.1:{port};")
    };
    format!(
        r#"{user}
master_process off;
daemon off;
pid {pid};
error_log {error_log} notice;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    log_format arbor {LOG_FORMAT};
    access_log {access_log} arbor;
    client_body_temp_path {body};
    proxy_temp_path {proxy};
    fastcgi_temp_path {fastcgi};
    uwsgi_temp_path {uwsgi};
    scgi_temp_path {scgi};
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 60s;
    keepalive_requests 100000;
    gzip off;
    server_tokens off;
    server {{
        {listen}
        root {root};
        autoindex off;
        disable_symlinks on from=$document_root;
        {directives}
        location / {{
            try_files $uri =404;
        }}
    }}
    server {{
        listen 127.0.0.1:{control_port};
        access_log off;
        location = /barrier {{
            return 204;
        }}
    }}
}}
"#,
        pid = d("nginx.pid"),
        error_log = d("error.log"),
        access_log = d("access.log"),
        body = d("tmp/body"),
        proxy = d("tmp/proxy"),
        fastcgi = d("tmp/fastcgi"),
        uwsgi = d("tmp/uwsgi"),
        scgi = d("tmp/scgi"),
        root = quoted(root),
    )
}

/// Makes `ca.pem` (a self-signed CA), `server.pem`/`server.key` (signed
/// by it, for IP 127.0.0.1 and DNS localhost) and `client.pem`/`client.key`
/// (signed by it, for client authentication) in `dir` with the `openssl`
/// CLI. The server certificate is a separate non-CA leaf because rustls
/// (webpki) refuses a CA certificate as an end-entity certificate.
fn make_certificates(dir: &Path) -> Result<()> {
    let openssl = |args: &[&str]| -> Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("Running openssl (apt-get install openssl)")?;
        if !out.status.success() {
            bail!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509", "-days", "7", "-subj", "/CN=arbor test CA"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat(),
    )?;
    openssl(
        &[
            &["req", "-subj", "/CN=127.0.0.1"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat(),
    )?;
    sign(
        dir,
        &openssl,
        "server",
        "serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost",
    )?;
    openssl(
        &[
            &["req", "-subj", "/CN=arbor test client"][..],
            &ec,
            &["-keyout", "client.key", "-out", "client.csr"],
        ]
        .concat(),
    )?;
    sign(dir, &openssl, "client", "clientAuth")
}

/// Signs `dir/NAME.csr` with the CA into `NAME.pem`: a leaf certificate
/// for `usage` (the extendedKeyUsage value, then any further extension
/// lines).
fn sign(
    dir: &Path,
    openssl: &dyn Fn(&[&str]) -> Result<()>,
    name: &str,
    usage: &str,
) -> Result<()> {
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        format!(
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage={usage}\n"
        ),
    )?;
    let (csr, pem) = (format!("{name}.csr"), format!("{name}.pem"));
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "2",
        "-days",
        "7",
        "-extfile",
        &ext,
        "-out",
        &pem,
    ])
}

fn parse_log_line(line: &str) -> Result<Request> {
    let f: Vec<&str> = line.split('\t').collect();
    let [method, uri, status, body_bytes, request_time] = f[..] else {
        bail!("expected 5 tab-separated fields");
    };
    Ok(Request {
        method: method.to_string(),
        uri: uri.to_string(),
        status: status.parse()?,
        body_bytes: body_bytes.parse()?,
        request_time: request_time.parse()?,
    })
}

#[test]
fn parses_access_log_lines() {
    let r = parse_log_line("GET\t/objects/ab/cd.filez\t200\t1234\t0.002").unwrap();
    assert_eq!(
        r,
        Request {
            method: "GET".into(),
            uri: "/objects/ab/cd.filez".into(),
            status: 200,
            body_bytes: 1234,
            request_time: 0.002,
        }
    );
    assert_eq!(parse_log_line("GET\t-\t400\t150\t0.000").unwrap().uri, "-");
    assert!(parse_log_line("GET /x 200").is_err());
    assert!(parse_log_line("GET\t/x\tok\t1\t0.1").is_err());
}
