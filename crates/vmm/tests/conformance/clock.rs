//! The guest's clocks: they run at the host's rate in a booted VM and in a
//! clone restored from a snapshot, and a restored guest's wall clock is the
//! host's. (Under TCG a guest reads the host's TSC: told the wrong TSC rate
//! on its command line, its every clock runs that much fast or slow; and
//! one whose kernel gave the TSC up for jiffies loses time on a loaded
//! host.)

use std::time::SystemTime;

use super::*;

/// How far a guest clock's rate may stray from the host's.
const RATE_TOLERANCE: f64 = 0.02;

/// How far a restored guest's wall clock may be from the host's, seconds.
const WALL_TOLERANCE_S: f64 = 2.0;

/// Host time between two readings of a guest clock: long enough that the
/// round trip of an exec (tens of ms under TCG) is noise next to it.
const RATE_INTERVAL: Duration = Duration::from_secs(5);

/// A number the guest printed, with the host's clock read just before and
/// just after the exec that printed it.
struct Reading {
    before: Instant,
    after: Instant,
    guest_s: f64,
}

impl Reading {
    fn host_mid(&self) -> Instant {
        self.before + (self.after - self.before) / 2
    }
}

/// Runs `command` in the guest and parses the first word it prints as
/// seconds.
async fn read_guest_seconds(agent: &AgentClient, command: &str) -> Result<Reading> {
    let before = Instant::now();
    let out = sh(agent, command).await?;
    let after = Instant::now();
    let guest_s: f64 = out
        .split_whitespace()
        .next()
        .with_context(|| format!("{command:?} printed nothing"))?
        .parse()
        .with_context(|| format!("{command:?} printed {out:?}"))?;
    Ok(Reading {
        before,
        after,
        guest_s,
    })
}

/// Guest seconds per host second over [`RATE_INTERVAL`], from the guest's
/// uptime (the clock every guest timer and `sleep` runs on).
async fn guest_clock_rate(agent: &AgentClient) -> Result<f64> {
    // A fresh guest's first exec is slow (~0.1 s under TCG) and lopsided:
    // not one that brackets a reading.
    sh(agent, "true").await?;
    let first = read_guest_seconds(agent, "cat /proc/uptime").await?;
    // The interval being measured, not a wait for a condition.
    tokio::time::sleep(RATE_INTERVAL).await;
    let second = read_guest_seconds(agent, "cat /proc/uptime").await?;
    let host_s = (second.host_mid() - first.host_mid()).as_secs_f64();
    let guest_s = second.guest_s - first.guest_s;
    let rate = guest_s / host_s;
    eprintln!(
        "guest clock: {guest_s:.3} s in {host_s:.3} s of host time (rate {rate:.4}; exec round trips {:?} and {:?})",
        first.after - first.before,
        second.after - second.before,
    );
    Ok(rate)
}

/// The guest's wall clock minus the host's, seconds.
async fn wall_clock_skew(agent: &AgentClient) -> Result<f64> {
    let unix = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("the host clock is after 1970")
            .as_secs_f64()
    };
    let host_before = unix();
    // busybox `date` has no `%N`; `adjtimex` prints the clock to the µs.
    let r = read_guest_seconds(
        agent,
        r#"adjtimex | awk '/tv_sec/ { s = $2 } /tv_usec/ { u = $2 } END { printf "%d.%06d\n", s, u }'"#,
    )
    .await?;
    let host_after = unix();
    Ok(r.guest_s - (host_before + host_after) / 2.0)
}

/// The guest kernel's clocksource and what it said of its clocks, for a
/// failure message: a guest that fell back to `jiffies` loses time on a
/// loaded host.
async fn clock_report(agent: &AgentClient) -> String {
    sh(
        agent,
        "cat /sys/devices/system/clocksource/clocksource0/current_clocksource; \
         dmesg | grep -i -E 'tsc|clocksource' | grep -v 'mask:'; true",
    )
    .await
    .unwrap_or_else(|e| format!("({e:#})"))
}

async fn ensure_host_rate(what: &str, rate: f64, agent: &AgentClient) -> Result<()> {
    if (rate - 1.0).abs() <= RATE_TOLERANCE {
        return Ok(());
    }
    anyhow::bail!(
        "{what}: the guest clock runs at {rate:.4} times the host's (allowed: 1 ± {RATE_TOLERANCE}); the guest's clocksource:\n{}",
        clock_report(agent).await
    )
}

/// A booted guest's clock and a restored clone's both run at the host's
/// rate, and the clone's wall clock is the host's right after the restore
/// and still after a while.
pub async fn guest_clock_runs_at_host_rate_booted_and_restored(open: Open) -> Result<()> {
    let sb = Sandboxes::new();
    let vmm = open();
    // A template snapshot when the driver has them (how sandboxes are
    // cloned), else a full one.
    let template = vmm.capabilities().fast_clone;
    let mut spec = sb.spec("clock");
    if template {
        spec.memory = MemoryBacking::SharedFile;
    }
    let vm = vmm.boot(spec).await?;
    sb.track(vm.pid());
    let booted = guest_clock_rate(&vm.agent()).await?;
    ensure_host_rate("booted", booted, &vm.agent()).await?;
    let snap = sb.path().join("snap");
    let opts = if template {
        SnapshotOptions::template()
    } else {
        SnapshotOptions::full()
    };
    vm.snapshot(&snap, opts.then(AfterSnapshot::Exit)).await?;
    destroy_and_check(vm.as_ref()).await?;

    let clone = vmm.restore(&snap, sb.restore_spec("clock-clone")).await?;
    sb.track(clone.pid());
    let agent = clone.agent();
    let skew_at_restore = wall_clock_skew(&agent).await?;
    let restored = guest_clock_rate(&agent).await?;
    let skew_later = wall_clock_skew(&agent).await?;
    eprintln!(
        "booted rate {booted:.4}, restored rate {restored:.4}, wall clock skew {skew_at_restore:+.3} s after the restore, {skew_later:+.3} s later"
    );
    ensure_host_rate("restored", restored, &agent).await?;
    for (when, skew) in [
        ("after the restore", skew_at_restore),
        ("later", skew_later),
    ] {
        ensure!(
            skew.abs() <= WALL_TOLERANCE_S,
            "the restored guest's wall clock is {skew:+.3} s off the host's {when}"
        );
    }
    destroy_and_check(clone.as_ref()).await
}
