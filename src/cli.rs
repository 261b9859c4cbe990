//! Command line: `bpf-migrate [--diff|--check|--write] [PATH...]`, `rules`, `explain ID`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::engine::{self, Options, Outcome};
use crate::report::{Diagnostic, Severity};
use crate::source::SourceFile;
use crate::{diff, discover, rules, write};

#[derive(Parser, Debug)]
#[command(
    name = "bpf-migrate",
    version,
    about = "Migrate eBPF programs from the BPF perf buffer to the BPF ring buffer",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List the rules.
    Rules,
    /// Explain one rule, with its example.
    Explain { id: String },
    /// Prove a migration in a VM: build both versions, load both, compare their events.
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
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
    /// Seconds the guest may run.
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
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    ringbuf_size: Option<u64>,
    /// Programs to migrate in memory and verify (default: the current directory).
    paths: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Args, Debug)]
#[group(id = "mode", multiple = false)]
struct Mode {
    /// Print the migration as a unified diff (the default).
    #[arg(long)]
    diff: bool,
    /// Print nothing but diagnostics; exit 1 if a migration is pending.
    #[arg(long)]
    check: bool,
    /// Write migrated files in place (atomically).
    #[arg(long)]
    write: bool,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    mode: Mode,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Size of each ring buffer: a power of two, at least 4096 (e.g. 262144, 256K, 1M).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    ringbuf_size: Option<u64>,
    /// Colour diffs and diagnostics.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
    /// Print only what needs action (no notes, no summary).
    #[arg(short, long)]
    quiet: bool,
    /// Files or directories (default: the current directory).
    paths: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Format {
    Human,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Color {
    Auto,
    Always,
    Never,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1024),
        Some((i, 'M' | 'm')) => (&t[..i], 1024 * 1024),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size in bytes (e.g. 262144, 256K, 1M)"))?;
    let bytes = n.checked_mul(mult).ok_or("size too large")?;
    engine::check_ring_size(bytes)?;
    Ok(bytes)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Rules) => list_rules(),
        Some(Cmd::Explain { id }) => explain(&id),
        Some(Cmd::Verify(v)) => verify(v),
        None => run(cli.run),
    }
}

fn verify(v: VerifyArgs) -> ExitCode {
    if v.before.is_some() && !v.paths.is_empty() {
        eprintln!("error: give either --before/--after or paths, not both");
        return ExitCode::from(2);
    }
    let opts = crate::verify::VerifyOptions {
        paths: v.paths,
        before: v.before,
        after: v.after,
        kernel: v.kernel,
        accel: match v.accel {
            AccelArg::Auto => crate::verify::qemu::Accel::Auto,
            AccelArg::Kvm => crate::verify::qemu::Accel::Kvm,
            AccelArg::Tcg => crate::verify::qemu::Accel::Tcg,
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
        },
    };
    ExitCode::from(crate::verify::run(&opts))
}

fn list_rules() -> ExitCode {
    let mut out = String::new();
    for r in rules::catalogue() {
        out.push_str(&format!("{:<22} {:<8} {}\n", r.id, r.class, r.summary));
    }
    print!("{out}");
    ExitCode::SUCCESS
}

fn explain(id: &str) -> ExitCode {
    let Some(r) = rules::find(id) else {
        eprintln!("error: no rule `{id}`; `bpf-migrate rules` lists them");
        return ExitCode::from(2);
    };
    let mut s = format!(
        "{} ({})\n\n{}\n\n{}\n",
        r.id,
        r.class,
        r.summary,
        r.explanation.trim_end()
    );
    if let Some(ex) = r.example.first() {
        s.push_str(&format!("\nExample: {}\n", ex.name));
        for (name, before) in &ex.before {
            match ex.after.get(name) {
                Some(after) => s.push_str(&diff::unified(name, before, after)),
                None => s.push_str(&format!("\n{name} (unchanged):\n{before}")),
            }
        }
        if !ex.diagnostics.is_empty() {
            s.push_str(&format!("\nDiagnostics: {}\n", ex.diagnostics.join(", ")));
        }
    }
    print!("{s}");
    ExitCode::SUCCESS
}

fn run(args: RunArgs) -> ExitCode {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let opts = Options {
        ring_size: args.ringbuf_size.unwrap_or(256 * 1024),
        ring_size_given: args.ringbuf_size.is_some(),
    };
    let found = discover::discover(&paths);
    let mut outcome = engine::migrate(&found.files, &opts);
    outcome.stats.files_scanned += found.skipped;
    let mut diags: Vec<Diagnostic> = found.errors;
    diags.append(&mut outcome.diags);

    if args.mode.write {
        write_programs(&found.files, &outcome, &mut diags);
    }

    let color = match args.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::env::var_os("NO_COLOR").is_none(),
    };
    let stdout = std::io::stdout();
    let mut so = stdout.lock();
    let result = match args.format {
        Format::Json => print_json(&mut so, &found.files, &outcome, &diags),
        Format::Human => print_human(&mut so, &args, color, &found.files, &outcome, &diags),
    };
    if let Err(e) = result
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("error: cannot write output: {e}");
        return ExitCode::from(2);
    }

    if diags.iter().any(|d| d.severity == Severity::Error) {
        ExitCode::from(2)
    } else if diags.iter().any(|d| d.severity == Severity::Manual)
        || (!args.mode.write && !outcome.changes.is_empty())
    {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Writes each program's files, all of them or, if one cannot be written, none.
fn write_programs(files: &[SourceFile], outcome: &Outcome, diags: &mut Vec<Diagnostic>) {
    let mut programs: Vec<usize> = outcome.changes.iter().map(|c| c.program).collect();
    programs.sort();
    programs.dedup();
    for p in programs {
        let changes: Vec<_> = outcome.changes.iter().filter(|c| c.program == p).collect();
        let blocked: Vec<Diagnostic> = changes
            .iter()
            .filter_map(|ch| {
                let f = &files[ch.file];
                write::preflight(&f.path, &f.text).err().map(|e| {
                    Diagnostic::file_error(
                        &f.display,
                        rules::IO_ERROR,
                        format!("not written: {e}; the rest of its program was not written either"),
                    )
                })
            })
            .collect();
        if !blocked.is_empty() {
            diags.extend(blocked);
            continue;
        }
        for ch in changes {
            let f = &files[ch.file];
            if let Err(e) = write::atomic_replace(&f.path, &f.text, &ch.new_text) {
                diags.push(Diagnostic::file_error(
                    &f.display,
                    rules::IO_ERROR,
                    format!("not written: {e}"),
                ));
            }
        }
    }
}

fn print_human(
    so: &mut impl Write,
    args: &RunArgs,
    color: bool,
    files: &[SourceFile],
    outcome: &Outcome,
    diags: &[Diagnostic],
) -> std::io::Result<()> {
    let out_color = color && std::io::stdout().is_terminal();
    let err_color = color && std::io::stderr().is_terminal();
    if !args.mode.check && !args.mode.write {
        for ch in &outcome.changes {
            let f = &files[ch.file];
            let d = diff::unified(&f.display, &f.text, &ch.new_text);
            so.write_all(if out_color { diff::colorize(&d) } else { d }.as_bytes())?;
        }
    }
    so.flush()?;
    let mut err = String::new();
    for d in diags {
        if args.quiet && matches!(d.severity, Severity::Note | Severity::Warning) {
            continue;
        }
        err.push_str(&d.render(err_color));
        err.push('\n');
    }
    if !args.quiet {
        let s = &outcome.stats;
        let verb = if args.mode.write {
            "migrated"
        } else {
            "to migrate"
        };
        err.push_str(&format!(
            "bpf-migrate: {} file(s) scanned, {} program(s) {verb} ({} file(s)), {} program(s) need manual work{}\n",
            s.files_scanned,
            s.programs_migrated,
            s.files_changed,
            s.programs_manual,
            match diags.iter().filter(|d| d.severity == Severity::Error).count() {
                0 => String::new(),
                n => format!(", {n} error(s)"),
            }
        ));
    }
    std::io::stderr().write_all(err.as_bytes())
}

fn print_json(
    so: &mut impl Write,
    files: &[SourceFile],
    outcome: &Outcome,
    diags: &[Diagnostic],
) -> std::io::Result<()> {
    let catalogue = rules::catalogue();
    let summary_of = |id: &str| {
        catalogue
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.summary.clone())
            .unwrap_or_default()
    };
    for ch in &outcome.changes {
        let f = &files[ch.file];
        for e in &ch.edits {
            let (line, column) = f.line_col(e.start);
            let (end_line, end_column) = f.line_col(e.end);
            let obj = json!({
                "type": "edit",
                "rule": e.rule,
                "severity": "fix",
                "file": f.display,
                "line": line,
                "column": column,
                "end_line": end_line,
                "end_column": end_column,
                "message": summary_of(e.rule),
                "original": &f.text[e.start..e.end],
                "replacement": e.text,
            });
            writeln!(so, "{obj}")?;
        }
    }
    for d in diags {
        let mut v = serde_json::to_value(d).expect("diagnostics serialize");
        v["type"] = json!("diagnostic");
        writeln!(so, "{v}")?;
    }
    let s = &outcome.stats;
    writeln!(
        so,
        "{}",
        json!({
            "type": "summary",
            "files_scanned": s.files_scanned,
            "files_changed": s.files_changed,
            "programs_migrated": s.programs_migrated,
            "programs_manual": s.programs_manual,
            "errors": diags.iter().filter(|d| d.severity == Severity::Error).count(),
        })
    )
}
