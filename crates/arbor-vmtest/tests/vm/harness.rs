//! The VM harness: QEMU machines booted from arbor's disk images, their
//! serial console read by the tests, and a command channel on the second
//! serial port (the test image's `arbor-test-agent`).
//!
//! Every action is printed (`[vm NAME#BOOT] ...`) so a CI log shows what
//! each VM did; on a failure the console's tail is printed too.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace's top directory.
pub fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs a command, failing with its output when it fails.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", out.status);
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The accelerator the tests use: `kvm` only when a probe guest boots with
/// it (on these machines nested KVM hangs in early boot), else `tcg`.
/// `ARBOR_VM_ACCEL` forces one.
pub fn accel(kernel: &Path) -> &'static str {
    static ACCEL: OnceLock<&'static str> = OnceLock::new();
    ACCEL.get_or_init(|| {
        if let Ok(a) = std::env::var("ARBOR_VM_ACCEL") {
            let a: &'static str = if a == "kvm" { "kvm" } else { "tcg" };
            eprintln!("[vm] accelerator {a} (from ARBOR_VM_ACCEL)");
            return a;
        }
        if !Path::new("/dev/kvm").exists() {
            eprintln!("[vm] accelerator tcg (no /dev/kvm)");
            return "tcg";
        }
        // The probe: the kernel alone, until it prints its banner.
        let t0 = Instant::now();
        let mut child = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "kvm",
                "-m",
                "256",
                "-nographic",
                "-no-reboot",
                "-kernel",
            ])
            .arg(kernel)
            .args(["-append", "console=ttyS0 panic=-1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting qemu-system-x86_64 (apt-get install qemu-system-x86)");
        let out = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = String::new();
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                seen.push_str(&line);
                if line.contains("Linux version") {
                    let _ = tx.send(true);
                    return;
                }
            }
            let _ = tx.send(false);
        });
        let ok = rx.recv_timeout(Duration::from_secs(20)).unwrap_or(false);
        let _ = child.kill();
        let _ = child.wait();
        let a = if ok { "kvm" } else { "tcg" };
        eprintln!(
            "[vm] accelerator {a} (the KVM probe {} in {:.1} s)",
            if ok { "booted" } else { "did not boot" },
            t0.elapsed().as_secs_f64()
        );
        a
    })
}

/// One machine: a disk and the QEMU processes that boot it, one per boot
/// (QEMU runs with `-no-reboot`, so a reboot ends the process and
/// [`Vm::boot`] starts the next).
pub struct Vm {
    pub name: String,
    dir: PathBuf,
    disk: PathBuf,
    format: &'static str,
    kernel_for_probe: PathBuf,
    child: Option<Child>,
    pub boots: u32,
    ctl: Option<BufReader<UnixStream>>,
    started: Instant,
}

impl Vm {
    /// A machine on `disk` (raw or qcow2), its files in `dir`.
    pub fn new(name: &str, dir: &Path, disk: &Path, kernel_for_probe: &Path) -> Vm {
        std::fs::create_dir_all(dir).unwrap();
        let format = if disk.extension().is_some_and(|e| e == "qcow2") {
            "qcow2"
        } else {
            "raw"
        };
        Vm {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            disk: disk.to_path_buf(),
            format,
            kernel_for_probe: kernel_for_probe.to_path_buf(),
            child: None,
            boots: 0,
            ctl: None,
            started: Instant::now(),
        }
    }

    fn tag(&self) -> String {
        format!("[vm {}#{}]", self.name, self.boots)
    }

    pub fn say(&self, what: &str) {
        eprintln!("{} {what}", self.tag());
    }

    /// This boot's console log.
    pub fn console_path(&self) -> PathBuf {
        self.dir.join(format!("console-{}.log", self.boots))
    }

    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.console_path()).unwrap_or_default())
            .into_owned()
    }

    /// Starts the next boot.
    pub fn boot(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        self.boots += 1;
        let accel = accel(&self.kernel_for_probe);
        let sock = self.dir.join("ctl.sock");
        let _ = std::fs::remove_file(&sock);
        let console = self.console_path();
        self.say(&format!("boots {} ({accel})", self.disk.display()));
        let child = Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                accel,
                "-m",
                "1024",
                "-smp",
                "1",
                "-nographic",
                "-no-reboot",
            ])
            .args(["-nodefaults", "-vga", "none", "-display", "none"])
            .arg("-drive")
            .arg(format!(
                "file={},format={},if=virtio,cache=writeback",
                self.disk.display(),
                self.format
            ))
            .args([
                "-netdev",
                "user,id=n0",
                "-device",
                "virtio-net-pci,netdev=n0",
            ])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-chardev")
            .arg(format!(
                "socket,id=ctl,path={},server=on,wait=off",
                sock.display()
            ))
            .args(["-serial", "chardev:ctl"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join(format!("qemu-{}.err", self.boots))).unwrap(),
            )
            .spawn()
            .expect("starting qemu-system-x86_64 (apt-get install qemu-system-x86)");
        self.child = Some(child);
        self.ctl = None;
        self.started = Instant::now();
    }

    /// Waits until the console shows `needle` (returns the whole console).
    pub fn wait_console(&mut self, needle: &str, timeout: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let log = self.console();
            if log.contains(needle) {
                self.say(&format!(
                    "console shows {needle:?} after {:.1} s",
                    self.started.elapsed().as_secs_f64()
                ));
                return log;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    self.fail(&format!(
                        "QEMU exited ({st}) before the console showed {needle:?}"
                    ));
                }
            }
            if t0.elapsed() > timeout {
                self.fail(&format!("no {needle:?} on the console within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the marker unit's `arbor-booted CHECKSUM`; returns the checksum
    /// and the console.
    pub fn wait_booted(&mut self, timeout: Duration) -> (String, String) {
        let log = self.wait_console("arbor-booted ", timeout);
        let line = log
            .lines()
            .find_map(|l| l.split("arbor-booted ").nth(1))
            .expect("marker line");
        let csum: String = line.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        if csum.len() != 64 {
            // The line may still be being written.
            std::thread::sleep(Duration::from_secs(1));
            return self.wait_booted(timeout);
        }
        self.say(&format!(
            "booted deployment {csum} in {:.1} s",
            self.started.elapsed().as_secs_f64()
        ));
        (csum, self.console())
    }

    fn fail(&mut self, why: &str) -> ! {
        let log = self.console();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        eprintln!("{} FAILED: {why}; console tail:", self.tag());
        for l in tail.iter().rev() {
            eprintln!("    | {l}");
        }
        self.kill();
        panic!("{} {why}", self.tag());
    }

    /// Connects to the agent on the second serial port.
    fn agent(&mut self) -> &mut BufReader<UnixStream> {
        if self.ctl.is_none() {
            let sock = self.dir.join("ctl.sock");
            let t0 = Instant::now();
            let s = loop {
                match UnixStream::connect(&sock) {
                    Ok(s) => break s,
                    Err(_) if t0.elapsed() < Duration::from_secs(30) => {
                        std::thread::sleep(Duration::from_millis(200))
                    }
                    Err(e) => self.fail(&format!("connecting to {}: {e}", sock.display())),
                }
            };
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut r = BufReader::new(s);
            // Ping until the agent answers (it may not have started yet).
            let t0 = Instant::now();
            'ping: loop {
                r.get_mut().write_all(b"echo @@pong\n").unwrap();
                let mut line = String::new();
                while r.read_line(&mut line).is_ok() {
                    if line.contains("@@done") && line.trim() == "@@done 0" {
                        break 'ping;
                    }
                    if line.ends_with('\n') {
                        line.clear();
                    }
                }
                if t0.elapsed() > Duration::from_secs(120) {
                    self.fail("the test agent does not answer on the second serial port");
                }
            }
            // Drain whatever else is pending.
            let mut junk = Vec::new();
            let _ = r.read_to_end(&mut junk);
            self.ctl = Some(r);
        }
        self.ctl.as_mut().expect("connected")
    }

    /// Runs `cmd` in the VM (as root, by the agent); returns its exit
    /// status and output.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> (i32, String) {
        self.say(&format!("$ {cmd}"));
        let r = self.agent();
        r.get_mut()
            .write_all(format!("{cmd}\n").as_bytes())
            .unwrap();
        let t0 = Instant::now();
        let mut out = String::new();
        let mut line = String::new();
        loop {
            match r.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) if line.ends_with('\n') => {
                    if let Some(st) = line.trim_end().strip_prefix("@@done ") {
                        let st: i32 = st.trim().parse().unwrap_or(-1);
                        for l in out.lines() {
                            eprintln!("    > {}", printable(l));
                        }
                        return (st, out);
                    }
                    out.push_str(&line.replace('\r', ""));
                    line.clear();
                }
                _ => {}
            }
            if t0.elapsed() > timeout {
                break;
            }
        }
        let out = out.clone();
        self.fail(&format!(
            "{cmd:?} did not finish within {timeout:?}; output so far:\n{out}"
        ));
    }

    /// Runs `cmd` and requires success.
    pub fn ok(&mut self, cmd: &str, timeout: Duration) -> String {
        let (st, out) = self.run(cmd, timeout);
        if st != 0 {
            self.fail(&format!("{cmd:?} exited {st}:\n{out}"));
        }
        out
    }

    /// Sends `cmd` without waiting for it.
    pub fn send(&mut self, cmd: &str) {
        self.say(&format!("$ {cmd} &"));
        let r = self.agent();
        r.get_mut()
            .write_all(format!("{cmd}\n").as_bytes())
            .unwrap();
    }

    /// Reads the agent's output until `needle` appears (for a command sent
    /// with [`Vm::send`]).
    pub fn wait_output(&mut self, needle: &str, timeout: Duration) -> String {
        let t0 = Instant::now();
        let mut out = String::new();
        let r = self.agent();
        let mut buf = [0u8; 4096];
        while t0.elapsed() < timeout {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if out.contains(needle) {
                        return out;
                    }
                }
                Err(_) => {}
            }
        }
        self.fail(&format!(
            "no {needle:?} from the agent within {timeout:?}:\n{out}"
        ));
    }

    /// Asks for a reboot and waits for QEMU to end (with `-no-reboot`).
    pub fn reboot(&mut self, timeout: Duration) {
        self.send("systemctl reboot");
        self.wait_exit(timeout);
    }

    /// Waits for QEMU to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) {
        let t0 = Instant::now();
        let mut child = self.child.take().expect("running");
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.say(&format!(
                    "QEMU ended ({st}) after {:.1} s",
                    self.started.elapsed().as_secs_f64()
                ));
                break;
            }
            if t0.elapsed() > timeout {
                self.child = Some(child);
                self.fail(&format!("did not shut down within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.ctl = None;
    }

    /// Power loss: SIGKILL to QEMU, no shutdown.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            eprintln!("{} power cut (QEMU killed)", self.tag());
        }
        self.ctl = None;
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The deployment `arbor status` marks booted (`*`), from the marker unit's
/// console output.
pub fn status_booted(console: &str) -> Option<String> {
    let body = console
        .split("@@status-begin")
        .nth(1)?
        .split("@@status-end")
        .next()?;
    body.lines()
        .find(|l| l.trim_start().starts_with('*'))
        .and_then(|l| {
            l.split_whitespace()
                .find(|w| w.len() >= 64 && w[..64].chars().all(|c| c.is_ascii_hexdigit()))
                .map(|w| w[..64].to_string())
        })
}

/// Same for `ostree admin status`.
pub fn ostree_status_booted(console: &str) -> Option<String> {
    let body = console
        .split("@@ostree-status-begin")
        .nth(1)?
        .split("@@ostree-status-end")
        .next()?;
    body.lines()
        .find(|l| l.trim_start().starts_with('*'))
        .and_then(|l| {
            l.split_whitespace()
                .find(|w| w.len() >= 64 && w[..64].chars().all(|c| c.is_ascii_hexdigit()))
                .map(|w| w[..64].to_string())
        })
}

/// A line of a command's output as the log shows it: terminal escape
/// sequences (progress bars) removed, and only the end of a very long line.
fn printable(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    let n = out.chars().count();
    if n > 240 {
        format!("...{}", out.chars().skip(n - 200).collect::<String>())
    } else {
        out
    }
}
