//! Small programs for the reserve strategy's unit tests, run through the whole engine by
//! `testkit`: `x.bpf.c` (a `struct event`, a perf event array `events`, then the test's code)
//! and its loader `x.c`, which reads `events` through the skeleton; or, for BCC, one Python
//! file.

use super::super::options::{Options, Strategy};
use super::super::testkit::{LICENSE, LOADER};
use super::super::testkit::{check_fallback, check_migrate, check_migrate_with};

const INCLUDES: &str = "#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n\n\
struct event {\n\tu32 pid;\n\tu32 len;\n\tchar comm[16];\n};\n\n";

const PERF_MAP: &str = "struct {\n\
\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n\
\t__uint(key_size, sizeof(u32));\n\
\t__uint(value_size, sizeof(u32));\n\
} events SEC(\".maps\");\n\n";

const RING_MAP: &str = "struct {\n\
\t__uint(type, BPF_MAP_TYPE_RINGBUF);\n\
\t__uint(max_entries, 256 * 1024);\n\
} events SEC(\".maps\");\n\n";

/// A per-CPU array `heap` of one `struct event`, for the code of a test.
pub const HEAP: &str = r#"struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct event);
} heap SEC(".maps");
"#;

fn reserve() -> Options {
    Options {
        strategy: Strategy::Reserve,
        ..Options::default()
    }
}

/// With `--strategy reserve`, the output in `code` keeps the copy, with a note giving `reason`.
pub fn fallback(code: &str, reason: &str) {
    let bpf = format!("{INCLUDES}{PERF_MAP}{code}{LICENSE}");
    check_fallback(&[("x.bpf.c", &bpf), ("x.c", LOADER)], reason);
}

/// With `--strategy reserve`, `code` becomes `want` (the perf event array a ring buffer).
pub fn converts(code: &str, want: &str) {
    let bpf = format!("{INCLUDES}{PERF_MAP}{code}{LICENSE}");
    let after = format!("{INCLUDES}{RING_MAP}{want}{LICENSE}");
    check_migrate_with(
        &[("x.bpf.c", &bpf), ("x.c", LOADER)],
        &[("x.bpf.c", &after)],
        &reserve(),
    );
}

/// The lines of `code` (trimmed) where, with the reserve strategy, a diagnostic of `rule`
/// points.
pub fn lines_noted(code: &str, rule: crate::rules::Rule) -> Vec<String> {
    let bpf = format!("{INCLUDES}{PERF_MAP}{code}{LICENSE}");
    let (_, diags) = super::super::testkit::run(&[("x.bpf.c", &bpf), ("x.c", LOADER)], &reserve());
    diags
        .iter()
        .filter(|d| d.rule == rule && d.file == "x.bpf.c")
        .map(|d| bpf.lines().nth(d.line - 1).unwrap_or("").trim().to_string())
        .collect()
}

/// With the default copy strategy, `code` becomes `want`.
pub fn copies(code: &str, want: &str) {
    let bpf = format!("{INCLUDES}{PERF_MAP}{code}{LICENSE}");
    let after = format!("{INCLUDES}{RING_MAP}{want}{LICENSE}");
    check_migrate(
        &[("x.bpf.c", &bpf), ("x.c", LOADER)],
        &[("x.bpf.c", &after)],
    );
}

/// A BCC tool: `code` (a Python string, C after the perf output `events`) and what the
/// Python does with it before loading it (`.format(...)`, placeholders replaced).
fn bcc(code: &str, then: &str) -> String {
    format!(
        r#"from bcc import BPF

bpf_text = """
#include <uapi/linux/ptrace.h>

BPF_PERF_OUTPUT(events);
{code}"""{then}

b = BPF(text=bpf_text)
b.attach_kprobe(event="do_exit", fn_name="probe")


def print_event(cpu, data, size):
    e = b["events"].event(data)
    print(e.pid)


b["events"].open_perf_buffer(print_event)
while 1:
    b.perf_buffer_poll()
"#
    )
}

/// `fallback` for a BCC tool.
pub fn bcc_fallback(code: &str, then: &str, reason: &str) {
    check_fallback(&[("x.py", &bcc(code, then))], reason);
}

/// `converts` for a BCC tool.
pub fn bcc_converts(code: &str, want: &str) {
    let after = bcc(want, "")
        .replace(
            "BPF_PERF_OUTPUT(events);",
            "BPF_RINGBUF_OUTPUT(events, 64);",
        )
        .replace("print_event(cpu, ", "print_event(ctx, ")
        .replace("open_perf_buffer", "open_ring_buffer")
        .replace("perf_buffer_poll", "ring_buffer_poll");
    check_migrate_with(&[("x.py", &bcc(code, ""))], &[("x.py", &after)], &reserve());
}
