//! Gateway metrics, registered in prometheus' default registry (the `kura`
//! binary serves it on the status address).
//!
//! Operation latency is measured until the response head is ready; body
//! streaming time is visible through the byte counters.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // A second registration (tests creating several gateways) is harmless.
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
}

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "kura_s3_requests_total",
                "S3 requests by operation and status class",
            ),
            &["op", "status"],
        )
        .expect("valid metric"),
    )
});

static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "kura_s3_request_duration_seconds",
                "S3 request latency until the response head",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["op"],
        )
        .expect("valid metric"),
    )
});

static HTTP_RESPONSES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "kura_s3_http_responses_total",
                "HTTP responses of the S3 port by status class",
            ),
            &["status"],
        )
        .expect("valid metric"),
    )
});

static BYTES_IN: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new("kura_s3_bytes_in_total", "Object body bytes received")
            .expect("valid metric"),
    )
});

static MD5_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "kura_gateway_md5_bytes_total",
                "Body bytes hashed for ETags: in the MD5 lanes, one body at a time by the lanes engine, or on the request's task",
            ),
            &["path"],
        )
        .expect("valid metric"),
    )
});

static MD5_SINGLE_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "kura_gateway_md5_single_bytes_total",
                "Bytes the MD5 lanes engine hashed one body at a time, by why: its digest was wanted, it was over the per-body or the total cap, or its pass had too few bodies for the lanes",
            ),
            &["reason"],
        )
        .expect("valid metric"),
    )
});

static MD5_LANE_SLOTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "kura_gateway_md5_lane_slots_total",
            "Lane-bytes the MD5 lanes spent, live or idle: lanes bytes over this is their occupancy",
        )
        .expect("valid metric"),
    )
});

static BYTES_OUT: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new("kura_s3_bytes_out_total", "Object body bytes sent").expect("valid metric"),
    )
});

static DEGRADED_WRITES: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "kura_gateway_degraded_writes_total",
            "Bodies committed with fewer than k+m fragments stored (healing rebuilds the rest)",
        )
        .expect("valid metric"),
    )
});

static DEGRADED_READS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "kura_gateway_reconstructed_stripes_total",
            "Stripes read back by reconstruction because a data fragment was missing, slow or corrupt",
        )
        .expect("valid metric"),
    )
});

static GC_BACKLOG: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    register(
        prometheus::IntGauge::new(
            "kura_gateway_gc_backlog",
            "GC records whose fragments could not all be deleted in the last sweep",
        )
        .expect("valid metric"),
    )
});

static GC_RECLAIMED: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "kura_gateway_gc_reclaimed_total",
            "Bodies whose fragments and GC record the sweeper removed",
        )
        .expect("valid metric"),
    )
});

static RATELIMIT_ADMITTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "kura_gateway_ratelimit_admitted_total",
                "Requests admitted under at least one rate limit, by operation class",
            ),
            &["class"],
        )
        .expect("valid metric"),
    )
});

static RATELIMIT_THROTTLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "kura_gateway_ratelimit_throttled_total",
                "Requests refused with 503 SlowDown, by the kind of limit that refused them",
            ),
            &["limit"],
        )
        .expect("valid metric"),
    )
});

static RATELIMIT_SCOPES: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    register(
        prometheus::IntGauge::new(
            "kura_gateway_ratelimit_scopes",
            "(scope, limit kind) pairs this gateway tracks (traffic in the last seconds)",
        )
        .expect("valid metric"),
    )
});

static RATELIMIT_REPORTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "kura_gateway_ratelimit_reports_total",
                "Rate-limit demand reports to PD, by outcome (ok, error)",
            ),
            &["outcome"],
        )
        .expect("valid metric"),
    )
});

static DELETE_BATCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "kura_gateway_delete_batches_total",
                "DeleteObjects metadata batches (keys of one region), by outcome: applied, \
                 or by_key (a key changed since its read, or the keys spanned regions: each \
                 key deleted on its own) or failed (metadata unavailable)",
            ),
            &["outcome"],
        )
        .expect("valid metric"),
    )
});

static DELETE_BATCH_KEYS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "kura_gateway_delete_batch_keys_total",
            "Keys DeleteObjects committed in batches that applied",
        )
        .expect("valid metric"),
    )
});

static SHARED_READ_CALLERS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "kura_gateway_shared_read_callers_total",
            "Callers of shared metadata reads (bucket records): each got a read sent after it asked",
        )
        .expect("valid metric"),
    )
});

static SHARED_READS_SENT: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "kura_gateway_shared_reads_sent_total",
            "Metadata reads sent for shared-read callers (callers ÷ reads = callers per read)",
        )
        .expect("valid metric"),
    )
});

static QUOTA_CHECKS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "kura_gateway_quota_checks_total",
            "Writes checked against a storage quota (bucket, owner or tenant)",
        )
        .expect("valid metric"),
    )
});

static QUOTA_USAGE_READS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "kura_gateway_quota_usage_reads_total",
            "Bucket usage reads (counter and pending deltas) made for quota checks (checks ÷ reads = checks per read)",
        )
        .expect("valid metric"),
    )
});

static BLIND_PUTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "kura_gateway_blind_puts_total",
                "PUTs committed without reading the key first (decision 0053), by outcome: created the key, or found it present and read it after all",
            ),
            &["outcome"],
        )
        .expect("valid metric"),
    )
});

/// Forces registration so the series exist before the first request.
pub fn init() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&LATENCY);
    LazyLock::force(&HTTP_RESPONSES);
    LazyLock::force(&BYTES_IN);
    LazyLock::force(&BYTES_OUT);
    LazyLock::force(&DEGRADED_WRITES);
    LazyLock::force(&DEGRADED_READS);
    LazyLock::force(&GC_BACKLOG);
    LazyLock::force(&GC_RECLAIMED);
    LazyLock::force(&RATELIMIT_ADMITTED);
    LazyLock::force(&RATELIMIT_THROTTLED);
    LazyLock::force(&RATELIMIT_SCOPES);
    LazyLock::force(&RATELIMIT_REPORTS);
    LazyLock::force(&DELETE_BATCHES);
    LazyLock::force(&DELETE_BATCH_KEYS);
    LazyLock::force(&SHARED_READ_CALLERS);
    LazyLock::force(&SHARED_READS_SENT);
    LazyLock::force(&QUOTA_CHECKS);
    LazyLock::force(&QUOTA_USAGE_READS);
    for outcome in ["created", "key_present"] {
        BLIND_PUTS.with_label_values(&[outcome]);
    }
}

/// A PUT committed blind: it `created` its key, or found it present.
pub fn blind_put(created: bool) {
    let outcome = if created { "created" } else { "key_present" };
    BLIND_PUTS.with_label_values(&[outcome]).inc();
}

/// A caller of a shared read ([`crate::meta::Meta::get_shared`]) arrived.
pub fn shared_read_caller() {
    SHARED_READ_CALLERS.inc();
}

/// A shared read was sent, for one caller or more.
pub fn shared_read_sent() {
    SHARED_READS_SENT.inc();
}

/// A write was checked against a storage quota.
pub fn quota_check() {
    QUOTA_CHECKS.inc();
}

/// A quota check read a bucket's usage.
pub fn quota_usage_read() {
    QUOTA_USAGE_READS.inc();
}

/// One DeleteObjects batch of `keys` keys ended with `outcome`.
pub fn delete_batch(outcome: &'static str, keys: usize) {
    DELETE_BATCHES.with_label_values(&[outcome]).inc();
    if outcome == "applied" {
        DELETE_BATCH_KEYS.inc_by(keys as u64);
    }
}

/// "2xx", "4xx", ...
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Records one finished S3 operation.
pub fn observe_op(op: &'static str, started: Instant, status: u16) {
    REQUESTS
        .with_label_values(&[op, status_class(status)])
        .inc();
    LATENCY
        .with_label_values(&[op])
        .observe(started.elapsed().as_secs_f64());
}

/// Records one HTTP response of the S3 port (including auth failures s3s
/// answers before any operation runs).
pub fn observe_http(status: u16) {
    HTTP_RESPONSES
        .with_label_values(&[status_class(status)])
        .inc();
}

pub fn add_bytes_in(n: u64) {
    BYTES_IN.inc_by(n);
}

pub fn add_md5_bytes(path: &str, n: u64) {
    MD5_BYTES.with_label_values(&[path]).inc_by(n);
}

/// One body at a time in the lanes engine, and why (`kura_gateway_md5_single_bytes_total`).
pub fn add_md5_single_bytes(reason: &str, n: u64) {
    MD5_BYTES.with_label_values(&["single"]).inc_by(n);
    MD5_SINGLE_BYTES.with_label_values(&[reason]).inc_by(n);
}

pub fn md5_bytes(path: &str) -> u64 {
    MD5_BYTES.with_label_values(&[path]).get()
}

pub fn add_md5_lane_slots(blocks: u64) {
    MD5_LANE_SLOTS.inc_by(blocks * 64);
}

pub fn add_bytes_out(n: u64) {
    BYTES_OUT.inc_by(n);
}

pub fn set_gc_backlog(n: usize) {
    GC_BACKLOG.set(n as i64);
}

pub fn gc_reclaimed(n: usize) {
    GC_RECLAIMED.inc_by(n as u64);
}

/// A request admitted under a rate limit (`class`: read, write, list, delete).
pub fn ratelimit_admitted(class: &'static str) {
    RATELIMIT_ADMITTED.with_label_values(&[class]).inc();
}

/// A request refused by a rate limit of kind `limit` (read_ops, ...).
pub fn ratelimit_throttled(limit: &'static str) {
    RATELIMIT_THROTTLED.with_label_values(&[limit]).inc();
}

pub fn set_ratelimit_scopes(n: usize) {
    RATELIMIT_SCOPES.set(n as i64);
}

pub fn ratelimit_report(ok: bool) {
    RATELIMIT_REPORTS
        .with_label_values(&[if ok { "ok" } else { "error" }])
        .inc();
}

pub fn degraded_write() {
    DEGRADED_WRITES.inc();
}

pub fn reconstructed_stripe() {
    DEGRADED_READS.inc();
}

static WRITE_STALLS: LazyLock<IntCounter> = LazyLock::new(|| {
    register(
        IntCounter::new(
            "kura_gateway_write_stalls_total",
            "Fragment writes given up because their data node stopped taking blocks or \
             answering (the node is then marked suspect and skipped for a while)",
        )
        .expect("valid metric"),
    )
});

pub fn write_stall() {
    WRITE_STALLS.inc();
}

/// Per-tenant request and byte counters of this gateway, built at scrape
/// time from `usage::traffic` (bounded: the top tenants plus "other").
struct TenantTraffic(
    std::sync::Arc<crate::usage::traffic::Traffic>,
    Vec<prometheus::core::Desc>,
);

fn tenant_vecs() -> [prometheus::IntCounterVec; 3] {
    let vec = |name: &str, help: &str| {
        prometheus::IntCounterVec::new(Opts::new(name, help), &["tenant"]).expect("valid metric")
    };
    [
        vec(
            "kura_tenant_requests_total",
            "S3 requests by tenant (top tenants, the rest as \"other\")",
        ),
        vec(
            "kura_tenant_bytes_in_total",
            "Request body bytes by tenant (declared length)",
        ),
        vec(
            "kura_tenant_bytes_out_total",
            "Response body bytes by tenant (Content-Length)",
        ),
    ]
}

impl prometheus::core::Collector for TenantTraffic {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.1.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let [req, bin, bout] = tenant_vecs();
        for (tenant, c) in self.0.tenant_series() {
            req.with_label_values(&[&tenant]).inc_by(c.requests);
            bin.with_label_values(&[&tenant]).inc_by(c.bytes_in);
            bout.with_label_values(&[&tenant]).inc_by(c.bytes_out);
        }
        [req, bin, bout].iter().flat_map(|v| v.collect()).collect()
    }
}

/// Serves this gateway's per-tenant traffic on `/metrics`.
pub fn register_tenant_traffic(traffic: std::sync::Arc<crate::usage::traffic::Traffic>) {
    use prometheus::core::Collector;
    let descs = tenant_vecs()
        .iter()
        .flat_map(|v| v.desc().into_iter().cloned())
        .collect();
    // A second registration (tests creating several gateways) is refused, harmlessly.
    let _ = prometheus::default_registry().register(Box::new(TenantTraffic(traffic, descs)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(206), "2xx");
        assert_eq!(status_class(304), "3xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
    }

    #[test]
    fn observe_does_not_panic() {
        init();
        observe_op("GetObject", Instant::now(), 200);
        observe_http(503);
        add_bytes_in(1);
        add_bytes_out(1);
    }
}
