//! Reading: from command-line inputs to ranks (`discover`, `remote`,
//! `rank`), each rank's files opened (`source`) and read as events, from
//! Chrome JSON (`chrome` over `json_scan`, with `number`'s exact
//! microsecond arithmetic) or from the `.xplane.pb` (`xplane`); `scan` hands
//! prepared ranks to analyses that read without writing (`rankline report`).

pub(crate) mod chrome;
pub(crate) mod discover;
pub(crate) mod json_scan;
pub(crate) mod number;
pub(crate) mod rank;
pub(crate) mod remote;
pub(crate) mod scan;
pub(crate) mod source;
pub(crate) mod xplane;
