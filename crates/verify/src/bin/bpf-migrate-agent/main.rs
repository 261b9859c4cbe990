//! The guest agent of `bpf-migrate verify`: `/init` of the VM's initramfs.
//!
//! It mounts the pseudo file systems, loads every BPF object named in `/manifest.json` (the
//! original twice, the migrated once), attaches their programs, opens a perf buffer on each
//! perf event array and a ring buffer on each ring buffer map, drives the workload, drains
//! the buffers and reports every record over the second serial port (`/dev/ttyS1`), framed
//! so that nothing else written there can be mistaken for a result. Then it powers off.
//!
//! It refuses to run anywhere but as PID 1: BPF programs under test never load into the
//! host's kernel.

mod database;
mod mirror;
mod nfs;
mod tools;
mod workload;

use std::cell::{OnceCell, RefCell};
use std::io::Write;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bpf_migrate_protocol::{
    Attach, BenchOutcome, BenchRow, BufferError, BufferKind, CompatFlag, LOST_COUNTER_SUFFIX,
    MANIFEST_PATH, Manifest, MapRecords, Message, ObjectResult, ProgramResult, Report, RunResult,
    TOOL_WAVE,
};
use fs_err as fs;
use libbpf_rs::{
    Link, MapCore, MapType, Object, ObjectBuilder, PerfBufferBuilder, PrintLevel, ProgramInput,
    ProgramType, RingBufferBuilder,
};

static LIBBPF_LOG: Mutex<String> = Mutex::new(String::new());

fn libbpf_print(level: PrintLevel, msg: String) {
    if level != PrintLevel::Debug
        && let Ok(mut l) = LIBBPF_LOG.lock()
    {
        l.push_str(&msg);
    }
}

fn take_log() -> String {
    LIBBPF_LOG
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        // A child of the exec workload: exit with the code asked for.
        let code = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(0);
        std::process::exit(code);
    }
    if std::process::id() != 1 {
        eprintln!("bpf-migrate-agent runs only as /init inside the verify VM");
        std::process::exit(2);
    }
    setup_system();
    let mut out = Serial::open();
    out.frame(&Message::Ready);
    let report = match fs::read_to_string(MANIFEST_PATH)
        .map_err(|e| e.to_string())
        .and_then(|m| serde_json::from_str::<Manifest>(&m).map_err(|e| e.to_string()))
    {
        Ok(m) => match m.bench {
            Some(n) => Report::Bench(bench(&m, n)),
            None => Report::Run(run(&m, &mut out)),
        },
        Err(e) => Report::Fatal(format!(
            "cannot read the manifest: {e} (an initramfs the guest could not unpack whole? its console log says)"
        )),
    };
    out.frame(&Message::Result(report));
    out.frame(&Message::Done);
    power_off();
}

fn run(m: &Manifest, out: &mut Serial) -> RunResult {
    libbpf_rs::set_print(Some((PrintLevel::Info, libbpf_print)));
    let started = Instant::now();
    // Before any object: the perf path of --strategy compat, on a kernel that refuses rings.
    let (_refusing, refuse_ringbuf_error) = match &m.refuse_ringbuf {
        Some(path) => match refuse_ringbuf(path) {
            Ok(link) => (Some(link), None),
            Err(e) => (None, Some(e)),
        },
        None => (None, None),
    };
    // Before the objects: a program may attach to a module's function (ext4's), and a tool
    // look up a file system's operations when it starts.
    // The disk step reports what went wrong with the disk.
    let setup_log = tools::load_modules(&m.modules);
    workload::mount_scratch(&m.scratch_disks, &m.scratch_missing);
    // Before any tool's terminal: the workload's is the guest's first, /dev/pts/0.
    workload::open_terminal();
    workload::attach_tcp_drop(m.tcp_drop.as_deref());
    let objects = load_objects(m);
    let (mut links, mut programs) = attach_programs(&objects);
    let mut maps_per_obj: Vec<Vec<libbpf_rs::Map>> = objects.iter().map(Loaded::maps).collect();
    let mut buffers = open_buffers(&maps_per_obj);
    let host_root_error = m
        .host_root
        .as_ref()
        .and_then(|h| tools::mount_host_root(h).err());
    // Before the tools: one may look for a server's processes when it starts.
    if let Some(db) = &m.database {
        database::start(
            in_host_root(db, host_root_error.as_deref()),
            tools::NEW_ROOT,
        );
    }
    if let Some(n) = &m.nfs {
        nfs::start(
            in_host_root(n, host_root_error.as_deref()).map(|_| ()),
            tools::NEW_ROOT,
        );
    }
    // The tools start now, so that what their starting does (execs, opens, BPF loads) is
    // discarded with the other attach-time events; in waves (`TOOL_WAVE`).
    let waiting = Instant::now();
    let deadline = waiting + Duration::from_millis(m.tools_ready_ms);
    let mut running = Vec::new();
    let waves: Vec<&[bpf_migrate_protocol::ToolSpec]> = m.tools.chunks(TOOL_WAVE).collect();
    for (w, wave) in waves.iter().enumerate() {
        // Each wave an equal share of what is left: one whose tool never polls cannot take
        // the others' time.
        let left = deadline.saturating_duration_since(Instant::now());
        let share = left / (waves.len() - w) as u32;
        let mut started = tools::start(wave, host_root_error.as_deref());
        tools::wait_ready(&mut started, share, &mut || buffers.drain());
        running.append(&mut started);
    }
    if !m.tools.is_empty() {
        out.frame(&Message::ToolsStarted {
            waited_ms: waiting.elapsed().as_millis() as u64,
        });
    }
    // What did not load or attach by its section, as its tool's loader had it.
    // Buffers drained all along: a perf buffer that fills before the workload reports what
    // it lost only with its next record, in the workload.
    let links_before = links.len();
    let late = as_tools_did(m, &objects, &mut links, &mut programs, &running, &|| {
        buffers.drain()
    });
    for &k in &late {
        maps_per_obj[k] = objects[k].maps();
        buffers.absorb(k, open_buffers(&maps_per_obj[k..=k]));
    }
    if !late.is_empty() || links.len() > links_before {
        // The tools saw the late loads and attaches: what they print of them goes before the
        // workload.
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(50));
            buffers.drain();
        }
    }
    let attached_ms = started.elapsed().as_millis();
    // Last thing before the workload: what the tools' starting wrote to a ring (hundreds of
    // opens, say) may have wrapped it past poison laid down earlier.
    let mut log = setup_log;
    log.extend(poison_rings(m, &maps_per_obj, &buffers));
    buffers.discard_attach_events();
    let lost_before = ring_losses(&maps_per_obj, &buffers.sinks);
    tools::mark_workload(&mut running);
    fill_percpu_arrays(m, &maps_per_obj);
    let mut workload_steps = Vec::new();
    if m.builtin_workload {
        workload_steps = workload::run(&mut log, &mut || buffers.drain());
        if test_run_packets(&objects, &buffers, &mut log) {
            workload_steps.push("packets".into());
        }
    }
    run_workload_command(m, &mut log);
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..3 {
        buffers.drain();
    }
    // What each ring with a lost counter could not take during the workload.
    let lost_after = ring_losses(&maps_per_obj, &buffers.sinks);
    for ((sinks, before), after) in buffers.sinks.iter().zip(&lost_before).zip(&lost_after) {
        for (((_, _, _, lost), b), a) in sinks.iter().zip(before).zip(after) {
            if let (Some(b), Some(a)) = (b, a) {
                *lost.borrow_mut() = a.saturating_sub(*b);
            }
        }
    }
    let tools = tools::stop(running);
    drop(links);
    let buffer_errors = std::mem::take(&mut buffers.errors);
    RunResult {
        tools,
        objects: object_results(objects, programs, &buffers.sinks, buffer_errors),
        workload_log: log,
        workload_steps,
        refuse_ringbuf_error,
        attached_ms: attached_ms as u64,
        nr_cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
    }
}

/// A workload server of the manifest (`server`, or why the host could not provide it), which
/// runs in the host's root: not when that could not be mounted (`root_error`).
fn in_host_root<'a, T>(
    server: &'a Result<T, String>,
    root_error: Option<&str>,
) -> Result<&'a T, String> {
    let server = server.as_ref().map_err(Clone::clone)?;
    match root_error {
        Some(e) => Err(format!("the host's root file system: {e}")),
        None => Ok(server),
    }
}

/// An object of the manifest: loaded, or why it did not load.
struct Loaded {
    id: String,
    /// Set once: when it loads by its sections, or later as its tool's loader had it
    /// (`as_tools_did`).
    obj: OnceCell<Object>,
    load_error: RefCell<Option<String>>,
    /// It did not load by its sections, and its tool was there to learn from: it loaded so
    /// where `obj` is set.
    tried_as_tool: std::cell::Cell<bool>,
}

impl Loaded {
    fn maps(&self) -> Vec<libbpf_rs::Map<'_>> {
        self.obj
            .get()
            .map(|o| o.maps().collect())
            .unwrap_or_default()
    }
}

/// Each object that did not load, or has a program that did not attach, by its sections,
/// loaded and attached as the tool of the same id (its version's user space, running) had
/// it: the programs its loader did not load left out, a tracing program loaded for the
/// function the tool's was, a probe attached where the tool's is (`mirror`). Returns the
/// objects loaded now, whose buffers are still to open.
fn as_tools_did(
    m: &Manifest,
    objects: &[Loaded],
    links: &mut Vec<Link>,
    programs: &mut [Vec<ProgramResult>],
    running: &[tools::Running],
    drain: &dyn Fn(),
) -> Vec<usize> {
    let mut late = Vec::new();
    let mut btfs = mirror::Btfs::default();
    for (k, (o, spec)) in objects.iter().zip(&m.objects).enumerate() {
        drain();
        let failed = o.obj.get().is_none()
            || programs[k]
                .iter()
                .any(|p| matches!(p.attach, Attach::Error(_)));
        if !failed {
            continue;
        }
        let Some(pid) = running
            .iter()
            .find(|r| r.id() == o.id)
            .and_then(|r| r.pid())
        else {
            continue;
        };
        let learned = mirror::learn(pid, &mut btfs);
        if learned.loaded.is_empty() {
            continue;
        }
        if o.obj.get().is_none() {
            o.tried_as_tool.set(true);
            let obj = match load_object(spec, |open| configure_as_tool(open, &learned)) {
                Ok(obj) => obj,
                Err(e) => {
                    // The retry's log says more than the placeholder the sections named.
                    *o.load_error.borrow_mut() =
                        Some(format!("loaded as its tool's loader had it: {e}"));
                    continue;
                }
            };
            *o.load_error.borrow_mut() = None;
            let obj = o.obj.get_or_init(|| obj);
            late.push(k);
            programs[k] = program_results(obj, |p| {
                if !p.autoload() {
                    return Attach::NotByTool;
                }
                let func = function_target(
                    &learned,
                    &p.name().to_string_lossy(),
                    &p.section().to_string_lossy(),
                );
                match (attach_program(p, links), func) {
                    (Attach::Ok, Some(func)) => Attach::AsTool(format!("tracing {func}")),
                    (other, _) => other,
                }
            });
        }
        let Some(obj) = o.obj.get() else { continue };
        let names: Vec<String> = obj
            .progs()
            .map(|p| p.name().to_string_lossy().into_owned())
            .collect();
        for (p, rep) in obj.progs_mut().zip(programs[k].iter_mut()) {
            if !matches!(rep.attach, Attach::Error(_))
                || !mirror::Learned::unambiguous(&rep.name, names.iter().map(String::as_str))
            {
                continue;
            }
            let kname = mirror::kernel_name(&rep.name);
            if !learned.loaded.contains(&kname) {
                rep.attach = Attach::NotByTool;
                continue;
            }
            if let Some(targets) = learned.targets.get(&kname) {
                match attach_as_tool(&p, targets, links) {
                    Ok(how) => rep.attach = Attach::AsTool(how),
                    Err(e) => {
                        if let Attach::Error(first) = &mut rep.attach {
                            first.push_str(&format!("; attached as its tool's is: {e}"));
                        }
                    }
                }
            }
        }
    }
    late
}

/// Before loading: the programs the tool's loader did not load left out, and each tracing
/// program given the function the tool's was loaded for. A program whose kernel name another
/// of the object's shares is left as it is.
fn configure_as_tool(
    open: &mut libbpf_rs::OpenObject,
    learned: &mirror::Learned,
) -> libbpf_rs::Result<()> {
    let names: Vec<String> = open
        .progs()
        .map(|p| p.name().to_string_lossy().into_owned())
        .collect();
    for mut p in open.progs_mut() {
        let name = p.name().to_string_lossy().into_owned();
        if !mirror::Learned::unambiguous(&name, names.iter().map(String::as_str)) {
            continue;
        }
        if !learned.loaded.contains(&mirror::kernel_name(&name)) {
            p.set_autoload(false);
            continue;
        }
        if let Some(func) = function_target(learned, &name, &p.section().to_string_lossy()) {
            p.set_attach_target(0, Some(func))?;
        }
    }
    Ok(())
}

/// The function the tool's program `name` was loaded for, if it is a program of `section`
/// that names one: fentry, fexit and fmod_ret (a tp_btf or iter program's BTF id names a
/// type, `btf_trace_X`, `bpf_iter_X`, that its section already says).
fn function_target(learned: &mirror::Learned, name: &str, section: &str) -> Option<String> {
    if !["fentry", "fexit", "fmod_ret"]
        .iter()
        .any(|k| section.starts_with(k))
    {
        return None;
    }
    learned
        .targets
        .get(&mirror::kernel_name(name))?
        .iter()
        .find_map(|t| match t {
            mirror::Target::Tracing { func } => Some(func.clone()),
            _ => None,
        })
}

/// Attaches `p` where its tool's program is; says where.
fn attach_as_tool(
    p: &libbpf_rs::ProgramMut,
    targets: &[mirror::Target],
    links: &mut Vec<Link>,
) -> Result<String, String> {
    let mut made = Vec::new();
    for t in targets {
        take_log();
        let link = match t {
            mirror::Target::Kprobe { func, retprobe } => p.attach_kprobe(*retprobe, func),
            mirror::Target::Uprobe {
                path,
                offset,
                retprobe,
            } => p.attach_uprobe(*retprobe, -1, path, *offset as usize),
            mirror::Target::Tracing { .. } => p.attach(),
        };
        match link {
            Ok(l) => made.push(l),
            Err(e) => return Err(format!("{t}: {e:#} {}", take_log())),
        }
    }
    if made.is_empty() {
        return Err("its tool's program is attached nowhere the agent can tell".into());
    }
    links.append(&mut made);
    Ok(targets
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", "))
}

/// Loads and attaches the `lsm/bpf` program of `path`, which refuses ring buffer maps, and
/// checks that it does: libbpf's probe, as a compat loader asks it, must now say no.
fn refuse_ringbuf(path: &str) -> Result<Link, String> {
    let obj = ObjectBuilder::default()
        .open_file(path)
        .and_then(|o| o.load())
        .map_err(|e| format!("loading {path}: {e:#} {}", take_log()))?;
    let prog = obj
        .progs_mut()
        .next()
        .ok_or(format!("{path}: no program"))?;
    let link = prog
        .attach_lsm()
        .map_err(|e| format!("attaching {path} (is `bpf` among the kernel's LSMs?): {e:#}"))?;
    let probe = unsafe {
        libbpf_rs::libbpf_sys::libbpf_probe_bpf_map_type(
            libbpf_rs::libbpf_sys::BPF_MAP_TYPE_RINGBUF,
            std::ptr::null(),
        )
    };
    if probe == 1 {
        return Err(format!(
            "{path} is attached, but libbpf's probe still finds the ring buffer"
        ));
    }
    Ok(link)
}

/// As a `--strategy compat` loader does where the kernel has no ring buffer: each of `flags`'
/// maps a perf event array, and its flag in `.rodata` set.
fn compat_perf(open: &mut libbpf_rs::OpenObject, flags: &[CompatFlag]) -> libbpf_rs::Result<()> {
    for mut m in open.maps_mut() {
        let name = m.name().to_string_lossy().into_owned();
        if flags.iter().any(|f| f.map == name) {
            m.set_type(MapType::PerfEventArray)?;
            m.set_key_size(4)?;
            m.set_value_size(4)?;
            m.set_max_entries(0)?;
        } else if name.ends_with(".rodata")
            && let Some(data) = m.initial_value_mut()
        {
            for f in flags {
                let at = f.rodata_offset as usize;
                if let Some(v) = data.get_mut(at..at + 4) {
                    v.copy_from_slice(&1i32.to_ne_bytes());
                }
            }
        }
    }
    Ok(())
}

/// Every object is loaded before any is attached, so that all see the same events.
fn load_objects(m: &Manifest) -> Vec<Loaded> {
    m.objects
        .iter()
        .map(|spec| {
            let (obj, load_error) = match load_object(spec, |_| Ok(())) {
                Ok(o) => (OnceCell::from(o), None),
                Err(e) => (OnceCell::new(), Some(e)),
            };
            Loaded {
                id: spec.id.clone(),
                obj,
                load_error: RefCell::new(load_error),
                tried_as_tool: Default::default(),
            }
        })
        .collect()
}

/// The object of `spec`, opened, made a perf path's where the manifest says so,
/// `configure`d, and loaded; else libbpf's error and log.
fn load_object(
    spec: &bpf_migrate_protocol::ObjSpec,
    configure: impl FnOnce(&mut libbpf_rs::OpenObject) -> libbpf_rs::Result<()>,
) -> Result<Object, String> {
    take_log();
    ObjectBuilder::default()
        .open_file(&spec.path)
        .and_then(|mut o| {
            compat_perf(&mut o, &spec.compat_perf)?;
            configure(&mut o)?;
            o.load()
        })
        .map_err(|e| format!("{e:#}\n{}", take_log()))
}

/// XDP, tc and socket filter programs see no events of their own: the agent runs packets
/// through them instead of attaching them.
fn is_packet_program(ty: ProgramType) -> bool {
    matches!(
        ty,
        ProgramType::Xdp
            | ProgramType::SchedCls
            | ProgramType::SchedAct
            | ProgramType::SocketFilter
    )
}

/// The links of every program attached, and per object what became of each program.
fn attach_programs(objects: &[Loaded]) -> (Vec<Link>, Vec<Vec<ProgramResult>>) {
    let mut links: Vec<Link> = Vec::new();
    let progs_report = objects
        .iter()
        .map(|o| {
            o.obj.get().map_or_else(Vec::new, |obj| {
                program_results(obj, |p| attach_program(p, &mut links))
            })
        })
        .collect();
    (links, progs_report)
}

/// What became of each program of `obj`, attached by `attach`.
fn program_results(
    obj: &Object,
    mut attach: impl FnMut(&libbpf_rs::ProgramMut) -> Attach,
) -> Vec<ProgramResult> {
    obj.progs_mut()
        .map(|p| ProgramResult {
            name: p.name().to_string_lossy().into_owned(),
            section: p.section().to_string_lossy().into_owned(),
            attach: attach(&p),
        })
        .collect()
}

fn attach_program(p: &libbpf_rs::ProgramMut, links: &mut Vec<Link>) -> Attach {
    let ty = p.prog_type();
    if is_packet_program(ty) {
        return Attach::TestRun;
    }
    if ty == ProgramType::PerfEvent {
        return match attach_perf_event(p) {
            Ok(mut l) => {
                links.append(&mut l);
                Attach::Ok
            }
            Err(e) => Attach::Error(e),
        };
    }
    if let Some((retprobe, func)) = unbound_uprobe(&p.section().to_string_lossy()) {
        return match attach_unbound_uprobe(p, retprobe, func) {
            Ok(l) => {
                links.push(l);
                Attach::Ok
            }
            Err(e) => Attach::Error(e),
        };
    }
    take_log();
    match p.attach() {
        Ok(l) => {
            links.push(l);
            Attach::Ok
        }
        Err(e) => Attach::Error(format!("{e:#} {}", take_log())),
    }
}

/// A uprobe section that names a function but no file (`uretprobe/readline`): the tool's
/// loader finds the file at run time (bash, libc), which libbpf cannot. Whether it returns,
/// and the function.
fn unbound_uprobe(section: &str) -> Option<(bool, String)> {
    let (retprobe, rest) = match section.strip_prefix("uretprobe") {
        Some(r) => (true, r),
        None => (false, section.strip_prefix("uprobe")?),
    };
    let func = rest.strip_prefix(".s").unwrap_or(rest).strip_prefix('/')?;
    let plain = !func.is_empty()
        && func
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@'));
    plain.then(|| (retprobe, func.to_string()))
}

/// Attaches an unbound uprobe to its function in the first of the guest's files the workload
/// runs that defines it (libc, then bash), as the tool's loader would on a user's machine.
fn attach_unbound_uprobe(
    p: &libbpf_rs::ProgramMut,
    retprobe: bool,
    func: String,
) -> Result<Link, String> {
    let files = tools::guest_probed_files();
    let mut errors = Vec::new();
    for f in &files {
        take_log();
        let opts = libbpf_rs::UprobeOpts {
            retprobe,
            func_name: Some(func.clone()),
            ..Default::default()
        };
        match p.attach_uprobe_with_opts(-1, f, 0, opts) {
            Ok(l) => return Ok(l),
            Err(e) => errors.push(format!("{f}: {e:#} {}", take_log())),
        }
    }
    Err(format!(
        "the section names no file for `{func}`, and none the workload runs defines it ({})",
        errors.join("; ")
    ))
}

type Sink = Rc<RefCell<Vec<Vec<u8>>>>;
/// Map name, buffer kind, the records, the lost-sample count.
type MapSink = (String, BufferKind, Sink, Rc<RefCell<u64>>);

/// The buffers open on every object's maps, and per object where their records go and the
/// maps whose buffer would not open.
struct Buffers {
    ring: Vec<libbpf_rs::RingBuffer<'static>>,
    perf: Vec<libbpf_rs::PerfBuffer<'static>>,
    sinks: Vec<Vec<MapSink>>,
    errors: Vec<Vec<BufferError>>,
}

impl Buffers {
    fn drain(&self) {
        for pb in &self.perf {
            let _ = pb.consume();
        }
        self.drain_rings();
    }

    /// The buffers of object `k`, opened late (`as_tools_did`): `b` holds only that object's.
    fn absorb(&mut self, k: usize, b: Buffers) {
        self.ring.extend(b.ring);
        self.perf.extend(b.perf);
        if let (Some(s), Some(e)) = (b.sinks.into_iter().next(), b.errors.into_iter().next()) {
            self.sinks[k] = s;
            self.errors[k] = e;
        }
    }

    fn drain_rings(&self) {
        for rb in &self.ring {
            let _ = rb.consume();
        }
    }

    /// Objects were attached one after the other: whatever happened meanwhile (libbpf
    /// opening tracefs files, say) reached only some of them. Dropped; the workload starts
    /// now.
    fn discard_attach_events(&self) {
        self.drain();
        for s in &self.sinks {
            for (_, _, sink, lost) in s {
                sink.borrow_mut().clear();
                *lost.borrow_mut() = 0;
            }
        }
    }
}

/// A perf buffer per perf event array, a ring buffer per ring buffer map.
fn open_buffers(maps_per_obj: &[Vec<libbpf_rs::Map>]) -> Buffers {
    let mut buffers = Buffers {
        ring: Vec::new(),
        perf: Vec::new(),
        sinks: Vec::new(),
        errors: Vec::new(),
    };
    for maps in maps_per_obj {
        let mut s = Vec::new();
        let mut errs = Vec::new();
        for map in maps {
            let name = map.name().to_string_lossy().into_owned();
            let opened = match map.map_type() {
                MapType::PerfEventArray => open_perf_buffer(map, &mut buffers.perf),
                MapType::RingBuf => open_ring_buffer(map, &mut buffers.ring),
                _ => continue,
            };
            match opened {
                Ok((kind, sink, lost)) => s.push((name, kind, sink, lost)),
                Err(e) => errs.push(BufferError {
                    map: name,
                    error: format!("{e:#}"),
                }),
            }
        }
        buffers.sinks.push(s);
        buffers.errors.push(errs);
    }
    buffers
}

/// Per object, per buffer (as in `sinks`), the sum over CPUs of a ring's lost counter
/// (`MAP_lost`, a per-CPU array of one `u64`), where the object has one for that ring.
fn ring_losses(
    maps_per_obj: &[Vec<libbpf_rs::Map>],
    sinks: &[Vec<MapSink>],
) -> Vec<Vec<Option<u64>>> {
    maps_per_obj
        .iter()
        .zip(sinks)
        .map(|(maps, sinks)| {
            sinks
                .iter()
                .map(|(name, kind, _, _)| {
                    if *kind != BufferKind::Ring {
                        return None;
                    }
                    let counter = format!("{name}{LOST_COUNTER_SUFFIX}");
                    let m = maps.iter().find(|m| {
                        m.name().to_string_lossy() == counter
                            && m.map_type() == MapType::PercpuArray
                            && m.value_size() == 8
                    })?;
                    let per_cpu = m
                        .lookup_percpu(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
                        .ok()??;
                    Some(
                        per_cpu
                            .iter()
                            .filter_map(|v| v.get(..8)?.try_into().ok().map(u64::from_ne_bytes))
                            .sum(),
                    )
                })
                .collect()
        })
        .collect()
}

type Opened = libbpf_rs::Result<(BufferKind, Sink, Rc<RefCell<u64>>)>;

fn open_perf_buffer(
    map: &libbpf_rs::Map,
    perf: &mut Vec<libbpf_rs::PerfBuffer<'static>>,
) -> Opened {
    let sink: Sink = Rc::default();
    let lost = Rc::new(RefCell::new(0u64));
    let (s2, l2) = (sink.clone(), lost.clone());
    let pb = PerfBufferBuilder::new(map)
        .sample_cb(move |_cpu, data: &[u8]| s2.borrow_mut().push(data.to_vec()))
        .lost_cb(move |_cpu, n| *l2.borrow_mut() += n)
        .pages(64)
        .build()?;
    perf.push(pb);
    Ok((BufferKind::Perf, sink, lost))
}

fn open_ring_buffer(
    map: &libbpf_rs::Map,
    ring: &mut Vec<libbpf_rs::RingBuffer<'static>>,
) -> Opened {
    let sink: Sink = Rc::default();
    let s2 = sink.clone();
    let mut b = RingBufferBuilder::new();
    b.add(map, move |data: &[u8]| {
        s2.borrow_mut().push(data.to_vec());
        0
    })?;
    ring.push(b.build()?);
    Ok((BufferKind::Ring, sink, Rc::new(RefCell::new(0))))
}

/// Poisons every ring buffer (see `poison_ring`), if the manifest names the poison object;
/// the failures, for the workload log.
fn poison_rings(
    m: &Manifest,
    maps_per_obj: &[Vec<libbpf_rs::Map>],
    buffers: &Buffers,
) -> Vec<String> {
    let mut poison_log = Vec::new();
    if let Some(poison) = &m.ring_poison {
        for maps in maps_per_obj {
            for map in maps.iter().filter(|m| m.map_type() == MapType::RingBuf) {
                if let Err(e) = poison_ring(poison, map, &|| buffers.drain_rings()) {
                    poison_log.push(format!(
                        "poisoning ring buffer {}: {e:#}",
                        map.name().to_string_lossy()
                    ));
                }
            }
        }
    }
    poison_log
}

/// Writes each object's poison byte into every element of its per-CPU arrays (see
/// ARCHITECTURE.md: stale heap bytes show up as noise).
fn fill_percpu_arrays(m: &Manifest, maps_per_obj: &[Vec<libbpf_rs::Map>]) {
    let ncpus = libbpf_rs::num_possible_cpus().unwrap_or(1);
    for (spec, maps) in m.objects.iter().zip(maps_per_obj) {
        for map in maps {
            // Internal maps (.bss, .data, .rodata) hold the program's globals: left alone.
            if map.map_type() != MapType::PercpuArray || map.name().to_string_lossy().contains('.')
            {
                continue;
            }
            let value = vec![spec.poison; map.value_size() as usize];
            let values = vec![value; ncpus];
            for key in 0..map.max_entries() {
                let _ = map.update_percpu(&key.to_ne_bytes(), &values, libbpf_rs::MapFlags::ANY);
            }
        }
    }
}

/// The same packets through every object's packet programs; whether there were any.
fn test_run_packets(objects: &[Loaded], buffers: &Buffers, log: &mut Vec<String>) -> bool {
    let mut ran = false;
    for (i, o) in objects.iter().enumerate() {
        if let Some(obj) = o.obj.get() {
            for p in obj.progs_mut() {
                if !is_packet_program(p.prog_type()) {
                    continue;
                }
                ran = true;
                for pkt in packets() {
                    let input = ProgramInput {
                        data_in: Some(&pkt),
                        ..Default::default()
                    };
                    if let Err(e) = p.test_run(input) {
                        log.push(format!(
                            "object {i}: test_run {}: {e:#}",
                            p.name().to_string_lossy()
                        ));
                    }
                }
            }
        }
        buffers.drain();
    }
    ran
}

/// The user's `--workload`, if any.
fn run_workload_command(m: &Manifest, log: &mut Vec<String>) {
    if let Some(cmd) = &m.workload
        && !cmd.is_empty()
    {
        match std::process::Command::new(&cmd[0]).args(&cmd[1..]).output() {
            Ok(o) => log.push(format!(
                "workload `{}` exited {:?}; stdout: {}; stderr: {}",
                cmd.join(" "),
                o.status.code(),
                String::from_utf8_lossy(&o.stdout).trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => log.push(format!("workload `{}`: {e}", cmd.join(" "))),
        }
    }
}

fn object_results(
    objects: Vec<Loaded>,
    programs: Vec<Vec<ProgramResult>>,
    sinks: &[Vec<MapSink>],
    buffer_errors: Vec<Vec<BufferError>>,
) -> Vec<ObjectResult> {
    let mut buffer_errors = buffer_errors.into_iter();
    objects
        .into_iter()
        .zip(programs)
        .zip(sinks)
        .map(|((o, programs), sinks)| ObjectResult {
            id: o.id,
            load_error: o.load_error.into_inner(),
            tried_as_tool: o.tried_as_tool.get(),
            programs,
            maps: sinks
                .iter()
                .map(|(name, kind, sink, lost)| MapRecords {
                    name: name.clone(),
                    kind: *kind,
                    records: sink.take(),
                    lost: *lost.borrow(),
                })
                .collect(),
            buffer_errors: buffer_errors.next().unwrap_or_default(),
        })
        .collect()
}

/// Events per second, one object at a time: attach it, make `n` getpid() calls (the
/// benchmark programs hook sys_enter_getpid) draining its buffers every 64, and time it all
/// until the last record is read, after a warm-up of n/10 calls.
fn bench(m: &Manifest, n: u64) -> Vec<BenchRow> {
    let mut rows = Vec::new();
    for spec in &m.objects {
        let outcome = (|| -> Result<BenchOutcome, String> {
            let obj = ObjectBuilder::default()
                .open_file(&spec.path)
                .and_then(|o| o.load())
                .map_err(|e| format!("{e:#} {}", take_log()))?;
            let mut links = Vec::new();
            for p in obj.progs_mut() {
                links.push(p.attach().map_err(|e| format!("{e:#}"))?);
            }
            let received = Rc::new(RefCell::new(0u64));
            let mut perf = Vec::new();
            let mut ring = Vec::new();
            for map in obj.maps() {
                match map.map_type() {
                    MapType::PerfEventArray => {
                        let r = received.clone();
                        perf.push(
                            PerfBufferBuilder::new(&map)
                                .sample_cb(move |_cpu, _data: &[u8]| *r.borrow_mut() += 1)
                                .pages(64)
                                .build()
                                .map_err(|e| format!("{e:#}"))?,
                        );
                    }
                    MapType::RingBuf => {
                        let r = received.clone();
                        let mut b = RingBufferBuilder::new();
                        b.add(&map, move |_data: &[u8]| {
                            *r.borrow_mut() += 1;
                            0
                        })
                        .map_err(|e| format!("{e:#}"))?;
                        ring.push(b.build().map_err(|e| format!("{e:#}"))?);
                    }
                    _ => {}
                }
            }
            let drain = || {
                for p in &perf {
                    let _ = p.consume();
                }
                for r in &ring {
                    let _ = r.consume();
                }
            };
            let burst = |count: u64| {
                for i in 0..count {
                    unsafe {
                        libc::syscall(libc::SYS_getpid);
                    }
                    if i % 64 == 63 {
                        drain();
                    }
                }
                drain();
            };
            // A warm-up, so that no variant pays for the first run through this code (under
            // TCG, its translation) more than another.
            burst(n / 10);
            *received.borrow_mut() = 0;
            let started = Instant::now();
            burst(n);
            let ns = started.elapsed().as_nanos() as u64;
            drop(links);
            let got = *received.borrow();
            Ok(BenchOutcome::Timed { received: got, ns })
        })();
        rows.push(BenchRow {
            id: spec.id.clone(),
            outcome: outcome.unwrap_or_else(BenchOutcome::Error),
        });
    }
    rows
}

/// Fills `map` (a ring buffer) with the poison object's records until it is full, drains it,
/// and does it again: a ring never takes its last record, so the first fill leaves a gap that
/// the second, starting there, covers. The object is loaded once.
fn poison_ring(path: &str, map: &libbpf_rs::Map, drain: &dyn Fn()) -> Result<(), String> {
    use std::os::fd::AsFd;
    let mut open = ObjectBuilder::default()
        .open_file(path)
        .map_err(|e| format!("{e:#}"))?;
    for mut m in open.maps_mut() {
        if m.name().to_string_lossy() == "rb" {
            m.set_max_entries(map.max_entries())
                .and_then(|_| m.reuse_fd(map.as_fd()))
                .map_err(|e| format!("{e:#}"))?;
        }
    }
    let obj = open.load().map_err(|e| format!("{e:#} {}", take_log()))?;
    let prog = obj.progs_mut().next().ok_or("no program")?;
    for _ in 0..2 {
        let mut full = false;
        for _ in 0..1_000_000 {
            let out = prog
                .test_run(ProgramInput::default())
                .map_err(|e| format!("{e:#}"))?;
            if out.return_value != 0 {
                full = true;
                break;
            }
        }
        if !full {
            return Err("the ring never filled up".into());
        }
        drain();
    }
    Ok(())
}

/// Sampling software clock events on every CPU, one link per CPU.
fn attach_perf_event(p: &libbpf_rs::ProgramMut) -> Result<Vec<Link>, String> {
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut links = Vec::new();
    for cpu in 0..ncpu {
        use libbpf_rs::libbpf_sys as sys;
        let mut attr: sys::perf_event_attr = unsafe { std::mem::zeroed() };
        attr.type_ = sys::PERF_TYPE_SOFTWARE;
        attr.size = std::mem::size_of::<sys::perf_event_attr>() as u32;
        attr.config = u64::from(sys::PERF_COUNT_SW_CPU_CLOCK);
        attr.__bindgen_anon_1.sample_freq = 199;
        attr.set_freq(1);
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const _,
                -1,
                cpu as i32,
                -1,
                8u64, /* PERF_FLAG_FD_CLOEXEC */
            )
        } as i32;
        if fd < 0 {
            return Err(format!(
                "perf_event_open: {}",
                std::io::Error::last_os_error()
            ));
        }
        links.push(p.attach_perf_event(fd).map_err(|e| format!("{e:#}"))?);
    }
    Ok(links)
}

/// Ethernet + IPv4 + TCP and UDP packets for XDP, tc and socket filter programs.
fn packets() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (proto, l4) in [(6u8, tcp_header()), (17u8, udp_header())] {
        let payload = b"bpf-migrate verify";
        let total = 20 + l4.len() + payload.len();
        let mut p = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0x12,
            0x34,
            0x40,
            0,
            64,
            proto,
            0,
            0,
            10,
            0,
            0,
            1,
            10,
            0,
            0,
            2,
        ];
        let sum = checksum(&ip);
        ip[10] = (sum >> 8) as u8;
        ip[11] = sum as u8;
        p.extend(ip);
        p.extend(l4);
        p.extend(payload);
        out.push(p);
    }
    out
}

fn tcp_header() -> Vec<u8> {
    vec![
        0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ]
}

fn udp_header() -> Vec<u8> {
    vec![0x9c, 0x41, 0x00, 0x35, 0, 26, 0, 0]
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn mount(src: &str, target: &str, fstype: &str) -> bool {
    tools::mount(src, target, fstype, 0, "").is_ok()
}

fn setup_system() {
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("tmpfs", "/tmp", "tmpfs");
    mount("tracefs", "/sys/kernel/tracing", "tracefs");
    mount("debugfs", "/sys/kernel/debug", "debugfs");
    mount("bpf", "/sys/fs/bpf", "bpf");
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2");
    // Terminals for the tools' output (tool-level verify).
    mount("devpts", "/dev/pts", "devpts");
    unsafe {
        let r = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &r);
        // Three loads of every program of a batch, each with its maps', programs', links' and
        // BTF's descriptors, and a perf buffer's per CPU: a batch of 18 real programs went past
        // the kernel's 1024 for PID 1. The tools get a user's usual limit back (`tools::spawn`).
        let n = libc::rlimit {
            rlim_cur: tools::AGENT_NOFILE,
            rlim_max: tools::AGENT_NOFILE,
        };
        libc::setrlimit(libc::RLIMIT_NOFILE, &n);
        // Bring the loopback interface up for the network workload.
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd >= 0 {
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (i, b) in b"lo\0".iter().enumerate() {
                ifr.ifr_name[i] = *b as libc::c_char;
            }
            if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) == 0 {
                ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
            }
            libc::close(fd);
        }
    }
}

fn power_off() -> ! {
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The results port. Each frame is one line: `BPFM1 <length> <fnv1a64> <json>`.
struct Serial(Option<std::fs::File>);

impl Serial {
    fn open() -> Self {
        Serial(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/ttyS1")
                .ok(),
        )
    }

    fn frame(&mut self, m: &Message) {
        let line = bpf_migrate_protocol::frame(m);
        match &mut self.0 {
            Some(f) => {
                let _ = f.write_all(line.as_bytes());
                let _ = f.flush();
                let _ = f.sync_all();
            }
            None => eprintln!("{line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unbound_uprobe;

    #[test]
    fn a_uprobe_section_without_a_file_names_its_function() {
        assert_eq!(
            unbound_uprobe("uretprobe/readline"),
            Some((true, "readline".into()))
        );
        assert_eq!(
            unbound_uprobe("uprobe.s/getaddrinfo"),
            Some((false, "getaddrinfo".into()))
        );
        // A file named, or no function: libbpf's own attach, or the loader's alone.
        assert_eq!(unbound_uprobe("uprobe//bin/bash:readline"), None);
        assert_eq!(unbound_uprobe("uretprobe"), None);
        assert_eq!(unbound_uprobe("uprobe.multi/libc.so.6:*"), None);
        assert_eq!(unbound_uprobe("kprobe/readline"), None);
    }
}
