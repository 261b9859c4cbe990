//! The NMI-context warning: programs attached to perf events run in NMI context, where a ring
//! buffer reservation can fail under contention even when the ring has room.

use super::super::context::{Ctx, Report};
use crate::lang::c::Tok;
use crate::rules::Rule;

/// Warns at each `SEC("perf_event...")` (or `__section`) of the file.
pub(super) fn nmi_warning(cx: &mut Ctx) {
    let src = cx.src();
    let toks = cx.tokens();
    for w in toks.windows(3) {
        if w[0].0 == Tok::Ident
            && matches!(&src[w[0].1..w[0].2], "SEC" | "__section")
            && w[2].0 == Tok::Str
            && src[w[2].1..w[2].2]
                .trim_matches('"')
                .starts_with("perf_event")
        {
            cx.diag(
                w[0].1,
                Rule::NmiContext,
                "this program runs in NMI context (perf_event): ring buffer writes can fail under contention even when the ring has room",
                Some("check the return value of bpf_ringbuf_output() and count failures in a map, so drops show"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::snippets::{OUTPUT, OUTPUT_AFTER, PERF_MAP, RING_MAP, diagnostics, migrates};
    use crate::report::Severity;
    use crate::rules::Rule;

    fn nmi_warnings(parts: &[&str]) -> Vec<String> {
        diagnostics(parts)
            .into_iter()
            .filter(|d| d.rule == Rule::NmiContext)
            .inspect(|d| assert_eq!(d.severity, Severity::Warning))
            .map(|d| d.message)
            .collect()
    }

    #[test]
    fn warns_of_a_perf_event_program_that_still_migrates() {
        let before = OUTPUT.replace("tracepoint/syscalls/sys_enter_execve", "perf_event");
        let after = OUTPUT_AFTER.replace("tracepoint/syscalls/sys_enter_execve", "perf_event");
        migrates(&[PERF_MAP, &before], &[RING_MAP, &after]);
        let warnings = nmi_warnings(&[PERF_MAP, &before]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("this program runs in NMI context (perf_event)"));
    }

    #[test]
    fn warns_of_a_perf_event_section() {
        let before = OUTPUT.replace(
            "SEC(\"tracepoint/syscalls/sys_enter_execve\")",
            "__section(\"perf_event\")",
        );
        assert_eq!(nmi_warnings(&[PERF_MAP, &before]).len(), 1);
    }

    #[test]
    fn no_warning_for_a_tracepoint() {
        assert!(nmi_warnings(&[PERF_MAP, OUTPUT]).is_empty());
    }
}
