//! `--strategy compat`, the BPF side (`user::compat` is the loader's): one program for kernels
//! with and without the ring buffer. The map is a ring buffer in the source; beside it go a
//! flag in `.rodata`, `MAP_use_perf`, which the loader sets before load where the kernel has no
//! ring buffer (making the map a perf event array then), and a helper `MAP_output(ctx, data,
//! size)` through which every output goes (`bpf::output`), taking the path the flag picks. The
//! flag is read-only once loaded, so the verifier (Linux 5.5 and later) keeps only the path
//! taken, and an old kernel never sees the ring buffer's helper. A CO-RE program's helper also
//! asks libbpf whether the kernel has a ring buffer type (`core_guard`), a constant any
//! verifier prunes on, for 5.4 kernels with BTF.

use std::collections::HashMap;

use tree_sitter::Node;

use super::bpf::packet::indent_like;
use super::context::{Analysis, Ctx, MapKind, Report};
use super::edits::insert_after;
use super::link::Dsu;
use super::lost_counter::{mentions, statement_end};
use super::options::{Options, Strategy};
use crate::lang::NodeExt;
use crate::lang::c;
use crate::report::Diagnostic;
use crate::rules::Rule;
use crate::source::SourceFile;

/// The suffix of the flag the loader sets (`MAP_use_perf`): `user::compat` names it too.
pub const FLAG_SUFFIX: &str = "_use_perf";

/// The helper every output to `map` goes through.
pub fn output_helper(map: &str) -> String {
    format!("{map}_output")
}

/// `call` is the perf path of a helper this strategy wrote (`MAP_output`, beside a flag
/// `MAP_use_perf`): the program was migrated already.
pub fn in_own_helper(cx: &Ctx, call: Node) -> bool {
    let src = cx.src();
    let Some(func) = c::ancestor(call, "function_definition") else {
        return false;
    };
    let name = func
        .field("declarator")
        .and_then(|d| d.field("declarator"))
        .map(|n| c::text(n, src));
    name.and_then(|n| n.strip_suffix("_output"))
        .is_some_and(|map| mentions(src, &format!("{map}{FLAG_SUFFIX}")))
}

/// Whether a loader holds the shim this strategy writes (`user::compat`): it was migrated.
pub fn has_loader_shim(src: &str) -> bool {
    src.contains("struct compat_ring {")
}

/// Refuses the program under `--strategy compat`, saying what stands in the way.
pub fn refuse(cx: &mut Ctx, at: usize, what: String) {
    cx.report(
        at,
        Rule::CompatUnsupported,
        format!("--strategy compat cannot migrate this: {what}"),
        "--strategy compat migrates libbpf C loaders and libbpf-rs readers that read their maps as skeleton fields, and BCC tools; migrate with the default strategy (ring buffer only), or by hand",
    );
}

/// Under `--strategy compat`, refuses a file of a kind it does not migrate yet (`what`: Go),
/// where the analysis planned anything.
pub fn refuse_unsupported(file: &SourceFile, opts: &Options, a: &mut Analysis, what: &str) {
    if opts.strategy != Strategy::Compat || (a.edits.is_empty() && a.consumers.is_empty()) {
        return;
    }
    let at = a.edits.iter().map(|e| e.start).min().unwrap_or(0);
    a.diags.push(
        Diagnostic::at(
            file,
            at,
            Rule::CompatUnsupported,
            format!("--strategy compat does not migrate {what} yet"),
        )
        .help("--strategy compat migrates libbpf C loaders, libbpf-rs readers and BCC tools; migrate this program with the default strategy (ring buffer only), or by hand"),
    );
}

/// For each ring a loader reads (`consumed`, by the file defining it and its name), the flag
/// and the helper after its definition; a program where those names are taken, or whose
/// loader is not among the files, is refused.
pub(super) fn link_compat(
    files: &[SourceFile],
    analyses: &mut [Analysis],
    consumed: &HashMap<(usize, String), Vec<Option<u64>>>,
    counted: &[(usize, String)],
    dsu: &mut Dsu,
    link_diags: &mut Vec<Diagnostic>,
) {
    // Every perf map of a program, whether a reader reads it or not.
    let mut rings: Vec<(usize, String, usize, bool)> = Vec::new();
    for (j, a) in analyses.iter().enumerate() {
        for m in &a.maps {
            rings.push((j, m.name.clone(), m.offset, m.kind == MapKind::Bcc));
        }
    }
    // The files given the CO-RE guard's type (and include) already: once a file.
    let mut guarded = std::collections::HashSet::new();
    for (j, map, offset, bcc) in &rings {
        let (j, offset, bcc) = (j, *offset, *bcc);
        if !consumed.contains_key(&(*j, map.clone())) {
            link_diags.push(
                Diagnostic::at(
                    &files[*j],
                    offset,
                    Rule::CompatUnsupported,
                    format!("--strategy compat cannot migrate `{map}` without its reader, which must pick the kind of buffer before load"),
                )
                .help("pass the libbpf C loader or BCC tool that reads it together with the BPF source"),
            );
            continue;
        }
        let flag = format!("{map}{FLAG_SUFFIX}");
        let helper = output_helper(map);
        let root = dsu.find(*j);
        let taken = (0..files.len())
            .filter(|&k| dsu.find(k) == root)
            .find_map(|k| {
                [&flag, &helper]
                    .into_iter()
                    .find(|n| mentions(&files[k].text, n))
                    .map(|n| (k, n.clone()))
            });
        if let Some((k, name)) = taken {
            link_diags.push(
                Diagnostic::at(
                    &files[k],
                    0,
                    Rule::CompatUnsupported,
                    format!("--strategy compat cannot migrate the ring `{map}`: the name `{name}` it needs is taken"),
                )
                .help("rename it, or migrate with the default strategy"),
            );
            continue;
        }
        let text = &files[*j].text;
        let at = statement_end(text, offset);
        // A kept lost callback: the ring path counts what the ring did not take, in the
        // counter `lost_counter` put at the same place, which the helper follows.
        let count = counted.iter().any(|c| c.0 == *j && c.1 == *map);
        if bcc {
            // The helper takes the type the outputs send, for BCC's layout of `.event()`, so
            // it goes before the first function that outputs, after the struct's definition.
            let mut events: Vec<&(String, usize)> = analyses[*j]
                .outputs
                .iter()
                .filter(|o| o.map == *map)
                .filter_map(|o| o.event.as_ref())
                .collect();
            events.sort_by_key(|e| e.1);
            if let Some(other) = events.iter().find(|e| e.0 != events[0].0) {
                link_diags.push(
                    Diagnostic::at(
                        &files[*j],
                        other.1,
                        Rule::CompatUnsupported,
                        format!("--strategy compat cannot migrate `{map}`: its outputs send a `{}` and a `{}`, and BCC lays out its events from one type", events[0].0, other.0),
                    )
                    .help("send one type, or migrate with the default strategy"),
                );
                continue;
            }
            let (ty, before) = match events.first() {
                Some(e) => (e.0.as_str(), Some(above_comments(text, e.1))),
                None => ("void", None),
            };
            let code = bcc_code(map, &flag, &helper, ty, count);
            let edits = &mut analyses[*j].edits;
            match before {
                Some(b) if b != at => insert_after(
                    edits,
                    b,
                    format!("{}\n", indent_like(&code, &text[b..])),
                    RULE,
                ),
                // Right after the table (and the counter): a blank line before, and one after
                // where a function follows at once.
                _ => {
                    let after = if before.is_some() { "\n" } else { "" };
                    let code = format!("\n{}{after}", indent_like(&code, &text[at..]));
                    insert_after(edits, at, code, RULE)
                }
            }
        } else {
            let guard = core_guard(text);
            let first = guard.is_some() && guarded.insert(*j);
            let add = code(map, &flag, &helper, count, guard.is_some(), first);
            let edits = &mut analyses[*j].edits;
            if let Some(Some(include)) = guard.filter(|_| first) {
                let line = "#include <bpf/bpf_core_read.h>\n".to_string();
                insert_after(edits, include, line, RULE);
            }
            // After the counter `lost_counter` put at the same place, if it did.
            insert_after(edits, at, add, RULE);
        }
        analyses[*j].errors_ahead = None;
    }
}

/// The rule of what linking inserts.
const RULE: Rule = Rule::CompatOutput;

/// The kernel's ring buffer type under a name of this tool's (libbpf ignores what follows
/// `___`), whose existence a CO-RE program asks the kernel's BTF.
const RINGBUF_TYPE: &str = "bpf_ringbuf___bpf_migrate";

/// For a program that already needs the kernel's BTF (CO-RE: `vmlinux.h`, `BPF_CORE_READ`,
/// `bpf_core_*`, `__builtin_preserve_*`), the helper also asks whether the kernel has a ring
/// buffer at all, which libbpf answers with a constant: a kernel older than 5.5, whose verifier
/// does not prune on `.rodata`, then never checks the ring's helper either. Some(where
/// `bpf_core_read.h` must be included, if it is not) then; None for another program, which
/// must not start needing BTF.
fn core_guard(text: &str) -> Option<Option<usize>> {
    let core = [
        "vmlinux.h",
        "BPF_CORE_READ",
        "bpf_core_",
        "__builtin_preserve_",
    ]
    .iter()
    .any(|m| text.contains(m));
    if !core {
        return None;
    }
    if text.contains("bpf/bpf_core_read.h") {
        return Some(None);
    }
    // After the helpers' include.
    let at = text.find("bpf/bpf_helpers.h>")?;
    let eol = text[at..].find('\n')? + at + 1;
    Some(Some(eol))
}

/// The flag and the helper of ring `map` (whose ring path goes through the lost counter's
/// `MAP_lost_count()` when `count`; whose perf path is also taken where a CO-RE program's
/// kernel has no ring buffer type when `core`, the type defined before it when `first`).
fn code(map: &str, flag: &str, helper: &str, count: bool, core: bool, first: bool) -> String {
    let ring = format!("bpf_ringbuf_output(&{map}, data, size, 0)");
    let ring = if count {
        format!("{map}{}_count({ring})", super::user::LOST_MAP_SUFFIX)
    } else {
        ring
    };
    let (cond, why) = if core {
        (
            format!("{flag} || !bpf_core_type_exists(struct {RINGBUF_TYPE})"),
            "\n * A kernel older than 5.5 does not prune on the flag; there libbpf's answer to whether\n * the kernel has a ring buffer, a constant, keeps the ring's helper from being checked.",
        )
    } else {
        (flag.to_string(), "")
    };
    let ty = if core && first {
        format!(
            "/* The kernel's ring buffer, if its BTF has one (Linux 5.8 and later). */\nstruct {RINGBUF_TYPE} {{\n\tint unused;\n}};\n\n"
        )
    } else {
        String::new()
    };
    format!(
        "\n/*\n * Added by bpf-migrate --strategy compat. Where the kernel has no ring buffer, user space\n * makes the map above a perf event array and sets this flag before load.{why}\n */\n\
         const volatile int {flag} = 0;\n\n\
         {ty}\
         static __always_inline long {helper}(void *ctx, void *data, __u64 size)\n{{\n\
         \tif ({cond})\n\
         \t\treturn bpf_perf_event_output(ctx, &{map}, BPF_F_CURRENT_CPU, data, size);\n\
         \treturn {ring};\n}}\n"
    )
}

/// The same in BCC's dialect, where the tool picks the table's kind at compile time: the
/// helper's perf path exists only where the tool defines `MAP_use_perf` (`bcc_compat`). Its
/// data is a `ty *`, the type the outputs send, which BCC lays out `b["MAP"].event()` from.
fn bcc_code(map: &str, flag: &str, helper: &str, ty: &str, count: bool) -> String {
    let ring = format!("{map}.ringbuf_output(data, size, 0)");
    let ring = if count {
        format!("{map}{}_count({ring})", super::user::LOST_MAP_SUFFIX)
    } else {
        ring
    };
    format!(
        "/*\n * Added by bpf-migrate --strategy compat. Where the kernel has no ring buffer, the tool\n * defines {flag} (compat_cflags()), and `{map}` is a perf buffer.\n */\n\
         static inline __attribute__((always_inline)) int {helper}(void *ctx, {ty} *data, u32 size)\n{{\n\
         #ifdef {flag}\n\
         \treturn {map}.perf_submit(ctx, data, size);\n\
         #else\n\
         \treturn {ring};\n\
         #endif\n}}\n"
    )
}

/// The start of the line at `at`, or of the comment lines just above it.
fn above_comments(text: &str, at: usize) -> usize {
    let mut start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    while start > 0 {
        let prev = text[..start - 1].rfind('\n').map_or(0, |i| i + 1);
        let line = text[prev..start].trim();
        if !(line.starts_with("//") || line.starts_with("/*") || line.starts_with('*')) {
            break;
        }
        start = prev;
    }
    start
}

/// BCC's `BPF_PERF_OUTPUT(map)` at `start..end` of `text` under compat: where its statement
/// ends (after the `;`) and what replaces it, a perf buffer where the tool defines
/// `MAP_use_perf`, else `ring` (`BPF_RINGBUF_OUTPUT(map, pages)`). The definition must have its
/// line to itself, for the `#ifdef` and `#endif` that pick its kind.
pub fn bcc_table(
    text: &str,
    start: usize,
    end: usize,
    map: &str,
    ring: &str,
) -> Result<(usize, String), String> {
    let line = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[line..start];
    let opens_string = ["\"\"\"", "'''"]
        .iter()
        .any(|q| before.trim_end().ends_with(q));
    if !before.trim().is_empty() && !opens_string {
        return Err(format!(
            "`BPF_PERF_OUTPUT({map})` does not begin its line, where the `#ifdef` that picks its kind must go"
        ));
    }
    let after = &text[end..];
    let blank = after.len() - after.trim_start_matches([' ', '\t']).len();
    let Some(rest) = after[blank..].strip_prefix(';') else {
        return Err(format!(
            "`BPF_PERF_OUTPUT({map})` is not followed by its `;`"
        ));
    };
    let eol = rest.find('\n').unwrap_or(rest.len());
    let tail = rest[..eol].trim();
    if !(tail.is_empty() || tail.starts_with("//") && !tail.contains(['"', '\'']))
        || eol == rest.len()
    {
        return Err(format!(
            "`BPF_PERF_OUTPUT({map});` does not end its line, where the `#endif` that picks its kind must follow"
        ));
    }
    let ind = if opens_string { "" } else { before };
    Ok((
        end + blank + 1,
        format!(
            "#ifdef {map}{FLAG_SUFFIX}\n{ind}BPF_PERF_OUTPUT({map});\n{ind}#else\n{ind}{ring};\n{ind}#endif"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::core_guard;

    /// The guard goes where the program needs BTF already, with the include it needs; never
    /// where it does not.
    #[test]
    fn only_a_core_program_asks_whether_the_kernel_has_a_ring_buffer() {
        let helpers = "#include <bpf/bpf_helpers.h>\n";
        assert_eq!(
            core_guard(&format!("#include <linux/bpf.h>\n{helpers}")),
            None
        );
        let vmlinux = format!("#include \"vmlinux.h\"\n{helpers}int x;\n");
        assert_eq!(
            core_guard(&vmlinux),
            Some(Some(vmlinux.find("int x").unwrap()))
        );
        let read = format!(
            "#include <linux/bpf.h>\n{helpers}#include <bpf/bpf_core_read.h>\nint y = BPF_CORE_READ(t, pid);\n"
        );
        assert_eq!(core_guard(&read), Some(None));
        // CO-RE but no helpers' include to put the core one after: no guard.
        assert_eq!(core_guard("#include \"vmlinux.h\"\n"), None);
    }
}
