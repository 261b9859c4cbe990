//! What verify's host and its guest agent say to each other.
//!
//! The host writes a [`Manifest`] into the guest's initramfs (`/manifest.json`); the agent
//! answers over the second serial port with [`Message`]s, one a line:
//! `BPFM1 <length> <fnv1a64> <json>`. A frame whose length or checksum is off (kernel
//! messages written over it) is not a frame.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Where the manifest is in the guest.
pub const MANIFEST_PATH: &str = "/manifest.json";

/// Where the guest has bash, copied from the host, for the workload's readline step.
pub const GUEST_BASH: &str = "/bin/bash";

/// The suffix of the per-CPU array in which a migrated program counts the records its ring
/// `MAP` could not take (`MAP_lost`, the lost counter bpf-migrate adds where it keeps a lost
/// callback): the agent reports its count as the ring's `lost`.
pub const LOST_COUNTER_SUFFIX: &str = "_lost";

/// What the agent is to do: the objects to load and the workload to drive through them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub objects: Vec<ObjSpec>,
    /// Extra command (argv, guest paths) run after the built-in workload.
    #[serde(default)]
    pub workload: Option<Vec<String>>,
    /// The built-in tour of common hooks (exec, files, signals, sockets, mounts, packets).
    #[serde(default = "yes")]
    pub builtin_workload: bool,
    /// An object whose one program fills its ring buffer `rb` with poison records: every ring
    /// buffer map is filled with it (through `bpf_map__reuse_fd`) and drained twice before the
    /// workload, so the space reservations land on holds poison, not the zeros of fresh pages.
    /// A reserved record whose bytes the migration leaves unset then shows them.
    #[serde(default)]
    pub ring_poison: Option<String>,
    /// Benchmark mode: each object alone, this many events (see the agent's `bench`).
    #[serde(default)]
    pub bench: Option<u64>,
    /// The programs' own user space, run through the same workload (tool-level verify).
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    /// How long the tools may take to start (to be seen polling their buffers) before the
    /// workload begins without the late ones.
    #[serde(default = "ready_ms")]
    pub tools_ready_ms: u64,
    /// The host's root file system, for tools that run on the host's own user space (BCC
    /// tools under the host's python3-bpfcc).
    #[serde(default)]
    pub host_root: Option<HostRoot>,
    /// An object whose `lsm/bpf` program refuses to create ring buffer maps, loaded and
    /// attached before anything else: the guest then answers as a kernel without the ring
    /// buffer does (`verify --strategy compat`, the perf path).
    #[serde(default)]
    pub refuse_ringbuf: Option<String>,
    /// Kernel modules the agent loads before anything else, in order (guest paths): those
    /// of 9p and overlay for `host_root`, of virtio-blk and the file systems for
    /// `scratch_disks`.
    #[serde(default)]
    pub modules: Vec<String>,
    /// The guest's scratch disks, in the order it sees them (`/dev/vda`, `/dev/vdb`, ...):
    /// each an empty file system of a `SCRATCH_FILE_SYSTEMS` type, which the agent mounts at
    /// `scratch_mount` before the programs load for the workload's disk steps, or
    /// `MD_MEMBER`, an empty disk for its `md-flush` step.
    #[serde(default)]
    pub scratch_disks: Vec<String>,
    /// Scratch file systems the boot asked for that the host could not make (its mkfs is
    /// missing or failed): their disk steps say so. The steps of file systems not asked for
    /// do not run.
    #[serde(default)]
    pub scratch_missing: Vec<String>,
    /// A tc program (guest path of its object) that the agent attaches to loopback's egress
    /// before the programs load, for the workload's `tcp-drop` step: it drops the first TCP
    /// segment with data sent to `TCP_DROP_PORT`, once.
    #[serde(default)]
    pub tcp_drop: Option<String>,
    /// A PostgreSQL server for tools that trace a database's queries (its USDT probes
    /// `query__start` and `query__done`), started in the host's root before the tools, with
    /// one client connection open; the workload's `database` step sends queries on it. `Err`:
    /// why the boot that wants one cannot have it (the step says so).
    #[serde(default)]
    pub database: Option<Result<Database, String>>,
    /// An NFS server and a client mount of it, for tools that trace NFS: the host's
    /// nfs-kernel-server run in the host's root before the tools (their modules loaded with
    /// the others); the workload's `nfs` step does file I/O there. `Err` as for `database`.
    #[serde(default)]
    pub nfs: Option<Result<(), String>>,
}

/// The host's programs (nfs-kernel-server's, nfs-common's) that set up the workload's NFS
/// server and mount it, run in the host's root: export, the export cache's daemon, the
/// server's threads, the client's mount.
pub const NFS_EXPORTFS: &str = "/usr/sbin/exportfs";
pub const NFS_MOUNTD: &str = "/usr/sbin/rpc.mountd";
pub const NFS_NFSD: &str = "/usr/sbin/rpc.nfsd";
pub const NFS_MOUNT_PROGRAM: &str = "/sbin/mount.nfs4";

/// The workload's database server: the host's PostgreSQL, run in the host's root (so the
/// manifest has a `host_root` too) on a data directory made once by the host's `initdb`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// The server's binary, a path in the host's root.
    pub server: String,
    /// Its data directory, a path in the host's root, owned by the user it runs as (not root:
    /// PostgreSQL refuses to).
    pub data: String,
}

/// The database's superuser (`initdb -U`), whom the workload connects as, to the database
/// PostgreSQL always has (`postgres`).
pub const DATABASE_USER: &str = "bpfm";

/// Written in a tool's command line (`--tool-args 'mysqld_qslower=DATABASE_PID'`), it becomes
/// the process ID of the database server's backend serving the workload's connection: the
/// one process that runs its queries.
pub const DATABASE_PID: &str = "{database-pid}";

/// The workload's terminal (its `readline` step's), opened before the tools start: the
/// guest's first, for a tool that watches a terminal given by its path.
pub const GUEST_TERMINAL: &str = "/dev/pts/0";

/// The port of the workload's `tcp-drop` step: below Linux's ephemeral ports (32768 to
/// 60999), so that no socket another step has open (`tcp-retransmit`'s run beside the
/// others) can hold it.
pub const TCP_DROP_PORT: u16 = 27011;

/// The agent starts the tools in waves of this many processes (a program's three instances
/// two at a time), each wave once the one before waits for events: a C, Rust or Go tool
/// parses the kernel's BTF as it starts (13 MiB or more for a moment, 3 MiB after), and 48 at
/// once touched most of a 1.5 GiB guest, which qemu then holds on the host.
pub const TOOL_WAVE: usize = 6;

/// Where the agent mounts the ext4 scratch disk.
pub const SCRATCH_MOUNT: &str = "/mnt/scratch";

/// A scratch disk's file system: made on the host for each boot, mounted by the agent.
pub struct ScratchFs {
    pub fs: &'static str,
    /// The host's mkfs and its arguments (the image's path follows).
    pub mkfs: &'static [&'static str],
    /// The image's size (sparse): at least the file system's minimum.
    pub bytes: u64,
    /// The Debian package with the mkfs, for the message when it is missing.
    pub package: &'static str,
    pub mount_options: &'static str,
    /// The guest kernel modules (file names) only this file system needs: none for ext4,
    /// which every boot has; the others' are loaded in the boots that make them.
    pub modules: &'static [&'static str],
}

/// The scratch file systems, in the order the guest sees their disks: ext4 in every boot,
/// the others in a boot whose programs name them (making, loading and mounting xfs and btrfs
/// costs a verify 2.4 s). ext4's inode tables
/// and journal are written by mkfs, and it is mounted without its lazyinit thread: the
/// thread exits at a moment of its own during the workload, an exit tools tracing exits see.
pub const SCRATCH_FILE_SYSTEMS: &[ScratchFs] = &[
    ScratchFs {
        fs: "ext4",
        mkfs: &[
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "scratch",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
        ],
        bytes: 32 << 20,
        package: "e2fsprogs",
        mount_options: "noinit_itable,no_prefetch_block_bitmaps",
        modules: &[],
    },
    ScratchFs {
        fs: "xfs",
        mkfs: &["mkfs.xfs", "-q", "-f"],
        bytes: 300 << 20,
        package: "xfsprogs",
        mount_options: "",
        modules: &["libcrc32c.ko", "xfs.ko"],
    },
    ScratchFs {
        fs: "btrfs",
        mkfs: &["mkfs.btrfs", "-q", "-f"],
        bytes: 110 << 20,
        package: "btrfs-progs",
        mount_options: "",
        modules: &[
            "libcrc32c.ko",
            "xor.ko",
            "raid6_pq.ko",
            "zstd_compress.ko",
            "btrfs.ko",
        ],
    },
];

/// The empty scratch disk of the `md-flush` step, in `Manifest::scratch_disks`.
pub const MD_MEMBER: &str = "md-member";

/// Where the agent mounts the scratch file system `fs`: ext4 at `SCRATCH_MOUNT`, another at
/// `SCRATCH_MOUNT-fs`.
pub fn scratch_mount(fs: &str) -> String {
    if fs == "ext4" {
        SCRATCH_MOUNT.to_string()
    } else {
        format!("{SCRATCH_MOUNT}-{fs}")
    }
}

/// How the guest mounts the host's root file system: read-only over 9p (qemu's fsdev
/// `hostroot`), with a writable overlay in memory, at `/newroot`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    /// The guest kernel's release (`uname -r`), for `/lib/modules/RELEASE`.
    pub release: String,
    /// The kernel's headers on the host, mounted at `/lib/modules/RELEASE/build` and
    /// `source` (BCC compiles against them).
    pub headers: String,
    pub headers_common: String,
}

fn ready_ms() -> u64 {
    60_000
}

/// A tool to run in the guest: one instance of a program's user space (its original twice,
/// its migration once), started before the workload and stopped with SIGINT after it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ToolSpec {
    /// `p<k>/orig-1`, `p<k>/orig-2`, `p<k>/new`.
    pub id: String,
    /// The command line, guest paths.
    pub argv: Vec<String>,
    /// Its working directory (where a loader that opens its object by name finds it).
    #[serde(default)]
    pub cwd: Option<String>,
    /// It runs in the host's root file system (`Manifest::host_root`), not the initramfs.
    #[serde(default)]
    pub host_root: bool,
}

fn yes() -> bool {
    true
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            objects: Vec::new(),
            workload: None,
            builtin_workload: true,
            ring_poison: None,
            bench: None,
            tools: Vec::new(),
            tools_ready_ms: ready_ms(),
            host_root: None,
            refuse_ringbuf: None,
            modules: Vec::new(),
            scratch_disks: Vec::new(),
            scratch_missing: Vec::new(),
            tcp_drop: None,
            database: None,
            nfs: None,
        }
    }
}

/// One BPF object to load.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ObjSpec {
    /// Names the object in the result (`p<k>/orig-1`, `p<k>/new`, `p<k>/reserve`, ...).
    pub id: String,
    /// Its path in the guest.
    pub path: String,
    /// Byte written over every per-CPU array value before the workload. The original's two
    /// loads get different bytes, the migrated program the first load's: bytes of an event
    /// that come from a stale per-CPU "heap" then show up as noise in calibration, instead of
    /// as a difference born of the order the objects were attached in.
    #[serde(default)]
    pub poison: u8,
    /// `--strategy compat`'s perf path: the maps to make perf event arrays before load, as the
    /// program's loader does where the kernel has no ring buffer, with their flags set.
    #[serde(default)]
    pub compat_perf: Vec<CompatFlag>,
}

/// A ring `map` that `--strategy compat` lets user space make a perf event array before load,
/// and where its flag `MAP_use_perf` lies in the object's `.rodata`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CompatFlag {
    pub map: String,
    pub rodata_offset: u32,
}

/// A frame the agent sends: `ready` once it runs, `tools_started` when it has waited for the
/// manifest's tools (if any), one `result`, then `done` before it powers the guest off.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Ready,
    /// How long the agent waited for the tools to start: the host's `--timeout` does not
    /// count it (a BCC tool under emulation takes tens of seconds).
    ToolsStarted {
        waited_ms: u64,
    },
    Result(Report),
    Done,
}

impl Message {
    /// The wait a `tools_started` frame among `frames` reports.
    pub fn tools_wait(frames: &[Message]) -> Option<u64> {
        frames.iter().find_map(|f| match f {
            Message::ToolsStarted { waited_ms } => Some(*waited_ms),
            _ => None,
        })
    }
}

/// What the agent found.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// The agent could not run at all (no manifest, say).
    Fatal(String),
    /// A verify run: what every object delivered.
    Run(RunResult),
    /// A benchmark run: one row an object.
    Bench(Vec<BenchRow>),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct RunResult {
    /// In the manifest's order.
    pub objects: Vec<ObjectResult>,
    pub workload_log: Vec<String>,
    /// From the agent's start to the last object attached.
    pub attached_ms: u64,
    pub nr_cpus: u32,
    /// What each tool of the manifest printed, in its order.
    #[serde(default)]
    pub tools: Vec<ToolRun>,
    /// The built-in workload's steps that ran, in order (what failed is in the log).
    #[serde(default)]
    pub workload_steps: Vec<String>,
    /// The manifest's `refuse_ringbuf` did not take: why (a ring buffer map could still be
    /// made, or the program did not load or attach).
    #[serde(default)]
    pub refuse_ringbuf_error: Option<String>,
}

/// What one tool instance did.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolRun {
    pub id: String,
    /// It could not be started: why.
    pub spawn_error: Option<String>,
    /// Everything it printed on its standard output (a terminal, so that it is line
    /// buffered as for a user), and where the workload began in it: what comes before
    /// (headers, and events of the other tools starting) is compared only where it is stable.
    pub stdout: String,
    pub workload_at: usize,
    /// Where the workload ended, before the tools were stopped: what follows is what
    /// stopping shows (summaries), and what one tool saw of the others stopping.
    pub workload_end: usize,
    pub stderr: String,
    /// It was waiting for events (blocked in poll/epoll/select) before the workload began;
    /// false if it exited first, or was still starting when the agent gave up waiting.
    pub ready: bool,
    /// It was still running, not yet polling, when the agent gave up waiting.
    #[serde(default)]
    pub still_starting: bool,
    /// It had exited before it was stopped (during the workload).
    #[serde(default)]
    pub exited_early: bool,
    /// Exit code, or the signal that ended it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// From its start to the first sign that it waits for events (a BCC tool's compile and
    /// attach, say).
    #[serde(default)]
    pub ready_ms: Option<u64>,
    /// How many times Ctrl-C was typed on its terminal to stop it: once, or twice when it
    /// was seen back waiting for events after the first (0 when it had ended before).
    #[serde(default)]
    pub ctrl_c_typed: u8,
}

impl RunResult {
    pub fn object(&self, id: &str) -> Option<&ObjectResult> {
        self.objects.iter().find(|o| o.id == id)
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectResult {
    pub id: String,
    /// libbpf's error and log when the object does not load (then nothing else is filled).
    pub load_error: Option<String>,
    pub programs: Vec<ProgramResult>,
    /// Its perf event arrays and ring buffers, with what each delivered.
    pub maps: Vec<MapRecords>,
    /// Buffers that could not be opened.
    pub buffer_errors: Vec<BufferError>,
    /// It did not load by its sections, and its tool was there to learn how its loader loads
    /// it: loaded so without a `load_error`, else that is this load's.
    #[serde(default)]
    pub tried_as_tool: bool,
}

impl ObjectResult {
    pub fn program(&self, name: &str) -> Option<&ProgramResult> {
        self.programs.iter().find(|p| p.name == name)
    }

    pub fn map(&self, name: &str) -> Option<&MapRecords> {
        self.maps.iter().find(|m| m.name == name)
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ProgramResult {
    pub name: String,
    pub section: String,
    pub attach: Attach,
}

/// How a program was run.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Attach {
    /// Attached to its hook.
    Ok,
    /// A packet program, run on the agent's packets with `BPF_PROG_TEST_RUN`.
    TestRun,
    /// It did not attach: why.
    Error(String),
    /// Its section alone did not load or attach it here; it was loaded and attached as the
    /// program's own tool had it (a loader that sets attach targets or attaches at run time):
    /// where (`mirror::Target`s, described).
    AsTool(String),
    /// Its tool's loader did not load it (an alternative the loader turned off, fentry where
    /// it chose kprobes), so neither did the agent.
    NotByTool,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    /// A perf event array, read through a perf buffer.
    Perf,
    /// A ring buffer map.
    Ring,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MapRecords {
    pub name: String,
    pub kind: BufferKind,
    /// Every record, in the order read (hex strings on the wire).
    #[serde(with = "hex_records")]
    pub records: Vec<Vec<u8>>,
    /// Samples the perf buffer reported lost; for a ring buffer, the records its lost counter
    /// (`LOST_COUNTER_SUFFIX`) counted, when the program has one.
    pub lost: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BufferError {
    pub map: String,
    pub error: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BenchRow {
    pub id: String,
    pub outcome: BenchOutcome,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BenchOutcome {
    /// `received` records read in `ns` nanoseconds.
    Timed {
        received: u64,
        ns: u64,
    },
    Error(String),
}

/// Lower-case hex, two digits a byte.
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// The bytes of a hex string; `None` for an odd length or a non-hex digit.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

mod hex_records {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(records: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(records.iter().map(|r| super::hex(r)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|r| super::decode_hex(r).ok_or_else(|| D::Error::custom("a record is not hex")))
            .collect()
    }
}

/// The frame of one message, with its newline.
pub fn frame<T: Serialize>(message: &T) -> String {
    let body = serde_json::to_string(message).expect("protocol messages serialize");
    format!(
        "BPFM1 {} {:016x} {}\n",
        body.len(),
        fnv1a(body.as_bytes()),
        body
    )
}

/// The message of a frame found anywhere in `line`; `None` for anything else, or a frame
/// whose length or checksum is off, or whose body is not a `T`.
pub fn parse_frame<T: DeserializeOwned>(line: &str) -> Option<T> {
    let at = line.find("BPFM1 ")?;
    let mut parts = line[at + 6..].splitn(3, ' ');
    let len: usize = parts.next()?.parse().ok()?;
    let sum = u64::from_str_radix(parts.next()?, 16).ok()?;
    let body = parts.next()?.trim_end_matches(['\r', '\n']);
    if body.len() != len || fnv1a(body.as_bytes()) != sum {
        return None;
    }
    serde_json::from_str(body).ok()
}

/// FNV-1a, 64 bits: cheap, and enough to tell a frame from one that console noise damaged.
pub fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn manifest() -> Manifest {
        Manifest {
            objects: vec![
                ObjSpec {
                    id: "p0/orig-1".into(),
                    path: "/objs/p0-orig-1.o".into(),
                    poison: 0,
                    compat_perf: Vec::new(),
                },
                ObjSpec {
                    id: "p0/orig-2".into(),
                    path: "/objs/p0-orig-2.o".into(),
                    poison: 0xa5,
                    compat_perf: vec![CompatFlag {
                        map: "events".into(),
                        rodata_offset: 8,
                    }],
                },
            ],
            workload: Some(vec!["/work/true".into(), "x y".into()]),
            builtin_workload: true,
            ring_poison: Some("/objs/ring_poison.o".into()),
            bench: None,
            tools: vec![ToolSpec {
                id: "p0/new".into(),
                argv: vec!["/tools/p0-new".into(), "-T".into()],
                cwd: Some("/tools/p0-new.d".into()),
                host_root: false,
            }],
            tools_ready_ms: 30_000,
            host_root: Some(HostRoot {
                release: "6.1.0-57-amd64".into(),
                headers: "/root/.cache/h".into(),
                headers_common: "/root/.cache/c".into(),
            }),
            refuse_ringbuf: Some("/objs/refuse_ringbuf.o".into()),
            modules: vec!["/modules/9p.ko".into()],
            scratch_disks: vec!["ext4".into(), MD_MEMBER.into(), "xfs".into()],
            scratch_missing: vec!["btrfs".into()],
            tcp_drop: Some("/objs/tcp_drop.o".into()),
            database: Some(Ok(Database {
                server: "/usr/lib/postgresql/15/bin/postgres".into(),
                data: "/root/.cache/bpf-migrate/postgres-15/data".into(),
            })),
            nfs: Some(Err("the host has no /usr/sbin/rpc.nfsd".into())),
        }
    }

    fn result() -> Message {
        Message::Result(Report::Run(RunResult {
            objects: vec![
                ObjectResult {
                    id: "p0/orig-1".into(),
                    load_error: None,
                    programs: vec![
                        ProgramResult {
                            name: "handle_exec".into(),
                            section: "tp/sched/sched_process_exec".into(),
                            attach: Attach::Ok,
                        },
                        ProgramResult {
                            name: "tc_in".into(),
                            section: "tc".into(),
                            attach: Attach::TestRun,
                        },
                        ProgramResult {
                            name: "kp".into(),
                            section: "kprobe/nope".into(),
                            attach: Attach::Error("No such file or directory \"quoted\"".into()),
                        },
                        ProgramResult {
                            name: "file_read_fentry".into(),
                            section: "fentry/dummy_file_read".into(),
                            attach: Attach::AsTool("tracing ext4_file_read_iter".into()),
                        },
                        ProgramResult {
                            name: "file_read_entry".into(),
                            section: "kprobe/dummy_file_read".into(),
                            attach: Attach::NotByTool,
                        },
                    ],
                    maps: vec![MapRecords {
                        name: "events".into(),
                        kind: BufferKind::Perf,
                        records: vec![vec![0, 1, 0xa5, 0xff], vec![], vec![7; 300]],
                        lost: 2,
                    }],
                    buffer_errors: vec![BufferError {
                        map: "rb".into(),
                        error: "-22".into(),
                    }],
                    tried_as_tool: true,
                },
                ObjectResult {
                    id: "p0/new".into(),
                    load_error: Some("verifier log\nline 2".into()),
                    ..Default::default()
                },
            ],
            workload_log: vec!["memcg-oom: the child was not OOM-killed".into()],
            workload_steps: vec!["exec".into(), "files".into()],
            refuse_ringbuf_error: None,
            attached_ms: 1234,
            nr_cpus: 2,
            tools: vec![ToolRun {
                id: "p0/new".into(),
                stdout: "PCOMM  PID\r\ninit   7 \u{1b}[1m\n".into(),
                workload_at: 11,
                stderr: "libbpf: warning\n".into(),
                ready: true,
                exit_code: Some(0),
                ..Default::default()
            }],
        }))
    }

    #[test]
    fn a_manifest_survives_the_trip() {
        let m = manifest();
        assert_eq!(parse_frame::<Manifest>(&frame(&m)), Some(m.clone()));
        // As a file: plain JSON.
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
        // Only the objects are required; the built-in workload is on by default.
        let bench: Manifest =
            serde_json::from_str(r#"{"objects": [{"id": "a", "path": "/a.o"}], "bench": 10}"#)
                .unwrap();
        assert_eq!(bench.bench, Some(10));
        assert!(bench.builtin_workload);
        assert_eq!(bench.objects[0].poison, 0);
        assert!(Manifest::default().builtin_workload);
    }

    #[test]
    fn every_message_survives_the_trip() {
        for m in [
            Message::Ready,
            result(),
            Message::Result(Report::Fatal("cannot read the manifest".into())),
            Message::Result(Report::Bench(vec![
                BenchRow {
                    id: "p0/perf".into(),
                    outcome: BenchOutcome::Timed {
                        received: 1000,
                        ns: 123456789,
                    },
                },
                BenchRow {
                    id: "p0/copy".into(),
                    outcome: BenchOutcome::Error("load failed".into()),
                },
            ])),
            Message::Done,
        ] {
            let f = frame(&m);
            assert!(f.ends_with('\n') && f.matches('\n').count() == 1, "{f}");
            assert_eq!(parse_frame::<Message>(&f), Some(m.clone()), "{f}");
            // With console noise before it and a carriage return after.
            let noisy = format!("[    1.234] random: crng init done BPFM1{}", &f[5..]);
            let noisy = noisy.replace('\n', "\r\n");
            assert_eq!(parse_frame::<Message>(&noisy), Some(m), "{noisy}");
        }
        let v: Value = parse_frame(&frame(&Message::Done)).unwrap();
        assert_eq!(v["type"], "done");
    }

    #[test]
    fn damaged_frames_are_rejected() {
        let good = frame(&result());
        let good = good.trim_end();
        assert!(parse_frame::<Message>(good).is_some());
        // A byte changed: the checksum is off.
        assert!(parse_frame::<Message>(&good.replace("handle_exec", "handle_exed")).is_none());
        // Bytes lost or added: the length is off.
        assert!(parse_frame::<Message>(&good.replace("handle_exec", "handle_ex")).is_none());
        assert!(parse_frame::<Message>(&format!("{good} ")).is_none());
        // Cut short, as when the guest died writing it.
        assert!(parse_frame::<Message>(&good[..good.len() / 2]).is_none());
        // A kernel message written into the middle.
        let (a, b) = good.split_at(good.len() / 2);
        assert!(parse_frame::<Message>(&format!("{a}[ 2.0] oops{b}")).is_none());
        // Header damage.
        assert!(parse_frame::<Message>(&good.replacen("BPFM1 ", "BPFM1 x", 1)).is_none());
        assert!(parse_frame::<Message>(&good.replacen("BPFM1 ", "BPFM2 ", 1)).is_none());
        assert!(parse_frame::<Message>("BPFM1 3 0 {}").is_none());
        assert!(parse_frame::<Message>("").is_none());
        // A good frame of something that is not a message.
        assert!(parse_frame::<Message>(&frame(&serde_json::json!({"type": "hello"}))).is_none());
        // Records that are not hex.
        let bad = frame(
            &serde_json::json!({"type": "result", "run": {"objects": [{"id": "a",
            "load_error": null, "programs": [], "buffer_errors": [],
            "maps": [{"name": "e", "kind": "perf", "records": ["0g"], "lost": 0}]}],
            "workload_log": [], "attached_ms": 0, "nr_cpus": 1}}),
        );
        assert!(parse_frame::<Value>(&bad).is_some());
        assert!(parse_frame::<Message>(&bad).is_none());
    }

    #[test]
    fn hex_round_trip() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_hex(&hex(&b)), Some(b));
        assert_eq!(decode_hex(""), Some(vec![]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex("é1"), None);
    }
}
