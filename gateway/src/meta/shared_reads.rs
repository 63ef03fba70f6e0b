//! Linearizable reads of one key, shared by the requests that want it at once.
//!
//! Every request to a bucket reads the bucket's record to be authorized, and
//! every object write reads it again after its commit (decision 0033), so
//! under load many requests read the same key at the same moment: two of a
//! small PUT's three metadata reads, each a gRPC call and a lease read.
//!
//! One read answers every caller that arrived before it was sent: its
//! linearization point lies inside each such caller's own call, so each gets
//! what a read of its own would have returned, or something newer. Callers
//! that arrive while a read is in flight wait for the next one, sent as soon
//! as the current one answers. So at most one read per key is in flight, a
//! caller waits for at most two, and a caller alone reads at once, on its own
//! task (decision 0052).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use kura_metashard::client::{Cf, ClientError};
use tokio::sync::oneshot;

pub type Answer = Result<Option<Bytes>, ClientError>;
type Key = (Cf, Vec<u8>);
type Waiters = Vec<oneshot::Sender<Answer>>;

/// Keys with a read in flight, and who waits for the next read of each.
#[derive(Default)]
pub struct SharedReads {
    next: Mutex<HashMap<Key, Waiters>>,
}

impl SharedReads {
    /// `read()` of `key`, shared with concurrent callers of the same key:
    /// `read` must be a linearizable read, sent when called.
    pub async fn get<F, Fut>(self: &Arc<Self>, cf: Cf, key: &[u8], read: F) -> Answer
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Answer> + Send + 'static,
    {
        crate::metrics::shared_read_caller();
        let waiting = {
            let mut next = self.lock();
            match next.entry((cf, key.to_vec())) {
                Entry::Occupied(mut e) => {
                    let (tx, rx) = oneshot::channel();
                    e.get_mut().push(tx);
                    Some(rx)
                }
                Entry::Vacant(e) => {
                    e.insert(Vec::new());
                    None
                }
            }
        };
        match waiting {
            Some(rx) => match rx.await {
                Ok(answer) => answer,
                // The runtime is shutting down under the round.
                Err(_) => read().await,
            },
            None => {
                crate::metrics::shared_read_sent();
                let answer = read();
                // Hands the key on when this read ends, also when the caller
                // is dropped halfway (a client that went away).
                let _handover = Handover {
                    reads: self.clone(),
                    next: Some(((cf, key.to_vec()), read)),
                };
                answer.await
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Waiters>> {
        // Pushes and takes only: a panic elsewhere cannot leave the map half-changed.
        self.next.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes who waits for the next read of `key`; forgets the key when no one does.
    fn take_waiters(&self, key: &Key) -> Waiters {
        let mut next = self.lock();
        match next.get_mut(key) {
            Some(w) if !w.is_empty() => std::mem::take(w),
            _ => {
                next.remove(key);
                Vec::new()
            }
        }
    }
}

/// Ends a read of a key: the callers that arrived meanwhile get a read of
/// their own, sent now on a task of its own (and one more for those arriving
/// during that read, and so on), or the key is forgotten.
struct Handover<F, Fut>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    reads: Arc<SharedReads>,
    next: Option<(Key, F)>,
}

impl<F, Fut> Drop for Handover<F, Fut>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    fn drop(&mut self) {
        let Some((key, read)) = self.next.take() else {
            return;
        };
        let mut waiters = self.reads.take_waiters(&key);
        if waiters.is_empty() {
            return;
        }
        // Outside a runtime (its shutdown) the waiters are dropped and read alone.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.reads.lock().remove(&key);
            return;
        };
        let reads = self.reads.clone();
        rt.spawn(async move {
            while !waiters.is_empty() {
                crate::metrics::shared_read_sent();
                let answer = read().await;
                for w in waiters {
                    let _ = w.send(answer.clone());
                }
                waiters = reads.take_waiters(&key);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    /// A key whose value a writer bumps; each read takes 2 ms, sees the value
    /// in its middle and counts itself.
    #[derive(Clone, Default)]
    struct Store {
        value: Arc<AtomicU64>,
        reads: Arc<AtomicU64>,
    }

    impl Store {
        fn reader(
            &self,
        ) -> impl Fn() -> futures::future::BoxFuture<'static, Answer> + Send + 'static {
            let s = self.clone();
            move || {
                let s = s.clone();
                Box::pin(async move {
                    s.reads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let v = s.value.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Ok(Some(Bytes::from(v.to_be_bytes().to_vec())))
                })
            }
        }
    }

    fn value(a: &Answer) -> u64 {
        let b = a.as_ref().unwrap().as_ref().unwrap();
        u64::from_be_bytes(b[..].try_into().unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_caller_sees_what_was_written_before_it_called() {
        let shared = Arc::new(SharedReads::default());
        let store = Store::default();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    store.value.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_micros(300)).await;
                }
            })
        };
        let mut callers = Vec::new();
        for i in 0..400u64 {
            let (shared, store) = (shared.clone(), store.clone());
            callers.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(i * 150)).await;
                let before = store.value.load(Ordering::SeqCst);
                let got = value(&shared.get(Cf::Meta, b"bucket", store.reader()).await);
                assert!(
                    got >= before,
                    "read {got}, but {before} was written before the call"
                );
            }));
        }
        for c in callers {
            c.await.unwrap();
        }
        writer.await.unwrap();
        let reads = store.reads.load(Ordering::SeqCst);
        assert!(
            reads < 400,
            "{reads} reads for 400 overlapping callers: none shared"
        );
        assert!(
            shared.lock().is_empty(),
            "every key is forgotten once no one waits"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_are_answered_when_the_first_caller_goes_away() {
        let shared = Arc::new(SharedReads::default());
        let store = Store::default();
        let first = {
            let (shared, store) = (shared.clone(), store.clone());
            tokio::spawn(async move { shared.get(Cf::Meta, b"k", store.reader()).await })
        };
        tokio::time::sleep(Duration::from_micros(300)).await;
        let waiter = {
            let (shared, store) = (shared.clone(), store.clone());
            tokio::spawn(async move { shared.get(Cf::Meta, b"k", store.reader()).await })
        };
        tokio::time::sleep(Duration::from_micros(300)).await;
        first.abort();
        let answer = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter is answered")
            .unwrap();
        assert_eq!(value(&answer), 0);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(shared.lock().is_empty());
    }

    #[test]
    fn waiters_are_taken_once_and_the_key_is_forgotten_when_none_wait() {
        let reads = SharedReads::default();
        let key = (Cf::Meta, b"k".to_vec());
        reads.lock().insert(key.clone(), Vec::new());
        assert!(reads.take_waiters(&key).is_empty());
        assert!(
            reads.lock().is_empty(),
            "a key no one waits on is forgotten"
        );

        reads.lock().insert(key.clone(), Vec::new());
        let (tx, _rx) = oneshot::channel();
        reads.lock().get_mut(&key).unwrap().push(tx);
        assert_eq!(reads.take_waiters(&key).len(), 1);
        assert!(
            reads.lock().get(&key).is_some_and(|w| w.is_empty()),
            "the key stays marked in flight for the round just taken"
        );
        assert!(reads.take_waiters(&key).is_empty());
        assert!(reads.lock().is_empty());
    }
}
