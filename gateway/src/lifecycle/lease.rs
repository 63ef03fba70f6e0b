//! Per-region leases: which gateway runs lifecycle on a metadata region,
//! and how far its pass got (docs/decisions/0032).
//!
//! A lease is one record (`keys::lifecycle_lease_key(region id)`, cf USAGE,
//! in the system region) changed only by compare-and-set: taking it,
//! renewing it (which also saves the pass's cursor) and releasing it at the
//! end of a pass. Its expiry is written by the holder's clock; the holder
//! stops acting a quarter of the term before it, others take it over only a
//! skew margin after it, so clocks may disagree by that margin without two
//! gateways ever acting on one region at once.

use std::time::Instant;

use bytes::Bytes;
use kura_metashard::client::Cf;
use kura_metashard::keys;
use kura_proto::meta::LifecycleLease;

use crate::context::Ctx;
use crate::error::GwResult;
use crate::meta::now_ms;

/// Phases of a pass, in order.
pub const PHASE_VERSIONS: u32 = 0;
pub const PHASE_UPLOADS: u32 = 1;
/// Keys under bucket ids that have no bucket record any more (decision 0037).
pub const PHASE_DEAD: u32 = 2;

/// What a gateway may do with a region's lease record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Another gateway holds it.
    Busy,
    /// Its last pass ended less than an interval ago.
    NotDue,
    /// Take it and start a new pass.
    Start,
    /// Take it and go on with the pass in progress (from its cursor).
    Resume,
}

/// The decision, as pure logic: `rec` is the stored lease (if any), `me`
/// this gateway's owner id.
pub fn decide(
    rec: Option<&LifecycleLease>,
    me: &str,
    now: i64,
    interval_ms: i64,
    skew_ms: i64,
) -> Claim {
    let Some(l) = rec else {
        return Claim::Start;
    };
    let held_by_other = !l.owner.is_empty() && l.owner != me;
    if held_by_other && now <= l.expires_unix_ms.saturating_add(skew_ms) {
        return Claim::Busy;
    }
    if l.pass_started_unix_ms != 0 {
        return Claim::Resume;
    }
    if now < l.last_pass_done_unix_ms.saturating_add(interval_ms) {
        return Claim::NotDue;
    }
    Claim::Start
}

/// A lease this gateway holds.
pub struct Lease {
    key: Vec<u8>,
    raw: Bytes,
    pub rec: LifecycleLease,
    term_ms: i64,
    renewed: Instant,
    /// Whether this pass was taken over half done.
    pub resumed: bool,
}

/// Who this gateway is, for leases.
#[derive(Clone, Debug)]
pub struct Owner {
    pub id: String,
    pub addr: String,
}

impl Lease {
    /// Takes the lease of `region_id` if it is free and a pass is due (or
    /// one is half done). `None`: not ours this round.
    pub async fn acquire(
        ctx: &Ctx,
        region_id: u64,
        me: &Owner,
        interval_ms: i64,
        term_ms: i64,
    ) -> GwResult<Option<Lease>> {
        let key = keys::lifecycle_lease_key(region_id);
        let cur = ctx.meta.get::<LifecycleLease>(Cf::Usage, &key).await?;
        let now = now_ms();
        let claim = decide(
            cur.as_ref().map(|c| &c.record),
            &me.id,
            now,
            interval_ms,
            skew_margin(term_ms),
        );
        let mut rec = cur.as_ref().map(|c| c.record.clone()).unwrap_or_default();
        let resumed = match claim {
            Claim::Busy | Claim::NotDue => return Ok(None),
            Claim::Start => {
                rec.pass_started_unix_ms = now;
                rec.phase = PHASE_VERSIONS;
                rec.cursor = Bytes::new();
                false
            }
            // Our own lease (a round cut short) is not a takeover.
            Claim::Resume => rec.owner != me.id,
        };
        rec.owner = me.id.clone();
        rec.owner_addr = me.addr.clone();
        rec.expires_unix_ms = now + term_ms;
        let value = keys::encode_value(&rec);
        // The term runs from when the write was sent, never from its answer.
        let sent = Instant::now();
        if !ctx
            .meta
            .swap(Cf::Usage, &key, cur.as_ref().map(|c| &c.raw), &value)
            .await?
        {
            return Ok(None);
        }
        Ok(Some(Lease {
            key,
            raw: Bytes::from(value),
            rec,
            term_ms,
            renewed: sent,
            resumed,
        }))
    }

    /// Whether this gateway may still act: a quarter of the term before the
    /// written expiry, by its own monotonic clock since the last renewal.
    pub fn valid(&self) -> bool {
        (self.renewed.elapsed().as_millis() as i64) < self.term_ms * 3 / 4
    }

    /// Saves the cursor and extends the term. False: the lease was lost
    /// (taken over after we stalled past its expiry); stop acting.
    pub async fn save(&mut self, ctx: &Ctx, phase: u32, cursor: &[u8]) -> GwResult<bool> {
        if !self.valid() {
            return Ok(false);
        }
        let mut rec = self.rec.clone();
        rec.phase = phase;
        rec.cursor = Bytes::copy_from_slice(cursor);
        rec.expires_unix_ms = now_ms() + self.term_ms;
        self.store(ctx, rec).await
    }

    /// Renews (saving the cursor) once a third of the term has passed.
    pub async fn keep_alive(&mut self, ctx: &Ctx, phase: u32, cursor: &[u8]) -> GwResult<bool> {
        if (self.renewed.elapsed().as_millis() as i64) < self.term_ms / 3 {
            return Ok(true);
        }
        self.save(ctx, phase, cursor).await
    }

    /// Ends the pass and frees the region for whoever runs the next one.
    pub async fn finish(mut self, ctx: &Ctx) -> GwResult<bool> {
        let mut rec = self.rec.clone();
        let now = now_ms();
        rec.pass_started_unix_ms = 0;
        rec.phase = PHASE_VERSIONS;
        rec.cursor = Bytes::new();
        rec.last_pass_done_unix_ms = now;
        rec.passes += 1;
        rec.expires_unix_ms = now;
        rec.owner.clear();
        self.store(ctx, rec).await
    }

    /// Gives the lease up with the pass half done (this gateway is
    /// stopping): the next gateway resumes it at once instead of waiting
    /// for the term to run out.
    pub async fn release(mut self, ctx: &Ctx, phase: u32, cursor: &[u8]) -> GwResult<bool> {
        let mut rec = self.rec.clone();
        rec.phase = phase;
        rec.cursor = Bytes::copy_from_slice(cursor);
        rec.owner.clear();
        rec.expires_unix_ms = now_ms();
        self.store(ctx, rec).await
    }

    async fn store(&mut self, ctx: &Ctx, rec: LifecycleLease) -> GwResult<bool> {
        let value = keys::encode_value(&rec);
        let started = Instant::now();
        if !ctx
            .meta
            .swap(Cf::Usage, &self.key, Some(&self.raw), &value)
            .await?
        {
            return Ok(false);
        }
        self.raw = Bytes::from(value);
        self.rec = rec;
        // The term runs from when the write was sent, never from its answer.
        self.renewed = started;
        Ok(true)
    }
}

/// How long after a lease's written expiry others wait before taking it:
/// half a term, so clocks may be that far apart.
pub fn skew_margin(term_ms: i64) -> i64 {
    term_ms / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(owner: &str, expires: i64, started: i64, done: i64) -> LifecycleLease {
        LifecycleLease {
            owner: owner.into(),
            expires_unix_ms: expires,
            pass_started_unix_ms: started,
            last_pass_done_unix_ms: done,
            ..Default::default()
        }
    }

    #[test]
    fn one_holder_at_a_time() {
        let (interval, skew) = (60_000, 10_000);
        assert_eq!(decide(None, "me", 0, interval, skew), Claim::Start);
        // Held by another and not expired (plus the skew margin): busy.
        let l = lease("other", 1_000, 500, 0);
        assert_eq!(decide(Some(&l), "me", 1_000, interval, skew), Claim::Busy);
        assert_eq!(decide(Some(&l), "me", 11_000, interval, skew), Claim::Busy);
        // Past it: the half-done pass is taken over.
        assert_eq!(
            decide(Some(&l), "me", 11_001, interval, skew),
            Claim::Resume
        );
        // Our own lease: we go on at once.
        assert_eq!(
            decide(Some(&l), "other", 1_000, interval, skew),
            Claim::Resume
        );
        // Released half done (its gateway stopped): taken over at once.
        let handed = lease("", 1_000, 500, 0);
        assert_eq!(
            decide(Some(&handed), "me", 1_000, interval, skew),
            Claim::Resume
        );
        // Released after a pass: the next starts an interval later, by anyone.
        let done = lease("", 5_000, 0, 5_000);
        assert_eq!(
            decide(Some(&done), "me", 64_999, interval, skew),
            Claim::NotDue
        );
        assert_eq!(
            decide(Some(&done), "me", 65_000, interval, skew),
            Claim::Start
        );
    }
}
