//! Reading a POST form as a stream (multer): the fields before the file
//! part, capped; then the file part handed on as a byte stream; then the
//! rest, skipped.
//!
//! Memory: multer's parser drains its input until the input is not ready,
//! so a fast client could fill its buffer far ahead of the consumer. The
//! input is therefore [`Paced`]: one read chunk per poll of the parser, so
//! its buffer holds at most one chunk (hyper reads at most ~400 KiB at a
//! time) plus a boundary. And until the file part starts, the bytes taken
//! from the client are capped ([`PRE_DATA_BUDGET`]), so a part header that
//! never ends cannot grow the buffer either.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use s3s::{S3Error, S3ErrorCode, StdError};

use super::error::{FormError, FormResult};
use crate::front::form::MAX_FIELDS_BYTES;

/// Raw bytes (fields, part headers, boundaries) taken from the client before
/// the file part's content: AWS's 20 KiB of fields and room for their framing.
pub const PRE_DATA_BUDGET: u64 = 2 * MAX_FIELDS_BYTES as u64;
/// Bytes of fields after the file part read (and ignored, as AWS does)
/// so the connection can be reused; past this it is closed instead.
pub const TRAILING_BUDGET: u64 = 64 * 1024;
/// Bytes read on of a refused form before answering, so a small form's
/// client is not reset while it still sends; a large one is not read.
pub const REFUSED_BUDGET: u64 = 256 * 1024;
/// How long reading on (either budget) may take.
const SKIP_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// How far the parser got through the request body.
pub struct Progress {
    /// Bytes taken from the client.
    taken: AtomicU64,
    /// The file part has started: the pre-data cap no longer applies.
    in_file: AtomicBool,
    /// The client's body ended (all of it was read).
    ended: AtomicBool,
    /// No more than this many bytes are taken (set when skipping the rest).
    stop_at: AtomicU64,
    /// Answers `read_fields` got from the parser (a field, a piece of one).
    parsed: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            taken: AtomicU64::new(0),
            in_file: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            stop_at: AtomicU64::new(u64::MAX),
            parsed: AtomicU64::new(0),
        }
    }
}

impl Progress {
    pub fn body_fully_read(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }
}

/// Marks the fields before the file as too large (an input stream error,
/// recognised when multer hands it back).
#[derive(Debug, thiserror::Error)]
#[error("POST form fields before the file are too large")]
struct PreDataOverflow;

/// Ends reading once skipping the rest of a form has taken its budget.
#[derive(Debug, thiserror::Error)]
#[error("stopped reading the rest of the POST form")]
struct ReadLimit;

/// The request body, at most one chunk per poll of the parser (module doc).
pub struct Paced<S> {
    inner: S,
    progress: Arc<Progress>,
    /// A chunk was just handed out: the next poll answers Pending (and
    /// wakes at once), which ends the parser's drain loop.
    just_gave: bool,
    /// `Progress::parsed` at this stream's last answer.
    seen_parsed: u64,
}

impl<S> Paced<S> {
    pub fn new(inner: S, progress: Arc<Progress>) -> Self {
        Paced {
            inner,
            progress,
            just_gave: false,
            seen_parsed: 0,
        }
    }
}

impl<S> Stream for Paced<S>
where
    S: Stream<Item = Result<Bytes, StdError>> + Unpin,
{
    type Item = Result<Bytes, StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.just_gave {
            self.just_gave = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let p = self.progress.clone();
        // Before the file part, a chunk is pulled only when the parser asks
        // twice with no answer to `read_fields` in between: it then really
        // lacks bytes. (It polls its input on every call, so it would
        // otherwise take a chunk per field from a fast client, and a large
        // first chunk, or an h2 client's many frames, would pass the budget
        // below although the fields are small.)
        if !p.in_file.load(Ordering::Relaxed) {
            let parsed = p.parsed.load(Ordering::Relaxed);
            if parsed != self.seen_parsed {
                self.seen_parsed = parsed;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        let taken = p.taken.load(Ordering::Relaxed);
        if !p.in_file.load(Ordering::Relaxed) && taken > PRE_DATA_BUDGET {
            return Poll::Ready(Some(Err(Box::new(PreDataOverflow))));
        }
        if taken > p.stop_at.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(Box::new(ReadLimit))));
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                p.taken.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                self.just_gave = true;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                p.ended.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

pub type Parser = multer::Multipart<'static>;

/// The fields of a form before its file part, names lowercased (AWS's
/// field names are case-insensitive), in the order sent.
#[derive(Debug, Default)]
pub struct Fields {
    list: Vec<(String, String)>,
}

impl Fields {
    /// The first value of `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.list
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.list.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    #[cfg(test)]
    pub fn of(pairs: &[(&str, &str)]) -> Self {
        Fields {
            list: pairs
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
                .collect(),
        }
    }
}

/// The file part, not read yet.
pub struct FilePart {
    pub field: multer::Field<'static>,
    /// The file name the client gave (for `${filename}`).
    pub file_name: String,
}

/// Reads the fields up to the file part.
pub async fn read_fields(
    parser: &mut Parser,
    progress: &Progress,
) -> FormResult<(Fields, FilePart)> {
    let mut fields = Fields::default();
    let mut size = 0usize;
    loop {
        let Some(mut field) = parser.next_field().await.map_err(parse_error)? else {
            return Err(FormError::NoFile);
        };
        progress.parsed.fetch_add(1, Ordering::Relaxed);
        let name = field.name().unwrap_or_default().to_ascii_lowercase();
        if name == "file" {
            progress.in_file.store(true, Ordering::Relaxed);
            let file_name = field.file_name().unwrap_or_default().to_string();
            return Ok((fields, FilePart { field, file_name }));
        }
        size += name.len();
        let mut value = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(parse_error)? {
            progress.parsed.fetch_add(1, Ordering::Relaxed);
            size += chunk.len();
            if size > MAX_FIELDS_BYTES {
                return Err(FormError::PreDataTooLarge);
            }
            value.extend_from_slice(&chunk);
        }
        if size > MAX_FIELDS_BYTES {
            return Err(FormError::PreDataTooLarge);
        }
        let value = String::from_utf8(value)
            .map_err(|_| FormError::Malformed(format!("field {name:?} is not UTF-8")))?;
        fields.list.push((name, value));
    }
}

/// Reads the rest of the form, at most `budget` more bytes, ignoring it
/// (AWS ignores fields after the file). Whether the body was read to its end.
pub async fn skip_rest(parser: &mut Parser, progress: &Progress, budget: u64) -> bool {
    tokio::time::timeout(SKIP_TIME, skip(parser, progress, budget))
        .await
        .unwrap_or(false)
}

async fn skip(parser: &mut Parser, progress: &Progress, budget: u64) -> bool {
    // Enforced by `Paced`: multer drains an unfinished part inside `next_field`.
    let start = progress.taken.load(Ordering::Relaxed);
    progress
        .stop_at
        .store(start.saturating_add(budget), Ordering::Relaxed);
    loop {
        match parser.next_field().await {
            Ok(Some(mut field)) => loop {
                match field.chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => return false,
                }
            },
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// The file part as the object writer reads it. Errors keep their meaning
/// for `error::body_error`: the client's own body errors (the idle timeout's
/// RequestTimeout) pass through, a broken form is MalformedPOSTRequest.
pub struct FileStream(pub multer::Field<'static>);

impl Stream for FileStream {
    type Item = Result<Bytes, StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.0.poll_next_unpin(cx) {
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(match e {
                multer::Error::StreamReadFailed(inner) => inner,
                other => Box::new(S3Error::with_message(
                    S3ErrorCode::MalformedPOSTRequest,
                    format!("The body of your POST request is not well-formed multipart/form-data: {other}"),
                )),
            }))),
            Poll::Ready(Some(Ok(chunk))) => Poll::Ready(Some(Ok(chunk))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl s3s::stream::ByteStream for FileStream {}

/// A parser error before the file part.
fn parse_error(e: multer::Error) -> FormError {
    match e {
        multer::Error::StreamReadFailed(inner) => {
            if inner.is::<PreDataOverflow>() {
                return FormError::PreDataTooLarge;
            }
            match inner.downcast::<S3Error>() {
                // The idle timeout's RequestTimeout.
                Ok(s3) => FormError::Gw(crate::error::GwError::BodyRejected(*s3)),
                Err(other) => {
                    tracing::debug!(error = %other, "POST form body ended with an error");
                    FormError::Gw(crate::error::GwError::IncompleteBody)
                }
            }
        }
        other => FormError::Malformed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: Vec<&'static [u8]>) -> impl Stream<Item = Result<Bytes, StdError>> + Unpin {
        futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))))
    }

    fn parser(chunks: Vec<&'static [u8]>) -> (Parser, Arc<Progress>) {
        let progress = Arc::new(Progress::default());
        let paced = Paced::new(body(chunks), progress.clone());
        (multer::Multipart::new(paced, "XX"), progress)
    }

    #[tokio::test]
    async fn fields_then_streamed_file_then_ignored_fields() {
        let (mut p, progress) = parser(vec![
            b"--XX\r\nContent-Disposition: form-data; name=\"Key\"\r\n\r\nup/${filename}\r\n",
            b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhel",
            b"lo\r\n--XX\r\nContent-Disposition: form-data; name=\"after\"\r\n\r\nx\r\n--XX--\r\n",
        ]);
        let (fields, file) = read_fields(&mut p, &progress).await.unwrap();
        assert_eq!(fields.get("key"), Some("up/${filename}"));
        assert_eq!(file.file_name, "a.txt");
        let mut s = FileStream(file.field);
        let mut got = Vec::new();
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, b"hello");
        drop(s); // as the writer drops the file part when done
        assert!(skip_rest(&mut p, &progress, TRAILING_BUDGET).await);
        assert!(progress.body_fully_read());
    }

    /// A fast client's chunks (as an h2 browser sends them) or one large
    /// first chunk holding fields and file: the parser takes no chunk it does
    /// not need before the file, so small fields never hit the budget.
    #[tokio::test]
    async fn fields_from_a_fast_client_stay_under_the_budget() {
        let mut head = String::new();
        for i in 0..12 {
            head.push_str(&format!(
                "--XX\r\nContent-Disposition: form-data; name=\"x-amz-meta-{i}\"\r\n\r\nvalue {i}\r\n"
            ));
        }
        head.push_str(
            "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n",
        );
        let head: &'static [u8] = Box::leak(head.into_bytes().into_boxed_slice());
        let piece: &'static [u8] = Box::leak(vec![b'z'; 16 << 10].into_boxed_slice());
        let first: &'static [u8] =
            Box::leak([head, &[b'y'; 100 << 10][..]].concat().into_boxed_slice());
        for chunks in [
            [vec![head], vec![piece; 8], vec![&b"\r\n--XX--\r\n"[..]]].concat(),
            vec![first, piece, &b"\r\n--XX--\r\n"[..]],
        ] {
            let want: usize = chunks[1..chunks.len() - 1]
                .iter()
                .map(|c| c.len())
                .sum::<usize>()
                + chunks[0].len()
                - head.len();
            let (mut p, progress) = parser(chunks);
            let (fields, file) = read_fields(&mut p, &progress).await.unwrap();
            assert_eq!(fields.get("x-amz-meta-11"), Some("value 11"));
            let mut s = FileStream(file.field);
            let mut got = 0;
            while let Some(c) = s.next().await {
                got += c.unwrap().len();
            }
            assert_eq!(got, want);
        }
    }

    #[tokio::test]
    async fn no_file_and_oversized_fields_are_refused() {
        let (mut p, progress) = parser(vec![
            b"--XX\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk\r\n--XX--\r\n",
        ]);
        assert!(matches!(
            read_fields(&mut p, &progress).await,
            Err(FormError::NoFile)
        ));
        let big: &'static [u8] = Box::leak(vec![b'a'; 30 << 10].into_boxed_slice());
        let (mut p, progress) = parser(vec![
            b"--XX\r\nContent-Disposition: form-data; name=\"x-amz-meta-a\"\r\n\r\n",
            big,
            b"\r\n--XX--\r\n",
        ]);
        assert!(matches!(
            read_fields(&mut p, &progress).await,
            Err(FormError::PreDataTooLarge)
        ));
        // A part header that never ends is cut at the budget too.
        let (mut p, progress) = parser(vec![
            b"--XX\r\nContent-Disposition: form-data; name=\"key\"\r\nX-Pad: ",
            big,
            big,
            big,
        ]);
        assert!(matches!(
            read_fields(&mut p, &progress).await,
            Err(FormError::PreDataTooLarge)
        ));
    }
}
