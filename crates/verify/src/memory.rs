//! The guest's memory: enough for the maps of every object it loads. Maps are allocated
//! when an object loads (hash maps preallocate every entry, per-CPU maps once per CPU), and
//! the guest loads each program's original twice and its migration once, and its tool as
//! many times again: a directory of real tools outgrows a fixed size (the kernel then panics
//! in `map_create`).

use std::path::Path;

use bpf_migrate_protocol::TOOL_WAVE;
use libbpf_rs::{MapType, ObjectBuilder};

/// The guest's memory in MiB: `base` for the kernel, the agent and the workload, plus the
/// maps of `map_bytes` with room for the kernel's own bookkeeping, plus, of `tool_processes`
/// (C, Rust and Go tools' processes), `TOOL_MIB` for each of a wave starting
/// (`TOOL_WAVE`) and `TOOL_STEADY_MIB` for each of the others.
pub fn guest_mib(base: u64, map_bytes: u64, tool_processes: u64) -> u64 {
    let maps = (map_bytes + map_bytes / 2).div_ceil(1 << 20);
    let starting = tool_processes.min(TOOL_WAVE as u64);
    let tools = TOOL_MIB * starting + TOOL_STEADY_MIB * (tool_processes - starting);
    (base + maps + tools).min(MAX_MIB)
}

/// What one process of a C or Rust tool takes while it starts: libbpf parses the kernel's
/// BTF (bpftool's dump of Debian 6.1's 5.2 MB BTF peaks at 13 MiB), and trace helpers read
/// kallsyms. A boot of 16 libbpf-tools (48 processes at once) without it stalled short of
/// memory.
const TOOL_MIB: u64 = 20;

/// What one takes once it waits for events: 2.4 to 2.8 MiB resident for each of 18
/// libbpf-tools processes in a guest (`/proc/PID/status`), with the kernel's own share
/// for the process (page tables, its terminal).
const TOOL_STEADY_MIB: u64 = 6;

/// Above this, the guest's maps do not fit this tool's budget anyway.
const MAX_MIB: u64 = 16 << 10;

/// Bytes the kernel allocates for the maps of the object at `path` when it loads on `cpus`
/// CPUs, with the buffers the agent or a tool opens on them (64 pages a CPU for a perf
/// buffer, the ring for a ring buffer). The object is only parsed here (libbpf's open), never
/// loaded. 0 when it cannot be parsed: the guest then gets its base size.
pub fn map_bytes(path: &Path, cpus: u32) -> u64 {
    libbpf_rs::set_print(None);
    let Ok(obj) = ObjectBuilder::default().open_file(path) else {
        return 0;
    };
    obj.maps()
        .map(|m| {
            one_map(
                m.map_type(),
                m.key_size(),
                m.value_size(),
                m.max_entries(),
                cpus,
            )
        })
        .sum()
}

/// One map's bytes (see [`map_bytes`]).
fn one_map(ty: MapType, key: u32, value: u32, entries: u32, cpus: u32) -> u64 {
    const PAGE: u64 = 4096;
    let (key, value, entries, cpus) = (key as u64, value as u64, entries as u64, cpus as u64);
    // Per element: the kernel's own header (hash, list, lock) and value alignment.
    let elem = |v: u64| key + v.next_multiple_of(8) + 48;
    match ty {
        MapType::PerfEventArray => entries.max(cpus) * 8 + cpus * 65 * PAGE,
        MapType::RingBuf | MapType::UserRingBuf => 2 * entries + 2 * PAGE,
        MapType::PercpuArray => entries * (value.next_multiple_of(8) * cpus + 8),
        MapType::PercpuHash | MapType::LruPercpuHash => {
            entries * (elem(0) + value.next_multiple_of(8) * cpus)
        }
        MapType::Array | MapType::ProgArray | MapType::CgroupArray | MapType::ArrayOfMaps => {
            entries * value.next_multiple_of(8)
        }
        MapType::StackTrace => entries * (value + 32),
        _ => entries * elem(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_maps_preallocate_and_per_cpu_maps_count_every_cpu() {
        let hash = one_map(MapType::Hash, 4, 56, 10240, 1);
        assert!(hash >= 10240 * 60, "{hash}");
        let one = one_map(MapType::PercpuArray, 4, 4096, 1, 1);
        let four = one_map(MapType::PercpuArray, 4, 4096, 1, 4);
        assert!(four >= 4 * 4096 && four > one * 3, "{one} {four}");
        // A perf buffer of 64 pages a CPU; a ring of its own size.
        assert!(one_map(MapType::PerfEventArray, 4, 4, 0, 2) >= 2 * 64 * 4096);
        assert!(one_map(MapType::RingBuf, 0, 0, 1 << 20, 2) >= 2 << 20);
    }

    #[test]
    fn the_guest_grows_with_its_maps_up_to_a_ceiling() {
        assert_eq!(guest_mib(384, 0, 0), 384);
        // 24 tools, three loads each, of 8 MiB of maps.
        assert_eq!(guest_mib(384, 24 * 3 * (8 << 20), 0), 384 + 864);
        assert_eq!(guest_mib(384, u64::MAX / 4, 0), MAX_MIB);
        // And their processes: 16 libbpf tools run three times each, a wave starting at a
        // time; a wave's worth or fewer all start at once.
        assert_eq!(
            guest_mib(384, 0, 48),
            384 + 6 * TOOL_MIB + 42 * TOOL_STEADY_MIB
        );
        assert_eq!(guest_mib(384, 0, 3), 384 + 3 * TOOL_MIB);
    }
}
