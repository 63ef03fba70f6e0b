//! Kura simulator: will drive PD's pure scheduling logic (`kura_pd` cluster model,
//! schedulers and operators) with thousands of simulated stores and regions, as
//! cases with a "balanced yet?" checker, without network or disk.
//!
//! Nothing here yet: the walking skeleton has no schedulers to simulate. The
//! crate exists so the workspace layout matches DESIGN.md §1; the PD scheduling
//! issue fills it in.
