//! The migration engine: analyse every file, link the sites that touch one perf map into a
//! program, and keep the edits of the programs that can be migrated whole.
//!
//! Each file analysis plans its edits as if its program will migrate, and records refusals
//! (`Severity::Manual`) where it cannot. Linking then groups files into programs (a BPF object
//! and every consumer of its maps); a program with any refusal keeps none of its edits.
//!
//! The stages, in the order a run meets them: `options` (what the run is asked), `gate`
//! (whether a file is parsed at all), the analyses of each language (`bpf`, `user`, `bcc`,
//! `python`, `rust`, with `reserve` for the reserve strategy) over a `context`, `check` (the
//! migrated text must parse no worse), and `link` (files into programs, edits applied).

pub mod bcc;
mod bcc_compat;
mod bcc_format;
mod bcc_lost_counter;
pub mod bpf;
mod check;
mod compat;
mod context;
mod cpu_field;
mod edits;
mod gate;
pub mod go;
mod link;
mod lost_counter;
mod macro_maps;
mod options;
pub mod python;
pub mod reserve;
pub mod rust;
pub mod user;

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;

pub use self::check::{Kept, check_ahead, wants_check_ahead};
pub use self::compat::{FLAG_SUFFIX as COMPAT_FLAG_SUFFIX, output_helper as compat_output_helper};
pub use self::context::{
    Analysis, Consumer, CpuSite, CpuUse, Ctx, MapDef, MapKind, OutputSite, Report, other_map_uses,
};
/// The member `cpu-field` adds to an event struct (verify compares the events without it).
pub use self::cpu_field::FIELD as CPU_FIELD;
pub use self::gate::{
    C_TRIGGERS, SHEBANG_BYTES, c_needs_parse, has_trigger, is_go, is_python, is_python_source,
    is_rust, python_shebang, worth_analysing,
};
pub use self::link::{Change, Outcome, Stats, link_and_apply};
pub use self::options::{
    Lost, MAX_PACKET_LIMIT, Options, RuleFilter, Strategy, check_ring_size, parse_max_packet,
    parse_size, size_expr,
};

use self::check::c_range;
use self::context::refuses;
use self::gate::{MAX_PARSED_BYTES, implements_perf_buffer_api, too_deep};
use crate::lang::NodeExt;
use crate::lang::c::{self, Tok};
use crate::report::Diagnostic;
use crate::rules::Rule;
use crate::source::SourceFile;

/// Analyses one C file that `worth_analysing` kept; its parse comes back when `check_ahead`
/// may want it.
fn analyze_c(file: &SourceFile, opts: &Options) -> (Analysis, Option<Kept>) {
    let mut a = Analysis::default();
    let range = c_range(&file.text);
    let toks = c::lex(&file.text, range.clone());
    // A block comment running to the end of the file hides whatever follows it.
    if let Some(&(Tok::Comment, s, e)) = toks.last()
        && file.text[s..e].starts_with("/*")
        && !file.text[s..e].ends_with("*/")
        && has_trigger(&file.text[s..e])
    {
        a.diags.push(
            Diagnostic::at(
                file,
                s,
                Rule::ParseError,
                "unterminated comment: everything after it is part of it",
            )
            .help("close the comment; the file is left untouched"),
        );
        return (a, None);
    }
    if !c_needs_parse(&file.text, &toks) {
        return (a, None);
    }
    if let Some(deep) = too_deep(file) {
        return (deep, None);
    }
    let parsed = c::parse_auto_lexed(&file.text, range, &toks);
    let Some(parsed) = parsed else {
        a.diags.push(Diagnostic::file_error(
            &file.display,
            Rule::ParseError,
            "the C parser gave up on this file",
        ));
        return (a, None);
    };
    let nodes = c::named_descendants(parsed.tree.root_node());
    let mut cx = Ctx::new(file, &parsed.tree, &nodes, &toks, opts);
    a.errors_before = cx.errors.len();
    if implements_perf_buffer_api(&cx) {
        return (a, None);
    }
    // A trigger inside code that does not parse cannot be migrated, nor left silently.
    if let Some((s, e)) = cx.trigger_in_error(|w| C_TRIGGERS.iter().any(|t| w.contains(t))) {
        a.diags.push(
            Diagnostic::at(
                file,
                s,
                Rule::ParseError,
                format!(
                    "cannot parse the C code around `{}`; this file's program is left untouched",
                    &file.text[s..e]
                ),
            )
            .help("check for unbalanced braces or parentheses, or macros that hide C syntax"),
        );
        return (a, None);
    }
    bpf::analyze(&mut cx, &mut a);
    user::analyze(&mut cx, &mut a);
    if bcc::has_trigger(&file.text) && !bcc::is_libbpf_c(&file.text) {
        bcc::analyze(&mut cx, &mut a);
    }
    for n in c::of_kind(&nodes, "preproc_include") {
        if let Some(p) = n.field("path")
            && matches!(p.kind(), "string_literal" | "system_lib_string")
        {
            a.includes.push(
                c::text(p, &file.text)
                    .trim_matches(['"', '<', '>'])
                    .to_string(),
            );
        }
    }
    let Ctx { edits, diags, .. } = cx;
    a.edits = edits;
    a.diags.extend(diags);
    drop(nodes);
    let kept = wants_check_ahead(&a).then_some(Kept::C(parsed));
    (a, kept)
}

/// Analyses one file of any kind bpf-migrate reads.
pub fn analyze(file: &SourceFile, opts: &Options) -> Analysis {
    let (mut a, kept) = analyze_keeping(file, opts);
    if let Some(k) = kept {
        a.errors_ahead = check_ahead(file, &a, &k);
    }
    a
}

/// `analyze` without `check_ahead`: the parse comes back with the analysis when the check
/// may be wanted, for the caller to make or skip.
pub fn analyze_keeping(file: &SourceFile, opts: &Options) -> (Analysis, Option<Kept>) {
    if !worth_analysing(&file.path, &file.text) {
        return (Analysis::default(), None);
    }
    if file.text.len() > MAX_PARSED_BYTES {
        let mut a = Analysis::default();
        a.diags.push(Diagnostic::file_error(
            &file.display,
            Rule::ParseError,
            format!(
                "{} MiB is more than bpf-migrate parses ({} MiB); the file is left untouched",
                file.text.len() >> 20,
                MAX_PARSED_BYTES >> 20
            ),
        ));
        return (a, None);
    }
    if let Some(at) = gate::picks_both_buffers(&file.path, &file.text) {
        let mut a = Analysis::default();
        a.diags.push(
            Diagnostic::at(
                file,
                at,
                Rule::DualBuffer,
                "this file already works with both buffers, the ring buffer where the kernel has one and the perf buffer elsewhere: it is left as it is",
            )
            .help("nothing to migrate here; a perf buffer elsewhere in the program is migrated with its own files"),
        );
        return (a, None);
    }
    if gate::is_cpp(&file.path) {
        let mut a = Analysis::default();
        let at = gate::C_TRIGGERS
            .iter()
            .filter_map(|t| file.text.find(t))
            .min()
            .unwrap_or(0);
        a.diags.push(
            Diagnostic::at(
                file,
                at,
                Rule::UnsupportedForm,
                "this C++ file uses the perf buffer (BCC's C++ API, or a C++ loader), which bpf-migrate does not migrate",
            )
            .help("migrate it by hand, its BPF C and its reader together; bpf-migrate migrates BPF C with its libbpf C, BCC Python, libbpf-rs or Go reader"),
        );
        return (a, None);
    }
    if is_python_source(&file.path, &file.text) {
        match too_deep(file) {
            Some(a) => (a, None),
            None => python::analyze(file, opts),
        }
    } else if is_rust(&file.path) {
        match too_deep(file) {
            Some(a) => (a, None),
            None => rust::analyze(file, opts),
        }
    } else if is_go(&file.path) {
        match too_deep(file) {
            Some(a) => (a, None),
            None => {
                let mut a = go::analyze(file, opts);
                compat::refuse_unsupported(file, opts, &mut a, "Go readers");
                (a, None)
            }
        }
    } else {
        // After its cheaper gates: most C files with a trigger word are not parsed.
        analyze_c(file, opts)
    }
}

/// Migrates a set of files: analysis, linking, and the edits of every program that can move
/// whole. `files` should already hold each program's partner files (see `discover`).
pub fn migrate(files: &[SourceFile], opts: &Options) -> Outcome {
    migrate_with_progress(files, opts, &|| {})
}

/// As `migrate`, calling `tick` once a file is analysed (files are analysed in parallel;
/// results come out in the same order whatever the thread count).
pub fn migrate_with_progress(
    files: &[SourceFile],
    opts: &Options,
    tick: &(dyn Fn() + Sync),
) -> Outcome {
    use rayon::prelude::*;
    // Files that share a directory and a name up to the first dot (x.c, x.bpf.c, x.h, x.py)
    // are analysed together, so that the parse-error counts ahead are skipped for a program
    // one of whose files needs manual work: none of its edits will be kept. Only a skip
    // depends on the guess; a program that is linked otherwise is counted in full later.
    let mut groups: HashMap<(&Path, &str), Vec<usize>> = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        let name = f.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let stem = name.split('.').next().unwrap_or(name);
        groups
            .entry((f.path.parent().unwrap_or(Path::new("")), stem))
            .or_default()
            .push(i);
    }
    // Largest first, so that the last jobs of the parallel loop are small ones and neither
    // thread waits long for the other at the end (a hash map's order is random per run).
    let mut groups: Vec<(usize, Vec<usize>)> = groups
        .into_values()
        .map(|g| (g.iter().map(|&i| files[i].text.len()).sum(), g))
        .collect();
    groups.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let done: Vec<Vec<(usize, Analysis)>> = groups
        .par_iter()
        .with_max_len(1)
        .map(|(_, members)| {
            let mut results: Vec<(usize, Analysis, Option<Kept>)> = members
                .iter()
                .map(|&i| {
                    let (a, kept) = analyze_keeping(&files[i], opts);
                    tick();
                    (i, a, kept)
                })
                .collect();
            let refused = results.iter().any(|(_, a, _)| refuses(&a.diags));
            for (i, a, kept) in &mut results {
                if let Some(k) = kept.take()
                    && !refused
                {
                    a.errors_ahead = check_ahead(&files[*i], a, &k);
                }
            }
            results.into_iter().map(|(i, a, _)| (i, a)).collect()
        })
        .collect();
    let mut analyses: Vec<Analysis> = (0..files.len()).map(|_| Analysis::default()).collect();
    for (i, a) in done.into_iter().flatten() {
        analyses[i] = a;
    }
    link_and_apply(files, &mut analyses, opts)
}
