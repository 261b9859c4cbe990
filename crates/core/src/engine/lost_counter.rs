//! The BPF side of a kept lost-sample callback (`user::lost_counter` is the loader's): once
//! linking knows that a loader feeds its lost callback from the counter of ring `MAP`, the
//! file defining `MAP` gets a per-CPU array `MAP_lost` after it, with a helper that counts a
//! failed output, and every output to `MAP` (and reservation in it) in the program goes
//! through that helper, its result unchanged.

use super::bpf::packet::indent_like;
use super::context::{Analysis, MapKind};
use super::link::Dsu;
use crate::edit::Edit;
use crate::lang::c::{self, Tok};
use crate::report::Diagnostic;
use crate::rules::Rule;
use crate::source::{SourceFile, line_end_incl};

/// The suffix of the counter map: `MAP_lost` (what the loader's side names).
use super::user::LOST_MAP_SUFFIX as SUFFIX;

/// For each ring `(file defining it, map)` whose reader keeps its lost callback: the counter
/// and the wrapped outputs, or a refusal of the program where an output cannot be counted.
pub(super) fn link_lost_counters(
    files: &[SourceFile],
    analyses: &mut [Analysis],
    counted: &[(usize, String)],
    dsu: &mut Dsu,
    compat: bool,
    link_diags: &mut Vec<Diagnostic>,
) {
    let mut done: Vec<(usize, &str)> = Vec::new();
    for (j, map) in counted {
        if done.contains(&(*j, map.as_str())) {
            continue;
        }
        done.push((*j, map.as_str()));
        let Some(def) = analyses[*j].maps.iter().find(|m| m.name == *map) else {
            continue;
        };
        let (offset, kind) = (def.offset, def.kind);
        let counter = format!("{map}{SUFFIX}");
        let text = &files[*j].text;
        if mentions(text, &counter) {
            link_diags.push(
                Diagnostic::at(
                    &files[*j],
                    offset,
                    Rule::UnsupportedForm,
                    format!(
                        "the ring `{map}` cannot get its lost-sample counter `{counter}`: the name `{counter}` is taken"
                    ),
                )
                .help("pass --lost drop to drop the lost-sample callback instead"),
            );
            continue;
        }
        let bcc = kind == MapKind::Bcc;
        let root = dsu.find(*j);
        // Reading the counter is a bpf() call, which checks capabilities: a program that
        // traces those would report the reader's own reads, one more at every read.
        if let Some((k, at, hook)) = traces_the_reads(files, dsu, root) {
            link_diags.push(
                Diagnostic::at(&files[k], at, Rule::UnsupportedForm, format!(
                    "the lost-sample counter of `{map}` cannot be kept: its reader reads it with bpf(), which runs through `{hook}`, traced here, so the tool would report its own reads"))
                .help("pass --lost drop to drop the lost-sample callback instead"),
            );
            continue;
        }
        let mut nulls = false;
        let mut uncounted: Vec<(usize, usize, String)> = Vec::new();
        let no_count = || {
            format!(
                "this output to `{map}` cannot be made to count the records the ring does not take, which the loader's lost-sample callback reports"
            )
        };
        for (k, a) in analyses.iter_mut().enumerate() {
            if dsu.find(k) != root {
                continue;
            }
            let mut wrapped_at: Vec<(usize, usize, Rule)> = Vec::new();
            for e in a.edits.iter_mut() {
                let (text, outputs, reserves) = wrap(&e.text, map, &counter, bcc);
                if outputs + reserves > 0 {
                    e.text = text;
                    nulls |= reserves > 0;
                    wrapped_at.push((e.start, e.end, e.rule));
                }
            }
            // Every output of the map is counted: its own edit calls the helper, or submits
            // a reservation (wrapped where it is made), or calls a packet helper (wrapped
            // where it is inserted).
            // An output no edit touches is refused for another reason, which says enough.
            for o in a.outputs.iter().filter(|o| o.map == *map) {
                // Through the program's own wrapper, the output names its map by the
                // parameter: counted there when every call passes this map.
                if let Some(w) = &o.wrapper {
                    let other = a.outputs.iter().find(|p| {
                        p.map != *map && p.wrapper.as_ref().is_some_and(|v| v.name == w.name)
                    });
                    if let Some(p) = other {
                        uncounted.push((k, o.offset, format!("{}: it goes through the wrapper `{}`, which also writes to `{}`, and one output cannot count for two rings", no_count(), w.name, p.map)));
                        continue;
                    }
                    let inner = a.edits.iter_mut().find(|e| (e.start, e.end) == w.call);
                    match inner {
                        Some(e) if !e.text.contains(&format!("{counter}_count(")) => {
                            let (text, outputs, _) = wrap(&e.text, &w.param, &counter, bcc);
                            if outputs == 0 {
                                uncounted.push((k, o.offset, no_count()));
                            } else {
                                e.text = text;
                                wrapped_at.push((e.start, e.end, e.rule));
                            }
                        }
                        Some(_) => {}
                        None => uncounted.push((k, o.offset, no_count())),
                    }
                    continue;
                }
                let at_site = |e: &&Edit| e.start <= o.offset && o.offset < e.end.max(e.start + 1);
                if !a.edits.iter().any(|e| at_site(&e)) {
                    continue;
                }
                // Under compat, the output calls `MAP_output`, whose ring path `compat` writes
                // counted.
                let helper = format!("{}(", super::compat::output_helper(map));
                let covered = a.edits.iter().filter(at_site).any(|e| {
                    wrapped_at.iter().any(|w| w.0 == e.start && w.1 == e.end)
                        || (compat && e.text.contains(&helper))
                        || e.text.contains("bpf_ringbuf_submit(")
                        || e.text.contains(".ringbuf_submit(")
                        || (e.rule == Rule::OutputPacket
                            && wrapped_at.iter().any(|w| w.2 == Rule::OutputPacket))
                });
                if !covered {
                    uncounted.push((k, o.offset, no_count()));
                }
            }
            if !wrapped_at.is_empty() {
                a.errors_ahead = None;
            }
        }
        if !uncounted.is_empty() {
            for (k, at, why) in uncounted {
                link_diags.push(
                    Diagnostic::at(&files[k], at, Rule::UnsupportedForm, why)
                    .help("pass --lost drop to drop the lost-sample callback instead, or count failed outputs by hand"),
                );
            }
            continue;
        }
        let at = statement_end(text, offset);
        let add = match kind {
            MapKind::Bcc => indent_like(&bcc_counter(map, &counter, nulls), &text[at..]),
            _ => counter_code(map, &counter, kind, nulls),
        };
        analyses[*j]
            .edits
            .push(Edit::insert(at, add, Rule::LostCounter));
        analyses[*j].errors_ahead = None;
    }
}

/// The comment above the counter map.
fn comment(map: &str) -> String {
    format!(
        "\n/*\n * The records `{map}` could not take, per CPU, for the reader's lost-sample report\n * (added by bpf-migrate).\n */\n"
    )
}

/// The counter of a libbpf program's ring `map` and its helpers.
fn counter_code(map: &str, counter: &str, kind: MapKind, nulls: bool) -> String {
    let def = match kind {
        MapKind::Legacy => format!(
            "struct bpf_map_def SEC(\"maps\") {counter} = {{\n\t.type = BPF_MAP_TYPE_PERCPU_ARRAY,\n\t.key_size = sizeof(__u32),\n\t.value_size = sizeof(__u64),\n\t.max_entries = 1,\n}};\n"
        ),
        _ => format!(
            "struct {{\n\t__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);\n\t__uint(max_entries, 1);\n\t__type(key, __u32);\n\t__type(value, __u64);\n}} {counter} SEC(\".maps\");\n"
        ),
    };
    let mut add = format!(
        "{}{def}\n\
         static __always_inline long {counter}_count(long err)\n{{\n\tif (err) {{\n\t\t__u32 zero = 0;\n\t\t__u64 *n = bpf_map_lookup_elem(&{counter}, &zero);\n\n\t\tif (n)\n\t\t\t*n += 1;\n\t}}\n\treturn err;\n}}\n",
        comment(map)
    );
    if nulls {
        add.push_str(&format!(
            "\nstatic __always_inline void *{counter}_if_null(void *rec)\n{{\n\tif (!rec)\n\t\t{counter}_count(-1);\n\treturn rec;\n}}\n"
        ));
    }
    add
}

/// The same in BCC's dialect: a `BPF_PERCPU_ARRAY` and its `.lookup()`.
fn bcc_counter(map: &str, counter: &str, nulls: bool) -> String {
    const INLINE: &str = "static inline __attribute__((always_inline))";
    let mut add = format!(
        "{}BPF_PERCPU_ARRAY({counter}, u64, 1);\n\n\
         {INLINE} int {counter}_count(int err)\n{{\n\tif (err) {{\n\t\tint zero = 0;\n\t\tu64 *n = {counter}.lookup(&zero);\n\n\t\tif (n)\n\t\t\t*n += 1;\n\t}}\n\treturn err;\n}}\n",
        comment(map)
    );
    if nulls {
        add.push_str(&format!(
            "\n{INLINE} void *{counter}_if_null(void *rec)\n{{\n\tif (!rec)\n\t\t{counter}_count(-1);\n\treturn rec;\n}}\n"
        ));
    }
    add
}

/// Hooks that a bpf() call from user space runs through: its capability check, its LSM hook,
/// the system call's own tracepoints and function. (Tracers of every system call are not
/// among them: they pick theirs by number, and see the original tool's polls as well.)
const READ_HOOKS: &[&str] = &[
    "cap_capable",
    "security_capable",
    "ns_capable",
    "security_bpf",
    "lsm/bpf",
    "sys_enter_bpf",
    "sys_exit_bpf",
    "sys_bpf",
];

/// A file of the program (by its group `root`) that names one of `READ_HOOKS`, where, and which.
fn traces_the_reads(
    files: &[SourceFile],
    dsu: &mut Dsu,
    root: usize,
) -> Option<(usize, usize, &'static str)> {
    (0..files.len())
        .filter(|&k| dsu.find(k) == root)
        .find_map(|k| {
            let text = &files[k].text;
            READ_HOOKS
                .iter()
                .find_map(|h| text.find(h).map(|at| (k, at, *h)))
        })
}

/// The identifier `name` appears in `text`.
pub(super) fn mentions(text: &str, name: &str) -> bool {
    c::lex(text, 0..text.len())
        .iter()
        .any(|&(t, s, e)| t == Tok::Ident && &text[s..e] == name)
}

/// Just past the line that ends the declaration whose name is at `at`: its `;` outside any
/// brackets.
pub(super) fn statement_end(text: &str, at: usize) -> usize {
    let mut depth = 0i32;
    for (t, s, _) in c::lex(text, at..text.len()) {
        match t {
            Tok::Punct(b'(' | b'[' | b'{') => depth += 1,
            Tok::Punct(b')' | b']' | b'}') => depth -= 1,
            Tok::Punct(b';') if depth <= 0 => return line_end_incl(text, s),
            _ => {}
        }
    }
    text.len()
}

/// `text` with each `bpf_ringbuf_output(&MAP, ...)` made `COUNTER_count(...)` of it and each
/// `bpf_ringbuf_reserve(&MAP, ...)` `COUNTER_if_null(...)` of it (in BCC's dialect,
/// `MAP.ringbuf_output(...)` and `MAP.ringbuf_reserve(...)`); and how many of each.
fn wrap(text: &str, map: &str, counter: &str, bcc: bool) -> (String, usize, usize) {
    let toks = c::lex(text, 0..text.len());
    let punct = |k: usize, p: u8| matches!(toks.get(k), Some((Tok::Punct(q), _, _)) if *q == p);
    let ident = |k: usize| match toks.get(k) {
        Some(&(Tok::Ident, s, e)) => &text[s..e],
        _ => "",
    };
    let mut inserts: Vec<(usize, String)> = Vec::new();
    let (mut outputs, mut reserves) = (0, 0);
    for (k, &(t, s, _)) in toks.iter().enumerate() {
        if t != Tok::Ident {
            continue;
        }
        // The helper's name and the index of the call's opening parenthesis.
        let (helper, open) = if bcc {
            if ident(k) != map || !punct(k + 1, b'.') || !punct(k + 3, b'(') {
                continue;
            }
            match ident(k + 2) {
                "ringbuf_output" => (false, k + 3),
                "ringbuf_reserve" => (true, k + 3),
                _ => continue,
            }
        } else {
            let reserve = match ident(k) {
                "bpf_ringbuf_output" => false,
                "bpf_ringbuf_reserve" => true,
                _ => continue,
            };
            if !punct(k + 1, b'(') {
                continue;
            }
            (reserve, k + 1)
        };
        // The call closes, and (libbpf) its first argument names the map.
        let mut depth = 0;
        let mut first_arg_idents: Vec<&str> = Vec::new();
        let mut in_first = true;
        let mut close = None;
        for &(t2, s2, e2) in &toks[open..] {
            match t2 {
                Tok::Punct(b'(' | b'[' | b'{') => depth += 1,
                Tok::Punct(b')' | b']' | b'}') => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(e2);
                        break;
                    }
                }
                Tok::Punct(b',') if depth == 1 => in_first = false,
                Tok::Ident if in_first && &text[s2..e2] != "void" => {
                    first_arg_idents.push(&text[s2..e2]);
                }
                _ => {}
            }
        }
        let Some(close) = close else { continue };
        if !bcc && first_arg_idents != [map] {
            continue;
        }
        let helper = if helper {
            reserves += 1;
            format!("{counter}_if_null(")
        } else {
            outputs += 1;
            format!("{counter}_count(")
        };
        inserts.push((s, helper));
        inserts.push((close, ")".to_string()));
    }
    let mut out = text.to_string();
    inserts.sort_by_key(|i| std::cmp::Reverse(i.0));
    for (at, s) in inserts {
        out.insert_str(at, &s);
    }
    (out, outputs, reserves)
}

#[cfg(test)]
mod tests {
    use super::wrap;
    use crate::engine::Options;
    use crate::engine::testkit::{LICENSE, LOADER, run};

    /// A wrapper whose every call passes one map counts for that map's ring, in the wrapper;
    /// one that also writes to another ring cannot count for both, and refuses.
    #[test]
    fn a_wrapper_of_one_map_counts_its_outputs() {
        let loader = LOADER
            .replace(
                "int main(void)",
                "static void on_lost(void *ctx, int cpu, __u64 n)\n{\n}\n\nint main(void)",
            )
            .replace(
                "on_event, NULL, NULL, NULL)",
                "on_event, on_lost, NULL, NULL)",
            );
        let map = |name: &str| {
            format!(
                "struct {{\n\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n\t__uint(key_size, sizeof(u32));\n\t__uint(value_size, sizeof(u32));\n}} {name} SEC(\".maps\");\n\n"
            )
        };
        let bpf = |second: &str| {
            format!(
                "#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n\n{}{}static __always_inline long submit(void *ctx, void *map, void *data, __u64 size)\n{{\n\treturn bpf_perf_event_output(ctx, map, BPF_F_CURRENT_CPU, data, size);\n}}\n\nSEC(\"tracepoint/syscalls/sys_enter_execve\")\nint trace_exec(void *ctx)\n{{\n\tu32 pid = bpf_get_current_pid_tgid() >> 32;\n\n\tsubmit(ctx, &events, &pid, sizeof(pid));\n\tsubmit(ctx, &{second}, &pid, sizeof(pid));\n\treturn 0;\n}}\n{LICENSE}",
                map("events"),
                if second == "events" {
                    String::new()
                } else {
                    map(second)
                },
            )
        };
        let (changed, diags) = run(
            &[("x.bpf.c", &bpf("events")), ("x.c", &loader)],
            &Options::default(),
        );
        let out = changed
            .get("x.bpf.c")
            .unwrap_or_else(|| panic!("{diags:?}"));
        assert!(
            out.contains("\treturn events_lost_count(bpf_ringbuf_output(map, data, size, 0));\n"),
            "{out}"
        );
        let (changed, diags) = run(
            &[("x.bpf.c", &bpf("other")), ("x.c", &loader)],
            &Options::default(),
        );
        assert!(changed.is_empty(), "{changed:?}");
        assert!(
            diags.iter().any(|d| d
                .message
                .contains("it goes through the wrapper `submit`, which also writes to `other`")),
            "{diags:?}"
        );
    }

    #[test]
    fn wraps_outputs_and_reservations_of_the_map_only() {
        let (t, o, r) = wrap(
            "if (bpf_ringbuf_output(&events, &e, sizeof(e), 0))\n\treturn bpf_ringbuf_output(&other, &e, 4, 0);",
            "events",
            "events_lost",
            false,
        );
        assert_eq!(
            t,
            "if (events_lost_count(bpf_ringbuf_output(&events, &e, sizeof(e), 0)))\n\treturn bpf_ringbuf_output(&other, &e, 4, 0);"
        );
        assert_eq!((o, r), (1, 0));
        let (t, o, r) = wrap(
            "e = bpf_ringbuf_reserve((void *)&events, sizeof(*e), 0);",
            "events",
            "events_lost",
            false,
        );
        assert_eq!(
            t,
            "e = events_lost_if_null(bpf_ringbuf_reserve((void *)&events, sizeof(*e), 0));"
        );
        assert_eq!((o, r), (0, 1));
    }

    #[test]
    fn wraps_bcc_table_methods() {
        let (t, o, r) = wrap(
            "events.ringbuf_output(&data, sizeof(data), 0);\nother.ringbuf_output(&data, 4, 0);\nstruct data_t *e = events.ringbuf_reserve(sizeof(*e));",
            "events",
            "events_lost",
            true,
        );
        assert_eq!(
            t,
            "events_lost_count(events.ringbuf_output(&data, sizeof(data), 0));\nother.ringbuf_output(&data, 4, 0);\nstruct data_t *e = events_lost_if_null(events.ringbuf_reserve(sizeof(*e)));"
        );
        assert_eq!((o, r), (1, 1));
    }
}
