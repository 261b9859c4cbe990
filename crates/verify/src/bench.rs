//! `bpf-migrate verify --bench N`: events per second of each program as it was (perf buffer),
//! migrated with the copy strategy, and migrated with the reserve strategy, measured in the
//! same VM one program at a time. The guest agent attaches one object, makes N `getpid`
//! system calls (the benchmark programs hook `sys_enter_getpid`), drains its buffer every 64
//! calls, and reports the time and the records received. `--bench-start` (`start`): how long
//! each program's original tool alone takes to start.

use anyhow::{Context, Result, bail};
use fs_err as fs;
use serde_json::json;

use super::{
    ToolPlan, VerifyOptions, agent_path, boot_agent, collect_pairs, compile, initramfs, kernel,
    prepare_boot, tools_wait_ms, work_dir,
};
use bpf_migrate_core::engine::Strategy;
use bpf_migrate_protocol::{BenchOutcome, Manifest, ObjSpec, Report};

pub fn run(opts: &VerifyOptions, events: u64) -> Result<()> {
    let work = work_dir("bpf-migrate-bench-")?;
    let wd = work.path();
    let mut copy_opts = opts.clone();
    copy_opts.engine.strategy = Strategy::Copy;
    let mut reserve_opts = opts.clone();
    reserve_opts.engine.strategy = Strategy::Reserve;
    fs::create_dir_all(wd.join("copy"))?;
    fs::create_dir_all(wd.join("reserve"))?;
    // BCC tools compile their C themselves: the benchmark loads objects.
    let bpf_only = |pairs: Vec<super::Pair>| -> Vec<super::Pair> {
        pairs.into_iter().filter(|p| !p.bcc).collect()
    };
    let copies = bpf_only(collect_pairs(&copy_opts, &wd.join("copy"))?);
    let reserves = bpf_only(collect_pairs(&reserve_opts, &wd.join("reserve"))?);
    if copies.is_empty() || copies.len() != reserves.len() {
        bail!("nothing to benchmark: no migratable BPF program found");
    }
    let (kernel, _) = kernel::find(opts.kernel.as_deref())?;
    let mut cpio = initramfs::Cpio::default();
    cpio.executable("/init", &agent_path()?)?;
    let mut objects = Vec::new();
    for (k, (c, r)) in copies.iter().zip(&reserves).enumerate() {
        for (variant, src, incs) in [
            ("perf", &c.before, &Vec::new()),
            ("copy", &c.after, &c.after_includes),
            ("reserve", &r.after, &r.after_includes),
        ] {
            let obj = wd.join(format!("p{k}-{variant}.o"));
            compile(opts, &kernel, src, incs, &obj)
                .with_context(|| format!("building {} ({variant})", c.name))?;
            let guest = format!("/objs/p{k}-{variant}.o");
            cpio.file(&guest, &fs::read(&obj)?, 0o644);
            objects.push(ObjSpec {
                id: format!("p{k}/{variant}"),
                path: guest,
                poison: 0,
                compat_perf: Vec::new(),
            });
        }
    }
    let manifest = Manifest {
        objects,
        bench: Some(events),
        ..Manifest::default()
    };
    let map_bytes = manifest
        .objects
        .iter()
        .map(|o| crate::memory::map_bytes(&wd.join(o.path.trim_start_matches("/objs/")), opts.cpus))
        .sum();
    let (vm, report) = boot_agent(opts, &kernel, cpio, &manifest, wd, map_bytes)?;
    let Report::Bench(rows) = report else {
        bail!("the guest agent answered a benchmark with something else: {report:?}");
    };
    for (k, c) in copies.iter().enumerate() {
        let mut rates = Vec::new();
        for variant in ["perf", "copy", "reserve"] {
            let id = format!("p{k}/{variant}");
            let (received, ns) = match rows.iter().find(|r| r.id == id).map(|r| &r.outcome) {
                Some(BenchOutcome::Timed { received, ns }) => (*received, *ns),
                Some(BenchOutcome::Error(e)) => bail!("{} ({variant}): {e}", c.name),
                None => bail!(
                    "{} ({variant}): the guest agent sent no measurement",
                    c.name
                ),
            };
            let ns = ns.max(1);
            rates.push((variant, received, received as f64 * 1e9 / ns as f64));
        }
        let base = rates[0].2.max(f64::MIN_POSITIVE);
        if opts.json {
            for (variant, received, rate) in &rates {
                println!(
                    "{}",
                    json!({"type": "bench", "program": c.name, "variant": variant, "events": events, "received": received, "events_per_sec": rate.round(), "vs_perf": rate / base})
                );
            }
        } else {
            let cols: Vec<String> = rates
                .iter()
                .map(|(v, received, rate)| {
                    format!(
                        "{v} {:.0} ev/s ({:.2}x{})",
                        rate,
                        rate / base,
                        if *received < events {
                            format!(", {} dropped", events - received)
                        } else {
                            String::new()
                        }
                    )
                })
                .collect();
            println!("{}: {}", c.name, cols.join(", "));
        }
    }
    eprintln!(
        "bench: {events} events a program, guest ({}) booted in {:.2} s, VM {:.2} s",
        vm.accel,
        vm.boot.as_secs_f64(),
        vm.total.as_secs_f64()
    );
    Ok(())
}

/// `bpf-migrate verify --bench-start`: how long each program's original tool alone takes
/// from its start to waiting for events (a BCC tool compiles its C and attaches), in a guest
/// made as verify makes that program's (its CPUs, modules and disks, the host's root), one
/// boot a program, with no other instance, no object of verify's own and no workload. The
/// baseline of verify's tool-level budget: a whole verify of a tool within twice this
/// (scripts/bench-bcc). A program whose tool does not start, or whose boot fails, gets the
/// reason, and the others go on.
pub fn start(opts: &VerifyOptions) -> Result<()> {
    let work = work_dir("bpf-migrate-start-")?;
    let wd = work.path();
    let pairs = collect_pairs(opts, wd)?;
    if pairs.is_empty() {
        bail!("nothing to start: no migratable BPF program found");
    }
    let (kernel, _) = kernel::find(opts.kernel.as_deref())?;
    let agent = agent_path()?;
    for (k, p) in pairs.iter().enumerate() {
        let bwd = wd.join(format!("b{k}"));
        fs::create_dir_all(&bwd)?;
        let (ready_ms, finding) = match start_alone(opts, &kernel, &agent, p, &bwd) {
            Ok(Ok(ms)) => (Some(ms), None),
            Ok(Err(why)) => (None, Some(why)),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        if opts.json {
            println!(
                "{}",
                json!({"type": "start", "program": p.name, "ready_ms": ready_ms, "finding": finding})
            );
        } else {
            match (ready_ms, finding) {
                (Some(ms), _) => println!(
                    "{}: the original alone waited for events after {:.1} s",
                    p.name,
                    ms as f64 / 1000.0
                ),
                (None, f) => println!("{}: {}", p.name, f.unwrap_or_default()),
            }
        }
    }
    Ok(())
}

/// The original's first tool instance of `p`, alone in its boot: its time from start to
/// waiting for events, or why it has none.
fn start_alone(
    opts: &VerifyOptions,
    kernel: &std::path::Path,
    agent: &std::path::Path,
    p: &super::Pair,
    wd: &std::path::Path,
) -> Result<std::result::Result<u64, String>> {
    let mut prep = prepare_boot(opts, kernel, agent, std::slice::from_ref(p), wd, false)?;
    prep.manifest.tools.retain(|t| t.id.ends_with("/orig-1"));
    if prep.manifest.tools.is_empty() {
        let why = match (&prep.unbuilt[0], &prep.tool_plans[0]) {
            (Some(r), _) => r.problems.join("; "),
            (None, ToolPlan::Skipped(why) | ToolPlan::Unbuilt(_, why)) => why.clone(),
            (None, _) => "no tool of its own to start".to_string(),
        };
        return Ok(Err(why));
    }
    prep.manifest.objects.clear();
    prep.manifest.workload = None;
    prep.manifest.builtin_workload = false;
    prep.manifest.tools_ready_ms = tools_wait_ms(&prep.manifest.tools);
    let (_, report) = boot_agent(opts, kernel, prep.cpio, &prep.manifest, wd, prep.map_bytes)?;
    let Report::Run(result) = report else {
        bail!("the guest agent answered a start with something else: {report:?}");
    };
    Ok(match result.tools.first() {
        Some(t) if t.ready => t
            .ready_ms
            .ok_or_else(|| "the guest agent gave no start time".to_string()),
        Some(t) => Err(format!(
            "it never waited for events (exit {:?}, signal {:?}): {}",
            t.exit_code,
            t.signal,
            t.spawn_error
                .clone()
                .unwrap_or_else(|| crate::qemu::tail(&t.stderr, 5))
        )),
        None => Err("the guest agent reported no tool".to_string()),
    })
}
