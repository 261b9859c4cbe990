//! `--strategy compat`, the BPF side (`user::compat` is the loader's): one program for kernels
//! with and without the ring buffer. The map is a ring buffer in the source; beside it go a
//! flag in `.rodata`, `MAP_use_perf`, which the loader sets before load where the kernel has no
//! ring buffer (making the map a perf event array then), and a helper `MAP_output(ctx, data,
//! size)` through which every output goes (`bpf::output`), taking the path the flag picks. The
//! flag is read-only once loaded, so the verifier (Linux 5.5 and later) keeps only the path
//! taken, and an old kernel never sees the ring buffer's helper.

use std::collections::HashMap;

use tree_sitter::Node;

use super::context::{Analysis, Ctx, MapKind, Report};
use super::link::Dsu;
use super::lost_counter::{mentions, statement_end};
use super::options::{Options, Strategy};
use crate::edit::Edit;
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
        "--strategy compat migrates libbpf C loaders that read their maps as skeleton fields; migrate with the default strategy (ring buffer only), or by hand",
    );
}

/// Under `--strategy compat`, refuses a file of a kind it does not migrate yet (`what`: BCC,
/// libbpf-rs, Go), where the analysis planned anything.
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
        .help("--strategy compat migrates libbpf C loaders; migrate this program with the default strategy (ring buffer only), or by hand"),
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
    // Every perf map of a C program, whether a loader reads it or not.
    let mut rings: Vec<(usize, String, usize)> = Vec::new();
    for (j, a) in analyses.iter().enumerate() {
        for m in a.maps.iter().filter(|m| m.kind != MapKind::Bcc) {
            rings.push((j, m.name.clone(), m.offset));
        }
    }
    for (j, map, offset) in &rings {
        let (j, offset) = (j, *offset);
        if !consumed.contains_key(&(*j, map.clone())) {
            link_diags.push(
                Diagnostic::at(
                    &files[*j],
                    offset,
                    Rule::CompatUnsupported,
                    format!("--strategy compat cannot migrate `{map}` without its loader, which must pick the kind of buffer before load"),
                )
                .help("pass the libbpf C loader that reads it together with the BPF source"),
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
        let add = code(map, &flag, &helper, count);
        let edits = &mut analyses[*j].edits;
        match edits.iter_mut().find(|e| e.start == at && e.end == at) {
            Some(counter) if count => counter.text.push_str(&add),
            _ => edits.push(Edit::insert(at, add, Rule::CompatOutput)),
        }
        analyses[*j].errors_ahead = None;
    }
}

/// The flag and the helper of ring `map` (whose ring path goes through the lost counter's
/// `MAP_lost_count()` when `count`).
fn code(map: &str, flag: &str, helper: &str, count: bool) -> String {
    let ring = format!("bpf_ringbuf_output(&{map}, data, size, 0)");
    let ring = if count {
        format!("{map}{}_count({ring})", super::user::LOST_MAP_SUFFIX)
    } else {
        ring
    };
    format!(
        "\n/*\n * Added by bpf-migrate --strategy compat. Where the kernel has no ring buffer, user space\n * makes the map above a perf event array and sets this flag before load.\n */\n\
         const volatile int {flag} = 0;\n\n\
         static __always_inline long {helper}(void *ctx, void *data, __u64 size)\n{{\n\
         \tif ({flag})\n\
         \t\treturn bpf_perf_event_output(ctx, &{map}, BPF_F_CURRENT_CPU, data, size);\n\
         \treturn {ring};\n}}\n"
    )
}
