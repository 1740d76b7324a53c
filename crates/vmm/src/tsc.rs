//! The host's TSC rate. Under TCG a guest's RDTSC returns the host's TSC
//! (QEMU's `cpu_get_host_ticks`), and the guest kernel is told its rate on
//! the command line (`tsc_early_khz`: calibrating it hangs at random under
//! TCG, DESIGN.md 4). Told any rate but the host's, every clock of the
//! guest (its only clocksource is the TSC) runs fast or slow by the ratio.

use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

/// What a guest is told when the host's rate cannot be had (not x86_64, or
/// nothing plausible measured): what every TCG guest was told before the
/// rate was measured.
pub const FALLBACK_KHZ: u32 = 2_000_000;

/// Rates a TSC can have, kHz: anything else is a failed measurement.
const PLAUSIBLE_KHZ: RangeInclusive<u32> = 500_000..=10_000_000;

/// Where some kernels publish the rate they calibrated (most do not).
const SYSFS_KHZ: &str = "/sys/devices/system/cpu/cpu0/tsc_freq_khz";

/// One measurement round: long enough that the few hundred nanoseconds a
/// clock read can be off by are a part in 10^5.
const ROUND: Duration = Duration::from_millis(20);

/// Rounds per measurement; the median is kept, so a round the scheduler
/// cut into on a loaded host does not count.
const ROUNDS: usize = 5;

/// The host's TSC rate in kHz, found once per process: the kernel's own
/// value when it publishes one, else measured (~0.1 s), else
/// [`FALLBACK_KHZ`].
pub fn host_tsc_khz() -> u32 {
    static KHZ: OnceLock<u32> = OnceLock::new();
    *KHZ.get_or_init(|| {
        let found = match read_khz(Path::new(SYSFS_KHZ)) {
            Some(khz) => Some((khz, "kernel")),
            None => measure_khz(ROUND, ROUNDS).map(|khz| (khz, "measured")),
        };
        match found {
            Some((khz, source)) => {
                tracing::info!(khz, source, "host tsc rate");
                khz
            }
            None => {
                tracing::warn!(
                    fallback_khz = FALLBACK_KHZ,
                    "host tsc rate unknown: emulated guests' clocks may run fast or slow"
                );
                FALLBACK_KHZ
            }
        }
    })
}

/// `khz` rounded to whole MHz: how guests told different rates are told
/// apart (snapshot identities), so that a few kHz of measurement noise do
/// not set two apart.
pub fn mhz(khz: u32) -> u32 {
    khz.saturating_add(500) / 1000
}

fn plausible(khz: u32) -> Option<u32> {
    PLAUSIBLE_KHZ.contains(&khz).then_some(khz)
}

/// A rate in kHz from a sysfs-style file, if it holds a plausible one.
fn read_khz(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    plausible(text.trim().parse().ok()?)
}

/// Measures the TSC against the kernel's unslewed monotonic clock: the
/// median of `rounds` rounds of `round` each, in kHz; `None` when nothing
/// plausible came out. `CLOCK_MONOTONIC_RAW` is not steered by NTP, so two
/// measurements agree (when the kernel's clocksource is the TSC, this is
/// the rate the kernel calibrated).
#[cfg(target_arch = "x86_64")]
pub fn measure_khz(round: Duration, rounds: usize) -> Option<u32> {
    let mut rates: Vec<f64> = (0..rounds).filter_map(|_| measure_round(round)).collect();
    rates.sort_by(f64::total_cmp);
    let median = *rates.get(rates.len() / 2)?;
    // `as` saturates: a wild value stays implausible rather than wrapping.
    plausible(median.round() as u32)
}

/// Not x86_64: no TSC to read.
#[cfg(not(target_arch = "x86_64"))]
pub fn measure_khz(_round: Duration, _rounds: usize) -> Option<u32> {
    None
}

/// TSC ticks per millisecond over one `round`.
#[cfg(target_arch = "x86_64")]
fn measure_round(round: Duration) -> Option<f64> {
    let (ns0, tsc0) = paired_read()?;
    std::thread::sleep(round);
    let (ns1, tsc1) = paired_read()?;
    let ns = ns1.checked_sub(ns0).filter(|ns| *ns > 0)?;
    let ticks = tsc1.checked_sub(tsc0)?;
    Some(ticks as f64 * 1e6 / ns as f64)
}

/// The monotonic clock (ns) and the TSC read as close together as this
/// thread manages: the TSC is read on both sides of the clock, and of a
/// few tries the tightest pair is kept (a preemption in between shows as
/// a wide one).
#[cfg(target_arch = "x86_64")]
fn paired_read() -> Option<(u128, u64)> {
    use nix::time::{clock_gettime, ClockId};
    let mut best: Option<(u64, u128, u64)> = None;
    for _ in 0..8 {
        let before = rdtsc();
        let now = clock_gettime(ClockId::CLOCK_MONOTONIC_RAW).ok()?;
        let after = rdtsc();
        let Some(gap) = after.checked_sub(before) else {
            continue;
        };
        if best.is_none_or(|(g, _, _)| gap < g) {
            let ns = Duration::from(now).as_nanos();
            best = Some((gap, ns, before + gap / 2));
        }
    }
    best.map(|(_, ns, tsc)| (ns, tsc))
}

#[cfg(target_arch = "x86_64")]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads a counter; it has no operands, touches no memory,
    // and every x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mhz_rounds_to_the_nearest() {
        assert_eq!(mhz(2_596_136), 2596);
        assert_eq!(mhz(2_596_499), 2596);
        assert_eq!(mhz(2_596_500), 2597);
        assert_eq!(mhz(FALLBACK_KHZ), 2000);
        assert_eq!(mhz(u32::MAX), u32::MAX / 1000);
    }

    #[test]
    fn a_published_rate_is_read_only_when_plausible() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("tsc_freq_khz");
        assert_eq!(read_khz(&file), None, "missing");
        for (text, want) in [
            ("2596136\n", Some(2_596_136)),
            ("0\n", None),
            ("100000\n", None),
            ("20000000\n", None),
            ("fast\n", None),
            ("", None),
        ] {
            std::fs::write(&file, text).expect("write");
            assert_eq!(read_khz(&file), want, "{text:?}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_measured_rate_is_plausible_and_stable() {
        let a = measure_khz(ROUND, ROUNDS).expect("a plausible rate");
        let b = measure_khz(ROUND, ROUNDS).expect("a plausible rate");
        for khz in [a, b] {
            assert!(
                (500_000..=10_000_000).contains(&khz),
                "{khz} kHz is no TSC's rate"
            );
        }
        eprintln!("measured {a} kHz, then {b} kHz");
        let spread = (f64::from(a) - f64::from(b)).abs() / f64::from(a);
        assert!(spread <= 0.005, "{a} kHz then {b} kHz");
        // What the process hands guests is one of those, unless the kernel
        // published its own (then the same within the same bound).
        let told = host_tsc_khz();
        let off = (f64::from(told) - f64::from(a)).abs() / f64::from(a);
        assert!(off <= 0.005, "measured {a} kHz, guests are told {told}");
    }
}
