//! Call streams: requests multiplexed over one long-lived gRPC stream, each
//! with an id, answered in completion order (decision 0055: `Metashard/Calls`;
//! decision 0059: `DataNode/PutFragments`, `DataNode/GetFragments`). Both
//! halves: [`serve_calls`] for servers, [`CallSender`] for clients; the
//! messages come as any stream (tonic's `Streaming`, or decoded by hand).
//!
//! [`CallTable`] matches answers to waiting callers by id and ends every wait
//! when the stream ends. A caller that stops waiting (answered, timed out,
//! dropped) forgets its entry ([`Waiting`]'s drop), so entries never outlive
//! their callers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use prometheus::IntGauge;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// The answers of a served call stream, in completion order.
pub type AnswerStream<A> = Pin<Box<dyn Stream<Item = Result<A, Status>> + Send + 'static>>;

/// What a server's handler makes of one call.
pub enum Handled<A> {
    /// Its answer, once ready; calls run side by side.
    Answer(Pin<Box<dyn Future<Output = A> + Send>>),
    /// (Tests: a failpoint.) The stream stops for good, as a stuck one would:
    /// nothing more read or answered until the server stops.
    Stall,
}

/// Server half: answers the calls of `inbound`, each as `handle` says, until
/// it ends (once the calls taken are answered), the client goes away, or
/// `stopped` completes (then the client hears `Unavailable` with `stopping`,
/// and calls still running are dropped). `open` counts the streams served.
pub fn serve_calls<R, A>(
    inbound: impl Stream<Item = Result<R, Status>> + Send + 'static,
    stopped: impl Future<Output = ()> + Send + 'static,
    stopping: &'static str,
    open: &'static IntGauge,
    handle: impl FnMut(R) -> Handled<A> + Send + 'static,
) -> AnswerStream<A>
where
    R: Send + 'static,
    A: Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run_calls(inbound, tx, stopped, stopping, open, handle));
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|a| (a, rx))
    }))
}

async fn run_calls<R, A>(
    inbound: impl Stream<Item = Result<R, Status>>,
    answers: mpsc::UnboundedSender<Result<A, Status>>,
    stopped: impl Future<Output = ()>,
    stopping: &'static str,
    open: &'static IntGauge,
    mut handle: impl FnMut(R) -> Handled<A>,
) {
    open.inc();
    let _open = Served(open);
    tokio::pin!(stopped);
    tokio::pin!(inbound);
    let mut running = FuturesUnordered::new();
    let mut inbound_open = true;
    loop {
        if !inbound_open && running.is_empty() {
            return;
        }
        tokio::select! {
            m = inbound.next(), if inbound_open => match m {
                Some(Ok(call)) => match handle(call) {
                    Handled::Answer(a) => running.push(a),
                    Handled::Stall => {
                        (&mut stopped).await;
                        return;
                    }
                },
                // The client closed its side (or the connection broke):
                // finish what runs, then end the answers.
                None | Some(Err(_)) => inbound_open = false,
            },
            Some(a) = running.next(), if !running.is_empty() => {
                if answers.send(Ok(a)).is_err() {
                    return;
                }
            }
            _ = &mut stopped => {
                let _ = answers.send(Err(Status::unavailable(stopping)));
                return;
            }
        }
    }
}

/// Counts a served stream in its gauge until its task ends.
struct Served(&'static IntGauge);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.dec();
    }
}

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
        answers: impl Stream<Item = Result<A, Status>> + Send + 'static,
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
    answers: impl Stream<Item = Result<A, Status>>,
    table: Arc<CallTable<T>>,
    split: impl Fn(A) -> (u64, Result<T, Status>),
) {
    tokio::pin!(answers);
    let why = loop {
        match answers.next().await {
            Some(Ok(a)) => {
                let (id, outcome) = split(a);
                table.answer(id, outcome);
            }
            None => break Status::unavailable("call stream ended"),
            Some(Err(s)) => {
                break Status::unavailable(format!("call stream failed: {}", s.message()))
            }
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
