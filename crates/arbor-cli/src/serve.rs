//! `arbor serve`: a small static HTTP server for an archive repository,
//! for development and tests (production: any static web server, see the
//! README's nginx example).
//!
//! What ostree clients need from a server is plain files (spec §7.1): GET
//! and HEAD with a `Content-Length`, 404 for every missing optional file
//! (`summary.sig`, `.commitmeta`, deltas), no content transformation.
//! Nothing else is offered: no directory listings, no ranges, no caching
//! headers.
//!
//! Safety: the request target is decoded strictly (no `.`/`..` segments, no
//! encoded `/` or NUL) and the file is opened relative to the repository's
//! directory descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`,
//! so neither the path nor a symlink inside the repository can reach a file
//! outside it. Only regular files are served.
//!
//! The server: one thread per connection (at most 256), HTTP/1.1
//! keep-alive, request heads bounded (8 KiB lines, 100 headers), idle
//! connections closed after 60 s. It replaced tiny_http, under which
//! ureq's keep-alive requests sometimes got no answer until the client's
//! 60 s timeout. The listening socket has `TCP_NODELAY`, which Linux
//! copies to every accepted socket: without it a keep-alive request whose
//! response leaves in two writes waits about 40 ms (Nagle's algorithm
//! against the client's delayed ACK).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arbor_format::RepoMode;
use arbor_repo::Repo;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Connections served at once; more are closed at once (a development
/// server, not a production one: see the README for nginx).
const MAX_CONNECTIONS: usize = 256;
/// Longest request line or header line accepted.
const MAX_LINE: u64 = 8 * 1024;
/// Most header lines accepted in one request.
const MAX_HEADERS: usize = 100;
/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How often `openat2` is retried when the kernel reports a concurrent
/// rename during `RESOLVE_BENEATH` resolution (`EAGAIN`, see openat2(2)).
const OPENAT2_RETRIES: usize = 4;

/// Serves the archive repository at `repo_path` on `addr` until the process
/// is killed. The first line on `out` (flushed) is
/// `Serving PATH at http://ADDR/`, with the bound address, so `--addr
/// 127.0.0.1:0` can be used to pick a free port.
pub fn serve(repo_path: &Path, addr: &str, out: &mut impl Write) -> Result<()> {
    let root = Arc::new(open_archive_root(repo_path)?);
    let listener = bind_nodelay(addr)?;
    let local = listener.local_addr().context("Reading the bound address")?;
    writeln!(out, "Serving {} at http://{local}/", repo_path.display())?;
    out.flush()?;
    accept_loop(&listener, &root);
    Ok(())
}

/// Serves the archive repository at `repo_path` on `addr` from a background
/// thread that lives until the process exits (used by the quickstart);
/// returns the server's URL.
pub fn serve_background(repo_path: &Path, addr: &str) -> Result<String> {
    let root = Arc::new(open_archive_root(repo_path)?);
    let listener = bind_nodelay(addr)?;
    let local = listener.local_addr().context("Reading the bound address")?;
    std::thread::spawn(move || accept_loop(&listener, &root));
    Ok(format!("http://{local}/"))
}

/// Accepts connections, one thread each (at most [`MAX_CONNECTIONS`]).
fn accept_loop(listener: &TcpListener, root: &Arc<OwnedFd>) {
    let open = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("Accepting a connection: {e}");
                continue;
            }
        };
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!("Too many connections; closing one");
            continue;
        }
        let (root, open) = (root.clone(), open.clone());
        std::thread::spawn(move || {
            if let Err(e) = connection(conn, &root) {
                tracing::debug!("Connection ended: {e}");
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// A parsed request head.
#[derive(Debug)]
struct RequestHead {
    method: String,
    target: String,
    /// Keep the connection open after the response.
    keep_alive: bool,
    /// A request body follows (never expected: answered with 400, closed).
    has_body: bool,
}

/// Reads one line of at most [`MAX_LINE`] bytes; `None` at a clean EOF.
fn read_line(r: &mut impl BufRead) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.by_ref().take(MAX_LINE + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "line too long or cut short",
        ));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Reads a request head; `Ok(None)` at EOF between requests, `Err` for a
/// malformed one (answered with 400 by the caller).
fn read_head(
    r: &mut impl BufRead,
) -> std::io::Result<Option<std::result::Result<RequestHead, ()>>> {
    let Some(line) = read_line(r)? else {
        return Ok(None);
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(Some(Err(())));
    };
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Ok(Some(Err(()))),
    };
    let mut has_body = false;
    for _ in 0..=MAX_HEADERS {
        let Some(h) = read_line(r)? else {
            return Ok(Some(Err(())));
        };
        if h.is_empty() {
            return Ok(Some(Ok(RequestHead {
                method: method.to_string(),
                target: target.to_string(),
                keep_alive,
                has_body,
            })));
        }
        let Some((name, value)) = h.split_once(':') else {
            return Ok(Some(Err(())));
        };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "connection" if value.contains("close") => keep_alive = false,
            "connection" if value.contains("keep-alive") => keep_alive = true,
            "content-length" => has_body |= value != "0",
            "transfer-encoding" => has_body = true,
            _ => {}
        }
    }
    Ok(Some(Err(())))
}

/// Serves the requests of one connection until it closes or goes idle.
fn connection(conn: TcpStream, root: &OwnedFd) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = BufWriter::with_capacity(64 * 1024, conn);
    while let Some(head) = read_head(&mut r)? {
        let Ok(head) = head else {
            respond(&mut w, "-", "-", Answer::Status(400), false, false)?;
            return Ok(());
        };
        let keep = head.keep_alive && !head.has_body;
        let (answer, is_head) = match head.method.as_str() {
            _ if head.has_body => (Answer::Status(400), false),
            "GET" => (answer(root, &head.target), false),
            "HEAD" => (answer(root, &head.target), true),
            _ => (Answer::Status(405), false),
        };
        respond(&mut w, &head.method, &head.target, answer, is_head, keep)?;
        if !keep {
            return Ok(());
        }
    }
    Ok(())
}

/// Writes a response: a `Content-Length` always (no chunked encoding), the
/// file streamed (memory does not grow with its size).
fn respond(
    w: &mut BufWriter<TcpStream>,
    method: &str,
    target: &str,
    answer: Answer,
    is_head: bool,
    keep_alive: bool,
) -> std::io::Result<()> {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    match answer {
        Answer::File(mut f, len) => {
            tracing::debug!("{method} {target} 200 {len}");
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {len}\r\nConnection: {conn}\r\n\r\n"
            )?;
            if !is_head {
                let n = std::io::copy(&mut (&mut f).take(len), w)?;
                if n != len {
                    // The file shrank under us: the response is broken.
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "file shrank while being served",
                    ));
                }
            }
        }
        Answer::Status(code) => {
            tracing::debug!("{method} {target} {code}");
            let reason = match code {
                400 => "Bad Request",
                403 => "Forbidden",
                404 => "Not Found",
                405 => "Method Not Allowed",
                _ => "Internal Server Error",
            };
            let body = format!("{code} {reason}\n");
            let allow = if code == 405 {
                "Allow: GET, HEAD\r\n"
            } else {
                ""
            };
            write!(
                w,
                "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\n{allow}\
                 Content-Length: {}\r\nConnection: {conn}\r\n\r\n",
                body.len()
            )?;
            if !is_head {
                w.write_all(body.as_bytes())?;
            }
        }
    }
    w.flush()
}

/// Opens the repository and returns its directory descriptor, refusing
/// anything but archive mode: HTTP clients only ever request `.filez`
/// content objects, which only archive repositories have.
fn open_archive_root(repo_path: &Path) -> Result<OwnedFd> {
    let repo = Repo::open(repo_path)?;
    if repo.mode() != RepoMode::Archive {
        bail!(
            "Refusing to serve {}: its mode is {}, but HTTP clients only fetch \
             .filez objects from archive repositories (make one with \
             `arbor init --mode archive` and `arbor pull-local`)",
            repo_path.display(),
            repo.mode().config_name()
        );
    }
    let root = repo.dir().as_fd().try_clone_to_owned()?;
    Ok(root)
}

/// Binds `addr` with `TCP_NODELAY` set on the listening socket, so that
/// accepted sockets inherit it.
fn bind_nodelay(addr: &str) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr).with_context(|| format!("Binding {addr}"))?;
    rustix::net::sockopt::set_tcp_nodelay(&listener, true).context("Setting TCP_NODELAY")?;
    Ok(listener)
}

/// What to answer to one request.
#[derive(Debug)]
enum Answer {
    /// 200 with this file (of this size) as the body.
    File(File, u64),
    /// An error status with a short text body.
    Status(u16),
}

/// Maps a GET/HEAD request target to a file of the repository or a status.
fn answer(root: &OwnedFd, target: &str) -> Answer {
    let rel = match request_path(target) {
        Ok(Some(rel)) => rel,
        Ok(None) => return Answer::Status(404),
        Err(BadTarget(why)) => {
            tracing::debug!("Refusing request target {target:?}: {why}");
            return Answer::Status(400);
        }
    };
    match open_regular_beneath(root, &rel) {
        Ok(Some((f, len))) => Answer::File(f, len),
        Ok(None) => Answer::Status(404),
        Err(Errno::ACCESS | Errno::PERM) => Answer::Status(403),
        // Missing, not a directory on the way, a symlink leaving the
        // repository (EXDEV) or a magic link (ELOOP): all "not here".
        Err(Errno::NOENT | Errno::NOTDIR | Errno::XDEV | Errno::LOOP | Errno::NAMETOOLONG) => {
            Answer::Status(404)
        }
        Err(e) => {
            tracing::warn!("Opening {rel:?}: {e}");
            Answer::Status(500)
        }
    }
}

/// Why a request target was refused (for the debug log).
#[derive(Debug, PartialEq, Eq)]
struct BadTarget(&'static str);

/// Decodes an origin-form request target (`/objects/ab/cd.filez?x`) into a
/// path relative to the repository. `Ok(None)` means "names a directory"
/// (the root or a trailing `/`): never listed, so 404. Refused: anything not
/// starting with `/`, bad or encoded-`/` or NUL percent escapes, non-UTF-8,
/// empty, `.` and `..` segments.
fn request_path(target: &str) -> Result<Option<String>, BadTarget> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let Some(path) = path.strip_prefix('/') else {
        return Err(BadTarget("not an absolute path"));
    };
    let decoded = percent_decode(path)?;
    if decoded.is_empty() || decoded.ends_with('/') {
        return Ok(None);
    }
    for seg in decoded.split('/') {
        match seg {
            "" => return Err(BadTarget("empty path segment")),
            "." | ".." => return Err(BadTarget("dot segment")),
            _ => {}
        }
    }
    Ok(Some(decoded))
}

/// Percent-decodes one path, refusing `%2F` (it would hide a separator from
/// the segment checks), NUL, malformed escapes and non-UTF-8 results.
fn percent_decode(s: &str) -> Result<String, BadTarget> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = match bytes.get(i + 1..i + 3) {
                Some(&[hi, lo]) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                    hex_value(hi) << 4 | hex_value(lo)
                }
                _ => return Err(BadTarget("malformed percent escape")),
            };
            if hex == b'/' {
                return Err(BadTarget("encoded slash"));
            }
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    if out.contains(&0) {
        return Err(BadTarget("NUL byte"));
    }
    String::from_utf8(out).map_err(|_| BadTarget("not UTF-8"))
}

/// The value of an ASCII hex digit (checked by the caller).
fn hex_value(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        _ => (d | 0x20) - b'a' + 10,
    }
}

/// Opens `rel` below `root` for reading without leaving `root` (neither by
/// `..` nor by symlinks, nor through /proc magic links); `Ok(None)` if it is
/// not a regular file. `O_NONBLOCK` keeps a FIFO from blocking the open.
fn open_regular_beneath(root: &OwnedFd, rel: &str) -> rustix::io::Result<Option<(File, u64)>> {
    let fd = open_beneath(root, rel)?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Ok(None);
    }
    let len = u64::try_from(st.st_size).map_err(|_| Errno::OVERFLOW)?;
    Ok(Some((File::from(fd), len)))
}

const OPEN_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY)
    .union(OFlags::NONBLOCK);

fn open_beneath(root: &OwnedFd, rel: &str) -> rustix::io::Result<OwnedFd> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(root, rel, OPEN_FLAGS, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if tries < OPENAT2_RETRIES => tries += 1,
            // Kernels before 5.6 (or seccomp filters) lack openat2.
            Err(Errno::NOSYS) => return open_nofollow_walk(root, rel),
            r => return r,
        }
    }
}

/// The fallback without openat2: one `openat` per segment with
/// `O_NOFOLLOW`, so that symlinks are refused altogether. `rel` has been
/// checked by [`request_path`] (no empty, `.` or `..` segments).
fn open_nofollow_walk(root: &OwnedFd, rel: &str) -> rustix::io::Result<OwnedFd> {
    let (dirs, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let mut dir: Option<OwnedFd> = None;
    for seg in dirs.split('/').filter(|s| !s.is_empty()) {
        let at = dir.as_ref().unwrap_or(root);
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        dir = Some(rustix::fs::openat(at, seg, flags, Mode::empty())?);
    }
    let at = dir.as_ref().unwrap_or(root);
    rustix::fs::openat(at, name, OPEN_FLAGS | OFlags::NOFOLLOW, Mode::empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn request_targets() {
        let ok = |s: &str| Ok(Some(s.to_string()));
        let cases: &[(&str, Result<Option<String>, BadTarget>)] = &[
            ("/config", ok("config")),
            ("/objects/ab/cdef.filez", ok("objects/ab/cdef.filez")),
            ("/refs/heads/os/x86_64", ok("refs/heads/os/x86_64")),
            ("/summary?cache=1", ok("summary")),
            ("/summary#frag", ok("summary")),
            ("/refs/heads/a%2Db", ok("refs/heads/a-b")),
            ("/", Ok(None)),
            ("/objects/", Ok(None)),
            ("/?x", Ok(None)),
            ("", Err(BadTarget("not an absolute path"))),
            ("config", Err(BadTarget("not an absolute path"))),
            ("*", Err(BadTarget("not an absolute path"))),
            ("http://h/config", Err(BadTarget("not an absolute path"))),
            ("/../etc/passwd", Err(BadTarget("dot segment"))),
            ("/objects/../../x", Err(BadTarget("dot segment"))),
            ("/objects/./x", Err(BadTarget("dot segment"))),
            ("/..", Err(BadTarget("dot segment"))),
            ("/%2e%2e/etc/passwd", Err(BadTarget("dot segment"))),
            ("/%2E%2E/etc/passwd", Err(BadTarget("dot segment"))),
            ("/objects/.%2e/x", Err(BadTarget("dot segment"))),
            ("//etc/passwd", Err(BadTarget("empty path segment"))),
            ("/objects//x", Err(BadTarget("empty path segment"))),
            ("/objects%2f..%2f..%2fx", Err(BadTarget("encoded slash"))),
            ("/objects%2F", Err(BadTarget("encoded slash"))),
            ("/config%00", Err(BadTarget("NUL byte"))),
            ("/config%", Err(BadTarget("malformed percent escape"))),
            ("/config%4", Err(BadTarget("malformed percent escape"))),
            ("/config%zz", Err(BadTarget("malformed percent escape"))),
            ("/config%+1", Err(BadTarget("malformed percent escape"))),
            ("/%ff", Err(BadTarget("not UTF-8"))),
        ];
        for (target, expected) in cases {
            assert_eq!(&request_path(target), expected, "{target:?}");
        }
    }

    /// `root/` holds `file`, `sub/inner`, a FIFO and symlinks inside and
    /// out; `outside` sits next to it.
    fn fixture() -> (tempfile::TempDir, OwnedFd) {
        let td = tempfile::TempDir::new().unwrap();
        let root = td.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("file"), "inside").unwrap();
        std::fs::write(root.join("sub/inner"), "inner").unwrap();
        std::fs::write(td.path().join("outside"), "outside").unwrap();
        std::os::unix::fs::symlink("../outside", root.join("up")).unwrap();
        std::os::unix::fs::symlink(td.path().join("outside"), root.join("abs")).unwrap();
        std::os::unix::fs::symlink("..", root.join("parent")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root", root.join("magic")).unwrap();
        std::os::unix::fs::symlink("file", root.join("samedir")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let fd =
            rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        (td, fd)
    }

    fn read(r: rustix::io::Result<Option<(File, u64)>>) -> Result<Option<String>, Errno> {
        r.map(|o| {
            o.map(|(mut f, len)| {
                let mut s = String::new();
                f.read_to_string(&mut s).unwrap();
                assert_eq!(s.len() as u64, len);
                s
            })
        })
    }

    #[test]
    fn open_beneath_stays_inside() {
        let (_td, root) = fixture();
        let open = |rel: &str| read(open_regular_beneath(&root, rel));
        assert_eq!(open("file"), Ok(Some("inside".into())));
        assert_eq!(open("sub/inner"), Ok(Some("inner".into())));
        assert_eq!(open("samedir"), Ok(Some("inside".into())));
        assert_eq!(open("sub"), Ok(None));
        assert_eq!(open("fifo"), Ok(None));
        assert_eq!(open("missing"), Err(Errno::NOENT));
        assert_eq!(open("file/x"), Err(Errno::NOTDIR));
        for escape in ["up", "abs", "parent/outside", "magic/etc/passwd"] {
            let r = open(escape);
            assert!(
                matches!(r, Err(Errno::XDEV | Errno::LOOP)),
                "{escape}: {r:?}"
            );
        }
    }

    #[test]
    fn nofollow_walk_refuses_every_symlink() {
        let (_td, root) = fixture();
        let open = |rel: &str| {
            read(open_nofollow_walk(&root, rel).and_then(|fd| {
                let len = rustix::fs::fstat(&fd)?.st_size as u64;
                Ok(Some((File::from(fd), len)))
            }))
        };
        assert_eq!(open("file"), Ok(Some("inside".into())));
        assert_eq!(open("sub/inner"), Ok(Some("inner".into())));
        assert_eq!(open("missing"), Err(Errno::NOENT));
        for link in ["up", "abs", "samedir"] {
            assert_eq!(open(link), Err(Errno::LOOP), "{link}");
        }
        for link in ["parent/outside", "magic/etc/passwd"] {
            let r = open(link);
            assert!(
                matches!(r, Err(Errno::NOTDIR | Errno::LOOP)),
                "{link}: {r:?}"
            );
        }
    }
}
