//! Linking: files joined into programs (a union-find over the files), and the edits of every
//! program that can move whole applied and checked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::check::{Applied, apply_checked};
use super::compat::link_compat;
use super::context::{Analysis, Consumer, MapDef, MapKind, refuses};
use super::cpu_field::link_cpu_fields;
use super::gate::{is_cpp, is_python_source};
use super::lost_counter::link_lost_counters;
use super::macro_maps::link_macro_maps;
use super::options::{Options, Strategy, has_size_marker, size_expr, size_marker};
use super::user::FIRST_MAP;
use crate::edit::Edit;
use crate::report::{Diagnostic, Severity};
use crate::rules::Rule;
use crate::source::SourceFile;

/// The result of a run: every file's new text (where it changed) and every diagnostic.
#[derive(Debug, Default)]
pub struct Outcome {
    pub changes: Vec<Change>,
    pub diags: Vec<Diagnostic>,
    pub stats: Stats,
}

#[derive(Debug, Clone)]
pub struct Change {
    pub file: usize,
    /// Changes with the same program number belong to one program: written all or none.
    pub program: usize,
    pub new_text: String,
    pub edits: Vec<Edit>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub files_scanned: usize,
    pub files_changed: usize,
    pub programs_migrated: usize,
    pub programs_manual: usize,
    /// Programs left alone because a rule they need is not selected (`--select`/`--ignore`).
    pub programs_deselected: usize,
}

pub(super) struct Dsu(Vec<usize>);

impl Dsu {
    pub(super) fn find(&mut self, x: usize) -> usize {
        let mut r = x;
        while self.0[r] != r {
            r = self.0[r];
        }
        let mut y = x;
        while self.0[y] != r {
            let n = self.0[y];
            self.0[y] = r;
            y = n;
        }
        r
    }
    pub(super) fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb)] = ra.min(rb);
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The files of a run by file name and by path, built once for linking.
struct FileIndex<'a> {
    by_name: HashMap<String, Vec<usize>>,
    by_path: HashMap<&'a Path, usize>,
}

impl<'a> FileIndex<'a> {
    fn new(files: &'a [SourceFile]) -> Self {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_path = HashMap::new();
        for (j, f) in files.iter().enumerate() {
            by_name.entry(file_name(&f.path)).or_default().push(j);
            by_path.insert(f.path.as_path(), j);
        }
        FileIndex { by_name, by_path }
    }
}

/// Which of `candidates` file `k` includes (`includes` as written in it): resolved against
/// its directory first; by file name only when no path matches (an include path of the
/// build), so that copies of one tool in several directories stay apart.
pub(super) fn included_among(
    files: &[SourceFile],
    includes: &[String],
    k: usize,
    candidates: &[usize],
) -> Vec<usize> {
    // By file name first (cheap, and every path match is one), then by path among those.
    let names: Vec<&std::ffi::OsStr> = includes
        .iter()
        .filter_map(|inc| Path::new(inc).file_name())
        .collect();
    let named: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&j| {
            files[j]
                .path
                .file_name()
                .is_some_and(|f| names.contains(&f))
        })
        .collect();
    let dir = dir_of(&files[k].path);
    let exact: Vec<usize> = named
        .iter()
        .copied()
        .filter(|&j| {
            includes
                .iter()
                .any(|inc| dir.join(inc).components().collect::<PathBuf>() == files[j].path)
        })
        .collect();
    if exact.is_empty() { named } else { exact }
}

/// The files user-space file `i` names as its BPF source: by path (`src_file`), or by file
/// name (`x.bpf.c` from a skeleton), those in its own directory (or its `bpf/`) first, since a
/// collection of tools may hold several programs of one name.
fn named_sources(files: &[SourceFile], index: &FileIndex, a: &Analysis, i: usize) -> Vec<usize> {
    let mut named: Vec<usize> = a
        .bpf_sources
        .iter()
        .flat_map(|s| index.by_name.get(s.as_str()).into_iter().flatten().copied())
        .chain(
            a.bcc_sources
                .iter()
                .filter_map(|p| index.by_path.get(p.as_path()).copied()),
        )
        .collect();
    named.sort_unstable();
    named.dedup();
    let dir = dir_of(&files[i].path);
    let near: Vec<usize> = named
        .iter()
        .copied()
        .filter(|&j| {
            let d = dir_of(&files[j].path);
            d == dir || (d.file_name() == Some("bpf".as_ref()) && dir_of(d) == dir)
        })
        .collect();
    if near.is_empty() { named } else { near }
}

/// The directory of `p` (borrowed: linking compares directories of every pair of files that
/// share a name, and a collection of tools repeats names).
pub(super) fn dir_of(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new(""))
}

/// Whether a file's analysis makes its group a program: edits planned, a perf map defined,
/// or a reader of one.
fn is_program_part(a: &Analysis) -> bool {
    !a.edits.is_empty() || !a.maps.is_empty() || !a.consumers.is_empty()
}

/// What linking makes of one program (a group of files, by index): refused (a diagnostic
/// that refuses), deselected (an edit of a rule `--select`/`--ignore` leaves out).
struct Verdict<'g> {
    members: &'g [usize],
    refused: bool,
    deselected: bool,
}

/// Links the files' analyses into programs and applies the edits of every program that can
/// move whole: output calls and readers join the files that define their maps, loaders the
/// sources they name, C files the refusing headers they include; then each program's verdict,
/// and its edits applied and checked.
pub fn link_and_apply(files: &[SourceFile], analyses: &mut [Analysis], opts: &Options) -> Outcome {
    let n = files.len();
    let index = FileIndex::new(files);
    let mut dsu = Dsu((0..n).collect());
    let mut link_diags: Vec<Diagnostic> = Vec::new();

    link_macro_maps(files, analyses, opts, &mut dsu, &mut link_diags);
    let defs = map_definitions(analyses);
    link_outputs(files, analyses, &defs, &mut dsu, &mut link_diags);
    let (consumed, counted, firsts) =
        link_consumers(files, &index, analyses, &defs, &mut dsu, &mut link_diags);
    // A loader's lookup of the object's first map now names it.
    for (i, map) in firsts {
        for e in &mut analyses[i].edits {
            e.text = e
                .text
                .replace(&format!("\"{FIRST_MAP}\""), &format!("\"{map}\""));
        }
    }
    let compat = opts.strategy == Strategy::Compat;
    link_lost_counters(files, analyses, &counted, &mut dsu, compat, &mut link_diags);
    if compat {
        link_compat(
            files,
            analyses,
            &consumed,
            &counted,
            &mut dsu,
            &mut link_diags,
        );
    }
    link_bpf2go_types(files, analyses, &mut dsu);
    super::go::link_go_packages(files, analyses, &mut dsu, &mut link_diags);
    super::rust::link_rust_crates(files, analyses, &mut dsu, &mut link_diags);
    let named_by_refused = link_named_sources(files, &index, analyses, &mut dsu);
    link_cpu_fields(files, analyses, &mut dsu, &mut link_diags);
    let sizes = report_maps(
        files,
        analyses,
        &consumed,
        &named_by_refused,
        opts,
        &mut link_diags,
    );

    // Programs: connected groups of files. Files with nothing to say are left out.
    let mut diags_by_file = diags_by_file(files, analyses, link_diags);
    join_refusing_headers(files, analyses, &diags_by_file, &mut dsu);
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        if !analyses[i].edits.is_empty() || !diags_by_file[i].is_empty() {
            groups.entry(dsu.find(i)).or_default().push(i);
        }
    }
    demote_outside_programs(&groups, analyses, &mut diags_by_file);
    keep_named_heaps(files, &groups, analyses, &mut diags_by_file);

    // Each program's verdict, once, from its files' diagnostics and edits as linking left
    // them: refused (manual work somewhere), deselected (a rule not selected), has edits.
    let verdicts: Vec<Verdict> = groups
        .values()
        .map(|members| Verdict {
            members,
            refused: members.iter().any(|&i| refuses(&diags_by_file[i])),
            deselected: members
                .iter()
                .any(|&i| analyses[i].edits.iter().any(|e| !opts.rules.allows(e.rule))),
        })
        .collect();
    let mut applied = apply_programs(files, analyses, &verdicts, &sizes);
    outcome(files, analyses, &verdicts, &mut applied, &mut diags_by_file)
}

/// Map name → files defining a perf event array of that name.
fn map_definitions(analyses: &[Analysis]) -> HashMap<&str, Vec<usize>> {
    let mut defs: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, a) in analyses.iter().enumerate() {
        for m in &a.maps {
            defs.entry(m.name.as_str()).or_default().push(i);
        }
    }
    defs
}

/// BPF output calls: the map is defined in this file or in a file it includes.
fn link_outputs(
    files: &[SourceFile],
    analyses: &[Analysis],
    defs: &HashMap<&str, Vec<usize>>,
    dsu: &mut Dsu,
    link_diags: &mut Vec<Diagnostic>,
) {
    for (i, a) in analyses.iter().enumerate() {
        for o in &a.outputs {
            if a.maps.iter().any(|m| m.name == o.map) {
                continue;
            }
            let all = defs.get(o.map.as_str()).map_or(&[][..], |v| &v[..]);
            let mut cands: Vec<usize> = included_among(files, &a.includes, i, all);
            if cands.is_empty() {
                cands = defined_beside(files, analyses, i, all);
            }
            if let [j] = cands[..] {
                dsu.union(i, j);
            } else {
                // The refusal goes to every program that defines a map of that name: one of
                // them is this output's (a header of the same BPF source, which was not
                // read), and it must not migrate without the output.
                for &j in all {
                    dsu.union(i, j);
                }
                link_diags.push(
                    Diagnostic::at(&files[i], o.offset, Rule::UnlinkedProgram,
                        format!("the perf event array `{}` written here is not defined in this file or in a header it includes that bpf-migrate was given", o.map))
                        .help("pass the file that defines the map as well"),
                );
            }
        }
    }
}

/// For a header `i` that writes to a map it neither defines nor includes: the files among
/// `all` (those defining the map) that a file including `i` defines the map in or includes
/// as well (`events.bpf.c` includes `maps.h`, the map, then `helpers.h`, the output; a
/// unity build's `tracer.c` defines the maps and includes `events.c`).
fn defined_beside(
    files: &[SourceFile],
    analyses: &[Analysis],
    i: usize,
    all: &[usize],
) -> Vec<usize> {
    let mut found = std::collections::BTreeSet::new();
    for (k, b) in analyses.iter().enumerate() {
        if k == i || included_among(files, &b.includes, k, &[i]).is_empty() {
            continue;
        }
        if all.contains(&k) {
            found.insert(k);
        }
        found.extend(included_among(files, &b.includes, k, all));
    }
    found.into_iter().collect()
}

/// The page counts each perf map's readers asked for, by the file defining the map and its
/// name.
type Consumed = HashMap<(usize, String), Vec<Option<u64>>>;

/// Maps, each by the index of the file defining it and its name.
type FileMaps = Vec<(usize, String)>;

/// Consumers: the BPF source named by the skeleton or object, else the one file in the
/// loader's directory that defines a perf map of that name. Also returns the maps (by the
/// file defining them) whose reader keeps its lost callback, fed from a counter, and those a
/// reader finds as its object's first (`first_map`).
fn link_consumers(
    files: &[SourceFile],
    index: &FileIndex,
    analyses: &[Analysis],
    defs: &HashMap<&str, Vec<usize>>,
    dsu: &mut Dsu,
    link_diags: &mut Vec<Diagnostic>,
) -> (Consumed, FileMaps, FileMaps) {
    let mut consumed: Consumed = HashMap::new();
    let mut counted = Vec::new();
    let mut firsts = Vec::new();
    for (i, a) in analyses.iter().enumerate() {
        for cons in &a.consumers {
            // A BCC tool whose C is in its own strings.
            if a.maps.iter().any(|m| m.name == cons.map) {
                if cons.lost_counted {
                    counted.push((i, cons.map.clone()));
                }
                consumed
                    .entry((i, cons.map.clone()))
                    .or_default()
                    .push(cons.pages);
                continue;
            }
            let resolved;
            let cons = if cons.map == FIRST_MAP {
                match first_map(files, index, analyses, i) {
                    Ok(map) => {
                        firsts.push((i, map.clone()));
                        resolved = Consumer {
                            map,
                            ..cons.clone()
                        };
                        &resolved
                    }
                    Err(msg) => {
                        link_diags.push(
                            Diagnostic::at(&files[i], cons.offset, Rule::UnresolvedMap, msg)
                                .help("find the map by name (`bpf_object__find_map_by_name(obj, \"NAME\")`), then run bpf-migrate again"),
                        );
                        continue;
                    }
                }
            } else if cons.bpf2go {
                resolved = Consumer {
                    map: bpf2go_map(defs, &cons.map),
                    ..cons.clone()
                };
                &resolved
            } else {
                cons
            };
            match consumer_target(files, index, analyses, defs, i, cons) {
                Ok(j) => {
                    dsu.union(i, j);
                    if cons.lost_counted {
                        counted.push((j, cons.map.clone()));
                    }
                    consumed
                        .entry((j, cons.map.clone()))
                        .or_default()
                        .push(cons.pages);
                }
                Err(msg) => link_diags.push(
                    Diagnostic::at(&files[i], cons.offset, Rule::UnlinkedProgram, msg)
                        .help("pass the BPF source (the .bpf.c file) together with its loader"),
                ),
            }
        }
    }
    (consumed, counted, firsts)
}

/// The map a loader's `bpf_object__next_map(obj, NULL)` finds (`user::maps::FIRST_MAP`): the
/// only map of the one BPF source it opens (named, else the one beside it, else the one given,
/// that defines a perf event array). With more, which is first is the compiler's choice.
fn first_map(
    files: &[SourceFile],
    index: &FileIndex,
    analyses: &[Analysis],
    i: usize,
) -> Result<String, String> {
    let named = named_sources(files, index, &analyses[i], i);
    let cands = if named.is_empty() {
        let with_maps: Vec<usize> = (0..files.len())
            .filter(|&j| !analyses[j].maps.is_empty())
            .collect();
        let near = in_dir_of(files, i, &with_maps);
        if near.is_empty() { with_maps } else { near }
    } else {
        named
    };
    let [j] = cands[..] else {
        return Err(format!(
            "this perf buffer reads the first map of its BPF object (`bpf_object__next_map(obj, NULL)`), and {} BPF sources given could be that object",
            cands.len()
        ));
    };
    let headers = included_among(
        files,
        &analyses[j].includes,
        j,
        &(0..files.len()).collect::<Vec<_>>(),
    );
    let defined = std::iter::once(j)
        .chain(headers)
        .map(|k| map_definitions_in(&files[k].text))
        .try_fold(0, |n, d| d.map(|d| n + d));
    match (&analyses[j].maps[..], defined) {
        ([m], Some(1)) => Ok(m.name.clone()),
        _ => Err(format!(
            "this perf buffer reads the first map of its BPF object (`bpf_object__next_map(obj, NULL)`), and {} defines {}: which comes first in the object is the compiler's choice",
            files[j].display,
            defined.map_or("maps through a macro".to_string(), |n| format!("{n} maps"))
        )),
    }
}

/// How many maps `text` defines (`SEC(".maps")` or a legacy `SEC("maps")`, outside comments);
/// None when a macro's definition names the section (its uses cannot be counted here).
fn map_definitions_in(text: &str) -> Option<usize> {
    let mut logical = String::new();
    for line in text.lines() {
        logical.push_str(line);
        if line.ends_with('\\') {
            continue;
        }
        let l = logical.trim_start();
        if l.starts_with('#') && (l.contains("\"maps\"") || l.contains("\".maps\"")) {
            return None;
        }
        logical.clear();
    }
    Some(
        crate::lang::c::lex(text, 0..text.len())
            .iter()
            .filter(|&&(t, s, e)| {
                t == crate::lang::c::Tok::Str && matches!(&text[s..e], "\".maps\"" | "\"maps\"")
            })
            .count(),
    )
}

/// A ring buffer's definition has no value type, of which bpf2go made the Go type of the
/// events (`bpfEvent` of `__type(value, struct event)`) that the reader decodes into: for each
/// map a bpf2go reader reads that named one, the BPF source keeps the struct in its BTF (`const
/// struct event *bpf_migrate_keep_event;` after the map) and the
/// reader's `//go:generate` directive that builds it asks bpf2go for it (`-type event`), so
/// that `go generate` makes the same type again.
fn link_bpf2go_types(files: &[SourceFile], analyses: &mut [Analysis], dsu: &mut Dsu) {
    let mut wanted: Vec<(usize, usize, usize, String)> = Vec::new();
    for (i, a) in analyses.iter().enumerate() {
        for cons in a.consumers.iter().filter(|c| c.bpf2go) {
            let root = dsu.find(i);
            let found = (0..analyses.len())
                .filter(|&j| dsu.find(j) == root)
                .find_map(|j| {
                    analyses[j]
                        .maps
                        .iter()
                        .find(|m| {
                            m.name == cons.map
                                || crate::lang::go::bpf2go_identifier(&m.name) == cons.map
                        })
                        .and_then(|m| Some((j, m.offset, m.value_type.clone()?)))
                });
            if let Some((j, offset, ty)) = found
                && !wanted.iter().any(|w| w.1 == j && w.3 == ty)
            {
                wanted.push((i, j, offset, ty));
            }
        }
    }
    for (i, j, offset, ty) in wanted {
        let text = &files[j].text;
        let keep = format!("bpf_migrate_keep_{ty}");
        if super::lost_counter::mentions(text, &keep) {
            continue;
        }
        let at = super::lost_counter::statement_end(text, offset);
        super::edits::insert_after(
            &mut analyses[j].edits,
            at,
            format!(
                "\n/* The type of the events, for bpf2go (-type {ty}): a ring buffer's definition has\n * none (added by bpf-migrate). */\nconst struct {ty} *{keep};\n"
            ),
            Rule::PerfMapDef,
        );
        analyses[j].errors_ahead = None;
        // The reader's directive that builds this source.
        let go = &files[i].text;
        let source = files[j]
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut at = 0;
        for line in go.split_inclusive('\n') {
            let start = at;
            at += line.len();
            let builds = crate::lang::go::bpf2go_source(line)
                .is_some_and(|c| c.rsplit('/').next() == Some(source.as_str()));
            let Some(cmd) = line.find("bpf2go").filter(|_| builds) else {
                continue;
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.windows(2).any(|w| w == ["-type", ty.as_str()])
                || words.contains(&format!("-type={ty}").as_str())
            {
                break;
            }
            let end = start + cmd + "bpf2go".len();
            super::edits::insert_after(
                &mut analyses[i].edits,
                end,
                format!(" -type {ty}"),
                Rule::GoPerfReader,
            );
            break;
        }
    }
}

/// The C name of the map bpf2go calls `field`: the one defined map whose bpf2go identifier
/// (or own name) it is; else `field` itself, which then finds no definition.
fn bpf2go_map(defs: &HashMap<&str, Vec<usize>>, field: &str) -> String {
    let mut names: Vec<&str> = defs
        .keys()
        .copied()
        .filter(|d| *d == field || crate::lang::go::bpf2go_identifier(d) == field)
        .collect();
    names.sort_unstable();
    match names[..] {
        [one] => one.to_string(),
        _ => field.to_string(),
    }
}

/// The file defining the map that consumer `cons` of file `i` reads, or why none can be told.
fn consumer_target(
    files: &[SourceFile],
    index: &FileIndex,
    analyses: &[Analysis],
    defs: &HashMap<&str, Vec<usize>>,
    i: usize,
    cons: &Consumer,
) -> Result<usize, String> {
    let a = &analyses[i];
    let mut all: Vec<usize> = defs.get(cons.map.as_str()).cloned().unwrap_or_default();
    // A BCC tool reads BCC tables only (`BPF_PERF_OUTPUT`, its own C or a file it loads): a
    // libbpf map of the same name elsewhere is another program's.
    if is_python_source(&files[i].path, &files[i].text) {
        all.retain(|&j| {
            analyses[j]
                .maps
                .iter()
                .any(|m| m.name == cons.map && m.kind == MapKind::Bcc)
        });
    }
    let named = named_sources(files, index, a, i);
    if !named.is_empty() {
        let hit: Vec<usize> = named.iter().copied().filter(|j| all.contains(j)).collect();
        // The map may live in a header the BPF source includes.
        let hit = if hit.is_empty() {
            named
                .iter()
                .flat_map(|&k| included_among(files, &analyses[k].includes, k, &all))
                .collect::<std::collections::BTreeSet<usize>>()
                .into_iter()
                .collect()
        } else {
            hit
        };
        match hit[..] {
            [j] => Ok(j),
            [] => Err(format!(
                "this perf buffer reads map `{}`, but {} defines no perf event array of that name",
                cons.map,
                named
                    .iter()
                    .map(|&k| files[k].display.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Err(format!(
                "several files define a perf event array `{}`",
                cons.map
            )),
        }
    } else {
        let near = in_dir_of(files, i, &all);
        match (&near[..], &all[..]) {
            ([j], _) => Ok(*j),
            ([], [j]) => Ok(*j),
            ([], []) => Err(format!(
                "this perf buffer reads map `{}`, but no BPF source given to bpf-migrate defines it{}",
                cons.map,
                if a.bpf_sources.is_empty() {
                    String::new()
                } else {
                    format!(" (looked for {})", a.bpf_sources.join(", "))
                }
            )),
            _ => Err(format!(
                "several BPF sources define a perf event array `{}`; bpf-migrate cannot tell which this loader opens",
                cons.map
            )),
        }
    }
}

/// Those of the files `among` that lie in file `i`'s directory.
fn in_dir_of(files: &[SourceFile], i: usize, among: &[usize]) -> Vec<usize> {
    let dir = dir_of(&files[i].path);
    among
        .iter()
        .copied()
        .filter(|&j| dir_of(&files[j].path) == dir)
        .collect()
}

/// A loader belongs with the BPF sources it names even when it was refused: its program
/// then stays whole, and its maps are not reported as having no reader. The sources named by
/// a refused loader come back.
fn link_named_sources(
    files: &[SourceFile],
    index: &FileIndex,
    analyses: &[Analysis],
    dsu: &mut Dsu,
) -> HashSet<usize> {
    let mut named_by_refused = HashSet::new();
    for (i, a) in analyses.iter().enumerate() {
        let refused = a.diags.iter().any(|d| d.severity == Severity::Manual);
        for j in named_sources(files, index, a, i) {
            dsu.union(i, j);
            if refused {
                named_by_refused.insert(j);
            }
        }
    }
    named_by_refused
}

/// A map with no consumer in sight cannot be migrated alone: its reader would break. Every
/// other map gets a note of its ring buffer's size. The sizes come back, as the text that
/// fills each map's size marker (`options::size_marker`): BCC's page count, a libbpf map's
/// `max_entries`.
fn report_maps(
    files: &[SourceFile],
    analyses: &[Analysis],
    consumed: &Consumed,
    named_by_refused: &HashSet<usize>,
    opts: &Options,
    link_diags: &mut Vec<Diagnostic>,
) -> HashMap<(usize, String), String> {
    let mut sizes: HashMap<(usize, String), String> = HashMap::new();
    for (j, a) in analyses.iter().enumerate() {
        for m in &a.maps {
            // A libbpf map whose own definition the edits size (not a macro's shared text).
            let marked = m.kind != MapKind::Bcc
                && a.edits
                    .iter()
                    .any(|e| has_size_marker(e) && e.text.contains(&size_marker(&m.name)));
            if marked {
                sizes.insert((j, m.name.clone()), size_expr(opts.ring_size));
            }
            match consumed.get(&(j, m.name.clone())) {
                None if named_by_refused.contains(&j) => {}
                // A BCC tool whose own reader was refused: that refusal says it all.
                None if m.kind == MapKind::Bcc
                    && is_python_source(&files[j].path, &files[j].text)
                    && a.diags.iter().any(|d| d.severity == Severity::Manual) => {}
                None if m.kind == MapKind::Bcc => {
                    link_diags.push(
                        Diagnostic::at(&files[j], m.offset, Rule::UnlinkedProgram,
                            format!("no open_perf_buffer() reading table `{}` was found", m.name))
                            .help("pass the Python tool that reads it (bpf-migrate follows BPF(src_file=...)), or migrate it by hand"),
                    );
                }
                None => {
                    // The consumer may read a map defined in a header through a BPF source
                    // that includes it; that case was linked above under the header's index.
                    link_diags.push(
                        Diagnostic::at(&files[j], m.offset, Rule::UnlinkedProgram,
                            format!("no user-space reader of perf event array `{}` was found among the files given", m.name))
                            .help("pass the reader too: a libbpf C loader (X.c beside X.bpf.c is found by itself), a BCC tool, a libbpf-rs crate, or a cilium/ebpf or libbpfgo Go reader; readers in other languages (C++, Lua) are not migrated yet, so migrate the reader and this map together by hand"),
                    );
                }
                Some(pages) => {
                    let (rule, msg) = if m.kind == MapKind::Bcc {
                        let (ring_pages, msg) = bcc_ring_pages(&m.name, pages, opts);
                        sizes.insert((j, m.name.clone()), ring_pages.to_string());
                        (Rule::BccPerfOutput, msg)
                    } else {
                        let bytes = ring_bytes(pages, opts).filter(|_| marked);
                        if let Some(b) = bytes {
                            sizes.insert((j, m.name.clone()), size_expr(b));
                        }
                        ring_note(m, pages, bytes.unwrap_or(opts.ring_size), bytes.is_some())
                    };
                    let mut d = Diagnostic::at(&files[j], m.offset, rule, msg);
                    if !opts.ring_size_given {
                        d = d.help(
                            "--ringbuf-size sets another size (a power of two, at least 4096)",
                        );
                    }
                    link_diags.push(d);
                }
            }
        }
    }
    sizes
}

/// A libbpf map's ring size when its readers asked for more per CPU than the default ring
/// holds: as much as one CPU's perf buffer had (the largest reader's), rounded up to a power
/// of two, so that the ring is never smaller than one CPU's buffer was (a tool sized for
/// bursts keeps room for one). None when the default (or `--ringbuf-size`) stands.
fn ring_bytes(pages: &[Option<u64>], opts: &Options) -> Option<u64> {
    let per_cpu = pages.iter().flatten().max()? * 4096;
    (!opts.ring_size_given && per_cpu > opts.ring_size)
        .then(|| per_cpu.next_power_of_two().min(MAX_RING_BYTES))
}

/// The largest ring `ring_bytes` makes: 1 GiB (a per-CPU buffer that large is a typo).
const MAX_RING_BYTES: u64 = 1 << 30;

/// The note on a libbpf map's ring buffer: its size (`grown` to one CPU's perf buffer, by
/// `ring_bytes`), and the perf buffer's pages per CPU when a reader's page count is known.
fn ring_note(m: &MapDef, pages: &[Option<u64>], ring: u64, grown: bool) -> (Rule, String) {
    let rule = if m.kind == MapKind::Legacy {
        Rule::LegacyPerfMapDef
    } else {
        Rule::PerfMapDef
    };
    let kib = ring / 1024;
    let msg = match pages.iter().flatten().max() {
        Some(p) if grown => format!(
            "ring buffer `{}`: {kib} KiB shared by all CPUs, no less than the perf buffer had for one CPU ({p} pages, {} KiB)",
            m.name,
            p * 4
        ),
        Some(p) => format!(
            "ring buffer `{}`: {kib} KiB shared by all CPUs; the perf buffer had {p} page{} ({} KiB) per CPU",
            m.name,
            if *p == 1 { "" } else { "s" },
            p * 4
        ),
        None => {
            format!("ring buffer `{}`: {kib} KiB shared by all CPUs", m.name)
        }
    };
    (rule, msg)
}

/// Every file's diagnostics, taken from its analysis, with linking's own added.
fn diags_by_file(
    files: &[SourceFile],
    analyses: &mut [Analysis],
    link_diags: Vec<Diagnostic>,
) -> Vec<Vec<Diagnostic>> {
    let mut diags_by_file: Vec<Vec<Diagnostic>> = analyses
        .iter_mut()
        .map(|a| std::mem::take(&mut a.diags))
        .collect();
    for d in link_diags {
        let idx = files.iter().position(|f| f.display == d.file).unwrap();
        diags_by_file[idx].push(d);
    }
    diags_by_file
}

/// A C file joins the headers it includes that refuse: what they refuse (the map type
/// behind a macro the loader uses) may concern its program. Only those: a header with
/// notes would tie every program that includes it to the others' refusals.
fn join_refusing_headers(
    files: &[SourceFile],
    analyses: &[Analysis],
    diags_by_file: &[Vec<Diagnostic>],
    dsu: &mut Dsu,
) {
    let mut refusing: HashMap<&std::ffi::OsStr, Vec<usize>> = HashMap::new();
    for j in (0..files.len()).filter(|&j| refuses(&diags_by_file[j])) {
        if let Some(name) = files[j].path.file_name() {
            refusing.entry(name).or_default().push(j);
        }
    }
    for (i, a) in analyses.iter().enumerate() {
        // Refusing files named as included, then resolved as `included_among` does.
        let cands: Vec<usize> = a
            .includes
            .iter()
            .filter_map(|inc| refusing.get(Path::new(inc).file_name()?))
            .flatten()
            .copied()
            .collect();
        if !cands.is_empty() {
            for j in included_among(files, &a.includes, i, &cands) {
                dsu.union(i, j);
            }
        }
    }
}

/// In code that belongs to no program (no edits, no perf map, no reader), diagnostics that
/// refuse only in a program become warnings: nothing is migrated there either way, and a
/// switch over map types in a vendored libbpf must not fail every check.
fn demote_outside_programs(
    groups: &BTreeMap<usize, Vec<usize>>,
    analyses: &[Analysis],
    diags_by_file: &mut [Vec<Diagnostic>],
) {
    for members in groups.values() {
        let program = members.iter().any(|&i| is_program_part(&analyses[i]));
        let only_such = members
            .iter()
            .flat_map(|&i| &diags_by_file[i])
            .filter(|d| d.severity.refuses())
            .all(|d| d.program_only);
        if !program && only_such {
            for &i in members {
                for d in diags_by_file[i].iter_mut().filter(|d| d.program_only) {
                    d.demote(Severity::Warning);
                    d.message = "`BPF_MAP_TYPE_PERF_EVENT_ARRAY` is used here, in code that belongs to no perf buffer program bpf-migrate found".into();
                    d.help = Some("nothing is changed here; if this code creates or checks the map of a program you migrate, update it by hand (a ring buffer is BPF_MAP_TYPE_RINGBUF)".into());
                }
            }
        }
    }
}

/// A per-CPU array the reserve strategy made unused stays when another file of its program
/// names it: the loader may size it or read it.
fn keep_named_heaps(
    files: &[SourceFile],
    groups: &BTreeMap<usize, Vec<usize>>,
    analyses: &mut [Analysis],
    diags_by_file: &mut [Vec<Diagnostic>],
) {
    for members in groups.values() {
        for &i in members {
            let heaps = std::mem::take(&mut analyses[i].heap_maps);
            for (name, start, at) in heaps {
                if let Some(&j) = members
                    .iter()
                    .find(|&&j| j != i && mentions_word(&files[j].text, &name))
                {
                    analyses[i]
                        .edits
                        .retain(|e| !(e.rule == Rule::ReserveHeap && e.start == start));
                    analyses[i].errors_ahead = None;
                    diags_by_file[i].push(Diagnostic::at(
                        &files[i],
                        at,
                        Rule::ReserveHeap,
                        format!(
                            "the per-CPU array `{name}` no longer holds events, but stays: {} names it",
                            files[j].display
                        ),
                    ).help("delete it, and its use there, if it served only as the events' buffer"));
                }
            }
        }
    }
}

/// Apply every candidate program's edits and re-parse (in parallel: this is most of a
/// run's work): an edit must not add a parse error. By file; None where nothing was applied
/// (the edits of a refused or deselected program stay in its analyses).
fn apply_programs(
    files: &[SourceFile],
    analyses: &mut [Analysis],
    verdicts: &[Verdict],
    sizes: &HashMap<(usize, String), String>,
) -> Vec<Option<Applied>> {
    let n = files.len();
    let candidate: Vec<bool> = {
        let mut v = vec![false; n];
        for g in verdicts.iter().filter(|g| !g.refused && !g.deselected) {
            for &i in g.members {
                v[i] = !analyses[i].edits.is_empty();
            }
        }
        v
    };
    use rayon::prelude::*;
    let jobs: Vec<(usize, Vec<Edit>)> = (0..n)
        .filter(|&i| candidate[i])
        .map(|i| (i, std::mem::take(&mut analyses[i].edits)))
        .collect();
    let done: Vec<(usize, Applied)> = jobs
        .into_par_iter()
        .map(|(i, edits)| (i, apply_checked(&files[i], edits, &analyses[i], sizes, i)))
        .collect();
    let mut v: Vec<Option<_>> = (0..n).map(|_| None).collect();
    for (i, r) in done {
        v[i] = Some(r);
    }
    v
}

/// The run's outcome from the programs' verdicts: the changes of the programs that migrate,
/// the diagnostics of each (only the refusals of a refused one), the counts; sorted by file.
fn outcome(
    files: &[SourceFile],
    analyses: &[Analysis],
    verdicts: &[Verdict],
    applied: &mut [Option<Applied>],
    diags_by_file: &mut [Vec<Diagnostic>],
) -> Outcome {
    let mut out = Outcome::default();
    out.stats.files_scanned = files.len();
    for &Verdict {
        members,
        refused,
        deselected,
    } in verdicts
    {
        if deselected && !refused {
            out.stats.programs_deselected += 1;
            continue;
        }
        if refused {
            // A refused group's edits are still in its analyses. A C++ file that uses the
            // perf buffer is refused before any map or reader is made of it, and is a program
            // needing manual work too.
            if members.iter().any(|&i| {
                is_program_part(&analyses[i])
                    || is_cpp(&files[i].path)
                        && diags_by_file[i]
                            .iter()
                            .any(|d| d.severity == Severity::Manual)
            }) {
                out.stats.programs_manual += 1;
            }
            for &i in members {
                out.diags
                    .extend(diags_by_file[i].drain(..).filter(|d| d.severity.refuses()));
            }
            continue;
        }
        let mut changes = Vec::new();
        let mut failed = None;
        for &i in members {
            match applied[i].take() {
                None => {}
                Some(Ok((new_text, edits))) => changes.push(Change {
                    file: i,
                    program: members[0],
                    new_text,
                    edits,
                }),
                Some(Err(d)) => {
                    failed = Some(*d);
                    break;
                }
            }
        }
        if let Some(d) = failed {
            out.diags.push(d);
            out.stats.programs_manual += 1;
            continue;
        }
        if !changes.is_empty() {
            out.stats.programs_migrated += 1;
        }
        for &i in members {
            out.diags.append(&mut diags_by_file[i]);
        }
        out.changes.extend(changes);
    }
    out.stats.files_changed = out.changes.len();
    out.changes
        .sort_by(|a, b| files[a.file].display.cmp(&files[b.file].display));
    out.diags.sort_by(|a, b| {
        (a.file.as_str(), a.line, a.column, a.rule).cmp(&(
            b.file.as_str(),
            b.line,
            b.column,
            b.rule,
        ))
    });
    out
}

/// `word` occurs in `text` as a whole identifier.
fn mentions_word(text: &str, word: &str) -> bool {
    let ident = |b: u8| b == b'_' || b.is_ascii_alphanumeric();
    text.match_indices(word).any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| text.as_bytes()[j]);
        let after = text.as_bytes().get(i + word.len()).copied();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// The BCC C page count of a ring buffer: room for what the tool asked per CPU (its
/// `page_cnt`, 8 by default) on `ASSUMED_CPUS` CPUs, rounded up to a power of two.
const ASSUMED_CPUS: u64 = 8;

fn bcc_ring_pages(name: &str, asked: &[Option<u64>], opts: &Options) -> (u64, String) {
    if opts.ring_size_given {
        let p = opts.ring_size / 4096;
        return (
            p,
            format!(
                "BPF_RINGBUF_OUTPUT({name}, {p}): {} KiB shared by all CPUs (--ringbuf-size)",
                p * 4
            ),
        );
    }
    let per_cpu = asked.iter().flatten().max().copied().unwrap_or(8).max(1);
    let pages = (per_cpu * ASSUMED_CPUS).next_power_of_two();
    (
        pages,
        format!(
            "BPF_RINGBUF_OUTPUT({name}, {pages}): {} KiB shared by all CPUs, the {per_cpu} page{} per CPU the perf buffer had, for {ASSUMED_CPUS} CPUs",
            pages * 4,
            if per_cpu == 1 { "" } else { "s" }
        ),
    )
}
