//! Hostile-guest tests on real VMs: code running as root inside a sandbox
//! tries to reach what it was not given (the host's loopback through the
//! user-mode gateway, host addresses, the metadata address, a private
//! network, another sandbox) and every attempt must fail, while a stand-in
//! internet stays reachable and obeys the sandbox's egress policy, live.
//! Every target is a stand-in this test made ([`NetLab`]), checked to
//! answer from the host first, so a failed attempt means the jail held.

mod common;
#[path = "isolation/limits.rs"]
mod limits;
#[path = "isolation/vmm.rs"]
mod vmm;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{sh, Sandboxes};
use hearth_agent_client::AgentClient;
use hearth_agent_protocol::ExecRequest;
use hearth_test_support::netlab::{self, NetLab};
use hearth_vmm::{
    Effect, EgressPolicy, EgressRule, JailConfig, Protocol, QemuConfig, QemuVm, QemuVmm,
};

/// What every test here needs, dropped in this order: VMs killed, then the
/// stand-in network removed, then the next test may start.
struct Setup {
    vmm: QemuVmm,
    sb: Sandboxes,
    lab: NetLab,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

async fn setup() -> anyhow::Result<Setup> {
    let serial = common::serial().await;
    let lab = NetLab::up()?;
    Ok(Setup {
        vmm: driver(&lab),
        sb: Sandboxes::new(),
        lab,
        _serial: serial,
    })
}

impl Setup {
    /// Boots a `minimal` VM named `id`, killed when the test ends.
    async fn boot(&self, id: &str) -> anyhow::Result<QemuVm> {
        let vm = self.vmm.boot_vm(self.sb.spec(id)).await?;
        self.sb.track(vm.pid());
        Ok(vm)
    }
}

fn driver(lab: &NetLab) -> QemuVmm {
    common::init_tracing();
    QemuVmm::new(QemuConfig {
        jail: JailConfig {
            dns_servers: vec![lab.dns],
            ..JailConfig::default()
        },
        ..QemuConfig::default()
    })
}

/// A TCP server on `addr` counting connections; returns its port.
async fn host_server(addr: Ipv4Addr) -> anyhow::Result<(u16, Arc<AtomicUsize>)> {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind((addr, 0)).await?;
    let port = listener.local_addr()?.port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(b"hello-host\n").await;
        }
    });
    Ok((port, hits))
}

/// Tries every `(name, address, port)` from inside the guest at once, as
/// root, and returns what each connection read (empty: it failed).
async fn attempts(
    agent: &AgentClient,
    targets: &[(&str, String, u16)],
) -> anyhow::Result<HashMap<String, String>> {
    let mut script = String::from(
        "try() { out=$(echo ping | nc -w 3 \"$2\" \"$3\" 2>/dev/null | head -c 100 | tr '\\0' z); echo \"$1=$out\"; }\n",
    );
    for (name, addr, port) in targets {
        script.push_str(&format!("try {name} {addr} {port} &\n"));
    }
    script.push_str("wait\n");
    let r = agent
        .exec(&ExecRequest {
            command: script,
            user: Some("root".into()),
            timeout_ms: Some(60_000),
            ..Default::default()
        })
        .await?;
    let out = String::from_utf8_lossy(r.stdout.as_slice()).into_owned();
    let got: HashMap<String, String> = out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    anyhow::ensure!(got.len() == targets.len(), "every attempt reports: {out:?}");
    Ok(got)
}

/// Whether the guest's DNS resolves `name` (busybox `nslookup`'s exit).
async fn resolves(agent: &AgentClient, name: &str) -> anyhow::Result<bool> {
    let r = agent
        .exec(&ExecRequest {
            command: format!("nslookup {name}"),
            timeout_ms: Some(30_000),
            ..Default::default()
        })
        .await?;
    Ok(r.exit_code == 0)
}

fn slot_of(vm: &QemuVm) -> u32 {
    vm.jail().expect("vm is jailed").slot
}

/// Starts a hello server inside VM `slot`'s network namespace (where only
/// another guest could try to reach it) and checks the host reaches it.
struct NsServer(std::process::Child);

impl NsServer {
    fn start(slot: u32, addr: Ipv4Addr, port: u16) -> anyhow::Result<NsServer> {
        let script = format!(
            "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', {port})); s.listen(8); print('ready', flush=True)\n\
             while True:\n    c,_=s.accept(); c.sendall(b'hello-sandbox\\n'); c.close()\n"
        );
        let mut child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("hearth-{slot}"),
                "python3",
                "-c",
                &script,
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )?;
        let server = NsServer(child);
        anyhow::ensure!(line.trim() == "ready", "namespace server: {line:?}");
        let mut s = std::net::TcpStream::connect_timeout(
            &(addr, port).into(),
            std::time::Duration::from_secs(2),
        )?;
        let mut got = String::new();
        std::io::Read::read_to_string(&mut s, &mut got)?;
        anyhow::ensure!(
            got == "hello-sandbox\n",
            "host reaches the stand-in: {got:?}"
        );
        Ok(server)
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_hostile_guest_reaches_the_internet_and_nothing_else() -> anyhow::Result<()> {
    let w = setup().await?;
    let (loop_port, loop_hits) = host_server(Ipv4Addr::LOCALHOST).await?;
    let (host_port, host_hits) = host_server(w.lab.host_addr).await?;
    let (any_port, any_hits) = host_server(Ipv4Addr::UNSPECIFIED).await?;

    let other = w.boot("other").await?;
    let vm = w.boot("hostile").await?;
    let (gateway, _) = hearth_vmm::jail::slot_addresses(&JailConfig::default(), slot_of(&vm))
        .expect("slot addresses");
    let (other_gw, other_ns) =
        hearth_vmm::jail::slot_addresses(&JailConfig::default(), slot_of(&other))
            .expect("slot addresses");
    let _other_server = NsServer::start(slot_of(&other), other_ns, 9000)?;

    let got = attempts(
        &vm.agent(),
        &[
            ("loopback", "10.0.2.2".into(), loop_port),
            ("loopback_any", "10.0.2.2".into(), any_port),
            ("host_addr", w.lab.host_addr.to_string(), host_port),
            ("host_addr_any", w.lab.host_addr.to_string(), any_port),
            ("own_gateway", gateway.to_string(), any_port),
            ("other_gateway", other_gw.to_string(), any_port),
            ("other_sandbox", other_ns.to_string(), 9000),
            ("metadata", netlab::METADATA.to_string(), netlab::HELLO_PORT),
            ("lan", netlab::LAN.to_string(), netlab::HELLO_PORT),
            ("internet", netlab::INTERNET.to_string(), netlab::HELLO_PORT),
        ],
    )
    .await?;
    for blocked in [
        "loopback",
        "loopback_any",
        "host_addr",
        "host_addr_any",
        "own_gateway",
        "other_gateway",
        "other_sandbox",
        "metadata",
        "lan",
    ] {
        assert_eq!(got[blocked], "", "{blocked} answered the guest: {got:?}");
    }
    for hits in [&loop_hits, &host_hits, &any_hits] {
        assert_eq!(hits.load(Ordering::SeqCst), 0, "a host server was reached");
    }
    assert_eq!(got["internet"], format!("world {}", netlab::INTERNET));

    // DNS works, through the host-side forwarder to the lab's resolver.
    let ns = sh(&vm.agent(), "nslookup internet.test").await?;
    assert!(ns.contains(&netlab::INTERNET.to_string()), "{ns}");
    // Bulk traffic flows (the bench measures it; here: all of it arrives).
    let n = sh(
        &vm.agent(),
        &format!(
            "nc -w 10 {} {} </dev/null | wc -c",
            netlab::INTERNET,
            netlab::BULK_PORT
        ),
    )
    .await?;
    assert_eq!(n.trim(), netlab::BULK_BYTES.to_string());

    vm.destroy().await?;
    other.destroy().await?;
    Ok(())
}

#[tokio::test]
async fn egress_off_has_no_network_at_all() -> anyhow::Result<()> {
    let w = setup().await?;
    let mut spec = w.sb.spec("closed");
    spec.egress = false;
    let vm = w.vmm.boot_vm(spec).await?;
    w.sb.track(vm.pid());
    let got = attempts(
        &vm.agent(),
        &[("internet", netlab::INTERNET.to_string(), netlab::HELLO_PORT)],
    )
    .await?;
    assert_eq!(got["internet"], "");
    assert!(
        !resolves(&vm.agent(), netlab::INTERNET_NAME).await?,
        "no DNS without egress"
    );
    // Its namespace has a loopback and nothing else.
    let links = std::process::Command::new("ip")
        .args(["-n", &format!("hearth-{}", slot_of(&vm)), "-o", "link"])
        .output()?;
    let links = String::from_utf8_lossy(&links.stdout);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains(": lo:"), "{links}");
    vm.destroy().await?;
    Ok(())
}

fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

fn rule(effect: Effect, dest: &str, ports: Option<&str>, protocol: Option<Protocol>) -> EgressRule {
    EgressRule {
        effect,
        destination: dest.into(),
        ports: ports.map(Into::into),
        protocol,
    }
}

#[tokio::test]
async fn egress_policy_changes_apply_live_to_one_running_vm() -> anyhow::Result<()> {
    let w = setup().await?;
    let vm = w.boot("policed").await?;
    let pid = vm.pid();
    let agent = vm.agent();
    let hello = netlab::INTERNET.to_string();
    let targets = [
        ("hello", hello.clone(), netlab::HELLO_PORT),
        ("bulk", hello.clone(), netlab::BULK_PORT),
    ];
    let world = format!("world {hello}");
    let reach = |got: &HashMap<String, String>, k: &str| !got[k].is_empty();

    // Default: the internet is reachable.
    let got = attempts(&agent, &targets).await?;
    assert_eq!(got["hello"], world);

    // Deny everything: blocked.
    let deny = EgressPolicy {
        default_effect: Effect::Deny,
        rules: vec![],
    };
    vm.set_egress_policy(Some(&deny)).await?;
    let got = attempts(&agent, &targets).await?;
    assert!(!reach(&got, "hello") && !reach(&got, "bulk"), "{got:?}");
    // DNS obeys the policy too: nothing resolves under deny-all (no data
    // leaves through queries either).
    assert!(
        !resolves(&agent, netlab::INTERNET_NAME).await?,
        "resolved under deny-all"
    );

    // One port of one address allowed: that port only.
    let one = EgressPolicy {
        default_effect: Effect::Deny,
        rules: vec![rule(
            Effect::Allow,
            &format!("{hello}/32"),
            Some(&netlab::HELLO_PORT.to_string()),
            Some(Protocol::Tcp),
        )],
    };
    vm.set_egress_policy(Some(&one)).await?;
    let got = attempts(&agent, &targets).await?;
    assert_eq!(got["hello"], world);
    assert!(!reach(&got, "bulk"), "{got:?}");

    // First match wins: a deny above the allow takes it away again.
    let shadowed = EgressPolicy {
        default_effect: Effect::Allow,
        rules: vec![
            rule(Effect::Deny, "198.51.100.0/24", None, None),
            rule(Effect::Allow, &hello, None, None),
        ],
    };
    vm.set_egress_policy(Some(&shadowed)).await?;
    let got = attempts(&agent, &targets).await?;
    assert!(!reach(&got, "hello"), "{got:?}");

    // A hostname rule follows the addresses DNS answers.
    let by_name = EgressPolicy {
        default_effect: Effect::Deny,
        rules: vec![rule(Effect::Allow, netlab::INTERNET_NAME, None, None)],
    };
    vm.set_egress_policy(Some(&by_name)).await?;
    let got = attempts(&agent, &targets).await?;
    assert_eq!(got["hello"], world, "resolved when the policy was applied");
    let out = sh(
        &agent,
        &format!(
            "nslookup {} >/dev/null && echo ping | nc -w 3 {} {}",
            netlab::INTERNET_NAME,
            netlab::INTERNET_NAME,
            netlab::HELLO_PORT
        ),
    )
    .await;
    assert!(
        out.is_ok_and(|o| o.contains("world")),
        "by name from the guest"
    );
    assert!(
        !resolves(&agent, netlab::LAN_NAME).await?,
        "a name no rule allows does not resolve"
    );
    // ...but never opens the fixed blocks: lan.test resolves to a private
    // address, which stays unreachable even with a rule naming it.
    let lan_rule = EgressPolicy {
        default_effect: Effect::Deny,
        rules: vec![rule(Effect::Allow, netlab::LAN_NAME, None, None)],
    };
    vm.set_egress_policy(Some(&lan_rule)).await?;
    let got = attempts(
        &agent,
        &[("lan", netlab::LAN.to_string(), netlab::HELLO_PORT)],
    )
    .await?;
    assert_eq!(got["lan"], "");

    // No policy: everything the base rules leave, again.
    vm.set_egress_policy(None).await?;
    let got = attempts(&agent, &targets).await?;
    assert_eq!(got["hello"], world);
    assert!(reach(&got, "bulk"));
    assert_eq!(vm.pid(), pid, "the same VM throughout");
    vm.destroy().await?;
    Ok(())
}

/// Runs `command` as `user` and returns (exit code, stdout, stderr).
async fn run_as(
    agent: &AgentClient,
    user: &str,
    command: &str,
) -> anyhow::Result<(i32, String, String)> {
    let r = agent
        .exec(&ExecRequest {
            command: command.into(),
            user: Some(user.into()),
            timeout_ms: Some(30_000),
            ..Default::default()
        })
        .await?;
    Ok((
        r.exit_code,
        String::from_utf8_lossy(r.stdout.as_slice()).into_owned(),
        String::from_utf8_lossy(r.stderr.as_slice()).into_owned(),
    ))
}

/// The `minimal` image's network tools, as a new user tries them: `wget`
/// by address and by name (it crashed with `Segmentation fault` in the
/// static busybox's name lookup), `nslookup`, `nc`, and clean failures
/// for a refused port and an unknown name.
#[tokio::test]
async fn the_minimal_images_network_tools_work() -> anyhow::Result<()> {
    let w = setup().await?;
    let vm = w.boot("tools").await?;
    let inet = netlab::INTERNET;
    let port = netlab::HTTP_PORT;
    let hello = format!("hello http {inet}\n");
    for user in ["root", "sandbox"] {
        for url in [
            format!("http://{inet}:{port}/"),
            format!("http://{}:{port}/x", netlab::INTERNET_NAME),
        ] {
            let (code, out, err) = run_as(&vm.agent(), user, &format!("wget -q -O- {url}")).await?;
            assert_eq!(
                (code, out.as_str()),
                (0, hello.as_str()),
                "{user} {url}: {err}"
            );
        }
        let (code, out, err) = run_as(
            &vm.agent(),
            user,
            &format!("cd /tmp && wget -q -O got-{user} http://{inet}:{port}/ && cat got-{user}"),
        )
        .await?;
        assert_eq!((code, out.as_str()), (0, hello.as_str()), "{user}: {err}");
        // Failures are errors, not crashes; `-T` (which crashed Debian 12's
        // busybox) bounds a transfer to a blocked address.
        for (flags, url, says) in [
            ("", format!("http://{inet}:9/"), "Connection refused"),
            ("", "http://nosuch.test/".to_string(), "bad address"),
            ("-T 3", format!("http://{inet}:9/"), "Connection refused"),
            (
                "-T 2",
                format!("http://{}:{port}/", netlab::LAN),
                "timed out",
            ),
            (
                "-T 2",
                format!("http://{}:{port}/", netlab::METADATA),
                "timed out",
            ),
        ] {
            let started = std::time::Instant::now();
            let (code, _, err) =
                run_as(&vm.agent(), user, &format!("wget -q {flags} -O- {url}")).await?;
            assert_eq!(code, 1, "{user} wget {flags} {url}: {err}");
            assert!(err.contains(says), "{user} wget {flags} {url}: {err}");
            assert!(started.elapsed() < std::time::Duration::from_secs(15));
        }
        let (code, out, err) = run_as(
            &vm.agent(),
            user,
            &format!("wget -T 5 -q -O- http://{inet}:{port}/"),
        )
        .await?;
        assert_eq!((code, out.as_str()), (0, hello.as_str()), "{user}: {err}");
        let (code, out, err) = run_as(
            &vm.agent(),
            user,
            &format!("nslookup {}", netlab::INTERNET_NAME),
        )
        .await?;
        assert!(code == 0 && out.contains(&inet.to_string()), "{out} {err}");
        let (code, out, err) = run_as(
            &vm.agent(),
            user,
            &format!("echo | nc -w 3 {inet} {}", netlab::HELLO_PORT),
        )
        .await?;
        assert_eq!(
            (code, out.trim()),
            (0, format!("world {inet}").as_str()),
            "{err}"
        );
    }
    vm.destroy().await?;
    Ok(())
}
