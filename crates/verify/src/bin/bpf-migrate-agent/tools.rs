//! Tool-level verify in the guest: the programs' own user space (a libbpf loader, say), each
//! original twice and its migration once, run at the same time through the workload the
//! agent drives, as a user would run them: standard output on a terminal (so that it is line
//! buffered) that is the tool's controlling terminal, and Ctrl-C typed on it at the end.
//! The terminal sends the SIGINT, not kill(2): a tool tracing kill() must not see the others
//! being stopped.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bpf_migrate_protocol::{DATABASE_PID, HostRoot, ToolRun, ToolSpec};

/// Where the host's root file system is mounted (with its overlay) for tools that run on the
/// host's own user space.
pub const NEW_ROOT: &str = "/newroot";

/// The agent's limit of open files (`setup_system`), and a tool's: the soft limit a user's
/// shell has on Debian (programs that `select()` rely on it), the agent's as the hard one.
pub const AGENT_NOFILE: libc::rlim_t = 65536;
const TOOL_NOFILE: libc::rlim_t = 1024;

/// Loads the kernel modules `modules` (guest paths), in order; one already there is fine.
/// Returns what went wrong with each that did not load, for the workload log.
pub fn load_modules(modules: &[String]) -> Vec<String> {
    let mut errors = Vec::new();
    for m in modules {
        let data = match std::fs::read(m) {
            Ok(d) => d,
            Err(e) => {
                errors.push(format!("module {m}: {e}"));
                continue;
            }
        };
        let params = c"";
        // SAFETY: the module's bytes and an empty parameter string, both alive for the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_init_module,
                data.as_ptr(),
                data.len(),
                params.as_ptr(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                errors.push(format!("loading module {m}: {e}"));
            }
        }
    }
    errors
}

/// Mounts the host's root read-only over 9p at `/host` (its modules loaded first:
/// `load_modules`) with a writable overlay in memory at `NEW_ROOT`, the pseudo file systems
/// in it, and the kernel's headers at `/lib/modules/RELEASE/{build,source}` in it. Returns
/// what went wrong, for the report.
pub fn mount_host_root(h: &HostRoot) -> Result<(), String> {
    mount(
        "hostroot",
        "/host",
        "9p",
        libc::MS_RDONLY,
        "trans=virtio,version=9p2000.L,msize=512000,cache=loose",
    )?;
    mount("tmpfs", "/rw", "tmpfs", 0, "")?;
    for d in ["/rw/upper", "/rw/work"] {
        std::fs::create_dir_all(d).map_err(|e| format!("{d}: {e}"))?;
    }
    mount(
        "overlay",
        NEW_ROOT,
        "overlay",
        0,
        "lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work",
    )?;
    for d in ["/proc", "/sys", "/dev"] {
        bind(d, &format!("{NEW_ROOT}{d}"))?;
    }
    // A uprobe is set on a file, not a path. The workload's processes map the guest's own libc
    // and bash (the host's, copied into the guest), so a tool in the host's root that probes
    // libc (getaddrinfo, pthread_create) or bash (readline) must find those same files at
    // the paths it resolves, not the host's copies (the overlay's, which nothing maps).
    for f in guest_probed_files() {
        let there = format!("{NEW_ROOT}{f}");
        if std::fs::metadata(&there).is_ok() {
            bind(&f, &there)?;
        }
    }
    let modules = format!("{NEW_ROOT}/lib/modules/{}", h.release);
    bind(
        &format!("{NEW_ROOT}{}", h.headers),
        &format!("{modules}/build"),
    )?;
    bind(
        &format!("{NEW_ROOT}{}", h.headers_common),
        &format!("{modules}/source"),
    )?;
    Ok(())
}

/// The guest's own files that the workload runs and tools put uprobes on: the libc the agent
/// maps (from its own memory map) and bash. The agent attaches a uprobe section that names no
/// file to the first that defines its function (`attach_unbound_uprobe`).
pub fn guest_probed_files() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let libc = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-"))
        })
        .map(str::to_string);
    libc.into_iter()
        .chain(
            std::fs::metadata(crate::workload::BASH)
                .is_ok()
                .then(|| crate::workload::BASH.to_string()),
        )
        .collect()
}

pub fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), String> {
    // A directory is made where nothing is; a file is bound over a file.
    if std::fs::symlink_metadata(target).is_err() {
        std::fs::create_dir_all(target).map_err(|e| format!("{target}: {e}"))?;
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL in mount arguments");
    let (s, t, f, d) = (c(src), c(target), c(fstype), c(data));
    // SAFETY: C strings alive for the call.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) };
    if rc != 0 {
        return Err(format!(
            "mount {fstype} {src} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Makes `cmd` run in `root` (a session of its own, `/` its working directory), as the user
/// and group `ids` when given.
pub fn in_root(cmd: &mut Command, root: &str, ids: Option<(u32, u32)>) -> Result<(), String> {
    let root = std::ffi::CString::new(root).map_err(|_| format!("a NUL in {root}"))?;
    // SAFETY: only async-signal-safe calls between fork and exec, on a C string made before.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if libc::setsid() < 0
                || libc::chroot(root.as_ptr()) != 0
                || libc::chdir(c"/".as_ptr()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if let Some((uid, gid)) = ids
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Runs `argv` in `root` to its end; `Err` names it with what it printed when it fails.
pub fn run_in_root(root: &str, argv: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null());
    in_root(&mut cmd, root, None)?;
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.trim();
        let said = if said.is_empty() {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        } else {
            said.to_string()
        };
        return Err(format!("{} exited {}: {said}", argv.join(" "), out.status));
    }
    Ok(())
}

/// `from` at `to`, with what is mounted below it.
pub fn bind(from: &str, to: &str) -> Result<(), String> {
    mount(from, to, "", libc::MS_BIND | libc::MS_REC, "")
}

/// A tool is ready when one of its threads waits in one of these and none runs: it has
/// attached and polls its buffer.
const POLL_SYSCALLS: &[u64] = &[
    7,   // poll
    23,  // select
    232, // epoll_wait
    270, // pselect6
    271, // ppoll
    281, // epoll_pwait
    441, // epoll_pwait2
];

pub struct Running {
    id: String,
    child: Option<Child>,
    spawn_error: Option<String>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    readers: Vec<JoinHandle<()>>,
    ready: bool,
    still_starting: bool,
    exited_early: bool,
    workload_at: usize,
    workload_end: usize,
    /// The terminal's master side, to type Ctrl-C on.
    keyboard: Option<OwnedFd>,
    ctrl_c_typed: u8,
    started: Instant,
    ready_ms: Option<u64>,
}

impl Running {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The tool's process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Starts every tool of the manifest, all at once; those that run in the host's root do not
/// start when it could not be mounted (`host_root_error`), and say why.
pub fn start(specs: &[ToolSpec], host_root_error: Option<&str>) -> Vec<Running> {
    specs
        .iter()
        .map(|spec| match host_root_error.filter(|_| spec.host_root) {
            Some(e) => {
                let mut r = start_one(&ToolSpec {
                    argv: Vec::new(),
                    ..spec.clone()
                });
                r.spawn_error = Some(format!("the host's root file system: {e}"));
                r
            }
            None => start_one(spec),
        })
        .collect()
}

fn start_one(spec: &ToolSpec) -> Running {
    let mut r = Running {
        id: spec.id.clone(),
        child: None,
        spawn_error: None,
        stdout: Arc::default(),
        stderr: Arc::default(),
        stop: Arc::default(),
        readers: Vec::new(),
        ready: false,
        still_starting: false,
        exited_early: false,
        workload_at: 0,
        workload_end: 0,
        keyboard: None,
        ctrl_c_typed: 0,
        started: Instant::now(),
        ready_ms: None,
    };
    match spawn(spec) {
        Ok((child, master, stderr)) => {
            r.keyboard = master.try_clone().ok();
            r.readers
                .push(reader(master, r.stdout.clone(), r.stop.clone()));
            r.readers
                .push(reader(stderr, r.stderr.clone(), r.stop.clone()));
            r.child = Some(child);
        }
        Err(e) => r.spawn_error = Some(e),
    }
    r
}

/// `argv` with `DATABASE_PID` replaced by the database backend's PID; `Err` when it names it
/// and the boot has none.
fn with_database_pid(argv: &[String]) -> Result<Vec<String>, String> {
    if !argv.iter().any(|a| a.contains(DATABASE_PID)) {
        return Ok(argv.to_vec());
    }
    let pid = match crate::database::backend_pid() {
        Some(Ok(pid)) => pid,
        Some(Err(e)) => return Err(format!("{DATABASE_PID}: no database server: {e}")),
        None => return Err(format!("{DATABASE_PID}: this boot has no database server")),
    };
    Ok(argv
        .iter()
        .map(|a| a.replace(DATABASE_PID, &pid.to_string()))
        .collect())
}

/// The tool with its standard output on a new terminal and its standard error on a pipe;
/// returns the terminal's master side and the pipe's read side.
fn spawn(spec: &ToolSpec) -> Result<(Child, OwnedFd, OwnedFd), String> {
    let (master, slave) = openpty()?;
    let (err_r, err_w) = pipe()?;
    let argv = with_database_pid(&spec.argv)?;
    let mut cmd = Command::new(argv.first().ok_or("an empty command line")?);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave))
        .stderr(Stdio::from(err_w))
        .env("TERM", "dumb");
    let root = spec
        .host_root
        .then(|| std::ffi::CString::new(NEW_ROOT).expect("no NUL"));
    let cwd = spec
        .cwd
        .as_deref()
        .map(|d| std::ffi::CString::new(d).map_err(|_| format!("a NUL in {d}")))
        .transpose()?;
    if root.is_none()
        && let Some(d) = &spec.cwd
    {
        cmd.current_dir(d);
    }
    // A session of its own whose controlling terminal is its standard output, so that Ctrl-C
    // typed there reaches it (and its children) as it would a user's; in the host's root
    // when it runs on the host's user space.
    // SAFETY: only async-signal-safe calls between fork and exec, on C strings made before.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            let files = libc::rlimit {
                rlim_cur: TOOL_NOFILE,
                rlim_max: AGENT_NOFILE,
            };
            if libc::setsid() < 0
                || libc::ioctl(1, libc::TIOCSCTTY, 0) < 0
                || libc::setrlimit(libc::RLIMIT_NOFILE, &files) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(r) = &root
                && (libc::chroot(r.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(d) = &cwd
                && libc::chdir(d.as_ptr()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    // The child holds the terminal and the pipe now: the readers see their end when it exits.
    drop(cmd);
    Ok((child, master, err_r))
}

pub fn openpty() -> Result<(OwnedFd, OwnedFd), String> {
    let (mut master, mut slave): (RawFd, RawFd) = (-1, -1);
    // SAFETY: out-pointers to two ints; no name, termios or window size.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!("openpty: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: openpty returned two open descriptors that nothing else owns; close-on-exec,
    // so that the next tools and the workload do not inherit them (the tool's own copy is
    // its standard output, which the spawn dups).
    let (master, slave) = unsafe {
        libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(slave, libc::F_SETFD, libc::FD_CLOEXEC);
        (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave))
    };
    // Raw (no \r added to line ends, nothing echoed), but Ctrl-C still interrupts.
    // SAFETY: a termios read from and written back to the open slave.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(slave.as_raw_fd(), &mut t) == 0 {
            libc::cfmakeraw(&mut t);
            // Ctrl-C interrupts, but does not flush what the reader has not taken yet.
            t.c_lflag |= libc::ISIG | libc::NOFLSH;
            libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t);
        }
    }
    Ok((master, slave))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: an array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Copies what `fd` gives into `into` until its end, or until `stop` (a grandchild may keep
/// a terminal open after the tool exits).
fn reader(fd: OwnedFd, into: Arc<Mutex<Vec<u8>>>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let mut p = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd.
            let n = unsafe { libc::poll(&mut p, 1, 100) };
            if stop.load(Ordering::SeqCst) {
                return;
            }
            if n <= 0 {
                continue;
            }
            // SAFETY: reading into a local buffer of its size.
            let got = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                // EOF of the pipe, EIO of a terminal whose other side closed.
                return;
            }
            if let Ok(mut v) = into.lock() {
                v.extend_from_slice(&buf[..got as usize]);
            }
        }
    })
}

/// Waits until every tool polls its buffer, has exited, or `timeout` is over. A tool is
/// taken as ready after two looks in a row, 50 ms apart, find it polling. `drain` empties
/// the agent's own buffers meanwhile (the tools starting make events).
pub fn wait_ready(tools: &mut [Running], timeout: Duration, drain: &mut dyn FnMut()) {
    let started = Instant::now();
    let mut seen = vec![0u32; tools.len()];
    while started.elapsed() < timeout {
        let mut waiting = false;
        for (t, seen) in tools.iter_mut().zip(&mut seen) {
            if t.ready {
                continue;
            }
            let Some(child) = t.child.as_mut() else {
                continue;
            };
            if !matches!(child.try_wait(), Ok(None)) {
                continue;
            }
            if polling(child.id()) {
                *seen += 1;
                if *seen == 1 {
                    t.ready_ms = Some(t.started.elapsed().as_millis() as u64);
                }
                t.ready = *seen >= 2;
            } else {
                *seen = 0;
            }
            waiting |= !t.ready;
        }
        if !waiting {
            return;
        }
        drain();
        std::thread::sleep(Duration::from_millis(50));
    }
    for t in tools.iter_mut().filter(|t| !t.ready) {
        t.still_starting = t
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
    }
}

/// A sleep: tools that sleep between polls of their buffer (`sleep(0.1)` then a poll that
/// finds events at once, as BCC's cpuunclaimed does) are seldom seen in the poll.
const SLEEP_SYSCALLS: &[u64] = &[
    35,  // nanosleep
    230, // clock_nanosleep
];

/// Waits that a thread of a ready tool may be in while one sleeps: a lock, a child, a
/// signal.
const IDLE_SYSCALLS: &[u64] = &[
    34,  // pause
    61,  // wait4
    128, // rt_sigtimedwait
    130, // rt_sigsuspend
    202, // futex
    449, // futex_waitv
];

/// `pid` waits for its buffer's events: one thread waits in a poll-family call and none is
/// running (the others may wait on anything: a lock, a signal, a sleep); or, for a tool
/// that sleeps between polls, its main thread sleeps, the others sleep or wait too (none is
/// in another call, such as loading or attaching a program), and it has mapped a perf or
/// ring buffer (`maps_a_buffer`), which tools make once their programs are attached. (A Go
/// runtime's own thread always sleeps: only the main thread's sleep counts.)
fn polling(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let main = pid.to_string();
    let (mut polls, mut main_sleeps, mut all_idle) = (false, false, true);
    for t in tasks.flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("syscall")) else {
            return false;
        };
        let n = match s.split_whitespace().next() {
            None | Some("running") => return false,
            Some(n) => n.parse::<u64>().ok(),
        };
        let is = |set: &[u64]| n.is_some_and(|n| set.contains(&n));
        polls |= is(POLL_SYSCALLS);
        main_sleeps |= is(SLEEP_SYSCALLS) && t.file_name().to_str() == Some(main.as_str());
        all_idle &= is(POLL_SYSCALLS) || is(SLEEP_SYSCALLS) || is(IDLE_SYSCALLS);
    }
    polls || (main_sleeps && all_idle && maps_a_buffer(pid))
}

/// `pid` has mapped a perf buffer or a ring buffer: an `anon_inode:[perf_event]` mapping,
/// or an `anon_inode:bpf-map` one of a ring's size (a page and twice the data, what
/// libbpf's consumer maps) for one of the ring buffer maps it holds (its fdinfo, read only
/// when there is such a mapping). Not any BPF map's: libbpf maps an object's global data as
/// soon as it loads.
fn maps_a_buffer(pid: u32) -> bool {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return false;
    };
    let sizes = match mapped_buffers(&maps) {
        Mapped::Perf => return true,
        Mapped::BpfMaps(sizes) if !sizes.is_empty() => sizes,
        Mapped::BpfMaps(_) => return false,
    };
    const BPF_MAP_TYPE_RINGBUF: u64 = 27;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        let field = |name| crate::mirror::fdinfo_field(&info, name);
        field("map_type") == Some(BPF_MAP_TYPE_RINGBUF)
            && field("max_entries").is_some_and(|data| maps_ring(&sizes, data, page))
    })
}

/// One of a process's BPF map mappings (`sizes`) is a ring of `data` bytes as libbpf's
/// consumer maps it: its producer page and the data twice.
fn maps_ring(sizes: &[u64], data: u64, page: u64) -> bool {
    sizes.contains(&(page + 2 * data))
}

enum Mapped {
    /// A perf buffer.
    Perf,
    /// The sizes of the BPF map mappings.
    BpfMaps(Vec<u64>),
}

/// What of a process's mappings (`/proc/PID/maps`) may be its buffer.
fn mapped_buffers(maps: &str) -> Mapped {
    let mut sizes = Vec::new();
    for l in maps.lines() {
        if l.ends_with("anon_inode:[perf_event]") {
            return Mapped::Perf;
        }
        if l.ends_with("anon_inode:bpf-map") {
            sizes.extend(
                l.split_whitespace()
                    .next()
                    .and_then(|r| r.split_once('-'))
                    .and_then(|(a, b)| {
                        let (a, b) = (
                            u64::from_str_radix(a, 16).ok()?,
                            u64::from_str_radix(b, 16).ok()?,
                        );
                        b.checked_sub(a)
                    }),
            );
        }
    }
    Mapped::BpfMaps(sizes)
}

/// Where the workload begins in each tool's output: what the tools printed so far, once
/// they had a moment to print what they had.
pub fn mark_workload(tools: &mut [Running]) {
    if tools.is_empty() {
        return;
    }
    // What a tool printed before it polled is on its terminal already: the readers need
    // only a moment to take it.
    std::thread::sleep(Duration::from_millis(100));
    for t in tools {
        t.workload_at = t.stdout.lock().map(|v| v.len()).unwrap_or(0);
    }
}

/// Ctrl-C for every tool (again for one seen back waiting for events: `ctrl_c_again`), then
/// what each printed. A tool still running 10 s later is killed.
pub fn stop(mut tools: Vec<Running>) -> Vec<ToolRun> {
    if tools.is_empty() {
        return Vec::new();
    }
    // Let the tools poll once more (tools poll with timeouts of 100 ms or so) and print what
    // the last of the workload brought; what they print from now on is what stopping them
    // shows (their summaries), and what one sees of the others stopping.
    std::thread::sleep(Duration::from_millis(300));
    for t in &mut tools {
        t.workload_end = t.stdout.lock().map(|v| v.len()).unwrap_or(0);
        t.exited_early = t
            .child
            .as_mut()
            .is_some_and(|c| !matches!(c.try_wait(), Ok(None)));
    }
    for t in &mut tools {
        ctrl_c(t);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    ctrl_c_again(&mut tools, deadline);
    tools.into_iter().map(|t| finish(t, deadline)).collect()
}

/// Types Ctrl-C on the terminal of a tool still running.
fn ctrl_c(t: &mut Running) {
    let running = t
        .child
        .as_mut()
        .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
    if let (Some(k), true) = (&t.keyboard, running) {
        // SAFETY: one byte from a local buffer to an open descriptor.
        unsafe { libc::write(k.as_raw_fd(), b"\x03".as_ptr().cast(), 1) };
        t.ctrl_c_typed += 1;
    }
}

/// How long a tool must be seen waiting for events again after Ctrl-C before it is typed
/// once more.
const BACK_POLLING: Duration = Duration::from_secs(2);

/// Types Ctrl-C a second time, as a user would, on a tool seen back waiting for events for
/// `BACK_POLLING` after the first: a BCC tool whose Ctrl-C landed in its callback, which
/// Python runs through ctypes, which prints the KeyboardInterrupt raised there and ignores
/// it, so that the tool polls on (else killed at `deadline`, its summary lost). Only then:
/// a tool printing its summary is not waiting for events, and a second Ctrl-C there would
/// cut it short.
fn ctrl_c_again(tools: &mut [Running], deadline: Instant) {
    let mut since: Vec<Option<Instant>> = vec![None; tools.len()];
    while Instant::now() < deadline {
        let mut waiting = false;
        for (t, since) in tools.iter_mut().zip(&mut since) {
            let Some(child) = t.child.as_mut() else {
                continue;
            };
            if t.ctrl_c_typed != 1 || !matches!(child.try_wait(), Ok(None)) {
                continue;
            }
            waiting = true;
            if !polling(child.id()) {
                *since = None;
                continue;
            }
            let from = *since.get_or_insert_with(Instant::now);
            if from.elapsed() >= BACK_POLLING {
                ctrl_c(t);
            }
        }
        if !waiting {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn finish(mut t: Running, deadline: Instant) -> ToolRun {
    let mut status = None;
    if let Some(child) = t.child.as_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(s)) => {
                    status = Some(s);
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    status = child.wait().ok();
                    break;
                }
            }
        }
    }
    // The readers end at their end of file; a grandchild holding a terminal open does not
    // keep them past a second.
    let readers_deadline = Instant::now() + Duration::from_secs(1);
    while t.readers.iter().any(|r| !r.is_finished()) && Instant::now() < readers_deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    t.stop.store(true, Ordering::SeqCst);
    for r in t.readers.drain(..) {
        let _ = r.join();
    }
    use std::os::unix::process::ExitStatusExt;
    let bytes = |b: &Arc<Mutex<Vec<u8>>>| b.lock().map(|v| v.clone()).unwrap_or_default();
    // Each part of the output converted on its own, so that the offsets hold in the text
    // (a lossy conversion may change a part's length).
    let out = bytes(&t.stdout);
    let at = t.workload_at.min(out.len());
    let end = t.workload_end.clamp(at, out.len());
    let [before, during, after] =
        [&out[..at], &out[at..end], &out[end..]].map(|p| String::from_utf8_lossy(p).into_owned());
    let (workload_at, workload_end) = (before.len(), before.len() + during.len());
    ToolRun {
        id: t.id,
        spawn_error: t.spawn_error,
        stdout: before + &during + &after,
        workload_at,
        workload_end,
        stderr: String::from_utf8_lossy(&bytes(&t.stderr)).into_owned(),
        ready: t.ready,
        still_starting: t.still_starting,
        exited_early: t.exited_early,
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        ready_ms: t.ready.then_some(t.ready_ms).flatten(),
        ctrl_c_typed: t.ctrl_c_typed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_perf_buffer_or_bpf_maps_sizes_are_seen_in_maps() {
        let python = "55d0c0a00000-55d0c0a6e000 r--p 00000000 00:1f 131 /usr/bin/python3.11\n\
                      7f2c5a000000-7f2c5a011000 rw-s 00000000 00:0e 1042 anon_inode:[perf_event]\n";
        assert!(matches!(mapped_buffers(python), Mapped::Perf));
        // A 64 KiB ring: its consumer page, then its producer page and the data twice.
        let ring = "7f2c5a000000-7f2c5a001000 rw-s 00000000 00:0e 1043 anon_inode:bpf-map\n\
                    7f2c5b000000-7f2c5b021000 r--s 00001000 00:0e 1043 anon_inode:bpf-map\n";
        let Mapped::BpfMaps(sizes) = mapped_buffers(ring) else {
            panic!("a ring is no perf buffer")
        };
        assert!(maps_ring(&sizes, 65536, 4096));
        // A loaded object's global data (.bss, .rodata), before its consumer: not a buffer.
        let loaded = "7f2c5a000000-7f2c5a001000 rw-s 00000000 00:0e 1043 anon_inode:bpf-map\n\
                      7f2c5a100000-7f2c5a102000 r--s 00000000 00:0e 1044 anon_inode:bpf-map\n";
        let Mapped::BpfMaps(sizes) = mapped_buffers(loaded) else {
            panic!("global data is no perf buffer")
        };
        assert!(!maps_ring(&sizes, 65536, 4096));
        // Still compiling: a library, the heap, no buffer.
        let compiling = "55d0c0a00000-55d0c0a6e000 r--p 00000000 00:1f 131 /usr/bin/python3.11\n\
                         7f2c50000000-7f2c58000000 rw-p 00000000 00:00 0 [heap]\n";
        assert!(matches!(mapped_buffers(compiling), Mapped::BpfMaps(s) if s.is_empty()));
    }

    #[test]
    fn a_ring_buffer_maps_fields_are_read_from_its_fdinfo() {
        let ring = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1043\nmap_type:\t27\n\
                    key_size:\t0\nvalue_size:\t0\nmax_entries:\t262144\nmap_flags:\t0x0\n";
        assert_eq!(crate::mirror::fdinfo_field(ring, "map_type"), Some(27));
        assert_eq!(
            crate::mirror::fdinfo_field(ring, "max_entries"),
            Some(262144)
        );
        // A field name is whole: `map_id` is not `map_id_x`, nor a prefix of another.
        assert_eq!(
            crate::mirror::fdinfo_field("map_type_x:\t3\n", "map_type"),
            None
        );
    }
}
