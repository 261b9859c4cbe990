//! In-process checks for the site handlers' unit tests, in the style of rust-analyzer's
//! `check_assist`: a handful of small files in, the engine run over them whole (analysis,
//! linking, the parse checks), and what came out compared with what the test says.
//!
//! Files are given as `(name, text)`; names are relative paths (`x.bpf.c`, `x.c`,
//! `src/main.rs`), so linking by convention works as on disk.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Options, Outcome, Strategy, migrate};
use crate::report::{Diagnostic, Severity};
use crate::rules::Rule;
use crate::source::SourceFile;

/// The end of a small BPF program: its licence.
pub const LICENSE: &str = "\nchar LICENSE[] SEC(\"license\") = \"GPL\";\n";

/// A minimal loader `x.c` reading the perf event array `events` of `x.bpf.c` through its
/// skeleton: a BPF test program migrates only with its reader.
pub const LOADER: &str = r#"#include <bpf/libbpf.h>
#include "x.skel.h"

static void on_event(void *ctx, int cpu, void *data, __u32 size)
{
}

int main(void)
{
	struct x_bpf *skel = x_bpf__open_and_load();
	struct perf_buffer *pb;

	pb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, on_event, NULL, NULL, NULL);
	while (perf_buffer__poll(pb, 100) >= 0)
		;
	return 0;
}
"#;

pub fn sources(files: &[(&str, &str)]) -> Vec<SourceFile> {
    files
        .iter()
        .map(|(name, text)| {
            SourceFile::new(PathBuf::from(name), name.to_string(), text.to_string())
        })
        .collect()
}

/// The engine over `files`: the new text of each changed file, and every diagnostic.
pub fn run(files: &[(&str, &str)], opts: &Options) -> (BTreeMap<String, String>, Vec<Diagnostic>) {
    let srcs = sources(files);
    let Outcome { changes, diags, .. } = migrate(&srcs, opts);
    let changed = changes
        .into_iter()
        .map(|c| (srcs[c.file].display.clone(), c.new_text))
        .collect();
    (changed, diags)
}

fn render(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| d.render(false)).collect()
}

/// The program migrates with nothing refused, and the files of `after` read as given (files
/// not named there may change too).
pub fn check_migrate(before: &[(&str, &str)], after: &[(&str, &str)]) {
    check_migrate_with(before, after, &Options::default());
}

pub fn check_migrate_with(before: &[(&str, &str)], after: &[(&str, &str)], opts: &Options) {
    let (changed, diags) = run(before, opts);
    assert!(
        !diags.iter().any(|d| d.severity.refuses()),
        "refused:\n{}",
        render(&diags)
    );
    for (name, want) in after {
        let got = changed
            .get(*name)
            .unwrap_or_else(|| panic!("{name} did not change; diagnostics:\n{}", render(&diags)));
        assert_eq!(got, want, "{name} after migration");
    }
}

/// Nothing changes, and `rule` refuses the program (a `manual` diagnostic) with a message
/// that contains `says`.
pub fn check_refused(files: &[(&str, &str)], rule: Rule, says: &str) {
    let (changed, diags) = run(files, &Options::default());
    assert!(changed.is_empty(), "changed: {:?}", changed.keys());
    assert!(
        diags
            .iter()
            .any(|d| d.rule == rule && d.severity == Severity::Manual && d.message.contains(says)),
        "no manual[{rule}] saying `{says}`:\n{}",
        render(&diags)
    );
}

/// With `--strategy reserve`, the program still migrates, keeping the copy, and a
/// `reserve-fallback` note contains `reason`.
pub fn check_fallback(files: &[(&str, &str)], reason: &str) {
    let opts = Options {
        strategy: Strategy::Reserve,
        ..Options::default()
    };
    let (changed, diags) = run(files, &opts);
    assert!(
        !diags.iter().any(|d| d.severity.refuses()),
        "refused:\n{}",
        render(&diags)
    );
    assert!(
        changed
            .values()
            .any(|t| t.contains("bpf_ringbuf_output(") || t.contains(".ringbuf_output(")),
        "the copy was not kept:\n{changed:?}"
    );
    assert!(
        diags
            .iter()
            .any(|d| d.rule == Rule::ReserveFallback && d.message.contains(reason)),
        "no reserve-fallback note saying `{reason}`:\n{}",
        render(&diags)
    );
}
