// SPDX-License-Identifier: GPL-2.0
/* Benchmark: a 64-byte event built on the stack, one per getpid(). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct small_event {
	u32 pid;
	u32 tid;
	u64 ts;
	u64 seq;
	u8 flags;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} small_events SEC(".maps");

u64 seq;

SEC("tp/syscalls/sys_enter_getpid")
int on_getpid_small(void *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	struct small_event e = {};

	e.pid = id >> 32;
	e.tid = (u32)id;
	e.ts = bpf_ktime_get_ns();
	e.seq = seq;
	bpf_get_current_comm(&e.comm, sizeof(e.comm));
	bpf_perf_event_output(ctx, &small_events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
