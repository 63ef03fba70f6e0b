//! `kura bench pd`: PD's pure logic at scale, no cluster needed (kura-sim).
//! Region heartbeats per second on one core at `--regions` regions, beside
//! the machine's own floor for the same amount of work: cloning each region
//! record and inserting it into a hash map (what any heartbeat handler must
//! at least do), measured in the same run.

use std::collections::HashMap;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct PdArgs {
    /// Regions in the simulated cluster (three stores).
    #[arg(long, default_value_t = 100_000)]
    regions: usize,
}

/// Clone + hash-map insert of `n` region-sized records per second.
fn floor_per_sec(n: usize) -> f64 {
    let sample = kura_proto::common::Region {
        id: 1,
        start_key: b"k000000001".to_vec().into(),
        end_key: b"k000000002".to_vec().into(),
        epoch: None,
        peers: vec![Default::default(); 3],
    };
    let mut m = HashMap::with_capacity(n);
    let t = Instant::now();
    for i in 0..n as u64 {
        let mut r = sample.clone();
        r.id = i;
        m.insert(i, r);
    }
    let secs = t.elapsed().as_secs_f64().max(1e-9);
    std::hint::black_box(&m);
    n as f64 / secs
}

pub fn run(args: PdArgs) -> i32 {
    let n = args.regions.max(1);
    let floor = floor_per_sec(n);
    let r = kura_sim::heartbeats::run(n);
    println!("### PD region heartbeats, one core, {n} regions on 3 stores");
    println!();
    println!("| what | per second | vs floor |");
    println!("|---|---|---|");
    println!("| machine floor: clone + hash insert of a region record | {floor:.0} | 1.00 |");
    println!(
        "| first heartbeat of each region (insert, overlap lookup) | {:.0} | {:.2} |",
        r.new_per_sec,
        r.new_per_sec / floor
    );
    println!(
        "| steady heartbeat (same epoch, new sizes) | {:.0} | {:.2} |",
        r.steady_per_sec,
        r.steady_per_sec / floor
    );
    println!();
    println!(
        "One steady round of all {n} regions: {:.0} ms (a 10 s heartbeat interval uses {:.2} % of a core).",
        r.steady_elapsed.as_secs_f64() * 1000.0,
        r.steady_elapsed.as_secs_f64() / 10.0 * 100.0
    );
    let s = kura_sim::scheduling::run(n);
    println!();
    println!("### One scheduling round, {n} regions (every leader on one store, one store down)");
    println!();
    println!("| step | ms |");
    println!("|---|---|");
    println!(
        "| PD state → scheduling snapshot | {:.1} |",
        s.build_model.as_secs_f64() * 1000.0
    );
    println!(
        "| every default scheduler decides ({} operators) | {:.1} |",
        s.operators,
        s.round.as_secs_f64() * 1000.0
    );
    let dir = std::env::temp_dir().join(format!("kura-bench-pd-{}", std::process::id()));
    let p = kura_sim::persist::run(n, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    match p {
        Ok(p) => {
            println!();
            println!("### One durable save of the PD state, {n} regions (single PD, file storage)");
            println!();
            println!("| step | ms |");
            println!("|---|---|");
            println!(
                "| model → state document | {:.1} |",
                p.capture.as_secs_f64() * 1000.0
            );
            println!(
                "| encode + write + fsync + rename ({:.1} MiB) | {:.1} |",
                p.bytes as f64 / (1 << 20) as f64,
                p.save.as_secs_f64() * 1000.0
            );
            0
        }
        Err(e) => {
            eprintln!("kura bench pd: state save failed: {e}");
            1
        }
    }
}
