#![no_main]
// A BPF C file and its libbpf loader (split at a NUL byte).
#[path = "common.rs"]
mod common;
libfuzzer_sys::fuzz_target!(|data: &[u8]| common::check(&["prog.bpf.c", "prog.c"], data));
