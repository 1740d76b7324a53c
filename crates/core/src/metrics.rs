//! Prometheus metrics, kept in atomics and rendered as text on `/metrics`:
//! sandboxes by state, exec latency, boot time, API request durations and
//! live event streams.
//!
//! Every label value comes from a closed set, so no client can grow the
//! series without bound: methods outside the standard ones are `other`,
//! routes are the matched route templates the router passes in, statuses
//! are classes (`2xx`), and past [`MAX_REQUEST_SERIES`] series new
//! combinations are counted under `route="other"`.

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

/// The HTTP methods kept as label values; any other is `other`.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// Request series (method, route, status class) kept apart at most; the
/// router's routes times methods times classes stay far below it.
pub const MAX_REQUEST_SERIES: usize = 2048;

/// `method` as a label value: one of [`METHODS`], else `other`.
fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// `status` as a label value: its class, `1xx` to `5xx`, else `other`.
fn status_label(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    by_state: [AtomicI64; SandboxState::ALL.len()],
    pub exec: Histogram,
    pub boot: Histogram,
    /// Request durations by (method, route template, status class).
    requests: Mutex<std::collections::BTreeMap<(&'static str, String, &'static str), Histogram>>,
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

    /// One API request: `route` must be a route template (or a fixed word
    /// such as `unmatched`), never a raw path; `method` and `status` are
    /// folded into bounded label values here.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, ms: f64) {
        let (method, class) = (method_label(method), status_label(status));
        let mut map = self.requests.lock();
        let mut key = (method, route.to_string(), class);
        if map.len() >= MAX_REQUEST_SERIES && !map.contains_key(&key) {
            key.1 = "other".into();
        }
        map.entry(key).or_default().observe_ms(ms);
    }

    /// How many request series `/metrics` shows.
    pub fn request_series(&self) -> usize {
        self.requests.lock().len()
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

    #[test]
    fn request_labels_stay_in_closed_sets() {
        let m = Metrics::default();
        for i in 0..500 {
            m.observe_request(&format!("FOOBAR{i}"), "unmatched", 400 + i % 200, 1.0);
        }
        m.observe_request("get", "/healthz", 200, 1.0);
        assert_eq!(m.request_series(), 3, "{}", m.render());
        let text = m.render();
        assert!(text.contains("method=\"other\",route=\"unmatched\",status=\"4xx\""));
        assert!(text.contains("method=\"other\",route=\"unmatched\",status=\"5xx\""));
        assert!(!text.contains("FOOBAR"));
        // Past the cap, new routes share one series.
        for i in 0..(MAX_REQUEST_SERIES + 100) {
            m.observe_request("GET", &format!("/r{i}"), 200, 1.0);
        }
        assert_eq!(m.request_series(), MAX_REQUEST_SERIES + 1);
        assert!(m
            .render()
            .contains("method=\"GET\",route=\"other\",status=\"2xx\""));
    }
}
