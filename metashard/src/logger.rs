//! A slog drain that forwards raft-rs's logs to `tracing` (target `raft`).

use std::fmt::Write as _;

use slog::{Drain, Key, Level, OwnedKVList, Record, Serializer, KV};

struct TracingDrain;

struct KvText(String);

impl Serializer for KvText {
    fn emit_arguments(&mut self, key: Key, val: &std::fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut kv = KvText(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        match record.level() {
            Level::Critical | Level::Error => {
                tracing::error!(target: "raft", "{}{}", record.msg(), kv.0)
            }
            Level::Warning => tracing::warn!(target: "raft", "{}{}", record.msg(), kv.0),
            Level::Info => tracing::info!(target: "raft", "{}{}", record.msg(), kv.0),
            Level::Debug => tracing::debug!(target: "raft", "{}{}", record.msg(), kv.0),
            Level::Trace => tracing::trace!(target: "raft", "{}{}", record.msg(), kv.0),
        }
        Ok(())
    }
}

/// The root logger handed to every `RawNode` (metashard's regions and PD's replication).
pub fn raft_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!())
}
