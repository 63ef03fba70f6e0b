//! Object bodies on data nodes: the write path, the read path, the ETag's
//! MD5, checksums and reclaiming replaced bodies.

pub mod checksum;
pub mod crypto;
pub mod etag;
pub mod gc;
pub mod reader;
pub mod stripes;
pub mod writer;
