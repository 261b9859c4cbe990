//! Small programs for the BPF side's unit tests, run through the whole engine by `testkit`:
//! `x.bpf.c` (the includes, the test's parts in order, the licence) and its loader `x.c`,
//! which reads `events` through the skeleton (a program migrates only with its reader).

use crate::engine::Options;
use crate::engine::testkit::{LICENSE, LOADER, check_migrate_with, check_refused, run};
use crate::report::Diagnostic;
use crate::rules::Rule;

const INCLUDES: &str = "#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n\n";

/// The perf event array `events`, BTF-defined.
pub const PERF_MAP: &str = r#"struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} events SEC(".maps");
"#;

/// `PERF_MAP` migrated.
pub const RING_MAP: &str = r#"struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");
"#;

/// A tracepoint program that writes the pid to `events`.
pub const OUTPUT: &str = r#"SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));
	return 0;
}
"#;

/// `OUTPUT` migrated.
pub const OUTPUT_AFTER: &str = r#"SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	bpf_ringbuf_output(&events, &pid, sizeof(pid), 0);
	return 0;
}
"#;

/// `x.bpf.c`: the includes, `parts` one after the other (a blank line between), the licence.
pub fn bpf(parts: &[&str]) -> String {
    format!("{INCLUDES}{}{LICENSE}", parts.join("\n"))
}

/// The program of `before` and the loader migrates, its `x.bpf.c` becoming `after`.
pub fn migrates(before: &[&str], after: &[&str]) {
    migrates_with(before, after, &Options::default());
}

pub fn migrates_with(before: &[&str], after: &[&str], opts: &Options) {
    let (before, after) = (bpf(before), bpf(after));
    check_migrate_with(
        &[("x.bpf.c", &before), ("x.c", LOADER)],
        &[("x.bpf.c", &after)],
        opts,
    );
}

/// The program of `parts` and the loader is refused by `rule`, saying `says`.
pub fn refused(parts: &[&str], rule: Rule, says: &str) {
    check_refused(&[("x.bpf.c", &bpf(parts)), ("x.c", LOADER)], rule, says);
}

/// Every diagnostic the engine makes over the program of `parts` and the loader.
pub fn diagnostics(parts: &[&str]) -> Vec<Diagnostic> {
    run(
        &[("x.bpf.c", &bpf(parts)), ("x.c", LOADER)],
        &Options::default(),
    )
    .1
}
