//! `kura bench ec`: single-core throughput of the erasure codec the gateway
//! runs on every PUT (encode) and every degraded GET (reconstruct), on the
//! stripes the gateway really uses (1 MiB of data cut into k blocks by
//! `Layout::block_size_for`), beside MD5 and CRC32C on the same core: MD5 is
//! what the PUT path must compute over every byte anyway (the ETag), CRC32C is
//! what every data node computes over every block it stores.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kura_datanode::ec::{Codec, Layout};

use super::limits;

#[derive(Debug, clap::Args)]
pub struct EcArgs {
    /// Least time spent measuring each case, in seconds.
    #[arg(long, default_value_t = 2.0)]
    seconds_per_case: f64,
    /// Data bytes per stripe; the gateway's default stripe is 1 MiB.
    #[arg(long, default_value_t = 1 << 20)]
    stripe_bytes: u64,
}

/// One storage class as the codec sees it.
struct Scheme {
    name: &'static str,
    k: usize,
    m: usize,
}

const SCHEMES: [Scheme; 3] = [
    Scheme {
        name: "EC_4_2",
        k: 4,
        m: 2,
    },
    Scheme {
        name: "EC_8_3",
        k: 8,
        m: 3,
    },
    Scheme {
        name: "REPLICA3",
        k: 1,
        m: 2,
    },
];

const MIB: f64 = 1024.0 * 1024.0;

/// Runs `op` (which handles `bytes_per_op` data bytes) until `min` has passed;
/// returns MiB/s of data.
fn rate(min: Duration, bytes_per_op: usize, mut op: impl FnMut()) -> f64 {
    // One untimed call warms caches and the allocator.
    op();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < min {
        for _ in 0..8 {
            op();
        }
        n += 8;
    }
    n as f64 * bytes_per_op as f64 / MIB / start.elapsed().as_secs_f64()
}

/// Pseudo-random bytes so nothing about the data is special.
fn stripe(len: usize) -> Bytes {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

struct Row {
    scheme: &'static str,
    geometry: String,
    case: String,
    mib_s: f64,
}

fn measure_scheme(s: &Scheme, stripe_bytes: u64, min: Duration) -> Result<Vec<Row>, String> {
    let codec = Codec::new(s.k, s.m).map_err(|e| e.to_string())?;
    let block = Layout::block_size_for(stripe_bytes, s.k as u32) as usize;
    let data = stripe(s.k * block);
    let geometry = if s.k == 1 {
        format!("{} × {} KiB", s.k + s.m, block / 1024)
    } else {
        format!("{} + {} × {} KiB", s.k, s.m, block / 1024)
    };
    let shards = codec.encode(&data, block).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut push = |case: String, mib_s: f64| {
        rows.push(Row {
            scheme: s.name,
            geometry: geometry.clone(),
            case,
            mib_s,
        })
    };

    let mut failure: Option<String> = None;
    let mut encode_rate = |c: &Codec| {
        rate(min, data.len(), || {
            match c.encode(&data, block) {
                Ok(out) => {
                    std::hint::black_box(out);
                }
                Err(e) => failure = Some(e.to_string()),
            };
        })
    };
    let encode = encode_rate(&codec);
    // What the same stripes cost with reed-solomon-erasure's own kernels.
    let portable = match codec.uses_gfni() {
        true => Some(encode_rate(
            &Codec::portable(s.k, s.m).map_err(|e| e.to_string())?,
        )),
        false => None,
    };
    push(
        if s.k == 1 {
            "encode (3 references to the same block, no computation)".into()
        } else if codec.uses_gfni() {
            format!("encode ({} parity blocks, GFNI kernel)", s.m)
        } else {
            format!("encode ({} parity blocks)", s.m)
        },
        encode,
    );
    if let Some(before) = portable {
        push(
            format!(
                "encode ({} parity blocks, reed-solomon-erasure kernels)",
                s.m
            ),
            before,
        );
    }

    // Degraded reads: the first `lost` data shards are missing and must be rebuilt
    // from the survivors (parity included), as the stripe reader does.
    let mut losses: Vec<usize> = vec![1, 2, s.m];
    losses.retain(|&l| l <= s.m);
    losses.dedup();
    for lost in losses {
        let dec = rate(min, data.len(), || {
            let mut got: Vec<Option<Bytes>> = shards.iter().cloned().map(Some).collect();
            // lost <= m < k for the EC schemes, so these are data shards; for
            // REPLICA3 they are copies.
            for slot in got.iter_mut().take(lost) {
                *slot = None;
            }
            match codec.reconstruct_data(&mut got) {
                Ok(()) => {
                    std::hint::black_box(got);
                }
                Err(e) => failure = Some(e.to_string()),
            }
        });
        push(
            if s.k == 1 {
                format!("read with {lost} of 3 copies lost (use a survivor)")
            } else {
                format!(
                    "reconstruct data, {lost} data block{} lost",
                    if lost == 1 { "" } else { "s" }
                )
            },
            dec,
        );
    }

    // Healing rebuilds every missing fragment, parity included.
    if s.k > 1 {
        let heal = rate(min, data.len(), || {
            let mut got: Vec<Option<Bytes>> = shards.iter().cloned().map(Some).collect();
            got[0] = None;
            got[s.k] = None;
            match codec.reconstruct_all(&mut got) {
                Ok(()) => {
                    std::hint::black_box(got);
                }
                Err(e) => failure = Some(e.to_string()),
            }
        });
        push("heal: rebuild 1 data + 1 parity block".into(), heal);
    }
    match failure {
        Some(e) => Err(format!("{} codec failed: {e}", s.name)),
        None => Ok(rows),
    }
}

/// Nanoseconds per stripe of `stripe_bytes` at `mib_s`.
fn per_stripe_ns(mib_s: f64, stripe_bytes: u64) -> f64 {
    stripe_bytes as f64 / MIB / mib_s * 1e9
}

pub fn run(args: EcArgs) -> i32 {
    if args.seconds_per_case.is_nan()
        || args.seconds_per_case <= 0.0
        || !(4096..=(16 << 20)).contains(&args.stripe_bytes)
    {
        eprintln!(
            "kura bench ec: --seconds-per-case must be > 0, --stripe-bytes in 4 KiB..=16 MiB"
        );
        return 2;
    }
    let min = Duration::from_secs_f64(args.seconds_per_case);
    eprintln!(
        "bench: codec, {} s per case, one thread ...",
        args.seconds_per_case
    );
    let md5 = limits::md5_rate(min);
    let crc = limits::crc32c_rate(min);
    let lanes: Vec<(usize, f64)> = [16, 8, 3, 2, 1]
        .into_iter()
        .filter_map(|live| Some((live, limits::md5_lanes_rate(min, live)?)))
        .collect();
    let mut rows = Vec::new();
    for s in &SCHEMES {
        match measure_scheme(s, args.stripe_bytes, min) {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("kura bench ec: {e}");
                return 1;
            }
        }
    }
    println!(
        "## Erasure codec, one core, {} s per case",
        args.seconds_per_case
    );
    println!();
    println!(
        "Stripe: {} KiB of data; MiB/s counts data bytes (not parity).",
        args.stripe_bytes / 1024
    );
    println!();
    println!("| class | blocks per stripe | operation | MiB/s per core | × MD5 |");
    println!("|---|---|---|---|---|");
    println!("| — | — | MD5 (ETag of every PUT) | {md5:.0} | 1.0 |");
    for (live, rate) in lanes {
        println!(
            "| — | — | MD5 lanes, {live} of 16 live (the gateway's ETag engine) | {rate:.0} | {:.1} |",
            rate / md5
        );
    }
    println!(
        "| — | — | CRC32C (data node, every block) | {crc:.0} | {:.1} |",
        crc / md5
    );
    for r in rows {
        // REPLICA3 computes nothing (it hands out references to one buffer): a
        // MiB/s figure would only measure a loop, so say what one stripe costs.
        let (rate, ratio) = if r.mib_s > 1e6 {
            (
                format!(
                    "no computation ({:.0} ns per stripe)",
                    per_stripe_ns(r.mib_s, args.stripe_bytes)
                ),
                "—".to_string(),
            )
        } else {
            (format!("{:.0}", r.mib_s), format!("{:.1}", r.mib_s / md5))
        };
        println!(
            "| {} | {} | {} | {rate} | {ratio} |",
            r.scheme, r.geometry, r.case
        );
    }
    0
}
