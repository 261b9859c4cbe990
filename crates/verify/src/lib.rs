//! `bpf-migrate verify`: build the original and the migrated BPF program, load both in a VM
//! side by side (the original twice, to calibrate noise), drive one workload through all of
//! them, and compare what user space receives from each map.

pub mod bench;
pub mod btf;
pub mod compare;
pub mod database;
pub mod initramfs;
pub mod kernel;
pub mod libbpf_headers;
pub mod memory;
pub mod nfs;
pub mod qemu;
pub mod tool;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use fs_err as fs;
use serde_json::json;

use bpf_migrate_core::engine::{self, Options, Strategy};
use bpf_migrate_core::lang::NodeExt;
use bpf_migrate_core::{discover, report};
use bpf_migrate_protocol::{
    Attach, BufferKind, CompatFlag, HostRoot, MANIFEST_PATH, MD_MEMBER, Manifest, MapRecords,
    ObjSpec, ObjectResult, Report, RunResult, SCRATCH_FILE_SYSTEMS, ToolSpec,
};
use compare::{MapReport, Verdict, compare_map};

#[derive(Clone)]
pub struct VerifyOptions {
    pub paths: Vec<PathBuf>,
    pub before: Option<PathBuf>,
    pub after: Option<PathBuf>,
    pub kernel: Option<PathBuf>,
    pub accel: qemu::Accel,
    pub cpus: u32,
    pub workload: Option<String>,
    pub timeout: Duration,
    pub includes: Vec<PathBuf>,
    pub defines: Vec<String>,
    pub cflags: Vec<String>,
    pub keep: bool,
    pub json: bool,
    pub engine: Options,
    /// Measure events per second (this many events a program) instead of comparing.
    pub bench: Option<u64>,
    /// Measure how long each original tool alone takes to start instead (`bench::start`).
    pub bench_start: bool,
    /// Run the programs' own tools (tool level), not only their events.
    pub tools: bool,
    /// The command-line arguments the tools run with (tool level).
    pub args: Vec<String>,
    /// Those of one tool, by its name (`tool_name`), instead of `args` (`--tool-args`).
    pub tool_args: Vec<(String, Vec<String>)>,
    /// C and Rust programs verified in one boot, at most (`boots`).
    pub per_boot: usize,
    /// The user's build of C tools (`--build`), and the directory it runs in a copy of.
    pub build: Option<String>,
    pub build_root: Option<PathBuf>,
}

/// One program to verify: its BPF source before and after migration.
#[derive(Clone)]
pub(crate) struct Pair {
    pub(crate) name: String,
    pub(crate) before: PathBuf,
    pub(crate) after: PathBuf,
    /// Include directories searched before the source's own (the migrated copies of a
    /// program's other changed files).
    pub(crate) after_includes: Vec<PathBuf>,
    /// A BCC tool: `before` and `after` are the Python tools; verified at tool level only,
    /// since the tool compiles its C itself.
    pub(crate) bcc: bool,
    /// `after` lies in verify's own migrated tree, which holds only the changed files (not
    /// in an --after directory, which is the user's and whole).
    pub(crate) partial: bool,
}

#[derive(Debug)]
pub struct ProgramReport {
    pub name: String,
    pub verdict: Verdict,
    pub maps: Vec<MapReport>,
    pub problems: Vec<String>,
    /// The tool level: what the program's own user space printed, or why it was not run.
    pub tool: Option<tool::ToolReport>,
    pub tool_skipped: Option<String>,
    /// `--strategy compat`: the path this report is of, `ringbuf` (the guest as it is) or
    /// `perfbuf` (the guest refusing ring buffers, as a kernel before 5.8 does).
    pub path: Option<&'static str>,
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Ctrl-C (or SIGTERM) during verify: the run stops at its next check, qemu is killed and
/// the work directory removed as the stack unwinds normally.
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Exit code: 0 equivalent, 1 different or inconclusive, 2 could not run.
pub fn run(opts: &VerifyOptions) -> u8 {
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    if let Some(n) = opts.bench {
        return match bench::run(opts, n) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: the benchmark could not run: {e:#}");
                2
            }
        };
    }
    if opts.bench_start {
        return match bench::start(opts) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: the benchmark could not run: {e:#}");
                2
            }
        };
    }
    match run_inner(opts) {
        Ok((reports, timing)) => {
            let code = if reports.iter().all(|r| r.verdict == Verdict::Equivalent) {
                0
            } else {
                1
            };
            print_reports(opts, &reports, &timing);
            code
        }
        Err(e) => {
            if opts.json {
                println!(
                    "{}",
                    json!({"type": "verdict", "verdict": "error", "message": format!("{e:#}")})
                );
            }
            eprintln!("error: verify could not run: {e:#}");
            2
        }
    }
}

struct Timing {
    accel: &'static str,
    boot: Duration,
    vm: Duration,
    total: Duration,
    workdir: Option<PathBuf>,
    workload_log: Vec<String>,
    workload_steps: Vec<String>,
}

/// The pairs' indices in the boots that verify them: each BCC tool a boot of its own (three
/// instances compiling C for a minute or more each), the other programs `per_boot` at most
/// to a boot (each loads six times, its events and its tool, and a boot of many loads is one
/// failure away from losing them all), in order.
fn boots(pairs: &[Pair], per_boot: usize) -> Vec<Vec<usize>> {
    let mut boots: Vec<Vec<usize>> = Vec::new();
    let mut others: Vec<usize> = Vec::new();
    for (k, p) in pairs.iter().enumerate() {
        if p.bcc {
            boots.push(vec![k]);
        } else {
            others.push(k);
        }
    }
    let mut all: Vec<Vec<usize>> = others
        .chunks(per_boot.max(1))
        .map(<[usize]>::to_vec)
        .collect();
    all.append(&mut boots);
    all
}

/// What one boot gave: its programs' reports and its guest's times and workload.
struct Boot {
    reports: Vec<ProgramReport>,
    accel: &'static str,
    boot: Duration,
    vm: Duration,
    workload_log: Vec<String>,
    workload_steps: Vec<String>,
}

fn run_inner(opts: &VerifyOptions) -> Result<(Vec<ProgramReport>, Timing)> {
    let started = Instant::now();
    let work = work_dir("bpf-migrate-verify-")?;
    let wd = work.path().to_path_buf();
    let pairs = collect_pairs(opts, &wd)?;
    if pairs.is_empty() {
        bail!(
            "nothing to verify: no migratable BPF program found (bpf-migrate --diff shows what it would change)"
        );
    }
    for (name, _) in &opts.tool_args {
        if !pairs.iter().any(|p| tool_name(p) == *name) {
            let mut names: Vec<String> = pairs.iter().map(tool_name).collect();
            names.sort();
            names.dedup();
            bail!(
                "--tool-args {name}=...: no program to verify is named {name} (the names: {})",
                names.join(", ")
            );
        }
    }
    let (kernel, _) = kernel::find(opts.kernel.as_deref())?;
    let agent = agent_path()?;
    let boots = boots(&pairs, opts.per_boot);
    let mut timing = Timing {
        accel: "",
        boot: Duration::ZERO,
        vm: Duration::ZERO,
        total: Duration::ZERO,
        workdir: None,
        workload_log: Vec::new(),
        workload_steps: Vec::new(),
    };
    let mut reports = Vec::new();
    if opts.engine.strategy == Strategy::Compat {
        // Each path against the original: the guest as it is, then refusing ring buffers.
        for (path, perf, dir) in [
            ("ringbuf", false, wd.clone()),
            ("perfbuf", true, wd.join("perf")),
        ] {
            fs::create_dir_all(&dir)?;
            let mut on_path = run_boots(
                opts,
                &kernel,
                &agent,
                &pairs,
                &boots,
                &dir,
                perf,
                &mut timing,
            )?;
            for r in &mut on_path {
                r.path = Some(path);
            }
            reports.append(&mut on_path);
        }
    } else {
        reports = run_boots(
            opts,
            &kernel,
            &agent,
            &pairs,
            &boots,
            &wd,
            false,
            &mut timing,
        )?;
    }
    timing.total = started.elapsed();
    if opts.keep {
        timing.workdir = Some(work.keep());
    }
    Ok((reports, timing))
}

/// Runs `boots` (the pairs' indices of each) in turn in `wd`, the guest refusing ring buffers
/// when `perf`; the pairs' reports in order, and the times and workload into `timing`.
#[allow(clippy::too_many_arguments)]
fn run_boots(
    opts: &VerifyOptions,
    kernel: &Path,
    agent: &Path,
    pairs: &[Pair],
    boots: &[Vec<usize>],
    wd: &Path,
    perf: bool,
    timing: &mut Timing,
) -> Result<Vec<ProgramReport>> {
    let mut reports: Vec<Option<ProgramReport>> = pairs.iter().map(|_| None).collect();
    for (b, ks) in boots.iter().enumerate() {
        let group: Vec<Pair> = ks.iter().map(|&k| pairs[k].clone()).collect();
        // One boot, its own directory; several, one each (`bN/`).
        let bwd = if boots.len() == 1 {
            wd.to_path_buf()
        } else {
            wd.join(format!("b{b}"))
        };
        fs::create_dir_all(&bwd)?;
        let done = prepare_boot(opts, kernel, agent, &group, &bwd, perf)
            .and_then(|boot| run_boot(opts, kernel, boot, &group, &bwd, perf));
        match done {
            Ok(done) => {
                for (&k, r) in ks.iter().zip(done.reports) {
                    reports[k] = Some(r);
                }
                timing.accel = done.accel;
                timing.boot += done.boot;
                timing.vm += done.vm;
                let prefix = if boots.len() == 1 {
                    String::new()
                } else {
                    format!("boot {} of {}: ", b + 1, boots.len())
                };
                timing.workload_log.extend(
                    done.workload_log
                        .into_iter()
                        .map(|l| format!("{prefix}{l}")),
                );
                if timing.workload_steps.is_empty() {
                    timing.workload_steps = done.workload_steps;
                }
            }
            // A guest that panics or hangs ends its own boot: the others go on.
            Err(e) if boots.len() > 1 && !interrupted() => {
                for &k in ks {
                    reports[k] = Some(ProgramReport::new(
                        &pairs[k].name,
                        Verdict::Inconclusive,
                        vec![format!(
                            "the boot that verified it (boot {} of {}) failed: {e:#}",
                            b + 1,
                            boots.len()
                        )],
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(reports.into_iter().map(Option::unwrap).collect())
}

/// One boot put together: its initramfs and manifest, the guest's map bytes, and what the
/// judging needs of its programs.
pub(crate) struct Prepared {
    pub(crate) cpio: initramfs::Cpio,
    pub(crate) manifest: Manifest,
    pub(crate) map_bytes: u64,
    unbuilt: Vec<Option<ProgramReport>>,
    tool_plans: Vec<ToolPlan>,
    objdir: PathBuf,
}

/// Verifies `pairs` in one boot (`boot`, as `prepare_boot` made it), in the work directory
/// `wd`; on `--strategy compat`'s perf
/// path when `perf` (the guest refuses ring buffers, and the agent makes the migrated maps
/// perf event arrays as the loader would).
fn run_boot(
    opts: &VerifyOptions,
    kernel: &Path,
    boot: Prepared,
    pairs: &[Pair],
    wd: &Path,
    perf: bool,
) -> Result<Boot> {
    let Prepared {
        cpio,
        manifest,
        map_bytes,
        unbuilt,
        mut tool_plans,
        objdir,
    } = boot;
    let (vm, report) = boot_agent(opts, kernel, cpio, &manifest, wd, map_bytes)?;
    let Report::Run(result) = report else {
        bail!("the guest agent answered a verify run with something else: {report:?}");
    };
    // What each tool printed, for a look with --keep.
    for t in &result.tools {
        let base = objdir.join("tools").join(t.id.replace('/', "-"));
        fs::write(base.with_extension("stdout"), &t.stdout)?;
        fs::write(base.with_extension("stderr"), &t.stderr)?;
    }
    // On the perf path the migrated maps are perf event arrays.
    let migrated_kind = if perf {
        BufferKind::Perf
    } else {
        BufferKind::Ring
    };
    let mut reports = judge_all(opts, pairs, unbuilt, &result, &objdir, migrated_kind)?;
    // Without the refusal, the perf path was not taken: nothing was proven of it.
    if let Some(e) = &result.refuse_ringbuf_error {
        for r in &mut reports {
            r.verdict = Verdict::Inconclusive;
            r.problems.push(format!(
                "the guest could not be made to refuse ring buffers, so the perf path was not tried: {e}"
            ));
        }
    }
    for ((k, r), p) in reports.iter_mut().enumerate().zip(pairs) {
        let plan = std::mem::take(&mut tool_plans[k]);
        // The migrated BPF source counts lost records (`MAP_lost_count()`, bpf-migrate's
        // lost counter) for the loader's callback.
        let lost_kept = fs::read_to_string(&p.after).is_ok_and(|t| t.contains("_lost_count("));
        judge_tool(r, k, p.bcc, plan, &result, opts.cpus == 1, lost_kept);
    }
    Ok(Boot {
        reports,
        accel: vm.accel,
        boot: vm.boot,
        vm: vm.total,
        workload_log: result.workload_log,
        workload_steps: result.workload_steps,
    })
}

/// Builds what one boot of `pairs` needs in `wd` (see [`run_boot`]): the objects, the
/// tools, the workload's own programs, the modules and disks, and the manifest.
pub(crate) fn prepare_boot(
    opts: &VerifyOptions,
    kernel: &Path,
    agent: &Path,
    pairs: &[Pair],
    wd: &Path,
    perf: bool,
) -> Result<Prepared> {
    let objdir = wd.join("objs");
    fs::create_dir_all(&objdir)?;
    let mut cpio = initramfs::Cpio::default();
    cpio.executable("/init", agent)?;
    // For the workload's readline step (a uprobe on bash's readline() sees it).
    if let Some(bash) = which("bash") {
        cpio.executable(bpf_migrate_protocol::GUEST_BASH, &bash)?;
    }
    let (manifest_objs, unbuilt) = build_objects(opts, kernel, pairs, &objdir, perf, &mut cpio)?;
    if manifest_objs.is_empty() && !pairs.iter().any(|p| p.bcc) {
        let why: Vec<String> = unbuilt
            .into_iter()
            .flatten()
            .map(|r| format!("{}: {}", r.name, r.problems.join("\n")))
            .collect();
        bail!("no program builds:\n{}", why.join("\n"));
    }
    let workload = guest_workload(opts, &mut cpio)?;
    let texts = boot_texts(opts, pairs);
    let file_systems = wanted_file_systems(&texts);
    let ring_poison = build_own_program(
        opts,
        kernel,
        wd,
        &objdir,
        &mut cpio,
        "ring_poison",
        &format!(
            "#define RING_POISON {}\n{RING_POISON}",
            compare::RING_POISON
        ),
        "the ring buffer poison program",
    )?;
    let tcp_drop = build_own_program(
        opts,
        kernel,
        wd,
        &objdir,
        &mut cpio,
        "tcp_drop",
        &format!(
            "#define DROP_PORT {}\n{TCP_DROP}",
            bpf_migrate_protocol::TCP_DROP_PORT
        ),
        "the workload's tc program that drops a TCP segment",
    )?;
    // The perf path of --strategy compat: the guest refuses ring buffers (`REFUSE_RINGBUF`).
    let refuse_ringbuf = if perf {
        Some(build_own_program(
            opts,
            kernel,
            wd,
            &objdir,
            &mut cpio,
            "refuse_ringbuf",
            REFUSE_RINGBUF,
            "the ring buffer refusal program",
        )?)
    } else {
        None
    };
    let mut host_root = None;
    let (tools, tool_plans) = build_tools(
        opts,
        kernel,
        pairs,
        &unbuilt,
        &objdir,
        &mut cpio,
        &mut host_root,
    )?;
    let tools_ready_ms = tools_wait_ms(&tools);
    let database = in_host_root(
        database::wanted(&texts),
        &host_root,
        "database server",
        || database::provision(&kernel::cache_dir()),
    );
    let nfs = in_host_root(
        nfs::wanted(&texts),
        &host_root,
        "NFS server",
        nfs::provision,
    );
    // The NFS modules only where its server can run.
    let (modules, scratch_disks, scratch_missing) = guest_modules_and_disks(
        kernel,
        wd,
        &file_systems,
        matches!(nfs, Some(Ok(()))),
        &mut cpio,
    )?;
    let manifest = Manifest {
        objects: manifest_objs,
        workload,
        builtin_workload: true,
        ring_poison: Some(ring_poison),
        bench: None,
        tools,
        tools_ready_ms,
        host_root,
        refuse_ringbuf,
        modules,
        scratch_disks,
        scratch_missing,
        tcp_drop: Some(tcp_drop),
        database,
        nfs,
    };
    // Each built program loads three times for the events, three more for its loader.
    let map_bytes = pairs
        .iter()
        .enumerate()
        .filter(|(k, p)| !p.bcc && unbuilt[*k].is_none())
        .map(|(k, _)| {
            let of = |v: &str| memory::map_bytes(&objdir.join(format!("p{k}-{v}.o")), opts.cpus);
            let loads = if matches!(tool_plans[k], ToolPlan::Run) {
                2
            } else {
                1
            };
            loads * (2 * of("orig") + of("new"))
        })
        .sum();
    Ok(Prepared {
        cpio,
        manifest,
        map_bytes,
        unbuilt,
        tool_plans,
        objdir,
    })
}

/// Builds both versions of every pair into `objdir` and puts them in the initramfs, the
/// original twice (the second load finds its per-CPU arrays poisoned). Returns the manifest's
/// objects and, per pair, its report when it does not build: such a program is judged
/// without the guest, and the others go on.
fn build_objects(
    opts: &VerifyOptions,
    kernel: &Path,
    pairs: &[Pair],
    objdir: &Path,
    perf: bool,
    cpio: &mut initramfs::Cpio,
) -> Result<(Vec<ObjSpec>, Vec<Option<ProgramReport>>)> {
    let mut manifest_objs = Vec::new();
    let mut unbuilt: Vec<Option<ProgramReport>> = Vec::new();
    for (k, p) in pairs.iter().enumerate() {
        if p.bcc {
            unbuilt.push(None);
            continue;
        }
        let before = objdir.join(format!("p{k}-orig.o"));
        let after = objdir.join(format!("p{k}-new.o"));
        let built = compile(opts, kernel, &p.before, &[], &before)
            .map_err(|e| (Verdict::Inconclusive, "the original does not build", e))
            .and_then(|()| {
                compile(opts, kernel, &p.after, &p.after_includes, &after)
                    .map_err(|e| (Verdict::Different, "the migrated program does not build", e))
            });
        if let Err((verdict, what, e)) = built {
            unbuilt.push(Some(ProgramReport::new(
                &p.name,
                verdict,
                vec![format!("{what}: {e:#}")],
            )));
            continue;
        }
        unbuilt.push(None);
        // On the perf path, the migrated maps become perf event arrays before load.
        let compat_perf = if perf {
            compat_flags(&after)?
        } else {
            Vec::new()
        };
        for (id, obj, poison) in [
            ("orig-1", &before, 0),
            ("orig-2", &before, compare::HEAP_POISON),
            ("new", &after, 0),
        ] {
            let guest = format!("/objs/p{k}-{id}.o");
            cpio.file(&guest, &fs::read(obj)?, 0o644);
            manifest_objs.push(ObjSpec {
                id: format!("p{k}/{id}"),
                path: guest,
                poison,
                compat_perf: if id == "new" {
                    compat_perf.clone()
                } else {
                    Vec::new()
                },
            });
        }
    }
    Ok((manifest_objs, unbuilt))
}

/// `--workload` as the guest runs it: its executable copied into the initramfs.
fn guest_workload(opts: &VerifyOptions, cpio: &mut initramfs::Cpio) -> Result<Option<Vec<String>>> {
    let Some(cmd) = &opts.workload else {
        return Ok(None);
    };
    let mut argv: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
    if argv.is_empty() {
        bail!("--workload is empty");
    }
    let host = which(&argv[0]).ok_or_else(|| anyhow!("--workload: `{}` not found", argv[0]))?;
    let guest = format!("/work/{}", host.file_name().unwrap().to_string_lossy());
    cpio.executable(&guest, &host)?;
    argv[0] = guest;
    Ok(Some(argv))
}

/// Builds one of verify's own BPF programs, C `source`, into the initramfs as `/objs/NAME.o`
/// (`what` names it in errors).
#[allow(clippy::too_many_arguments)]
fn build_own_program(
    opts: &VerifyOptions,
    kernel: &Path,
    wd: &Path,
    objdir: &Path,
    cpio: &mut initramfs::Cpio,
    name: &str,
    source: &str,
    what: &str,
) -> Result<String> {
    let obj = objdir.join(format!("{name}.o"));
    let src = wd.join(format!("{name}.bpf.c"));
    fs::write(&src, source)?;
    compile(opts, kernel, &src, &[], &obj).with_context(|| format!("building {what}"))?;
    let guest = format!("/objs/{name}.o");
    cpio.file(&guest, &fs::read(&obj)?, 0o644);
    Ok(guest)
}

/// The flags `MAP_use_perf` that `--strategy compat` put in `obj`'s `.rodata`, with their
/// offsets there: `nm` gives a data symbol's offset in its section.
fn compat_flags(obj: &Path) -> Result<Vec<CompatFlag>> {
    let out = Command::new("nm")
        .arg("--defined-only")
        .arg(obj)
        .output()
        .with_context(|| format!("running nm on {}", obj.display()))?;
    if !out.status.success() {
        bail!(
            "nm {}: {}",
            obj.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut flags = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [addr, "R", name] = f[..]
            && let Some(map) = name.strip_suffix(engine::COMPAT_FLAG_SUFFIX)
        {
            flags.push(CompatFlag {
                map: map.to_string(),
                rodata_offset: u32::from_str_radix(addr, 16)
                    .with_context(|| format!("nm {}: `{line}`", obj.display()))?,
            });
        }
    }
    Ok(flags)
}

/// A report per pair, in order: the one made when it did not build, or the guest's results
/// judged.
/// The tool level of one program: its user space built, or why not.
#[derive(Default)]
enum ToolPlan {
    /// The program did not build, or its user space was not found.
    #[default]
    None,
    Skipped(String),
    /// The loader did not build: its verdict and why.
    Unbuilt(Verdict, String),
    Run,
}

/// Builds each built program's user space, both versions, into the initramfs; the tools to
/// run (each original twice, each migration once) and what became of each program's.
fn build_tools(
    opts: &VerifyOptions,
    kernel: &Path,
    pairs: &[Pair],
    unbuilt: &[Option<ProgramReport>],
    objdir: &Path,
    cpio: &mut initramfs::Cpio,
    host_root: &mut Option<HostRoot>,
) -> Result<(Vec<ToolSpec>, Vec<ToolPlan>)> {
    let mut specs = Vec::new();
    let mut plans = Vec::new();
    let tooldir = objdir.join("tools");
    fs::create_dir_all(&tooldir)?;
    for (k, p) in pairs.iter().enumerate() {
        if unbuilt[k].is_some() {
            plans.push(ToolPlan::None);
            continue;
        }
        if !opts.tools {
            plans.push(ToolPlan::Skipped("not run (--events-only)".into()));
            continue;
        }
        if p.bcc {
            match bcc_tool(opts, kernel, p, k, host_root) {
                Ok(tools) => {
                    specs.extend(tools);
                    plans.push(ToolPlan::Run);
                }
                Err(why) => plans.push(ToolPlan::Skipped(why)),
            }
            continue;
        }
        let built = match build_user_space(opts, kernel, p, k, objdir, &tooldir) {
            Ok(Some(b)) => b,
            Ok(None) => {
                plans.push(ToolPlan::Skipped(
                    "no user space found for it (a C loader beside it that defines main and includes its .skel.h or opens its .bpf.o, the libbpf-rs crate it belongs to, or a Go main package beside it that builds it with bpf2go or opens its object): the tool level was not run".into(),
                ));
                continue;
            }
            Err(NotBuilt::Skipped(why)) => {
                plans.push(ToolPlan::Skipped(why));
                continue;
            }
            Err(NotBuilt::Failed(v, why)) => {
                plans.push(ToolPlan::Unbuilt(v, why));
                continue;
            }
        };
        for (id, bin, obj) in [("orig", &built.orig, "orig"), ("new", &built.new, "new")] {
            cpio.executable(&format!("/tools/{}", tool::binary_name(k, id)), bin)?;
            // A loader that opens its object by name finds it in its working directory.
            if let Some(opens) = &built.opens {
                let at: PathBuf = Path::new(opens)
                    .components()
                    .filter(|c| !matches!(c, std::path::Component::CurDir))
                    .collect();
                let guest = if at.is_absolute() {
                    at
                } else {
                    Path::new(&format!("/tools/{}.d", tool::binary_name(k, id))).join(at)
                };
                let object = fs::read(objdir.join(format!("p{k}-{obj}.o")))?;
                cpio.file(&guest.to_string_lossy(), &object, 0o644);
            }
        }
        for (id, bin) in [("orig-1", "orig"), ("orig-2", "orig"), ("new", "new")] {
            let mut argv = vec![format!("/tools/{}", tool::binary_name(k, bin))];
            argv.extend(tool_argv(opts, p).iter().cloned());
            specs.push(ToolSpec {
                id: format!("p{k}/{id}"),
                argv,
                cwd: built
                    .opens
                    .as_ref()
                    .map(|_| format!("/tools/{}.d", tool::binary_name(k, bin))),
                host_root: false,
            });
        }
        plans.push(ToolPlan::Run);
    }
    // The host's time zone, as a user's machine has one: a tool that prints times of day
    // calls localtime(), and glibc without `/etc/localtime` tries to open it at every call, so
    // an open tracer's every line made one more event (opensnoop fed itself without end).
    if specs.iter().any(|s| !s.host_root)
        && let Ok(zone) = std::fs::read(LOCALTIME)
    {
        cpio.file(LOCALTIME, &zone, 0o644);
    }
    Ok((specs, plans))
}

const LOCALTIME: &str = "/etc/localtime";

/// The processes of C, Rust and Go tools among `tools` (not BCC's, which run on the host's
/// root): what sizes a boot's guest memory and its wait for the tools to start.
fn own_tool_processes(tools: &[ToolSpec]) -> u64 {
    tools.iter().filter(|t| !t.host_root).count() as u64
}

/// How long the agent waits for `tools` to start. BCC tools compile their C when they
/// start: under emulation, up to minutes each. The others start all at once, each parsing
/// the kernel's BTF: a boot of 16 libbpf tools (48 processes on one vCPU) took over a
/// minute. --timeout does not count the wait (qemu::VmConfig::tools_wait): the workload has
/// all of it, however long the tools took to start.
fn tools_wait_ms(tools: &[ToolSpec]) -> u64 {
    let own_tools = own_tool_processes(tools);
    let bcc_tools = tools.len() as u64 - own_tools;
    60_000 + 120_000 * bcc_tools + 3_000 * own_tools
}

/// A program's name for `--tool-args`: its BPF source's or BCC tool's file name without
/// `.bpf.c`, `.c`, `.py` or `.python`, and without the `-bpfcc` Debian gives installed tools.
fn tool_name(p: &Pair) -> String {
    let file = p
        .before
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = [".bpf.c", ".c", ".python", ".py"]
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .unwrap_or(&file);
    stem.strip_suffix("-bpfcc").unwrap_or(stem).to_string()
}

/// The command line a program's tool runs with: its own `--tool-args`, else `--args`.
fn tool_argv<'a>(opts: &'a VerifyOptions, p: &Pair) -> &'a [String] {
    args_for(&tool_name(p), &opts.args, &opts.tool_args)
}

fn args_for<'a>(
    name: &str,
    args: &'a [String],
    tool_args: &'a [(String, Vec<String>)],
) -> &'a [String] {
    tool_args
        .iter()
        .find(|(n, _)| n == name)
        .map_or(args, |(_, a)| a)
}

/// A BCC tool's three runs, under the host's own python3 and python3-bpfcc in the host's
/// root file system (mounted in the guest over 9p): the first one also prepares that root
/// (the guest kernel's headers into the cache; its modules are every boot's:
/// `guest_modules_and_disks`). `Err` says
/// why the tool cannot run.
fn bcc_tool(
    opts: &VerifyOptions,
    kernel: &Path,
    p: &Pair,
    k: usize,
    host_root: &mut Option<HostRoot>,
) -> Result<Vec<ToolSpec>, String> {
    const PYTHON: &str = "/usr/bin/python3";
    if host_root.is_none() {
        let bcc = Command::new(PYTHON).args(["-c", "import bcc"]).output();
        if !bcc.is_ok_and(|o| o.status.success()) {
            return Err(format!(
                "the BCC tool was not run: {PYTHON} cannot import bcc (apt-get install python3-bpfcc)"
            ));
        }
        let g =
            kernel::guest_kernel(kernel).map_err(|e| format!("the BCC tool was not run: {e:#}"))?;
        // Host paths, seen in the guest under the host's root: absolute.
        let host_path = |p: &Path| {
            std::path::absolute(p)
                .map(|a| a.display().to_string())
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        *host_root = Some(HostRoot {
            release: g.release,
            headers: host_path(&g.headers)?,
            headers_common: host_path(&g.headers_common)?,
        });
    }
    let abs = |f: &Path| std::path::absolute(f).map_err(|e| format!("{}: {e}", f.display()));
    let (before, after) = (abs(&p.before)?, abs(&p.after)?);
    // A migrated tree of verify's own holds only what changed: the tool's other files
    // (modules it imports, data it reads) are copied beside it from the original's directory.
    // (An --after directory is the user's, and whole.)
    if p.partial {
        siblings_beside(&before, &after).map_err(|e| format!("the BCC tool was not run: {e:#}"))?;
    }
    let mut specs = Vec::new();
    for (id, tool) in [("orig-1", &before), ("orig-2", &before), ("new", &after)] {
        let mut argv = vec![PYTHON.to_string(), tool.display().to_string()];
        argv.extend(tool_argv(opts, p).iter().cloned());
        specs.push(ToolSpec {
            id: format!("p{k}/{id}"),
            argv,
            cwd: Some(dir_of(tool).display().to_string()),
            host_root: true,
        });
    }
    Ok(specs)
}

/// Copies the files of `original`'s directory (not subdirectories; up to 1 MiB each) that
/// are missing beside `migrated`.
fn siblings_beside(original: &Path, migrated: &Path) -> Result<()> {
    let (from, to) = (dir_of(original), dir_of(migrated));
    if from == to {
        return Ok(());
    }
    for e in fs::read_dir(&from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        let small = e
            .metadata()
            .is_ok_and(|m| m.is_file() && m.len() <= 1 << 20);
        if small && !dest.exists() {
            fs::copy(e.path(), &dest)?;
        }
    }
    Ok(())
}

/// A program's user space, built for both versions.
struct BuiltTool {
    orig: PathBuf,
    new: PathBuf,
    /// The object path a loader opens at run time (see `tool::Loader::opens`).
    opens: Option<String>,
}

/// Why a program's user space was not built: what the host lacks to build it (the tool
/// level is skipped, the events still compared), or a failed build with its verdict.
enum NotBuilt {
    Skipped(String),
    Failed(Verdict, String),
}

impl From<(Verdict, String)> for NotBuilt {
    fn from((v, why): (Verdict, String)) -> Self {
        NotBuilt::Failed(v, why)
    }
}

/// The program's C loader, libbpf-rs crate or Go reader built for both versions (`None`: it
/// has none); an original that does not build is inconclusive, a migration that does not is
/// different.
fn build_user_space(
    opts: &VerifyOptions,
    kernel: &Path,
    p: &Pair,
    k: usize,
    objdir: &Path,
    tooldir: &Path,
) -> Result<Option<BuiltTool>, NotBuilt> {
    let (orig, new) = (
        tooldir.join(tool::binary_name(k, "orig")),
        tooldir.join(tool::binary_name(k, "new")),
    );
    let original = |what: &str, e: anyhow::Error| {
        (
            Verdict::Inconclusive,
            format!("the original {what} does not build: {e:#}"),
        )
    };
    let migrated = |what: &str, e: anyhow::Error| {
        (
            Verdict::Different,
            format!("the migrated {what} does not build: {e:#}"),
        )
    };
    if let Some(cmd) = &opts.build
        && tool::find_crate(&p.before).is_none()
        && tool::find_go(&p.before).is_none()
    {
        return build_with_command(opts, kernel, p, k, objdir, cmd, (&orig, &new)).map(Some);
    }
    if let Some(loader) = tool::find_loader(&p.before) {
        // Both versions' objects must sit at the path it opens, in their own directories.
        if outside_cwd(loader.opens.as_deref()) {
            return Err(NotBuilt::Failed(
                Verdict::Inconclusive,
                format!(
                    "{} opens its object at {}, outside its working directory: the tool level was not run",
                    loader.main.display(),
                    loader.opens.as_deref().unwrap_or_default()
                ),
            ));
        }
        let mut orig_inc = vec![dir_of(&p.before)];
        orig_inc.extend(opts.includes.iter().cloned());
        let mut new_inc = p.after_includes.clone();
        new_inc.extend(orig_inc.iter().cloned());
        let migrated_main = dir_of(&p.after).join(loader.main.file_name().unwrap_or_default());
        let new_main = if migrated_main.is_file() {
            migrated_main
        } else {
            loader.main.clone()
        };
        let what = |m: &Path| format!("loader {}", m.display());
        let obj = |v: &str| objdir.join(format!("p{k}-{v}.o"));
        // Both versions at once: two compilers on two cores.
        let (o, n) = std::thread::scope(|s| {
            let o = s.spawn(|| tool::build(&loader, &loader.main, &obj("orig"), &orig_inc, &orig));
            let n = tool::build(&loader, &new_main, &obj("new"), &new_inc, &new);
            (o.join().expect("the build thread does not panic"), n)
        });
        o.map_err(|e| NotBuilt::from(original(&what(&loader.main), e)))?;
        n.map_err(|e| NotBuilt::from(migrated(&what(&new_main), e)))?;
        return Ok(Some(BuiltTool {
            orig,
            new,
            opens: loader.opens,
        }));
    }
    let Some(krate) = tool::find_crate(&p.before) else {
        return match tool::find_go(&p.before) {
            Some(go) => build_go_reader(kernel, p, &go, objdir, (&orig, &new)).map(Some),
            None => Ok(None),
        };
    };
    let what = format!("crate {}", krate.root.display());
    let target = std::env::var_os("BPF_MIGRATE_CARGO_TARGET")
        .map(PathBuf::from)
        .unwrap_or_else(|| kernel::cache_dir().join("cargo-target"));
    let vmlinux = kernel::vmlinux_h(kernel).ok();
    // The migrated crate is where the original's is relative to the BPF source: a directory
    // of the migrated tree (which holds only the changed files), or, with --after, a crate.
    let migrated_root = p
        .after
        .ancestors()
        .nth(krate.depth)
        .filter(|r| p.partial || r.join("Cargo.toml").is_file());
    if migrated_root.is_none() {
        return Err(NotBuilt::Failed(
            Verdict::Inconclusive,
            format!(
                "the migrated crate of {} was not found where the original's is ({} levels above the BPF source)",
                p.after.display(),
                krate.depth
            ),
        ));
    }
    let copies = objdir.join("crates");
    tool::build_crate(
        &krate,
        None,
        &copies.join(format!("p{k}-orig")),
        &target,
        vmlinux.as_deref(),
        &orig,
    )
    .map_err(|e| NotBuilt::from(original(&what, e)))?;
    tool::build_crate(
        &krate,
        migrated_root,
        &copies.join(format!("p{k}-new")),
        &target,
        vmlinux.as_deref(),
        &new,
    )
    .map_err(|e| NotBuilt::from(migrated(&what, e)))?;
    Ok(Some(BuiltTool {
        orig,
        new,
        opens: None,
    }))
}

/// A C program's tool built by the user's command (`--build`) for both versions into
/// `(orig, new)`: in a copy of the program's directory (or of `--build-root`), the migrated
/// version's with the migrated files laid over it. The tool is the executable named after the
/// loader (`x` for `x.c`, else for `x.bpf.c`) that the command leaves in the program's directory.
fn build_with_command(
    opts: &VerifyOptions,
    kernel: &Path,
    p: &Pair,
    k: usize,
    objdir: &Path,
    cmd: &str,
    (orig, new): (&Path, &Path),
) -> Result<BuiltTool, NotBuilt> {
    let dir = dir_of(&p.before);
    let root = opts.build_root.clone().unwrap_or_else(|| dir.clone());
    let abs = |d: &Path| std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf());
    let Ok(rel) = abs(&dir).strip_prefix(abs(&root)).map(Path::to_path_buf) else {
        return Err(NotBuilt::Failed(
            Verdict::Inconclusive,
            format!(
                "{} is not inside --build-root {}: the tool level was not run",
                p.before.display(),
                root.display()
            ),
        ));
    };
    let loader = tool::find_loader(&p.before);
    let exe = match &loader {
        Some(l) => l
            .main
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        None => p
            .before
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .trim_end_matches(".bpf.c")
            .to_string(),
    };
    let vmlinux = kernel::vmlinux_h(kernel).ok();
    let copies = objdir.join("builds");
    let build = |version: &str, migrated: Option<&Path>, out: &Path| {
        tool::build_with_command(
            &root,
            migrated,
            &rel,
            cmd,
            &exe,
            vmlinux.as_deref(),
            &copies.join(format!("p{k}-{version}")),
            out,
        )
    };
    let what = format!("tool `{exe}` (built with `{cmd}`)");
    build("orig", None, orig).map_err(|e| {
        NotBuilt::Failed(
            Verdict::Inconclusive,
            format!("the original {what} does not build: {e:#}"),
        )
    })?;
    build("new", Some(&dir_of(&p.after)), new).map_err(|e| {
        NotBuilt::Failed(
            Verdict::Different,
            format!("the migrated {what} does not build: {e:#}"),
        )
    })?;
    Ok(BuiltTool {
        orig: orig.to_path_buf(),
        new: new.to_path_buf(),
        opens: loader.and_then(|l| l.opens),
    })
}

/// Whether a tool opens its object outside its working directory (an absolute path, or one
/// through `..`): both versions' objects cannot then sit where it looks.
fn outside_cwd(opens: Option<&str>) -> bool {
    opens.is_some_and(|o| {
        Path::new(o).is_absolute()
            || Path::new(o)
                .components()
                .any(|c| c == std::path::Component::ParentDir)
    })
}

/// A Go reader built for both versions into `(orig, new)`: the original's directory, and
/// for the migration that directory with the migrated files laid over it (a directory of
/// verify's migrated tree holds only what changed; an --after directory is whole). Without
/// `go`, cilium/ebpf or clang on the host, the tool level is skipped.
fn build_go_reader(
    kernel: &Path,
    p: &Pair,
    go: &tool::GoTool,
    objdir: &Path,
    (orig, new): (&Path, &Path),
) -> Result<BuiltTool, NotBuilt> {
    if outside_cwd(go.opens.as_deref()) {
        return Err(NotBuilt::Failed(
            Verdict::Inconclusive,
            format!(
                "{} opens its object at {}, outside its working directory: the tool level was not run",
                go.dir.display(),
                go.opens.as_deref().unwrap_or_default()
            ),
        ));
    }
    let vmlinux = kernel::vmlinux_h(kernel).ok();
    let cache = kernel::cache_dir().join("go-build");
    let copies = objdir.join("go");
    let what = format!("Go reader in {}", go.dir.display());
    let result = |r: Result<(), tool::GoBuildError>, v: Verdict, which: &str| match r {
        Ok(()) => Ok(()),
        Err(tool::GoBuildError::Missing(why)) => Err(NotBuilt::Skipped(format!(
            "the {what} was not built ({why}): the tool level was not run"
        ))),
        Err(tool::GoBuildError::Failed(e)) => Err(NotBuilt::Failed(
            v,
            format!("the {which} {what} does not build: {e:#}"),
        )),
    };
    let name = go.dir.file_name().unwrap_or_default().to_string_lossy();
    result(
        tool::build_go(
            go,
            None,
            &copies.join(format!("orig-{name}")),
            vmlinux.as_deref(),
            &cache,
            orig,
        ),
        Verdict::Inconclusive,
        "original",
    )?;
    result(
        tool::build_go(
            go,
            Some(&dir_of(&p.after)),
            &copies.join(format!("new-{name}")),
            vmlinux.as_deref(),
            &cache,
            new,
        ),
        Verdict::Different,
        "migrated",
    )?;
    Ok(BuiltTool {
        orig: orig.to_path_buf(),
        new: new.to_path_buf(),
        opens: go.opens.clone(),
    })
}

/// The tool level of program `k` into its report. `bcc`: a BCC tool, which has no other
/// level, so that a tool level not run leaves nothing compared. `lost_kept`: its migration
/// counts lost records for the tool's lost-sample callback (see `tool::judge`).
fn judge_tool(
    r: &mut ProgramReport,
    k: usize,
    bcc: bool,
    plan: ToolPlan,
    result: &RunResult,
    in_order: bool,
    lost_kept: bool,
) {
    let run = |id: &str| result.tools.iter().find(|t| t.id == format!("p{k}/{id}"));
    match plan {
        ToolPlan::None => {}
        ToolPlan::Skipped(why) => {
            if bcc {
                r.worsen(&Verdict::Inconclusive);
            }
            r.tool_skipped = Some(why)
        }
        ToolPlan::Unbuilt(v, why) => {
            r.worsen(&v);
            r.tool = Some(tool::ToolReport {
                verdict: v,
                lines: tool::Lines::default(),
                ready_ms: tool::ReadyMs::default(),
                finding: Some(why),
                loss_reports: None,
                ended: None,
            });
        }
        ToolPlan::Run => {
            let (Some(a), Some(b), Some(n)) = (run("orig-1"), run("orig-2"), run("new")) else {
                r.worsen(&Verdict::Inconclusive);
                r.tool_skipped = Some("the guest agent reported no run of the tool".into());
                return;
            };
            // What the original's program delivered to the agent, for a difference in a
            // value no event carried.
            let events: Vec<&[u8]> = result
                .object(&format!("p{k}/orig-1"))
                .into_iter()
                .flat_map(|o| &o.maps)
                .flat_map(|m| &m.records)
                .map(Vec::as_slice)
                .collect();
            let t = tool::judge(a, b, n, in_order, lost_kept, &events);
            r.worsen(&t.verdict);
            r.tool = Some(t);
        }
    }
}

fn judge_all(
    opts: &VerifyOptions,
    pairs: &[Pair],
    unbuilt: Vec<Option<ProgramReport>>,
    result: &RunResult,
    objdir: &Path,
    migrated_kind: BufferKind,
) -> Result<Vec<ProgramReport>> {
    let mut reports = Vec::new();
    for ((k, p), unbuilt) in pairs.iter().enumerate().zip(unbuilt) {
        if let Some(r) = unbuilt {
            reports.push(r);
            continue;
        }
        if p.bcc {
            // Compared at tool level only (judge_tool).
            reports.push(ProgramReport::new(&p.name, Verdict::Equivalent, Vec::new()));
            continue;
        }
        reports.push(judge(
            &p.name,
            result,
            k,
            opts.cpus,
            (
                &objdir.join(format!("p{k}-orig.o")),
                &objdir.join(format!("p{k}-new.o")),
            ),
            (&p.before, &p.after),
            migrated_kind,
        )?);
    }
    Ok(reports)
}

/// `path` (as the user gave it, absolute or relative, `..` included) as a relative path that
/// stays inside the tree it is joined to: the root goes, `..` becomes a directory named `_up_`.
/// Joining an absolute path replaces the base, so the migrated text of `/src/x.bpf.c` was
/// written over the user's own file.
fn inside_tree(path: &str) -> PathBuf {
    use std::path::Component;
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            Component::ParentDir => Some(std::ffi::OsStr::new("_up_")),
            Component::RootDir | Component::Prefix(_) | Component::CurDir => None,
        })
        .collect()
}

/// The directory of a source file, `.` for a bare file name (`-I ""` would find nothing).
fn dir_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temporary work directory, removed when dropped.
pub(crate) fn work_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .with_context(|| {
            format!(
                "cannot create a work directory in {}",
                std::env::temp_dir().display()
            )
        })
}

/// Where a boot's scratch disk `what` (a file system's type, or `MD_MEMBER`) is made, in its
/// work directory.
fn scratch_image(wd: &Path, what: &str) -> PathBuf {
    wd.join(format!("scratch-{what}.img"))
}

/// Whether `text` names `word`: the word itself (a file system, `-t xfs`) or an identifier it
/// starts (`xfs_file_read_iter`, `btrfs_sync_file`).
pub(crate) fn names_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| {
            w.strip_prefix(word)
                .is_some_and(|r| r.is_empty() || r.starts_with('_'))
        })
}

/// The scratch file systems a boot of `pairs` gets: ext4 always, another where a program
/// names it (`names_word`) in its source, its libbpf loader's files or its command
/// line: a tool for one file system traces that file system's functions.
fn wanted_file_systems(texts: &[String]) -> Vec<&'static str> {
    SCRATCH_FILE_SYSTEMS
        .iter()
        .map(|f| f.fs)
        .filter(|&fs| fs == "ext4" || texts.iter().any(|t| names_word(t, fs)))
        .collect()
}

/// A server (`what`) for the workload when a boot `wanted` one: it runs in the host's root,
/// which only BCC tools' boots share (`host_root`); `provision` says why not when it cannot.
fn in_host_root<T>(
    wanted: bool,
    host_root: &Option<HostRoot>,
    what: &str,
    provision: impl FnOnce() -> Result<T, String>,
) -> Option<Result<T, String>> {
    wanted.then(|| match host_root {
        Some(_) => provision(),
        None => Err(format!(
            "the {what} runs on the host's root file system, which the guest shares only with BCC tools"
        )),
    })
}

/// The texts of a boot's programs (`program_texts`) and of their tools' command lines: they
/// say which scratch file systems the boot wants, and whether a database server or NFS.
fn boot_texts(opts: &VerifyOptions, pairs: &[Pair]) -> Vec<String> {
    let mut texts: Vec<String> = pairs.iter().flat_map(program_texts).collect();
    texts.extend(pairs.iter().map(|p| tool_argv(opts, p).join(" ")));
    texts
}

/// The texts of a program's BPF source (a BCC tool's whole script) and of its libbpf
/// loader's files, those that can be read.
fn program_texts(p: &Pair) -> Vec<String> {
    let mut files = vec![p.before.clone()];
    if let Some(l) = tool::find_loader(&p.before) {
        files.push(l.main);
        files.extend(l.helpers);
    }
    files
        .iter()
        .filter_map(|f| fs::read_to_string(f).ok())
        .collect()
}

/// The kernel's modules (`kernel::guest_modules`: where the kernel was provisioned by
/// bpf-migrate; none for another kernel, which may have what it needs built in) put in the
/// initramfs, and the boot's scratch disks in `wd`: an empty file system of each type in
/// `file_systems` whose mkfs the host has, and an empty disk of 8 MiB (`MD_MEMBER`). The
/// modules of the other file systems are left out. Returns the modules' guest paths, the
/// disks in order, and the file systems the host could not make (the workload's disk steps
/// say why).
fn guest_modules_and_disks(
    kernel: &Path,
    wd: &Path,
    file_systems: &[&str],
    nfs: bool,
    cpio: &mut initramfs::Cpio,
) -> Result<(Vec<String>, Vec<String>, Vec<String>)> {
    let wanted = |f: &&bpf_migrate_protocol::ScratchFs| file_systems.contains(&f.fs);
    let needed = |name: &str| {
        let of = |f: &bpf_migrate_protocol::ScratchFs| f.modules.contains(&name);
        (nfs || !nfs::MODULES.contains(&name))
            && (!SCRATCH_FILE_SYSTEMS.iter().any(of)
                || SCRATCH_FILE_SYSTEMS.iter().filter(wanted).any(of))
    };
    let mut modules = Vec::new();
    if let Ok((_, found)) = kernel::guest_modules(kernel) {
        for m in found {
            let name = m.file_name().unwrap_or_default().to_string_lossy();
            if !needed(&name) {
                continue;
            }
            let guest = format!("/modules/{name}");
            cpio.file(&guest, &fs::read(&m)?, 0o644);
            modules.push(guest);
        }
    }
    let (mut disks, mut missing) = (Vec::new(), Vec::new());
    for f in SCRATCH_FILE_SYSTEMS.iter().filter(wanted) {
        let image = scratch_image(wd, f.fs);
        let made = (|| -> std::io::Result<bool> {
            fs::File::create(&image)?.set_len(f.bytes)?;
            // In /usr/sbin, which a user's PATH may not name.
            let mkfs = which(f.mkfs[0])
                .or_else(|| which(&format!("/usr/sbin/{}", f.mkfs[0])))
                .or_else(|| which(&format!("/sbin/{}", f.mkfs[0])))
                .ok_or(std::io::ErrorKind::NotFound)?;
            let out = Command::new(mkfs)
                .args(&f.mkfs[1..])
                .arg(&image)
                .stdin(Stdio::null())
                .output()?;
            Ok(out.status.success())
        })();
        if made.is_ok_and(|ok| ok) {
            disks.push(f.fs.to_string());
        } else {
            let _ = fs::remove_file(&image);
            missing.push(f.fs.to_string());
        }
    }
    fs::File::create(scratch_image(wd, MD_MEMBER))
        .and_then(|f| f.set_len(8 << 20))
        .with_context(|| format!("{}", scratch_image(wd, MD_MEMBER).display()))?;
    disks.push(MD_MEMBER.to_string());
    Ok((modules, disks, missing))
}

/// Finishes the initramfs with the manifest, boots it (with room for `map_bytes` of maps:
/// `memory`) and returns the run and the agent's report (never a fatal one: that is an error).
pub(crate) fn boot_agent(
    opts: &VerifyOptions,
    kernel: &Path,
    mut cpio: initramfs::Cpio,
    manifest: &Manifest,
    wd: &Path,
    map_bytes: u64,
) -> Result<(qemu::VmRun, Report)> {
    let manifest_value = manifest;
    let manifest = serde_json::to_vec(manifest).context("serializing the manifest")?;
    cpio.file(MANIFEST_PATH, &manifest, 0o644);
    for d in [
        "/proc", "/sys", "/dev", "/tmp", "/mnt", "/host", "/rw", "/newroot",
    ] {
        cpio.dir(d);
    }
    let initrd = wd.join("initramfs.cpio");
    fs::write(&initrd, cpio.finish())?;
    let share_host_root = manifest_value.host_root.is_some();
    let vm = qemu::run(&qemu::VmConfig {
        kernel,
        initrd: &initrd,
        cpus: opts.cpus,
        accel: opts.accel,
        timeout: opts.timeout,
        tools_wait: if manifest_value.tools.is_empty() {
            Duration::ZERO
        } else {
            Duration::from_millis(manifest_value.tools_ready_ms)
        },
        workdir: wd,
        share_host_root,
        map_bytes,
        tool_processes: own_tool_processes(&manifest_value.tools),
        disks: &manifest_value
            .scratch_disks
            .iter()
            .map(|d| scratch_image(wd, d))
            .collect::<Vec<_>>(),
    })?;
    let report = vm
        .frames
        .iter()
        .find_map(|f| match f {
            bpf_migrate_protocol::Message::Result(r) => Some(r.clone()),
            _ => None,
        })
        .ok_or_else(|| anyhow!("the agent sent no result"))?;
    if let Report::Fatal(fatal) = &report {
        bail!("the guest agent failed: {fatal}");
    }
    Ok((vm, report))
}

/// Fills a ring buffer with 0xa5 records, one per run (see the agent's `ring_poison`): the
/// bytes a reserved record leaves unset then read 0xa5 where fresh ring pages read 0.
/// An LSM program on the bpf() hook that refuses to create ring buffer maps (EPERM), as a
/// kernel without them answers (EINVAL there): `--strategy compat`'s probe then picks the perf
/// buffer, and a program that makes a ring anyway fails to load.
const REFUSE_RINGBUF: &str = r#"#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("lsm/bpf")
int BPF_PROG(refuse_ringbuf, int cmd, union bpf_attr *attr, unsigned int size, int ret)
{
	if (ret)
		return ret;
	if (cmd == BPF_MAP_CREATE && attr->map_type == BPF_MAP_TYPE_RINGBUF)
		return -1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"#;

/// The workload's `tcp-drop` step: on loopback's egress, the first IPv4 TCP segment with data
/// sent to `DROP_PORT` is dropped (`TC_ACT_SHOT`, which the kernel frees with the reason
/// `TC_EGRESS`, the socket still its owner), once; the sender sends it again. Without headers
/// (helpers by number, the packet read by offset), like `RING_POISON`, so that it builds fast.
const TCP_DROP: &str = r#"
#define SEC(n) __attribute__((section(n), used))

static long (*bpf_skb_load_bytes)(const void *skb, unsigned int offset, void *to,
				  unsigned int len) = (void *)26;

unsigned int dropped;

SEC("tc")
int drop_once(void *skb)
{
	unsigned char ip[20], tcp[14];
	unsigned int ihl, data;

	if (dropped)
		return 0;
	/* loopback frames carry an Ethernet header: IPv4 is 0x0800 */
	if (bpf_skb_load_bytes(skb, 12, ip, 2) || ip[0] != 0x08 || ip[1] != 0x00)
		return 0;
	if (bpf_skb_load_bytes(skb, 14, ip, 20) || ip[9] != 6 /* TCP */)
		return 0;
	ihl = (ip[0] & 0xf) * 4;
	if (ihl < 20 || ihl > 60 || bpf_skb_load_bytes(skb, 14 + ihl, tcp, 14))
		return 0;
	if (((tcp[2] << 8) | tcp[3]) != DROP_PORT)
		return 0;
	data = ((ip[2] << 8) | ip[3]) - ihl - (tcp[12] >> 4) * 4;
	if (data == 0)
		return 0;
	dropped = 1;
	return 2; /* TC_ACT_SHOT */
}

char LICENSE[] SEC("license") = "GPL";
"#;

const RING_POISON: &str = r#"
#define SEC(n) __attribute__((section(n), used))
#define __uint(name, val) int (*name)[val]

struct {
	__uint(type, 27 /* BPF_MAP_TYPE_RINGBUF */);
	__uint(max_entries, 4096);
} rb SEC(".maps");

static long (*bpf_ringbuf_output)(void *ringbuf, void *data, unsigned long long size,
				  unsigned long long flags) = (void *)130;

/* 4088 bytes and an 8-byte header: one page a record */
char poison[4088] = { [0 ... 4087] = RING_POISON };

SEC("syscall")
int fill(void *ctx)
{
	/* BPF_RB_NO_WAKEUP: nobody waits */
	return bpf_ringbuf_output(&rb, poison, sizeof(poison), 1) ? 1 : 0;
}

char LICENSE[] SEC("license") = "GPL";
"#;

pub(crate) fn agent_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("BPF_MIGRATE_AGENT") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("cannot find where this program is")?;
    let p = exe.with_file_name("bpf-migrate-agent");
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "the guest agent bpf-migrate-agent is not installed beside {} (cargo install installs both)",
        exe.display()
    )
}

fn which(cmd: &str) -> Option<PathBuf> {
    if cmd.contains('/') {
        return Some(PathBuf::from(cmd)).filter(|p| p.is_file());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}

pub(crate) fn collect_pairs(opts: &VerifyOptions, wd: &Path) -> Result<Vec<Pair>> {
    match (&opts.before, &opts.after) {
        (Some(a), Some(b)) => {
            if a.is_file() && b.is_file() {
                return Ok(vec![Pair {
                    name: b.display().to_string(),
                    before: a.clone(),
                    after: b.clone(),
                    after_includes: Vec::new(),
                    bcc: false,
                    partial: false,
                }]);
            }
            if !(a.is_dir() && b.is_dir()) {
                bail!("--before and --after must both be files or both directories");
            }
            let mut pairs = Vec::new();
            for entry in ignore::WalkBuilder::new(a).build().filter_map(|e| e.ok()) {
                let p = entry.path();
                let name = p.to_string_lossy();
                // A BCC tool (what else a directory's .py files are is left alone).
                let bcc = name.ends_with(".py")
                    && fs::read_to_string(p).is_ok_and(|t| t.contains("BPF("));
                // BPF C for libbpf (BCC C, even named .bpf.c, comes with its tool).
                let libbpf = name.ends_with(".bpf.c")
                    && fs::read_to_string(p).is_ok_and(|t| t.contains("SEC("));
                if !libbpf && !bcc {
                    continue;
                }
                let rel = p.strip_prefix(a).unwrap();
                let other = b.join(rel);
                if other.is_file() {
                    pairs.push(Pair {
                        name: other.display().to_string(),
                        before: p.to_path_buf(),
                        after: other,
                        after_includes: Vec::new(),
                        bcc,
                        partial: false,
                    });
                }
            }
            pairs.sort_by(|x, y| x.name.cmp(&y.name));
            Ok(pairs)
        }
        (None, None) => {
            let paths = if opts.paths.is_empty() {
                vec![PathBuf::from(".")]
            } else {
                opts.paths.clone()
            };
            let found = discover::discover(&paths);
            if let Some(e) = found.errors.first() {
                bail!("{}: {}", e.file, e.message);
            }
            let outcome = engine::migrate(&found.files, &opts.engine);
            for d in outcome
                .diags
                .iter()
                .filter(|d| d.severity == report::Severity::Manual)
            {
                eprint!("{}", d.render(false));
            }
            let after_root = wd.join("after");
            let mut pairs = Vec::new();
            // Every changed file goes into the migrated tree, so that migrated headers shadow
            // the originals; each changed BPF source is one program to verify.
            for ch in &outcome.changes {
                let f = &found.files[ch.file];
                let dest = after_root.join(inside_tree(&f.display));
                fs::create_dir_all(dest.parent().unwrap())?;
                fs::write(&dest, &ch.new_text)?;
            }
            for ch in &outcome.changes {
                let f = &found.files[ch.file];
                // A BCC tool: its Python, which compiles the C itself.
                if engine::is_python_source(&f.path, &f.text)
                    && ch.new_text.contains("open_ring_buffer")
                {
                    pairs.push(Pair {
                        name: f.display.clone(),
                        before: f.path.clone(),
                        after: after_root.join(inside_tree(&f.display)),
                        after_includes: Vec::new(),
                        bcc: true,
                        partial: true,
                    });
                    continue;
                }
                // A header is built into the sources that include it (its migrated copy
                // shadows the original there), not on its own.
                let header = f.path.extension().is_some_and(|e| e == "h");
                if header
                    || !f.text.contains("SEC(")
                    || !ch.new_text.contains("BPF_MAP_TYPE_RINGBUF")
                        && !ch.new_text.contains("bpf_ringbuf_output")
                {
                    continue;
                }
                let dest = after_root.join(inside_tree(&f.display));
                let mut incs = vec![dest.parent().unwrap().to_path_buf()];
                incs.push(dir_of(&f.path));
                pairs.push(Pair {
                    name: f.display.clone(),
                    before: f.path.clone(),
                    after: dest,
                    after_includes: incs,
                    bcc: false,
                    partial: true,
                });
            }
            Ok(pairs)
        }
        _ => bail!("--before and --after go together"),
    }
}

pub(crate) fn compile(
    opts: &VerifyOptions,
    kernel: &Path,
    src: &Path,
    first_includes: &[PathBuf],
    out: &Path,
) -> Result<()> {
    let text = fs::read_to_string(src)?;
    let src_dir = dir_of(src);
    let mut cmd = Command::new("clang");
    cmd.args(["-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", "-c"]);
    for i in first_includes {
        cmd.arg("-I").arg(i);
    }
    cmd.arg("-I").arg(&src_dir);
    for i in &opts.includes {
        cmd.arg("-I").arg(i);
    }
    // After the program's own and the user's (a project vendoring its libbpf keeps it), before
    // the system's: the headers of the libbpf the agent loads with.
    cmd.arg("-I").arg(libbpf_headers::dir()?);
    for d in &opts.defines {
        cmd.arg(format!("-D{d}"));
    }
    for f in &opts.cflags {
        cmd.arg(f);
    }
    // vmlinux.h from the guest kernel's BTF when the program wants one and none is at hand.
    if text.contains("vmlinux.h")
        && !first_includes
            .iter()
            .chain([&src_dir])
            .chain(&opts.includes)
            .any(|d| d.join("vmlinux.h").is_file())
    {
        cmd.arg("-I").arg(kernel::vmlinux_h(kernel)?);
    }
    cmd.args(["-idirafter", "/usr/include/x86_64-linux-gnu"]);
    cmd.arg(src).arg("-o").arg(out);
    let o = cmd
        .output()
        .context("clang not found (apt-get install clang)")?;
    if !o.status.success() {
        bail!(
            "clang failed:\n{}",
            String::from_utf8_lossy(&o.stderr).trim_end()
        );
    }
    Ok(())
}

fn judge(
    name: &str,
    result: &RunResult,
    k: usize,
    cpus: u32,
    (orig_obj, new_obj): (&Path, &Path),
    srcs: (&Path, &Path),
    migrated_kind: BufferKind,
) -> Result<ProgramReport> {
    let obj = |id: &str| -> Result<&ObjectResult> {
        result
            .object(&format!("p{k}/{id}"))
            .ok_or_else(|| anyhow!("no result for {name}"))
    };
    let (o1, o2, nw) = (obj("orig-1")?, obj("orig-2")?, obj("new")?);
    let mut rep = ProgramReport::new(name, Verdict::Equivalent, Vec::new());
    // One program that cannot be compared leaves the others of the run to be.
    if let Some((verdict, problem)) = load_failure(o1, nw) {
        rep.verdict = verdict;
        rep.problems.push(problem);
        return Ok(rep);
    }
    judge_attachment(&mut rep, o1, nw);
    judge_maps(
        &mut rep,
        (o1, o2, nw),
        cpus,
        (orig_obj, new_obj),
        srcs,
        migrated_kind,
    );
    Ok(rep)
}

impl ProgramReport {
    /// A report of `name` with `verdict` and `problems`, and nothing compared yet.
    fn new(name: &str, verdict: Verdict, problems: Vec<String>) -> Self {
        ProgramReport {
            name: name.to_string(),
            verdict,
            maps: Vec::new(),
            problems,
            tool: None,
            tool_skipped: None,
            path: None,
        }
    }

    /// An inconclusive finding does not hide a difference.
    fn worsen(&mut self, verdict: &Verdict) {
        match verdict {
            Verdict::Different => self.verdict = Verdict::Different,
            Verdict::Inconclusive if self.verdict == Verdict::Equivalent => {
                self.verdict = Verdict::Inconclusive
            }
            _ => {}
        }
    }
}

/// The verdict and the verifier's log when the original or the migrated program does not load.
fn load_failure(orig: &ObjectResult, new: &ObjectResult) -> Option<(Verdict, String)> {
    if let Some(e) = &orig.load_error {
        return Some((
            Verdict::Inconclusive,
            format!(
                "the original does not load in the guest kernel, so there is nothing to compare:\n{}",
                qemu::tail(e, 40)
            ),
        ));
    }
    if let Some(e) = &new.load_error {
        // (The original has no load error here: if it was tried so, it loaded so.)
        if orig.tried_as_tool && !new.tried_as_tool {
            return Some((
                Verdict::Inconclusive,
                format!(
                    "neither version loads by its sections here; the original loaded as its tool's loader had it, but the migrated program's tool was not there to show how (did it run?):\n{}",
                    qemu::tail(e, 20)
                ),
            ));
        }
        if let Some(what) = tool::out_of_resource(e) {
            return Some((
                Verdict::Inconclusive,
                format!(
                    "the guest ran out of {what} loading the migrated program after the original's two loads (fewer programs a run, or fewer --cpus, leave it more):\n{}",
                    qemu::tail(e, 10)
                ),
            ));
        }
        return Some((
            Verdict::Different,
            format!(
                "the migrated program does not load (verifier log follows):\n{}",
                qemu::tail(e, 40)
            ),
        ));
    }
    None
}

/// Every program of the original that attaches must attach in the migrated program too.
/// Programs loaded or attached as the tool's loader had them are named (`Attach::AsTool`).
fn judge_attachment(rep: &mut ProgramReport, orig: &ObjectResult, new: &ObjectResult) {
    let attached = |a: &Attach| matches!(a, Attach::Ok | Attach::AsTool(_));
    let mut as_tool = Vec::new();
    let mut not_by_tool = Vec::new();
    for p in &orig.programs {
        let pname = &p.name;
        let twin = new.program(&p.name).map(|t| &t.attach);
        match &p.attach {
            Attach::AsTool(how) => {
                as_tool.push(format!("`{pname}` ({how})"));
                if let Some(Attach::AsTool(theirs)) = twin
                    && theirs != how
                {
                    rep.problems.push(format!(
                        "program `{pname}`: the original's tool attached it at {how}, the migrated tool's at {theirs}: their events are not of the same hooks"
                    ));
                    rep.worsen(&Verdict::Inconclusive);
                }
            }
            Attach::NotByTool => not_by_tool.push(format!("`{pname}`")),
            _ => {}
        }
        match (&p.attach, twin) {
            (a, Some(b)) if attached(a) && attached(b) => {}
            (Attach::TestRun, Some(Attach::TestRun)) => {}
            (a, _) if attached(a) => {
                rep.verdict = Verdict::Different;
                rep.problems.push(format!(
                    "program `{pname}` ({}) attaches in the original but not in the migrated program: {}",
                    p.section,
                    match twin {
                        Some(Attach::Error(e)) => e.as_str(),
                        _ => "missing",
                    }
                ));
            }
            (Attach::Error(e), _) => {
                rep.problems.push(format!(
                    "program `{pname}` does not attach in the guest even in the original: {e}"
                ));
                rep.worsen(&Verdict::Inconclusive);
            }
            _ => {}
        }
    }
    if !as_tool.is_empty() || !not_by_tool.is_empty() {
        let mut s = "loaded and attached as each version's own tool had them (by their sections they do not load or attach here):".to_string();
        if !as_tool.is_empty() {
            s.push_str(&format!(" {}", as_tool.join(", ")));
        }
        if !not_by_tool.is_empty() {
            s.push_str(&format!(
                "; not loaded, as the tool's loader did not load them: {}",
                not_by_tool.join(", ")
            ));
        }
        rep.problems.push(s);
    }
}

/// Each perf event array of the original against the ring buffer of the same name in the
/// migrated program (a perf event array on `--strategy compat`'s perf path: `migrated_kind`).
/// `objects` are the original's two loads and the migrated program.
fn judge_maps(
    rep: &mut ProgramReport,
    objects: (&ObjectResult, &ObjectResult, &ObjectResult),
    cpus: u32,
    (orig_obj, new_obj): (&Path, &Path),
    srcs: (&Path, &Path),
    migrated_kind: BufferKind,
) {
    let (o1, o2, nw) = objects;
    let perf_maps: Vec<&MapRecords> = o1
        .maps
        .iter()
        .filter(|m| m.kind == BufferKind::Perf)
        .collect();
    if perf_maps.is_empty() {
        rep.verdict = Verdict::Inconclusive;
        rep.problems
            .push("the original has no perf event array to compare".into());
    }
    for m in perf_maps {
        let mname = &m.name;
        let m2 = o2.map(mname);
        let Some(mn) = nw
            .maps
            .iter()
            .find(|x| x.name == *mname && x.kind == migrated_kind)
        else {
            let what = match migrated_kind {
                BufferKind::Ring => "a ring buffer",
                BufferKind::Perf => "a perf event array (the perf path)",
            };
            rep.verdict = Verdict::Different;
            rep.problems.push(format!(
                "map `{mname}` is not {what} in the migrated program"
            ));
            continue;
        };
        let lost = m.lost + m2.map_or(0, |m2| m2.lost);
        let new_recs = &mn.records;
        let layouts = event_layouts(new_obj, srcs, mname, new_recs);
        let orig2 = m2.map_or(&[][..], |m2| &m2.records);
        let added = added_cpu(orig_obj, &layouts);
        let r = match &added {
            None => compare_map(mname, &m.records, orig2, new_recs, lost, cpus, &layouts),
            Some(a) => compare_without_cpu(
                a,
                mname,
                [&m.records, orig2, new_recs],
                lost,
                cpus,
                &layouts,
            ),
        };
        let r = lost_in_migration(r, mn.lost);
        rep.worsen(&r.verdict);
        rep.maps.push(r);
    }
}

/// A difference where the migrated buffer lost records (its lost counter, or the perf path's
/// own count) and the original's did not is the buffer's fill at that moment, which the next
/// run may not repeat, rather than the migration: inconclusive, saying so.
fn lost_in_migration(mut r: MapReport, lost: u64) -> MapReport {
    if lost > 0 && r.verdict == Verdict::Different {
        r.verdict = Verdict::Inconclusive;
        r.finding = Some(format!(
            "{}\n  but the migrated buffer lost {lost} record(s) that the original's kept: a full buffer under this run's load tells nothing of the migration (a larger --ringbuf-size, or run again)",
            r.finding.unwrap_or_default()
        ));
    }
    r
}

/// A struct the migration gave a last member `cpu` (its callback read the CPU), which the
/// original's struct of that name lacks: where the member lies in the migrated records.
struct AddedCpu {
    name: String,
    offset: usize,
    size: usize,
}

fn added_cpu(orig_obj: &Path, layouts: &[btf::Layout]) -> Option<AddedCpu> {
    layouts.iter().find_map(|l| {
        let ((last, offset, size), before) = l.fields.split_last()?;
        if last != bpf_migrate_core::engine::CPU_FIELD {
            return None;
        }
        let old = btf::layout_named(orig_obj, &l.name)?;
        (old.fields == before).then(|| AddedCpu {
            name: l.name.clone(),
            offset: *offset,
            size: *size,
        })
    })
}

/// The map's records compared without the added `cpu` member (and what follows it, the
/// struct's padding): the original's fields all lie before it. Each migrated record must
/// hold there a CPU of the guest.
fn compare_without_cpu(
    a: &AddedCpu,
    map: &str,
    [orig, orig2, new]: [&[Vec<u8>]; 3],
    lost: u64,
    cpus: u32,
    layouts: &[btf::Layout],
) -> compare::MapReport {
    let cut = |recs: &[Vec<u8>]| -> Vec<Vec<u8>> {
        recs.iter()
            .map(|r| r[..r.len().min(a.offset)].to_vec())
            .collect()
    };
    let mut r = compare_map(map, &cut(orig), &cut(orig2), &cut(new), lost, cpus, layouts);
    let bad = new.iter().enumerate().find_map(|(i, rec)| {
        let v = rec.get(a.offset..a.offset + a.size)?;
        let cpu = v.iter().rev().fold(0u64, |n, b| n << 8 | u64::from(*b));
        (cpu >= u64::from(cpus)).then_some((i, cpu))
    });
    let short = new.iter().position(|rec| rec.len() < a.offset + a.size);
    let said = if let Some(i) = short {
        r.verdict = Verdict::Different;
        format!(
            "migrated event {} has {} bytes, too few for the added field `{}` of struct {} at offset {}",
            i + 1,
            new[i].len(),
            bpf_migrate_core::engine::CPU_FIELD,
            a.name,
            a.offset
        )
    } else if let Some((i, cpu)) = bad {
        r.verdict = Verdict::Different;
        format!(
            "migrated event {}: the added field `{}` of struct {} holds {cpu}, but the guest has {cpus} CPU(s)",
            i + 1,
            bpf_migrate_core::engine::CPU_FIELD,
            a.name
        )
    } else {
        format!(
            "the migrated events carry an added field `{}` (struct {}, offset {}), each a CPU of the guest; compared without it",
            bpf_migrate_core::engine::CPU_FIELD,
            a.name,
            a.offset
        )
    };
    r.finding = Some(match r.finding.take() {
        Some(f) if r.verdict != Verdict::Equivalent && short.is_none() && bad.is_none() => f,
        Some(f) => format!("{said}\n{f}"),
        None => said,
    });
    r
}

/// The event structs of `map`, laid out from the migrated object; a map may carry several
/// (a `kind` field tells them apart). Failing those, the struct of the largest record's size:
/// in the object's BTF, else among the structs the program's own files define (an event
/// that is only a local variable, output through a macro, reaches DWARF but not BTF).
fn event_layouts(
    new_obj: &Path,
    (orig_src, new_src): (&Path, &Path),
    map: &str,
    new_recs: &[Vec<u8>],
) -> Vec<btf::Layout> {
    let mut layouts: Vec<btf::Layout> = event_structs(new_src, map)
        .iter()
        .filter_map(|s| btf::layout_named(new_obj, s))
        .collect();
    if layouts.is_empty() {
        layouts.extend(new_recs.iter().map(Vec::len).max().and_then(|len| {
            btf::layout_for(new_obj, len).or_else(|| {
                // Only an event's name: a map's key or value of that size is not it, and
                // its noise would hide real differences.
                let mut sized: Vec<btf::Layout> = own_structs(&[new_src, orig_src])
                    .into_iter()
                    .filter(|n| btf::event_like(n))
                    .filter_map(|n| btf::layout_named(new_obj, &n))
                    .filter(|l| l.size == len)
                    .collect();
                (sized.len() == 1).then(|| sized.remove(0))
            })
        }));
    }
    layouts
}

/// The structs that the BPF sources `srcs` (a migrated one, and its original, whose
/// directory holds the headers a migration left alone) and the headers each includes from
/// its own directory (`#include "x.h"`, not `vmlinux.h`) define.
fn own_structs(srcs: &[&Path]) -> Vec<String> {
    let mut files = Vec::new();
    for src in srcs {
        files.push(src.to_path_buf());
        let text = fs::read_to_string(src).unwrap_or_default();
        for (h, local) in bpf_migrate_core::discover::includes(&text) {
            if local && h != "vmlinux.h" {
                files.push(dir_of(src).join(h));
            }
        }
    }
    use bpf_migrate_core::lang::{NodeExt, c};
    let mut names = Vec::new();
    for f in files {
        let Ok(t) = fs::read_to_string(&f) else {
            continue;
        };
        let Some(parsed) = c::parse(&t, None) else {
            continue;
        };
        let nodes = c::descendants(parsed.tree.root_node());
        for st in c::of_kind(&nodes, "struct_specifier") {
            if st.field("body").is_none() {
                continue;
            }
            if let Some(n) = st.field("name") {
                let name = c::text(n, &t).to_string();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    names
}

fn print_reports(opts: &VerifyOptions, reports: &[ProgramReport], t: &Timing) {
    if opts.json {
        for r in reports {
            // The path of --strategy compat, on every line of the program.
            let with_path = |mut v: serde_json::Value| {
                if let Some(p) = r.path {
                    v["path"] = json!(p);
                }
                v
            };
            for m in &r.maps {
                let mut v = serde_json::to_value(m).unwrap();
                v["type"] = json!("map");
                v["program"] = json!(r.name);
                println!("{}", with_path(v));
            }
            if let Some(t) = &r.tool {
                let mut v = serde_json::to_value(t).unwrap();
                v["type"] = json!("tool");
                v["program"] = json!(r.name);
                println!("{}", with_path(v));
            }
            println!(
                "{}",
                with_path(
                    json!({"type": "program", "program": r.name, "verdict": r.verdict, "problems": r.problems})
                )
            );
        }
        let all = if reports.iter().all(|r| r.verdict == Verdict::Equivalent) {
            "equivalent"
        } else if reports.iter().any(|r| r.verdict == Verdict::Different) {
            "different"
        } else {
            "inconclusive"
        };
        println!(
            "{}",
            json!({"type": "verdict", "verdict": all, "workload": t.workload_steps, "accel": t.accel, "boot_ms": t.boot.as_millis(), "vm_ms": t.vm.as_millis(), "total_ms": t.total.as_millis()})
        );
        return;
    }
    print!("{}", human_report(reports, t));
}

/// The report for a reader: per program, its verdict, each map's events, the tool's lines
/// (and how its runs started and ended, where worth a line), the findings; then the run's
/// times and workload.
fn human_report(reports: &[ProgramReport], t: &Timing) -> String {
    let mut s = String::new();
    for r in reports {
        s.push_str(&format!(
            "{}{}: {}\n",
            r.name,
            match r.path {
                Some("perfbuf") => " (perf path: the guest refusing ring buffers)",
                Some(_) => " (ring path)",
                None => "",
            },
            match r.verdict {
                Verdict::Equivalent => "equivalent",
                Verdict::Different => "DIFFERENT",
                Verdict::Inconclusive => "inconclusive",
            }
        ));
        for m in &r.maps {
            s.push_str(&format!(
                "  map {:<16} events: original {} (second load {}), migrated {}, matched {}{}{}\n",
                m.map,
                m.original,
                m.original_second_load,
                m.migrated,
                m.matched,
                if m.noise_offsets.is_empty() {
                    String::new()
                } else {
                    format!(", {} noisy byte(s) ignored", m.noise_offsets.len())
                },
                if m.unset_string_bytes == 0 {
                    String::new()
                } else {
                    format!(
                        ", {} byte(s) past a string's end that the original left unset ignored",
                        m.unset_string_bytes
                    )
                }
            ));
            if let Some(f) = &m.finding {
                for line in f.lines() {
                    s.push_str(&format!("    {line}\n"));
                }
            }
        }
        if let Some(t) = &r.tool {
            s.push_str(&format!(
                "  tool                 lines printed during the workload: original {} (second run {}), migrated {}, matched {}\n",
                t.lines.original, t.lines.second_run, t.lines.migrated, t.lines.matched
            ));
            if let Some(l) = &t.loss_reports {
                let both = if l.migrated > 0 && l.original + l.second_run > 0 {
                    ": both versions reported losses (their counts differ with the buffers' sizes and timing; not compared)"
                } else {
                    ""
                };
                s.push_str(&format!(
                    "  tool                 lines reporting lost events: original {} (second run {}), migrated {}{both}\n",
                    l.original, l.second_run, l.migrated
                ));
            }
            // Worth saying where starting takes a while (a BCC tool compiling its C).
            if let (Some(a), Some(b), Some(n)) = (
                t.ready_ms.original,
                t.ready_ms.second_run,
                t.ready_ms.migrated,
            ) && a >= 1000
            {
                let secs = |ms: u64| ms as f64 / 1000.0;
                s.push_str(&format!(
                    "  tool                 waiting for events after: original {:.1} s (second run {:.1} s), migrated {:.1} s\n",
                    secs(a),
                    secs(b),
                    secs(n)
                ));
            }
            if let Some(e) = t.ended.as_ref().filter(|e| !e.plain()) {
                s.push_str(&format!(
                    "  tool                 ended: original {} (second run {}), migrated {}\n",
                    e.original, e.second_run, e.migrated
                ));
            }
            if let Some(f) = &t.finding {
                for line in f.lines() {
                    s.push_str(&format!("    {line}\n"));
                }
            }
        } else if let Some(why) = &r.tool_skipped {
            s.push_str(&format!("  tool                 {why}\n"));
        }
        for p in &r.problems {
            for line in p.lines() {
                s.push_str(&format!("  {line}\n"));
            }
        }
    }
    s.push_str(&format!(
        "verify: guest ({}) booted to the agent in {:.2} s, VM {:.2} s, total {:.2} s\n",
        t.accel,
        t.boot.as_secs_f64(),
        t.vm.as_secs_f64(),
        t.total.as_secs_f64()
    ));
    if let Some(w) = &t.workdir {
        s.push_str(&format!("work directory kept: {}\n", w.display()));
    }
    if !t.workload_steps.is_empty() {
        s.push_str(&format!("workload: {}\n", t.workload_steps.join(", ")));
    }
    for l in &t.workload_log {
        s.push_str(&format!("workload: {l}\n"));
    }
    s
}

/// The struct a migrated program writes to `map`: the type of `e` in
/// `bpf_ringbuf_output(&map, &e, ...)` or `map_output(ctx, &e, ...)` (`--strategy compat`), or
/// `e` for a pointer, from its declaration in the same function.
fn event_structs(src_path: &Path, map: &str) -> Vec<String> {
    let mut found = Vec::new();
    use bpf_migrate_core::lang::c;
    let Ok(src) = fs::read_to_string(src_path) else {
        return found;
    };
    let Some(parsed) = c::parse(&src, None) else {
        return found;
    };
    let nodes = c::descendants(parsed.tree.root_node());
    // --strategy compat's helper: `MAP_output(ctx, data, size)`.
    let compat_helper = engine::compat_output_helper(map);
    for call in c::of_kind(&nodes, "call_expression") {
        let name = c::call_name(call, &src);
        let compat = name == Some(compat_helper.as_str());
        if !compat && !matches!(name, Some("bpf_ringbuf_output" | "bpf_ringbuf_reserve")) {
            continue;
        }
        let args = c::arg_spans(call);
        if args.len() < 3
            || (!compat
                && c::strip_parens(&src[args[0].0..args[0].1])
                    .trim_start_matches('&')
                    .trim()
                    != map)
        {
            continue;
        }
        // The event: the data argument of an output, the variable a reservation is put in.
        let data = if name == Some("bpf_ringbuf_output") || compat {
            c::strip_parens(&src[args[1].0..args[1].1])
                .trim_start_matches('&')
                .trim()
        } else {
            // Through a wrapper (`e = MAP_lost_if_null(bpf_ringbuf_reserve(...))`) or a cast.
            let mut at = call;
            while let Some(p) = at.parent() {
                match p.kind() {
                    "argument_list" | "cast_expression" | "parenthesized_expression" => at = p,
                    "call_expression" if at.kind() == "argument_list" => at = p,
                    _ => break,
                }
            }
            match at.parent() {
                Some(p) if p.kind() == "init_declarator" => p
                    .field("declarator")
                    .map(|d| c::text(d, &src).trim_start_matches('*').trim())
                    .unwrap_or(""),
                Some(p) if p.kind() == "assignment_expression" => {
                    p.field("left").map(|d| c::text(d, &src)).unwrap_or("")
                }
                _ => "",
            }
        };
        if !c::is_ident(data) {
            continue;
        }
        let Some(func) = c::ancestor(call, "function_definition") else {
            continue;
        };
        for d in nodes.iter().filter(|n| {
            n.kind() == "declaration"
                && n.start_byte() >= func.start_byte()
                && n.end_byte() <= func.end_byte()
        }) {
            let Some(ty) = d.field("type") else {
                continue;
            };
            if ty.kind() != "struct_specifier" {
                continue;
            }
            let mut cursor = d.walk();
            let declares = d
                .children_by_field_name("declarator", &mut cursor)
                .any(|decl| {
                    let t = c::text(decl, &src);
                    let name = t
                        .split('=')
                        .next()
                        .unwrap_or(t)
                        .trim()
                        .trim_start_matches('*')
                        .trim();
                    name == data
                });
            if declares
                && let Some(n) = ty.field("name")
                && !found.iter().any(|f| f == c::text(n, &src))
            {
                found.push(c::text(n, &src).to_string());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_human_report_says_how_the_tools_runs_ended_when_not_plainly() {
        let report = |ended: tool::Ended| ProgramReport {
            name: "probewatch".into(),
            verdict: Verdict::Equivalent,
            maps: Vec::new(),
            problems: Vec::new(),
            tool: Some(tool::ToolReport {
                verdict: Verdict::Equivalent,
                lines: tool::Lines {
                    original: 3,
                    second_run: 3,
                    migrated: 3,
                    matched: 3,
                },
                ready_ms: tool::ReadyMs {
                    original: Some(7200),
                    second_run: Some(7400),
                    migrated: Some(7100),
                },
                finding: None,
                loss_reports: None,
                ended: Some(ended),
            }),
            tool_skipped: None,
            path: None,
        };
        let timing = Timing {
            accel: "tcg",
            boot: Duration::from_secs(9),
            vm: Duration::from_secs(40),
            total: Duration::from_secs(45),
            workdir: None,
            workload_log: Vec::new(),
            workload_steps: vec!["exec".into(), "signal".into()],
        };
        let ended = |migrated: &str| tool::Ended {
            original: "exit code 0 after Ctrl-C twice".into(),
            second_run: "exit code 0".into(),
            migrated: migrated.into(),
        };
        let s = human_report(&[report(ended("exit code 0 after Ctrl-C twice"))], &timing);
        assert!(s.starts_with("probewatch: equivalent\n"), "{s}");
        assert!(
            s.contains("lines printed during the workload: original 3 (second run 3), migrated 3, matched 3\n"),
            "{s}"
        );
        assert!(
            s.contains(
                "waiting for events after: original 7.2 s (second run 7.4 s), migrated 7.1 s\n"
            ),
            "{s}"
        );
        assert!(
            s.contains("ended: original exit code 0 after Ctrl-C twice (second run exit code 0), migrated exit code 0 after Ctrl-C twice\n"),
            "{s}"
        );
        assert!(s.ends_with("workload: exec, signal\n"), "{s}");
        // Three plain exits after one Ctrl-C: no line.
        let plain = tool::Ended {
            original: "exit code 0".into(),
            second_run: "exit code 0".into(),
            migrated: "exit code 0".into(),
        };
        let s = human_report(&[report(plain)], &timing);
        assert!(!s.contains("ended:"), "{s}");
    }

    #[test]
    fn servers_run_only_in_boots_that_share_the_hosts_root() {
        let root = Some(HostRoot {
            release: "6.1.0-57-amd64".into(),
            headers: "/h".into(),
            headers_common: "/c".into(),
        });
        assert_eq!(in_host_root(false, &root, "NFS server", || Ok(())), None);
        assert_eq!(
            in_host_root(true, &root, "NFS server", || Ok(())),
            Some(Ok(()))
        );
        let e = in_host_root(true, &None, "NFS server", || Ok(()))
            .unwrap()
            .unwrap_err();
        assert!(e.contains("NFS server") && e.contains("BCC tools"), "{e}");
    }

    #[test]
    fn file_systems_are_named_by_word_or_function() {
        assert!(names_word(
            "b.attach_kprobe(event=\"xfs_file_read_iter\")",
            "xfs"
        ));
        assert!(names_word("fsslower -t xfs -m 0", "xfs"));
        assert!(names_word("SEC(\"kprobe/btrfs_sync_file\")", "btrfs"));
        assert!(!names_word(
            "struct xfsx; noxfs_thing; btrfs_sync_file",
            "xfs"
        ));
        assert!(!names_word("ext4_file_write_iter", "btrfs"));
    }

    #[test]
    fn a_loader_naming_a_file_system_is_read_with_its_program() {
        let dir = tempfile::tempdir().unwrap();
        let bpf = dir.path().join("fsslow.bpf.c");
        fs::write(
            &bpf,
            "SEC(\"kprobe/dummy_file_read\")\nint file_read(void *ctx) { return 0; }\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("fsslow.c"),
            "#include \"fsslow.skel.h\"\nstatic const char *fns[] = { \"xfs_file_read_iter\" };\nint main(void) { return 0; }\n",
        )
        .unwrap();
        let p = Pair {
            name: "fsslow".into(),
            before: bpf.clone(),
            after: bpf,
            after_includes: Vec::new(),
            bcc: false,
            partial: false,
        };
        let texts = program_texts(&p);
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(texts.iter().any(|t| names_word(t, "xfs")));
        assert!(!texts.iter().any(|t| names_word(t, "btrfs")));
    }

    #[test]
    fn the_event_struct_is_found_through_a_counting_wrapper() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.bpf.c");
        fs::write(
            &f,
            "struct ev { int pid; };\nint f(void *ctx)\n{\n\tstruct ev *e;\n\n\te = events_lost_if_null(bpf_ringbuf_reserve(&events, sizeof(*e), 0));\n\tif (!e)\n\t\treturn 0;\n\tbpf_ringbuf_submit(e, 0);\n\treturn 0;\n}\n",
        )
        .unwrap();
        assert_eq!(event_structs(&f, "events"), ["ev"]);
    }

    #[test]
    fn events_are_compared_without_an_added_cpu_field_which_must_hold_a_cpu() {
        let a = AddedCpu {
            name: "event".into(),
            offset: 4,
            size: 4,
        };
        // The original: a u32 pid, padded to 8 bytes by the perf sample's header.
        let orig = vec![vec![7, 0, 0, 0], vec![8, 0, 0, 0]];
        let with = |cpu: u8| vec![vec![7, 0, 0, 0, cpu, 0, 0, 0], vec![8, 0, 0, 0, 0, 0, 0, 0]];
        let judge =
            |new: &[Vec<u8>]| compare_without_cpu(&a, "events", [&orig, &orig, new], 0, 2, &[]);
        let r = judge(&with(1));
        assert_eq!(r.verdict, Verdict::Equivalent, "{r:?}");
        assert!(r.finding.unwrap().contains("compared without it"));
        let r = judge(&with(0xa5));
        assert_eq!(r.verdict, Verdict::Different);
        assert!(
            r.finding
                .unwrap()
                .contains("holds 165, but the guest has 2 CPU(s)")
        );
        let r = judge(&[vec![7, 0, 0, 0], vec![8, 0, 0, 0]]);
        assert_eq!(r.verdict, Verdict::Different);
        assert!(r.finding.unwrap().contains("too few for the added field"));
        // A difference before the field is still one.
        let r = judge(&[vec![9, 0, 0, 0, 0, 0, 0, 0], vec![8, 0, 0, 0, 0, 0, 0, 0]]);
        assert_eq!(r.verdict, Verdict::Different);
    }

    #[test]
    fn a_difference_where_the_migrated_ring_lost_records_is_inconclusive() {
        let (orig, new) = (vec![vec![1u8; 8], vec![2u8; 8]], vec![vec![1u8; 8]]);
        let r = compare_map("events", &orig, &orig, &new, 0, 1, &[]);
        assert_eq!(r.verdict, Verdict::Different);
        let r = lost_in_migration(r, 1);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(
            r.finding
                .unwrap()
                .contains("the migrated buffer lost 1 record(s)")
        );
        // Nothing lost: the difference stands.
        let r = lost_in_migration(compare_map("events", &orig, &orig, &new, 0, 1, &[]), 0);
        assert_eq!(r.verdict, Verdict::Different);
        // The agent finds the counter by the suffix the migration gives it.
        assert_eq!(
            bpf_migrate_protocol::LOST_COUNTER_SUFFIX,
            bpf_migrate_core::engine::user::LOST_MAP_SUFFIX
        );
    }

    fn report() -> ProgramReport {
        ProgramReport::new("x.bpf.c", Verdict::Equivalent, Vec::new())
    }

    fn object(programs: &[(&str, Attach)]) -> ObjectResult {
        ObjectResult {
            programs: programs
                .iter()
                .map(|(n, a)| bpf_migrate_protocol::ProgramResult {
                    name: n.to_string(),
                    section: format!("kprobe/dummy_{n}"),
                    attach: a.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn programs_attached_as_their_tools_had_them_count_as_attached_and_are_named() {
        let how = || Attach::AsTool("kprobe ext4_sync_file".into());
        let orig = object(&[("sync_entry", how()), ("sync_fentry", Attach::NotByTool)]);
        let mut r = report();
        judge_attachment(&mut r, &orig, &orig.clone());
        assert_eq!(r.verdict, Verdict::Equivalent, "{:?}", r.problems);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("`sync_entry` (kprobe ext4_sync_file)"));
        assert!(
            r.problems[0]
                .contains("not loaded, as the tool's loader did not load them: `sync_fentry`")
        );
        // One the original's tool attached that the migrated tool's loader left out.
        let new = object(&[
            ("sync_entry", Attach::NotByTool),
            ("sync_fentry", Attach::NotByTool),
        ]);
        let mut r = report();
        judge_attachment(&mut r, &orig, &new);
        assert_eq!(r.verdict, Verdict::Different, "{:?}", r.problems);
        // Loaded as its tool had it in the original only: the migrated tool showed nothing.
        let orig = ObjectResult {
            tried_as_tool: true,
            ..orig
        };
        let new = ObjectResult {
            load_error: Some("failed to find kernel BTF type ID of 'dummy_file_read'".into()),
            ..Default::default()
        };
        let (v, why) = load_failure(&orig, &new).unwrap();
        assert_eq!(v, Verdict::Inconclusive, "{why}");
        // Its tool was there, and loading as it had it failed: the migration's.
        let tried = ObjectResult {
            tried_as_tool: true,
            ..new.clone()
        };
        assert_eq!(load_failure(&orig, &tried).unwrap().0, Verdict::Different);
        // The two tools attached the same program at different hooks.
        let elsewhere = object(&[
            ("sync_entry", Attach::AsTool("kprobe vfs_fsync".into())),
            ("sync_fentry", Attach::NotByTool),
        ]);
        let mut r = report();
        judge_attachment(&mut r, &orig, &elsewhere);
        assert_eq!(r.verdict, Verdict::Inconclusive, "{:?}", r.problems);
        // Loaded by its sections, the original tells nothing of a migration that does not.
        let orig = ObjectResult {
            tried_as_tool: false,
            ..orig
        };
        assert_eq!(load_failure(&orig, &new).unwrap().0, Verdict::Different);
        // Only the migrated load ran out of open files (CI, 18 programs in one boot, before
        // the agent raised its limit): the run's size, not the migration.
        let files = ObjectResult {
            load_error: Some("Too many open files (os error 24)".into()),
            ..Default::default()
        };
        let (v, why) = load_failure(&orig, &files).unwrap();
        assert_eq!(v, Verdict::Inconclusive, "{why}");
        assert!(why.contains("ran out of open files"), "{why}");
    }

    #[test]
    fn the_structs_a_program_defines_include_its_own_headers_but_not_vmlinux_h() {
        let src = Path::new("../../fixtures/disk_io/input/disklat.bpf.c");
        let names = own_structs(&[src]);
        for s in ["start", "fs_event", "bio_event"] {
            assert!(names.iter().any(|n| n == s), "{s}: {names:?}");
        }
        // Only definitions: `struct file *fp;` is a use.
        assert!(!names.iter().any(|n| n == "file"), "{names:?}");
    }

    #[test]
    fn a_tool_is_named_after_its_source_or_script() {
        let named = |f: &str| {
            tool_name(&Pair {
                name: String::new(),
                before: PathBuf::from("/t").join(f),
                after: PathBuf::new(),
                after_includes: Vec::new(),
                bcc: false,
                partial: false,
            })
        };
        assert_eq!(named("ksnoop.bpf.c"), "ksnoop");
        assert_eq!(named("probe.c"), "probe");
        assert_eq!(named("tcpconnect.py"), "tcpconnect");
        assert_eq!(named("opensnoop-bpfcc"), "opensnoop");
        assert_eq!(named("execsnoop"), "execsnoop");
        // A tool's own command line wins over the batch's.
        let all = vec!["-x".to_string()];
        let own = vec![("ksnoop".to_string(), vec!["vfs_read".to_string()])];
        assert_eq!(args_for("ksnoop", &all, &own), ["vfs_read"]);
        assert_eq!(args_for("execsnoop", &all, &own), ["-x"]);
    }

    #[test]
    fn each_bcc_tool_boots_alone_and_the_others_by_per_boot() {
        let pair = |bcc| Pair {
            name: String::new(),
            before: PathBuf::new(),
            after: PathBuf::new(),
            after_includes: Vec::new(),
            bcc,
            partial: false,
        };
        let pairs: Vec<Pair> = [false, true, false, false, true, false]
            .into_iter()
            .map(pair)
            .collect();
        assert_eq!(
            boots(&pairs, 3),
            vec![vec![0, 2, 3], vec![5], vec![1], vec![4]]
        );
        assert_eq!(boots(&pairs, 16), vec![vec![0, 2, 3, 5], vec![1], vec![4]]);
        assert_eq!(boots(&pairs[..1], 16), vec![vec![0]]);
    }

    #[test]
    fn a_migrated_bcc_tool_gets_its_original_directorys_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let (orig, new) = (dir.path().join("tools"), dir.path().join("wd/after/tools"));
        std::fs::create_dir_all(orig.join("lib")).unwrap();
        std::fs::create_dir_all(&new).unwrap();
        for (f, t) in [
            ("snoop.py", "old"),
            ("helpers.py", "h"),
            ("snoop.c", "old c"),
        ] {
            std::fs::write(orig.join(f), t).unwrap();
        }
        std::fs::write(orig.join("lib/deep.py"), "d").unwrap();
        std::fs::write(new.join("snoop.py"), "new").unwrap();
        std::fs::write(new.join("snoop.c"), "new c").unwrap();
        siblings_beside(&orig.join("snoop.py"), &new.join("snoop.py")).unwrap();
        let read = |f: &str| std::fs::read_to_string(new.join(f)).ok();
        assert_eq!(read("helpers.py").as_deref(), Some("h"));
        // The migrated files stay; subdirectories are not copied.
        assert_eq!(read("snoop.py").as_deref(), Some("new"));
        assert_eq!(read("snoop.c").as_deref(), Some("new c"));
        assert!(!new.join("lib").exists());
    }

    /// The migrated tree keeps each file's place relative to the others, and never reaches out
    /// of the work directory, whatever path the user gave.
    #[test]
    fn migrated_files_stay_in_the_work_tree() {
        let wd = Path::new("/work/after");
        for (given, inside) in [
            ("/tmp/src/x.bpf.c", "tmp/src/x.bpf.c"),
            (
                "fixtures/execsnoop/input/x.c",
                "fixtures/execsnoop/input/x.c",
            ),
            ("./x.c", "x.c"),
            ("../common/maps.h", "_up_/common/maps.h"),
        ] {
            let dest = wd.join(inside_tree(given));
            assert_eq!(dest, wd.join(inside), "{given}");
            assert!(dest.starts_with(wd), "{given}");
        }
        // `../common/maps.h` included from `../tool/x.bpf.c` is found where it was.
        let tool = wd.join(inside_tree("../tool/x.bpf.c"));
        let header = tool.parent().unwrap().join("../common/maps.h");
        let header: PathBuf = header.components().fold(PathBuf::new(), |mut p, c| {
            match c {
                std::path::Component::ParentDir => {
                    p.pop();
                }
                c => p.push(c),
            }
            p
        });
        assert_eq!(header, wd.join(inside_tree("../common/maps.h")));
    }
}
