//! Kura's wire protocol: the gRPC services and messages shared by every process.
//!
//! Owns: `.proto` files under `proto/proto/` and the tonic/prost code generated from them.
//! Must not contain logic beyond tiny conversions; each service crate owns its behaviour.
//! Start with `common.proto` (ids, epochs, routing errors), then the service files.

pub mod common {
    tonic::include_proto!("kura.common");
}
pub mod meta {
    tonic::include_proto!("kura.meta");
}
pub mod metashard {
    tonic::include_proto!("kura.metashard");
}
pub mod pd {
    tonic::include_proto!("kura.pd");
}
pub mod datanode {
    tonic::include_proto!("kura.datanode");
}
