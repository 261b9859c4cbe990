#![no_main]
// A libbpf-rs consumer and its BPF C (split at a NUL byte).
#[path = "common.rs"]
mod common;
libfuzzer_sys::fuzz_target!(|data: &[u8]| common::check(&["src/main.rs", "src/bpf/prog.bpf.c"], data));
