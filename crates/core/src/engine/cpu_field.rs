//! A libbpf sample callback that reads its `cpu` parameter keeps it: the event struct gets a
//! field `cpu` at its end, set with `bpf_get_smp_processor_id()` just before each output to
//! the callback's map, and the migrated callback starts with
//! `int cpu = ((const struct event *)data)->cpu;`, so its body reads `cpu` as before.
//!
//! The two halves are found by the analyses (`bpf::cpu_site` for every output call,
//! `user::callbacks` for a callback that reads the CPU) and put together here, at linking,
//! once the outputs of the callback's map are known. Every output of the map must send one
//! `struct NAME` whole, defined once in the BPF source or a header beside it (the program's
//! own, not a kernel type), which the loader sees too (it includes that header, or has its own
//! copy, which gets the field as well); the callback must read the data as that struct or
//! as plain bytes. Anything else refuses the program with `callback-uses-cpu` and the reason.

use std::collections::BTreeSet;

use super::check::parse_errors;
use super::context::{Analysis, CpuSite, CpuUse, OutputSite};
use super::link::{Dsu, dir_of, included_among};
use super::rust::callbacks::CPU_BYTES;
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::report::Diagnostic;
use crate::rules::Rule;
use crate::source::{SourceFile, indent_at, line_start};

/// The name of the field that carries the CPU.
pub const FIELD: &str = "cpu";

/// What to do about a callback whose CPU cannot be carried.
pub(super) const REFUSAL_HELP: &str = "change the code as this says and run bpf-migrate again; or, by hand, add a cpu field to the event, set it with bpf_get_smp_processor_id() before each output, and read it in the callback instead of the parameter";

/// Plans the edits of every callback that reads the CPU, or refuses its program; joins the
/// header that gets the field to the program.
pub(super) fn link_cpu_fields(
    files: &[SourceFile],
    analyses: &mut [Analysis],
    dsu: &mut Dsu,
    link_diags: &mut Vec<Diagnostic>,
) {
    let uses: Vec<(usize, CpuUse)> = analyses
        .iter()
        .enumerate()
        .flat_map(|(i, a)| a.cpu_uses.iter().map(move |u| (i, u.clone())))
        .collect();
    if uses.is_empty() {
        return;
    }
    let roots: Vec<usize> = (0..files.len()).map(|k| dsu.find(k)).collect();
    for (i, u) in &uses {
        match plan(files, analyses, &roots, *i, u) {
            Ok(p) => {
                for (f, e) in p.edits {
                    if analyses[f].edits.is_empty() && analyses[f].errors_before == 0 {
                        // A file the analysis passed over (a header): its own count.
                        analyses[f].errors_before = parse_errors(&files[f].path, &files[f].text);
                    }
                    analyses[f].errors_ahead = None;
                    analyses[f].edits.push(e);
                    dsu.union(*i, f);
                }
                if let Some((f, bytes)) = p.fill {
                    for e in &mut analyses[f].edits {
                        e.text = e.text.replace(CPU_BYTES, &bytes);
                    }
                    analyses[f].errors_ahead = None;
                }
                link_diags.push(
                    Diagnostic::at(&files[*i], u.offset, Rule::CpuField, p.note)
                        .help("the record is 4 bytes longer (or more, with padding); other readers of it must know the new layout"),
                );
            }
            // An output refused for another reason says enough.
            Err(None) => {}
            Err(Some(r)) => {
                let more = match u.uses {
                    1 => String::new(),
                    n => format!(" ({n} uses)"),
                };
                let msg = format!(
                    "the sample callback `{}` ({}:{}) uses `cpu`{more}, the CPU that produced the event, which a ring buffer does not report; bpf-migrate cannot add it to the events: {}",
                    u.callback,
                    files[*i].display,
                    files[*i].line_col(u.offset).0,
                    r.why
                );
                link_diags.push(
                    Diagnostic::at(&files[r.file], r.offset, Rule::CallbackUsesCpu, msg)
                        .help(REFUSAL_HELP),
                );
            }
        }
    }
}

/// Why a callback's CPU cannot be carried, and where to say so.
struct Refusal {
    file: usize,
    offset: usize,
    why: String,
}

/// A refusal; the error of a plan (None: an output is refused for another reason).
fn refusal(file: usize, offset: usize, why: impl Into<String>) -> Option<Refusal> {
    Some(Refusal {
        file,
        offset,
        why: why.into(),
    })
}

/// The edits, by file, and the note that says what they do.
struct Plan {
    edits: Vec<(usize, Edit)>,
    note: String,
    /// A libbpf-rs callback: its file, and the bytes of the record that hold the CPU
    /// (`data.get(24..28).map_or(-1, |b| i32::from_ne_bytes(...))`), for the placeholder in
    /// its statement.
    fill: Option<(usize, String)>,
}

fn plan(
    files: &[SourceFile],
    analyses: &[Analysis],
    roots: &[usize],
    i: usize,
    u: &CpuUse,
) -> Result<Plan, Option<Refusal>> {
    let Some(data) = &u.data else {
        return Err(refusal(i, u.offset, "its data parameter has no name"));
    };
    let outputs: Vec<(usize, &OutputSite)> = analyses
        .iter()
        .enumerate()
        .filter(|&(k, _)| roots[k] == roots[i])
        .flat_map(|(k, a)| {
            a.outputs
                .iter()
                .filter(|o| u.maps.contains(&o.map))
                .map(move |o| (k, o))
        })
        .collect();
    if outputs.is_empty() {
        return Err(refusal(
            i,
            u.offset,
            format!(
                "no output to `{}` was found to set the CPU at",
                u.maps.join("`, `")
            ),
        ));
    }
    let mut sites: Vec<(usize, &CpuSite)> = Vec::new();
    for &(k, o) in &outputs {
        match &o.cpu {
            Some(Ok(s)) => sites.push((k, s)),
            Some(Err((at, why))) => return Err(refusal(k, *at, why.clone())),
            None => return Err(None),
        }
    }
    let (k0, first) = sites[0];
    let tag = first.tag.as_str();
    if let Some(&(k, other)) = sites.iter().find(|(_, s)| s.tag != tag) {
        return Err(refusal(
            k,
            other.at,
            format!(
                "the events of `{}` are a `struct {}` here and a `struct {tag}` at {}:{}; one struct must carry the CPU",
                u.maps.join("`, `"),
                other.tag,
                files[k0].display,
                files[k0].line_col(first.at).0
            ),
        ));
    }
    let (d, def) = definition(files, analyses, &sites, tag)?;
    if let Some(py) = &u.python {
        // BCC lays the Python view of the event out from the C struct: the field is there.
        let field = def
            .field_edit(&files[d].text)
            .map_err(|w| refusal(d, def.close, w))?;
        let mut edits = vec![(d, field)];
        edits.extend(cpu_assignments(&sites));
        edits.push((i, Edit::insert(u.at, py.clone(), Rule::CpuField)));
        return Ok(Plan {
            edits,
            note: note(u, &files[d].display, tag, sites.len()),
            fill: None,
        });
    }
    if u.rust {
        // The Rust side reads the CPU's bytes where C lays the field out.
        let field = def
            .field_edit(&files[d].text)
            .map_err(|w| refusal(d, def.close, w))?;
        let at = def
            .cpu_offset
            .clone()
            .map_err(|w| refusal(d, def.close, w))?;
        let data = u.data.as_deref().unwrap_or("data");
        // Read before the callback's own checks of the record: a record too short for the
        // field (one the callback would turn away) gives -1, never a panic.
        let bytes = format!(
            "{data}.get({at}..{}).map_or(-1, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))",
            at + 4
        );
        let mut edits = vec![(d, field)];
        edits.extend(cpu_assignments(&sites));
        return Ok(Plan {
            edits,
            note: format!(
                "{}, and reads it from bytes {at}..{} of the record",
                note(u, &files[d].display, tag, sites.len()),
                at + 4
            ),
            fill: Some((i, bytes)),
        });
    }
    for r in &u.read_as {
        match r {
            Err((at, why)) => return Err(refusal(i, *at, why.clone())),
            Ok(t) if t != tag => {
                return Err(refusal(
                    i,
                    u.offset,
                    format!(
                        "it reads the data as a `struct {t}`, and the BPF side sends a `struct {tag}`"
                    ),
                ));
            }
            Ok(_) => {}
        }
    }
    let mut edits = Vec::new();
    let field = def
        .field_edit(&files[d].text)
        .map_err(|w| refusal(d, def.close, w))?;
    edits.push((d, field));
    // The loader's view of the struct: its own copy, else the header.
    match &find_struct(&files[i], tag)[..] {
        [own] => {
            let field = own
                .field_edit(&files[i].text)
                .map_err(|w| refusal(i, own.close, w))?;
            edits.push((i, field));
        }
        [_, second, ..] => {
            return Err(refusal(
                i,
                second.close,
                format!("the loader defines `struct {tag}` more than once"),
            ));
        }
        [] if d != i && included_among(files, &analyses[i].includes, i, &[d]) == [d] => {}
        [] => {
            return Err(refusal(
                i,
                u.offset,
                format!(
                    "the loader sees no definition of `struct {tag}` (it is in {}); put it in a header both files include",
                    files[d].display
                ),
            ));
        }
    }
    edits.extend(cpu_assignments(&sites));
    edits.push((
        i,
        Edit::insert(
            u.at,
            format!(
                "{}{} = ((const struct {tag} *){data})->{FIELD};",
                u.lead, u.param
            ),
            Rule::CpuField,
        ),
    ));
    Ok(Plan {
        edits,
        note: note(u, &files[d].display, tag, sites.len()),
        fill: None,
    })
}

/// `e.cpu = bpf_get_smp_processor_id();` before each output, by file.
fn cpu_assignments(sites: &[(usize, &CpuSite)]) -> Vec<(usize, Edit)> {
    sites
        .iter()
        .map(|&(k, s)| {
            let op = if s.arrow { "->" } else { "." };
            (
                k,
                Edit::insert(
                    s.at,
                    format!(
                        "{}{op}{FIELD} = bpf_get_smp_processor_id();{}",
                        s.var, s.sep
                    ),
                    Rule::CpuField,
                ),
            )
        })
        .collect()
}

/// What the edits of a callback do, for its note: `n` outputs of `struct tag` defined in
/// `def_file`.
fn note(u: &CpuUse, def_file: &str, tag: &str, n: usize) -> String {
    format!(
        "the sample callback `{}` reads the CPU from a field `{FIELD}` added at the end of `struct {tag}` ({def_file}), set with bpf_get_smp_processor_id() before {} to `{}`",
        u.callback,
        if n == 1 {
            "the output".to_string()
        } else {
            format!("each of the {n} outputs")
        },
        u.maps.join("`, `")
    )
}

/// The one file that defines `struct tag` among the BPF sources of `sites` and the headers
/// beside them that they include (not vmlinux.h: a kernel type is not the program's to
/// change).
fn definition(
    files: &[SourceFile],
    analyses: &[Analysis],
    sites: &[(usize, &CpuSite)],
    tag: &str,
) -> Result<(usize, StructDef), Option<Refusal>> {
    let all: Vec<usize> = (0..files.len()).collect();
    let mut cands = BTreeSet::new();
    for &(k, _) in sites {
        cands.insert(k);
        for h in included_among(files, &analyses[k].includes, k, &all) {
            let name = files[h].path.file_name().and_then(|n| n.to_str());
            if dir_of(&files[h].path) == dir_of(&files[k].path)
                && name.is_some_and(|n| n.ends_with(".h") && n != "vmlinux.h")
            {
                cands.insert(h);
            }
        }
    }
    let defs: Vec<(usize, StructDef)> = cands
        .into_iter()
        .flat_map(|f| find_struct(&files[f], tag).into_iter().map(move |d| (f, d)))
        .collect();
    let (k, s) = sites[0];
    match defs.len() {
        0 => Err(refusal(
            k,
            s.at,
            format!(
                "`struct {tag}` is not defined in {} or in a header beside it that bpf-migrate was given, so it is not the program's own (a kernel type from vmlinux.h?)",
                files[k].display
            ),
        )),
        1 => Ok(defs.into_iter().next().unwrap()),
        _ => Err(refusal(
            k,
            s.at,
            format!(
                "`struct {tag}` is defined more than once ({}); bpf-migrate cannot tell which one the events use",
                defs.iter()
                    .map(|(f, _)| files[*f].display.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        )),
    }
}

/// A `struct tag { ... }` definition: its closing brace, whether a member is already named
/// like the field, and the indentation of its last member.
struct StructDef {
    close: usize,
    taken: bool,
    indent: Option<String>,
    /// Where the field lands in the record, as C lays it out (for a Rust reader); or why it
    /// cannot be told.
    cpu_offset: Result<usize, String>,
}

impl StructDef {
    /// The field, as the struct's last member; why not when a member has its name already.
    fn field_edit(&self, text: &str) -> Result<Edit, String> {
        if self.taken {
            return Err(format!(
                "the struct already has a member `{FIELD}`; fill it on the BPF side and read it in the callback instead of the parameter, by hand"
            ));
        }
        // A file that declares its members with the kernel's fixed-width types can name
        // `__u32` wherever it compiles; another may not see it.
        let ty = if ["__u8", "__u16", "__u32", "__u64", "__s32", "__s64"]
            .iter()
            .any(|t| text.contains(t))
        {
            "__u32"
        } else {
            "unsigned int"
        };
        let ls = line_start(text, self.close);
        Ok(if text[ls..self.close].trim().is_empty() {
            let indent = self.indent.clone().unwrap_or_else(|| "\t".into());
            Edit::insert(ls, format!("{indent}{ty} {FIELD};\n"), Rule::CpuField)
        } else {
            let pad = if text[..self.close].ends_with(' ') {
                ""
            } else {
                " "
            };
            Edit::insert(self.close, format!("{pad}{ty} {FIELD}; "), Rule::CpuField)
        })
    }
}

/// The definitions of `struct tag` in a C file, or in the BCC C of a Python tool, outside
/// functions (more than one: an `#if` choosing between two, which is not for bpf-migrate to
/// pick from).
fn find_struct(file: &SourceFile, tag: &str) -> Vec<StructDef> {
    let text = &file.text;
    if !text.contains(tag) {
        return Vec::new();
    }
    if super::is_python_source(&file.path, text) {
        return super::python::bcc_c_trees(text)
            .iter()
            .flat_map(|t| structs_in(t.root_node(), text, tag))
            .collect();
    }
    let Some(parsed) = c::parse_auto(text, Some(&[super::check::c_range(text)])) else {
        return Vec::new();
    };
    structs_in(parsed.tree.root_node(), text, tag)
}

/// The definitions of `struct tag` in the tree at `root`.
fn structs_in(root: tree_sitter::Node, text: &str, tag: &str) -> Vec<StructDef> {
    c::descendants(root)
        .into_iter()
        .filter(|n| {
            n.kind() == "struct_specifier"
                && n.field("name").is_some_and(|m| c::text(m, text) == tag)
                && c::ancestor(*n, "function_definition").is_none()
        })
        .filter_map(|n| {
            // A body closed by its own brace, not one the parser supplied.
            let body = n
                .field("body")
                .filter(|b| c::text(*b, text).ends_with('}'))?;
            let mut cur = body.walk();
            let members: Vec<_> = body
                .named_children(&mut cur)
                .filter(|m| m.kind() == "field_declaration")
                .collect();
            let taken = members.iter().any(|m| {
                c::descendants(*m)
                    .into_iter()
                    .any(|x| x.kind() == "field_identifier" && c::text(x, text) == FIELD)
            });
            Some(StructDef {
                close: body.end_byte() - 1,
                taken,
                indent: members
                    .last()
                    .map(|m| indent_at(text, m.start_byte()).to_string()),
                cpu_offset: layout_end(text, n, &members).map(|end| end.next_multiple_of(4)),
            })
        })
        .collect()
}

/// Where the members of the struct `n` end, as C lays them out for BPF and x86-64 (each
/// member at a multiple of its alignment); or why that cannot be told from the text.
fn layout_end(
    text: &str,
    n: tree_sitter::Node,
    members: &[tree_sitter::Node],
) -> Result<usize, String> {
    if c::text(n, text).contains("__attribute__") {
        return Err("it has an attribute, which may change its layout".into());
    }
    let mut end: usize = 0;
    for m in members {
        if c::descendants(*m)
            .iter()
            .any(|x| x.kind() == "bitfield_clause")
        {
            return Err("it has a bit field".into());
        }
        let ty = m.field("type").ok_or("a member has no type")?;
        let ty_text = c::text(ty, text);
        let mut cur = m.walk();
        for d in m.children_by_field_name("declarator", &mut cur) {
            let (size, align) = member_size(text, ty_text, d)?;
            end = end.next_multiple_of(align) + size;
        }
    }
    Ok(end)
}

/// The size and alignment of a member of type `ty` declared by `d`.
fn member_size(text: &str, ty: &str, d: tree_sitter::Node) -> Result<(usize, usize), String> {
    match d.kind() {
        "field_identifier" => {
            let s = scalar_size(ty).ok_or_else(|| {
                format!(
                    "its member `{}` is a `{ty}`, whose size bpf-migrate does not know",
                    c::text(d, text)
                )
            })?;
            Ok((s, s))
        }
        "pointer_declarator" | "function_declarator" => Ok((8, 8)),
        "array_declarator" => {
            let inner = d.field("declarator").ok_or("an array has no name")?;
            let (size, align) = member_size(text, ty, inner)?;
            let len_text = d.field("size").map(|s| c::text(s, text)).unwrap_or("");
            let len = len_text
                .parse::<usize>()
                .ok()
                .or_else(|| define_value(text, len_text))
                .ok_or_else(|| {
                    format!("the length `{len_text}` of an array member is not a number or a `#define` of one in this file")
                })?;
            Ok((size * len, align))
        }
        "parenthesized_declarator" => {
            member_size(text, ty, d.named_child(0).ok_or("an empty declarator")?)
        }
        other => Err(format!("a member is declared as a {other}")),
    }
}

/// The size of a scalar C type as BPF and x86-64 have it.
fn scalar_size(ty: &str) -> Option<usize> {
    let words: Vec<&str> = ty
        .split_whitespace()
        .filter(|w| !matches!(*w, "const" | "volatile" | "signed" | "unsigned"))
        .collect();
    let t = words.join(" ");
    if ty.starts_with("enum ") {
        return Some(4);
    }
    Some(match t.as_str() {
        "char" | "bool" | "_Bool" | "__u8" | "__s8" | "u8" | "s8" | "uint8_t" | "int8_t" => 1,
        "short" | "short int" | "__u16" | "__s16" | "u16" | "s16" | "uint16_t" | "int16_t"
        | "__be16" | "__le16" => 2,
        "" | "int" | "__u32" | "__s32" | "u32" | "s32" | "uint32_t" | "int32_t" | "pid_t"
        | "uid_t" | "gid_t" | "__be32" | "__le32" | "float" => 4,
        "long" | "long int" | "long long" | "long long int" | "__u64" | "__s64" | "u64" | "s64"
        | "uint64_t" | "int64_t" | "size_t" | "ssize_t" | "double" | "__be64" | "__le64"
        | "__aligned_u64" => 8,
        _ => return None,
    })
}

/// The number `#define NAME N` gives in `text`.
fn define_value(text: &str, name: &str) -> Option<usize> {
    text.lines().find_map(|l| {
        let rest = l
            .trim_start()
            .strip_prefix('#')?
            .trim_start()
            .strip_prefix("define")?;
        let mut it = rest.split_whitespace();
        (it.next()? == name).then_some(())?;
        it.next()?.trim_matches(['(', ')']).parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use crate::engine::bpf::snippets::{PERF_MAP, RING_MAP};
    use crate::engine::testkit::{LICENSE, check_migrate, check_migrate_with, check_refused};
    use crate::engine::user::testing::{perf, ring};
    use crate::engine::{Options, Strategy};
    use crate::rules::Rule;

    /// The event, in a header both sides include.
    const HEADER: &str =
        "#ifndef X_H\n#define X_H\n\nstruct event {\n\t__u64 ts;\n\t__u32 pid;\n};\n\n#endif\n";

    /// `HEADER` with the field.
    const HEADER_AFTER: &str = "#ifndef X_H\n#define X_H\n\nstruct event {\n\t__u64 ts;\n\t__u32 pid;\n\t__u32 cpu;\n};\n\n#endif\n";

    /// A stack event filled and written to `events`.
    const STACK: &str = r#"SEC("tp/sched/sched_process_exec")
int on_exec(void *ctx)
{
	struct event e = {};

	e.ts = bpf_ktime_get_ns();
	e.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
"#;

    /// A per-CPU array "heap" and an event built in it.
    const HEAP: &str = r#"struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct event);
} heap SEC(".maps");

SEC("tp/sched/sched_process_exit")
int on_exit(void *ctx)
{
	u32 zero = 0;
	struct event *e;

	e = bpf_map_lookup_elem(&heap, &zero);
	if (!e)
		return 0;
	e->ts = bpf_ktime_get_ns();
	e->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e));
	return 0;
}
"#;

    /// `x.bpf.c`: the header, the map, `code`.
    fn bpf(code: &str) -> String {
        format!(
            "#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n#include \"x.h\"\n\n{PERF_MAP}\n{code}{LICENSE}"
        )
    }

    fn bpf_after(code: &str) -> String {
        bpf(code).replace(PERF_MAP, RING_MAP)
    }

    /// A callback that prints the CPU and reads the data as `struct event`.
    const CALLBACK: &str = r#"static void handle_event(void *ctx, int cpu, void *data, __u32 size)
{
	const struct event *e = data;

	printf("%-3d %u\n", cpu, e->pid);
}
"#;

    const CALLBACK_AFTER: &str = r#"static int handle_event(void *ctx, void *data, size_t size)
{
	int cpu = ((const struct event *)data)->cpu;
	const struct event *e = data;

	printf("%-3d %u\n", cpu, e->pid);
	return 0;
}
"#;

    const CREATE: &str = "\tpb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, NULL, NULL, NULL);\n";
    const CREATE_AFTER: &str =
        "\tpb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL);\n";

    /// The loader `x.c`, including `x.h`, with `callback`.
    fn loader(callback: &str) -> String {
        perf("#include \"x.h\"\n", callback, "", CREATE)
    }

    fn loader_after(callback: &str) -> String {
        ring("#include \"x.h\"\n", callback, "", CREATE_AFTER)
    }

    /// The program of `code` and the usual loader and header is refused, saying `says`.
    fn refused(code: &str, says: &str) {
        refused_with(code, HEADER, CALLBACK, says);
    }

    fn refused_with(code: &str, header: &str, callback: &str, says: &str) {
        check_refused(
            &[
                ("x.h", header),
                ("x.bpf.c", &bpf(code)),
                ("x.c", &loader(callback)),
            ],
            Rule::CallbackUsesCpu,
            says,
        );
    }

    #[test]
    fn a_stack_event_and_a_heap_event_carry_the_cpu() {
        let code = format!("{STACK}\n{HEAP}");
        let after = code
            .replace(
                "\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));",
                "\te.cpu = bpf_get_smp_processor_id();\n\tbpf_ringbuf_output(&events, &e, sizeof(e), 0);",
            )
            .replace(
                "\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e));",
                "\te->cpu = bpf_get_smp_processor_id();\n\tbpf_ringbuf_output(&events, e, sizeof(*e), 0);",
            );
        check_migrate(
            &[
                ("x.h", HEADER),
                ("x.bpf.c", &bpf(&code)),
                ("x.c", &loader(CALLBACK)),
            ],
            &[
                ("x.h", HEADER_AFTER),
                ("x.bpf.c", &bpf_after(&after)),
                ("x.c", &loader_after(CALLBACK_AFTER)),
            ],
        );
    }

    /// Reserved, the stack event is a pointer: the field is set through it before the submit.
    #[test]
    fn a_reserved_event_gets_the_cpu_in_the_ring() {
        let after = STACK.replace(
            "\tstruct event e = {};\n\n\te.ts = bpf_ktime_get_ns();\n\te.pid = bpf_get_current_pid_tgid() >> 32;\n\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));",
            "\tstruct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);\n\tif (!e)\n\t\treturn 0;\n\t__builtin_memset(e, 0, sizeof(*e));\n\n\te->ts = bpf_ktime_get_ns();\n\te->pid = bpf_get_current_pid_tgid() >> 32;\n\te->cpu = bpf_get_smp_processor_id();\n\tbpf_ringbuf_submit(e, 0);",
        );
        check_migrate_with(
            &[
                ("x.h", HEADER),
                ("x.bpf.c", &bpf(STACK)),
                ("x.c", &loader(CALLBACK)),
            ],
            &[("x.h", HEADER_AFTER), ("x.bpf.c", &bpf_after(&after))],
            &Options {
                strategy: Strategy::Reserve,
                ..Options::default()
            },
        );
    }

    /// The struct in the BPF source, and the loader's own copy of it: both get the field (in
    /// a file without the kernel's fixed-width types, as an `unsigned int`).
    #[test]
    fn the_loaders_own_copy_gets_the_field_too() {
        let bpf_struct = "struct event {\n\t__u64 ts;\n\t__u32 pid;\n};\n\n";
        let code = format!("{bpf_struct}{STACK}");
        let copy = "struct event {\n\tunsigned long long ts;\n\tunsigned int pid;\n};\n\n";
        let copy_after = "struct event {\n\tunsigned long long ts;\n\tunsigned int pid;\n\tunsigned int cpu;\n};\n\n";
        let before = perf("", &format!("{copy}{CALLBACK}"), "", CREATE).replace("__u32", "int");
        let after = ring(
            "",
            &format!("{copy_after}{CALLBACK_AFTER}"),
            "",
            CREATE_AFTER,
        )
        .replace("__u32", "int");
        let code_after = code
            .replace(
                "\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));",
                "\te.cpu = bpf_get_smp_processor_id();\n\tbpf_ringbuf_output(&events, &e, sizeof(e), 0);",
            )
            .replace("\t__u32 pid;\n};", "\t__u32 pid;\n\t__u32 cpu;\n};");
        let no_header = |s: String| s.replace("#include \"x.h\"\n", "");
        check_migrate(
            &[("x.bpf.c", &no_header(bpf(&code))), ("x.c", &before)],
            &[
                ("x.bpf.c", &no_header(bpf_after(&code_after))),
                ("x.c", &after),
            ],
        );
    }

    #[test]
    fn refuses_an_event_that_is_no_struct() {
        refused(
            "SEC(\"tp/a\")\nint a(void *ctx)\n{\n\tu32 pid = 1;\n\n\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));\n\treturn 0;\n}\n",
            "the event `&pid` is a `u32`, not a struct",
        );
    }

    #[test]
    fn refuses_a_record_shorter_than_its_struct() {
        refused(
            &HEAP.replace("e, sizeof(*e));", "e, sizeof(*e) - 4);"),
            "the size `sizeof(*e) - 4` is not the whole `struct event`",
        );
    }

    #[test]
    fn refuses_two_structs_on_one_map() {
        let other = STACK
            .replace("struct event e", "struct other e")
            .replace("on_exec", "on_other");
        refused_with(
            &format!("{STACK}\n{other}"),
            &HEADER.replace(
                "#endif",
                "struct other {\n\t__u64 ts;\n\t__u32 pid;\n};\n\n#endif",
            ),
            CALLBACK,
            "are a `struct other` here and a `struct event` at x.bpf.c:",
        );
    }

    #[test]
    fn refuses_a_struct_that_is_not_the_programs_own() {
        refused(
            &STACK.replace("struct event e", "struct pt_regs e"),
            "`struct pt_regs` is not defined in x.bpf.c or in a header beside it",
        );
    }

    #[test]
    fn refuses_a_struct_with_a_member_named_cpu() {
        refused_with(
            STACK,
            &HEADER.replace("\t__u32 pid;\n", "\t__u32 pid;\n\t__u32 cpu;\n"),
            CALLBACK,
            "the struct already has a member `cpu`",
        );
    }

    #[test]
    fn refuses_a_stack_event_without_an_initialiser() {
        refused(
            &STACK.replace("struct event e = {};", "struct event e;"),
            "`e` is declared without an initialiser",
        );
    }

    #[test]
    fn refuses_a_pointer_output_as_the_body_of_an_if() {
        refused(
            &HEAP.replace(
                "\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e));",
                "\tif (e->pid)\n\t\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e));",
            ),
            "is the body of an `if` or `else` without braces",
        );
    }

    #[test]
    fn refuses_an_output_in_a_loop_without_braces() {
        refused(
            &STACK.replace(
                "\tbpf_perf_event_output(",
                "\tfor (int i = 0; i < 2; i++)\n\t\tbpf_perf_event_output(",
            ),
            "the body or the condition of a loop or switch without braces",
        );
    }

    #[test]
    fn refuses_a_callback_that_reads_another_struct() {
        refused_with(
            STACK,
            HEADER,
            &CALLBACK.replace("const struct event *e", "const struct raw *e"),
            "it reads the data as a `struct raw`, and the BPF side sends a `struct event`",
        );
    }

    #[test]
    fn refuses_a_callback_that_reads_a_typedef() {
        refused_with(
            STACK,
            HEADER,
            &CALLBACK.replace("const struct event *e", "const event_t *e"),
            "the data is read as a `event_t`, not as a `struct NAME`",
        );
    }

    #[test]
    fn refuses_a_callback_that_assigns_the_data() {
        refused_with(
            STACK,
            HEADER,
            &CALLBACK.replace(
                "const struct event *e = data;\n",
                "const struct event *e;\n\n\te = data;\n",
            ),
            "`e` is assigned the data, and bpf-migrate does not follow what type it reads it as",
        );
    }

    #[test]
    fn refuses_a_loader_that_does_not_see_the_struct() {
        let code = format!("struct event {{\n\t__u64 ts;\n\t__u32 pid;\n}};\n\n{STACK}");
        check_refused(
            &[
                ("x.bpf.c", &bpf(&code).replace("#include \"x.h\"\n", "")),
                ("x.c", &perf("", CALLBACK, "", CREATE)),
            ],
            Rule::CallbackUsesCpu,
            "the loader sees no definition of `struct event` (it is in x.bpf.c)",
        );
    }

    /// Its other uses refuse it first: a callback is rewritten only for one buffer.
    #[test]
    fn a_callback_serving_two_buffers_gets_the_cpu_from_both_maps() {
        let two = format!(
            "{CREATE}\tpb = perf_buffer__new(bpf_map__fd(skel->maps.more), 8, handle_event, NULL, NULL, NULL);\n"
        );
        let code = format!(
            "{}\n{STACK}\n{}",
            PERF_MAP.replace("} events", "} more"),
            STACK
                .replace("&events", "&more")
                .replace("on_exec", "on_more")
        );
        let (changed, diags) = crate::engine::testkit::run(
            &[
                ("x.h", HEADER),
                ("x.bpf.c", &bpf(&code)),
                ("x.c", &perf("#include \"x.h\"\n", CALLBACK, "", &two)),
            ],
            &crate::engine::Options::default(),
        );
        assert!(
            diags
                .iter()
                .all(|d| d.severity != crate::report::Severity::Manual),
            "{diags:?}"
        );
        let bpf_c = &changed["x.bpf.c"];
        assert_eq!(
            bpf_c.matches("bpf_get_smp_processor_id()").count(),
            2,
            "{bpf_c}"
        );
        assert!(bpf_c.contains("bpf_ringbuf_output(&more"), "{bpf_c}");
        assert!(changed["x.h"].contains("cpu;"), "{:?}", changed.get("x.h"));
        let loader = &changed["x.c"];
        assert_eq!(loader.matches("->cpu;").count(), 1, "{loader}");
        assert_eq!(loader.matches("ring_buffer__new(").count(), 2, "{loader}");
    }
}
