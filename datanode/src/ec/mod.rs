//! Erasure coding of object bodies: how a body is cut into stripes and
//! fragments ([`layout`]) and the Reed-Solomon codec that makes and uses
//! parity ([`codec`]), with its parity kernel for GFNI CPUs (`gfni.rs`). Pure
//! logic, no I/O: the gateway's PUT/GET paths and the healing worker share it.
//!
//! A body of `size` bytes with k data and m parity shards and a shard block of
//! `block_size` bytes is a sequence of stripes of `k * block_size` data bytes
//! (the last may be short). Stripe s yields block s of every fragment: data
//! fragment i holds bytes `[i*L, (i+1)*L)` of the stripe, zero-padded, where L
//! is the stripe's shard length; parity fragment j holds parity row j. REPLICA3
//! is k = 1, m = 2: every fragment holds the same blocks (plain copies).

pub mod codec;
mod gfni;
pub mod layout;

pub use codec::{Codec, EcError};
pub use layout::Layout;
