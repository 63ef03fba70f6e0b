//! Bytes the data nodes hold on disk: the sum of every segment file
//! (`<data node data_dir>/segments/*.kseg`) of the data nodes listed in the dev
//! cluster's `cluster.json`. Sampled before and after a PUT phase, the growth
//! over the logical bytes PUT is the storage amplification of that phase.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::dev::layout::ClusterFile;

/// One sample: every segment file's length.
#[derive(Debug, Default)]
pub struct SegmentUsage {
    files: HashMap<PathBuf, u64>,
}

impl SegmentUsage {
    pub fn total(&self) -> u64 {
        self.files.values().sum()
    }

    /// True when a file of `earlier` shrank or vanished since: compaction (or
    /// something else) reclaimed space in between, so the growth understates
    /// what was written.
    pub fn reclaimed_since(&self, earlier: &SegmentUsage) -> bool {
        earlier
            .files
            .iter()
            .any(|(p, &len)| self.files.get(p).is_none_or(|&now| now < len))
    }
}

/// The data nodes' segment directories, from `cluster.json` in `cluster_dir`.
pub fn segment_dirs(cluster_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let path = cluster_dir.join("cluster.json");
    let raw = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cf: ClusterFile =
        serde_json::from_slice(&raw).map_err(|e| format!("{}: {e}", path.display()))?;
    let dirs: Vec<PathBuf> = cf
        .components
        .iter()
        .filter(|c| c.role == "datanode")
        .map(|c| c.data_dir.join("segments"))
        .collect();
    if dirs.is_empty() {
        return Err(format!("{}: no data nodes listed", path.display()));
    }
    Ok(dirs)
}

/// Lengths of every segment file under `dirs` right now.
pub fn sample(dirs: &[PathBuf]) -> std::io::Result<SegmentUsage> {
    let mut files = HashMap::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            // A data node that has not written yet may have no segments dir.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with("seg-") && name.ends_with(".kseg")) {
                continue;
            }
            match entry.metadata() {
                Ok(m) => {
                    files.insert(entry.path(), m.len());
                }
                // Compaction may delete a segment between listing and stat.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(SegmentUsage { files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_and_reclaim() {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join("segments");
        std::fs::create_dir(&seg).unwrap();
        std::fs::write(seg.join("seg-0000000001.kseg"), vec![0u8; 100]).unwrap();
        std::fs::write(seg.join("identity.json"), b"{}").unwrap();
        let dirs = vec![seg.clone(), dir.path().join("missing")];
        let a = sample(&dirs).unwrap();
        assert_eq!(a.total(), 100);
        std::fs::write(seg.join("seg-0000000002.kseg"), vec![0u8; 50]).unwrap();
        let b = sample(&dirs).unwrap();
        assert_eq!(b.total(), 150);
        assert!(!b.reclaimed_since(&a));
        std::fs::remove_file(seg.join("seg-0000000001.kseg")).unwrap();
        let c = sample(&dirs).unwrap();
        assert!(c.reclaimed_since(&b));
    }
}
