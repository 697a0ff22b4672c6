//! The end-to-end tests: real `rankline` processes (the binary cargo built for
//! this test target, never a stale one) on loopback, one module per area.

mod capture;
mod clocks;
mod demo;
mod deploy;
mod export_xprof;
mod merge_cli;
mod one_host;
mod report;
mod security;
mod stages;
mod storage_faults;
mod trace_processor;
mod workload;
