//! Imports after the edits: the perf package's import switched to the ring buffer's (or
//! dropped when that is imported already), and every import whose uses all went with the
//! edits dropped (`os` when `os.Getpagesize()` was the page count, `log` when it only told
//! of lost samples); each group of imports kept in gofmt's order (by path).

use tree_sitter::Node;

use super::GoFile;
use crate::lang::NodeExt;
use crate::rules::Rule;
use crate::source::{line_end_incl, line_start};

/// The name an import brings into the file: its alias, else the last element of its path;
/// None for `_` and `.` imports, which bring no name to count.
pub(super) fn name_of(g: &GoFile, spec: Node) -> Option<String> {
    match spec.field("name") {
        Some(n) if matches!(g.text(n), "_" | ".") => None,
        Some(n) => Some(g.text(n).to_string()),
        None => {
            let path = path_of(g, spec);
            Some(path.rsplit('/').next().unwrap_or(&path).to_string())
        }
    }
}

pub(super) fn path_of(g: &GoFile, spec: Node) -> String {
    spec.field("path")
        .map(|p| g.text(p).trim_matches(['"', '`']).to_string())
        .unwrap_or_default()
}

/// The import spec of `path`, if the file has one.
pub(super) fn spec_of<'t>(g: &GoFile<'_, 't>, path: &str) -> Option<Node<'t>> {
    g.of_kind("import_spec")
        .into_iter()
        .find(|s| path_of(g, *s) == path)
}

/// Where the file uses package `name`: `name.X` in expressions and types.
pub(super) fn uses(g: &GoFile, name: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for n in &g.nodes {
        let pkg = match n.kind() {
            "selector_expression" => n.field("operand").filter(|o| o.kind() == "identifier"),
            "qualified_type" => n.field("package"),
            _ => None,
        };
        if let Some(p) = pkg
            && g.text(p) == name
        {
            out.push((p.start_byte(), p.end_byte()));
        }
    }
    out
}

/// What becomes of one import spec.
#[derive(PartialEq)]
enum Fate {
    Keep,
    Path(String),
    Drop,
}

/// Settles the imports once the other edits are planned: `switch` is the spec to give a new
/// path (None: drop it), `need` the paths the added code uses: kept, or imported (a standard
/// library path in the group of the standard library's, if there is one; else, as any other,
/// beside the switched spec).
pub(super) fn finish(g: &mut GoFile, switch: Option<(usize, Option<&str>)>, need: &[&str]) {
    let specs = g.of_kind("import_spec");
    let fates: Vec<Fate> = specs
        .iter()
        .map(|&s| match switch {
            Some((at, Some(path))) if at == s.start_byte() => Fate::Path(path.to_string()),
            Some((at, None)) if at == s.start_byte() => Fate::Drop,
            _ if need.contains(&path_of(g, s).as_str()) => Fate::Keep,
            _ if unused_after_edits(g, s) => Fate::Drop,
            _ => Fate::Keep,
        })
        .collect();
    let adds: Vec<&str> = need
        .iter()
        .copied()
        .filter(|n| !specs.iter().any(|&s| path_of(g, s) == *n))
        .collect();
    if fates.iter().all(|f| *f == Fate::Keep) && adds.is_empty() {
        return;
    }
    // The groups gofmt sorts: specs on consecutive lines of one import list.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let joined = groups.last().is_some_and(|grp| {
            let prev = specs[*grp.last().unwrap()];
            prev.parent() == s.parent()
                && s.parent().is_some_and(|p| p.kind() == "import_spec_list")
                && line_start(g.src(), s.start_byte()) == line_end_incl(g.src(), prev.end_byte())
        });
        if joined {
            groups.last_mut().unwrap().push(i);
        } else {
            groups.push(vec![i]);
        }
    }
    let std = |p: &str| !p.split('/').next().unwrap_or("").contains('.');
    let std_group = groups
        .iter()
        .position(|grp| grp.iter().all(|&i| std(&path_of(g, specs[i]))));
    for (k, grp) in groups.iter().enumerate() {
        let switched = grp
            .iter()
            .any(|&i| switch.is_some_and(|(at, _)| at == specs[i].start_byte()));
        let with: Vec<&str> = adds
            .iter()
            .copied()
            .filter(|&p| {
                if std(p) && std_group.is_some() {
                    std_group == Some(k)
                } else {
                    switched
                }
            })
            .collect();
        if with.is_empty() && grp.iter().all(|&i| fates[i] == Fate::Keep) {
            continue;
        }
        settle_group(g, &specs, &fates, grp, &with);
    }
}

fn settle_group(g: &mut GoFile, specs: &[Node], fates: &[Fate], grp: &[usize], add: &[&str]) {
    let src = g.src();
    let one_per_line = grp.iter().all(|&i| {
        let s = specs[i];
        let ls = line_start(src, s.start_byte());
        src[ls..s.start_byte()].trim().is_empty()
            && !src[s.start_byte()..s.end_byte()].contains('\n')
    });
    let lone = specs[grp[0]]
        .parent()
        .is_some_and(|p| p.kind() == "import_declaration");
    // Where a line importing `add` goes when the group cannot be rewritten whole: after it.
    let add_after = |g: &mut GoFile, s: Node, line: String| {
        let at = line_end_incl(g.src(), s.end_byte());
        g.edits
            .push(crate::edit::Edit::insert(at, line, Rule::GoPerfReader));
    };
    if lone {
        // `import "path"` alone.
        let s = specs[grp[0]];
        if let Some(decl) = s.parent() {
            for p in add {
                add_after(g, decl, format!("import {p:?}\n"));
            }
        }
        match &fates[grp[0]] {
            Fate::Path(p) => g.replace(
                s.start_byte(),
                s.end_byte(),
                format!("{p:?}"),
                Rule::GoPerfReader,
            ),
            Fate::Drop => {
                if let Some(decl) = s.parent() {
                    g.delete_lines(decl, Rule::GoPerfReader);
                }
            }
            Fate::Keep => {}
        }
        return;
    }
    if !one_per_line {
        for p in add {
            let s = specs[grp[0]];
            let indent = &src[line_start(src, s.start_byte())..s.start_byte()];
            let line = format!("{indent}{p:?}\n");
            add_after(g, s, line);
        }
        for &i in grp {
            let s = specs[i];
            match &fates[i] {
                Fate::Path(p) => g.replace(
                    s.start_byte(),
                    s.end_byte(),
                    format!("{p:?}"),
                    Rule::GoPerfReader,
                ),
                Fate::Drop => g.delete_lines(s, Rule::GoPerfReader),
                Fate::Keep => {}
            }
        }
        return;
    }
    // Whole lines, rewritten and sorted by path as gofmt sorts them.
    let first = line_start(src, specs[grp[0]].start_byte());
    let last = line_end_incl(src, specs[*grp.last().unwrap()].end_byte());
    let mut lines: Vec<(String, String)> = Vec::new();
    for &i in grp {
        let s = specs[i];
        let ls = line_start(src, s.start_byte());
        let le = line_end_incl(src, s.end_byte());
        let line = &src[ls..le];
        let (path, text) = match &fates[i] {
            Fate::Drop => continue,
            Fate::Keep => (path_of(g, s), line.to_string()),
            Fate::Path(p) => (
                p.clone(),
                format!(
                    "{}{p:?}{}",
                    &src[ls..s.start_byte()],
                    &src[s.end_byte()..le]
                ),
            ),
        };
        lines.push((path, text));
    }
    for p in add {
        let s = specs[grp[0]];
        let indent = &src[line_start(src, s.start_byte())..s.start_byte()];
        lines.push((p.to_string(), format!("{indent}{p:?}\n")));
    }
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    let mut text: String = lines.into_iter().map(|(_, t)| t).collect();
    if !text.is_empty() && !src[first..last].ends_with('\n') {
        text.pop();
    }
    g.removed.push((first, last));
    g.edits.push(crate::edit::Edit::replace(
        first,
        last,
        text,
        Rule::GoPerfReader,
    ));
}

/// An import used before the edits and not after: every use lies in text they remove.
fn unused_after_edits(g: &GoFile, spec: Node) -> bool {
    let Some(name) = name_of(g, spec) else {
        return false;
    };
    let u = uses(g, &name);
    !u.is_empty()
        && u.iter()
            .all(|&(s, e)| g.removed.iter().any(|&(rs, re)| rs <= s && e <= re))
}
