//! Command line: `bpf-migrate [--diff|--check|--write] [PATH...]`, `rules`, `explain ID`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::{self, Options, Outcome, RuleFilter};
use crate::report::{Diagnostic, Severity};
use crate::rules::{self, Rule};
use crate::source::SourceFile;
use crate::{diff, discover, output, write};

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
    /// Prove a migration in a VM: build both versions, load both, compare their events
    /// (`bpf-migrate verify --help` for its options).
    #[command(disable_help_flag = true)]
    Verify {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum StrategyArg {
    /// bpf_ringbuf_output(): the event is built where it was, then copied into the ring.
    Copy,
    /// bpf_ringbuf_reserve()/submit(): stack and per-CPU-array events are built in the ring;
    /// sites that cannot be converted safely keep the copy, with a note.
    Reserve,
    /// One program for kernels with and without the ring buffer (libbpf C loaders): the
    /// loader probes for the ring buffer before load, and falls back to the perf buffer.
    Compat,
}

impl From<StrategyArg> for crate::engine::Strategy {
    fn from(s: StrategyArg) -> Self {
        match s {
            StrategyArg::Copy => crate::engine::Strategy::Copy,
            StrategyArg::Reserve => crate::engine::Strategy::Reserve,
            StrategyArg::Compat => crate::engine::Strategy::Compat,
        }
    }
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
    #[arg(long, value_name = "BYTES", value_parser = engine::parse_size)]
    ringbuf_size: Option<u64>,
    /// Packet samples (bpf_perf_event_output() with CTXLEN flags) whose length the program
    /// does not bound keep at most this many bytes of each packet (1 to 16384; 1500 for an
    /// Ethernet MTU); longer packets are cut. Without it such samples are refused.
    #[arg(long, value_name = "BYTES", value_parser = engine::parse_max_packet)]
    max_packet: Option<u64>,
    /// How events get into the ring buffer: `copy` (bpf_ringbuf_output, the default),
    /// `reserve` (built in place with bpf_ringbuf_reserve/submit where that is safe), or
    /// `compat` (the ring buffer where the kernel has one, else the perf buffer; libbpf C).
    #[arg(long, value_enum, default_value_t = StrategyArg::Copy)]
    strategy: StrategyArg,
    /// A lost-sample callback: `count` (the default) keeps it, fed from a per-CPU counter
    /// of the records the ring could not take, added to the BPF program; `drop` removes it.
    #[arg(long, value_name = "HOW", default_value = "count", value_parser = ["count", "drop"])]
    lost: String,
    /// Colour diffs and diagnostics.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
    /// Print only what needs action (no notes, no summary).
    #[arg(short, long)]
    quiet: bool,
    /// Leave out paths matching this glob (repeatable; `**` crosses directories).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Migrate only programs whose rules are all among these (ids or prefixes like `bcc-*`,
    /// comma separated); show only their diagnostics.
    #[arg(long, value_delimiter = ',', value_name = "RULES")]
    select: Vec<String>,
    /// Leave programs that need these rules alone, and hide their diagnostics.
    #[arg(long, value_delimiter = ',', value_name = "RULES")]
    ignore: Vec<String>,
    /// With --write: write even files with uncommitted changes in their git work tree.
    #[arg(long)]
    allow_dirty: bool,
    /// Files or directories (default: the current directory).
    paths: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Format {
    Human,
    Json,
    /// SARIF 2.1.0, with fixes, for code scanning.
    Sarif,
    /// GitHub Actions workflow annotations.
    Github,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Color {
    Auto,
    Always,
    Never,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Rules) => list_rules(),
        Some(Cmd::Explain { id }) => explain(&id),
        Some(Cmd::Verify { args }) => crate::verify::run(&args),
        None => run(cli.run),
    }
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
        if !ex.args.is_empty() {
            s.push_str(&format!("(bpf-migrate {})\n", ex.args.join(" ")));
        }
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
        rules: RuleFilter {
            select: args.select.clone(),
            ignore: args.ignore.clone(),
        },
        strategy: args.strategy.into(),
        max_packet: args.max_packet,
        lost: args.lost.parse().expect("clap checked it"),
    };
    if let Err(e) = opts.rules.check() {
        eprintln!("error: --select/--ignore: {e}");
        return ExitCode::from(2);
    }
    let found = match discover::discover_with(&paths, &args.exclude) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // A progress bar on a terminal, for runs long enough to want one; never in pipes.
    let bar =
        (std::io::stderr().is_terminal() && !args.quiet && found.files.len() >= 200).then(|| {
            let b = indicatif::ProgressBar::new(found.files.len() as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {pos}/{len} files {wide_bar} {elapsed}",
                )
                .expect("valid template"),
            );
            b
        });
    let mut outcome = engine::migrate_with_progress(&found.files, &opts, &|| {
        if let Some(b) = &bar {
            b.inc(1);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    outcome.stats.files_scanned += found.skipped;
    let mut diags: Vec<Diagnostic> = found.errors;
    diags.append(&mut outcome.diags);
    diags.retain(|d| d.severity == Severity::Error || opts.rules.allows(d.rule));

    if args.mode.write {
        let files: Vec<&std::path::Path> = outcome
            .changes
            .iter()
            .map(|c| found.files[c.file].path.as_path())
            .collect();
        let dirty = if args.allow_dirty {
            Vec::new()
        } else {
            write::dirty_files(&files)
        };
        if !dirty.is_empty() {
            eprintln!(
                "error: these files have uncommitted changes; commit or stash them, or pass --allow-dirty:\n  {}",
                dirty
                    .iter()
                    .map(|p| discover::display_path(p))
                    .collect::<Vec<_>>()
                    .join("\n  ")
            );
            return ExitCode::from(2);
        }
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
        Format::Json => output::json(&mut so, &found.files, &outcome, &diags),
        Format::Sarif => output::sarif(&mut so, &found.files, &outcome, &diags),
        Format::Github => output::github(&mut so, &found.files, &outcome, &diags),
        Format::Human => output::human(
            &mut so,
            output::HumanOpts {
                show_diff: !args.mode.check && !args.mode.write,
                wrote: args.mode.write,
                quiet: args.quiet,
                color,
            },
            &found.files,
            &outcome,
            &diags,
        ),
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
                        Rule::IoError,
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
                    Rule::IoError,
                    format!("not written: {e}"),
                ));
            }
        }
    }
}
