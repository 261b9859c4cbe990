//! What a run prints: a diff and rustc-style diagnostics for people, JSON lines for tools,
//! SARIF 2.1.0 for code scanning, and GitHub Actions annotations.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use serde_json::{Value, json};

use crate::diff;
use crate::engine::Outcome;
use crate::report::{Diagnostic, Severity};
use crate::rules::{self, Rule};
use crate::source::SourceFile;

pub struct HumanOpts {
    pub show_diff: bool,
    pub wrote: bool,
    pub quiet: bool,
    pub color: bool,
}

pub fn human(
    so: &mut impl Write,
    o: HumanOpts,
    files: &[SourceFile],
    outcome: &Outcome,
    diags: &[Diagnostic],
) -> std::io::Result<()> {
    let out_color = o.color && std::io::stdout().is_terminal();
    let err_color = o.color && std::io::stderr().is_terminal();
    if o.show_diff {
        for ch in &outcome.changes {
            let f = &files[ch.file];
            let d = diff::unified(&f.display, &f.text, &ch.new_text);
            so.write_all(if out_color { diff::colorize(&d) } else { d }.as_bytes())?;
        }
    }
    so.flush()?;
    let mut err = String::new();
    for d in diags {
        if o.quiet && matches!(d.severity, Severity::Note | Severity::Warning) {
            continue;
        }
        err.push_str(&d.render(err_color));
        err.push('\n');
    }
    if !o.quiet {
        err.push_str(&summary_line(outcome, diags, o.wrote));
    }
    std::io::stderr().write_all(err.as_bytes())
}

/// The closing summary: files, programs migrated, programs needing manual work by reason,
/// files that could not be read or parsed.
pub fn summary_line(outcome: &Outcome, diags: &[Diagnostic], wrote: bool) -> String {
    let s = &outcome.stats;
    let verb = if wrote { "migrated" } else { "to migrate" };
    let mut line = format!(
        "bpf-migrate: {} file(s) scanned, {} program(s) {verb} ({} file(s)), {} program(s) need manual work",
        s.files_scanned, s.programs_migrated, s.files_changed, s.programs_manual
    );
    let reasons = by_rule(diags.iter().filter(|d| d.severity == Severity::Manual));
    if !reasons.is_empty() {
        let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        line.push_str(&format!(" ({})", parts.join(", ")));
    }
    if s.programs_deselected > 0 {
        line.push_str(&format!(
            ", {} left alone by --select/--ignore",
            s.programs_deselected
        ));
    }
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    if errors > 0 {
        line.push_str(&format!(", {errors} error(s)"));
    }
    line.push('\n');
    line
}

fn by_rule<'a>(ds: impl Iterator<Item = &'a Diagnostic>) -> BTreeMap<Rule, usize> {
    let mut m = BTreeMap::new();
    for d in ds {
        *m.entry(d.rule).or_insert(0) += 1;
    }
    m
}

fn summaries() -> BTreeMap<String, rules::Entry> {
    rules::catalogue()
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect()
}

pub fn json(
    so: &mut impl Write,
    files: &[SourceFile],
    outcome: &Outcome,
    diags: &[Diagnostic],
) -> std::io::Result<()> {
    let cat = summaries();
    let summary_of = |rule: Rule| {
        cat.get(rule.id())
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
    let reasons = by_rule(diags.iter().filter(|d| d.severity == Severity::Manual));
    writeln!(
        so,
        "{}",
        json!({
            "type": "summary",
            "files_scanned": s.files_scanned,
            "files_changed": s.files_changed,
            "programs_migrated": s.programs_migrated,
            "programs_manual": s.programs_manual,
            "programs_deselected": s.programs_deselected,
            "manual_by_rule": reasons,
            "errors": diags.iter().filter(|d| d.severity == Severity::Error).count(),
        })
    )
}

fn sarif_level(s: Severity) -> &'static str {
    match s {
        Severity::Error | Severity::Manual => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    }
}

fn region(f: &SourceFile, start: usize, end: usize) -> Value {
    let (sl, sc) = f.line_col(start);
    let (el, ec) = f.line_col(end);
    json!({"startLine": sl, "startColumn": sc, "endLine": el, "endColumn": ec})
}

/// SARIF 2.1.0: one result per diagnostic, and one per changed file carrying its edits as a
/// fix. Columns count Unicode code points.
pub fn sarif(
    so: &mut impl Write,
    files: &[SourceFile],
    outcome: &Outcome,
    diags: &[Diagnostic],
) -> std::io::Result<()> {
    let cat = summaries();
    let mut results = Vec::new();
    for d in diags {
        let mut r = json!({
            "ruleId": d.rule,
            "level": sarif_level(d.severity),
            "message": {"text": match &d.help { Some(h) => format!("{} (help: {h})", d.message), None => d.message.clone() }},
        });
        if d.line > 0 {
            r["locations"] = json!([{"physicalLocation": {
                "artifactLocation": {"uri": d.file},
                "region": {"startLine": d.line, "startColumn": d.column},
            }}]);
        } else {
            r["locations"] = json!([{"physicalLocation": {"artifactLocation": {"uri": d.file}}}]);
        }
        results.push(r);
    }
    for ch in &outcome.changes {
        let f = &files[ch.file];
        let Some(first) = ch.edits.first() else {
            continue;
        };
        let replacements: Vec<Value> = ch
            .edits
            .iter()
            .map(|e| json!({"deletedRegion": region(f, e.start, e.end), "insertedContent": {"text": e.text}}))
            .collect();
        let rules_used: Vec<&str> = {
            let mut v: Vec<&str> = ch.edits.iter().map(|e| e.rule.id()).collect();
            v.dedup();
            v
        };
        results.push(json!({
            "ruleId": first.rule,
            "level": "warning",
            "message": {"text": format!("perf buffer code to migrate to the ring buffer ({})", rules_used.join(", "))},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": f.display}, "region": region(f, first.start, first.end)}}],
            "fixes": [{
                "description": {"text": "migrate to the BPF ring buffer"},
                "artifactChanges": [{"artifactLocation": {"uri": f.display}, "replacements": replacements}],
            }],
        }));
    }
    let rules: Vec<Value> = cat
        .values()
        .map(|r| {
            json!({
                "id": r.id,
                "shortDescription": {"text": r.summary},
                "fullDescription": {"text": r.explanation.trim()},
                "defaultConfiguration": {"level": match r.class.as_str() { "manual" => "error", "warning" => "warning", "note" => "note", _ => "warning" }},
            })
        })
        .collect();
    let doc = json!({
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [{
            "tool": {"driver": {
                "name": "bpf-migrate",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/bpf-migrate/bpf-migrate",
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    });
    writeln!(
        so,
        "{}",
        serde_json::to_string_pretty(&doc).expect("SARIF serializes")
    )
}

/// GitHub Actions workflow commands: `::error file=...,line=...::message`.
pub fn github(
    so: &mut impl Write,
    files: &[SourceFile],
    outcome: &Outcome,
    diags: &[Diagnostic],
) -> std::io::Result<()> {
    fn esc(s: &str) -> String {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    }
    fn prop(s: &str) -> String {
        esc(s).replace(':', "%3A").replace(',', "%2C")
    }
    for d in diags {
        let kind = match d.severity {
            Severity::Error | Severity::Manual => "error",
            Severity::Warning => "warning",
            Severity::Note => "notice",
        };
        let msg = match &d.help {
            Some(h) => format!("{}\nhelp: {h}", d.message),
            None => d.message.clone(),
        };
        if d.line > 0 {
            writeln!(
                so,
                "::{kind} file={},line={},col={},title={}::{}",
                prop(&d.file),
                d.line,
                d.column,
                prop(&format!("bpf-migrate {}", d.rule)),
                esc(&msg)
            )?;
        } else {
            writeln!(
                so,
                "::{kind} file={},title={}::{}",
                prop(&d.file),
                prop(&format!("bpf-migrate {}", d.rule)),
                esc(&msg)
            )?;
        }
    }
    for ch in &outcome.changes {
        let f = &files[ch.file];
        if let Some(e) = ch.edits.first() {
            let (line, col) = f.line_col(e.start);
            writeln!(
                so,
                "::warning file={},line={line},col={col},title=bpf-migrate::{}",
                prop(&f.display),
                esc(&format!(
                    "perf buffer code to migrate to the ring buffer ({} edit(s)); run bpf-migrate --write",
                    ch.edits.len()
                ))
            )?;
        }
    }
    Ok(())
}
