//! Rebuilding lost fragments of one body from k surviving ones: stream the
//! sources block by block (each block CRC32C-verified by the client),
//! reconstruct every stripe, and stream the rebuilt blocks to the members
//! that miss them. Memory: one stripe at a time.

use bytes::Bytes;
use futures::StreamExt;
use kura_proto::datanode::{FragmentHeader, FragmentId};
use tokio::sync::mpsc;

use crate::client::{DataNodeClient, DataNodeError};
use crate::ec::Codec;
use crate::repair::plan::BodyState;

/// Rebuilds `body.missing` on `members` (slot → address). Returns the number
/// of fragments written.
pub async fn rebuild(
    client: &DataNodeClient,
    codec: &Codec,
    members: &[String],
    body: &BodyState,
) -> Result<usize, DataNodeError> {
    let (k, width) = (codec.data_shards(), members.len());
    // Data fragments first: with all of them no decoding is needed for data.
    let sources: Vec<usize> = body.present.iter().copied().take(k).collect();
    if sources.len() < k {
        return Err(DataNodeError::Unavailable(format!(
            "{} of {k} fragments available",
            sources.len()
        )));
    }
    let mut streams = Vec::with_capacity(k);
    for &s in &sources {
        let id = FragmentId {
            data_id: body.data_id.clone(),
            shard: s as u32,
        };
        streams.push(client.get_fragment(&members[s], id, 0, body.blocks).await?);
    }
    let mut sinks = Vec::new();
    // Aborted on every early return: a put stream that just ended would be
    // committed by its node as a (short) fragment.
    let mut tasks = AbortAll(Vec::new());
    for &slot in &body.missing {
        let header = FragmentHeader {
            id: Some(FragmentId {
                data_id: body.data_id.clone(),
                shard: slot as u32,
            }),
            ..body.header.clone()
        };
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let blocks =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        let client = client.clone();
        let addr = members[slot].clone();
        tasks.0.push(tokio::spawn(async move {
            client.put_fragment_sealed(&addr, header, blocks).await
        }));
        sinks.push((slot, tx));
    }
    let mut length = 0u64;
    for b in 0..body.blocks {
        let mut shards: Vec<Option<Bytes>> = vec![None; width];
        for (stream, &s) in streams.iter_mut().zip(&sources) {
            match stream.next().await {
                Some(Ok(block)) => shards[s] = Some(block),
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(DataNodeError::Unavailable(format!(
                        "shard {s} ended at block {b}"
                    )))
                }
            }
        }
        length += shards[sources[0]].as_ref().map_or(0, |x| x.len() as u64);
        codec
            .reconstruct_all(&mut shards)
            .map_err(|e| DataNodeError::Internal(format!("reconstruct: {e}")))?;
        for (slot, tx) in &sinks {
            let Some(block) = shards[*slot].clone() else {
                return Err(DataNodeError::Internal("shard not rebuilt".into()));
            };
            // A closed channel means the target's call ended: its task says why below.
            let _ = tx.send(block).await;
        }
    }
    // The seal commits each rebuilt fragment (an early return above drops the
    // senders unsealed, and the nodes store nothing).
    for (_, tx) in &sinks {
        let _ = tx.send(Bytes::new()).await;
    }
    drop(sinks);
    let mut written = 0;
    let mut first_error = None;
    for t in std::mem::take(&mut tasks.0) {
        match t.await {
            Ok(Ok(resp)) if resp.length == length => written += 1,
            Ok(Ok(resp)) => {
                first_error = first_error.or(Some(DataNodeError::Internal(format!(
                    "rebuilt fragment stored {} of {length} bytes",
                    resp.length
                ))))
            }
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => first_error = first_error.or(Some(DataNodeError::Internal(e.to_string()))),
        }
    }
    match first_error {
        Some(e) if written == 0 => Err(e),
        _ => Ok(written),
    }
}

struct AbortAll(
    Vec<tokio::task::JoinHandle<Result<kura_proto::datanode::PutFragmentResponse, DataNodeError>>>,
);

impl Drop for AbortAll {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
