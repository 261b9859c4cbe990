//! Perf event arrays defined through the program's own macro (`bpf::map_macro`): each
//! file-scope call of such a macro that names a map defines that map, and links like a map
//! defined in place; the macro's body is rewritten once, to a ring buffer's, so the file that
//! defines it joins every program that calls it (one refused, all stay as they are). A call
//! that names a map the file writes to, of a macro found nowhere among the files given, is a
//! use bpf-migrate cannot follow.

use std::collections::HashMap;

use super::bpf::map_macro::{named_param, ring_body};
use super::context::{Analysis, MapDef, MapKind};
use super::link::{Dsu, included_among};
use super::options::{Options, size_expr};
use crate::report::Diagnostic;
use crate::rules::Rule;
use crate::source::SourceFile;

pub(super) fn link_macro_maps(
    files: &[SourceFile],
    analyses: &mut [Analysis],
    opts: &Options,
    dsu: &mut Dsu,
    link_diags: &mut Vec<Diagnostic>,
) {
    // Every map macro by name: (file, index).
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for (h, a) in analyses.iter().enumerate() {
        for m in &a.map_macros {
            by_name.entry(m.name.clone()).or_default().push(h);
        }
    }
    if by_name.is_empty() && analyses.iter().all(|a| a.top_calls.is_empty()) {
        return;
    }
    let size = size_expr(opts.ring_size);
    // The parameter each rewritten macro was rewritten for.
    let mut rewritten: HashMap<(usize, String), String> = HashMap::new();
    for j in 0..files.len() {
        let calls = analyses[j].top_calls.clone();
        for call in calls {
            let src = &files[j].text;
            let arg_text = |k: usize| {
                call.args
                    .get(k)
                    .map(|&(s, e)| src[s..e].trim())
                    .unwrap_or("")
            };
            let written = |name: &str| analyses[j].outputs.iter().any(|o| o.map == name);
            // The definition this file sees: its own, else one in a file it includes.
            let seen = by_name.get(&call.name).and_then(|hs| {
                hs.iter().copied().find(|&h| h == j).or_else(|| {
                    included_among(files, &analyses[j].includes, j, hs)
                        .first()
                        .copied()
                })
            });
            let Some(h) = seen else {
                for k in 0..call.args.len() {
                    let name = arg_text(k);
                    if written(name) && !analyses[j].maps.iter().any(|m| m.name == name) {
                        link_diags.push(
                            Diagnostic::at(&files[j], call.args[k].0, Rule::MapOtherUse,
                                format!("perf event array `{name}` is named in `{}(...)`, a macro whose definition bpf-migrate was not given", call.name))
                                .help("pass the header that defines the macro with the program, or migrate by hand"),
                        );
                    }
                }
                continue;
            };
            let mac = analyses[h]
                .map_macros
                .iter()
                .find(|m| m.name == call.name)
                .expect("found by name")
                .clone();
            let htext = &files[h].text;
            // The parameter that names the map: the one before SEC(".maps"), else the one in
            // the place of an argument the file writes to, else the first.
            let param = named_param(htext, mac.body)
                .or_else(|| {
                    (0..call.args.len())
                        .find(|&k| written(arg_text(k)))
                        .and_then(|k| mac.params.get(k).cloned())
                })
                .or_else(|| mac.params.first().cloned());
            let place = param
                .as_ref()
                .and_then(|p| mac.params.iter().position(|q| q == p));
            let map = place.map(arg_text).unwrap_or("");
            dsu.union(j, h);
            let refuse = |why: String| {
                Diagnostic::at(
                    &files[h],
                    mac.offset,
                    Rule::UnsupportedForm,
                    format!(
                        "the macro `{}` defines perf event arrays ({} at {}:{}), but {why}",
                        mac.name,
                        // The map's name, when a parameter tells it.
                        if map.is_empty() {
                            "its use".to_string()
                        } else {
                            format!("`{map}`")
                        },
                        files[j].display,
                        files[j].line_col(call.offset).0
                    ),
                )
                .help("write the map's definition out in place of the macro, or migrate by hand")
            };
            let (Some(param), Some(place)) = (param, place) else {
                link_diags.push(refuse(
                    "bpf-migrate cannot tell which parameter names the map".into(),
                ));
                continue;
            };
            if !crate::lang::c::is_ident(map) {
                link_diags.push(refuse(format!(
                    "its `{param}` is given `{map}`, not a name"
                )));
                continue;
            }
            let key = (h, mac.name.clone());
            match rewritten.get(&key) {
                Some(p) if *p != param => {
                    link_diags.push(refuse(format!(
                        "its calls name the map by `{p}` and by `{param}`"
                    )));
                    continue;
                }
                Some(_) => {}
                None => match ring_body(htext, mac.body, &param, &size) {
                    Ok(edits) => {
                        analyses[h].edits.extend(edits);
                        analyses[h].errors_ahead = None;
                        // The type in the body was reported as a use in a macro: this one is
                        // followed.
                        let inside = |d: &Diagnostic| {
                            d.rule == Rule::UnsupportedForm
                                && (mac.body.0..mac.body.1).contains(&d.offset)
                        };
                        analyses[h].diags.retain(|d| !inside(d));
                        rewritten.insert(key, param.clone());
                    }
                    Err(why) => {
                        link_diags.push(refuse(why));
                        continue;
                    }
                },
            }
            let offset = call.args[place].0;
            analyses[j].maps.push(MapDef {
                name: map.to_string(),
                offset: offset
                    + (files[j].text[offset..].len() - files[j].text[offset..].trim_start().len()),
                kind: MapKind::Btf,
                value_type: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::options::Options;
    use crate::engine::testkit::{check_migrate, check_refused, run};
    use crate::rules::Rule;

    const MAPS_H: &str = "#define PERF_MAP(name) \\\n\tstruct { \\\n\t\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); \\\n\t\t__uint(key_size, sizeof(u32)); \\\n\t\t__uint(value_size, sizeof(u32)); \\\n\t} name SEC(\".maps\")\n";

    /// A program defining `events` (and, with `two`, `errors`) with `PERF_MAP`, in `maps.h`.
    fn bpf(two: bool) -> String {
        let (def, out) = if two {
            (
                "PERF_MAP(errors);\n",
                "\tif (pid == 1)\n\t\tbpf_perf_event_output(ctx, &errors, BPF_F_CURRENT_CPU, &pid, sizeof(pid));\n",
            )
        } else {
            ("", "")
        };
        format!(
            "#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n#include \"maps.h\"\n\nPERF_MAP(events);\n{def}\nSEC(\"tracepoint/syscalls/sys_enter_execve\")\nint trace_exec(void *ctx)\n{{\n\tu32 pid = bpf_get_current_pid_tgid() >> 32;\n\n{out}\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));\n\treturn 0;\n}}\n\nchar LICENSE[] SEC(\"license\") = \"GPL\";\n"
        )
    }

    /// Its loader, reading each of `maps`.
    fn loader(maps: &[&str]) -> String {
        let opens: String = maps
            .iter()
            .map(|m| format!("\tstruct perf_buffer *{m} = perf_buffer__new(bpf_map__fd(skel->maps.{m}), 8, on_event, NULL, NULL, NULL);\n\n\twhile (perf_buffer__poll({m}, 100) >= 0)\n\t\t;\n"))
            .collect();
        format!(
            "#include <bpf/libbpf.h>\n#include \"x.skel.h\"\n\nstatic void on_event(void *ctx, int cpu, void *data, __u32 size)\n{{\n}}\n\nint main(void)\n{{\n\tstruct x_bpf *skel = x_bpf__open_and_load();\n{opens}\treturn 0;\n}}\n"
        )
    }

    #[test]
    fn the_macro_is_rewritten_once_for_every_map_it_defines() {
        let ring_h = "#define PERF_MAP(name) \\\n\tstruct { \\\n\t\t__uint(type, BPF_MAP_TYPE_RINGBUF);          \\\n\t\t__uint(max_entries, 256 * 1024);             \\\n\t} name SEC(\".maps\")\n";
        let bpf2 = bpf(true);
        let after = bpf2
            .replace(
                "bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid))",
                "bpf_ringbuf_output(&events, &pid, sizeof(pid), 0)",
            )
            .replace(
                "bpf_perf_event_output(ctx, &errors, BPF_F_CURRENT_CPU, &pid, sizeof(pid))",
                "bpf_ringbuf_output(&errors, &pid, sizeof(pid), 0)",
            );
        let (changed, diags) = run(
            &[
                ("maps.h", MAPS_H),
                ("x.bpf.c", &bpf2),
                ("x.c", &loader(&["events", "errors"])),
            ],
            &Options::default(),
        );
        assert!(!diags.iter().any(|d| d.severity.refuses()), "{diags:?}");
        assert_eq!(changed["maps.h"], ring_h);
        assert_eq!(changed["x.bpf.c"], after);
        assert!(changed["x.c"].contains("ring_buffer__new(bpf_map__fd(skel->maps.errors)"));
        // A second run changes nothing.
        let again = run(
            &[
                ("maps.h", ring_h),
                ("x.bpf.c", &after),
                ("x.c", &changed["x.c"]),
            ],
            &Options::default(),
        );
        assert!(again.0.is_empty(), "{:?}", again.0);
        // The macro and its calls in one file.
        let one = bpf(false).replace("#include \"maps.h\"\n", MAPS_H);
        check_migrate(
            &[("x.bpf.c", &one), ("x.c", &loader(&["events"]))],
            &[(
                "x.bpf.c",
                &one.replace(MAPS_H, ring_h).replace(
                    "bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid))",
                    "bpf_ringbuf_output(&events, &pid, sizeof(pid), 0)",
                ),
            )],
        );
    }

    /// A macro of the loader's that names the type in one call, used in a function, is no map
    /// definition: the loader checks its map's type, and stays a refusal.
    #[test]
    fn a_macro_that_only_names_the_type_is_still_refused() {
        let check = "#define CHECK(m) check_type(m, BPF_MAP_TYPE_PERF_EVENT_ARRAY)\n\nstatic int check_type(struct bpf_map *m, int t)\n{\n\treturn bpf_map__type(m) == t;\n}\n\n";
        let l = loader(&["events"]).replace("int main(void)\n{\n\tstruct x_bpf *skel = x_bpf__open_and_load();\n", &format!("{check}int main(void)\n{{\n\tstruct x_bpf *skel = x_bpf__open_and_load();\n\n\tif (!CHECK(skel->maps.events))\n\t\treturn 1;\n"));
        assert!(l.contains("CHECK(skel"), "{l}");
        check_refused(
            &[("maps.h", MAPS_H), ("x.bpf.c", &bpf(false)), ("x.c", &l)],
            Rule::UnsupportedForm,
            "`BPF_MAP_TYPE_PERF_EVENT_ARRAY` is used inside the macro `CHECK`",
        );
    }

    #[test]
    fn a_map_of_the_macro_that_cannot_migrate_keeps_them_all() {
        // `errors` has no reader: the macro cannot change for `events` alone.
        check_refused(
            &[
                ("maps.h", MAPS_H),
                ("x.bpf.c", &bpf(true)),
                ("x.c", &loader(&["events"])),
            ],
            Rule::UnlinkedProgram,
            "no user-space reader of perf event array `errors`",
        );
        // The macro's definition not given.
        check_refused(
            &[("x.bpf.c", &bpf(false)), ("x.c", &loader(&["events"]))],
            Rule::MapOtherUse,
            "perf event array `events` is named in `PERF_MAP(...)`, a macro whose definition bpf-migrate was not given",
        );
        // A body it cannot rewrite.
        let pinned = MAPS_H.replace(
            "__uint(value_size, sizeof(u32)); \\\n",
            "__uint(value_size, sizeof(u32)); \\\n\t\t__uint(pinning, LIBBPF_PIN_BY_NAME); \\\n",
        );
        check_refused(
            &[
                ("maps.h", &pinned),
                ("x.bpf.c", &bpf(false)),
                ("x.c", &loader(&["events"])),
            ],
            Rule::UnsupportedForm,
            "the macro `PERF_MAP` defines perf event arrays (`events` at x.bpf.c:5), but it sets `pinning`",
        );
    }
}
