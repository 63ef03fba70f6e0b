//! Where the CPU went during a benchmark phase: each cluster process's user +
//! system time from `/proc/<pid>/stat`, sampled before and after, as a
//! percentage of one core over the phase. It shows which process limits a
//! phase (on a 2-core box, usually all of them together) and whether the
//! metashard work is spread over the stores or piled on one leader.

use std::time::Duration;

/// One cluster process from `cluster.json`.
#[derive(Debug, Clone)]
pub struct Proc {
    pub role: String,
    pub pid: u32,
}

/// The processes `cluster.json` lists.
pub fn procs(cluster: &serde_json::Value) -> Vec<Proc> {
    cluster["components"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| {
                    Some(Proc {
                        role: c["role"].as_str()?.to_string(),
                        pid: u32::try_from(c["pid"].as_u64()?).ok()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// utime + stime of `pid` in clock ticks (None: gone or unreadable).
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line; `rest` starts at field 3.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Ticks per process at one moment.
pub struct Sample(Vec<Option<u64>>);

pub fn sample(procs: &[Proc]) -> Sample {
    Sample(procs.iter().map(|p| ticks(p.pid)).collect())
}

/// CPU use of one phase, percent of one core.
#[derive(Debug, Clone, Default)]
pub struct PhaseCpu {
    /// The busiest metashard store.
    pub meta_max: f64,
    /// All metashard stores together.
    pub meta_sum: f64,
    pub gateway: f64,
    /// Every cluster process together (the load generator excluded).
    pub cluster: f64,
}

pub fn phase(procs: &[Proc], before: &Sample, after: &Sample, elapsed: Duration) -> PhaseCpu {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut out = PhaseCpu::default();
    for (i, p) in procs.iter().enumerate() {
        let (Some(Some(a)), Some(Some(b))) = (before.0.get(i), after.0.get(i)) else {
            continue;
        };
        let pct = b.saturating_sub(*a) as f64 / hz / secs * 100.0;
        out.cluster += pct;
        match p.role.as_str() {
            "metashard" => {
                out.meta_sum += pct;
                out.meta_max = out.meta_max.max(pct);
            }
            "gateway" => out.gateway += pct,
            _ => {}
        }
    }
    out
}

/// CPU seconds each role's processes used between two samples.
pub fn seconds_by_role(
    procs: &[Proc],
    before: &Sample,
    after: &Sample,
) -> std::collections::BTreeMap<String, f64> {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut out = std::collections::BTreeMap::new();
    for (i, p) in procs.iter().enumerate() {
        let (Some(Some(a)), Some(Some(b))) = (before.0.get(i), after.0.get(i)) else {
            continue;
        };
        *out.entry(p.role.clone()).or_insert(0.0) += b.saturating_sub(*a) as f64 / hz;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_ticks_are_read_and_grow() {
        let me = std::process::id();
        let before = ticks(me).expect("own /proc/self/stat");
        let mut x = 0u64;
        for i in 0..30_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(ticks(me).expect("still there") > before);
    }

    #[test]
    fn phase_sums_by_role() {
        let procs = vec![
            Proc {
                role: "metashard".into(),
                pid: 1,
            },
            Proc {
                role: "metashard".into(),
                pid: 2,
            },
            Proc {
                role: "gateway".into(),
                pid: 3,
            },
        ];
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let before = Sample(vec![Some(0), Some(0), Some(0)]);
        let after = Sample(vec![Some(hz), Some(hz / 2), None]);
        let c = phase(&procs, &before, &after, Duration::from_secs(2));
        assert!((c.meta_max - 50.0).abs() < 1.0, "{c:?}");
        assert!((c.meta_sum - 75.0).abs() < 1.0, "{c:?}");
        assert_eq!(c.gateway, 0.0);
        let by = seconds_by_role(&procs, &before, &after);
        assert!((by["metashard"] - 1.5).abs() < 0.01, "{by:?}");
        assert!(
            !by.contains_key("gateway"),
            "a process gone mid-run counts nothing"
        );
    }
}
