//! Lifecycle configurations: the S3 XML (as s3s parses it) checked the way
//! AWS checks it and turned into the stored `LifecycleConfiguration`, and
//! back for GetBucketLifecycleConfiguration.

use std::collections::BTreeSet;

use kura_proto::meta::{self as pb, LifecycleFilterForm as Form};
use s3s::dto::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleAndOperator, LifecycleRuleFilter,
    NoncurrentVersionExpiration, Tag,
};

use crate::error::{GwError, GwResult};
use crate::s3::common::timestamp;

/// Most rules in one configuration (AWS).
pub const MAX_RULES: usize = 1000;
/// Longest rule id (AWS).
const MAX_ID_LEN: usize = 255;
/// Most noncurrent versions a rule may keep (AWS).
const MAX_NEWER_NONCURRENT: i32 = 100;

fn malformed() -> GwError {
    GwError::MalformedXml(
        "The XML you provided was not well-formed or did not validate against our published schema"
            .into(),
    )
}

fn positive(v: Option<i32>, what: &str) -> GwResult<Option<i32>> {
    match v {
        Some(d) if d <= 0 => Err(GwError::InvalidArgument(format!(
            "'{what}' must be a positive integer"
        ))),
        v => Ok(v),
    }
}

/// Checks a PutBucketLifecycleConfiguration body and returns what is stored.
pub fn from_dto(
    cfg: Option<&BucketLifecycleConfiguration>,
) -> GwResult<pb::LifecycleConfiguration> {
    let cfg = cfg.ok_or_else(malformed)?;
    if cfg.rules.is_empty() {
        return Err(malformed());
    }
    if cfg.rules.len() > MAX_RULES {
        return Err(GwError::InvalidRequest(format!(
            "Configuration exceeds the maximum of {MAX_RULES} rules"
        )));
    }
    let mut ids = BTreeSet::new();
    let mut rules = Vec::with_capacity(cfg.rules.len());
    for r in cfg.rules.iter() {
        let rule = rule_from_dto(r)?;
        if !ids.insert(rule.id.clone()) {
            return Err(GwError::InvalidArgument(
                "Rule ID must be unique. Found same ID for more than one rule".into(),
            ));
        }
        rules.push(rule);
    }
    Ok(pb::LifecycleConfiguration { rules })
}

fn rule_from_dto(r: &LifecycleRule) -> GwResult<pb::LifecycleRule> {
    let id = match r.id.as_deref() {
        Some(id) if id.len() > MAX_ID_LEN => {
            return Err(GwError::InvalidArgument(
                "ID length should not exceed allowed limit of 255".into(),
            ))
        }
        Some(id) if !id.is_empty() => id.to_string(),
        // AWS names a rule sent without an id.
        _ => hex::encode(rand::random::<[u8; 16]>()),
    };
    let enabled = match r.status.as_str() {
        ExpirationStatus::ENABLED => true,
        ExpirationStatus::DISABLED => false,
        _ => return Err(malformed()),
    };
    // Kura has one tier: moving objects between storage classes is refused
    // outright rather than silently ignored.
    if r.transitions.as_ref().is_some_and(|t| !t.is_empty())
        || r.noncurrent_version_transitions
            .as_ref()
            .is_some_and(|t| !t.is_empty())
    {
        return Err(GwError::NotImplemented(
            "lifecycle transitions (Kura has no storage tiers)",
        ));
    }
    let filter = filter_from_dto(r.filter.as_ref(), r.prefix.as_deref())?;
    let mut rule = pb::LifecycleRule {
        id,
        enabled,
        filter: Some(filter),
        ..Default::default()
    };
    if let Some(e) = &r.expiration {
        expiration_from_dto(e, &mut rule)?;
    }
    if let Some(n) = &r.noncurrent_version_expiration {
        noncurrent_from_dto(n, &mut rule)?;
    }
    if let Some(a) = &r.abort_incomplete_multipart_upload {
        rule.abort_incomplete_days = Some(
            positive(
                a.days_after_initiation,
                "DaysAfterInitiation' for AbortIncompleteMultipartUpload action",
            )?
            .ok_or_else(malformed)?,
        );
    }
    let has_tags = rule.filter.as_ref().is_some_and(|f| !f.tags.is_empty());
    if has_tags && rule.abort_incomplete_days.is_some() {
        return Err(GwError::InvalidRequest(
            "AbortIncompleteMultipartUpload cannot be specified with Tags.".into(),
        ));
    }
    // AWS refuses this too: an upload in progress has no size yet.
    let has_sizes = rule
        .filter
        .as_ref()
        .is_some_and(|f| f.object_size_greater_than.is_some() || f.object_size_less_than.is_some());
    if has_sizes && rule.abort_incomplete_days.is_some() {
        return Err(GwError::InvalidRequest(
            "AbortIncompleteMultipartUpload cannot be specified with Object Size.".into(),
        ));
    }
    if has_tags && rule.expired_object_delete_marker == Some(true) {
        return Err(GwError::InvalidRequest(
            "ExpiredObjectDeleteMarker cannot be specified with Tags.".into(),
        ));
    }
    let acts = rule.expiration_days.is_some()
        || rule.expiration_date_unix_ms.is_some()
        || rule.expired_object_delete_marker.is_some()
        || rule.noncurrent_days.is_some()
        || rule.abort_incomplete_days.is_some();
    if !acts {
        return Err(GwError::InvalidRequest(
            "At least one action needs to be specified in a rule".into(),
        ));
    }
    Ok(rule)
}

fn expiration_from_dto(e: &LifecycleExpiration, rule: &mut pb::LifecycleRule) -> GwResult<()> {
    let given = [
        e.days.is_some(),
        e.date.is_some(),
        e.expired_object_delete_marker.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return Err(malformed());
    }
    rule.expiration_days = positive(e.days, "Days' for Expiration action")?;
    if let Some(d) = &e.date {
        let t: time::OffsetDateTime = d.clone().into();
        let t = t.to_offset(time::UtcOffset::UTC);
        if t.time() != time::Time::MIDNIGHT {
            return Err(GwError::InvalidArgument(
                "'Date' must be at midnight GMT".into(),
            ));
        }
        rule.expiration_date_unix_ms = Some(t.unix_timestamp() * 1000);
    }
    rule.expired_object_delete_marker = e.expired_object_delete_marker;
    Ok(())
}

fn noncurrent_from_dto(
    n: &NoncurrentVersionExpiration,
    rule: &mut pb::LifecycleRule,
) -> GwResult<()> {
    let days = positive(
        n.noncurrent_days,
        "NoncurrentDays' for NoncurrentVersionExpiration action",
    )?
    .ok_or_else(malformed)?;
    rule.noncurrent_days = Some(days);
    if let Some(k) = n.newer_noncurrent_versions {
        if !(1..=MAX_NEWER_NONCURRENT).contains(&k) {
            return Err(GwError::InvalidArgument(format!(
                "'NewerNoncurrentVersions' for NoncurrentVersionExpiration action must be a positive integer up to {MAX_NEWER_NONCURRENT}"
            )));
        }
        rule.newer_noncurrent_versions = Some(k);
    }
    Ok(())
}

fn tag_from_dto(t: &Tag) -> GwResult<pb::Tag> {
    let key = t.key.clone().unwrap_or_default();
    let value = t.value.clone().unwrap_or_default();
    if key.is_empty() || key.encode_utf16().count() > 128 {
        return Err(GwError::InvalidTag(
            "The TagKey you have provided is invalid".into(),
        ));
    }
    if value.encode_utf16().count() > 256 {
        return Err(GwError::InvalidTag(
            "The TagValue you have provided is too long, max 256".into(),
        ));
    }
    Ok(pb::Tag { key, value })
}

fn sizes(gt: Option<i64>, lt: Option<i64>) -> GwResult<()> {
    if gt.is_some_and(|v| v < 0) || lt.is_some_and(|v| v <= 0) {
        return Err(GwError::InvalidRequest(
            "Object size filters must be non-negative (ObjectSizeLessThan positive)".into(),
        ));
    }
    if let (Some(g), Some(l)) = (gt, lt) {
        if g >= l {
            return Err(GwError::InvalidRequest(
                "ObjectSizeGreaterThan must be less than ObjectSizeLessThan".into(),
            ));
        }
    }
    Ok(())
}

fn filter_from_dto(
    filter: Option<&LifecycleRuleFilter>,
    rule_prefix: Option<&str>,
) -> GwResult<pb::LifecycleFilter> {
    let f = match (filter, rule_prefix) {
        (Some(_), Some(_)) | (None, None) => return Err(malformed()),
        (None, Some(p)) => {
            return Ok(pb::LifecycleFilter {
                form: Form::RulePrefix as i32,
                prefix: p.to_string(),
                ..Default::default()
            })
        }
        (Some(f), None) => f,
    };
    let given = [
        f.prefix.is_some(),
        f.tag.is_some(),
        f.object_size_greater_than.is_some(),
        f.object_size_less_than.is_some(),
        f.and.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given > 1 {
        return Err(malformed());
    }
    let mut out = pb::LifecycleFilter::default();
    if given == 0 {
        out.form = Form::Empty as i32;
    } else if let Some(p) = &f.prefix {
        out.form = Form::Prefix as i32;
        out.prefix = p.clone();
    } else if let Some(t) = &f.tag {
        out.form = Form::Tag as i32;
        out.tags = vec![tag_from_dto(t)?];
    } else if let Some(v) = f.object_size_greater_than {
        sizes(Some(v), None)?;
        out.form = Form::SizeGreater as i32;
        out.object_size_greater_than = Some(v);
    } else if let Some(v) = f.object_size_less_than {
        sizes(None, Some(v))?;
        out.form = Form::SizeLess as i32;
        out.object_size_less_than = Some(v);
    } else if let Some(and) = &f.and {
        and_from_dto(and, &mut out)?;
    }
    Ok(out)
}

fn and_from_dto(and: &LifecycleRuleAndOperator, out: &mut pb::LifecycleFilter) -> GwResult<()> {
    out.form = Form::And as i32;
    out.prefix = and.prefix.clone().unwrap_or_default();
    let mut keys = BTreeSet::new();
    for t in and.tags.iter().flatten() {
        let tag = tag_from_dto(t)?;
        if !keys.insert(tag.key.clone()) {
            return Err(GwError::InvalidRequest(
                "Duplicate Tag Keys are not allowed.".into(),
            ));
        }
        out.tags.push(tag);
    }
    sizes(and.object_size_greater_than, and.object_size_less_than)?;
    out.object_size_greater_than = and.object_size_greater_than;
    out.object_size_less_than = and.object_size_less_than;
    Ok(())
}

/// The stored configuration as GetBucketLifecycleConfiguration answers it.
pub fn to_dto(cfg: &pb::LifecycleConfiguration) -> Vec<LifecycleRule> {
    cfg.rules.iter().map(rule_to_dto).collect()
}

fn rule_to_dto(r: &pb::LifecycleRule) -> LifecycleRule {
    let f = r.filter.clone().unwrap_or_default();
    let tag = |t: &pb::Tag| Tag {
        key: Some(t.key.clone()),
        value: Some(t.value.clone()),
    };
    let (filter, prefix) = match Form::try_from(f.form).unwrap_or(Form::Empty) {
        Form::RulePrefix => (None, Some(f.prefix.clone())),
        Form::Empty => (Some(LifecycleRuleFilter::default()), None),
        Form::Prefix => (
            Some(LifecycleRuleFilter {
                prefix: Some(f.prefix.clone()),
                ..Default::default()
            }),
            None,
        ),
        Form::Tag => (
            Some(LifecycleRuleFilter {
                tag: f.tags.first().map(tag),
                ..Default::default()
            }),
            None,
        ),
        Form::SizeGreater => (
            Some(LifecycleRuleFilter {
                object_size_greater_than: f.object_size_greater_than,
                ..Default::default()
            }),
            None,
        ),
        Form::SizeLess => (
            Some(LifecycleRuleFilter {
                object_size_less_than: f.object_size_less_than,
                ..Default::default()
            }),
            None,
        ),
        Form::And => (
            Some(LifecycleRuleFilter {
                and: Some(LifecycleRuleAndOperator {
                    prefix: Some(f.prefix.clone()),
                    tags: (!f.tags.is_empty()).then(|| f.tags.iter().map(tag).collect()),
                    object_size_greater_than: f.object_size_greater_than,
                    object_size_less_than: f.object_size_less_than,
                }),
                ..Default::default()
            }),
            None,
        ),
    };
    let expiration = (r.expiration_days.is_some()
        || r.expiration_date_unix_ms.is_some()
        || r.expired_object_delete_marker.is_some())
    .then(|| LifecycleExpiration {
        days: r.expiration_days,
        date: r.expiration_date_unix_ms.map(timestamp),
        expired_object_delete_marker: r.expired_object_delete_marker,
    });
    LifecycleRule {
        id: Some(r.id.clone()),
        status: ExpirationStatus::from_static(if r.enabled {
            ExpirationStatus::ENABLED
        } else {
            ExpirationStatus::DISABLED
        }),
        filter,
        prefix,
        expiration,
        noncurrent_version_expiration: r.noncurrent_days.map(|d| NoncurrentVersionExpiration {
            noncurrent_days: Some(d),
            newer_noncurrent_versions: r.newer_noncurrent_versions,
        }),
        abort_incomplete_multipart_upload: r.abort_incomplete_days.map(|d| {
            AbortIncompleteMultipartUpload {
                days_after_initiation: Some(d),
            }
        }),
        noncurrent_version_transitions: None,
        transitions: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(f: impl FnOnce(&mut LifecycleRule)) -> LifecycleRule {
        let mut r = LifecycleRule {
            id: Some("r1".into()),
            status: ExpirationStatus::from_static(ExpirationStatus::ENABLED),
            filter: Some(LifecycleRuleFilter {
                prefix: Some("logs/".into()),
                ..Default::default()
            }),
            expiration: Some(LifecycleExpiration {
                days: Some(3),
                ..Default::default()
            }),
            abort_incomplete_multipart_upload: None,
            noncurrent_version_expiration: None,
            noncurrent_version_transitions: None,
            prefix: None,
            transitions: None,
        };
        f(&mut r);
        r
    }

    fn cfg(rules: Vec<LifecycleRule>) -> BucketLifecycleConfiguration {
        BucketLifecycleConfiguration { rules }
    }

    fn check(rules: Vec<LifecycleRule>) -> GwResult<pb::LifecycleConfiguration> {
        from_dto(Some(&cfg(rules)))
    }

    #[test]
    fn a_valid_configuration_round_trips() {
        let rules = vec![
            rule(|_| {}),
            rule(|r| {
                r.id = Some("r2".into());
                r.filter = Some(LifecycleRuleFilter {
                    and: Some(LifecycleRuleAndOperator {
                        prefix: Some("a/".into()),
                        tags: Some(vec![Tag {
                            key: Some("k".into()),
                            value: Some("v".into()),
                        }]),
                        object_size_greater_than: Some(10),
                        object_size_less_than: Some(100),
                    }),
                    ..Default::default()
                });
                r.expiration = None;
                r.noncurrent_version_expiration = Some(NoncurrentVersionExpiration {
                    noncurrent_days: Some(1),
                    newer_noncurrent_versions: Some(2),
                });
            }),
            rule(|r| {
                r.id = Some("r3".into());
                r.filter = None;
                r.prefix = Some("tmp/".into());
                r.status = ExpirationStatus::from_static(ExpirationStatus::DISABLED);
                r.expiration = None;
                r.abort_incomplete_multipart_upload = Some(AbortIncompleteMultipartUpload {
                    days_after_initiation: Some(7),
                });
            }),
        ];
        let stored = check(rules.clone()).unwrap();
        assert_eq!(stored.rules.len(), 3);
        assert!(!stored.rules[2].enabled);
        let back = to_dto(&stored);
        assert_eq!(back, rules);
        // What Get answers is accepted by Put as is.
        assert_eq!(check(back).unwrap(), stored);
    }

    #[test]
    fn refusals_as_aws() {
        let bad = |r: LifecycleRule| check(vec![r]).unwrap_err();
        assert!(matches!(from_dto(None), Err(GwError::MalformedXml(_))));
        assert!(matches!(check(vec![]), Err(GwError::MalformedXml(_))));
        assert!(matches!(
            check(vec![rule(|_| {}), rule(|_| {})]),
            Err(GwError::InvalidArgument(m)) if m.contains("unique")
        ));
        assert!(matches!(
            bad(rule(|r| r.expiration.as_mut().unwrap().days = Some(0))),
            GwError::InvalidArgument(_)
        ));
        assert!(matches!(
            bad(rule(|r| r.status = ExpirationStatus::from_static("On"))),
            GwError::MalformedXml(_)
        ));
        assert!(matches!(
            bad(rule(|r| r.expiration = None)),
            GwError::InvalidRequest(m) if m.contains("At least one action")
        ));
        assert!(matches!(
            bad(rule(|r| r.prefix = Some("x".into()))),
            GwError::MalformedXml(_)
        ));
        assert!(matches!(
            bad(rule(|r| r.filter = None)),
            GwError::MalformedXml(_)
        ));
        assert!(matches!(
            bad(rule(|r| r.id = Some("x".repeat(256)))),
            GwError::InvalidArgument(_)
        ));
        // Days and Date together.
        assert!(matches!(
            bad(rule(
                |r| r.expiration.as_mut().unwrap().date = Some(timestamp(0))
            )),
            GwError::MalformedXml(_)
        ));
        // A date that is not midnight UTC.
        assert!(matches!(
            bad(rule(|r| {
                r.expiration = Some(LifecycleExpiration {
                    date: Some(timestamp(1_000)),
                    ..Default::default()
                })
            })),
            GwError::InvalidArgument(m) if m.contains("midnight")
        ));
        assert!(matches!(
            bad(rule(|r| r.transitions = Some(vec![Default::default()]))),
            GwError::NotImplemented(_)
        ));
        assert!(matches!(
            bad(rule(|r| {
                r.noncurrent_version_expiration = Some(NoncurrentVersionExpiration {
                    noncurrent_days: Some(1),
                    newer_noncurrent_versions: Some(101),
                })
            })),
            GwError::InvalidArgument(_)
        ));
        assert!(matches!(
            bad(rule(|r| {
                r.filter = Some(LifecycleRuleFilter {
                    tag: Some(Tag {
                        key: Some("k".into()),
                        value: Some("v".into()),
                    }),
                    ..Default::default()
                });
                r.abort_incomplete_multipart_upload = Some(AbortIncompleteMultipartUpload {
                    days_after_initiation: Some(1),
                });
            })),
            GwError::InvalidRequest(m) if m.contains("Tags")
        ));
        assert!(matches!(
            bad(rule(|r| {
                r.filter = Some(LifecycleRuleFilter {
                    object_size_greater_than: Some(10),
                    ..Default::default()
                });
                r.abort_incomplete_multipart_upload = Some(AbortIncompleteMultipartUpload {
                    days_after_initiation: Some(1),
                });
            })),
            GwError::InvalidRequest(m) if m.contains("Object Size")
        ));
        assert!(matches!(
            bad(rule(|r| {
                r.filter = Some(LifecycleRuleFilter {
                    object_size_greater_than: Some(5),
                    prefix: Some("a".into()),
                    ..Default::default()
                })
            })),
            GwError::MalformedXml(_)
        ));
        assert!(matches!(
            bad(rule(|r| {
                r.filter = Some(LifecycleRuleFilter {
                    and: Some(LifecycleRuleAndOperator {
                        object_size_greater_than: Some(100),
                        object_size_less_than: Some(10),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            })),
            GwError::InvalidRequest(_)
        ));
        let many: Vec<_> = (0..=MAX_RULES)
            .map(|i| rule(|r| r.id = Some(format!("r{i}"))))
            .collect();
        assert!(matches!(check(many), Err(GwError::InvalidRequest(_))));
    }

    #[test]
    fn rules_without_an_id_get_one() {
        let stored = check(vec![rule(|r| r.id = None), rule(|r| r.id = None)]).unwrap();
        assert_eq!(stored.rules[0].id.len(), 32);
        assert_ne!(stored.rules[0].id, stored.rules[1].id);
    }
}
