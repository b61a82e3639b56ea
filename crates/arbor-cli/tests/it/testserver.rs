//! A small HTTP/1.1 server under the tests' control: serves a directory,
//! except for paths given a hostile reply (wrong bytes, a body cut short,
//! a body far longer than announced, an error status) or a redirect, and
//! can redirect every other path to another server. Logs every request
//! with its `Authorization` header.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server answers for a path.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with these bytes.
    Bytes(Vec<u8>),
    /// This status, empty body.
    Status(u16),
    /// Announces `declared` bytes, sends `body` (shorter), closes.
    Truncated { declared: u64, body: Vec<u8> },
    /// Announces `declared` bytes (or nothing: close-delimited), then sends
    /// `prefix` and `pattern` repeated up to `len` bytes in all.
    Flood {
        declared: Option<u64>,
        prefix: Vec<u8>,
        pattern: Vec<u8>,
        len: u64,
    },
    /// This redirect status (301, 302, 303, 307, 308) to `location`, sent
    /// as is (absolute or relative).
    Redirect { status: u16, location: String },
}

#[derive(Debug, Default)]
struct Shared {
    overrides: HashMap<String, Reply>,
    /// Every path without an override is redirected (302) to this base URL
    /// followed by the path.
    redirect_all: Option<String>,
    log: Vec<String>,
    /// `Authorization` of each request, in the order of `log`.
    auth: Vec<Option<String>>,
}

/// The running server; stopped on drop.
#[derive(Debug)]
pub struct TestServer {
    port: u16,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    /// Serves `root` on 127.0.0.1 (a free port).
    pub fn start(root: &Path) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st, root) = (shared.clone(), stop.clone(), root.to_path_buf());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (sh, root) = (sh.clone(), root.clone());
                        std::thread::spawn(move || {
                            let _ = handle(conn, &root, &sh);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TestServer { port, shared, stop }
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Answers `path` (relative, e.g. `objects/ab/cd.filez`) with `reply`.
    pub fn set(&self, path: &str, reply: Reply) {
        self.shared
            .lock()
            .unwrap()
            .overrides
            .insert(format!("/{path}"), reply);
    }

    /// `http://HOST:PORT/` for another name of 127.0.0.1 (`localhost`):
    /// another host as far as a client is concerned.
    pub fn url_as(&self, host: &str) -> String {
        format!("http://{host}:{}/", self.port)
    }

    /// Redirects (302) every path without an override to `base` + path
    /// (`base` ends with `/`).
    pub fn redirect_all(&self, base: &str) {
        self.shared.lock().unwrap().redirect_all = Some(base.to_string());
    }

    /// Paths requested so far, in order (GET and HEAD alike).
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().unwrap().log.clone()
    }

    /// The `Authorization` header of each request so far, in order.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.shared.lock().unwrap().auth.clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle(conn: TcpStream, root: &Path, shared: &Mutex<Shared>) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("/").to_string();
        let mut auth = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                if name.eq_ignore_ascii_case("authorization") {
                    auth = Some(value.trim().to_string());
                }
            }
        }
        let reply = {
            let mut sh = shared.lock().unwrap();
            sh.log.push(path.clone());
            sh.auth.push(auth);
            let all = sh.redirect_all.as_ref().map(|base| Reply::Redirect {
                status: 302,
                location: format!("{base}{}", path.trim_start_matches('/')),
            });
            sh.overrides.get(&path).cloned().or(all)
        };
        let head = method == "HEAD";
        let reply = reply.unwrap_or_else(|| serve_file(root, &path));
        match reply {
            Reply::Bytes(b) => {
                write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", b.len())?;
                if !head {
                    w.write_all(&b)?;
                }
            }
            Reply::Status(s) => {
                write!(w, "HTTP/1.1 {s} X\r\nContent-Length: 0\r\n\r\n")?;
            }
            Reply::Redirect { status, location } => {
                let body = format!("<a href=\"{location}\">moved</a>");
                write!(
                    w,
                    "HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )?;
                if !head {
                    w.write_all(body.as_bytes())?;
                }
            }
            Reply::Truncated { declared, body } => {
                write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\n\r\n")?;
                w.write_all(&body)?;
                return Ok(()); // close: the body is cut short
            }
            Reply::Flood {
                declared,
                prefix,
                pattern,
                len,
            } => {
                match declared {
                    Some(d) => write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {d}\r\n\r\n")?,
                    None => write!(w, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?,
                }
                if w.write_all(&prefix).is_err() {
                    return Ok(());
                }
                let chunk: Vec<u8> = pattern.iter().copied().cycle().take(64 * 1020).collect();
                let mut sent = prefix.len() as u64;
                while sent < len {
                    let n = chunk.len().min((len - sent) as usize);
                    if w.write_all(&chunk[..n]).is_err() {
                        return Ok(()); // the client gave up: good
                    }
                    sent += n as u64;
                }
                return Ok(());
            }
        }
        w.flush()?;
    }
}

fn serve_file(root: &Path, path: &str) -> Reply {
    let rel = path.trim_start_matches('/');
    if rel.split('/').any(|p| p == ".." || p.is_empty()) {
        return Reply::Status(404);
    }
    let p: PathBuf = root.join(rel);
    match std::fs::File::open(&p) {
        Ok(mut f) if p.is_file() => {
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            Reply::Bytes(v)
        }
        _ => Reply::Status(404),
    }
}
