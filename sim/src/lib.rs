//! Kura simulator: drives PD's pure scheduling logic (`kura_pd` cluster model,
//! schedulers and operators) with many simulated stores and regions, without
//! network or disk.
//!
//! - `heartbeats`: how fast the cluster model takes region heartbeats at
//!   100,000 regions (`kura bench pd`).
//! - `scheduling`: how long one scheduling round (snapshot + every default
//!   scheduler) takes at that size.

pub mod heartbeats;
pub mod persist;
pub mod scheduling;
