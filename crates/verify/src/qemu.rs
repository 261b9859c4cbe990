//! Running the guest: `qemu-system-x86_64` with the kernel and initramfs, the console on the
//! first serial port (a log file) and results on the second. KVM only where it works: a KVM
//! guest that does not reach the agent by a deadline is killed and the run repeats under TCG.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bpf_migrate_protocol::Message;
use fs_err as fs;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

pub struct VmConfig<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub cpus: u32,
    pub accel: Accel,
    pub timeout: Duration,
    /// The longest the agent may wait for its tools to start, which `timeout` does not
    /// count: until the agent says how long it waited, the deadline is this much later.
    pub tools_wait: Duration,
    pub workdir: &'a Path,
    /// Share the host's root file system, read-only, over 9p (`hostroot`), and give the
    /// guest the memory the host's own user space wants (BCC compiling C).
    pub share_host_root: bool,
    /// What the objects' maps take when loaded (`memory::map_bytes`), added to the base.
    pub map_bytes: u64,
    /// The C, Rust and Go tools' processes the guest runs at once (`memory::guest_mib`).
    pub tool_processes: u64,
    /// Raw disk images the guest sees as virtio disks, in order (`/dev/vda`, `/dev/vdb`).
    pub disks: &'a [PathBuf],
}

pub struct VmRun {
    /// Frames the agent sent, in order.
    pub frames: Vec<Message>,
    pub console: String,
    pub accel: &'static str,
    /// From qemu's start to the agent's first frame.
    pub boot: Duration,
    pub total: Duration,
}

/// Kills qemu when dropped, so no guest outlives a failed or interrupted run.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// A guest that did not reach the agent by its deadline (KVM in a nested setup that hangs),
/// as opposed to any other failure of a boot.
#[derive(Debug)]
struct NeverReady(String);

impl std::fmt::Display for NeverReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NeverReady {}

/// Where a KVM guest that hung is remembered: the host's boot id, so that later runs on
/// this boot go to TCG at once instead of waiting 10 s for KVM again.
fn kvm_hang_marker() -> PathBuf {
    crate::kernel::cache_dir().join("kvm-hangs")
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

fn kvm_hung_since_boot(marker: &Path) -> bool {
    boot_id().is_some_and(|id| std::fs::read_to_string(marker).is_ok_and(|m| m.trim() == id))
}

fn remember_kvm_hang(m: &Path) {
    if let Some(id) = boot_id() {
        if let Some(d) = m.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        // Best effort: without the marker the next run only waits again.
        let _ = std::fs::write(m, format!("{id}\n"));
    }
}

pub fn run(cfg: &VmConfig) -> Result<VmRun> {
    match cfg.accel {
        Accel::Tcg => boot(cfg, "tcg", cfg.timeout),
        Accel::Kvm => boot(cfg, "kvm", cfg.timeout),
        Accel::Auto if kvm_usable() && !kvm_hung_since_boot(&kvm_hang_marker()) => {
            // /dev/kvm existing is no proof (nested setups hang): give KVM a deadline to reach
            // the agent, then fall back to TCG, and remember it until the host reboots.
            match boot_until_ready(cfg, "kvm", Duration::from_secs(10)) {
                Err(e) if e.downcast_ref::<NeverReady>().is_some() => {
                    remember_kvm_hang(&kvm_hang_marker());
                    boot(cfg, "tcg", cfg.timeout)
                }
                other => other,
            }
        }
        Accel::Auto => boot(cfg, "tcg", cfg.timeout),
    }
}

fn boot(cfg: &VmConfig, accel: &'static str, timeout: Duration) -> Result<VmRun> {
    run_vm(cfg, accel, timeout, None)
}

fn boot_until_ready(
    cfg: &VmConfig,
    accel: &'static str,
    ready_deadline: Duration,
) -> Result<VmRun> {
    run_vm(cfg, accel, cfg.timeout, Some(ready_deadline))
}

fn run_vm(
    cfg: &VmConfig,
    accel: &'static str,
    timeout: Duration,
    ready_deadline: Option<Duration>,
) -> Result<VmRun> {
    let console = cfg.workdir.join(format!("console-{accel}.log"));
    let results = cfg.workdir.join(format!("results-{accel}.log"));
    let _ = fs::remove_file(&console);
    let _ = fs::remove_file(&results);
    let mut cmd = qemu_command(cfg, accel, &console, &results);
    let start = Instant::now();
    let child = cmd
        .spawn()
        .context("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")?;
    let mut guard = Guard(child);
    let mut boot = None;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        if super::interrupted() {
            bail!("interrupted; the guest was stopped");
        }
        let frames = read_frames(&results);
        if boot.is_none() && !frames.is_empty() {
            boot = Some(start.elapsed());
        }
        let done = frames.contains(&Message::Done);
        let exited = guard.0.try_wait().context("waiting for qemu")?.is_some();
        if done || exited {
            return finish(&mut guard, &results, &console, accel, start, boot);
        }
        if let Some(d) = ready_deadline
            && boot.is_none()
            && start.elapsed() > d
        {
            return Err(NeverReady(format!(
                "the {accel} guest did not reach the agent within {d:?}"
            ))
            .into());
        }
        let waited = Message::tools_wait(&frames).map_or(cfg.tools_wait, Duration::from_millis);
        if start.elapsed() > timeout + waited {
            let console_text = fs::read_to_string(&console).unwrap_or_default();
            bail!(
                "the guest did not finish within {timeout:?} (--timeout) after {waited:?} waiting for its tools to start; qemu was stopped\n--- guest console (last lines):\n{}",
                tail(&console_text, 30)
            );
        }
    }
}

/// The size of TCG's translation cache, in MiB. qemu's default, 1 GiB, fills as the guest
/// runs new code, and BCC's tools run clang and LLVM (three at once): 690 MiB of qemu's
/// 1,247 MiB peak for one BCC tool was translated code, 560 MiB the guest's memory. With 128
/// MiB the same verify took as long (56 s against 57 s) and peaked at 848 MiB; with 64 MiB
/// the cache flushed often enough to take 8 s longer.
const TCG_CACHE_MIB: u32 = 128;

/// qemu's `-accel` argument: TCG with its cache bounded (`TCG_CACHE_MIB`), KVM as it is.
fn accel_arg(accel: &str) -> String {
    if accel == "tcg" {
        format!("tcg,tb-size={TCG_CACHE_MIB}")
    } else {
        accel.to_string()
    }
}

/// qemu with the console on the first serial port and the agent's results on the second,
/// both into files.
fn qemu_command(cfg: &VmConfig, accel: &'static str, console: &Path, results: &Path) -> Command {
    let base = if cfg.share_host_root {
        1536 + 512 * cfg.cpus
    } else {
        256 + 128 * cfg.cpus
    };
    // The kernel holds the initramfs image while it unpacks it into memory: room for both
    // (the tools of three libbpf-rs crates, original and migrated, outgrew the base size: the
    // unpacking stopped short of the manifest).
    let initrd_mib = std::fs::metadata(cfg.initrd).map_or(0, |m| m.len().div_ceil(1 << 20));
    let mem = super::memory::guest_mib(
        u64::from(base) + 2 * initrd_mib,
        cfg.map_bytes,
        cfg.tool_processes,
    );
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-machine",
        "pc",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-monitor",
        "none",
    ])
    .args(["-accel", &accel_arg(accel)])
    .args(["-cpu", if accel == "kvm" { "host" } else { "max" }])
    .args(["-m", &mem.to_string(), "-smp", &cfg.cpus.to_string()])
    .arg("-kernel")
    .arg(cfg.kernel)
    .arg("-initrd")
    .arg(cfg.initrd)
    // init_on_alloc=0: the kernel does not zero every page it hands out (Debian's default
    // does), so memory the guest takes but never writes (the workload's huge page pool) is
    // not memory of the host's. acpi=noirq: PCI interrupts routed by the BIOS's table, not
    // by ACPI, whose interpreter took 140 to 280 ms a virtio device under emulation when
    // virtio_pci bound it (`initcall_debug`: `\_SB_.LNKB: Enabled at IRQ 10`); loading
    // the guest's modules took 1.6 s, 0.85 s without (the devices use MSI-X anyway).
    .args([
        "-append",
        "console=ttyS0 panic=-1 oops=panic loglevel=4 mitigations=off init_on_alloc=0 acpi=noirq",
    ])
    .args(if cfg.share_host_root {
        &[
            "-fsdev",
            "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device",
            "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        ][..]
    } else {
        &[]
    })
    .args(cfg.disks.iter().flat_map(|d| {
        [
            "-drive".to_string(),
            format!("file={},if=virtio,format=raw", d.display()),
        ]
    }))
    .arg("-serial")
    .arg(format!("file:{}", console.display()))
    .arg("-serial")
    .arg(format!("file:{}", results.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    // If bpf-migrate dies (Ctrl-C, kill), the guest dies with it: no stray qemu.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// The run once the agent is done or qemu has exited: an error unless the agent finished.
fn finish(
    guard: &mut Guard,
    results: &Path,
    console: &Path,
    accel: &'static str,
    start: Instant,
    boot: Option<Duration>,
) -> Result<VmRun> {
    // Let qemu flush and exit on its own after the power-off.
    let wait_until = Instant::now() + Duration::from_secs(2);
    while guard.0.try_wait().context("waiting for qemu")?.is_none() && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let frames = read_frames(results);
    let console_text = fs::read_to_string(console).unwrap_or_default();
    if !frames.contains(&Message::Done) {
        let mut stderr = String::new();
        if let Some(mut e) = guard.0.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        let kept = keep_console(console)
            .map(|p| format!("\n--- the whole console log is kept at {}", p.display()))
            .unwrap_or_default();
        bail!(
            "the guest stopped before the agent finished{}\n--- qemu: {}\n--- guest console (last lines):\n{}{kept}",
            panic_of(&console_text)
                .map(|p| format!(": {p}"))
                .unwrap_or_default(),
            stderr.trim(),
            tail(&console_text, 30)
        );
    }
    Ok(VmRun {
        frames,
        console: console_text,
        accel,
        boot: boot.unwrap_or_default(),
        total: start.elapsed(),
    })
}

/// The kernel's panic line (`Kernel panic - not syncing: ...`), after the first line that
/// says what went wrong before it (a BUG, an oops, a fault), if the console has one.
fn panic_of(console: &str) -> Option<String> {
    let lines: Vec<&str> = console.lines().map(str::trim).collect();
    let at = lines
        .iter()
        .position(|l| l.contains("Kernel panic - not syncing"))?;
    let panic = lines[at][lines[at].find("Kernel panic")?..].to_string();
    let cause = lines[..at].iter().find_map(|l| {
        ["BUG:", "Oops:", "general protection fault", "Out of memory"]
            .iter()
            .find_map(|w| l.find(w).map(|i| &l[i..]))
    });
    Some(match cause {
        Some(c) if !panic.contains(c) => format!("{c}; {panic}"),
        _ => panic,
    })
}

/// A copy of the guest's console log that outlives the work directory (which goes unless
/// --keep): where a failed guest's whole story is.
fn keep_console(console: &Path) -> Option<PathBuf> {
    let text = fs::read(console).ok()?;
    let mut f = tempfile::Builder::new()
        .prefix("bpf-migrate-console-")
        .suffix(".log")
        .tempfile()
        .ok()?;
    std::io::Write::write_all(&mut f, &text).ok()?;
    f.keep().ok().map(|(_, p)| p)
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Valid frames in the results file: `BPFM1 <len> <fnv1a64> <json>`; anything else (or a
/// frame whose length or checksum is off) is ignored.
pub fn read_frames(path: &Path) -> Vec<Message> {
    let Ok(bytes) = fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .filter_map(bpf_migrate_protocol::parse_frame)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_quoted_with_what_went_wrong_before_it() {
        let console = "[    1.0] ok\n[    2.1] BUG: unable to handle page fault for address: 0000000000001000\n\
                       [    2.2] RIP: 0010:map_create+0x1a/0x5c0\n\
                       [    2.3] Kernel panic - not syncing: Fatal exception\n[    2.4] Kernel Offset: disabled\n";
        assert_eq!(
            panic_of(console).unwrap(),
            "BUG: unable to handle page fault for address: 0000000000001000; Kernel panic - not syncing: Fatal exception"
        );
        assert_eq!(
            panic_of("Kernel panic - not syncing: Out of memory and no killable processes...\n")
                .unwrap(),
            "Kernel panic - not syncing: Out of memory and no killable processes..."
        );
        assert_eq!(panic_of("[ 1.0] reboot: Power down\n"), None);
    }

    #[test]
    fn a_kvm_hang_is_remembered_for_this_boot_only() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("cache/kvm-hangs");
        assert!(!kvm_hung_since_boot(&marker));
        remember_kvm_hang(&marker);
        assert!(kvm_hung_since_boot(&marker));
        // Another boot's marker says nothing of this one.
        std::fs::write(&marker, "00000000-0000-0000-0000-000000000000\n").unwrap();
        assert!(!kvm_hung_since_boot(&marker));
    }
}
