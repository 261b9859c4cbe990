//! `bpf-migrate-verify`, run by `bpf-migrate verify`: prove a migration in a VM.

use std::path::PathBuf;
use std::process::ExitCode;

use bpf_migrate_core::engine::{self, Options, RuleFilter, Strategy};
use clap::{Parser, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "bpf-migrate verify",
    bin_name = "bpf-migrate verify",
    version,
    about = "Prove a migration in a VM: build both versions, load both, compare their events"
)]
struct VerifyArgs {
    /// Original BPF source (file or directory); with --after, verify that migration.
    #[arg(long, requires = "after")]
    before: Option<PathBuf>,
    /// Migrated BPF source (file or directory).
    #[arg(long, requires = "before")]
    after: Option<PathBuf>,
    /// Guest kernel (vmlinux or bzImage with BTF); else $BPF_MIGRATE_KERNEL, else the cache,
    /// else Debian's kernel is downloaded into the cache once.
    #[arg(long)]
    kernel: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    accel: AccelArg,
    /// Guest CPUs; with more than one, events are compared as multisets.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    cpus: u32,
    /// An extra command run in the guest after the built-in workload (copied in with its
    /// libraries).
    #[arg(long)]
    workload: Option<String>,
    /// Seconds the guest may run, besides waiting for the tools to start (up to 60 s, 3 s
    /// more for each process of a C or Rust tool, 120 s more for each of a BCC tool).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Include directory for the BPF build.
    #[arg(short = 'I', value_name = "DIR")]
    include: Vec<PathBuf>,
    /// Macro definition for the BPF build.
    #[arg(short = 'D', value_name = "NAME[=VALUE]")]
    define: Vec<String>,
    /// Extra clang flags for the BPF build (space separated).
    #[arg(long)]
    cflags: Option<String>,
    /// Keep the work directory (objects, initramfs, guest console log).
    #[arg(long)]
    keep: bool,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    #[arg(long, value_name = "BYTES", value_parser = engine::parse_size)]
    ringbuf_size: Option<u64>,
    /// The bytes of packet a migrated packet sample keeps when its program does not bound
    /// the length itself (as `bpf-migrate --max-packet`).
    #[arg(long, value_name = "BYTES", value_parser = engine::parse_max_packet)]
    max_packet: Option<u64>,
    /// How events get into the ring buffer in the migration verified: copy, reserve, or
    /// compat, whose two paths are both verified (the second with the guest refusing ring
    /// buffers, as a kernel before 5.8 does).
    #[arg(long, default_value = "copy", value_parser = ["copy", "reserve", "compat"])]
    strategy: String,
    /// What the migration verified does with a lost-sample callback (as `bpf-migrate --lost`).
    #[arg(long, value_name = "HOW", default_value = "count", value_parser = ["count", "drop"])]
    lost: String,
    /// Instead of comparing, measure events per second of the original, the copy migration
    /// and the reserve migration, this many events each (the programs must hook
    /// sys_enter_getpid; see benches/events).
    #[arg(long, value_name = "EVENTS", conflicts_with_all = ["before", "after"])]
    bench: Option<u64>,
    /// Instead of comparing, measure how long each program's original tool alone takes from
    /// its start to waiting for events (a BCC tool compiles its C), in a guest made as
    /// verify's, without the workload: the baseline of scripts/bench-bcc's time budget.
    #[arg(long, conflicts_with_all = ["bench", "events_only"])]
    bench_start: bool,
    /// Compare the events only: do not build and run the programs' own tools.
    #[arg(long)]
    events_only: bool,
    /// The command-line arguments of the programs' own tools (tool level: each program's
    /// loader runs with them, original and migrated; split as a shell splits words, quotes
    /// keeping spaces).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true, value_parser = parse_words)]
    args: Option<Words>,
    /// The command-line arguments of one program's tool, by its name (its BPF source's or
    /// BCC tool's file name without `.bpf.c`, `.py` or `-bpfcc`), instead of --args:
    /// `--tool-args 'ksnoop=trace vfs_read'`. Repeatable, for a batch.
    #[arg(long, value_name = "NAME=ARGS", allow_hyphen_values = true, value_parser = parse_tool_args)]
    tool_args: Vec<(String, Words)>,
    /// Build each C program's tool with this shell command instead (e.g. `make execsnoop`),
    /// run in a copy of the program's directory (or of --build-root) for each version, the
    /// migrated files laid over the copy; the tool is the executable named after the loader
    /// (`x` for `x.c`) it leaves in the program's directory.
    #[arg(long, value_name = "CMD")]
    build: Option<String>,
    /// The directory --build copies (default: the program's own), for builds that reach
    /// outside it (`../libbpf`).
    #[arg(long, value_name = "DIR", requires = "build")]
    build_root: Option<PathBuf>,
    /// C and Rust programs verified in one boot, at most; more take several boots, one after
    /// another (each BCC tool has a boot of its own). A boot that fails (a guest panic)
    /// leaves its programs inconclusive and the others go on. Each program adds its maps six
    /// times and its tool's three processes to its boot's guest, which qemu holds on the host:
    /// 6 keeps a batch of real libbpf tools under 1 GiB, at the time of 16.
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    per_boot: u32,
    /// Programs to migrate in memory and verify (default: the current directory).
    paths: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Format {
    Human,
    Json,
}

/// A tool's command line, split into words.
#[derive(Clone, Debug)]
struct Words(Vec<String>);

/// Words as a shell splits them: `t:syscalls:sys_enter_kill "sig %d", args->sig` is two.
fn parse_words(v: &str) -> Result<Words, String> {
    shlex::split(v)
        .map(Words)
        .ok_or_else(|| format!("`{v}` has an unclosed quote"))
}

/// `NAME=ARGS` of `--tool-args`.
fn parse_tool_args(v: &str) -> Result<(String, Words), String> {
    match v.split_once('=') {
        Some((name, args)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), parse_words(args)?))
        }
        _ => Err(format!(
            "`{v}` is not NAME=ARGS (the program's name, then its tool's command line)"
        )),
    }
}

fn main() -> ExitCode {
    let v = VerifyArgs::parse();
    if v.before.is_some() && !v.paths.is_empty() {
        eprintln!("error: give either --before/--after or paths, not both");
        return ExitCode::from(2);
    }
    let strategy: Strategy = v.strategy.parse().expect("clap checked the value");
    let opts = bpf_migrate_verify::VerifyOptions {
        paths: v.paths,
        before: v.before,
        after: v.after,
        kernel: v.kernel,
        accel: match v.accel {
            AccelArg::Auto => bpf_migrate_verify::qemu::Accel::Auto,
            AccelArg::Kvm => bpf_migrate_verify::qemu::Accel::Kvm,
            AccelArg::Tcg => bpf_migrate_verify::qemu::Accel::Tcg,
        },
        cpus: v.cpus,
        workload: v.workload,
        timeout: std::time::Duration::from_secs(v.timeout),
        includes: v.include,
        defines: v.define,
        cflags: v
            .cflags
            .map(|c| c.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        keep: v.keep,
        json: v.format == Format::Json,
        engine: Options {
            ring_size: v.ringbuf_size.unwrap_or(256 * 1024),
            ring_size_given: v.ringbuf_size.is_some(),
            rules: RuleFilter::default(),
            strategy,
            max_packet: v.max_packet,
            lost: v.lost.parse().expect("clap checked it"),
        },
        bench: v.bench,
        bench_start: v.bench_start,
        tools: !v.events_only,
        per_boot: v.per_boot as usize,
        build: v.build,
        build_root: v.build_root,
        args: v.args.map(|a| a.0).unwrap_or_default(),
        tool_args: v.tool_args.into_iter().map(|(n, a)| (n, a.0)).collect(),
    };
    ExitCode::from(bpf_migrate_verify::run(&opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tools_command_line_is_split_as_a_shell_splits_it() {
        let (name, words) =
            parse_tool_args("trace=t:syscalls:sys_enter_kill \"sig %d\", args->sig").unwrap();
        assert_eq!(name, "trace");
        assert_eq!(
            words.0,
            ["t:syscalls:sys_enter_kill", "sig %d,", "args->sig"]
        );
        assert_eq!(
            parse_words("-C /dev/pts/0").unwrap().0,
            ["-C", "/dev/pts/0"]
        );
        assert!(parse_words("'open").unwrap_err().contains("unclosed quote"));
        assert!(parse_tool_args("=x").is_err());
    }
}
