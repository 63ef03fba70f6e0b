//! `kura bench meta --store-cpu CORES`: caps every metashard store at
//! CORES of CPU with a cgroup CPU quota for the length of the bench.
//!
//! Why: on a small box every process shares the same cores, so a bucket in
//! one region (whose leader batches every proposal into one Raft round) and
//! a bucket in 64 regions (whose leaders sit on all three stores) compete
//! for the same CPU, and the comparison says nothing about what regions are
//! for. With each store held to its own CPU budget, as if it ran on a
//! machine of its own, a single region is limited by its one leader store,
//! and 64 regions can use all three. The quota period is short (10 ms) so
//! throttling shows up as a little latency, not as 100 ms stalls.
//!
//! Needs root and a cgroup `cpu` controller (v1 `/sys/fs/cgroup/cpu`, or v2
//! with `cpu` enabled at the root). Every store goes back to the cgroup it
//! came from when the bench ends ([`Drop`]).

use std::path::{Path, PathBuf};

const PERIOD_US: u64 = 10_000;

/// The stores moved into capped groups; restored on drop.
pub struct StoreCaps {
    moved: Vec<Moved>,
    pub describe: String,
}

struct Moved {
    pid: u32,
    group: PathBuf,
    /// The `cgroup.procs` the process came from.
    home: PathBuf,
}

enum Hierarchy {
    V1(PathBuf),
    V2(PathBuf),
}

fn hierarchy() -> Result<Hierarchy, String> {
    let v1 = Path::new("/sys/fs/cgroup/cpu");
    if v1.join("cpu.cfs_quota_us").exists() {
        return Ok(Hierarchy::V1(v1.to_path_buf()));
    }
    let v2 = Path::new("/sys/fs/cgroup");
    let enabled = std::fs::read_to_string(v2.join("cgroup.subtree_control")).unwrap_or_default();
    if enabled.split_whitespace().any(|c| c == "cpu") {
        return Ok(Hierarchy::V2(v2.to_path_buf()));
    }
    Err(
        "--store-cpu needs a cgroup cpu controller: /sys/fs/cgroup/cpu (v1), \
         or cgroup v2 with cpu in /sys/fs/cgroup/cgroup.subtree_control"
            .into(),
    )
}

/// The group of `pid` in the cpu hierarchy ("/" when unknown), from
/// `/proc/PID/cgroup` lines such as `3:cpu,cpuacct:/x` (v1) or `0::/x` (v2).
fn current_group(pid: u32, version: u8) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    group_in(&text, version).unwrap_or_else(|| "/".into())
}

fn group_in(proc_cgroup: &str, version: u8) -> Option<String> {
    proc_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let ours = match version {
            1 => controllers.split(',').any(|c| c == "cpu"),
            _ => controllers.is_empty(),
        };
        ours.then(|| path.to_string())
    })
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

/// The quota in µs per [`PERIOD_US`] for `cores` (the kernel's floor is 1 ms).
fn quota_us(cores: f64) -> u64 {
    ((cores * PERIOD_US as f64).round() as u64).max(1_000)
}

impl StoreCaps {
    /// Moves each of `pids` (with all its threads) into a group of its own
    /// limited to `cores`.
    pub fn apply(pids: &[u32], cores: f64) -> Result<StoreCaps, String> {
        if cores.is_nan() || cores <= 0.0 {
            return Err(format!("--store-cpu must be above 0 (got {cores})"));
        }
        let h = hierarchy()?;
        let quota = quota_us(cores);
        let mut caps = StoreCaps {
            moved: Vec::new(),
            describe: String::new(),
        };
        for &pid in pids {
            let (root, version): (&PathBuf, u8) = match &h {
                Hierarchy::V1(r) => (r, 1),
                Hierarchy::V2(r) => (r, 2),
            };
            let home = root
                .join(current_group(pid, version).trim_start_matches('/'))
                .join("cgroup.procs");
            let group = root.join(format!("kura-bench-store-{pid}"));
            std::fs::create_dir_all(&group)
                .map_err(|e| format!("creating {}: {e}", group.display()))?;
            match version {
                1 => {
                    write(&group.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                    write(&group.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                _ => write(&group.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?,
            }
            write(&group.join("cgroup.procs"), &pid.to_string())?;
            caps.moved.push(Moved { pid, group, home });
            caps.describe = format!(
                "each metashard store capped at {:.2} of a core (cgroup v{version} CPU quota, \
                 {quota} µs per {PERIOD_US} µs), as if on a machine of its own; \
                 the other processes share what is left",
                quota as f64 / PERIOD_US as f64
            );
        }
        Ok(caps)
    }
}

impl Drop for StoreCaps {
    fn drop(&mut self) {
        for m in &self.moved {
            // A store that exited is simply gone from the group.
            let _ = std::fs::write(&m.home, m.pid.to_string());
            if let Err(e) = std::fs::remove_dir(&m.group) {
                eprintln!("kura bench: could not remove {}: {e}", m.group.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_is_cores_times_period_with_a_floor() {
        assert_eq!(quota_us(0.3), 3_000);
        assert_eq!(quota_us(1.5), 15_000);
        assert_eq!(quota_us(0.01), 1_000);
    }

    #[test]
    fn the_cpu_group_is_read_from_proc() {
        let v1 = "9:name=systemd:/\n3:cpu,cpuacct:/kura\n0::/";
        assert_eq!(group_in(v1, 1).as_deref(), Some("/kura"));
        assert_eq!(group_in(v1, 2).as_deref(), Some("/"));
        assert_eq!(group_in("0::/a/b", 2).as_deref(), Some("/a/b"));
        assert_eq!(group_in("4:memory:/m", 1), None);
    }

    #[test]
    fn a_non_positive_cap_is_refused() {
        assert!(StoreCaps::apply(&[], 0.0).is_err());
        assert!(StoreCaps::apply(&[], f64::NAN).is_err());
    }
}
