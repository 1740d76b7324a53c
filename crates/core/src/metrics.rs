//! Prometheus metrics, kept in atomics and rendered as text on `/metrics`:
//! sandboxes by state, exec latency, boot time, API request durations and
//! live event streams.

use parking_lot::Mutex;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::model::SandboxState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds (atomics hold integers).
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe_ms(&self, ms: f64) {
        let secs = ms / 1000.0;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((ms * 1000.0) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {n}");
        let brace = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(
            out,
            "{name}_sum{} {}",
            brace(labels),
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{} {n}", brace(labels));
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    by_state: [AtomicI64; SandboxState::ALL.len()],
    pub exec: Histogram,
    pub boot: Histogram,
    /// Request durations by (method, route template, status class).
    requests: Mutex<std::collections::BTreeMap<(String, String, String), Histogram>>,
    /// Live server-sent event streams (the tasks feeding them) by kind.
    streams: Mutex<std::collections::BTreeMap<&'static str, i64>>,
}

fn state_index(s: SandboxState) -> usize {
    SandboxState::ALL
        .iter()
        .position(|x| *x == s)
        .expect("every state is in ALL")
}

impl Metrics {
    /// A sandbox moved from `from` (or appeared) to `to`.
    pub fn state_changed(&self, from: Option<SandboxState>, to: SandboxState) {
        if let Some(f) = from {
            self.by_state[state_index(f)].fetch_sub(1, Ordering::Relaxed);
        }
        self.by_state[state_index(to)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_boot(&self, ms: u64) {
        self.boot.observe_ms(ms as f64);
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, ms: f64) {
        let class = format!("{}xx", status / 100);
        let mut map = self.requests.lock();
        map.entry((method.to_string(), route.to_string(), class))
            .or_default()
            .observe_ms(ms);
    }

    /// A server-sent event stream of `kind` (`events`, `exec`, ...)
    /// started; [`Metrics::stream_ended`] must follow.
    pub fn stream_started(&self, kind: &'static str) {
        *self.streams.lock().entry(kind).or_default() += 1;
    }

    /// A stream of `kind` ended (its task is gone).
    pub fn stream_ended(&self, kind: &'static str) {
        *self.streams.lock().entry(kind).or_default() -= 1;
    }

    /// Live streams of `kind`.
    pub fn streams_active(&self, kind: &'static str) -> i64 {
        self.streams.lock().get(kind).copied().unwrap_or(0)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP hearth_sandboxes Sandboxes by state (destroyed: since start).\n");
        out.push_str("# TYPE hearth_sandboxes gauge\n");
        for s in SandboxState::ALL {
            let _ = writeln!(
                out,
                "hearth_sandboxes{{state=\"{}\"}} {}",
                s.as_str(),
                self.by_state[state_index(s)].load(Ordering::Relaxed).max(0)
            );
        }
        out.push_str("# HELP hearth_exec_duration_seconds Exec latency through the API.\n");
        out.push_str("# TYPE hearth_exec_duration_seconds histogram\n");
        self.exec
            .render(&mut out, "hearth_exec_duration_seconds", "");
        out.push_str(
            "# HELP hearth_boot_duration_seconds Time from create (or resume) to running.\n",
        );
        out.push_str("# TYPE hearth_boot_duration_seconds histogram\n");
        self.boot
            .render(&mut out, "hearth_boot_duration_seconds", "");
        out.push_str("# HELP hearth_http_request_duration_seconds API request durations.\n");
        out.push_str("# TYPE hearth_http_request_duration_seconds histogram\n");
        let map = self.requests.lock();
        for ((method, route, class), h) in map.iter() {
            let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{class}\"");
            h.render(&mut out, "hearth_http_request_duration_seconds", &labels);
        }
        drop(map);
        out.push_str(
            "# HELP hearth_sse_streams_active Server-sent event streams being served, by kind.\n",
        );
        out.push_str("# TYPE hearth_sse_streams_active gauge\n");
        for (kind, n) in self.streams.lock().iter() {
            let _ = writeln!(out, "hearth_sse_streams_active{{kind=\"{kind}\"}} {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_states_and_histograms() {
        let m = Metrics::default();
        m.state_changed(None, SandboxState::Provisioning);
        m.state_changed(Some(SandboxState::Provisioning), SandboxState::Running);
        m.exec.observe_ms(3.0);
        m.exec.observe_ms(300.0);
        m.observe_request("GET", "/api/v1/sandboxes/{id}", 200, 0.5);
        let text = m.render();
        assert!(text.contains("hearth_sandboxes{state=\"running\"} 1"));
        assert!(text.contains("hearth_sandboxes{state=\"provisioning\"} 0"));
        assert!(text.contains("hearth_exec_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("hearth_exec_duration_seconds_bucket{le=\"0.5\"} 2"));
        assert!(text.contains("hearth_exec_duration_seconds_count 2"));
        assert!(text.contains(
            "hearth_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/sandboxes/{id}\",status=\"2xx\"} 1"
        ));
        m.stream_started("events");
        m.stream_started("events");
        m.stream_ended("events");
        assert_eq!(m.streams_active("events"), 1);
        assert!(m
            .render()
            .contains("hearth_sse_streams_active{kind=\"events\"} 1"));
    }
}
