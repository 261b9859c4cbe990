//! Messages that name the perf buffer (strings handed to printf-like functions) now talk
//! about the ring buffer.

use super::super::context::Ctx;
use crate::edit::Edit;
use crate::lang::c;
use crate::rules::Rule;

/// Functions that print a plain message.
const MESSAGE_FNS: &[&str] = &["perror", "puts", "fputs", "die", "fatal", "bail"];

/// Functions whose variadic arguments follow a printf format.
pub(super) const PRINTF_LIKE: &[&str] = &[
    "printf", "fprintf", "sprintf", "snprintf", "dprintf", "syslog", "warn", "warnx", "err",
    "errx", "p_err", "p_warn", "p_info", "pr_warn", "pr_info", "pr_debug", "printk",
];

/// A message about the perf buffer's size (`"invalid perf buffer size"`, checking a user's
/// setting): the setting sizes nothing now, and the message keeps its words rather than seem
/// to be about the ring's size. (One that only states a page count while polling, `"polling
/// the perf buffer, %d pages"`, is about the buffer polled, and follows.)
pub(in crate::engine) fn about_its_size(message: &str) -> bool {
    message.to_ascii_lowercase().contains("size")
}

/// Messages that name the perf buffer now talk about the ring buffer.
pub(super) fn messages(cx: &mut Ctx) {
    let src = cx.src();
    const PAIRS: &[(&str, &str)] = &[
        ("perf buffer", "ring buffer"),
        ("Perf buffer", "Ring buffer"),
        ("PERF BUFFER", "RING BUFFER"),
        ("perf_buffer", "ring_buffer"),
        ("perf event buffer", "ring buffer"),
    ];
    for n in cx.of_kind("string_literal") {
        let t = c::text(n, src);
        if !PAIRS.iter().any(|(a, _)| t.contains(a)) || about_its_size(t) {
            continue;
        }
        // Only messages: strings handed to printf-like functions. A map name looked up by
        // string or a command-line option keeps its spelling.
        let printed = n
            .parent()
            .filter(|p| p.kind() == "argument_list")
            .and_then(|p| p.parent())
            .and_then(|call| c::call_name(call, src))
            .is_some_and(|f| PRINTF_LIKE.contains(&f) || MESSAGE_FNS.contains(&f));
        if !printed {
            continue;
        }
        let mut new = t.to_string();
        for (a, b) in PAIRS {
            new = new.replace(a, b);
        }
        cx.edits.push(Edit::replace(
            n.start_byte(),
            n.end_byte(),
            new,
            Rule::PerfBufferMessage,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::BPF;
    use crate::engine::testkit::check_migrate;

    #[test]
    fn printed_messages_name_the_ring_buffer() {
        let loader = r#"#include <stdio.h>
#include <bpf/libbpf.h>
#include "x.skel.h"

static const char *buffer_kind = "perf buffer";

static void handle_event(void *ctx, int cpu, void *data, __u32 size)
{
	printf("pid %u\n", *(__u32 *)data);
}

int main(void)
{
	struct perf_buffer *pb;
	struct x_bpf *skel;

	skel = x_bpf__open_and_load();
	if (!skel || x_bpf__attach(skel))
		return 1;
	pb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, handle_event, NULL, NULL, NULL);
	if (!pb) {
		perror("Perf buffer");
		return 1;
	}
	printf("polling the %s\n", buffer_kind);
	while (perf_buffer__poll(pb, 100) >= 0)
		;
	fprintf(stderr, "error polling perf_buffer\n");
	perf_buffer__free(pb);
	return 0;
}
"#;
        let after = r#"#include <stdio.h>
#include <bpf/libbpf.h>
#include "x.skel.h"

static const char *buffer_kind = "perf buffer";

static int handle_event(void *ctx, void *data, size_t size)
{
	printf("pid %u\n", *(__u32 *)data);
	return 0;
}

int main(void)
{
	struct ring_buffer *pb;
	struct x_bpf *skel;

	skel = x_bpf__open_and_load();
	if (!skel || x_bpf__attach(skel))
		return 1;
	pb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL);
	if (!pb) {
		perror("Ring buffer");
		return 1;
	}
	printf("polling the %s\n", buffer_kind);
	while (ring_buffer__poll(pb, 100) >= 0)
		;
	fprintf(stderr, "error polling ring_buffer\n");
	ring_buffer__free(pb);
	return 0;
}
"#;
        check_migrate(&[("x.bpf.c", BPF), ("x.c", loader)], &[("x.c", after)]);
    }
}
