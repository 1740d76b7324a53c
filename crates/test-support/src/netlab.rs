//! A stand-in for the world outside the host, for tests of what a guest
//! can reach. It is a network namespace joined to the host by a veth pair
//! and routed from the host, holding:
//! - "the internet": a server on a public TEST-NET address
//!   ([`INTERNET`], port [`HELLO_PORT`] says hello, [`BULK_PORT`] streams
//!   [`BULK_BYTES`], [`HTTP_PORT`] answers HTTP);
//! - "the metadata service": the same server on `169.254.169.254`;
//! - "a LAN host": the same server on a private address ([`LAN`]);
//! - a DNS server answering `internet.test` and `lan.test`.
//!
//! Nothing a test sends leaves the machine: every address above lives in
//! the namespace, [`NetLab::up`] checks each answers from the host before
//! returning (and fails instead of letting a test send anywhere), and drop
//! removes the namespace, the veth and its routes. One lab at a time per
//! host (a lock file), since its routes are host-wide.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub const INTERNET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const LAN: Ipv4Addr = Ipv4Addr::new(10, 215, 0, 10);
pub const HELLO_PORT: u16 = 8080;
pub const BULK_PORT: u16 = 8081;
pub const BULK_BYTES: u64 = 32 << 20;
/// An HTTP/1.0 server answering every request with `hello http <addr>`.
pub const HTTP_PORT: u16 = 8082;
/// Names the lab's DNS server answers.
pub const INTERNET_NAME: &str = "internet.test";
pub const LAN_NAME: &str = "lan.test";

const LOCK: &str = "/run/hearth-netlab.lock";

const SERVERS: &str = r#"
import socket, struct, sys, threading
def tcp(port, fn):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(128)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c, fn), daemon=True).start()
def serve(c, fn):
    try:
        fn(c)
    except Exception:
        pass
    finally:
        c.close()
def hello(c):
    c.sendall(("world %s\n" % c.getsockname()[0]).encode())
def bulk(c):
    chunk = b"\0" * 65536
    for _ in range(int(sys.argv[2]) // 65536):
        c.sendall(chunk)
def http(c):
    got = b""
    while b"\r\n\r\n" not in got:
        more = c.recv(4096)
        if not more:
            return
        got += more
    body = ("hello http %s\n" % c.getsockname()[0]).encode()
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
ANSWERS = {"internet.test": sys.argv[3], "lan.test": sys.argv[4]}
def dns():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((sys.argv[1], 53))
    while True:
        q, a = u.recvfrom(512)
        try:
            i, labels = 12, []
            while q[i] != 0:
                n = q[i]; labels.append(q[i + 1:i + 1 + n].decode()); i += 1 + n
            end = i + 5
            ip = ANSWERS.get(".".join(labels).lower())
            flags = 0x8180 if ip else 0x8183
            body = q[12:end]
            if ip:
                body += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 30, 4) + socket.inet_aton(ip)
            u.sendto(q[:2] + struct.pack(">HHHHH", flags, 1, 1 if ip else 0, 0, 0) + body, a)
        except Exception:
            pass
threading.Thread(target=tcp, args=(8080, hello), daemon=True).start()
threading.Thread(target=tcp, args=(8081, bulk), daemon=True).start()
threading.Thread(target=tcp, args=(8082, http), daemon=True).start()
threading.Thread(target=dns, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// The lab; torn down on drop.
#[derive(Debug)]
pub struct NetLab {
    ns: String,
    host_if: String,
    servers: Option<Child>,
    _lock: nix::fcntl::Flock<std::fs::File>,
    /// The host's own address on the lab link (a host address a guest must
    /// not reach).
    pub host_addr: Ipv4Addr,
    /// The lab's side of the link.
    pub lab_addr: Ipv4Addr,
    /// The lab's DNS server.
    pub dns: SocketAddr,
}

fn run(cmd: &[&str]) -> Result<()> {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// What the lab's hello server at `addr` says, if it answers.
pub fn hello_from_host(addr: Ipv4Addr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from((addr, HELLO_PORT)),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

impl NetLab {
    /// Builds the lab and checks every stand-in answers from the host.
    pub fn up() -> Result<NetLab> {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .context("open netlab lock")?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("lock {LOCK}: {e}"))?;
        let id = std::process::id() % 100_000;
        let ns = format!("hlab-{id}");
        let host_if = format!("hl{id}");
        let host_addr = Ipv4Addr::new(10, 214, 0, 1);
        let lab_addr = Ipv4Addr::new(10, 214, 0, 2);
        // Left over by a killed run of the same pid: start clean.
        let _ = run(&["ip", "netns", "delete", &ns]);
        let mut lab = NetLab {
            ns: ns.clone(),
            host_if: host_if.clone(),
            servers: None,
            _lock: lock,
            host_addr,
            lab_addr,
            dns: SocketAddr::from((lab_addr, 53)),
        };
        run(&["ip", "netns", "add", &ns])?;
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "lab0", "netns", &ns,
        ])?;
        run(&["ip", "addr", "add", "10.214.0.1/30", "dev", &host_if])?;
        run(&["ip", "link", "set", &host_if, "up"])?;
        for cmd in [
            vec!["addr", "add", "10.214.0.2/30", "dev", "lab0"],
            vec!["link", "set", "lab0", "up"],
            vec!["link", "set", "lo", "up"],
            vec!["route", "add", "default", "via", "10.214.0.1"],
        ] {
            let mut full = vec!["ip", "-n", &ns];
            full.extend(cmd);
            run(&full)?;
        }
        for a in [INTERNET, METADATA, LAN] {
            let cidr = format!("{a}/32");
            run(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", "lo"])?;
            run(&[
                "ip",
                "route",
                "replace",
                &cidr,
                "via",
                "10.214.0.2",
                "dev",
                &host_if,
            ])?;
        }
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", SERVERS])
            .arg(lab_addr.to_string())
            .arg(BULK_BYTES.to_string())
            .arg(INTERNET.to_string())
            .arg(LAN.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start the lab's servers")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("servers stdout")?)
            .read_line(&mut line)
            .context("read the servers' ready line")?;
        lab.servers = Some(child);
        if line.trim() != "ready" {
            bail!("lab servers did not start: {line:?}");
        }
        for a in [INTERNET, METADATA, LAN] {
            let said = hello_from_host(a);
            if said.as_deref() != Some(&format!("world {a}\n")) {
                bail!("stand-in {a} does not answer from the host ({said:?}): refusing to test");
            }
        }
        Ok(lab)
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        if let Some(mut c) = self.servers.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting the namespace deletes the veth pair and so the routes.
        let _ = run(&["ip", "netns", "delete", &self.ns]);
        let _ = run(&["ip", "link", "delete", &self.host_if]);
    }
}
