//! The migration core of bpf-migrate: moves eBPF programs from the BPF perf buffer to the BPF
//! ring buffer.
//!
//! Pipeline: `discover` (find and read files) → `lang` (parse) → `engine` (analyse, link
//! sites into programs, plan edits) → `edit` (apply) → `diff` (output). No process, VM or
//! terminal code lives here: the command line (`bpf-migrate`) and verify
//! (`bpf-migrate-verify`) are crates of their own. See ARCHITECTURE.md.

// Byte ranges of C inside a file are passed as slices; one range is the common case.
#![allow(clippy::single_range_in_vec_init)]

pub mod diff;
pub mod discover;
pub mod edit;
pub mod engine;
pub mod lang;
pub mod report;
pub mod rules;
pub mod source;
