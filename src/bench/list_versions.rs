//! `kura bench list-versions`: what a LIST of a versioned bucket costs next
//! to an unversioned LIST of the same keys (issue 16, decision 0034).
//!
//! Loads `--keys` empty objects into an unversioned bucket and the same keys
//! with `--versions` versions each into a versioned one, then lists both in
//! full with ListObjectsV2 (1,000 per page, one client), `--rounds` times
//! each. Per listing it reports the time and the keys the metashard stores'
//! scans read (`kura_metashard_scan_keys_read_total{cf="meta"}` summed over
//! the stores). Beside it, the machine's floor for the same work in the same
//! run: a RocksDB (the stores' engine, in a scratch directory on the
//! cluster's disk) iterating N keys, seeking past older versions over N×M,
//! and reading all N×M.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kura_metashard::engine::{Engine, ScanOpts};
use kura_metashard::keys;
use kura_proto::metashard::Cf;

use super::meta::{self, BenchError, Target};

#[derive(Debug, clap::Args)]
pub struct ListVersionsArgs {
    /// The dev cluster's data dir: credentials, S3 endpoint and the stores'
    /// status addresses come from its cluster.json.
    #[arg(long, default_value = "./kura-data")]
    data_dir: PathBuf,
    /// Object keys in each bucket.
    #[arg(long, default_value_t = 20_000)]
    keys: u64,
    /// Versions of each key in the versioned bucket.
    #[arg(long, default_value_t = 10)]
    versions: u64,
    /// Full listings of each bucket (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent clients loading the buckets.
    #[arg(long, default_value_t = 32)]
    load_concurrency: usize,
}

pub fn run(args: ListVersionsArgs) -> i32 {
    super::block_on("kura bench list-versions", run_async(args))
}

/// One measured listing (or floor scan).
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    listed: u64,
    secs: f64,
    /// Keys the stores read (metric delta); for a floor scan, the iterator's.
    read: u64,
}

fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    runs.get(runs.len() / 2).copied().unwrap_or_default()
}

/// Every metashard store's status address, from cluster.json.
fn store_status_addrs(data_dir: &std::path::Path) -> Result<Vec<String>, BenchError> {
    let cluster: serde_json::Value = std::fs::read(data_dir.join("cluster.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| BenchError::Setup(format!("no cluster.json in {}", data_dir.display())))?;
    Ok(cluster["components"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["role"] == "metashard")
                .filter_map(|c| c["status"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

/// The sum of `kura_metashard_scan_keys_read_total{cf="meta"}` over the stores.
async fn keys_read(http: &reqwest::Client, stores: &[String]) -> Result<u64, BenchError> {
    let mut total = 0u64;
    for s in stores {
        let body = http
            .get(format!("http://{s}/metrics"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| BenchError::Setup(format!("metrics of {s}: {e}")))?
            .text()
            .await
            .map_err(|e| BenchError::Setup(format!("metrics of {s}: {e}")))?;
        total += scan_keys_read_meta(&body);
    }
    Ok(total)
}

/// The cf="meta" sample of the scan keys-read counter in a metrics text.
fn scan_keys_read_meta(text: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.starts_with("kura_metashard_scan_keys_read_total{") && l.contains("cf=\"meta\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

async fn set_versioning(t: &Target, bucket: &str) -> Result<(), BenchError> {
    let body = Bytes::from_static(
        b"<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>Enabled</Status></VersioningConfiguration>",
    );
    let r = t
        .client
        .send(
            reqwest::Method::PUT,
            &format!("/{bucket}?versioning="),
            Some(body),
            &[],
        )
        .await
        .map_err(BenchError::S3)?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(BenchError::S3(format!(
            "enable versioning on {bucket}: {}",
            r.status()
        )))
    }
}

/// PUTs `keys × versions` empty objects: every key once per round, so the
/// versions of one key are written apart in time.
async fn load(
    t: &Target,
    bucket: &Arc<str>,
    keys: u64,
    versions: u64,
    conc: usize,
) -> Result<f64, BenchError> {
    let total = keys * versions;
    let next = Arc::new(AtomicU64::new(0));
    let (client, b) = (t.client.clone(), bucket.clone());
    let o = meta::drive(conc, 86_400, move |_, _| {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            return None;
        }
        let (client, b) = (client.clone(), b.clone());
        Some(
            async move { meta::put(&client, &b, &meta::key_of("v", n % keys), Bytes::new()).await },
        )
    })
    .await;
    if o.errors > 0 {
        return Err(BenchError::S3(format!(
            "{} PUTs failed while loading {bucket}",
            o.errors
        )));
    }
    Ok(o.ops as f64 / o.elapsed.as_secs_f64().max(1e-9))
}

/// One full ListObjectsV2 pagination, 1,000 keys per page.
async fn list_all(
    t: &Target,
    bucket: &str,
    http: &reqwest::Client,
    stores: &[String],
) -> Result<Run, BenchError> {
    let before = keys_read(http, stores).await?;
    let t0 = Instant::now();
    let (mut listed, mut token) = (0u64, None::<String>);
    loop {
        let (n, next) = meta::list_page(&t.client, bucket, None, token.as_deref())
            .await
            .map_err(BenchError::S3)?;
        listed += n;
        match next {
            Some(tok) if n > 0 => token = Some(tok),
            _ => break,
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let after = keys_read(http, stores).await?;
    Ok(Run {
        listed,
        secs,
        read: after.saturating_sub(before),
    })
}

/// The floor: the same key layout in a scratch RocksDB on the cluster's
/// disk, scanned in pages of 1,001 as a LIST scans: N keys with one version,
/// N×M seeking past older versions, N×M reading every version.
fn floor(dir: &std::path::Path, keys: u64, versions: u64) -> Result<[Run; 3], BenchError> {
    let err = |e: kura_metashard::engine::EngineError| BenchError::Setup(format!("floor: {e}"));
    let engine = Engine::open(dir).map_err(err)?;
    // About the size of an empty object's record.
    let value = vec![0x5au8; 120];
    let mut wb = engine.batch();
    for n in 0..keys {
        let k = meta::key_of("v", n);
        wb.put_data(
            Cf::Meta,
            &keys::object_version_key(1, k.as_bytes(), 0),
            &value,
        );
        for v in 1..=versions {
            wb.put_data(
                Cf::Meta,
                &keys::object_version_key(2, k.as_bytes(), v),
                &value,
            );
        }
        if wb.len() > 10_000 {
            engine
                .write(std::mem::replace(&mut wb, engine.batch()), false)
                .map_err(err)?;
        }
    }
    engine.write(wb, true).map_err(err)?;
    let scan = |bucket: u64, first_per_object: bool| -> Result<Run, BenchError> {
        let (mut cur, end) = keys::object_range(bucket, b"");
        let opts = ScanOpts {
            keys_only: false,
            first_per_object,
        };
        let t0 = Instant::now();
        let (mut listed, mut read) = (0u64, 0u64);
        loop {
            let out = engine
                .scan_data_opts(Cf::Meta, &cur, &end, 1001, opts)
                .map_err(err)?;
            read += out.keys_read;
            let Some((last, _)) = out.kvs.last() else {
                break;
            };
            let page_full = out.kvs.len() == 1001;
            // A LIST page returns 1,000 and resumes after them.
            listed += out.kvs.len().min(1000) as u64;
            let resume = if page_full { &out.kvs[999].0 } else { last };
            cur = match first_per_object {
                true => keys::seek_after_object_of(resume).unwrap_or_else(|| resume.clone()),
                false => [resume.as_slice(), &[0]].concat(),
            };
            if !page_full {
                break;
            }
        }
        Ok(Run {
            listed,
            secs: t0.elapsed().as_secs_f64(),
            read,
        })
    };
    Ok([scan(1, false)?, scan(2, true)?, scan(2, false)?])
}

async fn run_async(args: ListVersionsArgs) -> Result<(), BenchError> {
    let t = meta::target(&args.data_dir)?;
    let stores = store_status_addrs(&args.data_dir)?;
    let http = reqwest::Client::new();
    let (n, m) = (args.keys.max(1), args.versions.max(1));
    let tag: u32 = rand::random();
    let flat: Arc<str> = Arc::from(format!("kbl-flat-{tag:08x}").as_str());
    let versioned: Arc<str> = Arc::from(format!("kbl-vers-{tag:08x}").as_str());
    println!(
        "## kura bench list-versions ({}), {} CPU cores, {} metashard stores",
        t.endpoint,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        stores.len()
    );
    let scratch = args
        .data_dir
        .join(format!(".kura-bench-list-floor-{}", std::process::id()));
    let fl = floor(&scratch, n, m);
    let _ = std::fs::remove_dir_all(&scratch);
    let [floor_flat, floor_seek, floor_all] = fl?;
    meta::create_bucket(&t.client, &flat).await?;
    meta::create_bucket(&t.client, &versioned).await?;
    set_versioning(&t, &versioned).await?;
    eprintln!("bench list-versions: loading {n} keys, then {n} × {m} versions ...");
    let flat_rate = load(&t, &flat, n, 1, args.load_concurrency).await?;
    let vers_rate = load(&t, &versioned, n, m, args.load_concurrency).await?;
    // Let automatic splits settle before listing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mut f_runs, mut v_runs) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds.max(1) {
        f_runs.push(list_all(&t, &flat, &http, &stores).await?);
        v_runs.push(list_all(&t, &versioned, &http, &stores).await?);
    }
    let (f, v) = (median(f_runs), median(v_runs));
    println!();
    println!("### LIST v2 in full (pages of 1,000, one client): {n} keys, unversioned vs {m} versions each");
    println!();
    println!(
        "(loaded at {flat_rate:.0} and {vers_rate:.0} PUT/s; median of {} listings each)",
        args.rounds.max(1)
    );
    println!();
    println!("| what | keys listed | keys read | seconds | keys/s | ÷ its 1-version twin (time) |");
    println!("|---|---|---|---|---|---|");
    let line = |what: &str, r: &Run, ratio: Option<f64>| {
        println!(
            "| {what} | {} | {} | {:.3} | {:.0} | {} |",
            r.listed,
            r.read,
            r.secs,
            r.listed as f64 / r.secs.max(1e-9),
            ratio.map_or(String::from("1.00"), |x| format!("{x:.2}"))
        );
    };
    line(
        "machine floor: RocksDB, 1 version per key",
        &floor_flat,
        None,
    );
    line(
        &format!("machine floor: RocksDB, {m} versions, seek past older ones"),
        &floor_seek,
        Some(floor_seek.secs / floor_flat.secs.max(1e-9)),
    );
    line(
        &format!("machine floor: RocksDB, {m} versions, read every version"),
        &floor_all,
        Some(floor_all.secs / floor_flat.secs.max(1e-9)),
    );
    line("Kura: unversioned bucket", &f, None);
    line(
        &format!("Kura: versioned bucket, {m} versions per key"),
        &v,
        Some(v.secs / f.secs.max(1e-9)),
    );
    println!();
    println!(
        "Kura ÷ floor (keys/s): unversioned {:.3}, versioned {:.3} (vs the seeking floor). Keys read per listed key: unversioned {:.2}, versioned {:.2}.",
        (f.listed as f64 / f.secs.max(1e-9)) / (floor_flat.listed as f64 / floor_flat.secs.max(1e-9)),
        (v.listed as f64 / v.secs.max(1e-9)) / (floor_seek.listed as f64 / floor_seek.secs.max(1e-9)),
        f.read as f64 / f.listed.max(1) as f64,
        v.read as f64 / v.listed.max(1) as f64,
    );
    if f.listed != n || v.listed != n {
        return Err(BenchError::S3(format!(
            "listed {} and {} keys, loaded {n} keys",
            f.listed, v.listed
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_meta_sample_of_the_counter() {
        let text = "# HELP x\nkura_metashard_scan_keys_read_total{cf=\"meta\"} 1234\n\
                    kura_metashard_scan_keys_read_total{cf=\"usage\"} 99\n\
                    kura_metashard_scan_seeks_total{cf=\"meta\"} 5\n";
        assert_eq!(scan_keys_read_meta(text), 1234);
        assert_eq!(scan_keys_read_meta(""), 0);
    }

    #[test]
    fn floor_seeks_read_one_key_per_object() {
        let dir = tempfile::tempdir().unwrap();
        let [flat, seek, all] = floor(&dir.path().join("db"), 2500, 4).unwrap();
        assert_eq!((flat.listed, seek.listed, all.listed), (2500, 2500, 10_000));
        // One extra key per full page (the 1,001st).
        assert_eq!(flat.read, 2502);
        assert_eq!(seek.read, 2502);
        assert_eq!(all.read, 10_009);
    }
}
