//! Which lifecycle action applies to what, as pure functions of the stored
//! rules, the record and the time (no I/O, unit-tested here).
//!
//! Ages are counted in "days" of `day_ms` (86,400,000 in production; `kura
//! dev --lifecycle-day-secs` shortens it for tests) and, as AWS does, an
//! action falls due at the first day boundary (midnight UTC for real days)
//! at or after `since + days`.

use kura_proto::meta::{LifecycleConfiguration, LifecycleFilter, LifecycleRule, Tag};

/// The worker's notion of now and of a day.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now_ms: i64,
    pub day_ms: i64,
}

impl Clock {
    /// Whether `days` days since `since_ms` have passed (rounded up to a day boundary).
    pub fn reached(&self, since_ms: i64, days: i32) -> bool {
        self.now_ms >= due(since_ms, days, self.day_ms)
    }
}

/// When an age of `days` counted from `since_ms` falls due: the first day
/// boundary at or after `since + days` (AWS: the next midnight UTC).
pub fn due(since_ms: i64, days: i32, day_ms: i64) -> i64 {
    let day = day_ms.max(1);
    let t = since_ms.saturating_add(i64::from(days).saturating_mul(day));
    let rem = t.rem_euclid(day);
    if rem == 0 {
        t
    } else {
        t.saturating_add(day - rem)
    }
}

/// What a rule's filter sees of a version.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub key: &'a str,
    pub size: u64,
    pub tags: &'a [Tag],
    /// Delete markers have no data: only the prefix (and no tag condition) applies.
    pub delete_marker: bool,
}

/// Whether `filter` selects `s`: the prefix, every tag (key and value), and the sizes.
pub fn matches(filter: Option<&LifecycleFilter>, s: &Subject) -> bool {
    let Some(f) = filter else {
        return true;
    };
    if !s.key.starts_with(f.prefix.as_str()) {
        return false;
    }
    if s.delete_marker {
        return f.tags.is_empty();
    }
    let tags_ok = f.tags.iter().all(|want| {
        s.tags
            .iter()
            .any(|t| t.key == want.key && t.value == want.value)
    });
    let size = i64::try_from(s.size).unwrap_or(i64::MAX);
    tags_ok
        && f.object_size_greater_than.is_none_or(|g| size > g)
        && f.object_size_less_than.is_none_or(|l| size < l)
}

fn enabled(cfg: &LifecycleConfiguration) -> impl Iterator<Item = &LifecycleRule> {
    cfg.rules.iter().filter(|r| r.enabled)
}

/// Whether any rule is enabled (only such buckets are scanned).
pub fn any_enabled(cfg: &LifecycleConfiguration) -> bool {
    enabled(cfg).next().is_some()
}

/// Whether the current version (not a delete marker) `s`, written at
/// `last_modified_ms`, has expired (Expiration Days or Date).
pub fn current_expires(
    cfg: &LifecycleConfiguration,
    s: &Subject,
    last_modified_ms: i64,
    clock: &Clock,
) -> bool {
    enabled(cfg).any(|r| {
        let by_days = r
            .expiration_days
            .is_some_and(|d| clock.reached(last_modified_ms, d));
        let by_date = r
            .expiration_date_unix_ms
            .is_some_and(|at| clock.now_ms >= at);
        (by_days || by_date) && matches(r.filter.as_ref(), s)
    })
}

/// Whether a noncurrent version expires: noncurrent since `since_ms` (when
/// the next newer version was written) and `rank`-th newest noncurrent
/// version of its key (1 = the newest), so the newest
/// `NewerNoncurrentVersions` are kept.
pub fn noncurrent_expires(
    cfg: &LifecycleConfiguration,
    s: &Subject,
    since_ms: i64,
    rank: usize,
    clock: &Clock,
) -> bool {
    enabled(cfg).any(|r| {
        let Some(days) = r.noncurrent_days else {
            return false;
        };
        let keep = r.newer_noncurrent_versions.unwrap_or(0).max(0) as usize;
        rank > keep && clock.reached(since_ms, days) && matches(r.filter.as_ref(), s)
    })
}

/// Whether a delete marker that is its key's only version is removed
/// (Expiration ExpiredObjectDeleteMarker).
pub fn expired_marker_removed(cfg: &LifecycleConfiguration, key: &str) -> bool {
    let s = Subject {
        key,
        size: 0,
        tags: &[],
        delete_marker: true,
    };
    enabled(cfg)
        .any(|r| r.expired_object_delete_marker == Some(true) && matches(r.filter.as_ref(), &s))
}

/// Whether an upload initiated at `initiated_ms` is aborted
/// (AbortIncompleteMultipartUpload; only the prefix applies to uploads:
/// tags and sizes are refused with it, and a rule stored with a size filter
/// before that check aborts nothing, as an upload has no size yet).
pub fn upload_aborted(
    cfg: &LifecycleConfiguration,
    key: &str,
    initiated_ms: i64,
    clock: &Clock,
) -> bool {
    enabled(cfg).any(|r| {
        let prefix = r.filter.as_ref().map_or("", |f| f.prefix.as_str());
        let sized = r.filter.as_ref().is_some_and(|f| {
            f.object_size_greater_than.is_some() || f.object_size_less_than.is_some()
        });
        !sized
            && r.abort_incomplete_days
                .is_some_and(|d| clock.reached(initiated_ms, d))
            && key.starts_with(prefix)
    })
}

/// Whether any enabled rule acts on noncurrent versions (else a pass reads
/// only each object's latest version: `first_per_object`).
pub fn touches_noncurrent(cfg: &LifecycleConfiguration) -> bool {
    enabled(cfg).any(|r| r.noncurrent_days.is_some())
}

/// Whether any enabled rule aborts uploads (else cf MPU is not scanned).
pub fn aborts_uploads(cfg: &LifecycleConfiguration) -> bool {
    enabled(cfg).any(|r| r.abort_incomplete_days.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_proto::meta::LifecycleFilterForm;

    const DAY: i64 = 1000;

    fn clock(now_ms: i64) -> Clock {
        Clock {
            now_ms,
            day_ms: DAY,
        }
    }

    fn tag(k: &str, v: &str) -> Tag {
        Tag {
            key: k.into(),
            value: v.into(),
        }
    }

    fn subject<'a>(key: &'a str, size: u64, tags: &'a [Tag]) -> Subject<'a> {
        Subject {
            key,
            size,
            tags,
            delete_marker: false,
        }
    }

    fn cfg(rules: Vec<LifecycleRule>) -> LifecycleConfiguration {
        LifecycleConfiguration { rules }
    }

    fn prefix(p: &str) -> Option<LifecycleFilter> {
        Some(LifecycleFilter {
            form: LifecycleFilterForm::Prefix as i32,
            prefix: p.into(),
            ..Default::default()
        })
    }

    #[test]
    fn due_rounds_up_to_a_day_boundary() {
        assert_eq!(due(0, 1, DAY), DAY);
        assert_eq!(due(1, 1, DAY), 2 * DAY);
        assert_eq!(due(999, 2, DAY), 3 * DAY);
        assert_eq!(due(1000, 2, DAY), 3 * DAY);
        // Real days: the midnight UTC after creation + days.
        let d = 86_400_000;
        assert_eq!(due(d * 100 + 5, 1, d), d * 102);
    }

    #[test]
    fn filters() {
        let tags = [tag("class", "tmp"), tag("team", "a")];
        let s = subject("logs/a.txt", 100, &tags);
        assert!(matches(None, &s));
        assert!(matches(prefix("logs/").as_ref(), &s));
        assert!(!matches(prefix("data/").as_ref(), &s));
        let and = |p: &str, t: Vec<Tag>, gt: Option<i64>, lt: Option<i64>| {
            Some(LifecycleFilter {
                form: LifecycleFilterForm::And as i32,
                prefix: p.into(),
                tags: t,
                object_size_greater_than: gt,
                object_size_less_than: lt,
            })
        };
        assert!(matches(
            and("logs/", vec![tag("class", "tmp")], None, None).as_ref(),
            &s
        ));
        assert!(!matches(
            and("logs/", vec![tag("class", "keep")], None, None).as_ref(),
            &s
        ));
        assert!(!matches(
            and("", vec![tag("other", "tmp")], None, None).as_ref(),
            &s
        ));
        assert!(matches(and("", vec![], Some(99), Some(101)).as_ref(), &s));
        assert!(!matches(and("", vec![], Some(100), None).as_ref(), &s));
        assert!(!matches(and("", vec![], None, Some(100)).as_ref(), &s));
        // A delete marker: prefix only, never a tag filter.
        let m = Subject {
            delete_marker: true,
            ..subject("logs/a.txt", 0, &[])
        };
        assert!(matches(and("logs/", vec![], Some(10), None).as_ref(), &m));
        assert!(!matches(
            and("logs/", vec![tag("class", "tmp")], None, None).as_ref(),
            &m
        ));
    }

    #[test]
    fn current_expiration_by_days_and_date() {
        let c = cfg(vec![LifecycleRule {
            id: "d".into(),
            enabled: true,
            filter: prefix("a/"),
            expiration_days: Some(2),
            ..Default::default()
        }]);
        let s = subject("a/x", 1, &[]);
        assert!(!current_expires(&c, &s, 500, &clock(2_999)));
        assert!(current_expires(&c, &s, 500, &clock(3_000)));
        assert!(!current_expires(
            &c,
            &subject("b/x", 1, &[]),
            0,
            &clock(1 << 40)
        ));
        let mut off = c.clone();
        off.rules[0].enabled = false;
        assert!(!current_expires(&off, &s, 0, &clock(1 << 40)));
        assert!(!any_enabled(&off));
        let date = cfg(vec![LifecycleRule {
            id: "t".into(),
            enabled: true,
            filter: prefix(""),
            expiration_date_unix_ms: Some(10_000),
            ..Default::default()
        }]);
        assert!(!current_expires(&date, &s, 9_999, &clock(9_999)));
        // A date applies to every matching object, however young.
        assert!(current_expires(&date, &s, 10_500, &clock(10_500)));
    }

    #[test]
    fn noncurrent_versions_keep_the_newest() {
        let c = cfg(vec![LifecycleRule {
            id: "n".into(),
            enabled: true,
            filter: prefix(""),
            noncurrent_days: Some(1),
            newer_noncurrent_versions: Some(2),
            ..Default::default()
        }]);
        let s = subject("k", 1, &[]);
        let now = clock(5_000);
        assert!(!noncurrent_expires(&c, &s, 0, 1, &now));
        assert!(!noncurrent_expires(&c, &s, 0, 2, &now));
        assert!(noncurrent_expires(&c, &s, 0, 3, &now));
        // Noncurrent for less than a day.
        assert!(!noncurrent_expires(&c, &s, 4_500, 3, &now));
    }

    #[test]
    fn markers_and_uploads() {
        let c = cfg(vec![LifecycleRule {
            id: "m".into(),
            enabled: true,
            filter: prefix("a/"),
            expired_object_delete_marker: Some(true),
            abort_incomplete_days: Some(1),
            ..Default::default()
        }]);
        assert!(expired_marker_removed(&c, "a/k"));
        assert!(!expired_marker_removed(&c, "b/k"));
        assert!(aborts_uploads(&c));
        assert!(upload_aborted(&c, "a/k", 0, &clock(1_000)));
        assert!(!upload_aborted(&c, "a/k", 1, &clock(1_000)));
        assert!(!upload_aborted(&c, "b/k", 0, &clock(1 << 40)));
        let mut f = c.clone();
        f.rules[0].expired_object_delete_marker = Some(false);
        f.rules[0].abort_incomplete_days = None;
        assert!(!expired_marker_removed(&f, "a/k"));
        assert!(!aborts_uploads(&f));
        // A size filter stored before it was refused with aborts: no abort.
        let mut sized = c.clone();
        if let Some(filter) = sized.rules[0].filter.as_mut() {
            filter.object_size_greater_than = Some(1);
        }
        assert!(!upload_aborted(&sized, "a/k", 0, &clock(1 << 40)));
        // Only current-version rules: passes read one record per key.
        assert!(!touches_noncurrent(&c));
        let mut nc = c.clone();
        nc.rules[0].noncurrent_days = Some(1);
        assert!(touches_noncurrent(&nc));
        nc.rules[0].enabled = false;
        assert!(!touches_noncurrent(&nc));
    }
}
