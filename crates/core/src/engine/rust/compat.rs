//! `--strategy compat` for libbpf-rs readers: the crate keeps its perf buffer code. Each
//! `PerfBufferBuilder::new(&skel.maps.MAP)...build()` chain names `CompatBufferBuilder`
//! instead, a builder with the same methods whose `build` opens the buffer the map's type
//! needs, and the callbacks stay as they are; before the skeleton is loaded,
//! `compat_use_perf(&mut open_skel.maps.MAP)` asks libbpf whether the kernel has a ring buffer
//! and, where it has none, makes the map a perf event array, and the BPF side's flag
//! `MAP_use_perf` (`engine::compat`) is set in `.rodata`. Both are written once at the end of
//! the file (`finish`). Generated code for libbpf-rs 0.25 and later (a generic
//! `PerfBufferBuilder`, `Option` skeleton data).

use syn::Expr;
use syn::spanned::Spanned;

use super::Rs;
use super::builder::Chain;
use super::callbacks::cpu_read;
use super::collect::{Collect, Func, load_of, local_named, make_mut};
use super::lost_counter::{self, skel_map};
use super::maps::enclosing_fn;
use super::pages::page_count;
use crate::edit::Edit;
use crate::engine::compat::FLAG_SUFFIX;
use crate::engine::context::{Analysis, Consumer, Report};
use crate::engine::edits::insert_after;
use crate::engine::options::Lost;
use crate::rules::Rule;
use crate::source::{indent_at, line_start};

/// The builder the chains name instead of `PerfBufferBuilder`.
pub(super) const BUILDER: &str = "CompatBufferBuilder";
/// The buffer it builds, for `PerfBuffer` types.
pub(super) const BUFFER: &str = "CompatBuffer";
/// The function that picks the map's type before load.
const PICK: &str = "compat_use_perf";

/// Calls of the perf buffer that the shim's buffer does not have.
const NOT_IN_SHIM: &[&str] = &["consume_buffer", "buffer_cnt", "buffer_fd"];

/// Whether a file holds the shim (it was migrated).
pub(super) fn has_shim(src: &str) -> bool {
    src.contains("struct CompatBufferBuilder<")
}

/// Where a skeleton is loaded: `let SKEL = OPEN.load()...;`, the maps to pick before it.
pub(super) struct Pick {
    /// The `let` statement.
    stmt: (usize, usize),
    /// The receiver of `load()`, and whether it is a variable (else it is bound to one first).
    open: (usize, usize),
    open_is_var: bool,
    /// The function holding the load.
    func: (usize, usize),
    maps: Vec<String>,
}

/// The reason a chain cannot be migrated under compat, as a refusal at `at`.
fn refuse(rs: &mut Rs, at: usize, why: String) {
    rs.report(
        at,
        Rule::CompatUnsupported,
        format!("--strategy compat cannot migrate this: {why}"),
        "--strategy compat migrates libbpf-rs readers (0.25 and later) whose maps are skeleton fields (`&skel.maps.NAME`) and whose skeleton is loaded in the same file; migrate with the default strategy (ring buffer only), or by hand",
    );
}

/// One chain under compat: the builder renamed, a kept lost callback's counter given to it,
/// the map recorded for the pick before its skeleton's load; nothing when it is refused.
pub(super) fn rewrite_chain(
    rs: &mut Rs,
    col: &Collect,
    c: &Chain,
    func: Option<Func>,
    map: String,
    sample: &Expr,
    a: &mut Analysis,
) {
    let at = c.whole.0;
    let Some((skel, _)) = skel_map(rs, c.map).filter(|(_, n)| *n == map) else {
        let why = format!(
            "the map `{}` is not a skeleton's field (`&skel.maps.{map}`), which must be made a perf event array before load where the kernel has no ring buffer",
            rs.text(c.map.span())
        );
        return refuse(rs, at, why);
    };
    match cpu_read(rs, col, sample, func) {
        Ok(None) => {}
        Ok(Some(u)) => {
            let why = "the sample callback reads the CPU, which the ring path cannot give it (it gets -1)".to_string();
            return refuse(rs, u, why);
        }
        Err(why) => {
            return refuse(
                rs,
                at,
                format!(
                    "{why}, so whether it reads the CPU (which the ring path cannot give it) cannot be told"
                ),
            );
        }
    }
    if let Some((n, u)) = NOT_IN_SHIM
        .iter()
        .find_map(|n| Some((n, *rs.uses_in(n, 0, rs.src().len()).first()?)))
    {
        return refuse(
            rs,
            u,
            format!(
                "the file calls the perf buffer's `{n}`, which a ring buffer has no counterpart of"
            ),
        );
    }
    let taken = [BUILDER, BUFFER, PICK]
        .into_iter()
        .find(|n| !rs.uses_in(n, 0, rs.src().len()).is_empty());
    if let Some(n) = taken {
        return refuse(rs, at, format!("the name `{n}` it needs is taken"));
    }
    let load = match find_load(rs, col, &skel, func, at) {
        Ok(l) => l,
        Err(why) => return refuse(rs, at, why),
    };
    let mut lost_counted = false;
    let mut counter = None;
    if let Some(l) = c.lost {
        if rs.opts.lost == Lost::Count {
            match lost_counter::counter(rs, c.map, &map, l) {
                Ok(text) => {
                    counter = Some(text);
                    lost_counted = true;
                }
                Err(why) => {
                    return refuse(
                        rs,
                        rs.range(l.span()).0,
                        format!(
                            "the lost callback cannot be told on the ring path what the ring could not take: {why} (`--lost drop` keeps it for the perf path only)"
                        ),
                    );
                }
            }
        } else {
            rs.report(
                rs.range(l.span()).0,
                Rule::CompatLoader,
                "the lost-sample callback is called on the perf path only: under --lost drop the ring path does not count what it could not take",
                "--lost count (the default) feeds it on the ring path too",
            );
        }
    }
    let Some(pages) = page_count(rs, col, c, func, true) else {
        return;
    };
    rs.edits.push(Edit::replace(
        c.builder.0,
        c.builder.1,
        BUILDER,
        Rule::CompatLoader,
    ));
    if let Some(counter) = counter {
        // On a line of its own where the chain's next call is.
        let after = &rs.src()[c.new_end..];
        let ws = &after[..after.len() - after.trim_start().len()];
        let lead = ws.rfind('\n').map_or("", |i| &ws[i..]);
        let text = format!("{lead}.lost_counter({counter})");
        rs.edits
            .push(Edit::insert(c.new_end, text, Rule::CompatLoader));
    }
    match rs.compat_picks.iter_mut().find(|p| p.stmt == load.stmt) {
        Some(p) if p.maps.contains(&map) => {}
        Some(p) => p.maps.push(map.clone()),
        None => rs.compat_picks.push(Pick {
            maps: vec![map.clone()],
            ..load
        }),
    }
    rs.compat_counted |= lost_counted;
    a.consumers.push(Consumer {
        map,
        offset: at,
        pages,
        lost_counted,
        bpf2go: false,
    });
}

/// The load of skeleton `skel`: `let skel = OPEN.load()...;` in the chain's function, else
/// the one load of the file (the chain reads a skeleton passed to it).
fn find_load(
    rs: &Rs,
    col: &Collect,
    skel: &str,
    func: Option<Func>,
    at: usize,
) -> Result<Pick, String> {
    let here = func
        .and_then(|f| local_named(rs, col, f, skel, at))
        .filter(|l| load_of(l).is_some());
    let local = match here {
        Some(l) => l,
        None => {
            let loads: Vec<_> = col
                .locals
                .iter()
                .copied()
                .filter(|l| load_of(l).is_some())
                .collect();
            match loads[..] {
                [l] => l,
                [] => {
                    return Err(format!(
                        "the skeleton `{skel}` is not loaded in this file as `let {skel} = open_skel.load()...;`, before which its maps must be picked"
                    ));
                }
                _ => {
                    return Err(format!(
                        "the file loads {} skeletons, and `{skel}` is not one loaded in the function that reads it",
                        loads.len()
                    ));
                }
            }
        }
    };
    let stmt = rs.range(local.span());
    let f = enclosing_fn(rs, col, stmt).ok_or("the skeleton is not loaded in a function")?;
    let open = load_of(local).expect("a load");
    Ok(Pick {
        stmt,
        open: rs.range(open.span()),
        open_is_var: matches!(open, Expr::Path(p) if p.path.get_ident().is_some()),
        func: rs.range(f.span),
        maps: Vec::new(),
    })
}

/// After the chains: before each load, the picks of its maps (the open skeleton bound to a
/// variable first where the load's receiver is an expression, a variable made `mut`), and the
/// shim once at the end of the file.
pub(super) fn finish(rs: &mut Rs, col: &Collect) {
    if rs.compat_picks.is_empty() {
        return;
    }
    let src = rs.src().to_string();
    for p in std::mem::take(&mut rs.compat_picks) {
        let indent = indent_at(&src, p.stmt.0).to_string();
        let mut text = String::new();
        let open = if p.open_is_var {
            let open = src[p.open.0..p.open.1].to_string();
            if let Some(f) = enclosing_fn(rs, col, (p.stmt.0, p.stmt.0))
                && let Some(l) = local_named(rs, col, f, &open, p.stmt.0)
            {
                make_mut(rs, l);
            }
            open
        } else {
            let var = ["open_skel", "compat_open_skel"]
                .into_iter()
                .find(|n| rs.uses_in(n, p.func.0, p.func.1).is_empty())
                .unwrap_or("compat_open_skel");
            text += &format!("{indent}let mut {var} = {};\n", &src[p.open.0..p.open.1]);
            rs.edits
                .push(Edit::replace(p.open.0, p.open.1, var, Rule::CompatLoader));
            var.to_string()
        };
        for m in &p.maps {
            let flag = format!("{m}{FLAG_SUFFIX}");
            text += &format!(
                "{indent}// Where the kernel has no ring buffer, `{m}` becomes a perf event array, and the\n\
                 {indent}// BPF program is told so (added by bpf-migrate --strategy compat).\n\
                 {indent}if {PICK}(&mut {open}.maps.{m}) {{\n\
                 {indent}    let rodata = {open}.maps.rodata_data.as_deref_mut();\n\
                 {indent}    rodata.expect(\"the BPF program's .rodata\").{flag} = 1;\n\
                 {indent}}}\n"
            );
        }
        // After the ring's sizing (`pages`), where that goes before the same load.
        insert_after(
            &mut rs.edits,
            line_start(&src, p.stmt.0),
            text,
            Rule::CompatLoader,
        );
    }
    // After `lost_counted`, when it was written there.
    let shim = shim(rs.compat_counted);
    insert_after(&mut rs.edits, src.len(), shim, Rule::CompatLoader);
}

/// What is written at the end of the file; `counted`: a chain gives the builder the counter
/// of a kept lost callback (`lost_counted`, `lost_counter`, is written too).
fn shim(counted: bool) -> String {
    let (field, init, method, ring_add) = if counted {
        (
            "\n    lost_counter: Option<libbpf_rs::Result<libbpf_rs::MapHandle>>,",
            "\n            lost_counter: None,",
            r#"

    /// The map where the BPF program counts what the ring could not take.
    fn lost_counter(mut self, counter: libbpf_rs::Result<libbpf_rs::MapHandle>) -> Self {
        self.lost_counter = Some(counter);
        self
    }"#,
            r#"match (self.lost_counter, self.lost_cb) {
            (Some(counter), Some(lost)) => {
                ring.add(self.map, lost_counted(counter, lost, sample))?
            }
            _ => ring.add(self.map, sample)?,
        };"#,
        )
    } else {
        ("", "", "", "ring.add(self.map, sample)?;")
    };
    format!(
        r#"
/// Before load: where the kernel has no ring buffer (before Linux 5.8, without a backport),
/// makes `map` a perf event array and says so. It asks libbpf's probe of the feature, not the
/// kernel's version (added by bpf-migrate --strategy compat).
fn compat_use_perf(map: &mut libbpf_rs::OpenMapMut<'_>) -> bool {{
    if libbpf_rs::MapType::RingBuf.is_supported().unwrap_or(false) {{
        return false;
    }}
    // These fail only on a map already created, which an open skeleton's is not.
    let _ = map.set_type(libbpf_rs::MapType::PerfEventArray);
    let _ = map.set_key_size(4);
    let _ = map.set_value_size(4);
    let _ = map.set_max_entries(0);
    true
}}

/// The perf buffer's builder, whose `build` opens a ring buffer, or a perf buffer where
/// `compat_use_perf` made the map a perf event array (added by bpf-migrate --strategy compat).
/// On the ring path the sample callback is given CPU -1, and the lost callback is told what the
/// ring could not take only where the BPF program counts it.
#[allow(dead_code)]
struct CompatBufferBuilder<'a, 'b, M: libbpf_rs::MapCore> {{
    map: &'a M,
    pages: usize,
    sample_cb: Option<Box<dyn FnMut(i32, &[u8]) + 'b>>,
    lost_cb: Option<Box<dyn FnMut(i32, u64) + 'b>>,{field}
}}

#[allow(dead_code)]
impl<'a, 'b, M: libbpf_rs::MapCore> CompatBufferBuilder<'a, 'b, M> {{
    fn new(map: &'a M) -> Self {{
        Self {{
            map,
            pages: 64,
            sample_cb: None,
            lost_cb: None,{init}
        }}
    }}

    fn sample_cb(mut self, cb: impl FnMut(i32, &[u8]) + 'b) -> Self {{
        self.sample_cb = Some(Box::new(cb));
        self
    }}

    fn lost_cb(mut self, cb: impl FnMut(i32, u64) + 'b) -> Self {{
        self.lost_cb = Some(Box::new(cb));
        self
    }}

    fn pages(mut self, pages: usize) -> Self {{
        self.pages = pages;
        self
    }}{method}

    fn build(self) -> libbpf_rs::Result<CompatBuffer<'b>> {{
        if self.map.map_type() == libbpf_rs::MapType::PerfEventArray {{
            let mut perf = libbpf_rs::PerfBufferBuilder::new(self.map).pages(self.pages);
            if let Some(cb) = self.sample_cb {{
                perf = perf.sample_cb(cb);
            }}
            if let Some(cb) = self.lost_cb {{
                perf = perf.lost_cb(cb);
            }}
            return perf.build().map(CompatBuffer::Perf);
        }}
        let mut sample_cb = self.sample_cb;
        let sample = move |data: &[u8]| {{
            if let Some(cb) = sample_cb.as_mut() {{
                cb(-1, data);
            }}
            0
        }};
        let mut ring = libbpf_rs::RingBufferBuilder::new();
        {ring_add}
        ring.build().map(CompatBuffer::Ring)
    }}
}}

/// The buffer `CompatBufferBuilder` opened (added by bpf-migrate --strategy compat).
enum CompatBuffer<'b> {{
    Perf(libbpf_rs::PerfBuffer<'b>),
    Ring(libbpf_rs::RingBuffer<'b>),
}}

#[allow(dead_code)]
impl CompatBuffer<'_> {{
    fn poll(&self, timeout: std::time::Duration) -> libbpf_rs::Result<()> {{
        match self {{
            Self::Perf(b) => b.poll(timeout),
            Self::Ring(b) => b.poll(timeout),
        }}
    }}

    fn consume(&self) -> libbpf_rs::Result<()> {{
        match self {{
            Self::Perf(b) => b.consume(),
            Self::Ring(b) => b.consume(),
        }}
    }}

    fn epoll_fd(&self) -> i32 {{
        match self {{
            Self::Perf(b) => b.epoll_fd(),
            Self::Ring(b) => b.epoll_fd(),
        }}
    }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_crate::{BPF, main_rs};
    use crate::engine::options::{Lost, Options, Strategy};
    use crate::engine::testkit::run;
    use crate::report::Severity;
    use crate::rules::Rule;

    fn compat() -> Options {
        Options {
            strategy: Strategy::Compat,
            ..Options::default()
        }
    }

    /// A chain in a function given the skeleton, returning the buffer by its path: the load
    /// is the file's one, already bound to an open skeleton (made `mut`); `PerfBuffer` loses
    /// its path, and the import goes. Without a lost callback, the shim has no counter.
    #[test]
    fn a_chain_in_a_function_is_picked_before_the_files_one_load() {
        let before = r#"
            use libbpf_rs::skel::{OpenSkel, SkelBuilder};
            use libbpf_rs::PerfBufferBuilder;

            use x::*;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{} bytes", data.len());
            }

            fn open<'a>(skel: &'a XSkel) -> libbpf_rs::Result<libbpf_rs::PerfBuffer<'a>> {
                PerfBufferBuilder::new(&skel.maps.events).sample_cb(handle).build()
            }

            fn main() -> anyhow::Result<()> {
                let mut open_object = std::mem::MaybeUninit::uninit();
                let open_skel = XSkelBuilder::default().open(&mut open_object)?;
                let skel = open_skel.load()?;
                let perf = open(&skel)?;
                loop {
                    perf.poll(std::time::Duration::from_millis(100))?;
                }
            }
            "#;
        let after = r#"
            use libbpf_rs::skel::{OpenSkel, SkelBuilder};

            use x::*;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{} bytes", data.len());
            }

            fn open<'a>(skel: &'a XSkel) -> libbpf_rs::Result<CompatBuffer<'a>> {
                CompatBufferBuilder::new(&skel.maps.events).sample_cb(handle).build()
            }

            fn main() -> anyhow::Result<()> {
                let mut open_object = std::mem::MaybeUninit::uninit();
                let mut open_skel = XSkelBuilder::default().open(&mut open_object)?;
                // Where the kernel has no ring buffer, `events` becomes a perf event array, and the
                // BPF program is told so (added by bpf-migrate --strategy compat).
                if compat_use_perf(&mut open_skel.maps.events) {
                    let rodata = open_skel.maps.rodata_data.as_deref_mut();
                    rodata.expect("the BPF program's .rodata").events_use_perf = 1;
                }
                let skel = open_skel.load()?;
                let perf = open(&skel)?;
                loop {
                    perf.poll(std::time::Duration::from_millis(100))?;
                }
            }
            "#;
        let (changed, _) = run(
            &[("src/main.rs", &main_rs(before)), ("src/bpf/x.bpf.c", BPF)],
            &compat(),
        );
        let main = &changed["src/main.rs"];
        let shim_at = main.find("\n/// Before load:").expect("the shim");
        assert_eq!(main[..shim_at], main_rs(after));
        assert_eq!(main[shim_at..], super::shim(false));
        assert!(!main.contains("lost_counter"));
        assert!(changed["src/bpf/x.bpf.c"].contains("events_output(ctx, &pid, sizeof(pid));"));
        // Migrated: a second run changes nothing.
        let files: Vec<(&str, &str)> = changed
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (again, diags) = run(&files, &compat());
        assert!(
            again.is_empty() && diags.iter().all(|d| d.severity != Severity::Manual),
            "{again:?} {diags:?}"
        );
    }

    /// Under --lost drop the lost callback stays for the perf path, and a note says the ring
    /// path does not call it.
    #[test]
    fn under_lost_drop_the_lost_callback_serves_the_perf_path() {
        let before = r#"
            // A reader.
            use libbpf_rs::PerfBufferBuilder;

            use x::*;

            fn main() -> anyhow::Result<()> {
                let mut open_object = std::mem::MaybeUninit::uninit();
                let skel = XSkelBuilder::default().open(&mut open_object)?.load()?;
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(|_cpu, data: &[u8]| println!("{}", data.len()))
                    .lost_cb(|cpu, n| eprintln!("lost {n} on {cpu}"))
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#;
        let after = r#"
            // A reader.

            use x::*;

            fn main() -> anyhow::Result<()> {
                let mut open_object = std::mem::MaybeUninit::uninit();
                let mut open_skel = XSkelBuilder::default().open(&mut open_object)?;
                // Where the kernel has no ring buffer, `events` becomes a perf event array, and the
                // BPF program is told so (added by bpf-migrate --strategy compat).
                if compat_use_perf(&mut open_skel.maps.events) {
                    let rodata = open_skel.maps.rodata_data.as_deref_mut();
                    rodata.expect("the BPF program's .rodata").events_use_perf = 1;
                }
                let skel = open_skel.load()?;
                let perf = CompatBufferBuilder::new(&skel.maps.events)
                    .sample_cb(|_cpu, data: &[u8]| println!("{}", data.len()))
                    .lost_cb(|cpu, n| eprintln!("lost {n} on {cpu}"))
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#;
        let opts = Options {
            lost: Lost::Drop,
            ..compat()
        };
        let (changed, diags) = run(
            &[("src/main.rs", &main_rs(before)), ("src/bpf/x.bpf.c", BPF)],
            &opts,
        );
        let main = &changed["src/main.rs"];
        let shim_at = main.find("\n/// Before load:").expect("the shim");
        assert_eq!(main[..shim_at], main_rs(after));
        assert!(!changed["src/bpf/x.bpf.c"].contains("events_lost"));
        assert!(
            diags.iter().any(|d| d.rule == Rule::CompatLoader
                && d.message.contains("called on the perf path only")),
            "{diags:?}"
        );
    }

    /// A page count chosen at run time sizes the ring before the pick, which may make the
    /// map a perf event array again (max_entries 0); the open skeleton is made `mut` once.
    #[test]
    fn a_run_time_page_count_sizes_the_ring_before_the_pick() {
        let before = r#"
            use libbpf_rs::PerfBufferBuilder;

            use x::*;

            fn main() -> anyhow::Result<()> {
                let pages: usize = std::env::args().count() * 8;
                let mut open_object = std::mem::MaybeUninit::uninit();
                let open_skel = XSkelBuilder::default().open(&mut open_object)?;
                let skel = open_skel.load()?;
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(|_cpu, data: &[u8]| println!("{}", data.len()))
                    .pages(pages)
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#;
        let (changed, diags) = run(
            &[("src/main.rs", &main_rs(before)), ("src/bpf/x.bpf.c", BPF)],
            &compat(),
        );
        let main = changed
            .get("src/main.rs")
            .unwrap_or_else(|| panic!("{diags:?}"));
        let size = main.find(".set_max_entries(").expect("the ring sized");
        let pick = main.find("if compat_use_perf(").expect("the pick");
        let load = main
            .find("let skel = open_skel.load()?;")
            .expect("the load");
        assert!(size < pick && pick < load, "{main}");
        assert_eq!(main.matches("let mut open_skel").count(), 1, "{main}");
        assert!(main.contains(".pages(pages)"), "{main}");
    }

    /// What stands in the way is named, and nothing changes.
    #[test]
    fn refusals_name_the_reason() {
        let reader = |map: &str, cb: &str, extra: &str| {
            format!(
                r#"
                use libbpf_rs::PerfBufferBuilder;

                use x::*;

                fn main() -> anyhow::Result<()> {{
                    let mut open_object = std::mem::MaybeUninit::uninit();
                    let skel = XSkelBuilder::default().open(&mut open_object)?.load()?;
                    let perf = PerfBufferBuilder::new({map}).sample_cb({cb}).build()?;
                    perf.poll(std::time::Duration::from_millis(100))?;{extra}
                    Ok(())
                }}
                "#
            )
        };
        let cases = [
            (
                reader("&skel.maps.events", "|cpu, _data| println!(\"{cpu}\")", ""),
                "the sample callback reads the CPU",
            ),
            (
                reader("&skel.maps.events", "elsewhere::handle", ""),
                "`handle` is not defined in this file, so whether it reads the CPU",
            ),
            (
                reader("skel.maps().events()", "|_cpu, _data| {}", ""),
                "is not a skeleton's field",
            ),
            (
                reader(
                    "&skel.maps.events",
                    "|_cpu, _data| {}",
                    "\n                    perf.consume_buffer(0)?;",
                ),
                "calls the perf buffer's `consume_buffer`",
            ),
            (
                reader(
                    "&skel.maps.events",
                    "|_cpu, _data| {}",
                    "\n                    let CompatBuffer = 1;",
                ),
                "the name `CompatBuffer` it needs is taken",
            ),
        ];
        for (main, says) in &cases {
            let (changed, diags) = run(
                &[("src/main.rs", &main_rs(main)), ("src/bpf/x.bpf.c", BPF)],
                &compat(),
            );
            assert!(changed.is_empty(), "{says}: {changed:?}");
            assert!(
                diags
                    .iter()
                    .any(|d| d.rule == Rule::CompatUnsupported && d.message.contains(says)),
                "{says}: {diags:?}"
            );
        }
        // A chain in a function that loads no skeleton, in a file that loads two.
        let two = r#"
            use libbpf_rs::PerfBufferBuilder;

            use x::*;

            fn read(skel: &XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events).sample_cb(|_cpu, _data| {}).build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }

            fn main() -> anyhow::Result<()> {
                let (mut a, mut b) = (std::mem::MaybeUninit::uninit(), std::mem::MaybeUninit::uninit());
                let one = XSkelBuilder::default().open(&mut a)?.load()?;
                let two = XSkelBuilder::default().open(&mut b)?.load()?;
                read(&one)?;
                read(&two)
            }
            "#;
        let (changed, diags) = run(
            &[("src/main.rs", &main_rs(two)), ("src/bpf/x.bpf.c", BPF)],
            &compat(),
        );
        assert!(changed.is_empty(), "{changed:?}");
        assert!(
            diags.iter().any(|d| d.rule == Rule::CompatUnsupported
                && d.message.contains("the file loads 2 skeletons")),
            "{diags:?}"
        );
    }
}
