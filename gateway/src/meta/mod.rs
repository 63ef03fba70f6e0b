//! Thin helpers over the metadata client: typed record reads, condition and
//! mutation builders, and a deadline on every call so a stuck region turns
//! into a 503 instead of a hung request. Keys always come from
//! `kura_metashard::keys`.

use std::time::Duration;

use bytes::Bytes;
use kura_metashard::client::{
    condition, mutation, BatchOutcome, Cf, ClientError, Condition, KvPair, MetaClient, Mutation,
    ScanOptions,
};
use kura_metashard::keys;

use crate::error::{GwError, GwResult};

mod shared_reads;
use shared_reads::SharedReads;

/// Upper bound for one metadata call (the client retries inside it).
const META_DEADLINE: Duration = Duration::from_secs(15);

/// A record as read: the raw stored value (for VALUE_EQUALS conditions) and its decoding.
#[derive(Clone, Debug)]
pub struct Versioned<M> {
    pub raw: Bytes,
    pub record: M,
}

#[derive(Clone)]
pub struct Meta {
    client: std::sync::Arc<MetaClient>,
    shared: std::sync::Arc<SharedReads>,
}

async fn deadline<T>(what: &str, f: impl std::future::Future<Output = T>) -> GwResult<T> {
    tokio::time::timeout(META_DEADLINE, f)
        .await
        .map_err(|_| GwError::Unavailable(format!("metadata {what} timed out")))
}

impl Meta {
    pub fn new(client: MetaClient) -> Self {
        Meta {
            client: std::sync::Arc::new(client),
            shared: Default::default(),
        }
    }

    /// Linearizable read of one key.
    pub async fn get_raw(&self, cf: Cf, key: &[u8]) -> GwResult<Option<Bytes>> {
        Ok(deadline("get", self.client.get(cf, key)).await??)
    }

    /// Linearizable read of one record.
    pub async fn get<M: prost::Message + Default>(
        &self,
        cf: Cf,
        key: &[u8],
    ) -> GwResult<Option<Versioned<M>>> {
        decode(self.get_raw(cf, key).await?)
    }

    /// Linearizable read of one record, one read shared by the callers that
    /// want the same key at once (`shared_reads`): for records every request
    /// reads, such as bucket records.
    pub async fn get_shared<M: prost::Message + Default>(
        &self,
        cf: Cf,
        key: &[u8],
    ) -> GwResult<Option<Versioned<M>>> {
        let client = self.client.clone();
        let owned = key.to_vec();
        let read = move || {
            let client = client.clone();
            let key = owned.clone();
            async move {
                tokio::time::timeout(META_DEADLINE, client.get(cf, &key))
                    .await
                    .unwrap_or_else(|_| Err(ClientError::Unavailable("get timed out".into())))
            }
        };
        decode(self.shared.get(cf, key, read).await?)
    }

    /// One atomic, conditional batch (all keys in one region).
    pub async fn batch(
        &self,
        conditions: Vec<Condition>,
        mutations: Vec<Mutation>,
    ) -> GwResult<BatchOutcome> {
        Ok(deadline("batch", self.client.batch(conditions, mutations)).await??)
    }

    /// Whether `key` now holds exactly `value`. The client may report
    /// ConditionFailed for a batch that did apply (a retry after a lost
    /// response fails the condition the first attempt made false), so every
    /// ConditionFailed is checked against what we meant to write.
    pub async fn holds(&self, cf: Cf, key: &[u8], value: &[u8]) -> GwResult<bool> {
        Ok(self
            .get_raw(cf, key)
            .await?
            .is_some_and(|v| v.as_ref() == value))
    }

    /// Compare-and-set of one key: writes `value` if the key still holds
    /// `old` (`None`: is absent). True when `value` is in place afterwards —
    /// also when a retried batch reported ConditionFailed for its own
    /// earlier, applied attempt (see [`Meta::holds`]).
    pub async fn swap(
        &self,
        cf: Cf,
        key: &[u8],
        old: Option<&Bytes>,
        value: &[u8],
    ) -> GwResult<bool> {
        let outcome = self
            .batch(
                vec![unchanged(cf, key.to_vec(), old)],
                vec![put(cf, key.to_vec(), value.to_vec())],
            )
            .await?;
        Ok(match outcome {
            BatchOutcome::Applied => true,
            BatchOutcome::ConditionFailed { .. } => self.holds(cf, key, value).await?,
        })
    }

    /// Where the region holding `key` ends, as the region cache knows it
    /// (`None`: the keyspace's end, or unknown): for grouping keys into
    /// per-region batches.
    pub async fn region_end(&self, key: &[u8]) -> Option<Bytes> {
        self.client.region_end(key).await
    }

    /// Deletes `keys` wherever they live, one batch per region (not atomic
    /// across regions; deletes are idempotent).
    pub async fn delete_many(&self, cf: Cf, keys: Vec<Bytes>) -> GwResult<()> {
        Ok(deadline("delete", self.client.delete_many(cf, keys)).await??)
    }

    /// Keys (and values) in [start, end), at most `limit`, in key order.
    pub async fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
        keys_only: bool,
    ) -> GwResult<Vec<KvPair>> {
        Ok(deadline("scan", self.client.scan(cf, start, end, limit, keys_only)).await??)
    }

    /// A walk over [start, end) in key order, `page` keys (and values) per
    /// scan, for callers that go through a whole range: see [`Pages`].
    pub fn pages(&self, cf: Cf, start: Vec<u8>, end: Vec<u8>, page: usize) -> Pages<'_> {
        Pages {
            meta: self,
            cf,
            next: Some(start),
            end,
            page: page.max(1),
        }
    }

    /// Like [`Meta::scan`], but only the first key of each object in the
    /// range (in cf META: each key's latest version); the stores seek past
    /// the rest (decision 0034). `limit` counts returned keys.
    pub async fn scan_first_per_object(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> GwResult<Vec<KvPair>> {
        let opts = ScanOptions {
            keys_only: false,
            first_per_object: true,
        };
        Ok(deadline("scan", self.client.scan_with(cf, start, end, limit, opts)).await??)
    }

    /// An object listing's scan: [`Meta::scan_first_per_object`] when
    /// `first_per_object`, else a plain scan; with `rollup` (a delimiter)
    /// the stores return one key per common prefix (docs/decisions/0035).
    pub async fn scan_listing(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
        first_per_object: bool,
        rollup: Option<&kura_metashard::keys::Rollup>,
    ) -> GwResult<Vec<KvPair>> {
        let opts = ScanOptions {
            keys_only: false,
            first_per_object,
        };
        let scan = self.client.scan_rollup(cf, start, end, limit, opts, rollup);
        Ok(deadline("scan", scan).await??)
    }
}

/// A range read one page at a time ([`Meta::pages`]): each page starts just
/// after the last key of the one before, and a short page ends the walk.
pub struct Pages<'a> {
    meta: &'a Meta,
    cf: Cf,
    /// Where the next page starts; None once the range is done.
    next: Option<Vec<u8>>,
    end: Vec<u8>,
    page: usize,
}

impl Pages<'_> {
    /// The next page (never empty), or None at the end of the range.
    pub async fn next_page(&mut self) -> GwResult<Option<Vec<KvPair>>> {
        let Some(start) = self.next.take() else {
            return Ok(None);
        };
        let page = self
            .meta
            .scan(self.cf, &start, &self.end, self.page, false)
            .await?;
        if page.len() == self.page {
            if let Some(last) = page.last() {
                let mut next = last.key.to_vec();
                next.push(0);
                self.next = Some(next);
            }
        }
        Ok((!page.is_empty()).then_some(page))
    }
}

fn decode<M: prost::Message + Default>(raw: Option<Bytes>) -> GwResult<Option<Versioned<M>>> {
    match raw {
        None => Ok(None),
        Some(raw) => {
            let record = keys::decode_value::<M>(&raw)?;
            Ok(Some(Versioned { raw, record }))
        }
    }
}

pub fn put(cf: Cf, key: Vec<u8>, value: Vec<u8>) -> Mutation {
    Mutation {
        op: mutation::Op::Put as i32,
        cf: cf as i32,
        key: Bytes::from(key),
        value: Bytes::from(value),
    }
}

pub fn put_record<M: prost::Message>(cf: Cf, key: Vec<u8>, record: &M) -> Mutation {
    put(cf, key, keys::encode_value(record))
}

pub fn delete(cf: Cf, key: Vec<u8>) -> Mutation {
    Mutation {
        op: mutation::Op::Delete as i32,
        cf: cf as i32,
        key: Bytes::from(key),
        value: Bytes::new(),
    }
}

pub fn not_exists(cf: Cf, key: Vec<u8>) -> Condition {
    Condition {
        kind: condition::Kind::NotExists as i32,
        cf: cf as i32,
        key: Bytes::from(key),
        value: Bytes::new(),
    }
}

pub fn value_equals(cf: Cf, key: Vec<u8>, value: Bytes) -> Condition {
    Condition {
        kind: condition::Kind::ValueEquals as i32,
        cf: cf as i32,
        key: Bytes::from(key),
        value,
    }
}

/// The key still holds what we read: `old` (VALUE_EQUALS) or nothing (NOT_EXISTS).
pub fn unchanged(cf: Cf, key: Vec<u8>, old: Option<&Bytes>) -> Condition {
    match old {
        Some(v) => value_equals(cf, key, v.clone()),
        None => not_exists(cf, key),
    }
}

/// How many times a read-modify-write is retried when a concurrent writer won.
pub const RMW_ATTEMPTS: usize = 5;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// This gateway's clock where other processes compare its readings: new
/// version ids and the creation stamp of a body's fragments. Test builds can
/// shift it (failpoint `gateway::clock_offset_ms`, action `return(<ms>)`,
/// negative for a lagging clock) to play a gateway whose clock is off, which
/// neither version order (decision 0035) nor orphan GC may depend on.
pub fn skewed_now_ms() -> u64 {
    fail::fail_point!("gateway::clock_offset_ms", |arg: Option<String>| {
        let offset = arg.and_then(|a| a.trim().parse::<i64>().ok()).unwrap_or(0);
        now_ms().saturating_add(offset).max(0) as u64
    });
    now_ms().max(0) as u64
}
