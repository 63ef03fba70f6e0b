//! PD as a replicated service: `kura dev --pd-replicas 3` runs three PD
//! members in one Raft group. kill -9 of the PD leader under S3 load: a new
//! leader is elected within seconds, no S3 request fails (a CreateBucket sent
//! during the election allocates its id from the new leader), pdctl (given every
//! member's URL) keeps working against the new leader, ids allocated after
//! the failover collide with nothing (a region split allocates them), and
//! the killed member rejoins when restarted. With a single PD killed, gateways
//! keep serving existing buckets from their region cache.
mod common;
use common::{load_status, wait_until, Cluster};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// `kura pdctl -u <every PD> args…` as JSON.
fn must_pdctl(c: &Cluster, args: &[&str]) -> Value {
    let urls = c.pd_urls();
    let mut argv = vec!["pdctl", "-u", urls.as_str()];
    argv.extend_from_slice(args);
    let out = c.must_run_kura(&argv);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("pdctl {args:?}: {e}: {out}"))
}

/// Every id PD handed out that is still visible: stores, data nodes,
/// regions and their peers. Panics if one appears twice.
fn must_collect_unique_ids(c: &Cluster) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    let mut add = |id: u64, what: &str| assert!(ids.insert(id), "id {id} ({what}) used twice");
    for s in must_pdctl(c, &["store"])["stores"].as_array().unwrap() {
        add(s["store"]["id"].as_u64().unwrap(), "store");
    }
    for n in must_pdctl(c, &["datanode"])["datanodes"]
        .as_array()
        .unwrap()
    {
        add(n["id"].as_u64().unwrap(), "data node");
    }
    for r in must_pdctl(c, &["region"])["regions"].as_array().unwrap() {
        add(r["id"].as_u64().unwrap(), "region");
        for p in r["peers"].as_array().unwrap() {
            add(p["id"].as_u64().unwrap(), "peer");
        }
    }
    ids
}

#[test]
fn killing_the_pd_leader_fails_no_request_and_a_new_leader_takes_over() {
    let mut c = Cluster::must_start_with(&["--pd-replicas", "3"]);
    assert_eq!(c.ids_of("pd").len(), 3);
    let members = must_pdctl(&c, &["member"]);
    assert_eq!(members["members"].as_array().unwrap().len(), 3, "{members}");
    let old = c.pd_leader().expect("a PD leader");
    assert_eq!(
        members["leader"]["grpc_address"].as_str(),
        Some(old.grpc.as_str())
    );
    let ids_before = must_collect_unique_ids(&c);
    let regions_before = must_pdctl(&c, &["region"])["count"].as_u64().unwrap();

    let common::MixedLoad {
        child: load,
        acks,
        status,
        stop,
    } = c.start_mixed_load("pdha", "300");
    wait_until("load warm-up", 60, &c, || load_status(&status)[0] >= 5);

    c.must_kill9(&old.id);
    let killed = Instant::now();
    // CreateBucket allocates an id from PD: the gateway's PD client must
    // find the new leader (it retries through the election).
    c.must_aws(&["s3", "mb", "s3://after-failover"]);
    eprintln!(
        "CreateBucket during the failover took {:?}",
        killed.elapsed()
    );
    wait_until("a new PD leader", 30, &c, || {
        c.pd_leader().is_some_and(|l| l.id != old.id)
    });
    let took = killed.elapsed();
    let new = c.pd_leader().expect("new leader");
    eprintln!(
        "PD leader {} killed; {} leads after {took:?}",
        old.id, new.id
    );
    assert!(took < Duration::from_secs(10), "election took {took:?}");
    assert_eq!(common::metric(&new.status, "kura_pd_leader"), Some(1.0));
    for f in c
        .components()
        .iter()
        .filter(|x| x.role == "pd" && x.id != new.id && x.id != old.id)
    {
        assert_eq!(
            common::metric(&f.status, "kura_pd_leader"),
            Some(0.0),
            "{}",
            f.id
        );
    }

    // Writes go on after the failover (the clients found the new leader).
    let puts = load_status(&status)[3];
    wait_until("PUTs after the failover", 60, &c, || {
        load_status(&status)[3] >= puts + 10
    });

    // pdctl with every URL (the dead one first or not) answers from the new leader.
    let cluster = must_pdctl(&c, &["cluster"]);
    assert_eq!(cluster["store_count"].as_u64(), Some(3), "{cluster}");
    assert_eq!(cluster["datanode_count"].as_u64(), Some(6), "{cluster}");
    let members = must_pdctl(&c, &["member"]);
    assert_eq!(
        members["leader"]["grpc_address"].as_str(),
        Some(new.grpc.as_str())
    );

    // New ids after the failover: a split allocates a region id and a peer
    // id per store. It waits for the new leader to learn the region's leader
    // from heartbeats.
    let first = must_pdctl(&c, &["region"])["regions"][0]["id"]
        .as_u64()
        .unwrap();
    let urls = c.pd_urls();
    let first_s = first.to_string();
    wait_until("split-region after the failover", 60, &c, || {
        let out = c
            .kura_cmd()
            .args([
                "pdctl",
                "-u",
                &urls,
                "operator",
                "add",
                "split-region",
                &first_s,
            ])
            .output()
            .expect("run pdctl");
        out.status.success()
    });
    wait_until("both halves in PD", 30, &c, || {
        // At least: a retried call whose first try timed out may have split twice.
        must_pdctl(&c, &["region"])["count"].as_u64() >= Some(regions_before + 1)
    });
    let ids_after = must_collect_unique_ids(&c);
    let fresh: Vec<u64> = ids_after.difference(&ids_before).copied().collect();
    assert!(fresh.len() >= 4, "a region id and 3 peer ids: {fresh:?}");
    let max_before = *ids_before.last().unwrap();
    assert!(
        fresh.iter().all(|&id| id > max_before),
        "ids after the failover start above every earlier one: {fresh:?} vs {max_before}"
    );

    // The killed member rejoins and follows the new leader.
    c.must_restart(&old.id);
    let http = common::pd_http_of(&old).unwrap();
    wait_until("the restarted member to follow the leader", 30, &c, || {
        // A follower that knows the leader redirects `members` to it.
        c.pd_send(&http, "GET", "/pd/api/v1/members", "")
            .is_some_and(|(code, _)| code == 307)
    });
    wait_until(
        "the leader to hear from the restarted member",
        30,
        &c,
        || {
            let v = c.pd_json("/pd/api/v1/members");
            v["members"]
                .as_array()
                .is_some_and(|m| m.iter().all(|x| x["health"].as_bool() == Some(true)))
        },
    );

    std::fs::write(&stop, b"").unwrap();
    let out = load.wait_with_output().expect("load output");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}");
    let s = load_status(&status);
    assert_eq!(s[1], 0, "wrong bytes:\n{report}");
    assert_eq!(s[2], 0, "reads failed across the PD failover:\n{report}");
    assert_eq!(s[4], 0, "PUTs failed across the PD failover:\n{report}");
    let ls = c.must_aws(&["s3", "ls"]);
    assert!(ls.contains("after-failover") && ls.contains("pdha"), "{ls}");
    let verify = c.must_python("verify.py", &["pdha", acks.to_str().unwrap()]);
    assert!(verify.contains(" 0 bad"), "{verify}");
}

/// With its only PD killed, a gateway keeps serving reads and writes of
/// existing buckets from its region cache and placement map; what needs PD
/// (CreateBucket allocates an id) answers 503 ServiceUnavailable, not a 500
/// or a hang; once PD is back, it works again.
#[test]
fn gateways_serve_from_their_region_cache_while_the_only_pd_is_down() {
    let mut c = Cluster::must_start();
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("body");
    std::fs::write(&body, common::pattern(3 << 20, 7)).expect("write body");
    c.must_aws(&["s3", "mb", "s3://cached"]);
    c.must_put_file("cached", "before", &body);
    c.must_get_file("cached", "before", &dir.path().join("warm"));

    c.must_kill9("pd-1");
    let down = Instant::now();
    for i in 0..3 {
        c.must_put_file("cached", &format!("during-{i}"), &body);
    }
    let puts = down.elapsed();
    for key in ["before", "during-0", "during-2"] {
        let out = dir.path().join(key);
        c.must_get_file("cached", key, &out);
        assert!(
            std::fs::read(&out).expect("read back") == std::fs::read(&body).expect("body"),
            "{key} read back different bytes while PD was down"
        );
    }
    let listed = c.must_aws(&["s3", "ls", "s3://cached/"]);
    assert_eq!(listed.lines().count(), 4, "{listed}");
    let mb = c.aws(&["s3api", "create-bucket", "--bucket", "needs-pd"]);
    let err = String::from_utf8_lossy(&mb.stderr);
    assert!(
        !mb.status.success() && err.contains("ServiceUnavailable"),
        "CreateBucket without PD: {err}"
    );
    eprintln!(
        "without PD: 3 PUTs of 3 MiB in {puts:?}; those, 3 GETs, a LIST and a refused CreateBucket in {:?}",
        down.elapsed()
    );

    c.must_restart("pd-1");
    wait_until("CreateBucket with PD back", 30, &c, || {
        c.aws(&["s3api", "create-bucket", "--bucket", "needs-pd"])
            .status
            .success()
    });
}
