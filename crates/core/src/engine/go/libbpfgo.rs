//! libbpfgo: `m.InitPerfBuf("events", eventsCh, lostCh, pages)` becomes
//! `m.InitRingBuf("events", eventsCh)`; `*bpf.PerfBuffer` becomes `*bpf.RingBuffer`, whose
//! `Start`, `Poll`, `Stop` and `Close` are the same. The lost channel is no longer written: the
//! `select` cases that only receive from it go with its declaration when nothing else uses
//! it; otherwise it stays, with a note.

use tree_sitter::Node;

use super::super::context::{Analysis, Consumer, Report};
use super::super::options::{Lost, Options};
use super::{GoFile, ancestor, call_args, imports};
use crate::lang::NodeExt;
use crate::rules::Rule;

/// The import paths of libbpfgo: its own repository, and the one it had inside tracee.
pub const PATHS: &[&str] = &[
    "github.com/aquasecurity/libbpfgo",
    "github.com/aquasecurity/tracee/libbpfgo",
];

pub(super) fn analyze(g: &mut GoFile, opts: &Options, a: &mut Analysis) {
    let Some(spec) = PATHS.iter().find_map(|p| imports::spec_of(g, p)) else {
        return;
    };
    let pkg = imports::name_of(g, spec);
    for sel in g.of_kind("selector_expression") {
        if sel.field("field").map(|f| g.text(f)) != Some("InitPerfBuf") {
            continue;
        }
        match sel.parent().filter(|p| {
            p.kind() == "call_expression" && p.field("function").is_some_and(|f| f.id() == sel.id())
        }) {
            Some(call) => init_perf_buf(g, opts, a, call, sel),
            None => g.report(
                sel.start_byte(),
                Rule::UnsupportedForm,
                "`InitPerfBuf` is used here without being called",
                "migrate this reader by hand",
            ),
        }
    }
    // `*bpf.PerfBuffer` in declarations.
    if let Some(pkg) = pkg {
        for t in g.of_kind("qualified_type") {
            if g.text(t) == format!("{pkg}.PerfBuffer")
                && let Some(name) = t.field("name")
            {
                g.replace(
                    name.start_byte(),
                    name.end_byte(),
                    "RingBuffer",
                    Rule::GoInitPerfBuf,
                );
            }
        }
    }
}

/// One `InitPerfBuf(name, events, lost, pages)` call.
fn init_perf_buf(g: &mut GoFile, opts: &Options, a: &mut Analysis, call: Node, sel: Node) {
    let args = call_args(call);
    if args.len() != 4 {
        g.report(
            call.start_byte(),
            Rule::UnsupportedForm,
            format!(
                "`InitPerfBuf` is called with {} arguments, not 4",
                args.len()
            ),
            "migrate this reader by hand",
        );
        return;
    }
    let name = args[0];
    if name.kind() != "interpreted_string_literal" {
        g.report(
            name.start_byte(),
            Rule::UnresolvedMap,
            format!("cannot tell which BPF map `{}` names", g.text(name)),
            "bpf-migrate follows a map name written as a string in the call",
        );
        return;
    }
    let map = g.text(name).trim_matches('"').to_string();
    if let Some(at) = resized(g, &map) {
        g.report(
            at,
            Rule::MapOtherUse,
            format!("the map `{map}` is resized here: a perf event array's size is its number of CPUs, a ring buffer's its bytes, so the same call would make another ring (or one that does not load)"),
            "drop the resize (the ring's size is in the BPF source; --ringbuf-size sets it), then run bpf-migrate again, or migrate by hand",
        );
        return;
    }
    let lost = args[2];
    if lost.kind() == "identifier" {
        if !settle_lost_channel(g, opts, lost) {
            return;
        }
    } else if g.text(lost) != "nil" {
        // A channel held elsewhere (`t.lostEvChannel`): it stays, unwritten.
        g.report(
            lost.start_byte(),
            Rule::LostCallback,
            format!("a ring buffer has no lost channel: `{}` is no longer given to the buffer, so it stays, and what receives from it never runs; records that do not fit are dropped without a word", g.text(lost)),
            "to count drops, have the BPF program count failed bpf_ringbuf_output() calls in a per-CPU array and print it from the reader",
        );
    }
    let pages = g.int_value(args[3]);
    if pages.is_none() {
        g.size_chosen_at_run_time(args[3], "page count", Rule::GoInitPerfBuf);
    }
    if let Some(f) = sel.field("field") {
        g.replace(
            f.start_byte(),
            f.end_byte(),
            "InitRingBuf",
            Rule::GoInitPerfBuf,
        );
    }
    g.replace(
        args[1].end_byte(),
        args[3].end_byte(),
        "",
        Rule::GoInitPerfBuf,
    );
    a.consumers.push(Consumer {
        map,
        offset: call.start_byte(),
        pages,
        lost_counted: false,
        bpf2go: false,
    });
}

/// Where the map `map` is resized before load: a call whose function says so (`Resize`,
/// `SetMaxEntries`, a helper `ResizeMap`) given the map's name, or such a method called in a
/// file that looks the map up by name (`m.GetMap("events")`).
fn resized(g: &GoFile, map: &str) -> Option<usize> {
    let quoted = format!("\"{map}\"");
    let calls = g.of_kind("call_expression");
    let name_of = |c: Node| {
        let f = c.field("function")?;
        let f = f.field("field").unwrap_or(f);
        Some(g.text(f).to_ascii_lowercase())
    };
    let resizing =
        |c: Node| name_of(c).is_some_and(|n| n.contains("resize") || n.contains("maxentries"));
    let looked_up = calls.iter().any(|&c| {
        name_of(c).as_deref() == Some("getmap")
            && call_args(c).first().is_some_and(|a| g.text(*a) == quoted)
    });
    calls
        .iter()
        .copied()
        .filter(|&c| resizing(c))
        .find(|&c| looked_up || call_args(c).iter().any(|a| g.text(*a) == quoted))
        .map(|c| c.start_byte())
}

/// The lost channel `ch`, which the ring buffer no longer writes: when its other uses are
/// its declaration (`ch := make(chan uint64)`) and `case x := <-ch:` cases of `select`
/// statements, they go; otherwise they stay. A note either way; false after a refusal.
fn settle_lost_channel(g: &mut GoFile, opts: &Options, ch: Node) -> bool {
    let name = g.text(ch);
    let uses: Vec<Node> = g
        .of_kind("identifier")
        .into_iter()
        .filter(|n| g.text(*n) == name && n.id() != ch.id())
        .collect();
    let mut decl = None;
    let mut cases = Vec::new();
    let mut other = false;
    for u in &uses {
        let stmt = u.parent().and_then(|l| l.parent());
        if let Some(s) = stmt.filter(|s| {
            s.kind() == "short_var_declaration"
                && s.field("left").is_some_and(|l| l.named_child_count() == 1)
                && s.field("right")
                    .is_some_and(|r| g.text(r).starts_with("make(chan "))
        }) {
            decl = Some(s);
        } else if let Some(case) = receive_case(*u) {
            cases.push(case);
        } else {
            other = true;
        }
    }
    let why = match opts.lost {
        Lost::Drop => "(--lost drop)",
        Lost::Count => {
            "(counting a ring buffer's drops is built for libbpf C loaders, not yet for Go readers)"
        }
    };
    let removable = !other && decl.is_some();
    let what = if removable {
        "it goes, with the select cases that received from it"
    } else {
        "it stays, and what receives from it never runs"
    };
    g.report(
        ch.start_byte(),
        Rule::LostCallback,
        format!("a ring buffer has no lost channel: `{name}` is no longer given to the buffer, so {what}; records that do not fit are dropped without a word {why}"),
        "to count drops, have the BPF program count failed bpf_ringbuf_output() calls in a per-CPU array and print it from the reader",
    );
    if removable {
        for c in cases {
            g.delete_lines(c, Rule::LostCallback);
        }
        if let Some(d) = decl {
            g.delete_lines(d, Rule::LostCallback);
        }
    }
    true
}

/// The `case x := <-ch:` (or `case <-ch:`) of a `select` that identifier `u` is the channel
/// of.
fn receive_case(u: Node) -> Option<Node> {
    let unary = u.parent().filter(|p| p.kind() == "unary_expression")?;
    let case = ancestor(unary, "communication_case")?;
    let comm = case.field("communication")?;
    (comm.start_byte() <= unary.start_byte() && unary.end_byte() <= comm.end_byte()).then_some(case)
}

#[cfg(test)]
mod tests {
    use crate::engine::testkit::{check_refused, run};
    use crate::engine::{Options, testkit::LICENSE};
    use crate::rules::Rule;

    const BPF: &str = "#include \"vmlinux.h\"\n#include <bpf/bpf_helpers.h>\n\nstruct {\n\t__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);\n\t__uint(key_size, sizeof(u32));\n\t__uint(value_size, sizeof(u32));\n} events SEC(\".maps\");\n\nSEC(\"tp/syscalls/sys_enter_openat\")\nint on_open(void *ctx)\n{\n\tu32 pid = bpf_get_current_pid_tgid() >> 32;\n\n\tbpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &pid, sizeof(pid));\n\treturn 0;\n}\n";

    /// `main.go`, loading `x.bpf.o` with libbpfgo, with `body` after the module is loaded.
    fn reader(body: &str) -> String {
        format!(
            "package main\n\nimport (\n\t\"fmt\"\n\t\"log\"\n\n\tbpf \"github.com/aquasecurity/libbpfgo\"\n)\n\nfunc main() {{\n\tm, err := bpf.NewModuleFromFile(\"x.bpf.o\")\n\tif err != nil {{\n\t\tlog.Fatal(err)\n\t}}\n\tdefer m.Close()\n{body}}}\n"
        )
    }

    fn migrate(go: &str) -> (String, Vec<crate::report::Diagnostic>) {
        let bpf = format!("{BPF}{LICENSE}");
        let (changed, diags) = run(&[("x.bpf.c", &bpf), ("main.go", go)], &Options::default());
        let out = changed
            .get("main.go")
            .cloned()
            .unwrap_or_else(|| panic!("{diags:?}"));
        (out, diags)
    }

    #[test]
    fn the_perf_buffer_becomes_a_ring_and_its_lost_channel_goes() {
        let go = reader(
            "\tevents := make(chan []byte)\n\tlost := make(chan uint64)\n\tpb, err := m.InitPerfBuf(\"events\", events, lost, 64)\n\tif err != nil {\n\t\tlog.Fatal(err)\n\t}\n\tpb.Start()\n\tdefer pb.Stop()\n\tfor {\n\t\tselect {\n\t\tcase data := <-events:\n\t\t\tlog.Printf(\"%x\", data)\n\t\tcase n := <-lost:\n\t\t\tfmt.Println(\"lost\", n)\n\t\t}\n\t}\n",
        );
        let (out, diags) = migrate(&go);
        let want = reader(
            "\tevents := make(chan []byte)\n\tpb, err := m.InitRingBuf(\"events\", events)\n\tif err != nil {\n\t\tlog.Fatal(err)\n\t}\n\tpb.Start()\n\tdefer pb.Stop()\n\tfor {\n\t\tselect {\n\t\tcase data := <-events:\n\t\t\tlog.Printf(\"%x\", data)\n\t\t}\n\t}\n",
        )
        .replace("\t\"fmt\"\n", "");
        assert_eq!(out, want);
        assert!(
            diags
                .iter()
                .any(|d| d.rule == Rule::PerfMapDef && d.message.contains("64 pages")),
            "{diags:?}"
        );
        assert!(
            diags.iter().any(|d| d.rule == Rule::LostCallback),
            "{diags:?}"
        );
        assert!(
            !diags
                .iter()
                .any(|d| d.message.contains("chosen at run time")),
            "{diags:?}"
        );
        // A lost channel held in a struct: it stays, and a note says it is written no more.
        let held = go
            .replace(
                "\tlost := make(chan uint64)\n",
                "\tt := struct{ lost chan uint64 }{make(chan uint64)}\n",
            )
            .replace("events, lost, 64)", "events, t.lost, 64)")
            .replace("case n := <-lost:", "case n := <-t.lost:");
        let (out, diags) = migrate(&held);
        assert!(out.contains("m.InitRingBuf(\"events\", events)\n"), "{out}");
        assert!(
            diags.iter().any(|d| d.rule == Rule::LostCallback
                && d.message
                    .contains("`t.lost` is no longer given to the buffer, so it stays")),
            "{diags:?}"
        );
        // A page count from a flag: gone from the call, and said to apply no more.
        let (out, diags) = migrate(&go.replace("lost, 64)", "lost, *pageCount)"));
        assert!(out.contains("m.InitRingBuf(\"events\", events)\n"), "{out}");
        assert!(
            diags.iter().any(|d| d.rule == Rule::GoInitPerfBuf
                && d.message
                    == "the page count `*pageCount` is chosen at run time and no longer applies"),
            "{diags:?}"
        );
    }

    #[test]
    fn a_lost_channel_read_elsewhere_stays_and_perf_buffer_types_follow() {
        let go = reader(
            "\tevents := make(chan []byte)\n\tlost := make(chan uint64)\n\tgo func() {\n\t\tfor n := range lost {\n\t\t\tfmt.Println(\"lost\", n)\n\t\t}\n\t}()\n\tpb, _ := m.InitPerfBuf(\"events\", events, lost, 64)\n\trun(pb, events)\n}\n\nfunc run(pb *bpf.PerfBuffer, events chan []byte) {\n\tpb.Poll(300)\n\tfor data := range events {\n\t\tlog.Print(data)\n\t}\n",
        );
        let (out, _) = migrate(&go);
        assert!(out.contains("\tlost := make(chan uint64)\n"), "{out}");
        assert!(
            out.contains("\tpb, _ := m.InitRingBuf(\"events\", events)\n"),
            "{out}"
        );
        assert!(
            out.contains("func run(pb *bpf.RingBuffer, events chan []byte) {"),
            "{out}"
        );
    }

    /// A resize of the map means CPUs for the perf event array, bytes for a ring: refused,
    /// through a helper given the name or a method of the map looked up by name.
    #[test]
    fn a_resized_map_is_refused() {
        for resize in [
            "\tcommon.ResizeMap(m, \"events\", 8192)\n",
            "\tev, _ := m.GetMap(\"events\")\n\tev.Resize(8192)\n",
        ] {
            let body = format!(
                "{resize}\tevents := make(chan []byte)\n\tpb, _ := m.InitPerfBuf(\"events\", events, nil, 64)\n\tpb.Poll(300)\n\t_ = fmt.Sprint()\n"
            );
            let bpf = format!("{BPF}{LICENSE}");
            let (changed, diags) = run(
                &[("x.bpf.c", &bpf), ("main.go", &reader(&body))],
                &Options::default(),
            );
            assert!(changed.is_empty(), "{changed:?}");
            assert!(
                diags
                    .iter()
                    .any(|d| d.rule == Rule::MapOtherUse && d.message.contains("is resized here")),
                "{resize}: {diags:?}"
            );
        }
    }

    #[test]
    fn a_map_name_that_is_no_string_is_refused() {
        let bpf = format!("{BPF}{LICENSE}");
        let go = reader(
            "\tname := pick()\n\tevents := make(chan []byte)\n\tpb, _ := m.InitPerfBuf(name, events, nil, 64)\n\tpb.Poll(300)\n\t_ = fmt.Sprint()\n",
        );
        check_refused(
            &[("x.bpf.c", &bpf), ("main.go", &go)],
            Rule::UnresolvedMap,
            "`name`",
        );
    }
}
