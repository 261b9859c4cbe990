//! The BPF-side headers of the libbpf verify's agent is built with (`bpf/bpf_helpers.h`,
//! `bpf/bpf_tracing.h`, ...), written once into the cache: BPF programs are built against
//! them before the distribution's, so that a program written for a newer libbpf than the
//! system's (`BPF_UPROBE`, `bpf_ksym_exists`) builds, and builds as the agent loads it.

use std::path::PathBuf;

use anyhow::Result;

use crate::kernel::{cache_dir, make_once, write_atomic};

include!(concat!(env!("OUT_DIR"), "/libbpf_headers.rs"));

/// The directory to give clang with `-I`: it holds `bpf/NAME.h`.
pub fn dir() -> Result<PathBuf> {
    let dir = cache_dir()
        .join("libbpf-headers")
        .join(format!("{VERSION}-{:016x}", fingerprint()));
    let bpf = dir.join("bpf");
    let last = bpf.join(FILES.last().expect("headers").0);
    make_once(&bpf, &last, "libbpf's headers", || {
        for (name, data) in FILES {
            write_atomic(&bpf.join(name), data)?;
        }
        Ok(())
    })?;
    Ok(dir)
}

/// Of the headers' contents: another build's headers go to another directory.
fn fingerprint() -> u64 {
    FILES.iter().fold(0xcbf29ce484222325, |h, (name, data)| {
        name.bytes()
            .chain(data.iter().copied())
            .fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headers_are_libbpf_1_2_or_newer() {
        // BPF_UPROBE came with libbpf 1.2, bpf_ksym_exists with 1.1's successor too.
        let tracing = FILES.iter().find(|(n, _)| *n == "bpf_tracing.h").unwrap().1;
        let helpers = FILES.iter().find(|(n, _)| *n == "bpf_helpers.h").unwrap().1;
        let has = |d: &[u8], w: &str| d.windows(w.len()).any(|x| x == w.as_bytes());
        assert!(has(tracing, "#define BPF_UPROBE("), "BPF_UPROBE");
        assert!(has(helpers, "#define bpf_ksym_exists("), "bpf_ksym_exists");
        let (major, minor) = VERSION.split_once('.').unwrap();
        let v = (major.parse::<u32>().unwrap(), minor.parse::<u32>().unwrap());
        assert!(v >= (1, 2), "{VERSION}");
    }
}
