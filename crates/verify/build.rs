//! Embeds the BPF-side headers of the libbpf that libbpf-sys vendors (`bpf_helpers.h`,
//! `bpf_tracing.h`, ...), so that verify builds BPF programs against a libbpf at least as new
//! as the one its agent loads them with, not the distribution's older headers.

use std::env;
use std::fmt::Write;
use std::path::PathBuf;

const HEADERS: &[&str] = &[
    "bpf_helpers.h",
    "bpf_helper_defs.h",
    "bpf_tracing.h",
    "bpf_core_read.h",
    "bpf_endian.h",
    "usdt.bpf.h",
];

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_BPF_INCLUDE");
    let include =
        PathBuf::from(env::var("DEP_BPF_INCLUDE").expect("libbpf-sys sets DEP_BPF_INCLUDE"));
    let dir = include.join("bpf");
    let version = std::fs::read_to_string(dir.join("libbpf_version.h")).expect("libbpf_version.h");
    let number = |name: &str| {
        version
            .lines()
            .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{name} in libbpf_version.h"))
    };
    let mut out = format!(
        "/// The vendored libbpf's version.\npub const VERSION: &str = \"{}.{}\";\n\
         /// Its BPF-side headers, as `bpf/NAME`.\npub const FILES: &[(&str, &[u8])] = &[\n",
        number("LIBBPF_MAJOR_VERSION"),
        number("LIBBPF_MINOR_VERSION")
    );
    for h in HEADERS {
        let p = dir.join(h);
        println!("cargo:rerun-if-changed={}", p.display());
        writeln!(
            out,
            "    ({h:?}, include_bytes!({:?})),",
            p.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let dest = PathBuf::from(env::var("OUT_DIR").unwrap()).join("libbpf_headers.rs");
    std::fs::write(dest, out).expect("write libbpf_headers.rs");
}
