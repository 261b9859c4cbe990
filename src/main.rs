//! `bpf-migrate`: the command line. The migration itself is `bpf-migrate-core`; `verify` is
//! the `bpf-migrate-verify` program, which this one runs (`cli::verify`).

// Byte ranges of C inside a file are passed as slices; one range is the common case.
#![allow(clippy::single_range_in_vec_init)]

mod cli;
mod output;
mod verify;
mod write;

use bpf_migrate_core::{diff, discover, engine, report, rules, source};

// mimalloc, for Rust and for tree-sitter's C: analysis allocates many small short-lived
// blocks on every thread, where glibc's malloc spent over a tenth of a run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // SAFETY: before any other tree-sitter call, once, with one allocator family whose
    // blocks have malloc's alignment.
    unsafe {
        tree_sitter::set_allocator(Some(tree_sitter::Allocator {
            malloc: libmimalloc_sys::mi_malloc,
            calloc: libmimalloc_sys::mi_calloc,
            realloc: libmimalloc_sys::mi_realloc,
            free: libmimalloc_sys::mi_free,
        }));
    }
    cli::main()
}
