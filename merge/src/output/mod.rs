//! Writing: the shared output file the rank workers stream into (`sink`),
//! one writer per format (`pftrace` and `packets` over the `proto` wire
//! writer for `.pftrace`, `archive` for `.zip`, `json_out` for Chrome JSON),
//! `--max-size` (`fit`), and what the merge did (`summary`).

pub(crate) mod archive;
pub(crate) mod fit;
pub(crate) mod json_out;
pub(crate) mod packets;
pub(crate) mod pftrace;
pub(crate) mod proto;
pub(crate) mod sink;
pub(crate) mod summary;
pub(crate) mod xplane_pftrace;
