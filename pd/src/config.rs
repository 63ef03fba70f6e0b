//! Admin settings that live in PD's persisted (and replicated) state rather
//! than in flags: per-store label overrides, weights and operator limits
//! (`pdctl store label|weight|limit`), the runtime schedule configuration
//! (`pdctl config show|set`) and which schedulers are disabled or paused
//! (`pdctl scheduler add|remove|pause|resume`).
//!
//! The runtime configuration starts from the `kura pd` flags; a value set
//! with `config set` is saved in the state (format 4) and wins over the flag
//! from then on, also after a restart or a PD leader change. Pure logic: the
//! server keeps the effective [`RuntimeConfig`] and the loops read it each
//! round, so a change takes effect without a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::merge::MergeCheckConfig;
use crate::schedule::hot_region::{HotRegion, HotThresholds};

/// What an operator set on one store (persisted).
#[derive(Clone, Debug, PartialEq)]
pub struct StoreSettings {
    /// Label overrides merged over the labels the store registers with
    /// (`zone`, `rack` and `host` take part in placement).
    pub labels: BTreeMap<String, String>,
    /// balance-leader compares leader_count / leader_weight.
    pub leader_weight: f64,
    /// balance-region compares region_count / region_weight.
    pub region_weight: f64,
    /// Operators per minute this store may take part in (None: the default,
    /// `leader-transfer-limit`).
    pub limit_per_minute: Option<usize>,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            labels: BTreeMap::new(),
            leader_weight: 1.0,
            region_weight: 1.0,
            limit_per_minute: None,
        }
    }
}

/// Every admin setting kept in the cluster state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    /// Stores with something set (absent: defaults).
    pub stores: BTreeMap<u64, StoreSettings>,
    /// `config set` values by key, as normalised by [`RuntimeConfig::set`].
    pub config: BTreeMap<String, String>,
    /// Schedulers `scheduler remove` turned off.
    pub disabled_schedulers: BTreeSet<String>,
    /// Schedulers `scheduler pause` stopped.
    pub paused_schedulers: BTreeSet<String>,
}

impl Settings {
    pub fn store(&self, id: u64) -> StoreSettings {
        self.stores.get(&id).cloned().unwrap_or_default()
    }

    /// Changes store `id`'s settings with `f`; returns whether anything changed.
    pub fn update_store(&mut self, id: u64, f: impl FnOnce(&mut StoreSettings)) -> bool {
        let before = self.store(id);
        let mut after = before.clone();
        f(&mut after);
        if after == before {
            return false;
        }
        if after == StoreSettings::default() {
            self.stores.remove(&id);
        } else {
            self.stores.insert(id, after);
        }
        true
    }

    /// Schedulers that do not run now (disabled or paused).
    pub fn stopped_schedulers(&self) -> BTreeSet<String> {
        self.disabled_schedulers
            .union(&self.paused_schedulers)
            .cloned()
            .collect()
    }
}

/// Parses `KEY=VALUE` label arguments (`KEY=` drops an override).
pub fn parse_labels(args: &[String]) -> Result<Vec<(String, String)>, String> {
    if args.is_empty() {
        return Err("give at least one KEY=VALUE label".into());
    }
    args.iter()
        .map(|a| {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| format!("label {a:?} is not KEY=VALUE"))?;
            let key_ok = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
            if !key_ok {
                return Err(format!(
                    "label key {k:?} must be letters, digits, '-', '_' or '.'"
                ));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Checks a store weight (pd-ctl's `store weight`): finite and positive.
pub fn check_weight(what: &str, w: f64) -> Result<f64, String> {
    if w.is_finite() && w > 0.0 {
        Ok(w)
    } else {
        Err(format!("{what} must be a positive number, got {w}"))
    }
}

/// The schedule settings in effect: the flags, overridden by `config set`.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Time between scheduling rounds (zero: no automatic scheduling).
    pub schedule_interval: Duration,
    /// Operators (leader transfers, peer moves) each store may take part
    /// in per minute, unless `store limit` set its own.
    pub leader_transfer_limit: usize,
    /// A store silent this long is Down (its peers are re-created elsewhere).
    pub max_store_down_time: Duration,
    /// What the merge checker merges.
    pub merge: MergeCheckConfig,
    /// Read-only: peers per region.
    pub max_replicas: u32,
    /// When hot-region counts a region as read-hot / write-hot.
    pub hot_read: HotThresholds,
    pub hot_write: HotThresholds,
}

/// The keys `config set` takes (kebab-case, like pd-ctl's).
pub const SETTABLE_KEYS: [&str; 10] = [
    "schedule-interval",
    "leader-transfer-limit",
    "max-store-down-time",
    "split-merge-interval",
    "max-merge-region-keys",
    "max-merge-region-size",
    "hot-region-min-read-bytes",
    "hot-region-min-read-keys",
    "hot-region-min-write-bytes",
    "hot-region-min-write-keys",
];

impl RuntimeConfig {
    pub fn from_flags(cfg: &crate::Config) -> Self {
        RuntimeConfig {
            schedule_interval: cfg.schedule_interval,
            leader_transfer_limit: cfg.leader_transfers_per_store_per_minute,
            max_store_down_time: cfg.max_store_down_time,
            merge: cfg.merge.clone(),
            max_replicas: cfg.max_replicas,
            hot_read: HotRegion::default().read,
            hot_write: HotRegion::default().write,
        }
    }

    /// The flags with every saved `config set` value applied.
    pub fn effective(cfg: &crate::Config, saved: &BTreeMap<String, String>) -> Self {
        let mut rc = Self::from_flags(cfg);
        for (k, v) in saved {
            // Saved values were checked when set; one this PD cannot read
            // (a newer PD's key) is skipped, the flag value stays.
            if let Err(e) = rc.set(k, v) {
                tracing::warn!(key = %k, "ignoring a saved config value: {e}");
            }
        }
        rc
    }

    pub fn max_store_down_ms(&self) -> i64 {
        self.max_store_down_time.as_millis() as i64
    }

    /// Applies `key = value`; returns the value normalised as it is saved
    /// and shown. An unknown key, a read-only one or a bad value is an error.
    pub fn set(&mut self, key: &str, value: &str) -> Result<String, String> {
        let value = value.trim();
        match key {
            "schedule-interval" => {
                self.schedule_interval = parse_duration(value)?;
                Ok(fmt_duration(self.schedule_interval))
            }
            "max-store-down-time" => {
                let d = parse_duration(value)?;
                if d < Duration::from_secs(1) {
                    return Err("max-store-down-time must be at least 1s".into());
                }
                self.max_store_down_time = d;
                Ok(fmt_duration(d))
            }
            "split-merge-interval" => {
                self.merge.split_merge_interval = parse_duration(value)?;
                Ok(fmt_duration(self.merge.split_merge_interval))
            }
            "leader-transfer-limit" => {
                self.leader_transfer_limit = parse_count(key, value)? as usize;
                Ok(self.leader_transfer_limit.to_string())
            }
            "max-merge-region-keys" => {
                self.merge.max_keys = parse_count(key, value)?;
                Ok(self.merge.max_keys.to_string())
            }
            "max-merge-region-size" => {
                let mib = parse_count(key, value)?;
                self.merge.max_size = mib
                    .checked_mul(1 << 20)
                    .ok_or_else(|| format!("max-merge-region-size {mib} MiB is too large"))?;
                Ok(mib.to_string())
            }
            "hot-region-min-read-bytes" => set_count(key, value, &mut self.hot_read.min_bytes),
            "hot-region-min-read-keys" => set_count(key, value, &mut self.hot_read.min_keys),
            "hot-region-min-write-bytes" => set_count(key, value, &mut self.hot_write.min_bytes),
            "hot-region-min-write-keys" => set_count(key, value, &mut self.hot_write.min_keys),
            "max-replicas" | "location-labels" => Err(format!(
                "{key} cannot be changed at runtime (it is the `kura pd` flag's value)"
            )),
            other => Err(format!(
                "unknown config key {other:?} (settable: {})",
                SETTABLE_KEYS.join(", ")
            )),
        }
    }

    /// pd-ctl's `config show` shape: `schedule` and `replication` objects.
    pub fn to_json(&self) -> Value {
        json!({
            "schedule": {
                "schedule-interval": fmt_duration(self.schedule_interval),
                "leader-transfer-limit": self.leader_transfer_limit,
                "max-store-down-time": fmt_duration(self.max_store_down_time),
                "split-merge-interval": fmt_duration(self.merge.split_merge_interval),
                "max-merge-region-keys": self.merge.max_keys,
                "max-merge-region-size": self.merge.max_size >> 20,
                "hot-region-min-read-bytes": self.hot_read.min_bytes,
                "hot-region-min-read-keys": self.hot_read.min_keys,
                "hot-region-min-write-bytes": self.hot_write.min_bytes,
                "hot-region-min-write-keys": self.hot_write.min_keys,
            },
            "replication": {
                "max-replicas": self.max_replicas,
                "location-labels": "zone",
            }
        })
    }
}

/// Sets `*field` from a count; returns it as saved.
fn set_count(key: &str, value: &str, field: &mut u64) -> Result<String, String> {
    *field = parse_count(key, value)?;
    Ok(field.to_string())
}

fn parse_count(key: &str, value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .map_err(|_| format!("{key} must be a whole number, got {value:?}"))
}

/// `90`, `90s`, `1m30s`, `2h`, `500ms`: a number alone is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration {s:?} (e.g. 30s, 5m, 1h30m, or seconds)");
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            _ => return Err(bad()),
        };
        total += unit.checked_mul(n as u32).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// `1h30m`, `45s`, `0s`, `1500ms`.
pub fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, u) in [(h, "h"), (m, "m"), (s, "s")] {
        if n != 0 {
            out.push_str(&format!("{n}{u}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> crate::Config {
        crate::Config::new(
            "/tmp/x".into(),
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        )
    }

    #[test]
    fn durations_parse_and_print_round_trip() {
        for (s, secs) in [
            ("90", 90),
            ("90s", 90),
            ("1m30s", 90),
            ("2h", 7200),
            ("0", 0),
        ] {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_secs(secs), "{s}");
        }
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        for bad in ["", "s", "1x", "1.5s", "-3", "m5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(fmt_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(fmt_duration(Duration::from_secs(30)), "30s");
        assert_eq!(fmt_duration(Duration::ZERO), "0s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn config_set_checks_keys_and_values_and_saved_values_win_over_flags() {
        let cfg = flags();
        let mut rc = RuntimeConfig::from_flags(&cfg);
        assert_eq!(rc.set("max-store-down-time", "1m").unwrap(), "1m");
        assert_eq!(rc.max_store_down_ms(), 60_000);
        assert_eq!(rc.set("max-merge-region-size", "8").unwrap(), "8");
        assert_eq!(rc.merge.max_size, 8 << 20);
        assert_eq!(rc.set("leader-transfer-limit", " 7 ").unwrap(), "7");
        assert!(rc.set("leader-transfer-limit", "-1").is_err());
        assert!(rc.set("max-store-down-time", "0s").is_err());
        assert!(rc.set("no-such-key", "1").unwrap_err().contains("unknown"));
        assert!(rc
            .set("max-replicas", "5")
            .unwrap_err()
            .contains("cannot be changed"));
        let shown = rc.to_json();
        assert_eq!(shown["schedule"]["max-store-down-time"], "1m");
        assert_eq!(shown["schedule"]["leader-transfer-limit"], 7);
        assert_eq!(shown["replication"]["max-replicas"], 3);
        // Saved values over the flags; the others keep the flag's value.
        let saved: BTreeMap<String, String> =
            [("schedule-interval".to_string(), "10s".to_string())].into();
        let eff = RuntimeConfig::effective(&cfg, &saved);
        assert_eq!(eff.schedule_interval, Duration::from_secs(10));
        assert_eq!(eff.max_store_down_time, cfg.max_store_down_time);
    }

    #[test]
    fn hot_region_thresholds_are_set_shown_and_reach_the_scheduler() {
        use crate::schedule::Scheduler;
        let mut rc = RuntimeConfig::from_flags(&flags());
        assert_eq!(rc.set("hot-region-min-read-keys", "500"), Ok("500".into()));
        assert!(rc.set("hot-region-min-write-bytes", "-1").is_err());
        assert_eq!(rc.to_json()["schedule"]["hot-region-min-read-keys"], 500);
        let mut hot = HotRegion::default();
        hot.configure(&rc);
        assert_eq!(hot.read.min_keys, 500);
        assert_eq!(hot.write, HotRegion::default().write);
    }

    #[test]
    fn store_settings_drop_back_to_defaults_and_labels_parse() {
        let mut s = Settings::default();
        assert!(s.update_store(1, |st| st.leader_weight = 2.0));
        assert!(!s.update_store(1, |st| st.leader_weight = 2.0), "no change");
        assert!(s.update_store(1, |st| st.leader_weight = 1.0));
        assert!(s.stores.is_empty(), "defaults are not kept");
        let l = parse_labels(&["zone=z9".into(), "host=".into()]).unwrap();
        assert_eq!(l[1], ("host".to_string(), String::new()));
        assert!(parse_labels(&["zone".into()]).is_err());
        assert!(parse_labels(&["=x".into()]).is_err());
        assert!(parse_labels(&[]).is_err());
        assert!(check_weight("leader weight", 0.0).is_err());
        assert!(check_weight("leader weight", f64::NAN).is_err());
        assert_eq!(check_weight("w", 2.5), Ok(2.5));
    }
}
