//! What one durable save of PD's state costs at many regions: the model →
//! the state document, then the document written and fsynced by the
//! single-process PD's `FileStorage` into `dir`. PD saves after every region
//! range change (split, merge) and every membership change, holding its
//! model lock, so this bounds how many splits per second PD can record.

use std::path::Path;
use std::time::{Duration, Instant};

use kura_pd::storage::{FileStorage, StateFile, Storage};

use crate::heartbeats::{region, three_store_cluster};

#[derive(Debug, Clone)]
pub struct PersistReport {
    pub regions: usize,
    /// The model → the state document.
    pub capture: Duration,
    /// Encode, write, fsync and rename.
    pub save: Duration,
    pub bytes: u64,
}

pub fn run(regions: usize, dir: &Path) -> Result<PersistReport, String> {
    let mut c = three_store_cluster();
    for i in 0..regions {
        let r = region(i, regions);
        let leader = r.peers[0];
        c.region_heartbeat(r, Some(leader), 2, 1 << 20, 1000)
            .map_err(|e| e.to_string())?;
    }
    let storage = FileStorage::open(dir).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let file = StateFile::from_cluster(&c);
    let capture = t0.elapsed();
    let t1 = Instant::now();
    storage.save(&file).map_err(|e| e.to_string())?;
    let save = t1.elapsed();
    let bytes = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    Ok(PersistReport {
        regions,
        capture,
        save,
        bytes,
    })
}
