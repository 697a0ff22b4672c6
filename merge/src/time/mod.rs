//! The one clock: each rank's time base and clock fit applied to its
//! relative timestamps (`timebase`), and the offsets refined from shared
//! collectives under `--align collectives` (`align`).

pub(crate) mod align;
pub(crate) mod timebase;
