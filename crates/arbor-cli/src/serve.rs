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
//! Performance: several worker threads call `recv()` on one shared
//! `tiny_http::Server`, and the listening socket has `TCP_NODELAY`, which
//! Linux copies to every accepted socket. Without it every keep-alive
//! request after the first waits about 40 ms (Nagle's algorithm against the
//! client's delayed ACK), because the headers and the body of a response
//! leave in separate writes.

use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use arbor_format::RepoMode;
use arbor_repo::Repo;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use tiny_http::{Header, Method, Response, StatusCode};

/// Threads answering requests. tiny_http reads requests on one thread per
/// connection; these threads open files and write responses, so this is the
/// number of responses written at once.
const WORKERS: usize = 8;

/// How often `openat2` is retried when the kernel reports a concurrent
/// rename during `RESOLVE_BENEATH` resolution (`EAGAIN`, see openat2(2)).
const OPENAT2_RETRIES: usize = 4;

/// Serves the archive repository at `repo_path` on `addr` until the process
/// is killed. The first line on `out` (flushed) is
/// `Serving PATH at http://ADDR/`, with the bound address, so `--addr
/// 127.0.0.1:0` can be used to pick a free port.
pub fn serve(repo_path: &Path, addr: &str, out: &mut impl Write) -> Result<()> {
    let root = open_archive_root(repo_path)?;
    let listener = bind_nodelay(addr)?;
    let local = listener.local_addr().context("Reading the bound address")?;
    writeln!(out, "Serving {} at http://{local}/", repo_path.display())?;
    out.flush()?;
    let server = tiny_http::Server::from_listener(listener, None)
        .map_err(|e| anyhow!("Starting the HTTP server: {e}"))?;
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| worker(&server, &root));
        }
    });
    Ok(())
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
/// accepted sockets inherit it (tiny_http never sets it itself).
fn bind_nodelay(addr: &str) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr).with_context(|| format!("Binding {addr}"))?;
    rustix::net::sockopt::set_tcp_nodelay(&listener, true).context("Setting TCP_NODELAY")?;
    Ok(listener)
}

fn worker(server: &tiny_http::Server, root: &OwnedFd) {
    loop {
        match server.recv() {
            Ok(rq) => handle(root, rq),
            Err(e) => tracing::warn!("Receiving a request: {e}"),
        }
    }
}

/// What to answer to one request.
#[derive(Debug)]
enum Answer {
    /// 200 with this file (of this size) as the body.
    File(File, u64),
    /// An error status with a short text body.
    Status(u16),
}

fn handle(root: &OwnedFd, rq: tiny_http::Request) {
    let answer = match rq.method() {
        Method::Get | Method::Head => answer(root, rq.url()),
        _ => Answer::Status(405),
    };
    let (status, len) = match &answer {
        Answer::File(_, len) => (200, *len),
        Answer::Status(code) => (*code, 0),
    };
    tracing::debug!("{} {} {status} {len}", rq.method(), rq.url());
    let res = match answer {
        Answer::File(f, len) => {
            let len = usize::try_from(len).expect("a file size fits in usize on 64-bit Linux");
            let octets = Header::from_bytes("Content-Type", "application/octet-stream")
                .expect("a valid static header");
            // tiny_http switches to chunked encoding above a threshold
            // (32 KiB by default); always send Content-Length instead.
            rq.respond(
                Response::new(StatusCode(200), vec![octets], f, Some(len), None)
                    .with_chunked_threshold(usize::MAX),
            )
        }
        Answer::Status(code) => {
            let text = format!("{code} {}\n", StatusCode(code).default_reason_phrase());
            let mut res = Response::from_string(text).with_status_code(code);
            if code == 405 {
                res.add_header(Header::from_bytes("Allow", "GET, HEAD").expect("static header"));
            }
            rq.respond(res)
        }
    };
    if let Err(e) = res {
        tracing::debug!("Writing a response: {e}");
    }
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
