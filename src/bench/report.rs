//! `kura bench` load results: per-operation latency histograms, the JSON a
//! run writes (`--json`), the table it prints, and `kura bench compare`.
//!
//! The JSON carries `"format": "kura-bench/1"`; fields are only ever added
//! (every field has a default when read), so old results stay comparable.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "kura-bench/1";

/// Latencies of one operation in microseconds, 1 µs to 1 hour at 3
/// significant digits (0.1% error, what warp and wrk report).
pub struct Latency(Histogram<u64>);

impl Latency {
    pub fn new() -> Latency {
        // Bounds are constants within what the crate accepts.
        Latency(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"))
    }

    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        // In bounds by the clamp above.
        let _ = self.0.record(us);
    }

    pub fn add(&mut self, other: &Latency) {
        // Same bounds on both sides: cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn summary(&self) -> LatencyMs {
        let ms = |us: u64| us as f64 / 1000.0;
        if self.0.is_empty() {
            return LatencyMs::default();
        }
        LatencyMs {
            mean: self.0.mean() / 1000.0,
            p50: ms(self.0.value_at_quantile(0.50)),
            p90: ms(self.0.value_at_quantile(0.90)),
            p99: ms(self.0.value_at_quantile(0.99)),
            p999: ms(self.0.value_at_quantile(0.999)),
            max: ms(self.0.max()),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LatencyMs {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// One operation's figures over the measured phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OpReport {
    pub op: String,
    pub ops: u64,
    pub bytes: u64,
    pub errors: u64,
    pub ops_per_s: f64,
    pub mib_per_s: f64,
    pub latency_ms: LatencyMs,
    /// The run's figure over this machine's limit (empty: no limit applies
    /// or limits were not measured).
    pub vs_limit: String,
}

/// The bench process's own CPU over the measured phase (getrusage).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BenchCpu {
    pub user_s: f64,
    pub sys_s: f64,
    /// Cores kept busy on average.
    pub cores: f64,
    pub per_request_us: f64,
    /// Per MiB moved (0 when no bytes moved).
    pub per_mib_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    pub format: String,
    /// The store measured (`--label`, else the Server header, else the host).
    pub label: String,
    pub endpoint: String,
    pub bucket: String,
    /// put, get, mixed, list, stat, delete, multipart.
    pub benchmark: String,
    /// Unix seconds at the start of the measured phase.
    pub started_unix: u64,
    pub duration_s: f64,
    pub concurrent: usize,
    pub object_size: String,
    pub compressibility: f64,
    /// True when `--autoterm` ended the run before its duration.
    pub autoterminated: bool,
    pub ops: Vec<OpReport>,
    pub total: OpReport,
    pub bench_cpu: BenchCpu,
    /// The measured store's own CPU, when its processes are known (the dev
    /// cluster's, or `--server-pids`).
    pub server_cpu: Option<ServerCpu>,
    pub limits: Option<super::limits::Limits>,
}

/// CPU the store's processes used during the measured phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerCpu {
    pub cores: f64,
    pub per_request_us: f64,
    /// Per MiB of object data moved (0 when none moved).
    pub per_mib_ms: f64,
    pub roles: Vec<RoleCpu>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RoleCpu {
    /// gateway, datanode, metashard, pd; `server` for `--server-pids`.
    pub role: String,
    pub cpu_s: f64,
    pub per_request_us: f64,
    pub per_mib_ms: f64,
}

impl ServerCpu {
    pub fn new(
        by_role: std::collections::BTreeMap<String, f64>,
        secs: f64,
        requests: f64,
        mib: f64,
    ) -> ServerCpu {
        let per_mib = |s: f64| if mib > 0.0 { s / mib * 1e3 } else { 0.0 };
        let total: f64 = by_role.values().sum();
        ServerCpu {
            cores: total / secs.max(1e-9),
            per_request_us: total / requests.max(1.0) * 1e6,
            per_mib_ms: per_mib(total),
            roles: by_role
                .into_iter()
                .map(|(role, cpu_s)| RoleCpu {
                    role,
                    cpu_s,
                    per_request_us: cpu_s / requests.max(1.0) * 1e6,
                    per_mib_ms: per_mib(cpu_s),
                })
                .collect(),
        }
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "{:.2} cores; {:.1} µs per request",
            self.cores, self.per_request_us
        );
        if self.per_mib_ms > 0.0 {
            s += &format!(", {:.2} ms per MiB", self.per_mib_ms);
        }
        if self.roles.len() > 1 {
            let parts: Vec<String> = self
                .roles
                .iter()
                .map(|r| {
                    if self.per_mib_ms > 0.0 {
                        format!("{} {:.2} ms/MiB", r.role, r.per_mib_ms)
                    } else {
                        format!("{} {:.1} µs/req", r.role, r.per_request_us)
                    }
                })
                .collect();
            s += &format!(" ({})", parts.join(", "));
        }
        s
    }
}

impl Report {
    pub fn load(path: &Path) -> Result<Report, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let r: Report = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a kura bench result: {e}", path.display()))?;
        if !r.format.starts_with("kura-bench/") {
            return Err(format!(
                "{}: not a kura bench result (format {:?})",
                path.display(),
                r.format
            ));
        }
        Ok(r)
    }

    pub fn print(&self) {
        println!(
            "## {} ({}), {} on bucket {}: {} objects, {} concurrent, {:.1} s{}",
            self.label,
            self.endpoint,
            self.benchmark,
            self.bucket,
            self.object_size,
            self.concurrent,
            self.duration_s,
            if self.autoterminated {
                " (autoterm: throughput stable)"
            } else {
                ""
            }
        );
        println!();
        println!(
            "| op | ops | ops/s | MiB/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | vs limit |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        let rows = self.ops.iter().chain(if self.ops.len() > 1 {
            Some(&self.total)
        } else {
            None
        });
        for o in rows {
            let l = &o.latency_ms;
            println!(
                "| {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
                o.op,
                o.ops,
                o.ops_per_s,
                o.mib_per_s,
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max,
                o.errors,
                o.vs_limit
            );
        }
        println!();
        let c = &self.bench_cpu;
        println!(
            "bench CPU: {:.2} s user + {:.2} s sys = {:.2} cores; {:.1} µs per request{}",
            c.user_s,
            c.sys_s,
            c.cores,
            c.per_request_us,
            if c.per_mib_ms > 0.0 {
                format!(", {:.3} ms per MiB", c.per_mib_ms)
            } else {
                String::new()
            }
        );
        if let Some(c) = &self.server_cpu {
            println!("server CPU: {}", c.describe());
        }
    }
}

/// `kura bench compare a.json b.json`: per operation, b's figures beside
/// a's with b/a ratios (ops/s and MiB/s: higher is better; latencies: lower).
pub fn compare(a: &Report, b: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## {} vs {}: {} ({} objects, {} concurrent) vs {} ({} objects, {} concurrent)",
        b.label,
        a.label,
        b.benchmark,
        b.object_size,
        b.concurrent,
        a.benchmark,
        a.object_size,
        a.concurrent
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| op | ops/s a → b | ratio | MiB/s a → b | ratio | p50 ms a → b | p99 ms a → b | p99.9 ms a → b | errors a → b |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let by_op = |r: &Report| -> BTreeMap<String, OpReport> {
        let mut m: BTreeMap<String, OpReport> =
            r.ops.iter().map(|o| (o.op.clone(), o.clone())).collect();
        if r.ops.len() > 1 {
            m.insert("total".into(), r.total.clone());
        }
        m
    };
    let (ma, mb) = (by_op(a), by_op(b));
    let mut names: Vec<&String> = ma.keys().chain(mb.keys()).collect();
    names.sort();
    names.dedup();
    // Operations first, the total last.
    names.sort_by_key(|n| *n == "total");
    let empty = OpReport::default();
    for name in names {
        let x = ma.get(name).unwrap_or(&empty);
        let y = mb.get(name).unwrap_or(&empty);
        let (lx, ly) = (&x.latency_ms, &y.latency_ms);
        let _ = writeln!(
            out,
            "| {name} | {:.1} → {:.1} | {} | {:.2} → {:.2} | {} | {:.2} → {:.2} | {:.2} → {:.2} | {:.2} → {:.2} | {} → {} |",
            x.ops_per_s,
            y.ops_per_s,
            ratio(y.ops_per_s, x.ops_per_s),
            x.mib_per_s,
            y.mib_per_s,
            ratio(y.mib_per_s, x.mib_per_s),
            lx.p50,
            ly.p50,
            lx.p99,
            ly.p99,
            lx.p999,
            ly.p999,
            x.errors,
            y.errors
        );
    }
    let (ca, cb) = (&a.bench_cpu, &b.bench_cpu);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "bench CPU per request: {:.1} → {:.1} µs",
        ca.per_request_us, cb.per_request_us
    );
    if let (Some(sa), Some(sb)) = (&a.server_cpu, &b.server_cpu) {
        let _ = writeln!(
            out,
            "server CPU per request: {:.1} → {:.1} µs ({}); per MiB: {:.2} → {:.2} ms ({})",
            sa.per_request_us,
            sb.per_request_us,
            ratio(sb.per_request_us, sa.per_request_us),
            sa.per_mib_ms,
            sb.per_mib_ms,
            ratio(sb.per_mib_ms, sa.per_mib_ms),
        );
    }
    out
}

/// `b/a` as `1.23×`, or `-` when either side has nothing to compare.
fn ratio(b: f64, a: f64) -> String {
    if a > 0.0 && b > 0.0 {
        format!("{:.2}×", b / a)
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_cpu_is_split_per_request_and_per_mib() {
        let by: std::collections::BTreeMap<String, f64> =
            [("gateway".to_string(), 1.0), ("datanode".to_string(), 3.0)].into();
        let c = ServerCpu::new(by, 2.0, 1000.0, 2000.0);
        assert!((c.cores - 2.0).abs() < 1e-9);
        assert!((c.per_request_us - 4000.0).abs() < 1e-6);
        assert!((c.per_mib_ms - 2.0).abs() < 1e-9);
        let dn = c
            .roles
            .iter()
            .find(|r| r.role == "datanode")
            .expect("datanode");
        assert!((dn.per_mib_ms - 1.5).abs() < 1e-9);
        assert!(
            c.describe().contains("datanode 1.50 ms/MiB"),
            "{}",
            c.describe()
        );
        // No bytes moved (stat, delete): per request only.
        let none = ServerCpu::new([("server".to_string(), 1.0)].into(), 1.0, 10.0, 0.0);
        assert_eq!(none.per_mib_ms, 0.0);
        assert!(!none.describe().contains("MiB"), "{}", none.describe());
    }

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut h = Latency::new();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let mut other = Latency::new();
        other.record(Duration::from_secs(5));
        h.add(&other);
        let s = h.summary();
        // 3 significant digits (buckets up to 0.1% wide, reported at their
        // upper edge) plus one rank of 1 ms either way.
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.002 + 1.0;
        assert!(near(s.p50, 500.0), "{s:?}");
        assert!(near(s.p90, 900.0), "{s:?}");
        assert!(near(s.p99, 990.0), "{s:?}");
        assert!(near(s.p999, 1000.0), "{s:?}");
        assert!(near(s.max, 5000.0), "{s:?}");
        assert_eq!(Latency::new().summary(), LatencyMs::default());
    }

    #[test]
    fn compare_prints_ratios_per_op_and_old_results_decode() {
        let op = |name: &str, ops_s: f64| OpReport {
            op: name.into(),
            ops: 10,
            ops_per_s: ops_s,
            mib_per_s: ops_s / 2.0,
            ..Default::default()
        };
        let a = Report {
            format: FORMAT.into(),
            label: "A".into(),
            ops: vec![op("GET", 100.0), op("PUT", 50.0)],
            total: op("total", 150.0),
            ..Default::default()
        };
        let b = Report {
            format: FORMAT.into(),
            label: "B".into(),
            ops: vec![op("GET", 200.0), op("STAT", 10.0)],
            total: op("total", 210.0),
            ..Default::default()
        };
        let text = compare(&a, &b);
        assert!(text.contains("| GET | 100.0 → 200.0 | 2.00× |"), "{text}");
        assert!(text.contains("| PUT | 50.0 → 0.0 | - |"), "{text}");
        assert!(text.contains("| STAT | 0.0 → 10.0 | - |"), "{text}");
        assert!(text
            .trim_end()
            .lines()
            .nth_back(2)
            .unwrap_or("")
            .starts_with("| total |"));
        // A result with only some fields (an older format) still decodes.
        let old: Report =
            serde_json::from_str(r#"{"format":"kura-bench/1","ops":[{"op":"GET","ops":3}]}"#)
                .expect("decodes");
        assert_eq!(old.ops[0].ops, 3);
    }
}
