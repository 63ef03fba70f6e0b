//! Hung, not dead, peers (issue 15): a data node frozen with SIGSTOP keeps
//! its TCP connections open and the kernel still accepts new ones, so a
//! caller without deadlines would wait on it forever. PUTs and GETs must go
//! on around it with bounded latency, repair of the fragments another node
//! missed must go on around it too; and a background loop that panics is
//! restarted, not lost.

mod common;

use std::time::{Duration, Instant};

use common::{load_status, Cluster};

/// Sends SIGCONT to the frozen process when dropped, so a failing assertion
/// never leaves a stopped process behind.
struct Frozen(u32);

impl Frozen {
    fn stop(pid: u32) -> Frozen {
        // SAFETY: kill(2) with a pid this test's cluster started.
        let rc = unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        assert_eq!(rc, 0, "SIGSTOP {pid}");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

/// One request of tests/py/ec_load.py's latency log.
struct Op {
    op: String,
    start: f64,
    secs: f64,
    ok: bool,
}

fn read_latencies(status: &std::path::Path) -> Vec<Op> {
    let path = format!("{}.lat", status.display());
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Op {
                op: f.first()?.to_string(),
                start: f.get(1)?.parse().ok()?,
                secs: f.get(2)?.parse().ok()?,
                ok: *f.get(3)? == "1",
            })
        })
        .collect()
}

/// The q-quantile (nearest rank) of `v`; 0 when empty.
fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The bound this test holds the p99 of PUT and GET latency to while one of
/// the six data nodes is frozen. What it takes by design: a read waits
/// 2 s on a frozen fragment before reading around it (with other fragments
/// to spare), a write 3 s before dropping a fragment that takes no block;
/// after that the node is suspect and skipped (3 s, doubled on each repeat).
const P99_BOUND_SECS: f64 = 10.0;
const FREEZE: Duration = Duration::from_secs(20);

#[test]
fn a_frozen_data_node_does_not_hang_puts_or_gets() {
    let c = Cluster::must_start();
    let common::MixedLoad {
        child: load,
        acks,
        status,
        stop,
    } = c.start_mixed_load("hung", "90");
    let wait_for = |what: &str, secs: u64, done: &dyn Fn([u64; 5]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(load_status(&status)) {
            assert!(
                Instant::now() < deadline,
                "load made no progress ({what}): {:?}\n{}",
                load_status(&status),
                c.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("warm-up", 60, &|s| s[0] >= 3 && s[3] >= 3);

    let victim = c.component("datanode-2");
    let t_stop = unix_now();
    let frozen = Frozen::stop(victim.pid);
    let at_stop = load_status(&status);
    std::thread::sleep(FREEZE);
    let at_cont = load_status(&status);
    let t_cont = unix_now();
    drop(frozen);
    wait_for("after SIGCONT", 30, &|s| {
        s[0] >= at_cont[0] + 2 && s[3] >= at_cont[3] + 2
    });
    std::fs::write(&stop, b"").expect("stop file");
    let out = load.wait_with_output().expect("load output");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}");

    // Requests that started while the node was frozen.
    let ops = read_latencies(&status);
    let during: Vec<&Op> = ops
        .iter()
        .filter(|o| o.start >= t_stop && o.start < t_cont)
        .collect();
    let lat = |op: &str| -> Vec<f64> {
        during
            .iter()
            .filter(|o| o.op == op)
            .map(|o| o.secs)
            .collect()
    };
    let (gets, puts) = (lat("get"), lat("put"));
    let all: Vec<f64> = during.iter().map(|o| o.secs).collect();
    let failed = during.iter().filter(|o| !o.ok).count();
    let (p99_get, p99_put, p99_all) = (
        quantile(gets.clone(), 0.99),
        quantile(puts.clone(), 0.99),
        quantile(all.clone(), 0.99),
    );
    let max = all.iter().copied().fold(0.0, f64::max);
    let write_stalls = common::metric(
        &c.component("gateway-1").status,
        "kura_gateway_write_stalls_total",
    );
    eprintln!(
        "frozen {:?}: {} GETs (p50 {:.2} s, p99 {p99_get:.2} s), {} PUTs (p50 {:.2} s, \
         p99 {p99_put:.2} s), all p99 {p99_all:.2} s, max {max:.2} s, {failed} failed; \
         load status at stop {at_stop:?}, at SIGCONT {at_cont:?}; gateway write stalls \
         {write_stalls:?}",
        FREEZE,
        gets.len(),
        quantile(gets.clone(), 0.5),
        puts.len(),
        quantile(puts.clone(), 0.5),
    );

    assert!(
        gets.len() >= 5 && puts.len() >= 5,
        "too few requests while the node was frozen: {} GETs, {} PUTs\n{}",
        gets.len(),
        puts.len(),
        c.logs_tail()
    );
    assert_eq!(failed, 0, "requests failed while frozen:\n{report}");
    assert!(
        p99_all <= P99_BOUND_SECS,
        "p99 {p99_all:.2} s above {P99_BOUND_SECS} s while a data node was frozen"
    );
    let end = load_status(&status);
    assert_eq!(end[1], 0, "wrong bytes returned:\n{report}");
    assert_eq!(end[2], 0, "GETs failed:\n{report}");
    assert_eq!(end[4], 0, "PUTs failed:\n{report}");
    assert!(out.status.success(), "{report}");
    let verify = c.must_python("verify.py", &["hung", acks.to_str().expect("utf-8 path")]);
    assert!(verify.contains(" 0 bad"), "{verify}");
}

/// The gateway's GC sweeper panics twice (failpoint `gateway::gc_sweep`): the
/// supervisor counts each panic and starts the loop again, so the second
/// panic is the restarted loop's next sweep, and the process keeps serving.
#[test]
fn a_panicking_background_loop_is_restarted_and_counted() {
    let c = Cluster::must_start();
    if !c.has_failpoints() {
        eprintln!("SKIPPED: kura built without --features failpoints");
        return;
    }
    let gw = c.component("gateway-1");
    let panics = || {
        common::metric(
            &gw.status,
            "kura_background_task_panics_total{task=\"gateway_gc_sweeper\"}",
        )
        .unwrap_or(0.0)
    };
    assert_eq!(panics(), 0.0);
    c.must_arm("gateway-1", "gateway::gc_sweep", "2*panic");
    // The dev cluster sweeps every 5 s; after a panic the loop restarts at
    // once and waits one interval before its next sweep.
    common::wait_until("two supervised panics of the GC sweeper", 30, &c, || {
        panics() >= 2.0
    });
    assert_eq!(
        common::http_status(&gw.status, "/health"),
        Some(200),
        "gateway alive"
    );
    c.must_aws(&["s3", "mb", "s3://after-panic"]);
    let f = c.dir.join("small");
    std::fs::write(&f, common::pattern(100_000, 3)).expect("write");
    c.must_put_file("after-panic", "k", &f);
}

/// Repair goes on around a frozen data node: the fragments a killed node
/// missed are rebuilt while another node is frozen (the repair worker's
/// probes, listings and reads all have deadlines, and a frozen PG primary is
/// passed over like a dead one). The rebuilt fragments are real: with the
/// frozen node's whole zone killed afterwards, every object still reads back
/// from the four nodes left, one of them the healed node.
#[test]
fn repair_goes_on_while_a_data_node_is_frozen() {
    const REPAIRED: &str = "kura_datanode_repaired_fragments_total";
    let mut c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://heal"]);
    c.must_kill9("datanode-3");
    let objects: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                format!("o{i}"),
                common::pattern((2 << 20) + 4099 * i, 40 + i as u64),
            )
        })
        .collect();
    let f = c.dir.join("put.tmp");
    for (k, d) in &objects {
        std::fs::write(&f, d).expect("write");
        c.must_put_file("heal", k, &f);
    }
    c.must_restart("datanode-3");

    let frozen_id = "datanode-1";
    let others: Vec<String> = c
        .components()
        .into_iter()
        .filter(|x| x.role == "datanode" && x.id != frozen_id)
        .map(|x| x.status)
        .collect();
    let repaired = || -> f64 {
        others
            .iter()
            .filter_map(|s| common::metric(s, REPAIRED))
            .sum()
    };
    let before = repaired();
    let frozen = Frozen::stop(c.component(frozen_id).pid);
    let started = Instant::now();
    // Bodies are healed once older than the dev cluster's 10 s heal delay.
    common::wait_until(
        "the missed fragments rebuilt around the frozen node",
        120,
        &c,
        || repaired() >= before + objects.len() as f64,
    );
    eprintln!(
        "{} fragments rebuilt in {:.1} s while {frozen_id} was frozen",
        repaired() - before,
        started.elapsed().as_secs_f64()
    );
    drop(frozen);

    for id in ["datanode-1", "datanode-2"] {
        c.must_kill9(id);
    }
    let out = c.dir.join("get.tmp");
    for (k, d) in &objects {
        c.must_get_file("heal", k, &out);
        assert!(std::fs::read(&out).expect("read") == *d, "{k} differs");
    }
}

/// A data node whose disk stops answering (failpoint `datanode::disk_probe`
/// fails its write-sync-read probe) is still up in every other way: its
/// index answers from memory. It must say so itself: `/ready` turns 503,
/// `kura_datanode_disk_healthy` 0, and it refuses new fragments and liveness
/// probes, so PUTs place around it at once instead of paying a stall
/// deadline. Once the disk answers again it is ready and takes fragments.
#[test]
fn a_data_node_whose_disk_does_not_answer_is_not_ready_and_is_written_around() {
    const PUTS: &str = "kura_datanode_fragments_put_total";
    let c = Cluster::must_start();
    if !c.has_failpoints() {
        eprintln!("SKIPPED: kura built without --features failpoints");
        return;
    }
    c.must_aws(&["s3", "mb", "s3://disk"]);
    let node = c.component("datanode-2");
    c.must_arm("datanode-2", "datanode::disk_probe", "return");
    let started = Instant::now();
    common::wait_until("datanode-2 to be not ready", 30, &c, || {
        common::http_status(&node.status, "/ready") == Some(503)
    });
    eprintln!(
        "not ready {:.1} s after its disk stopped answering",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        common::metric(&node.status, "kura_datanode_disk_healthy"),
        Some(0.0)
    );
    assert_eq!(
        common::http_status(&node.status, "/health"),
        Some(200),
        "still alive"
    );

    let before = common::metric(&node.status, PUTS).unwrap_or(0.0);
    let f = c.dir.join("disk.tmp");
    let objects: Vec<Vec<u8>> = (0..4)
        .map(|i| common::pattern((1 << 20) + 333 * i, 60 + i as u64))
        .collect();
    for (i, d) in objects.iter().enumerate() {
        std::fs::write(&f, d).expect("write");
        let t = Instant::now();
        c.must_put_file("disk", &format!("o{i}"), &f);
        // No stall deadline paid: the node refuses at once.
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "PUT took {:?}",
            t.elapsed()
        );
    }
    assert_eq!(
        common::metric(&node.status, PUTS).unwrap_or(0.0),
        before,
        "a node whose disk does not answer took fragments"
    );

    c.must_arm("datanode-2", "datanode::disk_probe", "off");
    common::wait_until("datanode-2 to be ready again", 30, &c, || {
        common::http_status(&node.status, "/ready") == Some(200)
    });
    assert_eq!(
        common::metric(&node.status, "kura_datanode_disk_healthy"),
        Some(1.0)
    );
    // Written around while it was out: healed onto it by repair later, and
    // every object reads back now.
    let out = c.dir.join("disk.out");
    for (i, d) in objects.iter().enumerate() {
        c.must_get_file("disk", &format!("o{i}"), &out);
        assert!(std::fs::read(&out).expect("read") == *d, "o{i} differs");
    }
    std::fs::write(&f, &objects[0]).expect("write");
    common::wait_until("datanode-2 to take fragments again", 30, &c, || {
        c.must_put_file("disk", "after", &f);
        common::metric(&node.status, PUTS).unwrap_or(0.0) > before
    });
}
