//! `bpf-migrate verify` end to end: real clang builds, a real Debian kernel under qemu, the
//! guest agent loading the objects through libbpf-rs. Nothing is loaded into the host kernel.
//! The kernel is provisioned into the cache on first use (`apt-get download`).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::cell::Cell;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::Value;

use common::*;

/// The host's share of guests. A BCC tool compiles for minutes under emulation; beside another
/// guest and the host builds of another test (go, cargo, clang), its guest can be starved long
/// enough to stall (soft lockups) past any timeout. So BCC tests run alone (`alone`), the
/// others side by side (`shared`, taken by `verify_json`).
static GUESTS: RwLock<()> = RwLock::new(());

thread_local! {
    /// This test holds the guests alone: its own runs take no shared hold.
    static ALONE: Cell<bool> = const { Cell::new(false) };
}

struct Alone(#[allow(dead_code)] RwLockWriteGuard<'static, ()>);

impl Drop for Alone {
    fn drop(&mut self) {
        ALONE.set(false);
    }
}

fn alone() -> Alone {
    let g = GUESTS.write().unwrap_or_else(|e| e.into_inner());
    ALONE.set(true);
    Alone(g)
}

fn shared() -> Option<RwLockReadGuard<'static, ()>> {
    (!ALONE.get()).then(|| GUESTS.read().unwrap_or_else(|e| e.into_inner()))
}

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `bpf-migrate verify --format json ARGS` from the checkout: its exit code, asserted to be
/// `code`, and its JSON lines.
fn verify_json(args: &[&str], want: i32) -> Vec<Value> {
    let _guests = shared();
    let mut all = vec!["verify", "--format", "json"];
    all.extend(args);
    let out = run(&root(), &all);
    assert_eq!(code(&out), want, "{}\n{}", stdout(&out), stderr(&out));
    json_lines(&out)
}

fn maps_of<'a>(lines: &'a [Value], program: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["type"] == "map" && v["program"].as_str().unwrap_or("").contains(program))
        .collect()
}

/// The tool line of `program`; without one, the test fails quoting every line of that
/// program (a failed boot, say, leaves only its program line, with the reason).
fn tool_of<'a>(lines: &'a [Value], program: &str) -> &'a Value {
    let of = |v: &&Value| v["program"].as_str().unwrap_or("").contains(program);
    lines
        .iter()
        .filter(of)
        .find(|v| v["type"] == "tool")
        .unwrap_or_else(|| {
            let said: Vec<String> = lines.iter().filter(of).map(Value::to_string).collect();
            panic!("{program}: no tool line; its lines:\n{}", said.join("\n"))
        })
}

/// Verifies the fixtures' migrations in one VM and checks every map of each is equivalent,
/// with events, and each program's own tool (its loader, original and migrated, run in the
/// guest) as given: `equivalent` with lines printed during the workload, or `inconclusive`
/// (the reason must contain the text given after it). Returns the JSON lines.
fn verify_all(programs: &[(&str, &str)], options: &[&str]) -> Vec<Value> {
    let mut args = options.to_vec();
    let paths: Vec<String> = programs
        .iter()
        .map(|(p, _)| format!("fixtures/{p}/input"))
        .collect();
    args.extend(paths.iter().map(String::as_str));
    let all_tools_equivalent = programs.iter().all(|(_, t)| *t == "equivalent");
    let lines = verify_json(&args, if all_tools_equivalent { 0 } else { 1 });
    for (p, tool) in programs {
        let maps = maps_of(&lines, &format!("/{p}/"));
        assert!(!maps.is_empty(), "{p}: no map compared");
        for m in maps {
            assert_eq!(m["verdict"], "equivalent", "{p}: {m}");
            let n = m["original"].as_u64().unwrap();
            assert!(n > 0, "{p}: map {} saw no events", m["map"]);
            assert_eq!(m["migrated"].as_u64().unwrap(), n, "{p}: {m}");
            assert_eq!(m["matched"].as_u64().unwrap(), n, "{p}: {m}");
        }
        let t = tool_of(&lines, &format!("/{p}/"));
        match tool.split_once(": ") {
            None => {
                assert_eq!(t["verdict"], "equivalent", "{p}: {t}");
                let n = t["lines"]["original"].as_u64().unwrap();
                assert!(
                    n > 0,
                    "{p}: the tool printed nothing during the workload: {t}"
                );
                assert_eq!(t["lines"]["migrated"].as_u64().unwrap(), n, "{p}: {t}");
                assert_eq!(t["lines"]["matched"].as_u64().unwrap(), n, "{p}: {t}");
            }
            Some((verdict, why)) => {
                assert_eq!(t["verdict"], verdict, "{p}: {t}");
                assert!(t["finding"].as_str().unwrap().contains(why), "{p}: {t}");
            }
        }
    }
    let last = lines.last().unwrap();
    let want = if all_tools_equivalent {
        "equivalent"
    } else {
        "inconclusive"
    };
    assert_eq!(last["verdict"], want, "{last}");
    lines
}

#[test]
fn migrated_fixtures_verify_equivalent() {
    // Tracepoint, kprobe, uprobe, fentry, raw tracepoint and tc programs; kprobes on a module's
    // functions (ext4's, on the workload's scratch disk) and block requests; stack events, per-CPU heaps,
    // variable-length records, timestamps; two maps in one program; packet samples (header and
    // packet bytes) from socket filter, tc and XDP programs, one whose header type the
    // function defines (moved before the helper); outputs through the program's own
    // wrapper, to two maps, and through the program's own macros; maps defined through the
    // program's own macros or in a header (built into the source that includes it, not on its
    // own). One VM for all of them.
    // `true` as the user's workload: one more exec, copied into the guest with its libraries.
    // Each loader runs too, original twice and migrated once, and prints the same lines; a
    // loader of libbpf 0.x's API does not build against the host's libbpf 1.x, and one that
    // needs an interface to attach to stops with its usage: both inconclusive, with why.
    let lines = verify_all(
        &[
            ("execsnoop", "equivalent"),
            ("opensnoop", "equivalent"),
            ("vfsstat_fentry", "inconclusive: does not build"),
            ("rawtp_openat", "equivalent"),
            ("tcpkt", "inconclusive: --args"),
            ("twomaps", "equivalent"),
            ("epoll_consume", "equivalent"),
            // Its loader sleeps between consumes: ready only if seen sleeping with its buffer
            // mapped, a perf buffer in the original and a ring in the migration.
            ("sleep_consume", "equivalent"),
            ("workload_reach", "equivalent"),
            ("disk_io", "equivalent"),
            ("biosnoop_varlen", "equivalent"),
            ("cpu_field", "equivalent"),
            ("pktcap", "equivalent"),
            ("xdp_sampler", "inconclusive: --args"),
            ("wrapper_output", "equivalent"),
            ("macro_output", "equivalent"),
            ("macro_map_def", "equivalent"),
            ("header_map", "equivalent"),
        ],
        // One boot for all: this is about equivalence, not how a batch is split.
        &["--workload", "true", "--per-boot", "20"],
    );
    // A tool seen back waiting for events after Ctrl-C gets a second one, as a user would
    // type it, and ends as it means to, not killed 10 s later; the others end at the first.
    let ended = &tool_of(&lines, "/sleep_consume/")["ended"];
    for run in ["original", "second_run", "migrated"] {
        assert_eq!(ended[run], "exit code 0 after Ctrl-C twice", "{ended}");
    }
    assert!(
        tool_of(&lines, "/execsnoop/")["ended"]["migrated"]
            .as_str()
            .is_some_and(|e| !e.contains("twice")),
        "{lines:?}"
    );
    // Every step ran, and each of workload_reach's maps saw events (checked above).
    let verdict = lines.last().unwrap();
    let steps: Vec<&str> = verdict["workload"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for step in [
        "exec",
        "disk",
        "disk-xfs",
        "disk-btrfs",
        "md-flush",
        "stat",
        "tcp-refused-reset",
        "names",
        "memcg-oom",
        "direct-reclaim",
        "packets",
        "tcp-retransmit",
        "tcp-drop",
        "sync",
        "shm",
        "threads",
        "readline",
        "runq-delay",
    ] {
        assert!(steps.contains(&step), "{step}: {verdict}");
    }
    // Three children of the built-in workload, its bash and the user's command.
    let exec = maps_of(&lines, "execsnoop.bpf.c")[0];
    assert_eq!(exec["original"], 5, "{exec}");
    // disklat's loader picks fentry (the guest has ext4's BTF) and names the functions at
    // run time: its sections alone do not load, so each version loaded as its tool had it.
    assert_as_tool(&lines, "tracing ext4_sync_file", "`file_sync_entry`");
}

/// `disk_io`'s program line says it was loaded and attached as its tool had it: `how` one of
/// its programs, and `unloaded` among those its loader left out.
fn assert_as_tool(lines: &[Value], how: &str, unloaded: &str) {
    let p = lines
        .iter()
        .find(|v| {
            v["type"] == "program" && v["program"].as_str().unwrap_or("").contains("/disk_io/")
        })
        .expect("disk_io's program line");
    let said = p["problems"].to_string();
    assert!(said.contains("as each version's own tool had them"), "{p}");
    assert!(said.contains(how), "{p}");
    let (_, not_loaded) = said.split_once("not loaded").expect("programs not loaded");
    assert!(not_loaded.contains(unloaded), "{p}");
}

#[test]
fn a_tool_built_by_its_own_makefile_runs_with_build() {
    // syncwatch's loader links a helper of a subdirectory that only its Makefile knows:
    // verify's own build of it fails, the original's too (inconclusive, with why); with
    // `--build make` both versions are built by the Makefile, each in a copy of the
    // directory, and the tool prints the same lines (the workload's sync step).
    let lines = verify_json(&["fixtures/build_cmd/input"], 1);
    for m in maps_of(&lines, "syncwatch") {
        assert_eq!(m["verdict"], "equivalent", "{m}");
    }
    let t = tool_of(&lines, "syncwatch");
    assert_eq!(t["verdict"], "inconclusive", "{t}");
    assert!(
        t["finding"].as_str().unwrap().contains("does not build"),
        "{t}"
    );
    let lines = verify_json(&["--build", "make", "fixtures/build_cmd/input"], 0);
    let t = tool_of(&lines, "syncwatch");
    assert_eq!(t["verdict"], "equivalent", "{t}");
    assert!(t["lines"]["matched"].as_u64().unwrap() >= 4, "{t}");
}

#[test]
fn reserve_migrations_verify_equivalent() {
    // --strategy reserve: stack events (zeroed), per-CPU heaps (removed), discards on early
    // returns, gotos and continues, and the sites that fall back to a copy. Verify poisons
    // every ring buffer first, so a byte a reservation leaves unset cannot pass for a zero.
    let lines = verify_all(
        &[
            ("reserve_procwatch", "equivalent"),
            ("reserve_fallbacks", "equivalent"),
            ("execsnoop", "equivalent"),
            ("opensnoop", "equivalent"),
            ("twomaps", "equivalent"),
            ("vfsstat_fentry", "inconclusive: does not build"),
            ("cpu_field", "equivalent"),
            ("disk_io", "equivalent"),
        ],
        // disklat with kprobes, which its loader attaches by name.
        &[
            "--strategy",
            "reserve",
            "--tool-args",
            "disklat=-k",
            "--per-boot",
            "20",
        ],
    );
    assert_as_tool(&lines, "kretprobe ext4_sync_file", "`file_sync_fentry`");
}

/// The lines of `program` on `--strategy compat`'s `path` (`ringbuf` or `perfbuf`).
fn on_path<'a>(lines: &'a [Value], program: &str, path: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["path"] == path && v["program"].as_str().unwrap_or("").contains(program))
        .collect()
}

#[test]
fn compat_migrations_verify_on_both_paths() {
    // --strategy compat: each program twice, on the guest as it is (the ring path) and with
    // the guest refusing ring buffers through an LSM program on bpf(), as a kernel before 5.8
    // answers (the perf path): the loader's probe picks the perf buffer, and for the event
    // level the agent makes the maps perf event arrays and sets their flags as the loader
    // does. Open-and-load and open-then-load loaders, two maps, an epoll loop that consumes,
    // and a libbpf-rs crate (its skeleton opened and loaded at once, a kept lost callback).
    let programs = [
        "compat_killsnoop",
        "execsnoop",
        "twomaps",
        "epoll_consume",
        "rs_compat_exitwatch",
    ];
    let paths: Vec<String> = programs
        .iter()
        .map(|p| format!("fixtures/{p}/input"))
        .collect();
    let mut args = vec!["--strategy", "compat"];
    args.extend(paths.iter().map(String::as_str));
    let lines = verify_json(&args, 0);
    for p in programs {
        for path in ["ringbuf", "perfbuf"] {
            let of = on_path(&lines, &format!("/{p}/"), path);
            let prog = of.iter().find(|v| v["type"] == "program");
            assert!(
                prog.is_some_and(|v| v["verdict"] == "equivalent"),
                "{p} {path}: {of:?}"
            );
            let maps: Vec<&&Value> = of.iter().filter(|v| v["type"] == "map").collect();
            assert!(!maps.is_empty(), "{p} {path}: no map compared");
            for m in maps {
                let n = m["original"].as_u64().unwrap();
                assert!(n > 0 && m["matched"].as_u64() == Some(n), "{p} {path}: {m}");
            }
            let tool = of
                .iter()
                .find(|v| v["type"] == "tool")
                .expect("a tool line");
            let n = tool["lines"]["original"].as_u64().unwrap();
            assert!(
                n > 0 && tool["lines"]["matched"].as_u64() == Some(n),
                "{p} {path}: {tool}"
            );
        }
    }
}

#[test]
fn a_broken_perf_fallback_is_caught_on_the_perf_path_only() {
    // Three compat migrations broken by hand where only old kernels go: one loader no longer
    // makes its map a perf event array, another leaves the ring's key and value sizes (0), a
    // libbpf-rs crate does not set the BPF side's flag (its program then calls the ring's
    // helper on a perf event array). All are equivalent on the ring path; on the perf path
    // their tools fail to load (the event level, where the agent picks as a right loader
    // would, stays equivalent).
    let tmp = tempdir();
    let (before, after) = (tmp.path().join("before"), tmp.path().join("after"));
    for (p, into) in [
        ("execsnoop", ""),
        ("twomaps", ""),
        ("rs_compat_exitwatch", "exitwatch"),
    ] {
        for dir in [&before, &after] {
            let fx = read_tree(&root().join(format!("fixtures/{p}/input")));
            write_tree(&dir.join(into), &fx);
        }
    }
    let o = run(&after, &["--write", "--strategy", "compat", "."]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut files = read_tree(&after);
    let type_line = "\tbpf_map__set_type(map, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n";
    let size_lines = "\tbpf_map__set_key_size(map, sizeof(int));\n\tbpf_map__set_value_size(map, sizeof(int));\n";
    let flag_line = "        rodata.expect(\"the BPF program's .rodata\").exits_use_perf = 1;\n";
    for (file, gone, instead) in [
        ("execsnoop.c", type_line, ""),
        ("twomaps.c", size_lines, ""),
        (
            "exitwatch/src/main.rs",
            flag_line,
            "        let _ = rodata;\n",
        ),
    ] {
        let text = files.get_mut(file).unwrap();
        assert!(text.contains(gone), "{file}");
        *text = text.replace(gone, instead);
    }
    write_tree(&after, &files);
    let (b, a) = (before.display().to_string(), after.display().to_string());
    let lines = verify_json(&["--strategy", "compat", "--before", &b, "--after", &a], 1);
    for (p, why) in [
        ("execsnoop", "failed to create: Operation not permitted"),
        ("twomaps", "failed to create: Invalid argument"),
        ("exitwatch", "BPF program load failed"),
    ] {
        let ring = on_path(&lines, p, "ringbuf");
        assert!(
            ring.iter().all(|v| v["verdict"] == "equivalent"),
            "{p}: {ring:?}"
        );
        let perf = on_path(&lines, p, "perfbuf");
        for m in perf.iter().filter(|v| v["type"] == "map") {
            assert_eq!(m["verdict"], "equivalent", "{p}: {m}");
        }
        let tool = perf
            .iter()
            .find(|v| v["type"] == "tool")
            .expect("a tool line");
        assert_eq!(tool["verdict"], "different", "{p}: {tool}");
        assert!(
            tool["finding"].as_str().unwrap().contains(why),
            "{p}: {tool}"
        );
    }
}

#[test]
fn a_bcc_tool_under_compat_verifies_on_both_paths_and_a_broken_fallback_is_caught() {
    // sigsnoop under --strategy compat, as bpf-migrate writes it: equivalent on both paths
    // (on the perf path its libbpf probe, inside libbcc, finds no ring buffer and it compiles
    // its C with the perf table). A twin whose BPF() call lost `cflags=compat_cflags()`
    // compiles the ring table on both paths: equivalent on the ring path, and on the perf path
    // the guest refuses its ring, so it prints nothing.
    let _guests = alone();
    let tmp = tempdir();
    let (before, after) = (tmp.path().join("before"), tmp.path().join("after"));
    let tool = read_tree(&root().join("fixtures/bcc_compat_sigsnoop/input"));
    let original = tool["sigsnoop.py"].clone();
    write_tree(&after, &tool);
    let o = run(&after, &["--write", "--strategy", "compat", "."]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let mut files = read_tree(&after);
    let pick = "b = BPF(text=bpf_text, cflags=compat_cflags())";
    assert!(files["sigsnoop.py"].contains(pick));
    let broken = files["sigsnoop.py"].replace(pick, "b = BPF(text=bpf_text)");
    files.insert("sigbroken.py".to_string(), broken);
    write_tree(&after, &files);
    write_tree(
        &before,
        &[
            ("sigsnoop.py".to_string(), original.clone()),
            ("sigbroken.py".to_string(), original),
        ]
        .into(),
    );
    let (b, a) = (before.display().to_string(), after.display().to_string());
    let lines = verify_json(&["--strategy", "compat", "--before", &b, "--after", &a], 1);
    for path in ["ringbuf", "perfbuf"] {
        let of = on_path(&lines, "sigsnoop.py", path);
        let t = of
            .iter()
            .find(|v| v["type"] == "tool")
            .expect("a tool line");
        assert_eq!(t["verdict"], "equivalent", "{path}: {t}");
        assert!(t["lines"]["matched"].as_u64().unwrap() > 0, "{path}: {t}");
    }
    let ring = on_path(&lines, "sigbroken.py", "ringbuf");
    let t = ring
        .iter()
        .find(|v| v["type"] == "tool")
        .expect("a tool line");
    assert_eq!(t["verdict"], "equivalent", "{t}");
    let perf = on_path(&lines, "sigbroken.py", "perfbuf");
    let t = perf
        .iter()
        .find(|v| v["type"] == "tool")
        .expect("a tool line");
    assert_eq!(t["verdict"], "different", "{t}");
}

#[test]
fn libbpf_rs_crates_verify_at_both_levels() {
    // Each crate built with cargo, original and migrated (one shared target directory), and
    // run in the guest. proclife reads two buffers, whose events interleave as they come.
    // The capability tracer drops its lost callback (its fixture's option): a counter read
    // with bpf() would pass through the capability check it traces. forkwatch sizes its ring
    // before load from its page count option.
    let lines = verify_all(
        &[
            ("rs_capable", "equivalent"),
            ("rs_two_maps", "equivalent"),
            ("rs_runtime_pages", "equivalent"),
        ],
        &["--lost", "drop"],
    );
    let t = tool_of(&lines, "rs_two_maps");
    assert!(t["lines"]["original"].as_u64().unwrap() >= 6, "{t}");
}

#[test]
fn go_readers_verify_at_both_levels() {
    // cilium/ebpf readers whose C bpf2go builds: each version built with go in GOPATH mode
    // (bpf2go compiling that version's C into the binary), static, and run in the guest.
    // Debian's cilium/ebpf 0.9.1 cannot read the 6.1 guest kernel's BTF (ENUM64), which a
    // CO-RE program needs: that tool stops before it waits for events, with the reason.
    verify_all(
        &[
            ("go_sigsnoop", "equivalent"),
            ("go_execsnoop", "inconclusive: unknown kind"),
        ],
        &[],
    );
    // A hand migration whose reader decodes the record big-endian: the events match, the
    // lines do not.
    let lines = verify_json(
        &[
            "--before",
            "fixtures/verify-wrong-go/before",
            "--after",
            "fixtures/verify-wrong-go/after",
        ],
        1,
    );
    for m in maps_of(&lines, "sigsnoop") {
        assert_eq!(m["verdict"], "equivalent", "the BPF side is right: {m}");
    }
    let t = tool_of(&lines, "sigsnoop");
    assert_eq!(t["verdict"], "different", "{t}");
    assert!(t["finding"].as_str().unwrap().contains("column"), "{t}");
    // go_burstlat's slow reader falls behind: its `if record.LostSamples != 0` asks the
    // ring's counter after migration.
    losses_reported_unless_dropped("fixtures/go_burstlat/input");
}

#[test]
fn bcc_tools_run_in_the_guest_and_wrong_migrations_are_caught() {
    // A BCC tool under the host's python3-bpfcc, in the guest over the host's root file
    // system: migrated as bpf-migrate does it, equivalent; with a wrong ctypes layout, or BCC
    // C submitting too few bytes, different with the line and column named. Two CPUs: nine
    // BCC compilations under emulation.
    let _guests = alone();
    let lines = verify_json(
        &[
            "--cpus",
            "2",
            "--before",
            "fixtures/verify-wrong-bcc/before",
            "--after",
            "fixtures/verify-wrong-bcc/after",
        ],
        1,
    );
    let good = tool_of(&lines, "killtrace.py");
    assert_eq!(good["verdict"], "equivalent", "{good}");
    assert!(good["lines"]["matched"].as_u64().unwrap() > 0, "{good}");
    let layout = tool_of(&lines, "killlayout.py");
    assert_eq!(layout["verdict"], "different", "{layout}");
    let f = layout["finding"].as_str().unwrap();
    assert!(f.contains("column 3"), "{f}");
    let size = tool_of(&lines, "killsize.py");
    assert_eq!(size["verdict"], "different", "{size}");
    assert!(size["finding"].as_str().unwrap().contains("init"), "{size}");
}

#[test]
fn wrong_user_space_migrations_are_caught_with_the_line_named() {
    // Right BPF sides, wrong loaders: a callback that no longer prints a field, and one that
    // returns an error, which stops a ring buffer's poll after the first event.
    let lines = verify_json(
        &[
            "--before",
            "fixtures/verify-wrong-tool/before",
            "--after",
            "fixtures/verify-wrong-tool/after",
        ],
        1,
    );
    for m in maps_of(&lines, "snoop") {
        assert_eq!(m["verdict"], "equivalent", "the BPF sides are right: {m}");
    }
    let sig = tool_of(&lines, "sigsnoop");
    assert_eq!(sig["verdict"], "different", "{sig}");
    let f = sig["finding"].as_str().unwrap();
    assert!(f.contains("line 1") && f.contains("column 3"), "{f}");
    let kill = tool_of(&lines, "killsnoop");
    assert_eq!(kill["verdict"], "different", "{kill}");
    let f = kill["finding"].as_str().unwrap();
    assert!(
        f.contains("exit code 0")
            && f.contains("exit code 1")
            && f.contains("error polling ring buffer"),
        "{f}"
    );
    let last = lines.last().unwrap();
    assert_eq!(last["verdict"], "different", "{last}");
}

#[test]
fn a_tool_that_needs_arguments_is_inconclusive_until_given_them() {
    // sigsnoop made to want a target PID, as many tools want a PID or an interface.
    let tmp = tempdir();
    let src = read_tree(&root().join("fixtures/verify-wrong-tool/before"));
    let mut files = std::collections::BTreeMap::new();
    for (name, text) in src.iter().filter(|(n, _)| n.starts_with("sigsnoop")) {
        let text = text.replace(
            "\tobj = sigsnoop_bpf__open_and_load();",
            "\tif (argc < 2) {\n\t\tfprintf(stderr, \"usage: sigsnoop PID\\n\");\n\t\treturn 2;\n\t}\n\tobj = sigsnoop_bpf__open_and_load();",
        );
        files.insert(name.clone(), text);
    }
    assert!(files["sigsnoop.c"].contains("usage: sigsnoop PID"));
    write_tree(tmp.path(), &files);
    let out = run(tmp.path(), &["verify", "--format", "json", "."]);
    assert_eq!(code(&out), 1, "{}\n{}", stdout(&out), stderr(&out));
    let lines = json_lines(&out);
    let t = tool_of(&lines, "sigsnoop");
    assert_eq!(t["verdict"], "inconclusive", "{t}");
    let f = t["finding"].as_str().unwrap();
    assert!(
        f.contains("usage: sigsnoop PID") && f.contains("--args"),
        "{f}"
    );
    let out = run(
        tmp.path(),
        &["verify", "--format", "json", "--args", "1", "."],
    );
    let lines = json_lines(&out);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(tool_of(&lines, "sigsnoop")["verdict"], "equivalent");
    // In a batch, one tool's own command line, by the program's name.
    let out = run(
        tmp.path(),
        &[
            "verify",
            "--format",
            "json",
            "--tool-args",
            "sigsnoop=1",
            ".",
        ],
    );
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        tool_of(&json_lines(&out), "sigsnoop")["verdict"],
        "equivalent"
    );
    // A name no program has is a mistake, said before anything runs.
    let out = run(tmp.path(), &["verify", "--tool-args", "sigsnop=1", "."]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("no program to verify is named sigsnop (the names: sigsnoop)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn wrong_migrations_are_caught_with_the_map_and_event_named() {
    let lines = verify_json(
        &[
            "--before",
            "fixtures/verify-wrong/before",
            "--after",
            "fixtures/verify-wrong/after",
        ],
        1,
    );
    let finding = |prog: &str, map: &str| -> String {
        maps_of(&lines, prog)
            .into_iter()
            .find(|m| m["map"] == map)
            .map(|m| {
                assert_eq!(m["verdict"], "different", "{prog}/{map}: {m}");
                m["finding"].as_str().unwrap_or("").to_string()
            })
            .unwrap_or_else(|| panic!("{prog}: no map {map}"))
    };
    let f = finding("field_unset", "exec_events");
    assert!(f.contains("event #0") && f.contains("field `ppid`"), "{f}");
    let f = finding("wrong_size", "exec_events");
    assert!(
        f.contains("event #0") && f.contains("has 160 bytes, the original 172"),
        "{f}"
    );
    let f = finding("dropped_path", "exit_events");
    assert!(f.contains("have no counterpart") && f.contains("#1"), "{f}");
    let prog = lines
        .iter()
        .find(|v| v["type"] == "program" && v["program"].as_str().unwrap().contains("no_attach"))
        .unwrap();
    assert_eq!(prog["verdict"], "different");
    assert!(
        prog["problems"][0]
            .as_str()
            .unwrap()
            .contains("`handle_exec`"),
        "{prog}"
    );
    // A ring too small for the workload's bursts: drops show as missing events.
    let full = maps_of(&lines, "full_ring")
        .into_iter()
        .find(|m| m["map"] == "opens")
        .unwrap();
    assert_eq!(full["verdict"], "different");
    assert!(
        full["migrated"].as_u64() < full["original"].as_u64(),
        "{full}"
    );
    assert!(
        full["finding"].as_str().unwrap().contains("a full ring"),
        "{full}"
    );
    // A reserved record the migration forgot to zero: its padding shows the ring's old bytes.
    let f = finding("reserve_unzeroed", "execs");
    assert!(
        f.contains("event #0") && f.contains("padding after field `is_root`"),
        "{f}"
    );
    let rejected = lines
        .iter()
        .find(|v| {
            v["type"] == "program" && v["program"].as_str().unwrap().contains("verifier_reject")
        })
        .unwrap();
    assert_eq!(rejected["verdict"], "different");
    let problem = rejected["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("does not load") && problem.contains("invalid indirect access to stack"),
        "the verifier log is shown: {problem}"
    );
    // The maps the wrong migrations did not touch still match.
    for p in ["field_unset", "wrong_size", "no_attach"] {
        assert_eq!(
            maps_of(&lines, p)
                .iter()
                .find(|m| m["map"] == "exit_events")
                .unwrap()["verdict"],
            "equivalent"
        );
    }
}

#[test]
fn hooks_the_workload_never_reaches_are_inconclusive() {
    // swapon and swapoff: the workload turns no swap area on or off.
    let _guests = shared();
    let out = run(&root(), &["verify", "fixtures/unreached_hook/input"]);
    assert_eq!(code(&out), 1, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("inconclusive") && stdout(&out).contains("no events"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn verify_that_cannot_run_exits_two_and_says_why() {
    let tmp = tempdir();
    let out = run(
        &root(),
        &[
            "verify",
            "--kernel",
            "/nonexistent/vmlinux",
            "fixtures/execsnoop/input",
        ],
    );
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("/nonexistent/vmlinux"),
        "{}",
        stderr(&out)
    );
    // A migrated source that does not build.
    let before = root().join("fixtures/verify-wrong/before/field_unset.bpf.c");
    let after = tmp.path().join("broken.bpf.c");
    std::fs::write(&after, "int oops(void) { return }\n").unwrap();
    let out = run(
        &root(),
        &[
            "verify",
            "--before",
            before.to_str().unwrap(),
            "--after",
            after.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("clang failed"), "{}", stderr(&out));
    // A guest that does not finish in time: stopped, with its console log.
    let out = run(
        &root(),
        &["verify", "--timeout", "1", "fixtures/execsnoop/input"],
    );
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("did not finish within") && stderr(&out).contains("guest console"),
        "{}",
        stderr(&out)
    );
    // Nothing to verify.
    let out = run(tmp.path(), &["verify", "."]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("nothing to verify"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_interrupted_verify_leaves_no_guest_and_no_files() {
    let _guests = shared();
    let tmp = tempdir();
    let child = std::process::Command::new(bin())
        .args(["verify", "fixtures/execsnoop/input"])
        .current_dir(root())
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the guest runs (its initramfs is in the work directory), then Ctrl-C.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let qemu_running = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| {
                        String::from_utf8_lossy(&c).contains(&*tmp.path().to_string_lossy())
                            && String::from_utf8_lossy(&c).contains("qemu")
                    })
                    .unwrap_or(false)
            })
    };
    while !qemu_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the guest never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!qemu_running(), "qemu outlived bpf-migrate");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

#[test]
fn the_cpu_a_callback_printed_is_kept_on_several_cpus() {
    // The migrated events carry the CPU in an added field: compared without it, each value a
    // CPU of the guest; the tool prints its CPU column alike, original and migrated.
    let lines = verify_all(&[("cpu_field", "equivalent")], &["--cpus", "2"]);
    let m = maps_of(&lines, "cpu_field")[0];
    assert!(
        m["finding"].as_str().unwrap().contains("added field `cpu`"),
        "{m}"
    );
}

#[test]
fn a_bcc_tool_of_user_space_probes_sees_the_workloads_bash_and_libc() {
    // Uprobes are set on files: the tool, in the host's root, must probe the libc and bash
    // that the workload's processes map (the guest's own, bound over the host's copies), or
    // it sees nothing and proves nothing.
    let _guests = alone();
    let lines = verify_json(&["--cpus", "2", "fixtures/bcc_userprobes/input"], 0);
    let t = tool_of(&lines, "lookwatch.py");
    assert_eq!(t["verdict"], "equivalent", "{t}");
    // `true` and `exit` typed into bash; localhost looked up.
    assert!(t["lines"]["matched"].as_u64().unwrap() >= 3, "{t}");
    let steps = lines.last().unwrap()["workload"].to_string();
    assert!(
        steps.contains("readline") && steps.contains("names"),
        "{steps}"
    );
}

#[test]
fn a_bcc_tool_of_database_probes_sees_the_workloads_queries() {
    // The tool names the query probes: its boot gets the host's PostgreSQL, started before
    // the tools with one connection open, whose backend's PID its command line is given.
    // Both versions print the `database` step's two slow queries.
    let _guests = alone();
    let lines = verify_json(
        &[
            "--cpus",
            "2",
            "--tool-args",
            "querywatch=-p {database-pid}",
            "fixtures/bcc_querywatch/input",
        ],
        0,
    );
    let t = tool_of(&lines, "querywatch.py");
    assert_eq!(t["verdict"], "equivalent", "{t}");
    assert_eq!(t["lines"]["matched"].as_u64(), Some(2), "{t}");
    let steps = lines.last().unwrap()["workload"].to_string();
    assert!(steps.contains("database"), "{steps}");
}

#[test]
fn a_bcc_tool_that_writes_its_c_with_percent_templates_prints_the_same_lines() {
    // Its C is written per probe from templates that Python's `%` fills in, its tables
    // named by format fields: migrated with its fields kept and the context's argument out
    // of the tuple, each probe's lines (the workload's kills and its sync) are the same.
    let _guests = alone();
    let lines = verify_json(
        &[
            "--cpus",
            "2",
            "--tool-args",
            "probewatch=t:syscalls:sys_enter_kill:sig p:ksys_sync",
            "fixtures/bcc_probewatch/input",
        ],
        0,
    );
    let t = tool_of(&lines, "probewatch.py");
    assert_eq!(t["verdict"], "equivalent", "{t}");
    let n = t["lines"]["matched"].as_u64().unwrap();
    assert!(n >= 2, "{t}");
}

#[test]
fn a_bcc_tool_of_nfs_client_probes_sees_the_workloads_nfs_io() {
    // The tool names the NFS client's functions: its boot loads NFS's modules, runs the
    // host's NFS server in the host's root and mounts its export before the tools start. The
    // `nfs` step's 16 writes and its reads print the same lines from both versions.
    let _guests = alone();
    let lines = verify_json(&["--cpus", "2", "fixtures/bcc_nfsops/input"], 0);
    let t = tool_of(&lines, "nfsops.py");
    assert_eq!(t["verdict"], "equivalent", "{t}");
    assert!(t["lines"]["matched"].as_u64().unwrap() >= 17, "{t}");
    let steps = lines.last().unwrap()["workload"].to_string();
    assert!(steps.contains("\"nfs\""), "{steps}");
}

#[test]
fn a_bcc_callback_a_factory_makes_prints_the_same_lines() {
    // The callback is the function a factory of the tool defines inside itself and returns,
    // closing over the options: migrated there (its `cpu` renamed), the tool prints the same
    // binds the workload's sockets make.
    let _guests = alone();
    let lines = verify_json(&["--cpus", "2", "fixtures/bcc_callback_factory/input"], 0);
    let t = tool_of(&lines, "bindwatch.py");
    assert_eq!(t["verdict"], "equivalent", "{t}");
    assert!(t["lines"]["matched"].as_u64().unwrap() > 1, "{t}");
}

#[test]
fn a_bcc_tool_keeps_its_cpu_column() {
    // A BCC tool printing the CPU of each kill(): migrated, its events carry the CPU in an
    // added field, and it prints the same lines on two CPUs.
    let _guests = alone();
    let lines = verify_json(&["--cpus", "2", "fixtures/bcc_cpu_column/input"], 0);
    let t = tool_of(&lines, "sigcpu.py");
    assert_eq!(t["verdict"], "equivalent", "{t}");
    assert!(t["lines"]["matched"].as_u64().unwrap() > 0, "{t}");
}

#[test]
fn a_libbpf_rs_crate_keeps_its_cpu_column() {
    // A Rust closure printing the CPU of each exec: migrated, it reads the CPU from the field
    // added to the event, at the offset C gives it (64, after 62 bytes of members), and prints
    // the same lines on two CPUs; the agent finds the field at that offset in the BTF.
    let lines = verify_json(&["--cpus", "2", "fixtures/rs_cpu_column/input"], 0);
    let t = tool_of(&lines, "rs_cpu_column");
    assert_eq!(t["verdict"], "equivalent", "{t}");
    assert!(t["lines"]["matched"].as_u64().unwrap() > 0, "{t}");
    let m = maps_of(&lines, "rs_cpu_column")[0];
    assert!(m["finding"].as_str().unwrap().contains("offset 64"), "{m}");
}

#[test]
fn several_cpus_and_a_kept_work_directory() {
    // With two guest CPUs, perf buffers deliver per CPU and the ring buffer in one order: the
    // comparison is as multisets. --keep leaves the objects and the guest's console log.
    // Files named bare, from their own directory: the migrated copy still finds the
    // program's header there (it once got `-I ""`).
    let out = run(
        &root().join("fixtures/twomaps/input"),
        &[
            "verify",
            "--cpus",
            "2",
            "--keep",
            "twomaps.bpf.c",
            "twomaps.c",
        ],
    );
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("twomaps.bpf.c: equivalent"), "{text}");
    let kept = text
        .lines()
        .find_map(|l| l.strip_prefix("work directory kept: "))
        .expect("the kept directory is named");
    let dir = std::path::Path::new(kept);
    assert!(dir.join("objs").join("p0-new.o").is_file());
    assert!(std::fs::read_dir(dir).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("console-")
    }));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_events_benchmark_runs_all_three_variants_and_loses_nothing() {
    // Not a timing test: the numbers go to the README from scripts/bench-events. This checks
    // that each variant loads, attaches and delivers every event it was asked for.
    let out = run(
        &root(),
        &[
            "verify",
            "--bench",
            "2000",
            "--format",
            "json",
            "benches/events",
        ],
    );
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let rows: Vec<Value> = json_lines(&out)
        .into_iter()
        .filter(|v| v["type"] == "bench")
        .collect();
    assert_eq!(rows.len(), 6, "{rows:?}");
    for r in &rows {
        assert_eq!(r["received"], 2000, "{r}");
        assert!(r["events_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    }
    for variant in ["perf", "copy", "reserve"] {
        assert_eq!(rows.iter().filter(|r| r["variant"] == variant).count(), 2);
    }
}

/// `--bench-start`, the baseline of the BCC time budget (scripts/bench-bcc): the original's
/// tool alone starts in a guest made as verify's, and its time to wait for events is
/// reported; a program whose tool cannot start says why, and the others go on. Not a timing
/// test: the figures go to the README.
#[test]
fn the_start_benchmark_times_the_original_tool_alone() {
    // And a program whose loader does not build: its reason, and the other is still timed.
    let bare = tempfile::Builder::new()
        .prefix("bpfm-test-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    let mut input = read_tree(&root().join("fixtures/execsnoop/input"));
    let loader = input.get_mut("execsnoop.c").unwrap();
    loader.insert_str(0, "#error this loader is broken on purpose\n");
    write_tree(bare.path(), &input);
    let lines = verify_json(
        &[
            "--bench-start",
            bare.path().to_str().unwrap(),
            "fixtures/execsnoop/input",
        ],
        0,
    );
    let starts: Vec<&Value> = lines.iter().filter(|v| v["type"] == "start").collect();
    assert_eq!(starts.len(), 2, "{lines:?}");
    let of = |dir: &str| {
        *starts
            .iter()
            .find(|v| v["program"].as_str().unwrap().contains(dir))
            .unwrap_or_else(|| panic!("no start of {dir}: {lines:?}"))
    };
    let timed = of("fixtures/execsnoop/input");
    assert!(timed["ready_ms"].as_u64().unwrap() > 0, "{lines:?}");
    assert!(timed["finding"].is_null(), "{lines:?}");
    let untimed = of(bare.path().to_str().unwrap());
    assert!(untimed["ready_ms"].is_null(), "{lines:?}");
    assert!(
        untimed["finding"]
            .as_str()
            .unwrap()
            .contains("does not build: cc failed"),
        "{lines:?}"
    );
    // Nothing but the starts: no verdict, no map compared.
    assert!(lines.iter().all(|v| v["type"] == "start"), "{lines:?}");
}

/// A program named by an absolute path is verified from a copy: the user's files are not
/// touched (the migrated text of `/abs/x.bpf.c` was once written over the original, which
/// then had no perf event array left to compare).
#[test]
fn verify_of_an_absolute_path_leaves_the_sources_alone() {
    // Outside the checkout (where bpf-migrate runs), so that its path is shown absolute.
    let tmp = tempfile::Builder::new()
        .prefix("bpfm-test-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    assert!(
        !tmp.path().starts_with(root()),
        "the temporary directory must lie outside the checkout for this test"
    );
    let mut input = read_tree(&root().join("fixtures/execsnoop/input"));
    // And written for libbpf 1.2 or later: verify builds BPF against the headers of the
    // libbpf it loads with, not the system's 1.1, where BPF_UPROBE does not exist.
    input.get_mut("execsnoop.bpf.c").unwrap().push_str(
        "\nstruct {\n\t__uint(type, BPF_MAP_TYPE_ARRAY);\n\t__uint(max_entries, 1);\n\
         \t__type(key, u32);\n\t__type(value, u64);\n} lookups SEC(\".maps\");\n\n\
         SEC(\"uprobe/libc.so.6:getaddrinfo\")\nint BPF_UPROBE(count_lookup, const char *node)\n{\n\
         \tu32 zero = 0;\n\tu64 *n = bpf_map_lookup_elem(&lookups, &zero);\n\n\
         \tif (n)\n\t\t__sync_fetch_and_add(n, 1);\n\treturn 0;\n}\n",
    );
    write_tree(tmp.path(), &input);
    let out = run(
        &root(),
        &["verify", "--format", "json", tmp.path().to_str().unwrap()],
    );
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(json_lines(&out).last().unwrap()["verdict"], "equivalent");
    assert_eq!(read_tree(tmp.path()), input);
}

/// A program with a big preallocated hash map (1M entries of 120 bytes, about 170 MiB each
/// load): six loads (events and tool) outgrow the guest's base 384 MiB, so the guest is sized
/// from the objects' maps. At the base size the migrated load failed with ENOMEM, reported as
/// "different".
#[test]
fn maps_bigger_than_the_base_guest_still_load() {
    let tmp = tempdir();
    let mut input = read_tree(&root().join("fixtures/execsnoop/input"));
    input.get_mut("execsnoop.bpf.c").unwrap().push_str(
        "\nstruct {\n\t__uint(type, BPF_MAP_TYPE_HASH);\n\t__uint(max_entries, 1 << 20);\n\
         \t__type(key, u32);\n\t__type(value, char[120]);\n} seen SEC(\".maps\");\n",
    );
    write_tree(tmp.path(), &input);
    let out = run(
        &root(),
        &["verify", "--format", "json", tmp.path().to_str().unwrap()],
    );
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let lines = json_lines(&out);
    let tool = tool_of(&lines, "execsnoop");
    assert_eq!(tool["verdict"], "equivalent", "{tool}");
}

/// A program whose original does not load in the guest, or does not build, is inconclusive,
/// with the loader's or compiler's message; the other programs of the run are still compared.
#[test]
fn an_original_that_does_not_load_leaves_the_others_compared() {
    let tmp = tempdir();
    write_tree(
        &tmp.path().join("good"),
        &read_tree(&root().join("fixtures/execsnoop/input")),
    );
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    // A hash map of no entries: the kernel refuses to create it.
    std::fs::write(
        bad.join("broken.bpf.c"),
        r#"#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0);
	__type(key, u32);
	__type(value, u64);
} seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} events SEC(".maps");

SEC("tp/sched/sched_process_exec")
int on_exec(void *ctx)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;
	u64 one = 1;

	bpf_map_update_elem(&seen, &pid, &one, BPF_ANY);
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"#,
    )
    .unwrap();
    std::fs::write(
        bad.join("broken.c"),
        r#"#include <stdio.h>
#include <bpf/libbpf.h>
#include "broken.skel.h"

static void on_event(void *ctx, int cpu, void *data, __u32 size)
{
	printf("%u\n", *(unsigned *)data);
}

int main(void)
{
	struct broken_bpf *skel = broken_bpf__open_and_load();
	struct perf_buffer *pb;

	if (!skel)
		return 1;
	pb = perf_buffer__new(bpf_map__fd(skel->maps.events), 8, on_event, NULL, NULL, NULL);
	while (pb && perf_buffer__poll(pb, 100) >= 0)
		;
	perf_buffer__free(pb);
	broken_bpf__destroy(skel);
	return 0;
}
"#,
    )
    .unwrap();
    // And one whose original does not build (a macro the installed headers lack).
    let nobuild = tmp.path().join("nobuild");
    std::fs::create_dir_all(&nobuild).unwrap();
    let source = std::fs::read_to_string(bad.join("broken.bpf.c")).unwrap();
    std::fs::write(
        nobuild.join("unbuilt.bpf.c"),
        source
            .replace("max_entries, 0", "max_entries, 64")
            .replace("u64 one = 1;", "u64 one = PID_SHIFT_FROM_NEWER_HEADERS;"),
    )
    .unwrap();
    std::fs::write(
        nobuild.join("unbuilt.c"),
        std::fs::read_to_string(bad.join("broken.c"))
            .unwrap()
            .replace("broken", "unbuilt"),
    )
    .unwrap();
    let out = run(
        tmp.path(),
        &["verify", "--format", "json", "good", "bad", "nobuild"],
    );
    assert_eq!(code(&out), 1, "{}\n{}", stdout(&out), stderr(&out));
    let lines = json_lines(&out);
    let program = |name: &str| {
        lines
            .iter()
            .find(|v| v["type"] == "program" && v["program"].as_str().unwrap().contains(name))
            .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
    };
    for (name, problem) in [
        ("broken", "the original does not load"),
        ("unbuilt", "the original does not build"),
    ] {
        let p = program(name);
        assert_eq!(p["verdict"], "inconclusive", "{p}");
        assert!(p["problems"][0].as_str().unwrap().contains(problem), "{p}");
    }
    assert_eq!(program("execsnoop")["verdict"], "equivalent");
    // One program a boot: the boot of the one that does not build fails as a whole, and
    // says so; the other boot is not affected.
    let out = run(
        tmp.path(),
        &[
            "verify",
            "--format",
            "json",
            "--per-boot",
            "1",
            "good",
            "nobuild",
        ],
    );
    assert_eq!(code(&out), 1, "{}\n{}", stdout(&out), stderr(&out));
    let lines = json_lines(&out);
    let unbuilt = lines
        .iter()
        .find(|v| v["type"] == "program" && v["program"].as_str().unwrap().contains("unbuilt"))
        .unwrap();
    let why = unbuilt["problems"][0].as_str().unwrap();
    assert!(
        why.contains("boot 2 of 2") && why.contains("the original does not build"),
        "{why}"
    );
    assert_eq!(tool_of(&lines, "execsnoop")["verdict"], "equivalent");
}

#[test]
fn lost_events_are_still_reported_after_migration() {
    // burstlat's slow reader falls behind three bursts of large records: the original's perf
    // buffer (one page) and the migrated ring (32 KiB, which still holds each burst for the
    // agent) both drop records. Alone: a loss is told when the reader gets to it, and beside
    // other guests that came after the workload's window once (CI, the perf path under compat).
    let _guests = alone();
    losses_reported_unless_dropped("fixtures/burstlat/input");
    // A 4 KiB ring holds a fraction of a burst: the agent's reader falls behind the migrated
    // program too, whose lost counter says how many it dropped; the missing events are then
    // the ring's fill, not the migration's, and say so.
    let lines = verify_json(
        &[
            "--ringbuf-size",
            "4K",
            "--workload",
            BURST,
            "--events-only",
            "fixtures/burstlat/input",
        ],
        1,
    );
    let m = maps_of(&lines, "burstlat")[0];
    assert_eq!(m["verdict"], "inconclusive", "{m}");
    let f = m["finding"].as_str().unwrap();
    assert!(
        f.contains("have no counterpart") && f.contains("the migrated buffer lost"),
        "{f}"
    );
    // Its libbpf-rs twin: the ring's sample callback passes new losses to the lost callback.
    losses_reported_unless_dropped("fixtures/rs_burstlat/input");
    // --strategy compat: the perf path's own lost callback, and on the ring path the one fed
    // from the counter.
    let lines = verify_json(
        &[
            "--ringbuf-size",
            "32K",
            "--workload",
            BURST,
            "--strategy",
            "compat",
            "fixtures/burstlat/input",
        ],
        0,
    );
    for path in ["ringbuf", "perfbuf"] {
        let of = on_path(&lines, "burstlat", path);
        let t = of
            .iter()
            .find(|v| v["type"] == "tool")
            .expect("a tool line");
        assert_eq!(t["verdict"], "equivalent", "{path}: {t}");
        assert!(
            t["loss_reports"]["migrated"].as_u64().unwrap() > 0,
            "{path}: {t}"
        );
    }
}

#[test]
fn a_bcc_tools_lost_callback_still_reports_after_migration() {
    // The same with a BCC tool: its lost_cb is called from the ring's counter after each poll.
    let _guests = alone();
    losses_reported_unless_dropped("fixtures/bcc_burstlat/input");
}

/// One more burst after the workload's: a perf buffer tells of a burst's losses with the next
/// record it takes, so the last burst's go untold; this one tells the previous burst's.
const BURST: &str = "kill -0 1";

/// Verifies the burstlat-like tool at `path` with a 32 KiB ring: both versions say they lost
/// records; with the lost-sample report dropped (--lost drop) the migrated tool goes silent,
/// which is a difference.
fn losses_reported_unless_dropped(path: &str) {
    let lines = verify_json(&["--ringbuf-size", "32K", "--workload", BURST, path], 0);
    let t = tool_of(&lines, "burstlat");
    assert_eq!(t["verdict"], "equivalent", "{t}");
    let l = &t["loss_reports"];
    assert!(l["original"].as_u64().unwrap() > 0, "{t}");
    assert!(l["migrated"].as_u64().unwrap() > 0, "{t}");
    let lines = verify_json(
        &[
            "--ringbuf-size",
            "32K",
            "--workload",
            BURST,
            "--lost",
            "drop",
            path,
        ],
        1,
    );
    let t = tool_of(&lines, "burstlat");
    assert_eq!(t["verdict"], "different", "{t}");
    assert!(t["finding"].as_str().unwrap().contains("never did"), "{t}");
}
