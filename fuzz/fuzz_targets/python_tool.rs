#![no_main]
// A BCC tool: Python with C in its strings.
#[path = "common.rs"]
mod common;
libfuzzer_sys::fuzz_target!(|data: &[u8]| common::check(&["tool.py"], data));
