//! Helpers shared by arbor's tests. A dev-dependency only: no library or
//! binary of arbor depends on it.

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The one gate of every root-only check: false as root; when not root,
/// true (skip, with a note on stderr) only if `ARBOR_SKIP_ROOT_TESTS=1`,
/// otherwise it fails the test, so a non-root run cannot pass silently.
/// CI runs as root. `what` names the check in both messages.
#[track_caller]
pub fn needs_root(what: &str) -> bool {
    if is_root() {
        return false;
    }
    if std::env::var_os("ARBOR_SKIP_ROOT_TESTS").is_some_and(|v| v == "1") {
        eprintln!("NOTE: skipping {what}: not root (ARBOR_SKIP_ROOT_TESTS=1)");
        return true;
    }
    panic!("{what} needs root (CI runs as root); set ARBOR_SKIP_ROOT_TESTS=1 to skip it");
}

/// A real etcd (Debian's `etcd-server`) for the tests: on 127.0.0.1,
/// free ports, a temporary data directory; killed when dropped.
#[derive(Debug)]
pub struct EtcdServer {
    child: std::process::Child,
    /// The client URL (`http://127.0.0.1:PORT`).
    pub url: String,
    _dir: tempfile::TempDir,
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free port")
}

impl EtcdServer {
    /// Starts etcd and waits (up to 30 s) until it answers.
    pub fn start() -> EtcdServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = std::process::Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("etcd.log")).expect("log file"))
            .spawn()
            .expect("starting etcd (Debian package etcd-server)");
        let mut s = EtcdServer {
            child,
            url,
            _dir: dir,
        };
        let t0 = std::time::Instant::now();
        loop {
            if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", client)) {
                use std::io::{Read, Write};
                let req = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
                let mut resp = String::new();
                if c.write_all(req.as_bytes()).is_ok()
                    && c.read_to_string(&mut resp).is_ok()
                    && resp.contains("\"health\":\"true\"")
                {
                    return s;
                }
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("etcd exited ({st}) before answering");
            }
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(30),
                "etcd did not answer within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
