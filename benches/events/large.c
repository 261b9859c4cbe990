// SPDX-License-Identifier: GPL-2.0
/* The reader the migration needs to see; the benchmark's agent reads for itself. */
#include <stdio.h>
#include <bpf/libbpf.h>
#include "large.skel.h"

static void on_event(void *ctx, int cpu, void *data, __u32 size)
{
}

int main(void)
{
	struct large_bpf *skel = large_bpf__open_and_load();
	struct perf_buffer *pb;

	if (!skel || large_bpf__attach(skel))
		return 1;
	pb = perf_buffer__new(bpf_map__fd(skel->maps.large_events), 64, on_event, NULL, NULL, NULL);
	while (pb && perf_buffer__poll(pb, 100) >= 0)
		;
	perf_buffer__free(pb);
	large_bpf__destroy(skel);
	return 0;
}
