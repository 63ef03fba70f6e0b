//! The metadata state machine: checks and executes one committed `BatchRequest`.
//!
//! Checks that run both at propose time (fail fast) and at apply time (the
//! authoritative one, against the state the entry is applied to):
//! epoch (`version` and `conf_ver` must equal the region's) and key range
//! (every key inside the region). Then the conditions are evaluated against the
//! current data, and if all hold every mutation goes into the caller's write
//! batch, which also carries the new applied index (one atomic write).
//! Admin commands are in `split` and `merge`; the entry format in `cmd`.

pub mod cmd;
pub mod merge;
pub mod split;

use kura_pd_client::client::region_contains;
use kura_proto::common::{Region, RegionEpoch, RegionError};
use kura_proto::metashard::{condition, mutation, BatchRequest, Cf};

use crate::engine::{Engine, EngineError, WriteBatch};
use crate::errors;

/// What applying a batch did.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyOutcome {
    /// All conditions held; every mutation is in the write batch.
    Applied,
    /// Condition `index` failed; nothing was written.
    ConditionFailed(u32),
    /// The request was rejected (stale epoch, key outside region, malformed);
    /// nothing was written.
    Rejected(Box<RegionError>),
    /// A split was applied: the parent's new range and the new region.
    Split(Box<split::SplitRegions>),
    /// A merge step or conf change was applied: the region as it is now.
    RegionChanged(Box<Region>),
}

/// `Ok` when `epoch` (if given) equals the region's epoch.
pub fn check_epoch(region: &Region, epoch: Option<&RegionEpoch>) -> Result<(), RegionError> {
    let Some(epoch) = epoch else { return Ok(()) };
    let cur = region.epoch.unwrap_or_default();
    if epoch.version != cur.version || epoch.conf_ver != cur.conf_ver {
        return Err(errors::epoch_not_match(region));
    }
    Ok(())
}

/// `Ok` when every key lies in the region.
pub fn check_keys<'a>(
    region: &Region,
    keys: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), RegionError> {
    for k in keys {
        if !region_contains(region, k) {
            return Err(errors::key_not_in_region(k, region));
        }
    }
    Ok(())
}

/// Epoch and key-range checks of a batch.
pub fn check_batch(region: &Region, req: &BatchRequest) -> Result<(), RegionError> {
    check_epoch(region, req.header.as_ref().and_then(|h| h.epoch.as_ref()))?;
    let keys = req
        .conditions
        .iter()
        .map(|c| c.key.as_ref())
        .chain(req.mutations.iter().map(|m| m.key.as_ref()));
    check_keys(region, keys)
}

/// Why a request is malformed (unknown enum values), if it is.
pub fn validate_batch(req: &BatchRequest) -> Result<(), String> {
    for (i, c) in req.conditions.iter().enumerate() {
        Cf::try_from(c.cf).map_err(|_| format!("condition {i}: unknown cf {}", c.cf))?;
        condition::Kind::try_from(c.kind)
            .map_err(|_| format!("condition {i}: unknown kind {}", c.kind))?;
    }
    for (i, m) in req.mutations.iter().enumerate() {
        Cf::try_from(m.cf).map_err(|_| format!("mutation {i}: unknown cf {}", m.cf))?;
        mutation::Op::try_from(m.op).map_err(|_| format!("mutation {i}: unknown op {}", m.op))?;
    }
    Ok(())
}

/// A batch's write flow: (mutations, key + value bytes of its puts), any cf.
pub fn write_flow(req: &BatchRequest) -> (u64, u64) {
    let bytes = req
        .mutations
        .iter()
        .filter(|m| m.op == mutation::Op::Put as i32)
        .map(|m| (m.key.len() + m.value.len()) as u64)
        .sum();
    (req.mutations.len() as u64, bytes)
}

/// Puts into cf `meta` of a batch: (count, key + value bytes), for the
/// split checker's running estimate.
pub fn meta_puts(req: &BatchRequest) -> (u64, u64) {
    req.mutations
        .iter()
        .filter(|m| m.op == mutation::Op::Put as i32 && m.cf == Cf::Meta as i32)
        .fold((0, 0), |(n, b), m| {
            (n + 1, b + (m.key.len() + m.value.len()) as u64)
        })
}

/// Checks and executes `req` against `engine` as of now plus what `wb`
/// holds, putting its writes into `wb`.
pub fn exec_batch(
    engine: &Engine,
    region: &Region,
    req: &BatchRequest,
    wb: &mut WriteBatch,
) -> Result<ApplyOutcome, EngineError> {
    if let Err(e) = check_batch(region, req) {
        return Ok(ApplyOutcome::Rejected(Box::new(e)));
    }
    if let Err(msg) = validate_batch(req) {
        return Ok(ApplyOutcome::Rejected(Box::new(errors::server_busy(
            &format!("malformed batch: {msg}"),
        ))));
    }
    for (i, c) in req.conditions.iter().enumerate() {
        let cf = Cf::try_from(c.cf).expect("validated above");
        // An earlier entry in the same batch may have written the key.
        let current = match wb.pending_data(cf, &c.key) {
            Some(v) => v.map(<[u8]>::to_vec),
            None => engine.get_data(cf, &c.key)?,
        };
        let holds = match condition::Kind::try_from(c.kind).expect("validated above") {
            condition::Kind::NotExists => current.is_none(),
            condition::Kind::Exists => current.is_some(),
            condition::Kind::ValueEquals => current.as_deref() == Some(c.value.as_ref()),
        };
        if !holds {
            return Ok(ApplyOutcome::ConditionFailed(i as u32));
        }
    }
    for m in &req.mutations {
        let cf = Cf::try_from(m.cf).expect("validated above");
        match mutation::Op::try_from(m.op).expect("validated above") {
            mutation::Op::Put => wb.put_data(cf, &m.key, &m.value),
            mutation::Op::Delete => wb.delete_data(cf, &m.key),
        }
    }
    Ok(ApplyOutcome::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_proto::metashard::{Condition, Mutation, RequestHeader};

    fn region() -> Region {
        Region {
            id: 1,
            start_key: b"b".to_vec().into(),
            end_key: b"m".to_vec().into(),
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 2,
            }),
            peers: vec![],
        }
    }

    fn put(k: &str, v: &str) -> Mutation {
        Mutation {
            op: mutation::Op::Put as i32,
            cf: Cf::Meta as i32,
            key: k.as_bytes().to_vec().into(),
            value: v.as_bytes().to_vec().into(),
        }
    }

    fn cond(kind: condition::Kind, k: &str, v: &str) -> Condition {
        Condition {
            kind: kind as i32,
            cf: Cf::Meta as i32,
            key: k.as_bytes().to_vec().into(),
            value: v.as_bytes().to_vec().into(),
        }
    }

    fn req(conditions: Vec<Condition>, mutations: Vec<Mutation>) -> BatchRequest {
        BatchRequest {
            header: Some(RequestHeader {
                region_id: 1,
                epoch: Some(RegionEpoch {
                    conf_ver: 1,
                    version: 2,
                }),
            }),
            conditions,
            mutations,
        }
    }

    fn run(e: &Engine, r: &BatchRequest) -> ApplyOutcome {
        let mut wb = e.batch();
        let out = exec_batch(e, &region(), r, &mut wb).unwrap();
        e.write(wb, false).unwrap();
        out
    }

    #[test]
    fn conditions_gate_mutations() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        use condition::Kind::*;
        assert_eq!(
            run(
                &e,
                &req(vec![cond(NotExists, "c", "")], vec![put("c", "1")])
            ),
            ApplyOutcome::Applied
        );
        assert_eq!(
            e.get_data(Cf::Meta, b"c").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        // Second create fails on condition 0; the other mutation is not written.
        assert_eq!(
            run(
                &e,
                &req(
                    vec![cond(NotExists, "c", "")],
                    vec![put("c", "2"), put("d", "x")]
                )
            ),
            ApplyOutcome::ConditionFailed(0)
        );
        assert_eq!(e.get_data(Cf::Meta, b"d").unwrap(), None);
        assert_eq!(
            run(
                &e,
                &req(
                    vec![cond(Exists, "c", ""), cond(ValueEquals, "c", "9")],
                    vec![put("c", "3")]
                )
            ),
            ApplyOutcome::ConditionFailed(1)
        );
        assert_eq!(
            run(
                &e,
                &req(vec![cond(ValueEquals, "c", "1")], vec![put("c", "3")])
            ),
            ApplyOutcome::Applied
        );
        assert_eq!(
            e.get_data(Cf::Meta, b"c").unwrap().as_deref(),
            Some(&b"3"[..])
        );
        let del = Mutation {
            op: mutation::Op::Delete as i32,
            cf: Cf::Meta as i32,
            key: b"c".to_vec().into(),
            value: Default::default(),
        };
        assert_eq!(
            run(&e, &req(vec![cond(Exists, "c", "")], vec![del])),
            ApplyOutcome::Applied
        );
        assert_eq!(e.get_data(Cf::Meta, b"c").unwrap(), None);
        // Column families are separate keyspaces.
        let gc_put = Mutation {
            cf: Cf::Gc as i32,
            ..put("c", "g")
        };
        assert_eq!(
            run(&e, &req(vec![cond(NotExists, "c", "")], vec![gc_put])),
            ApplyOutcome::Applied
        );
        assert_eq!(e.get_data(Cf::Meta, b"c").unwrap(), None);
        assert!(e.get_data(Cf::Gc, b"c").unwrap().is_some());
    }

    /// Entries applied into one batch (one write for many) see each
    /// other's writes, exactly as if each were written on its own.
    #[test]
    fn entries_in_one_batch_see_the_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        use condition::Kind::*;
        let del = Mutation {
            op: mutation::Op::Delete as i32,
            ..put("c", "")
        };
        let mut wb = e.apply_batch();
        let mut exec = |r: BatchRequest| exec_batch(&e, &region(), &r, &mut wb).unwrap();
        let create = || req(vec![cond(NotExists, "c", "")], vec![put("c", "1")]);
        assert_eq!(exec(create()), ApplyOutcome::Applied);
        // The engine has nothing yet; the batch has "c".
        assert_eq!(exec(create()), ApplyOutcome::ConditionFailed(0));
        assert_eq!(
            exec(req(vec![cond(ValueEquals, "c", "1")], vec![put("c", "2")])),
            ApplyOutcome::Applied
        );
        assert_eq!(
            exec(req(vec![cond(ValueEquals, "c", "1")], vec![put("c", "3")])),
            ApplyOutcome::ConditionFailed(0)
        );
        assert_eq!(
            exec(req(vec![cond(Exists, "c", "")], vec![del])),
            ApplyOutcome::Applied
        );
        assert_eq!(
            exec(req(vec![cond(Exists, "c", "")], vec![])),
            ApplyOutcome::ConditionFailed(0)
        );
        assert_eq!(exec(create()), ApplyOutcome::Applied);
        assert_eq!(
            e.get_data(Cf::Meta, b"c").unwrap(),
            None,
            "nothing written yet"
        );
        e.write(wb, false).unwrap();
        assert_eq!(
            e.get_data(Cf::Meta, b"c").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        // A plain batch (a snapshot's data, say) does not keep a copy.
        let mut plain = e.batch();
        plain.put_data(Cf::Meta, b"d", b"1");
        assert_eq!(plain.pending_data(Cf::Meta, b"d"), None);
    }

    #[test]
    fn epoch_and_range_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        let mut stale = req(vec![], vec![put("c", "1")]);
        stale.header.as_mut().unwrap().epoch = Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        });
        match run(&e, &stale) {
            ApplyOutcome::Rejected(err) => {
                assert_eq!(err.epoch_not_match.unwrap().current_regions, vec![region()])
            }
            other => panic!("{other:?}"),
        }
        for k in ["a", "m", "z"] {
            match run(&e, &req(vec![], vec![put("c", "1"), put(k, "1")])) {
                ApplyOutcome::Rejected(err) => {
                    assert_eq!(err.key_not_in_region.unwrap().key.as_ref(), k.as_bytes())
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(e.get_data(Cf::Meta, b"c").unwrap(), None);
        let bad = Mutation {
            cf: 17,
            ..put("c", "1")
        };
        assert!(matches!(
            run(&e, &req(vec![], vec![bad])),
            ApplyOutcome::Rejected(_)
        ));
        // An unbounded region accepts any key at or after its start.
        let mut open = region();
        open.end_key = Default::default();
        assert!(check_keys(&open, [&b"zzzz"[..]]).is_ok());
        assert!(check_keys(&open, [&b"a"[..]]).is_err());
    }
}
