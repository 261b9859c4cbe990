// SPDX-License-Identifier: GPL-2.0
/* Benchmark: a 2 KiB event built in a per-CPU array, one per getpid(). Only its head is
 * written, as tools that send a path buffer do. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct large_event {
	u32 pid;
	u32 len;
	u64 ts;
	char comm[16];
	char buf[2016];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct large_event);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} large_events SEC(".maps");

SEC("tp/syscalls/sys_enter_getpid")
int on_getpid_large(void *ctx)
{
	struct large_event *e;
	u32 zero = 0;

	e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 0;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ts = bpf_ktime_get_ns();
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	e->len = bpf_probe_read_kernel_str(e->buf, 64, e->comm);
	bpf_perf_event_output(ctx, &large_events, BPF_F_CURRENT_CPU, e, sizeof(*e));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
