//! The routing client of the metadata keyspace: finds a key's region leader
//! through the PD-fed [`RegionCache`], sends the request, and on routing
//! errors corrects the cache and retries with bounded backoff.
//!
//! Retry policy: `locate` → send → on `NotLeader` update the leader (retry at
//! once if the store named one), on `EpochNotMatch` take the store's regions,
//! on `RegionNotFound`/`KeyNotInRegion`/transport errors drop the cache entry;
//! backoff starts at 20 ms, doubles to 500 ms, and the whole call gives up
//! with [`ClientError::Unavailable`] after ~10 s.
//!
//! Point reads and batches travel as calls on one stream per store
//! ([`crate::calls`]); scans, large batches and stores that do not take
//! calls on a stream use unary rpcs. Either way the outcome is handled alike.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kura_pd_client::channel::Channel;
use kura_pd_client::client::region_contains;
use kura_pd_client::{RegionCache, RegionRoute};
use kura_proto::common::RegionError;
use kura_proto::metashard::metashard_client::MetashardClient;
pub use kura_proto::metashard::{condition, mutation, Cf, Condition, KvPair, Mutation};
use kura_proto::metashard::{BatchRequest, GetRequest, RequestHeader, ScanRequest};
use prost::Message;

use crate::calls::{CallStream, MAX_STREAMED_BYTES};
use crate::keys;

const TOTAL_DEADLINE: Duration = Duration::from_secs(10);
/// A bit above the store's own request timeout (5 s), so the store's answer wins.
const RPC_TIMEOUT: Duration = Duration::from_secs(6);
const BACKOFF_START: Duration = Duration::from_millis(20);
const BACKOFF_CAP: Duration = Duration::from_millis(500);
/// Pairs asked for per Scan rpc (the store's default page).
const SCAN_PAGE: usize = 1000;

/// Options of [`MetaClient::scan_with`] (the `ScanRequest` flags).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanOptions {
    /// Return keys with empty values.
    pub keys_only: bool,
    /// Only the first key of each object prefix (decision 0034).
    pub first_per_object: bool,
}
/// Regions learned from PD at once when a scan walks past the cache.
const PREFETCH_REGIONS: u32 = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    Applied,
    /// Condition `index` did not hold; nothing was written.
    ConditionFailed {
        index: u32,
    },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// Retries exhausted, no leader, or PD unreachable.
    #[error("metadata unavailable: {0}")]
    Unavailable(String),
    /// The request cannot succeed as sent (e.g. keys span regions).
    #[error("invalid metadata request: {0}")]
    InvalidRequest(String),
    #[error("metadata internal error: {0}")]
    Internal(String),
}

impl ClientError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unavailable(_) => true,
            ClientError::InvalidRequest(_) => false,
            ClientError::Internal(_) => false,
        }
    }
}

#[derive(Clone)]
pub struct MetaClient {
    cache: Arc<RegionCache>,
    channels: Arc<Mutex<HashMap<String, MetashardClient<Channel>>>>,
    calls: Arc<Mutex<HashMap<String, Arc<StoreCalls>>>>,
}

/// The call stream to one store ([`crate::calls`]).
#[derive(Default)]
struct StoreCalls {
    current: Mutex<Option<Arc<CallStream>>>,
    /// Held while a stream is being opened, so callers wait for that one.
    opening: tokio::sync::Mutex<()>,
    /// The store answered `Unimplemented` (an older version): unary only.
    unsupported: AtomicBool,
}

impl StoreCalls {
    fn open_stream(&self) -> Option<Arc<CallStream>> {
        let cur = self.current.lock().expect("call stream lock poisoned");
        cur.as_ref().filter(|s| !s.has_ended()).cloned()
    }
}

/// The deadline and backoff of one client call.
struct Retry {
    deadline: Instant,
    backoff: Duration,
    last_immediate: bool,
}

impl Retry {
    fn new() -> Self {
        Retry {
            deadline: Instant::now() + TOTAL_DEADLINE,
            backoff: BACKOFF_START,
            last_immediate: false,
        }
    }

    /// Waits before the next attempt; `Unavailable(why)` once the deadline passed.
    /// `immediate` (a fresh leader hint) skips the wait, but never twice in a row.
    async fn wait(&mut self, why: String, immediate: bool) -> Result<(), ClientError> {
        let now = Instant::now();
        if now >= self.deadline {
            return Err(ClientError::Unavailable(why));
        }
        if immediate && !self.last_immediate {
            self.last_immediate = true;
            return Ok(());
        }
        self.last_immediate = false;
        tokio::time::sleep(self.backoff.min(self.deadline - now)).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_CAP);
        Ok(())
    }
}

/// What went wrong with one attempt.
enum Failure {
    /// Retry (after `Retry::wait`), `bool` = may retry at once.
    Retry(String, bool),
    Fatal(ClientError),
}

impl MetaClient {
    pub fn new(cache: Arc<RegionCache>) -> Self {
        MetaClient {
            cache,
            channels: Arc::new(Mutex::new(HashMap::new())),
            calls: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The open call stream to `route`'s store, opened if needed; `None`:
    /// the store takes no calls on a stream, use unary. A store that cannot
    /// be reached fails here as a unary call to it would.
    async fn stream_to(
        &self,
        route: &RegionRoute,
        c: &MetashardClient<Channel>,
    ) -> Result<Option<Arc<CallStream>>, Failure> {
        let store = {
            let mut calls = self.calls.lock().expect("call streams lock poisoned");
            // `get` first: no key allocated on every call.
            match calls.get(&route.leader_addr) {
                Some(s) => s.clone(),
                None => calls.entry(route.leader_addr.clone()).or_default().clone(),
            }
        };
        if store.unsupported.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if let Some(s) = store.open_stream() {
            return Ok(Some(s));
        }
        let _opening = store.opening.lock().await;
        if let Some(s) = store.open_stream() {
            return Ok(Some(s));
        }
        match tokio::time::timeout(RPC_TIMEOUT, CallStream::open(c.clone())).await {
            Ok(Ok(s)) => {
                let s = Arc::new(s);
                *store.current.lock().expect("call stream lock poisoned") = Some(s.clone());
                Ok(Some(s))
            }
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
                store.unsupported.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Ok(Err(s)) => Err(self.on_status(route, s)),
            Err(_) => Err(self.on_status(
                route,
                tonic::Status::deadline_exceeded("opening a call stream timed out"),
            )),
        }
    }

    fn client_for(&self, addr: &str) -> Result<MetashardClient<Channel>, Failure> {
        let mut chans = self.channels.lock().expect("channel cache lock poisoned");
        if let Some(c) = chans.get(addr) {
            return Ok(c.clone());
        }
        let ch = kura_pd_client::channel::lazy_channel(addr)
            .map_err(|e| Failure::Retry(format!("bad store address {addr}: {e}"), false))?;
        let c = MetashardClient::new(ch)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        chans.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// The leader route of `key` and a client to its store.
    async fn route(&self, key: &[u8]) -> Result<(RegionRoute, MetashardClient<Channel>), Failure> {
        match self.cache.locate(key).await {
            Ok(Some(r)) if r.has_leader() => {
                let c = self.client_for(&r.leader_addr)?;
                Ok((r, c))
            }
            Ok(Some(r)) => Err(Failure::Retry(
                format!("region {} has no known leader", r.region.id),
                false,
            )),
            Ok(None) => Err(Failure::Retry(
                "no region covers the key yet (cluster bootstrapping)".into(),
                false,
            )),
            Err(e) if e.is_retryable() => Err(Failure::Retry(format!("PD: {e}"), false)),
            Err(e) => Err(Failure::Fatal(ClientError::Internal(format!("PD: {e}")))),
        }
    }

    fn header(route: &RegionRoute) -> Option<RequestHeader> {
        Some(RequestHeader {
            region_id: route.region.id,
            epoch: route.region.epoch,
        })
    }

    /// Corrects the cache after a region error.
    fn on_region_error(&self, route: &RegionRoute, e: RegionError) -> Failure {
        let why = format!("region {}: {}", route.region.id, e.message);
        if let Some(nl) = e.not_leader {
            let hinted = nl.leader.is_some() && !nl.leader_addr.is_empty();
            self.cache
                .on_not_leader(route.region.id, nl.leader, &nl.leader_addr);
            return Failure::Retry(why, hinted);
        }
        if let Some(en) = e.epoch_not_match {
            let answered_by = route
                .leader
                .map(|l| (l.store_id, route.leader_addr.as_str()));
            self.cache
                .on_epoch_not_match(route.region.id, en.current_regions, answered_by);
            return Failure::Retry(why, true);
        }
        // RegionNotFound, KeyNotInRegion, ServerBusy or an unknown error.
        self.cache.invalidate(route.region.id);
        Failure::Retry(why, false)
    }

    /// A gRPC failure: the store may be down or the outcome unknown.
    fn on_status(&self, route: &RegionRoute, s: tonic::Status) -> Failure {
        match s.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                Failure::Fatal(ClientError::InvalidRequest(s.message().to_string()))
            }
            tonic::Code::Internal | tonic::Code::DataLoss | tonic::Code::Unimplemented => {
                Failure::Fatal(ClientError::Internal(s.message().to_string()))
            }
            _ => {
                self.cache.invalidate(route.region.id);
                Failure::Retry(
                    format!("store {}: {}", route.leader_addr, s.message()),
                    false,
                )
            }
        }
    }

    /// Awaits one rpc to `route`'s store under [`RPC_TIMEOUT`]; a timeout or
    /// gRPC error becomes the `Failure` `on_status` decides. `on`: the call
    /// stream it travels on, retired if the call times out — the store
    /// answers within its own timeout, so a stream that let a call go
    /// unanswered longer may be stuck while its connection stays up, and
    /// the retry must not wait on it again.
    async fn send<R>(
        &self,
        route: &RegionRoute,
        rpc: &str,
        on: Option<&CallStream>,
        call: impl Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    ) -> Result<R, Failure> {
        match tokio::time::timeout(RPC_TIMEOUT, call).await {
            Err(_) => {
                if let Some(s) = on {
                    s.retire();
                }
                Err(self.on_status(
                    route,
                    tonic::Status::deadline_exceeded(format!("{rpc} timed out")),
                ))
            }
            Ok(Err(s)) => Err(self.on_status(route, s)),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }

    async fn retry_or_fail(retry: &mut Retry, f: Failure) -> Result<(), ClientError> {
        match f {
            Failure::Retry(why, immediate) => retry.wait(why, immediate).await,
            Failure::Fatal(e) => Err(e),
        }
    }

    /// Linearizable point read.
    pub async fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Bytes>, ClientError> {
        let mut retry = Retry::new();
        loop {
            let f = match self.get_once(cf, key).await {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            Self::retry_or_fail(&mut retry, f).await?;
        }
    }

    async fn get_once(&self, cf: Cf, key: &[u8]) -> Result<Option<Bytes>, Failure> {
        let (route, mut c) = self.route(key).await?;
        let req = GetRequest {
            header: Self::header(&route),
            cf: cf as i32,
            key: Bytes::copy_from_slice(key),
        };
        let resp = match self.stream_to(&route, &c).await? {
            Some(s) => self.send(&route, "get", Some(&s), s.get(req)).await?,
            None => self.send(&route, "get", None, c.get(req)).await?,
        };
        if let Some(e) = resp.header.and_then(|h| h.region_error) {
            return Err(self.on_region_error(&route, e));
        }
        Ok(resp.found.then_some(resp.value))
    }

    /// Atomic conditional batch; all keys must fall in one region (routes by the first key of
    /// mutations, else of conditions).
    ///
    /// Retries after an unknown outcome (timeout or transport error after the
    /// request may have been sent) re-send the same batch. That is safe for
    /// how the gateway uses batches: every mutation of an S3 write is guarded
    /// by a condition on the state it read (NOT_EXISTS / VALUE_EQUALS), so if
    /// the first attempt did apply, the retry fails its condition instead of
    /// writing twice. The cost is that such a retry reports `ConditionFailed`
    /// for a batch that in fact applied; callers that must tell the two apart
    /// re-read the key. An unknown outcome is never reported as `Applied`.
    /// Region errors (NotLeader, EpochNotMatch, ...) mean the batch was not
    /// executed, so retrying them is exact.
    pub async fn batch(
        &self,
        conditions: Vec<Condition>,
        mutations: Vec<Mutation>,
    ) -> Result<BatchOutcome, ClientError> {
        let key = match (mutations.first(), conditions.first()) {
            (Some(m), _) => m.key.clone(),
            (None, Some(c)) => c.key.clone(),
            (None, None) => return Err(ClientError::InvalidRequest("empty batch".into())),
        };
        let mut retry = Retry::new();
        loop {
            let f = match self.batch_once(&key, &conditions, &mutations).await {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            Self::retry_or_fail(&mut retry, f).await?;
        }
    }

    async fn batch_once(
        &self,
        key: &[u8],
        conditions: &[Condition],
        mutations: &[Mutation],
    ) -> Result<BatchOutcome, Failure> {
        let (route, mut c) = self.route(key).await?;
        let req = BatchRequest {
            header: Self::header(&route),
            conditions: conditions.to_vec(),
            mutations: mutations.to_vec(),
        };
        let streamed = match req.encoded_len() <= MAX_STREAMED_BYTES {
            true => self.stream_to(&route, &c).await?,
            false => None,
        };
        let resp = match streamed {
            Some(s) => self.send(&route, "batch", Some(&s), s.batch(req)).await?,
            None => self.send(&route, "batch", None, c.batch(req)).await?,
        };
        if let Some(e) = resp.header.and_then(|h| h.region_error) {
            // The routing key is in the store's region but another key is
            // not: the batch spans regions and can never succeed.
            if let Some(kn) = &e.key_not_in_region {
                let reported = kura_proto::common::Region {
                    start_key: kn.start_key.clone(),
                    end_key: kn.end_key.clone(),
                    ..Default::default()
                };
                if kn.key.as_ref() != key && region_contains(&reported, key) {
                    return Err(Failure::Fatal(ClientError::InvalidRequest(format!(
                        "batch keys span regions (region {} ends before a key)",
                        kn.region_id
                    ))));
                }
            }
            return Err(self.on_region_error(&route, e));
        }
        Ok(if resp.succeeded {
            BatchOutcome::Applied
        } else {
            BatchOutcome::ConditionFailed {
                index: resp.failed_condition,
            }
        })
    }

    /// Where the region that holds `key` ends, as the region cache knows it
    /// (`None`: at the end of the keyspace, or not known). For grouping keys
    /// into per-region batches; a stale answer only costs a batch that
    /// fails with `InvalidRequest` (its keys span regions).
    pub async fn region_end(&self, key: &[u8]) -> Option<Bytes> {
        match self.cache.locate(key).await {
            Ok(Some(route)) if !route.region.end_key.is_empty() => Some(route.region.end_key),
            _ => None,
        }
    }

    /// Deletes `keys` of `cf` wherever they live: one unconditional batch
    /// per region (grouped through the region cache). Deletes are
    /// idempotent, so a group that a split cut in two is simply sent again
    /// key by key. Not atomic across regions.
    pub async fn delete_many(&self, cf: Cf, mut keys: Vec<Bytes>) -> Result<(), ClientError> {
        keys.sort();
        keys.dedup();
        let delete = |k: &Bytes| Mutation {
            op: mutation::Op::Delete as i32,
            cf: cf as i32,
            key: k.clone(),
            value: Bytes::new(),
        };
        let mut i = 0;
        while i < keys.len() {
            // Keys i..j lie in the region that holds key i (as cached).
            let j = match self.region_end(&keys[i]).await {
                None => keys.len(),
                Some(end) => i + keys[i..].partition_point(|k| k.as_ref() < end.as_ref()),
            };
            let j = j.max(i + 1);
            let group: Vec<Mutation> = keys[i..j].iter().map(delete).collect();
            match self.batch(Vec::new(), group).await {
                Ok(_) => {}
                // The cache was stale and the group spans regions: one by one.
                Err(ClientError::InvalidRequest(_)) => {
                    for k in &keys[i..j] {
                        self.batch(Vec::new(), vec![delete(k)]).await?;
                    }
                }
                Err(e) => return Err(e),
            }
            i = j;
        }
        Ok(())
    }

    /// Linearizable scan of [start, end) (empty end = to the end of the keyspace) across regions
    /// in key order, returning at most `limit` pairs.
    pub async fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
        keys_only: bool,
    ) -> Result<Vec<KvPair>, ClientError> {
        let opts = ScanOptions {
            keys_only,
            first_per_object: false,
        };
        self.scan_with(cf, start, end, limit, opts).await
    }

    /// [`MetaClient::scan`] with every option of the `Scan` rpc. With
    /// `first_per_object` the stores return only the first key of each object
    /// prefix (decision 0034), and the next page starts past the last
    /// returned key's object (an object never spans regions).
    pub async fn scan_with(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
        opts: ScanOptions,
    ) -> Result<Vec<KvPair>, ClientError> {
        self.scan_rollup(cf, start, end, limit, opts, None).await
    }

    /// [`MetaClient::scan_with`] with a ListObjects delimiter (`rollup`,
    /// docs/decisions/0035): the stores return one key per common prefix
    /// and seek past the rest of it, and a full page's successor starts
    /// past the last key's common prefix. A common prefix may span regions:
    /// the next region then returns its first key under it again (the
    /// caller skips what sorts before its own cursor).
    pub async fn scan_rollup(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
        opts: ScanOptions,
        rollup: Option<&keys::Rollup>,
    ) -> Result<Vec<KvPair>, ClientError> {
        let first_per_object = opts.first_per_object;
        let mut out: Vec<KvPair> = Vec::new();
        if limit == 0 || (!end.is_empty() && start >= end) {
            return Ok(out);
        }
        let mut cur = start.to_vec();
        let mut retry = Retry::new();
        loop {
            let page = (limit - out.len()).min(SCAN_PAGE);
            let (kvs, next_region) = loop {
                match self.scan_once(cf, &cur, end, page, opts, rollup).await {
                    Ok(v) => break v,
                    Err(f) => Self::retry_or_fail(&mut retry, f).await?,
                }
            };
            // Progress: the next region gets a fresh retry budget (a scan
            // may walk many regions; the deadline is per step, not per scan).
            retry = Retry::new();
            let full = kvs.len() >= page;
            let last = kvs.last().map(|kv| kv.key.to_vec());
            out.extend(kvs);
            if out.len() >= limit {
                out.truncate(limit);
                return Ok(out);
            }
            match (full, last, next_region) {
                // The page filled up: more may follow in the same region.
                (true, Some(mut last), _) => {
                    let rolled = rollup.and_then(|r| r.seek_past(&last));
                    cur = match rolled.or_else(|| {
                        first_per_object
                            .then(|| keys::seek_after_object_of(&last))
                            .flatten()
                    }) {
                        Some(past) => past,
                        None => {
                            last.push(0);
                            last
                        }
                    };
                }
                (_, _, Some(next)) if end.is_empty() || next.as_slice() < end => {
                    // Walking into regions the cache does not know: learn
                    // the next ones with one PD call, not one per region.
                    if !self.cache.is_cached(&next) {
                        if let Err(e) = self.cache.load_range(&next, end, PREFETCH_REGIONS).await {
                            tracing::debug!(error = %e, "region prefetch failed");
                        }
                    }
                    cur = next
                }
                _ => return Ok(out),
            }
        }
    }

    /// One Scan rpc; returns the pairs and, when the region ended first, the next region's start.
    async fn scan_once(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
        opts: ScanOptions,
        rollup: Option<&keys::Rollup>,
    ) -> Result<(Vec<KvPair>, Option<Vec<u8>>), Failure> {
        let (route, mut c) = self.route(start).await?;
        let req = ScanRequest {
            header: Self::header(&route),
            cf: cf as i32,
            start_key: Bytes::copy_from_slice(start),
            end_key: Bytes::copy_from_slice(end),
            limit: limit as u32,
            keys_only: opts.keys_only,
            first_per_object: opts.first_per_object,
            delimiter: rollup.map_or_else(Bytes::new, |r| Bytes::copy_from_slice(&r.delimiter)),
            delimiter_prefix: rollup.map_or_else(Bytes::new, |r| Bytes::copy_from_slice(&r.prefix)),
        };
        let resp = self.send(&route, "scan", None, c.scan(req)).await?;
        if let Some(e) = resp.header.and_then(|h| h.region_error) {
            return Err(self.on_region_error(&route, e));
        }
        let next = (resp.region_exhausted && !resp.region_end_key.is_empty())
            .then(|| resp.region_end_key.to_vec());
        Ok((resp.kvs, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryability_is_exhaustive() {
        assert!(ClientError::Unavailable("x".into()).is_retryable());
        assert!(!ClientError::InvalidRequest("x".into()).is_retryable());
        assert!(!ClientError::Internal("x".into()).is_retryable());
    }

    #[tokio::test]
    async fn retry_gives_up_at_deadline() {
        let mut r = Retry::new();
        r.deadline = Instant::now() + Duration::from_millis(60);
        let mut n = 0;
        let err = loop {
            match r.wait("down".into(), false).await {
                Ok(()) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, ClientError::Unavailable(ref w) if w == "down"));
        assert!((1..10).contains(&n));
        assert!(r.backoff <= BACKOFF_CAP);
    }
}
