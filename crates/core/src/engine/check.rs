//! The re-parse checks: migrated text must not parse with more errors than the original.
//! Counted ahead while the analysis tree is alive (`check_ahead`, `check_bcc_c`), else in
//! full when the edits are applied at linking (`apply_checked`).

use std::collections::HashMap;
use std::path::Path;

use super::context::{Analysis, refuses};
use super::gate::{is_go, is_python_source, is_rust};
use super::options::{has_size_marker, size_marker, stand_in_sizes};
use super::{python, rust};
use crate::edit::{self, Edit};
use crate::lang::c;
use crate::report::Diagnostic;
use crate::rules::Rule;
use crate::source::SourceFile;

/// A file's parse, kept past its analysis for `check_ahead`.
pub enum Kept {
    C(c::CParse),
    Python(tree_sitter::Tree),
    /// The byte ranges of a Rust file's top-level items (syn keeps no tree worth re-using).
    Rust(Vec<std::ops::Range<usize>>),
}

/// Whether `check_ahead` is worth its re-parse: the file has edits and needs no manual work
/// (a program with manual work keeps none of its edits).
pub fn wants_check_ahead(a: &Analysis) -> bool {
    !a.edits.is_empty() && !refuses(&a.diags)
}

/// A file's new text and its edits, or why the program cannot be changed.
pub(super) type Applied = Result<(String, Vec<Edit>), Box<Diagnostic>>;

/// A file's new text, if its edits apply cleanly and add no parse error.
pub(super) fn apply_checked(
    file: &SourceFile,
    mut edits: Vec<Edit>,
    analysis: &Analysis,
    sizes: &HashMap<(usize, String), String>,
    i: usize,
) -> Applied {
    // The rings' sizes (BPF_RINGBUF_OUTPUT page counts, libbpf maps' max_entries), now that
    // what the readers asked for is known.
    for e in edits.iter_mut().filter(|e| has_size_marker(e)) {
        for ((f, name), size) in sizes {
            if *f == i {
                e.text = e.text.replace(&size_marker(name), size);
            }
        }
    }
    if let Err(e) = edit::normalize(&mut edits) {
        // Two changes to one stretch of code: it is not plain enough to migrate (code that
        // does not parse, typically), so the program is left to be done by hand.
        return Err(Box::new(
            Diagnostic::at(
                file,
                e.second.0,
                Rule::UnsupportedForm,
                format!("the changes planned here overlap ({} and {}); the code around this line is not plain enough to migrate", e.first.2, e.second.2),
            )
            .help("check that this code compiles (unbalanced braces?), or migrate by hand"),
        ));
    }
    let errors_before = analysis.errors_before;
    let new_text = edit::apply(&file.text, &edits, file.crlf);
    // A size marker left in an edit (its map had no reader) must not reach a file; the
    // input itself may hold any byte.
    let unresolved = edits
        .iter()
        .any(|e| has_size_marker(e) || e.text.contains(super::rust::callbacks::CPU_BYTES));
    // Counted ahead, during the analysis: no more errors than before settles it; anything
    // else is decided by a full parse of the new text.
    let errors_after = analysis
        .errors_ahead
        .filter(|&n| n <= errors_before)
        .unwrap_or_else(|| parse_errors(&file.path, &new_text));
    if unresolved || errors_after > errors_before {
        // A size marker left unresolved is a bug of ours whatever the count.
        let before = if unresolved { 0 } else { errors_before };
        return Err(Box::new(parse_check_refusal(
            file,
            edits[0].start,
            before,
            "this file",
            "the migrated text of this file",
        )));
    }
    if !is_python_source(&file.path, &file.text)
        && !is_rust(&file.path)
        && !is_go(&file.path)
        && let Some(d) = check_else_branches(
            file,
            &new_text,
            &edits,
            (&[c_range(&file.text)], &[c_range(&new_text)]),
            (c::looks_bcc(&file.text), c::looks_bcc(&new_text)),
            ("this file", "the migrated text of this file"),
        )
    {
        return Err(Box::new(d));
    }
    Ok((new_text, edits))
}

/// `parse_errors` of the text `edits` make of the file, by an incremental re-parse of
/// `kept` (with a stand-in for the ring sizes linking fills in: a number either way).
/// Done at the end of the analysis, while the tree is alive: trees are many times the size
/// of their text, too big to keep until linking. Not done for a file that needs manual work:
/// its program keeps none of its edits.
pub fn check_ahead(file: &SourceFile, a: &Analysis, kept: &Kept) -> Option<usize> {
    if !wants_check_ahead(a) {
        return None;
    }
    let edits = edits_ahead(&a.edits)?;
    if let Kept::Python(tree) = kept
        && crate::lang::python::edits_keep_structure(tree, &file.text, &edits)
    {
        return Some(a.errors_before);
    }
    let (new_text, spans) = edit::apply_spans(&file.text, &edits, file.crlf);
    let tree = match kept {
        Kept::Rust(items) => return rust::items_parse(items, &new_text, &spans).then_some(0),
        Kept::Python(old) => crate::lang::python::reparse(old, &file.text, &new_text, &spans)?,
        Kept::C(old) => {
            // The same masking choice as `parse_auto` makes for the new text.
            if c::looks_bcc(&new_text) != c::looks_bcc(&file.text) {
                return None;
            }
            c::reparse(old, &file.text, &new_text, &[c_range(&new_text)], &spans)?.tree
        }
    };
    Some(c::error_nodes(tree.root_node()).len())
}

/// The C of one BCC string (`ranges` of `file`, parsed as `old` with `errors_before` errors)
/// with its own edits applied: a diagnostic if it parses with more errors than before (the
/// Python re-parse of the tool sees the string only as a string). Incremental, while the
/// string's tree is alive; in full when the masks shift.
pub(crate) fn check_bcc_c(
    file: &SourceFile,
    old: &c::CParse,
    ranges: &[std::ops::Range<usize>],
    edits: &[Edit],
    errors_before: usize,
) -> Option<Diagnostic> {
    // Overlapping edits are refused at linking, with their own message.
    let edits = edits_ahead(edits)?;
    let (new_text, spans) = edit::apply_spans(&file.text, &edits, file.crlf);
    let errors_after = edit::map_ranges(ranges, &spans)
        .and_then(|new_ranges| {
            c::reparse(old, &file.text, &new_text, &new_ranges, &spans)
                .or_else(|| c::parse_bcc(&new_text, Some(&new_ranges)))
        })
        .map_or(usize::MAX, |p| c::error_nodes(p.tree.root_node()).len());
    if errors_after <= errors_before {
        let new_ranges = edit::map_ranges(ranges, &spans)?;
        return check_else_branches(
            file,
            &new_text,
            &edits,
            (ranges, &new_ranges),
            (true, true),
            ("the C in this string", "the migrated C in this string"),
        );
    }
    Some(parse_check_refusal(
        file,
        edits[0].start,
        errors_before,
        "the C in this string",
        "the migrated C in this string",
    ))
}

/// Edits where a parse of first branches only does not look (a branch after `#else`, a
/// directive line; see `c::else_branches`), checked on the parse with every branch: it must
/// not have more errors after them than before. The usual count cannot tell: C that an edit
/// breaks in an `#else` branch may read better with first branches only, the parse that is
/// then counted. A diagnostic when the check fails. `ranges` and `placeholders` are for the
/// old and the new text; `subject`, as for `parse_check_refusal`.
fn check_else_branches(
    file: &SourceFile,
    new_text: &str,
    edits: &[Edit],
    ranges: (&[std::ops::Range<usize>], &[std::ops::Range<usize>]),
    placeholders: (bool, bool),
    subject: (&str, &str),
) -> Option<Diagnostic> {
    if !ranges.0.iter().any(|r| file.text[r.clone()].contains('#')) {
        return None;
    }
    let hidden = c::else_branches(&file.text, ranges.0);
    // Touching counts: an insertion at the edge of a branch may join it.
    let at = edits
        .iter()
        .find(|e| hidden.iter().any(|h| e.start <= h.end && e.end >= h.start))?
        .start;
    let before = c::errors_with_all_branches(&file.text, ranges.0, placeholders.0);
    let after = c::errors_with_all_branches(new_text, ranges.1, placeholders.1);
    (after > before).then(|| parse_check_refusal(file, at, before, subject.0, subject.1))
}

/// Why a migration that would add parse errors is refused: manual work when the text did not
/// parse cleanly to begin with (error recovery may shift with any change, so the migration
/// cannot be checked: not our bug, but not safe either), else an internal error.
fn parse_check_refusal(
    file: &SourceFile,
    at: usize,
    errors_before: usize,
    subject: &str,
    migrated: &str,
) -> Diagnostic {
    if errors_before > 0 {
        Diagnostic::at(file, at, Rule::UnsupportedForm,
            format!("{subject} does not parse cleanly ({errors_before} error(s)), so the migration of its program cannot be checked"))
            .help("fix the code that does not parse (or the macros that hide C syntax), or migrate by hand")
    } else {
        Diagnostic::at(
            file,
            at,
            Rule::InternalError,
            format!("{migrated} would not parse; nothing was changed in this program"),
        )
        .help("please report this with the file")
    }
}

/// A file's edits as linking will apply them, as far as a parser can tell before linking:
/// normalized, with a stand-in for the ring sizes it fills in. None if they overlap.
pub(super) fn edits_ahead(edits: &[Edit]) -> Option<Vec<Edit>> {
    let mut edits = edits.to_vec();
    for e in edits.iter_mut().filter(|e| has_size_marker(e)) {
        e.text = stand_in_sizes(&e.text);
    }
    edit::normalize(&mut edits).ok()?;
    Some(edits)
}

/// The C of a C file: all of it but a byte-order mark.
pub(super) fn c_range(text: &str) -> std::ops::Range<usize> {
    let bom = if text.starts_with('\u{feff}') { 3 } else { 0 };
    bom..text.len()
}

pub(super) fn parse_errors(path: &Path, text: &str) -> usize {
    if is_rust(path) {
        return usize::from(syn::parse_file(text).is_err());
    }
    if is_go(path) {
        return super::go::parse_errors(text);
    }
    if is_python_source(path, text) {
        return python::parse(text)
            .map(|t| c::error_nodes(t.root_node()).len())
            .unwrap_or(usize::MAX);
    }
    c::parse_auto(text, Some(&[c_range(text)]))
        .map(|p| c::error_nodes(p.tree.root_node()).len())
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::report::Severity;

    /// The C ranges of the string in Python `py` that holds `needle`, its C parse and that
    /// parse's error count.
    fn bcc_string(py: &str, needle: &str) -> (Vec<std::ops::Range<usize>>, c::CParse, usize) {
        let tree = python::parse(py).unwrap();
        let nodes = c::descendants(tree.root_node());
        let s = c::of_kind(&nodes, "string")
            .into_iter()
            .find(|s| c::text(*s, py).contains(needle))
            .unwrap();
        let ranges = python::string_contents(s);
        let old = c::parse_bcc(py, Some(&ranges)).unwrap();
        let errors = c::error_nodes(old.tree.root_node()).len();
        (ranges, old, errors)
    }

    /// The C of a BCC string is checked on its own: an edit that breaks it is refused, one
    /// that keeps it whole is not, and the incremental count agrees with a full parse.
    #[test]
    fn a_broken_edit_to_the_c_in_a_bcc_string_is_refused() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/bcc_execsnoop/input/execsnoop.py");
        let text = std::fs::read_to_string(&path).unwrap();
        let file = SourceFile::new(path, "execsnoop.py".into(), text.clone());
        let (ranges, old, before) =
            bcc_string(&text, "events.perf_submit(ctx, &data, sizeof(data));");
        assert_eq!(before, 0);
        let at = text
            .find("events.perf_submit(ctx, &data, sizeof(data));")
            .unwrap();
        let edit = |new: &str| {
            vec![Edit::replace(
                at,
                at + "events.perf_submit(ctx, &data, sizeof(data));".len(),
                new,
                Rule::BccPerfOutput,
            )]
        };
        let good = edit("events.ringbuf_output(&data, sizeof(data), 0);");
        assert!(check_bcc_c(&file, &old, &ranges, &good, before).is_none());
        for broken in [
            "events.ringbuf_output(&data, sizeof(data), 0;",
            "{ events.ringbuf_output(&data, sizeof(data), 0);",
        ] {
            let d = check_bcc_c(&file, &old, &ranges, &edit(broken), before).expect(broken);
            assert_eq!((d.rule, d.severity), (Rule::InternalError, Severity::Error));
            // The incremental count is the full parse's.
            let (new_text, spans) = edit::apply_spans(&text, &edit(broken), false);
            let new_ranges = edit::map_ranges(&ranges, &spans).unwrap();
            let full = c::parse_bcc(&new_text, Some(&new_ranges)).unwrap();
            let inc = c::reparse(&old, &text, &new_text, &new_ranges, &spans).unwrap();
            assert_eq!(
                c::error_nodes(inc.tree.root_node()).len(),
                c::error_nodes(full.tree.root_node()).len()
            );
        }
    }

    /// An edit that breaks C in an `#else` branch is refused, though the broken text reads
    /// without errors when only first branches are kept (the parse that is counted when the
    /// text has a header split across `#if`); in a C file and in a BCC string.
    #[test]
    fn a_broken_edit_in_an_else_branch_is_refused() {
        let split = "#ifdef NEW_KERNEL\nint probe(struct pt_regs *ctx, struct file *file)\n#else\nint probe(struct pt_regs *ctx)\n#endif\n{\n";
        for head in ["int probe(struct pt_regs *ctx)\n{\n", split] {
            let text = format!(
                "{head}#ifdef OLD_KERNEL\n\tg(1);\n#else\n\tg(2);\n#endif\n\treturn 0;\n}}\n"
            );
            let errors = |t: &str| parse_errors(Path::new("f.c"), t);
            let before = errors(&text);
            let broken = text.replace("g(2);", "g(2;");
            assert_eq!((before, errors(&broken)), (0, 0), "{text}");
            let file = SourceFile::new(PathBuf::from("f.c"), "f.c".into(), text.clone());
            let at = text.find("g(2);").unwrap();
            let edit = |new: &str| vec![Edit::replace(at, at + 5, new, Rule::PerfBufferNew)];
            let apply = |edits: Vec<Edit>| {
                apply_checked(&file, edits, &Analysis::default(), &HashMap::new(), 0)
            };
            let d = apply(edit("g(2;")).expect_err(&text);
            assert_eq!(
                d.rule,
                if head == split {
                    Rule::UnsupportedForm
                } else {
                    Rule::InternalError
                }
            );
            assert!(apply(edit("h(2);")).is_ok());

            // The same function in a BCC string, checked from its own parse.
            let py = format!(
                "from bcc import BPF\nb = BPF(text=\"\"\"\nBPF_PERF_OUTPUT(events);\n{text}\"\"\")\n"
            );
            let file = SourceFile::new(PathBuf::from("t.py"), "t.py".into(), py.clone());
            let (ranges, old, before) = bcc_string(&py, "BPF_PERF_OUTPUT");
            assert_eq!(before, 0);
            let at = py.find("g(2);").unwrap();
            let edit = |new: &str| [Edit::replace(at, at + 5, new, Rule::BccPerfOutput)];
            assert!(
                check_bcc_c(&file, &old, &ranges, &edit("g(2;"), before).is_some(),
                "{py}"
            );
            assert!(check_bcc_c(&file, &old, &ranges, &edit("h(2);"), before).is_none());
        }
    }

    /// A Rust file is checked by the items its edits touch: an edit that breaks one, or that
    /// falls between items, leaves the answer to a full parse.
    #[test]
    fn rust_items_touched_by_edits_decide_alone() {
        let text = "use a::b;\n\n/// Docs.\n#[inline]\nfn f() {\n    g(1);\n}\n\nstruct S;\n";
        let file = SourceFile::new("x.rs".into(), "x.rs".into(), text.into());
        let items = rust::item_ranges(&file, &syn::parse_file(text).unwrap());
        let at = text.find("g(1)").unwrap();
        let check = |e: Edit| {
            let (new, spans) = edit::apply_spans(text, &[e], false);
            rust::items_parse(&items, &new, &spans)
        };
        assert_eq!(
            &text[items[1].clone()],
            "/// Docs.\n#[inline]\nfn f() {\n    g(1);\n}"
        );
        assert!(check(Edit::replace(
            at,
            at + 4,
            "h(1, 2)",
            Rule::PerfEventOutput
        )));
        assert!(!check(Edit::replace(
            at,
            at + 4,
            "h(1, 2",
            Rule::PerfEventOutput
        )));
        assert!(!check(Edit::insert(
            text.find("\n\nstruct").unwrap() + 1,
            "fn k() {}\n",
            Rule::PerfEventOutput
        )));
        // An item that now ends in a line comment, with the next item on its line.
        let text = "struct A; impl B {\n    fn x() {}\n}\n";
        let file = SourceFile::new("y.rs".into(), "y.rs".into(), text.into());
        let items = rust::item_ranges(&file, &syn::parse_file(text).unwrap());
        let (new, spans) = edit::apply_spans(
            text,
            &[Edit::insert(9, " // note", Rule::PerfEventOutput)],
            false,
        );
        assert!(syn::parse_file(&new).is_err());
        assert!(!rust::items_parse(&items, &new, &spans));
    }

    /// An edit that changes how the text after it lexes (an opened comment hides a `SEC`
    /// that was masked) cannot reuse the old parse.
    #[test]
    fn incremental_check_gives_way_when_masks_change_outside_the_edits() {
        let old = "int a;\nSEC(\"kprobe/x\") int f(void) { return 0; }\n";
        let parsed = c::parse_auto(old, Some(&[0..old.len()])).unwrap();
        let edits = [Edit::insert(0, "/* ", Rule::PerfEventOutput)];
        let (new, spans) = edit::apply_spans(old, &edits, false);
        assert!(c::reparse(&parsed, old, &new, &[0..new.len()], &spans).is_none());
        let harmless = [Edit::replace(4, 5, "bb", Rule::PerfEventOutput)];
        let (new, spans) = edit::apply_spans(old, &harmless, false);
        let re = c::reparse(&parsed, old, &new, &[0..new.len()], &spans).unwrap();
        assert_eq!(
            re.tree.root_node().to_sexp(),
            c::parse_auto(&new, Some(&[0..new.len()]))
                .unwrap()
                .tree
                .root_node()
                .to_sexp()
        );
    }
}
