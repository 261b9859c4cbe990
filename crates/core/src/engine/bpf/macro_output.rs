//! An output in a macro of the program's own, rewritten once in the macro's body:
//! `#define EMIT(ctx, ev) bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, ev,
//! sizeof(*(ev)))` becomes `#define EMIT(ctx, ev) bpf_ringbuf_output(&events, ev,
//! sizeof(*(ev)), 0)`, and its callers stay as they are (the result is 0 or a negative error
//! either way). The body is parsed on its own, as the body of a function in a text of the
//! file's length where everything else is blank (`int _(){` where the `#define` was, the line
//! continuations blank, `;}` on the next line), so that its offsets are the file's; the output
//! analysis then runs over it as over any function. The map must be named in the body: one
//! that is a parameter of the macro is refused, as is an output whose rewriting would span
//! lines; a body that does not parse as C (token pasting, stringizing) is left to the refusal
//! of a trigger inside a macro (`uses::account_triggers`).

use super::output;
use crate::engine::context::{Analysis, Ctx, OutputSite, Report};
use crate::lang::NodeExt;
use crate::lang::c::{self, Tok};
use crate::rules::Rule;
use crate::source::SourceFile;

/// What opens the body's function; `;}` closes it.
const OPEN: &[u8] = b"int _(){";

/// The outputs in the file's macros, with their edits made in `cx`.
pub(super) fn macro_outputs(
    cx: &mut Ctx,
    counters: &[String],
    explained: &mut Vec<(usize, usize)>,
    out: &mut Analysis,
) -> Vec<OutputSite> {
    let src = cx.src().to_string();
    let mut sites = Vec::new();
    type Macro = (usize, usize, usize, String, Vec<String>);
    let macros: Vec<Macro> = cx
        .of_kinds(&["preproc_function_def", "preproc_def"])
        .into_iter()
        .filter_map(|n| {
            let v = n.field("value")?;
            let name = c::text(n.field("name")?, &src).to_string();
            let params = n.field("parameters").map_or_else(Vec::new, |p| {
                let mut w = p.walk();
                p.named_children(&mut w)
                    .map(|i| c::text(i, &src).to_string())
                    .collect()
            });
            Some((n.start_byte(), v.start_byte(), v.end_byte(), name, params))
        })
        .filter(|&(_, vs, ve, _, _)| {
            c::lex(&src, vs..ve)
                .iter()
                .any(|&(t, s, e)| t == Tok::Ident && &src[s..e] == "bpf_perf_event_output")
        })
        .collect();
    for (start, vs, ve, name, params) in macros {
        let Some(text) = as_function(&src, start, vs, ve) else {
            continue;
        };
        let Some(parsed) = c::parse(&text, None) else {
            continue;
        };
        if parsed.tree.root_node().has_error() {
            continue;
        }
        let file = SourceFile::new(cx.file.path.clone(), cx.file.display.clone(), text);
        let toks = c::lex(&file.text, 0..file.text.len());
        let nodes = c::named_descendants(parsed.tree.root_node());
        let mut mcx = Ctx::new(&file, &parsed.tree, &nodes, &toks, cx.opts);
        let mut mexplained = Vec::new();
        let mut found = output::output_calls(&mut mcx, counters, &mut mexplained, out);
        if let Some(site) = found.iter().find(|s| params.contains(&s.map)) {
            cx.report(site.map_span.0, Rule::UnsupportedForm, format!("the output's map `{}` is a parameter of the macro `{name}`: which maps it stands for is known only where the macro is used", site.map), "expand the macro by hand where it is used, then run bpf-migrate again, or migrate by hand");
            continue;
        }
        if let Some(e) = mcx.edits.iter().find(|e| e.text.contains('\n')) {
            cx.report(e.start, Rule::UnsupportedForm, format!("the output in the macro `{name}` would be rewritten over several lines, which a macro's body cannot hold without line continuations"), "write the output call on one line, then run bpf-migrate again, or migrate by hand");
            continue;
        }
        for site in &mut found {
            // A field set before the output would be a statement inside the macro.
            site.cpu = Some(Err((
                site.offset,
                format!("the output is inside the macro `{name}`"),
            )));
        }
        cx.edits.extend(mcx.edits);
        for mut d in mcx.diags {
            d.snippet = Some(cx.file.line_text(d.line).to_string());
            cx.diags.push(d);
        }
        explained.extend(mexplained);
        sites.extend(found);
    }
    sites
}

/// The file's text with only the macro's body left, as a function's: None where there is no
/// room for the function's opening before the body or its end after it.
fn as_function(src: &str, start: usize, vs: usize, ve: usize) -> Option<String> {
    let bytes = src.as_bytes();
    let mut t: Vec<u8> = bytes
        .iter()
        .map(|&b| if b == b'\n' { b'\n' } else { b' ' })
        .collect();
    if vs - start < OPEN.len() {
        return None;
    }
    t[start..start + OPEN.len()].copy_from_slice(OPEN);
    t[vs..ve].copy_from_slice(&bytes[vs..ve]);
    // Line continuations inside the body.
    for i in vs..ve {
        if bytes[i] == b'\\' && matches!(bytes.get(i + 1), Some(b'\n' | b'\r')) {
            t[i] = b' ';
            if bytes[i + 1] == b'\r' {
                t[i + 1] = b' ';
            }
        }
    }
    let nl = ve + src[ve..].find('\n')?;
    if nl + 3 > t.len() {
        return None;
    }
    t[nl + 1..nl + 3].copy_from_slice(b";}");
    // Only ASCII bytes were written, over whole characters of blank.
    String::from_utf8(t).ok()
}

#[cfg(test)]
mod tests {
    use super::super::snippets::{PERF_MAP, RING_MAP, bpf, migrates, refused};
    use crate::engine::options::{Options, Strategy};
    use crate::engine::testkit::{LOADER, run};
    use crate::rules::Rule;

    const CALLER: &str = r#"SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	if (EMIT(ctx, pid))
		return 1;
	SUBMIT(ctx, pid);
	return 0;
}
"#;

    /// A one-line expression macro and a `do { } while (0)` over continued lines: each body is
    /// rewritten once, its callers untouched; the continuations inside the rewritten call go
    /// with it, the others stay.
    #[test]
    fn outputs_in_macros_are_rewritten_in_their_bodies() {
        let macros = r#"#define EMIT(ctx, v) bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &(v), sizeof(v))

#define SUBMIT(ctx, e)						\
	do {							\
		if (bpf_perf_event_output((ctx), &events,	\
					  BPF_F_CURRENT_CPU,	\
					  &(e), sizeof(e)))	\
			bpf_printk("dropped");			\
	} while (0)
"#;
        let after = r#"#define EMIT(ctx, v) bpf_ringbuf_output(&events, &(v), sizeof(v), 0)

#define SUBMIT(ctx, e)						\
	do {							\
		if (bpf_ringbuf_output(&events, &(e), sizeof(e), 0))	\
			bpf_printk("dropped");			\
	} while (0)
"#;
        migrates(&[PERF_MAP, macros, CALLER], &[RING_MAP, after, CALLER]);
    }

    /// A map that is a parameter of the macro is known only where it is used: refused.
    #[test]
    fn a_map_given_to_the_macro_is_refused() {
        let macros = "#define EMIT_TO(m, ctx, v) bpf_perf_event_output(ctx, &m, BPF_F_CURRENT_CPU, &(v), sizeof(v))\n#define EMIT(ctx, v) EMIT_TO(events, ctx, v)\n#define SUBMIT(ctx, v) EMIT(ctx, v)\n";
        refused(
            &[PERF_MAP, macros, CALLER],
            Rule::UnsupportedForm,
            "the output's map `m` is a parameter of the macro `EMIT_TO`",
        );
    }

    /// Under compat the body calls the helper, which linking writes after the map: the macro
    /// is expanded where it is used, after both.
    #[test]
    fn under_compat_the_body_calls_the_helper() {
        let macros = "#define EMIT(ctx, v) bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &(v), sizeof(v))\n#define SUBMIT(ctx, v) EMIT(ctx, v)\n";
        let opts = Options {
            strategy: Strategy::Compat,
            ..Options::default()
        };
        let src = bpf(&[macros, PERF_MAP, CALLER]);
        let (changed, diags) = run(&[("x.bpf.c", &src), ("x.c", LOADER)], &opts);
        let out = changed
            .get("x.bpf.c")
            .unwrap_or_else(|| panic!("{diags:?}"));
        assert!(
            out.contains("#define EMIT(ctx, v) events_output(ctx, &(v), sizeof(v))\n"),
            "{out}"
        );
        assert!(out.contains("static __always_inline long events_output("));
    }
}
