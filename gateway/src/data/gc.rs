//! Reclaiming bodies on data nodes.
//!
//! A body that was referenced by metadata is released in two steps: the
//! metadata batch that drops the reference also writes a `GcRecord` (cf GC,
//! same object prefix, so the same region); after the commit the gateway
//! deletes the fragments best-effort and then removes the GC record. If the
//! gateway dies in between, or a node did not answer, the GC record remains
//! and the sweeper (`run_sweeper`, every gateway) finishes the job later.
//!
//! A body that was never referenced (a failed PUT) is "discarded": its
//! fragments are deleted best-effort without any record; anything missed is
//! found by the orphan scrubber through the self-describing fragment headers.

use std::sync::Arc;

use kura_metashard::client::{Cf, Mutation};
use kura_metashard::keys;
use kura_proto::datanode::FragmentId;
use kura_proto::meta::{DataLocation, GcRecord, ObjectRecord, PartRecord};

use crate::context::Ctx;
use crate::meta::{self, now_ms};

/// Every stored (non-inline) body an object record references.
pub fn object_locations(rec: &ObjectRecord) -> Vec<DataLocation> {
    rec.parts
        .iter()
        .filter_map(|p| p.location.clone())
        .collect()
}

pub fn part_locations(rec: &PartRecord) -> Vec<DataLocation> {
    rec.location.iter().cloned().collect()
}

/// The GC records to write in the batch that drops the references to `locs`.
pub fn gc_mutations(bucket_id: u64, key: &str, locs: &[DataLocation]) -> Vec<Mutation> {
    let now = now_ms();
    locs.iter()
        .map(|l| {
            let rec = GcRecord {
                location: Some(l.clone()),
                enqueued_unix_ms: now,
            };
            meta::put_record(
                Cf::Gc,
                keys::gc_key(bucket_id, key.as_bytes(), &l.data_id),
                &rec,
            )
        })
        .collect()
}

/// After a committed batch wrote GC records for `locs`: delete the fragments,
/// then the GC records of bodies whose fragments are all gone.
pub fn spawn_reclaim(ctx: Arc<Ctx>, bucket_id: u64, key: String, locs: Vec<DataLocation>) {
    if locs.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for loc in locs {
            if delete_fragments(&ctx, &loc).await {
                let gk = keys::gc_key(bucket_id, key.as_bytes(), &loc.data_id);
                if let Err(e) = ctx
                    .meta
                    .batch(Vec::new(), vec![meta::delete(Cf::Gc, gk)])
                    .await
                {
                    tracing::debug!(error = %e, "could not remove GC record; the GC worker will");
                }
            }
        }
    });
}

/// Deletes the fragments of bodies no metadata references.
pub fn spawn_discard(ctx: Arc<Ctx>, locs: Vec<DataLocation>) {
    if locs.is_empty() {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        for loc in locs {
            delete_fragments(&ctx, &loc).await;
        }
    });
}

const SWEEP_PAGE: usize = 256;

/// Sweeps the GC queue every `interval` until `shutdown`.
pub async fn run_sweeper(
    ctx: Arc<Ctx>,
    interval: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        // Tests panic here to check the loop is supervised (restarted, counted).
        fail::fail_point!("gateway::gc_sweep");
        // Younger records are still being reclaimed by the request that wrote them.
        match sweep(&ctx, interval * 2).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(reclaimed = n, "GC sweep reclaimed bodies"),
            Err(e) => tracing::warn!(error = %e, "GC sweep failed"),
        }
    }
}

/// One pass over the GC queue: deletes the fragments of every record older
/// than `grace`, then the record (only if unchanged). Returns the bodies
/// reclaimed; the ones a node could not answer for stay queued
/// (`kura_gateway_gc_backlog`).
pub async fn sweep(ctx: &Arc<Ctx>, grace: std::time::Duration) -> crate::error::GwResult<usize> {
    let (start, end) = (vec![keys::FAMILY_OBJECT], vec![keys::FAMILY_OBJECT + 1]);
    let cutoff = now_ms() - grace.as_millis() as i64;
    let (mut reclaimed, mut backlog) = (0usize, 0usize);
    let mut pages = ctx.meta.pages(Cf::Gc, start, end, SWEEP_PAGE);
    while let Some(page) = pages.next_page().await? {
        for kv in &page {
            let Ok(rec) = keys::decode_value::<GcRecord>(&kv.value) else {
                tracing::warn!("undecodable GC record left in place");
                continue;
            };
            if rec.enqueued_unix_ms > cutoff {
                continue;
            }
            let Some(loc) = rec.location.as_ref() else {
                continue;
            };
            if !delete_fragments(ctx, loc).await {
                backlog += 1;
                continue;
            }
            let done = ctx
                .meta
                .batch(
                    vec![meta::value_equals(
                        Cf::Gc,
                        kv.key.to_vec(),
                        kv.value.clone(),
                    )],
                    vec![meta::delete(Cf::Gc, kv.key.to_vec())],
                )
                .await;
            if done.is_ok() {
                reclaimed += 1;
            }
        }
    }
    crate::metrics::set_gc_backlog(backlog);
    crate::metrics::gc_reclaimed(reclaimed);
    Ok(reclaimed)
}

/// Deletes every fragment of `loc`. True when every node answered.
async fn delete_fragments(ctx: &Ctx, loc: &DataLocation) -> bool {
    let view = match ctx.placement.get().await {
        Ok(v) => v,
        Err(_) => return false,
    };
    let Some(group) = view.group_of(loc) else {
        return false;
    };
    let width = (loc.data_shards + loc.parity_shards) as usize;
    let deletes = (0..width).map(|shard| {
        let addr = group.nodes.get(shard).cloned().flatten();
        let id = FragmentId {
            data_id: loc.data_id.clone(),
            shard: shard as u32,
        };
        async move {
            let Some(addr) = addr else { return false };
            match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                ctx.data.delete_fragment(&addr, id),
            )
            .await
            {
                Ok(Ok(_existed)) => true,
                Ok(Err(kura_datanode::client::DataNodeError::NotFound)) => true,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, shard, "fragment delete failed");
                    false
                }
                Err(_) => false,
            }
        }
    });
    futures::future::join_all(deletes)
        .await
        .into_iter()
        .all(|ok| ok)
}
