//! The client half of a call stream: requests multiplexed over one long-lived
//! gRPC stream, each with an id, answered in completion order (decision 0055:
//! `Metashard/Calls`; decision 0059: `DataNode/PutFragments`).
//!
//! [`CallTable`] matches answers to waiting callers by id and ends every wait
//! when the stream ends. A caller that stops waiting (answered, timed out,
//! dropped) forgets its entry ([`Waiting`]'s drop), so entries never outlive
//! their callers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tonic::{Status, Streaming};

/// The sending half of an open call stream and the table of its waiting
/// calls (whose answers a task reads, [`read_answers`]).
pub struct CallSender<Req, T> {
    requests: mpsc::UnboundedSender<Req>,
    table: Arc<CallTable<T>>,
}

impl<Req, T: Send + 'static> CallSender<Req, T> {
    /// A stream opened with the receiver of `requests` answered `answers`:
    /// starts the task that reads them. `split` turns an answer message into
    /// its call id and outcome.
    pub fn new<A: Send + 'static>(
        requests: mpsc::UnboundedSender<Req>,
        answers: Streaming<A>,
        split: impl Fn(A) -> (u64, Result<T, Status>) + Send + 'static,
    ) -> Self {
        let table = Arc::new(CallTable::default());
        tokio::spawn(read_answers(answers, table.clone(), split));
        CallSender { requests, table }
    }

    /// The stream ended (or was retired): calls fail at once; open another.
    pub fn has_ended(&self) -> bool {
        self.table.has_ended()
    }

    /// Takes no more calls: the next call opens another stream. Calls
    /// already waiting still get their answers; the stream closes once the
    /// last holder drops it.
    pub fn retire(&self) {
        self.table.retire();
    }

    /// Sends the request `request(id)` makes and waits for its answer.
    /// Dropping the future forgets the call (its answer, if it comes, is
    /// dropped); `Unavailable` when the stream ended before an answer.
    pub async fn call(&self, request: impl FnOnce(u64) -> Req) -> Result<T, Status> {
        let ended = || Err(Status::unavailable("call stream ended"));
        let Some(mut call) = self.table.register() else {
            return ended();
        };
        if self.requests.send(request(call.id)).is_err() {
            return ended();
        }
        call.answer().await
    }
}

/// The waiting calls of one stream, and whether it still takes calls.
pub struct CallTable<T> {
    waiting: Mutex<HashMap<u64, oneshot::Sender<Result<T, Status>>>>,
    next_id: AtomicU64,
    ended: AtomicBool,
}

impl<T> Default for CallTable<T> {
    fn default() -> Self {
        CallTable {
            waiting: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            ended: AtomicBool::new(false),
        }
    }
}

impl<T> CallTable<T> {
    /// The stream ended (or was retired): calls fail at once; open another.
    pub fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Takes no more calls. Calls already waiting still get their answers.
    pub fn retire(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }

    /// A new call's id and the wait for its answer. `None` once the stream has
    /// ended: checked after the entry is in, so either the final drain of
    /// [`Self::end`] answers it or this sees the end.
    pub fn register(&self) -> Option<Waiting<'_, T>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        let waiting = Waiting {
            table: self,
            id,
            answer: rx,
        };
        (!self.has_ended()).then_some(waiting)
    }

    /// Hands `answer` to call `id`, if it still waits.
    pub fn answer(&self, id: u64, answer: Result<T, Status>) {
        let waiter = self.lock().remove(&id);
        if let Some(w) = waiter {
            let _ = w.send(answer);
        }
    }

    /// The stream ended: no more calls, and every waiting one gets `why`.
    pub fn end(&self, why: Status) {
        self.ended.store(true, Ordering::SeqCst);
        let left: Vec<_> = self.lock().drain().collect();
        for (_, w) in left {
            let _ = w.send(Err(why.clone()));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<T, Status>>>> {
        // A panic elsewhere while holding it leaves a plain map: keep using it.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One registered call: its id (to send with the request) and its answer.
pub struct Waiting<'a, T> {
    table: &'a CallTable<T>,
    pub id: u64,
    answer: oneshot::Receiver<Result<T, Status>>,
}

impl<T> Waiting<'_, T> {
    /// The call's answer; `Unavailable` if the stream ended without one.
    pub async fn answer(&mut self) -> Result<T, Status> {
        (&mut self.answer)
            .await
            .unwrap_or_else(|_| Err(Status::unavailable("call stream ended")))
    }
}

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
    }
}

/// Reads a stream's answers into `table` until it ends, then ends the table
/// (every call still waiting gets `Unavailable`). `split` turns an answer
/// message into its call id and outcome.
pub async fn read_answers<A, T>(
    mut answers: Streaming<A>,
    table: Arc<CallTable<T>>,
    split: impl Fn(A) -> (u64, Result<T, Status>),
) {
    let why = loop {
        match answers.message().await {
            Ok(Some(a)) => {
                let (id, outcome) = split(a);
                table.answer(id, outcome);
            }
            Ok(None) => break Status::unavailable("call stream ended"),
            Err(s) => break Status::unavailable(format!("call stream failed: {}", s.message())),
        }
    };
    table.end(why);
}

/// A call answer's outcome from its `code` (0 = ok), `message` and response.
pub fn outcome<R>(code: i32, message: String, response: Option<R>) -> Result<R, Status> {
    match (code, response) {
        (0, Some(r)) => Ok(r),
        (0, None) => Err(Status::internal("a call answered without a response")),
        (code, _) => Err(Status::new(tonic::Code::from(code), message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_reach_their_callers_and_the_end_reaches_the_rest() {
        let table: CallTable<u32> = CallTable::default();
        let mut a = table.register().unwrap();
        let mut b = table.register().unwrap();
        let c = table.register().unwrap();
        assert_ne!(a.id, b.id);
        // Out of order, and an answer for a call nobody waits on is dropped.
        table.answer(b.id, Ok(2));
        table.answer(999, Ok(9));
        assert_eq!(b.answer().await.unwrap(), 2);
        // A caller that stops waiting forgets its entry.
        let c_id = c.id;
        drop(c);
        assert!(!table.lock().contains_key(&c_id));
        table.end(Status::unavailable("gone"));
        assert_eq!(
            a.answer().await.unwrap_err().code(),
            tonic::Code::Unavailable
        );
        assert!(table.has_ended());
        assert!(table.register().is_none(), "no calls after the end");
        assert!(table.lock().is_empty());
    }

    #[tokio::test]
    async fn a_retired_table_takes_no_calls_but_answers_waiting_ones() {
        let table: CallTable<&'static str> = CallTable::default();
        let mut a = table.register().unwrap();
        table.retire();
        assert!(table.register().is_none());
        table.answer(a.id, Ok("late"));
        assert_eq!(a.answer().await.unwrap(), "late");
    }

    #[test]
    fn outcomes_from_codes() {
        assert_eq!(outcome(0, String::new(), Some(1)).unwrap(), 1);
        assert_eq!(
            outcome::<u8>(0, String::new(), None).unwrap_err().code(),
            tonic::Code::Internal
        );
        let e = outcome::<u8>(tonic::Code::NotFound as i32, "no".into(), None).unwrap_err();
        assert_eq!((e.code(), e.message()), (tonic::Code::NotFound, "no"));
    }
}
