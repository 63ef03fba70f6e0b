//! The lifecycle worker: every gateway runs one; per metadata region only
//! the holder of the region's lease (`lease.rs`) scans it and acts.
//!
//! A round (every tick): read the bucket records with enabled rules, ask PD
//! for the regions holding their objects, and for each region whose pass is
//! due (or half done and unowned) take its lease and run the pass:
//! 1. versions (cf META) of each such bucket in the region, key by key:
//!    current-version expiration, noncurrent-version expiration and
//!    expired-delete-marker removal (`rules.rs` decides, `act.rs` acts);
//! 2. multipart uploads (cf MPU) of buckets with an abort rule;
//! 3. keys under bucket ids that no bucket record has any more (a write or
//!    DeleteBucket cut short by a crash, docs/decisions/0037): deleted, so
//!    their bodies are reclaimed.
//!
//! A round also finishes DeleteBuckets whose gateway died after marking
//! the record, and deletes the leases of regions merged away.
//!
//! Progress (the first key not yet done) is saved in the lease with every
//! renewal, so a pass whose gateway died is resumed there by whoever takes
//! the lease next. Actions are paced (`--lifecycle-ops-per-sec`), and so
//! are the keys a pass reads ([`SCAN_PER_ACTION`] times that rate), so a
//! huge bucket cannot hammer its regions.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kura_metashard::client::Cf;
use kura_metashard::keys;
use kura_proto::common::Region;
use kura_proto::meta::{
    BucketRecord, LifecycleConfiguration, LifecycleLease, MultipartUploadRecord, ObjectRecord,
};
use tokio::time::Instant;

use super::act::{self, Done};
use super::lease::{self, Lease, Owner, PHASE_DEAD, PHASE_UPLOADS, PHASE_VERSIONS};
use super::metrics as m;
use super::rules::{self, Clock, Subject};
use super::Settings;
use crate::context::Ctx;
use crate::error::{GwError, GwResult};
use crate::meta::{now_ms, Versioned};
use crate::s3::versioning::{Stored, Versioning};
use crate::usage::Scope;

/// Records read per metadata scan.
const PAGE: usize = 256;
/// Regions asked of PD per call.
const REGION_PAGE: u32 = 256;
/// Keys a pass may read per action it may take (`--lifecycle-ops-per-sec`
/// 100 → 10,000 keys a second per gateway).
const SCAN_PER_ACTION: u32 = 100;

/// Runs rounds until `shutdown`.
pub async fn run(
    ctx: Arc<Ctx>,
    settings: Settings,
    owner: Owner,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    m::init();
    // Look for due or orphaned passes at least once a minute, whatever the interval.
    let tick = settings
        .interval
        .clamp(Duration::from_millis(500), Duration::from_secs(60));
    let mut worker = Worker {
        ctx,
        pacer: Pacer::new(settings.ops_per_sec),
        scan_pacer: Pacer::new(settings.ops_per_sec.saturating_mul(SCAN_PER_ACTION)),
        settings,
        owner,
        shutdown: shutdown.clone(),
        stopped_at: None,
        live: HashSet::new(),
        dead: HashSet::new(),
        leases_checked: None,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if let Err(e) = worker.round().await {
            m::ERRORS.inc();
            tracing::warn!(error = %e, "lifecycle round failed");
        }
    }
}

/// Spaces actions at most `per_sec` a second (0: unpaced).
struct Pacer {
    gap: Option<Duration>,
    next: Instant,
}

impl Pacer {
    fn new(per_sec: u32) -> Pacer {
        Pacer {
            gap: (per_sec > 0).then(|| Duration::from_secs(1) / per_sec),
            next: Instant::now(),
        }
    }

    async fn wait(&mut self) {
        self.take(1).await
    }

    /// Waits for the budget of the last take, then books `n` units.
    async fn take(&mut self, n: u32) {
        let Some(gap) = self.gap else { return };
        if self.next > Instant::now() {
            tokio::time::sleep_until(self.next).await;
        }
        self.next = self.next.max(Instant::now()) + gap * n;
    }
}

/// A bucket with enabled rules, as last read.
#[derive(Clone)]
struct Bucket {
    key: Vec<u8>,
    record: BucketRecord,
    cfg: LifecycleConfiguration,
}

impl Bucket {
    fn of(key: Vec<u8>, record: BucketRecord) -> Option<Bucket> {
        let cfg = record.lifecycle.clone()?;
        rules::any_enabled(&cfg).then_some(Bucket { key, record, cfg })
    }

    fn scope(&self) -> Scope {
        Scope::of(&self.record)
    }
}

/// Why a region pass stopped before its end.
enum Stop {
    /// The lease was lost or the gateway is shutting down: leave the rest.
    Abandon,
}

struct Worker {
    ctx: Arc<Ctx>,
    settings: Settings,
    owner: Owner,
    pacer: Pacer,
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Paces the keys passes read.
    scan_pacer: Pacer,
    /// Where a pass stopped for shutdown (phase, cursor): saved on release.
    stopped_at: Option<(u32, Vec<u8>)>,
    /// Ids of the bucket records read this round (deleting ones included).
    live: HashSet<u64>,
    /// Bucket ids confirmed to have no record (ids are never reused).
    dead: HashSet<u64>,
    /// When leases of regions merged away were last looked for.
    leases_checked: Option<Instant>,
}

/// Decrements the held-leases gauge however a pass ends.
struct Held;

impl Held {
    fn new() -> Held {
        m::LEASES_HELD.inc();
        Held
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        m::LEASES_HELD.dec();
    }
}

impl Worker {
    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    async fn round(&mut self) -> GwResult<()> {
        let records = self.read_buckets().await?;
        self.live = records.iter().map(|(_, v)| v.record.id).collect();
        for (key, v) in &records {
            if self.stopping() {
                return Ok(());
            }
            match crate::s3::bucket::finish_stale_delete(&self.ctx, key, v).await {
                Ok(None) => {}
                Ok(Some(deleted)) => {
                    m::DELETES_FINISHED.inc();
                    tracing::info!(
                        bucket_id = v.record.id,
                        deleted,
                        "half-done DeleteBucket finished"
                    );
                }
                Err(e) => {
                    m::ERRORS.inc();
                    tracing::warn!(bucket_id = v.record.id, error = %e, "finishing a DeleteBucket failed");
                }
            }
        }
        let mut buckets: Vec<Bucket> = records
            .into_iter()
            .filter_map(|(k, v)| Bucket::of(k, v.record))
            .collect();
        buckets.sort_by_key(|b| b.record.id);
        if self
            .leases_checked
            .is_none_or(|t| t.elapsed() >= self.settings.interval)
        {
            self.leases_checked = Some(Instant::now());
            if let Err(e) = self.drop_dead_leases().await {
                m::ERRORS.inc();
                tracing::warn!(error = %e, "dropping leases of merged regions failed");
            }
        }
        // Every region with object keys: lifecycle rules apply to some,
        // dead bucket ids may sit in any.
        let family = (vec![keys::FAMILY_OBJECT], vec![keys::FAMILY_OBJECT + 1]);
        let regions = self.regions_in(&[family]).await?;
        let interval_ms = self.settings.interval.as_millis() as i64;
        let term_ms = self.settings.lease_term.as_millis() as i64;
        for region in regions.values() {
            if self.stopping() {
                return Ok(());
            }
            let Some(lease) =
                Lease::acquire(&self.ctx, region.id, &self.owner, interval_ms, term_ms).await?
            else {
                continue;
            };
            let started = Instant::now();
            match self.region_pass(region.clone(), lease, &buckets).await {
                Ok(true) => {
                    m::PASSES.inc();
                    m::PASS_SECONDS.observe(started.elapsed().as_secs_f64());
                }
                Ok(false) => {}
                Err(e) => {
                    // The lease runs out and the pass is resumed from its
                    // last saved key.
                    m::ERRORS.inc();
                    tracing::warn!(region = region.id, error = %e, "lifecycle pass failed");
                }
            }
        }
        Ok(())
    }

    /// Every bucket record (live or being deleted), with its key.
    async fn read_buckets(&self) -> GwResult<Vec<(Vec<u8>, Versioned<BucketRecord>)>> {
        let mut out = Vec::new();
        for (start, end) in keys::every_bucket_ranges() {
            let mut pages = self.ctx.meta.pages(Cf::Meta, start, end, PAGE);
            while let Some(page) = pages.next_page().await? {
                for kv in &page {
                    match keys::decode_value::<BucketRecord>(&kv.value) {
                        Ok(record) => out.push((
                            kv.key.to_vec(),
                            Versioned {
                                raw: kv.value.clone(),
                                record,
                            },
                        )),
                        Err(e) => tracing::warn!(error = %e, "undecodable bucket record skipped"),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deletes the lease records of regions PD no longer has (merged
    /// away), unless one is held right now. A region PD does not know yet
    /// has no lease: leases are taken only of regions PD listed.
    async fn drop_dead_leases(&self) -> GwResult<()> {
        let (start, end) = keys::lifecycle_lease_range();
        let term_ms = self.settings.lease_term.as_millis() as i64;
        // One listing of every region; PD is asked about an id alone only
        // when it is missing from it (it may have been split off since).
        let known = self.regions_in(&[(Vec::new(), vec![0xff])]).await?;
        let mut pages = self.ctx.meta.pages(Cf::Usage, start, end, PAGE);
        while let Some(page) = pages.next_page().await? {
            for kv in &page {
                let Some(id) = kv
                    .key
                    .get(2..)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                else {
                    continue;
                };
                let Ok(rec) = keys::decode_value::<LifecycleLease>(&kv.value) else {
                    continue;
                };
                let held = !rec.owner.is_empty()
                    && now_ms() <= rec.expires_unix_ms + lease::skew_margin(term_ms);
                if held || known.contains_key(&id) {
                    continue;
                }
                match self.ctx.pd.get_region_by_id(id).await {
                    Ok(None) => {}
                    Ok(Some(_)) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "region lookup failed; lease kept");
                        continue;
                    }
                }
                let gone = self
                    .ctx
                    .meta
                    .batch(
                        vec![crate::meta::value_equals(
                            Cf::Usage,
                            kv.key.to_vec(),
                            kv.value.clone(),
                        )],
                        vec![crate::meta::delete(Cf::Usage, kv.key.to_vec())],
                    )
                    .await?;
                if gone == kura_metashard::client::BatchOutcome::Applied {
                    m::LEASES_DROPPED.inc();
                    tracing::info!(region = id, "lease of a region merged away deleted");
                }
            }
        }
        Ok(())
    }

    /// The regions overlapping `ranges`, by id.
    async fn regions_in(&self, ranges: &[(Vec<u8>, Vec<u8>)]) -> GwResult<BTreeMap<u64, Region>> {
        let mut out = BTreeMap::new();
        for (start, end) in ranges {
            let (mut start, end) = (start.clone(), end.clone());
            loop {
                let infos = self
                    .ctx
                    .pd
                    .scan_regions(&start, &end, REGION_PAGE)
                    .await
                    .map_err(|e| GwError::Unavailable(format!("PD: {e}")))?;
                let n = infos.len();
                let mut next = None;
                for r in infos.into_iter().filter_map(|i| i.region) {
                    next = Some(r.end_key.to_vec());
                    out.insert(r.id, r);
                }
                match next {
                    Some(e) if n as u32 == REGION_PAGE && !e.is_empty() && e < end => start = e,
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    /// One region's pass (or the rest of it). True when it ran to its end.
    async fn region_pass(
        &mut self,
        mut region: Region,
        mut lease: Lease,
        buckets: &[Bucket],
    ) -> GwResult<bool> {
        let _held = Held::new();
        if lease.resumed {
            m::PASSES_RESUMED.inc();
            tracing::info!(
                region = region.id,
                phase = lease.rec.phase,
                cursor = %hex::encode(&lease.rec.cursor),
                "resuming a lifecycle pass another gateway left half done"
            );
        }
        for phase in [PHASE_VERSIONS, PHASE_UPLOADS] {
            if phase < lease.rec.phase {
                continue;
            }
            let resume_at = if phase == lease.rec.phase {
                lease.rec.cursor.to_vec()
            } else {
                Vec::new()
            };
            let mut touched = false;
            for b in buckets {
                if phase == PHASE_UPLOADS && !rules::aborts_uploads(&b.cfg) {
                    continue;
                }
                if !overlaps(b.record.id, &region) {
                    continue;
                }
                touched = true;
                let (bucket_start, _) = keys::object_range(b.record.id, b"");
                let lo = bucket_start
                    .max(region.start_key.to_vec())
                    .max(resume_at.clone());
                let r = match phase {
                    PHASE_VERSIONS => self.scan_versions(b, lo, &mut lease, &mut region).await?,
                    _ => self.scan_uploads(b, lo, &mut lease, &mut region).await?,
                };
                if let Err(Stop::Abandon) = r {
                    if let Some((phase, cursor)) = self.stopped_at.take() {
                        // Stopping: hand the pass over right away.
                        lease.release(&self.ctx, phase, &cursor).await?;
                    }
                    return Ok(false);
                }
            }
            let next = if phase == PHASE_VERSIONS {
                PHASE_UPLOADS
            } else {
                PHASE_DEAD
            };
            // A phase with nothing in this region saved no cursor either:
            // no write for it (most regions hold no bucket with rules).
            if touched && !lease.save(&self.ctx, next, &[]).await? {
                return Ok(false);
            }
        }
        let resume_at = if lease.rec.phase == PHASE_DEAD {
            lease.rec.cursor.to_vec()
        } else {
            Vec::new()
        };
        let lo = vec![keys::FAMILY_OBJECT]
            .max(region.start_key.to_vec())
            .max(resume_at);
        if let Err(Stop::Abandon) = self.scan_dead(lo, &mut lease, &mut region).await? {
            if let Some((phase, cursor)) = self.stopped_at.take() {
                lease.release(&self.ctx, phase, &cursor).await?;
            }
            return Ok(false);
        }
        lease.finish(&self.ctx).await
    }

    /// Phase 3: walks the region's object keys one bucket id at a time (two
    /// one-key scans per id, cf META and cf MPU) and deletes what lies under
    /// an id with no bucket record. Such an id is confirmed dead by reading
    /// the bucket records again after its keys were seen: a key exists only
    /// after its bucket's record did, and ids are never reused, so a record
    /// absent from a read that started after the key was seen is gone for good.
    async fn scan_dead(
        &mut self,
        mut pos: Vec<u8>,
        lease: &mut Lease,
        region: &mut Region,
    ) -> GwResult<Result<(), Stop>> {
        loop {
            if let Err(s) = self.keep_going(lease, region, PHASE_DEAD, &pos).await? {
                return Ok(Err(s));
            }
            let family_end = vec![keys::FAMILY_OBJECT + 1];
            let end = if region.end_key.is_empty() {
                family_end
            } else {
                family_end.min(region.end_key.to_vec())
            };
            if pos >= end {
                return Ok(Ok(()));
            }
            let mut first: Option<u64> = None;
            let mut odd: Option<Vec<u8>> = None;
            for cf in [Cf::Meta, Cf::Mpu] {
                let page = self.ctx.meta.scan(cf, &pos, &end, 1, true).await?;
                m::KEYS_SCANNED.inc_by(page.len() as u64);
                let Some(kv) = page.first() else { continue };
                // The id is the 8 bytes after the family byte, whatever follows.
                match kv
                    .key
                    .get(1..9)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                {
                    Some(id) => first = Some(first.map_or(id, |f| f.min(id))),
                    // Too short to name a bucket: step over it.
                    None => odd = Some(successor(&kv.key)),
                }
            }
            self.scan_pacer.take(2).await;
            let Some(id) = first else {
                match odd {
                    Some(next) => {
                        pos = next;
                        continue;
                    }
                    None => return Ok(Ok(())),
                }
            };
            if self.is_dead(id).await? {
                if let Err(s) = self.sweep_dead(id, &pos, lease, region).await? {
                    return Ok(Err(s));
                }
            }
            pos = keys::bucket_end(id);
        }
    }

    /// Whether bucket id `id`, whose keys were just seen, has no record.
    async fn is_dead(&mut self, id: u64) -> GwResult<bool> {
        if self.live.contains(&id) {
            return Ok(false);
        }
        if self.dead.contains(&id) {
            return Ok(true);
        }
        // Read after the keys were seen (see `scan_dead`).
        let fresh = self.read_buckets().await?;
        self.live.extend(fresh.iter().map(|(_, v)| v.record.id));
        if self.live.contains(&id) {
            return Ok(false);
        }
        self.dead.insert(id);
        m::DEAD_BUCKETS.inc();
        tracing::warn!(
            bucket_id = id,
            "keys found under a deleted bucket id; deleting them"
        );
        Ok(true)
    }

    /// Deletes every cf META and cf MPU record of dead bucket `id` from
    /// `from` to the end of the region: versions with GC records for their
    /// bodies, uploads through the abort path.
    async fn sweep_dead(
        &mut self,
        id: u64,
        from: &[u8],
        lease: &mut Lease,
        region: &mut Region,
    ) -> GwResult<Result<(), Stop>> {
        for cf in [Cf::Meta, Cf::Mpu] {
            let mut pos = from.to_vec().max(keys::object_range(id, b"").0);
            loop {
                if let Err(s) = self.keep_going(lease, region, PHASE_DEAD, &pos).await? {
                    return Ok(Err(s));
                }
                let end = if region.end_key.is_empty() {
                    keys::bucket_end(id)
                } else {
                    keys::bucket_end(id).min(region.end_key.to_vec())
                };
                if pos >= end {
                    break;
                }
                let page = self.ctx.meta.scan(cf, &pos, &end, PAGE, false).await?;
                m::KEYS_SCANNED.inc_by(page.len() as u64);
                self.scan_pacer.take(page.len().max(1) as u32).await;
                let full = page.len() == PAGE;
                let mut skip_to = Vec::new();
                for kv in &page {
                    pos = successor(&kv.key);
                    if kv.key.as_ref() < skip_to.as_slice() {
                        continue; // a part of an upload just aborted with it
                    }
                    let is_upload = cf == Cf::Mpu
                        && keys::decode_object_key(&kv.key)
                            .is_some_and(|p| p.suffix.len() == crate::s3::multipart::UPLOAD_ID_LEN);
                    if is_upload {
                        skip_to = keys::prefix_successor(&kv.key).unwrap_or_default();
                    }
                    if let Err(s) = self.keep_going(lease, region, PHASE_DEAD, &kv.key).await? {
                        return Ok(Err(s));
                    }
                    self.pacer.wait().await;
                    let r = match cf {
                        Cf::Meta => act::delete_dead_record(&self.ctx, id, kv).await,
                        _ => crate::s3::bucket::drop_upload_entry(&self.ctx, id, kv)
                            .await
                            .map(|()| Done::Applied),
                    };
                    match r {
                        Ok(Done::Applied) => m::DEAD_RECORDS.inc(),
                        Ok(_) => {}
                        Err(e) => {
                            m::ERRORS.inc();
                            tracing::warn!(bucket_id = id, error = %e, "deleting a dead bucket's record failed; retried next pass");
                        }
                    }
                }
                if !full {
                    break;
                }
            }
        }
        Ok(Ok(()))
    }

    /// The end of what this pass scans of bucket `b` in `region` (the
    /// region's current end, learnt at each renewal).
    fn end_of(b: &Bucket, region: &Region) -> Vec<u8> {
        let bucket_end = keys::bucket_end(b.record.id);
        if region.end_key.is_empty() {
            bucket_end
        } else {
            bucket_end.min(region.end_key.to_vec())
        }
    }

    /// Before each page and action: still the holder (renewing with the
    /// cursor now and then, and learning the region's current range), not
    /// shutting down.
    async fn keep_going(
        &mut self,
        lease: &mut Lease,
        region: &mut Region,
        phase: u32,
        cursor: &[u8],
    ) -> GwResult<Result<(), Stop>> {
        if self.stopping() {
            self.stopped_at = Some((phase, cursor.to_vec()));
            return Ok(Err(Stop::Abandon));
        }
        let before = lease.rec.expires_unix_ms;
        if !lease.keep_alive(&self.ctx, phase, cursor).await? {
            tracing::warn!(region = region.id, "lifecycle lease lost; leaving the pass");
            return Ok(Err(Stop::Abandon));
        }
        if lease.rec.expires_unix_ms != before {
            // Renewed: a split or merge since may have moved the region's end.
            match self.ctx.pd.get_region_by_id(region.id).await {
                Ok(Some(info)) => {
                    if let Some(r) = info.region {
                        *region = r;
                    }
                }
                // Merged away: whoever holds the merged region's lease goes on.
                Ok(None) => return Ok(Err(Stop::Abandon)),
                Err(e) => tracing::debug!(error = %e, "region refresh failed; keeping its range"),
            }
        }
        Ok(Ok(()))
    }

    /// The bucket's record again (rules may have changed or been deleted).
    async fn reload(&self, b: &Bucket) -> GwResult<Option<Bucket>> {
        let Some(v) = self.ctx.meta.get::<BucketRecord>(Cf::Meta, &b.key).await? else {
            return Ok(None);
        };
        if v.record.id != b.record.id {
            return Ok(None);
        }
        Ok(Bucket::of(b.key.clone(), v.record))
    }

    fn clock(&self) -> Clock {
        Clock {
            now_ms: now_ms(),
            day_ms: (self.settings.day.as_millis() as i64).max(1),
        }
    }

    async fn scan_versions(
        &mut self,
        b: &Bucket,
        mut pos: Vec<u8>,
        lease: &mut Lease,
        region: &mut Region,
    ) -> GwResult<Result<(), Stop>> {
        let mut group: Option<Group> = None;
        loop {
            let cursor = group
                .as_ref()
                .map_or_else(|| pos.clone(), |g| g.start.clone());
            if let Err(s) = self
                .keep_going(lease, region, PHASE_VERSIONS, &cursor)
                .await?
            {
                return Ok(Err(s));
            }
            let end = Self::end_of(b, region);
            let Some(bucket) = self.reload(b).await? else {
                return Ok(Ok(()));
            };
            if pos >= end {
                break;
            }
            // Rules on current versions only need each key's latest: one
            // record per object (decision 0034), whatever its version count.
            let first_only = bucket.scope().versioning.reports_versions()
                && !rules::touches_noncurrent(&bucket.cfg);
            let page = if first_only {
                self.ctx
                    .meta
                    .scan_first_per_object(Cf::Meta, &pos, &end, PAGE)
                    .await?
            } else {
                self.ctx
                    .meta
                    .scan(Cf::Meta, &pos, &end, PAGE, false)
                    .await?
            };
            self.scan_pacer.take(page.len().max(1) as u32).await;
            let full = page.len() == PAGE;
            for kv in page {
                pos = successor(&kv.key);
                m::KEYS_SCANNED.inc();
                let Some(parts) = keys::decode_object_key(&kv.key) else {
                    continue;
                };
                if first_only {
                    pos = keys::object_seek_after_key(parts.bucket_id, &parts.key);
                }
                let (Ok(key), Some(version)) = (
                    String::from_utf8(parts.key),
                    keys::decode_version(&parts.suffix),
                ) else {
                    continue;
                };
                let record: ObjectRecord = match keys::decode_value(&kv.value) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable object record skipped by lifecycle");
                        continue;
                    }
                };
                let stored = Stored {
                    version,
                    raw: kv.value,
                    record,
                };
                if group.as_ref().is_none_or(|g| g.key != key) {
                    if let Some(done) = group.take() {
                        self.finish_group(&bucket, done, lease, region).await?;
                    }
                    group = Some(Group::new(b.record.id, key, first_only));
                }
                if let Some(g) = group.as_mut() {
                    if let Err(s) = self.on_version(&bucket, g, stored, lease, region).await? {
                        return Ok(Err(s));
                    }
                }
            }
            if !full {
                break;
            }
        }
        if let Some(done) = group.take() {
            if let Some(bucket) = self.reload(b).await? {
                self.finish_group(&bucket, done, lease, region).await?;
            }
        }
        Ok(Ok(()))
    }

    /// One version of the key in `g` (newest first).
    async fn on_version(
        &mut self,
        b: &Bucket,
        g: &mut Group,
        s: Stored,
        lease: &mut Lease,
        region: &mut Region,
    ) -> GwResult<Result<(), Stop>> {
        // The null slot's pointer to a moved null version is not a version.
        if s.is_anchor() {
            return Ok(Ok(()));
        }
        let scope = b.scope();
        let clock = self.clock();
        let subject = Subject {
            key: &g.key,
            size: s.record.size,
            tags: &s.record.tags,
            delete_marker: s.is_delete_marker(),
        };
        let modified = s.record.last_modified_unix_ms;
        let action = if g.seen == 0 {
            if s.is_delete_marker() {
                g.latest_marker = Some(s.clone());
                None
            } else if rules::current_expires(&b.cfg, &subject, modified, &clock) {
                Some(Action::Current)
            } else {
                None
            }
        } else if scope.versioning != Versioning::Unversioned
            && rules::noncurrent_expires(&b.cfg, &subject, g.prev_modified, g.seen, &clock)
        {
            Some(Action::Noncurrent)
        } else {
            None
        };
        g.prev_modified = modified;
        g.seen += 1;
        if let Some(a) = action {
            if let Err(stop) = self
                .keep_going(lease, region, PHASE_VERSIONS, &g.start)
                .await?
            {
                return Ok(Err(stop));
            }
            self.pacer.wait().await;
            let key = g.key.clone();
            let r = match a {
                Action::Current => act::expire_current(&self.ctx, &scope, &key, &s).await,
                _ => act::delete_version(&self.ctx, &scope, &key, &s).await,
            };
            count(a, r, &key);
        }
        Ok(Ok(()))
    }

    /// After the last version of a key: a delete marker left alone.
    async fn finish_group(
        &mut self,
        b: &Bucket,
        g: Group,
        lease: &mut Lease,
        region: &mut Region,
    ) -> GwResult<()> {
        let Some(marker) = g.latest_marker.filter(|_| g.seen == 1) else {
            return Ok(());
        };
        if !rules::expired_marker_removed(&b.cfg, &g.key) {
            return Ok(());
        }
        if g.first_only {
            // Only the latest was read: is the marker alone?
            let (start, end) = keys::object_versions_range(b.record.id, g.key.as_bytes());
            if self
                .ctx
                .meta
                .scan(Cf::Meta, &start, &end, 2, true)
                .await?
                .len()
                != 1
            {
                return Ok(());
            }
        }
        if self
            .keep_going(lease, region, PHASE_VERSIONS, &g.start)
            .await?
            .is_err()
        {
            return Ok(());
        }
        self.pacer.wait().await;
        let r = act::delete_version(&self.ctx, &b.scope(), &g.key, &marker).await;
        count(Action::Marker, r, &g.key);
        Ok(())
    }

    async fn scan_uploads(
        &mut self,
        b: &Bucket,
        mut pos: Vec<u8>,
        lease: &mut Lease,
        region: &mut Region,
    ) -> GwResult<Result<(), Stop>> {
        loop {
            if let Err(s) = self.keep_going(lease, region, PHASE_UPLOADS, &pos).await? {
                return Ok(Err(s));
            }
            let end = Self::end_of(b, region);
            let Some(bucket) = self.reload(b).await? else {
                return Ok(Ok(()));
            };
            if pos >= end {
                return Ok(Ok(()));
            }
            let page = self.ctx.meta.scan(Cf::Mpu, &pos, &end, PAGE, false).await?;
            self.scan_pacer.take(page.len().max(1) as u32).await;
            let full = page.len() == PAGE;
            let mut next = pos.clone();
            for kv in page {
                if kv.key.as_ref() < next.as_slice() {
                    continue; // a part of an upload already handled
                }
                next = successor(&kv.key);
                m::KEYS_SCANNED.inc();
                let Some(parts) = keys::decode_object_key(&kv.key) else {
                    continue;
                };
                if parts.suffix.len() != crate::s3::multipart::UPLOAD_ID_LEN {
                    continue;
                }
                // Its parts follow it: skip them in one seek.
                if let Some(after) = keys::prefix_successor(&kv.key) {
                    next = after;
                }
                let Ok(key) = String::from_utf8(parts.key) else {
                    continue;
                };
                let record: MultipartUploadRecord = match keys::decode_value(&kv.value) {
                    Ok(r) => r,
                    Err(_) => continue,
                };
                if !rules::upload_aborted(
                    &bucket.cfg,
                    &key,
                    record.initiated_unix_ms,
                    &self.clock(),
                ) {
                    continue;
                }
                if let Err(s) = self
                    .keep_going(lease, region, PHASE_UPLOADS, &kv.key)
                    .await?
                {
                    return Ok(Err(s));
                }
                self.pacer.wait().await;
                let upload = Versioned {
                    raw: kv.value.clone(),
                    record,
                };
                let r = act::abort_upload(&self.ctx, b.record.id, &key, &upload).await;
                count(Action::Upload, r, &key);
            }
            pos = next;
            if !full {
                return Ok(Ok(()));
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Current,
    Noncurrent,
    Marker,
    Upload,
}

fn count(a: Action, r: GwResult<Done>, key: &str) {
    match r {
        Ok(Done::Applied) => {
            let c = match a {
                Action::Current => &m::OBJECTS_EXPIRED,
                Action::Noncurrent => &m::VERSIONS_EXPIRED,
                Action::Marker => &m::MARKERS_REMOVED,
                Action::Upload => &m::UPLOADS_ABORTED,
            };
            c.inc();
            tracing::debug!(?a, key, "lifecycle action applied");
        }
        Ok(Done::Changed) => tracing::debug!(?a, key, "changed since read; left for the next pass"),
        Ok(Done::Locked) => m::LOCKED_SKIPPED.inc(),
        Err(e) => {
            m::ERRORS.inc();
            tracing::warn!(?a, key, error = %e, "lifecycle action failed; retried next pass");
        }
    }
}

/// What the pass knows of the key it is walking (versions newest first).
struct Group {
    key: String,
    /// Where the key's records start: the cursor while it is in progress.
    start: Vec<u8>,
    /// Versions seen so far (anchors not counted).
    seen: usize,
    /// When the version seen last was written: the next one has been
    /// noncurrent since then.
    prev_modified: i64,
    /// The latest version, when it is a delete marker.
    latest_marker: Option<Stored>,
    /// Only the latest version was read (`first_per_object`).
    first_only: bool,
}

impl Group {
    fn new(bucket_id: u64, key: String, first_only: bool) -> Group {
        Group {
            start: keys::object_prefix(bucket_id, key.as_bytes()),
            key,
            seen: 0,
            prev_modified: 0,
            latest_marker: None,
            first_only,
        }
    }
}

/// Whether bucket `id`'s keys may lie in `region`.
fn overlaps(id: u64, region: &Region) -> bool {
    keys::bucket_end(id).as_slice() > region.start_key.as_ref()
        && (region.end_key.is_empty()
            || keys::object_range(id, b"").0.as_slice() < region.end_key.as_ref())
}

/// The smallest key after `k`.
fn successor(k: &[u8]) -> Vec<u8> {
    let mut v = k.to_vec();
    v.push(0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pacer_books_what_was_taken() {
        // 1,000 a second: 100 units booked make the next take wait ~100 ms.
        let mut p = Pacer::new(1000);
        let t = std::time::Instant::now();
        p.take(100).await;
        assert!(t.elapsed() < Duration::from_millis(50));
        p.take(1).await;
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(95), "{waited:?}");
        // Unpaced: never waits.
        let mut free = Pacer::new(0);
        let t = std::time::Instant::now();
        free.take(1_000_000).await;
        free.take(1).await;
        assert!(t.elapsed() < Duration::from_millis(50));
    }

    #[test]
    fn regions_overlap_only_their_buckets() {
        let region = |s: Vec<u8>, e: Vec<u8>| Region {
            start_key: s.into(),
            end_key: e.into(),
            ..Default::default()
        };
        let all = region(Vec::new(), Vec::new());
        assert!(overlaps(7, &all));
        let (b7, _) = keys::object_range(7, b"");
        let from_8 = region(keys::object_range(8, b"").0, Vec::new());
        assert!(!overlaps(7, &from_8));
        assert!(overlaps(8, &from_8));
        let up_to_7 = region(Vec::new(), b7.clone());
        assert!(!overlaps(7, &up_to_7));
        assert!(overlaps(6, &up_to_7));
        let inside_7 = region(keys::object_prefix(7, b"m"), Vec::new());
        assert!(overlaps(7, &inside_7));
    }
}
