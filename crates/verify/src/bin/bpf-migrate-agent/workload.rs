//! The built-in workload: a tour of the hooks real tools trace, in named steps. Each step
//! that ran is reported by name, and what failed goes to the workload log; the buffers are
//! drained between steps so that none fills.
//!
//! Every step does the same thing on every run: the original's two loads and the migration
//! see the same events. None execs anything but the agent itself and, once, bash, so that the
//! counts a program of exec events sees stay what the steps say.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use fs_err as fs;

pub use bpf_migrate_protocol::GUEST_BASH as BASH;
use bpf_migrate_protocol::{MD_MEMBER, SCRATCH_FILE_SYSTEMS, SCRATCH_MOUNT, scratch_mount};

type Step = (&'static str, fn() -> Result<(), String>);

/// In order. A tool that traces one of these hooks sees its events during the workload.
const STEPS: &[Step] = &[
    ("exec", exec),
    ("files", files),
    ("disk", disk),
    ("disk-xfs", disk_xfs),
    ("disk-btrfs", disk_btrfs),
    ("nfs", nfs),
    ("md-flush", md_flush),
    ("stat", stat),
    ("signal", signal),
    ("tcp", tcp),
    ("tcp-refused-reset", tcp_refused_and_reset),
    ("tcp-drop", tcp_drop),
    ("udp", udp),
    ("names", names),
    ("database", database),
    ("mount", mount_tmpfs),
    ("memcg-oom", memcg_oom),
    ("direct-reclaim", direct_reclaim),
    ("sync", sync),
    ("shm", shm),
    ("threads", threads),
    ("readline", readline),
    ("runq-delay", runq_delay),
    ("sleep", sleep),
];

/// Steps that wait on a kernel timer: each runs on a thread of its own, started before the
/// others and joined after them, so that its wait passes while they work (the SYN that
/// `tcp-retransmit` has dropped is sent again 1 s later: the workload took 2.3 s with that
/// second in line). Their events fall among the others', in the same place for every
/// instance of a tool, since all of them see each event as it happens.
const BACKGROUND: &[Step] = &[("tcp-retransmit", tcp_retransmit)];

/// Runs every step; returns the names of those that ran, and logs what went wrong.
pub fn run(log: &mut Vec<String>, drain: &mut dyn FnMut()) -> Vec<String> {
    let background: Vec<_> = BACKGROUND
        .iter()
        .map(|&(name, step)| (name, std::thread::spawn(step)))
        .collect();
    let mut ran = Vec::new();
    let mut record = |name: &str, r: Result<(), String>| match r {
        Ok(()) => ran.push(name.to_string()),
        Err(e) if e == NOT_ASKED => {}
        Err(e) => log.push(format!("{name}: {e}")),
    };
    for (name, step) in STEPS {
        record(name, step());
        drain();
    }
    for (name, thread) in background {
        let r = thread
            .join()
            .unwrap_or_else(|_| Err("the step's thread panicked".to_string()));
        record(name, r);
        drain();
    }
    ran
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// exec and exit of children, with exit codes 0, 1 and 3.
fn exec() -> Result<(), String> {
    for code in [0, 1, 3] {
        let s = std::process::Command::new("/init")
            .args(["child", &code.to_string()])
            .status()
            .map_err(io("exec /init"))?;
        if s.code() != Some(code) {
            return Err(format!("the child exited {:?}, not {code}", s.code()));
        }
    }
    Ok(())
}

/// Create, write, read (then open 128 times), rename and unlink a file, make and remove a
/// directory (tmpfs).
fn files() -> Result<(), String> {
    let r = (|| -> std::io::Result<()> {
        fs::create_dir_all("/tmp/w/dir")?;
        fs::write("/tmp/w/a.txt", b"hello from bpf-migrate\n")?;
        let mut f = fs::File::open("/tmp/w/a.txt")?;
        let mut buf = String::new();
        f.read_to_string(&mut buf)?;
        // A burst of opens, as a tool sees from a build: more records than one page holds.
        for _ in 0..128 {
            fs::File::open("/tmp/w/a.txt")?;
        }
        fs::metadata("/tmp/w/a.txt")?;
        fs::rename("/tmp/w/a.txt", "/tmp/w/b.txt")?;
        fs::remove_file("/tmp/w/b.txt")?;
        fs::remove_dir("/tmp/w/dir")?;
        Ok(())
    })();
    r.map_err(|e| e.to_string())
}

/// Each scratch disk by what it is (a file system's type, or `MD_MEMBER`): its device's
/// name (`vda`) once mounted (a file system) or found (the md member), or why not.
static SCRATCH: std::sync::OnceLock<HashMap<String, Result<String, String>>> =
    std::sync::OnceLock::new();

/// Mounts the guest's scratch file systems (`disks`, in the order of its virtio disks) at
/// their `scratch_mount`. Before the workload: mounting reads the disks, which is no step's
/// doing. `missing`: file systems the host was asked for and could not make.
pub fn mount_scratch(disks: &[String], missing: &[String]) {
    let mut found = HashMap::new();
    for (i, what) in disks.iter().enumerate() {
        let dev = format!("vd{}", char::from(b'a' + i as u8));
        let r = match SCRATCH_FILE_SYSTEMS.iter().find(|f| f.fs == what.as_str()) {
            Some(f) => crate::tools::mount(
                &format!("/dev/{dev}"),
                &scratch_mount(f.fs),
                f.fs,
                0,
                f.mount_options,
            )
            .map(|()| dev)
            .map_err(|e| {
                format!("{e} (the guest kernel needs virtio-blk and {}: built in, or the modules of a kernel bpf-migrate provisioned)", f.fs)
            }),
            None => Ok(dev),
        };
        found.insert(what.clone(), r);
    }
    for f in SCRATCH_FILE_SYSTEMS {
        if missing.iter().any(|m| m == f.fs) {
            let why = format!(
                "the guest has no {} scratch disk: the host's {} is missing (apt-get install {}) or failed",
                f.fs, f.mkfs[0], f.package
            );
            found.insert(f.fs.to_string(), Err(why));
        }
    }
    let _ = SCRATCH.set(found);
}

/// The device of the scratch disk `what` (mounted, if a file system), or why there is none:
/// `NOT_ASKED` when the boot did not ask for it.
fn scratch(what: &str) -> Result<String, String> {
    match SCRATCH.get().and_then(|m| m.get(what)) {
        Some(r) => r.clone(),
        None => Err(NOT_ASKED.into()),
    }
}

/// A step's "error" that says it does not belong to this boot (a file system no program
/// names): neither run nor logged.
const NOT_ASKED: &str = "";

/// File I/O on ext4 on a scratch virtio disk; `disk-xfs` and `disk-btrfs` do the same on
/// theirs.
fn disk() -> Result<(), String> {
    file_io_on("ext4")
}

fn disk_xfs() -> Result<(), String> {
    file_io_on("xfs")
}

fn disk_btrfs() -> Result<(), String> {
    file_io_on("btrfs")
}

/// The same file I/O on the NFS mount, when the boot has one: a program names NFS.
fn nfs() -> Result<(), String> {
    match crate::nfs::mounted() {
        None => Err(NOT_ASKED.into()),
        Some(r) => file_io_in(&r?),
    }
}

/// File I/O on a disk-backed file system `fs` (on a scratch virtio disk), through to the
/// block layer: create a directory and a file, write 64 KiB in 4 KiB writes, fsync, drop the
/// file's cached pages, read it back from the disk, rename, unlink, remove the directory and
/// syncfs (the journal's commit of it all within the step).
fn file_io_on(fs: &str) -> Result<(), String> {
    scratch(fs)?;
    file_io_in(&scratch_mount(fs))
}

/// `file_io_on`'s I/O in the directory `root`.
fn file_io_in(root: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let dir = format!("{root}/w");
    let (a, b) = (format!("{dir}/a.dat"), format!("{dir}/b.dat"));
    let r = (|| -> std::io::Result<()> {
        fs::create_dir_all(&dir)?;
        let mut f = fs::File::create(&a)?;
        let block = [0x5au8; 4096];
        for _ in 0..16 {
            f.write_all(&block)?;
        }
        f.sync_all()?;
        // SAFETY: advice on a descriptor open for the call.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        drop(f);
        let mut f = fs::File::open(&a)?;
        let mut buf = vec![0u8; 16 << 10];
        while f.read(&mut buf)? > 0 {}
        drop(f);
        fs::rename(&a, &b)?;
        fs::remove_file(&b)?;
        fs::remove_dir(&dir)?;
        let d = fs::File::open(root)?;
        // SAFETY: syncfs on a descriptor open for the call.
        if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })();
    r.map_err(|e| e.to_string())
}

/// A flush through md (software RAID): a linear array without a superblock made of the
/// empty scratch disk through md's sysfs (as `mdadm --build` does), 4 KiB written to it and
/// fsync'ed (the block layer hands md a flush request, which md passes on to its member),
/// then the array stopped.
fn md_flush() -> Result<(), String> {
    const MD: &str = "/sys/block/md0/md";
    let dev = scratch(MD_MEMBER)?;
    let member = fs::read_to_string(format!("/sys/block/{dev}/dev")).map_err(|e| e.to_string())?;
    let sectors: u64 = fs::read_to_string(format!("/sys/block/{dev}/size"))
        .map_err(|e| e.to_string())?
        .trim()
        .parse()
        .map_err(|e| format!("/sys/block/{dev}/size: {e}"))?;
    let set = |f: &str, v: &str| fs::write(f, v).map_err(|e| e.to_string());
    if fs::metadata(MD).is_err() {
        set("/sys/module/md_mod/parameters/new_array", "md0").map_err(|e| {
            format!("{e} (the guest kernel needs md and its linear personality: built in, or the modules of a kernel bpf-migrate provisioned)")
        })?;
    }
    let built = (|| {
        set(&format!("{MD}/metadata_version"), "none")?;
        set(&format!("{MD}/level"), "linear")?;
        set(&format!("{MD}/raid_disks"), "1")?;
        set(&format!("{MD}/new_dev"), member.trim())?;
        set(&format!("{MD}/dev-{dev}/size"), &(sectors / 2).to_string())?;
        set(&format!("{MD}/dev-{dev}/slot"), "0")?;
        set(&format!("{MD}/array_state"), "active")
    })();
    let flushed = built.and_then(|()| {
        // A queue without a write cache completes flushes before md sees them.
        let cache =
            fs::read_to_string("/sys/block/md0/queue/write_cache").map_err(|e| e.to_string())?;
        if cache.trim() != "write back" {
            return Err(format!(
                "md0's queue has no write cache ({}): a flush would not reach md",
                cache.trim()
            ));
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open("/dev/md0")
            .map_err(|e| e.to_string())?;
        f.write_all(&[0xa5u8; 4096]).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())
    });
    let stopped = set(&format!("{MD}/array_state"), "clear");
    flushed.and(stopped)
}

/// The stat family, each as its own system call: stat, lstat, newfstatat, statx, statfs
/// and fstatfs (libc wrappers pick one of them; tools trace each).
fn stat() -> Result<(), String> {
    let path = c"/tmp";
    // SAFETY: C strings and out-buffers that live through each call; the buffers are big
    // enough for struct stat, struct statx and struct statfs.
    unsafe {
        let mut buf = [0u64; 64];
        let b = buf.as_mut_ptr().cast::<libc::c_void>();
        let calls: [(&str, i64); 6] = [
            ("stat", libc::syscall(libc::SYS_stat, path.as_ptr(), b)),
            ("lstat", libc::syscall(libc::SYS_lstat, path.as_ptr(), b)),
            (
                "newfstatat",
                libc::syscall(libc::SYS_newfstatat, libc::AT_FDCWD, path.as_ptr(), b, 0),
            ),
            (
                "statx",
                libc::syscall(
                    libc::SYS_statx,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    0,
                    libc::STATX_BASIC_STATS,
                    b,
                ),
            ),
            ("statfs", libc::syscall(libc::SYS_statfs, path.as_ptr(), b)),
            ("fstatfs", {
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
                let r = libc::syscall(libc::SYS_fstatfs, fd, b);
                libc::close(fd);
                r
            }),
        ];
        for (name, rc) in calls {
            if rc != 0 {
                return Err(format!("{name}: {}", std::io::Error::last_os_error()));
            }
        }
    }
    Ok(())
}

/// A signal sent to a child that waits for it.
fn signal() -> Result<(), String> {
    // SAFETY: the child only pauses and exits (async-signal-safe).
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::pause();
            libc::_exit(0);
        }
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        std::thread::sleep(Duration::from_millis(5));
        libc::kill(pid, libc::SIGUSR1);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
    }
    Ok(())
}

/// A TCP connection on loopback: connect, accept, data both ways, close.
fn tcp() -> Result<(), String> {
    let r = (|| -> std::io::Result<()> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let mut c = TcpStream::connect(l.local_addr()?)?;
        let (mut s, _) = l.accept()?;
        c.write_all(b"ping")?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b)?;
        s.write_all(b"pong")?;
        c.read_exact(&mut b)?;
        c.shutdown(Shutdown::Both)?;
        Ok(())
    })();
    r.map_err(|e| e.to_string())
}

/// A connect refused (a port nobody listens on: the peer answers with a reset), and an
/// established connection reset by its side closing with a zero linger.
fn tcp_refused_and_reset() -> Result<(), String> {
    let free = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io("bind"))?;
    match TcpStream::connect(free) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        Err(e) => return Err(format!("connect to a closed port: {e}")),
        Ok(_) => return Err("a connect to a closed port succeeded".into()),
    }
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("bind"))?;
    let c = TcpStream::connect(l.local_addr().map_err(io("local_addr"))?).map_err(io("connect"))?;
    let (s, _) = l.accept().map_err(io("accept"))?;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a linger struct that lives through the call, on an open socket.
    let rc = unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!("SO_LINGER: {}", std::io::Error::last_os_error()));
    }
    drop(c);
    let mut s = s;
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        other => Err(format!("the peer of a reset connection read {other:?}")),
    }
}

/// A SYN retransmitted: a connect to a listener whose accept queue is full (a backlog of 0,
/// one connection not yet accepted) is dropped; once that one is accepted, the SYN sent again
/// after the initial retransmission timeout (1 s) gets in.
fn tcp_retransmit() -> Result<(), String> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on descriptors this function owns; the address structs live
    // through the calls.
    unsafe {
        // Close-on-exec, as std's sockets are: the steps running meanwhile exec children.
        let l = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if l < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let listener = TcpListener::from_raw_fd(l);
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as libc::sa_family_t;
        a.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(l, (&a as *const libc::sockaddr_in).cast(), len) != 0
            || libc::listen(l, 0) != 0
        {
            return Err(format!("bind/listen: {}", std::io::Error::last_os_error()));
        }
        let addr = listener.local_addr().map_err(io("local_addr"))?;
        let first = TcpStream::connect(addr).map_err(io("connect"))?;
        // The second connect waits: its SYN is dropped while the queue is full.
        let second = std::thread::spawn(move || TcpStream::connect(addr));
        std::thread::sleep(Duration::from_millis(200));
        let (_s, _) = listener.accept().map_err(io("accept"))?;
        let second = second
            .join()
            .map_err(|_| "the connecting thread panicked".to_string())?
            .map_err(io("the retransmitted connect"))?;
        let _ = listener.accept().map_err(io("accept"))?;
        drop((first, second));
    }
    Ok(())
}

/// The `tcp-drop` step's tc program on loopback's egress (attached for the guest's life): its
/// `.bss` map, whose one `unsigned int` says whether it dropped its segment; or why there is
/// none.
static TCP_DROP: std::sync::OnceLock<Result<std::os::fd::OwnedFd, String>> =
    std::sync::OnceLock::new();

/// Loads the manifest's `tcp_drop` object and attaches its program to loopback's egress
/// (clsact, made if missing). Before the programs load: what attaching it does is no step's
/// doing.
pub fn attach_tcp_drop(path: Option<&str>) {
    use libbpf_rs::MapCore;
    use std::os::fd::AsFd;
    let r = path
        .ok_or_else(|| "no tc program was given".to_string())
        .and_then(|p| {
            let obj = libbpf_rs::ObjectBuilder::default()
                .open_file(p)
                .and_then(|o| o.load())
                .map_err(|e| format!("loading {p}: {e:#}"))?;
            let bss = obj
                .maps()
                .find(|m| m.name().to_string_lossy().ends_with(".bss"))
                .ok_or(format!("{p}: no .bss map"))?
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| e.to_string())?;
            let prog = obj.progs_mut().next().ok_or(format!("{p}: no program"))?;
            let mut hook = libbpf_rs::TcHookBuilder::new(prog.as_fd())
                .ifindex(1)
                .replace(true)
                .handle(1)
                .priority(1)
                .hook(libbpf_rs::TC_EGRESS);
            hook.create().and_then(|mut h| h.attach()).map_err(|e| {
                format!("attaching {p} to lo's egress (sch_ingress and cls_bpf?): {e:#}")
            })?;
            // The filter holds the program; the object stays loaded for the guest's life.
            std::mem::forget(obj);
            Ok(bss)
        });
    let _ = TCP_DROP.set(r);
}

/// A TCP segment with data dropped once on its way out (by the tc program `attach_tcp_drop`
/// attached: the kernel frees it with the reason `TC_EGRESS`, its socket still its owner, as
/// tools that trace drops see them) and sent again: a connection to `TCP_DROP_PORT` on
/// loopback, 32 bytes each way. Fails if the program dropped nothing.
fn tcp_drop() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let bss = match TCP_DROP.get() {
        Some(Ok(fd)) => fd,
        Some(Err(e)) => return Err(format!("the tc program that drops the segment: {e}")),
        None => return Err("the tc program that drops the segment was not attached".into()),
    };
    let listener = TcpListener::bind(("127.0.0.1", bpf_migrate_protocol::TCP_DROP_PORT))
        .map_err(io("bind"))?;
    let mut client = TcpStream::connect(listener.local_addr().map_err(io("local_addr"))?)
        .map_err(io("connect"))?;
    let (mut server, _) = listener.accept().map_err(io("accept"))?;
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io("timeout"))?;
    }
    let msg = [0x42u8; 32];
    let mut got = [0u8; 32];
    client.write_all(&msg).map_err(io("write"))?;
    server
        .read_exact(&mut got)
        .map_err(io("read the resent segment"))?;
    server.write_all(&got).map_err(io("write"))?;
    client.read_exact(&mut got).map_err(io("read"))?;
    drop((client, server));
    let (key, mut dropped) = (0u32, 0u32);
    // SAFETY: a lookup in an array map of one 4-byte value, into a 4-byte value.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_map_lookup_elem(
            bss.as_raw_fd(),
            (&key as *const u32).cast(),
            (&mut dropped as *mut u32).cast(),
        )
    };
    if rc != 0 || dropped == 0 {
        return Err("the tc program dropped no segment".into());
    }
    Ok(())
}

/// A datagram on loopback.
fn udp() -> Result<(), String> {
    let r = (|| -> std::io::Result<()> {
        let u = UdpSocket::bind("127.0.0.1:0")?;
        let v = UdpSocket::bind("127.0.0.1:0")?;
        u.send_to(b"datagram", v.local_addr()?)?;
        let mut b = [0u8; 16];
        v.recv_from(&mut b)?;
        Ok(())
    })();
    r.map_err(|e| e.to_string())
}

unsafe extern "C" {
    fn gethostbyname(name: *const libc::c_char) -> *mut libc::c_void;
}

/// Name resolution through libc (`getaddrinfo`, `gethostbyname`) from `/etc/hosts`: the
/// calls uprobes on libc trace. The agent's libc is the host's, at the same path.
fn names() -> Result<(), String> {
    for (path, text) in [
        ("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"),
        ("/etc/nsswitch.conf", "hosts: files\n"),
    ] {
        if fs::metadata(path).is_err() {
            fs::create_dir_all("/etc").map_err(|e| e.to_string())?;
            fs::write(path, text).map_err(|e| e.to_string())?;
        }
    }
    ("localhost", 80)
        .to_socket_addrs()
        .map_err(io("getaddrinfo localhost"))?;
    // SAFETY: a C string; the result points into libc's static storage and is not kept.
    if unsafe { gethostbyname(c"localhost".as_ptr()) }.is_null() {
        return Err("gethostbyname localhost found nothing".into());
    }
    Ok(())
}

/// Mount and unmount a tmpfs.
/// Queries on the database server's connection (`database::QUERIES`), when the boot has one:
/// a program names a database's query probes.
fn database() -> Result<(), String> {
    crate::database::queries().unwrap_or_else(|| Err(NOT_ASKED.into()))
}

fn mount_tmpfs() -> Result<(), String> {
    crate::tools::mount("tmpfs", "/mnt/w", "tmpfs", 0, "")?;
    let p = CString::new("/mnt/w").expect("no NUL");
    // SAFETY: a C string alive for the call.
    if unsafe { libc::umount(p.as_ptr()) } != 0 {
        return Err(format!(
            "umount /mnt/w: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Memory pressure in a memory cgroup of 16 MiB (reclaim in the cgroup), then an OOM kill:
/// a child that touches 64 MiB of anonymous memory there.
fn memcg_oom() -> Result<(), String> {
    const CG: &str = "/sys/fs/cgroup/bpf-migrate-workload";
    let write = |f: &str, s: &str| fs::write(f, s).map_err(|e| e.to_string());
    write("/sys/fs/cgroup/cgroup.subtree_control", "+memory")?;
    fs::create_dir_all(CG).map_err(|e| e.to_string())?;
    write(&format!("{CG}/memory.max"), "16M")?;
    let mut go = [0; 2];
    // SAFETY: an array of two ints for pipe to fill.
    if unsafe { libc::pipe(go.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the child waits for its go, then only maps and touches memory and exits:
    // async-signal-safe calls, no allocation.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe {
            let mut b = 0u8;
            libc::read(go[0], (&mut b as *mut u8).cast(), 1);
            let len = 64 << 20;
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                libc::_exit(2);
            }
            for off in (0..len).step_by(4096) {
                *p.cast::<u8>().add(off) = 1;
            }
            libc::_exit(0);
        }
    }
    // SAFETY: closing and writing to the pipe's descriptors, waiting for the child.
    unsafe {
        libc::close(go[0]);
        if pid < 0 {
            libc::close(go[1]);
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        let moved = write(&format!("{CG}/cgroup.procs"), &pid.to_string());
        libc::write(go[1], [1u8].as_ptr().cast(), 1);
        libc::close(go[1]);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        let _ = fs::remove_dir(CG);
        moved?;
        if !(libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL) {
            return Err(format!(
                "the child was not OOM-killed (wait status {st:#x})"
            ));
        }
    }
    Ok(())
}

/// The figure named `key` in a `/proc/meminfo` (`Key:   N kB`) or `/proc/vmstat` (`key N`)
/// text.
fn figure(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once([':', ' '])?;
        (k == key).then(|| v.split_whitespace().next()?.parse().ok())?
    })
}

/// `/proc/meminfo`'s figure `key`, in kB.
fn meminfo(key: &str) -> Result<u64, String> {
    let text = fs::read_to_string("/proc/meminfo").map_err(|e| e.to_string())?;
    figure(&text, key).ok_or_else(|| format!("/proc/meminfo has no {key}"))
}

/// The times the kernel has reclaimed memory in an allocating task (`allocstall_*`).
fn allocstalls() -> Result<u64, String> {
    let text = fs::read_to_string("/proc/vmstat").map_err(|e| e.to_string())?;
    Ok([
        "allocstall_dma",
        "allocstall_dma32",
        "allocstall_normal",
        "allocstall_movable",
    ]
    .iter()
    .filter_map(|k| figure(&text, k))
    .sum())
}

/// Global direct reclaim (the allocating task reclaims, not kswapd), and the compaction
/// before it: 24 MiB of clean page cache (a sparse file on the scratch disk, read), then
/// the hugetlb pool asked for 8 MiB more than is free. A huge page needs 2 MiB in one
/// piece, which kswapd's reclaim of single pages does not make, so the kernel compacts and
/// reclaims in the asking task; the page cache is what it takes, not the tools' memory, and
/// the pool is emptied at once. Fails if the kernel's `allocstall` counters did not move.
fn direct_reclaim() -> Result<(), String> {
    const POOL: &str = "/proc/sys/vm/nr_hugepages";
    scratch("ext4")?;
    let cache = format!("{SCRATCH_MOUNT}/reclaimable");
    let r = (|| -> Result<(), String> {
        let before = allocstalls()?;
        let f = fs::File::create(&cache).map_err(|e| e.to_string())?;
        f.set_len(24 << 20).map_err(|e| e.to_string())?;
        let mut f = fs::File::open(&cache).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1 << 20];
        while f.read(&mut buf).map_err(|e| e.to_string())? > 0 {}
        let huge = meminfo("Hugepagesize")?.max(1);
        let free = meminfo("MemFree")?;
        let pages = (free + (8 << 10)) / huge;
        let asked = fs::write(POOL, pages.to_string()).map_err(|e| format!("{POOL}: {e}"));
        let emptied = fs::write(POOL, "0").map_err(|e| format!("{POOL}: {e}"));
        asked?;
        emptied?;
        let after = allocstalls()?;
        if after == before {
            return Err(format!(
                "the kernel did not reclaim in the allocating task (allocstall stayed at {after}; asked for {pages} huge pages with {free} kB free)"
            ));
        }
        Ok(())
    })();
    let _ = fs::remove_file(&cache);
    r
}

/// sync(2), and syncfs(2), fsync(2) and fdatasync(2) of a file.
fn sync() -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = fs::File::create("/tmp/bpf-migrate-sync").map_err(|e| e.to_string())?;
    // SAFETY: sync calls on a descriptor open for the calls.
    let failed = unsafe {
        libc::sync();
        libc::syncfs(f.as_raw_fd()) != 0
            || libc::fsync(f.as_raw_fd()) != 0
            || libc::fdatasync(f.as_raw_fd()) != 0
    };
    drop(f);
    let _ = fs::remove_file("/tmp/bpf-migrate-sync");
    if failed {
        return Err(format!("sync: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A SysV shared memory segment: created, attached, detached and removed.
fn shm() -> Result<(), String> {
    // SAFETY: a private segment of one page, attached, written, detached and removed here.
    unsafe {
        let id = libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600);
        if id < 0 {
            return Err(format!("shmget: {}", std::io::Error::last_os_error()));
        }
        let p = libc::shmat(id, std::ptr::null(), 0);
        let attached = p as isize != -1;
        if attached {
            *p.cast::<u8>() = 1;
            libc::shmdt(p);
        }
        libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        if !attached {
            return Err(format!("shmat: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// A thread started (`pthread_create` in libc, a task made with CLONE_THREAD) and joined.
fn threads() -> Result<(), String> {
    std::thread::Builder::new()
        .name("bpfm-worker".into())
        .spawn(|| std::thread::sleep(Duration::from_millis(1)))
        .map_err(io("spawn"))?
        .join()
        .map_err(|_| "the thread panicked".to_string())
}

/// The `readline` step's terminal, opened before the tools start (`open_terminal`): its
/// master side, which keeps its slave's device (`GUEST_TERMINAL`, the guest's first
/// terminal) in place for a tool that watches a terminal by its path (`ttysnoop
/// /dev/pts/0`) to find when it starts.
static TERMINAL: std::sync::Mutex<Option<std::os::fd::OwnedFd>> = std::sync::Mutex::new(None);

/// Opens the workload's terminal (`TERMINAL`); the step opens one then if this fails.
pub fn open_terminal() {
    if let Ok((master, _slave)) = crate::tools::openpty() {
        *TERMINAL.lock().unwrap_or_else(|e| e.into_inner()) = Some(master);
    }
}

/// The workload's terminal, both sides: the one opened before the tools, else a new one.
fn terminal() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let Some(master) = TERMINAL.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return crate::tools::openpty();
    };
    let mut name = [0 as libc::c_char; 64];
    // SAFETY: a buffer of its stated length for the slave's name, then open(2) of it.
    let slave = unsafe {
        if libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) != 0 {
            return Err(format!("ptsname: {}", std::io::Error::last_os_error()));
        }
        let got = std::ffi::CStr::from_ptr(name.as_ptr()).to_string_lossy();
        if got != bpf_migrate_protocol::GUEST_TERMINAL {
            return Err(format!(
                "the workload's terminal is {got}, not {}: something opened a terminal before it",
                bpf_migrate_protocol::GUEST_TERMINAL
            ));
        }
        let fd = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(format!(
                "opening the terminal: {}",
                std::io::Error::last_os_error()
            ));
        }
        OwnedFd::from_raw_fd(fd)
    };
    Ok((master, slave))
}

/// An interactive bash on a terminal of its own reads two lines with readline() (which
/// tools trace with a uprobe on bash): `true`, then `exit`. Before it, a line is written to
/// that terminal in two parts with one writev(2) (`write_in_parts`).
fn readline() -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    fs::metadata(BASH).map_err(|e| e.to_string())?;
    let (master, slave) = terminal()?;
    write_in_parts(
        &slave,
        &[b"bpf-migrate workload: ", b"a line in two parts\n"],
    )?;
    let dup = |fd: &std::os::fd::OwnedFd| fd.try_clone().map_err(io("dup"));
    let mut cmd = std::process::Command::new(BASH);
    cmd.args(["--norc", "--noprofile", "-i"])
        .env_clear()
        .env("TERM", "dumb")
        .env("HOME", "/tmp")
        .env("PS1", "$ ")
        .stdin(std::process::Stdio::from(dup(&slave)?))
        .stdout(std::process::Stdio::from(dup(&slave)?))
        .stderr(std::process::Stdio::from(slave));
    // SAFETY: async-signal-safe calls only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(io("bash"))?;
    drop(cmd);
    let mut term = std::fs::File::from(master);
    // Typed ahead: the terminal keeps the lines until bash reads them.
    term.write_all(b"true\nexit\n").map_err(io("typing"))?;
    // Read what bash echoes and prints, so that the terminal never fills, until it exits.
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while matches!(term.read(&mut buf), Ok(n) if n > 0) {}
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(io("wait"))? {
            break s;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("bash did not exit within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = reader.join();
    if !status.success() {
        return Err(format!("bash exited with {status}"));
    }
    Ok(())
}

/// Writes `parts` to `fd` with one writev(2), as a program writes a prefix and its text.
/// Tools that trace a terminal's writes see this one on every kernel: since 6.0 a write(2)
/// (bash's) reaches `tty_write` as an `ITER_UBUF` iterator, which some (bcc 0.26's
/// ttysnoop) skip, reading only `ITER_IOVEC` ones, which a writev(2) of two parts still is.
fn write_in_parts(fd: &std::os::fd::OwnedFd, parts: &[&[u8]]) -> Result<(), String> {
    let iov: Vec<std::io::IoSlice> = parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
    let want: usize = parts.iter().map(|p| p.len()).sum();
    // A File's write_vectored is one writev(2).
    let mut term = std::fs::File::from(fd.try_clone().map_err(io("dup"))?);
    match term
        .write_vectored(&iov)
        .map_err(io("writev to the terminal"))?
    {
        n if n == want => Ok(()),
        n => Err(format!("writev to the terminal wrote {n} of {want} bytes")),
    }
}

/// Pins the calling thread to CPU 0.
fn pin_to_cpu0() -> Result<(), String> {
    // SAFETY: a zeroed CPU set with CPU 0 added, passed by pointer for the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "sched_setaffinity: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// A task that waits 30 ms to run once woken (run queue latency, which scheduler tools
/// report above a threshold, 10 ms by default): on CPU 0, a real-time thread wakes a normal
/// one and then spins for 30 ms, which the normal one cannot preempt. Far above the 10 ms,
/// so that no timing decides whether a tool prints it.
fn runq_delay() -> Result<(), String> {
    let (wake_tx, wake_rx) = std::sync::mpsc::channel::<std::time::Instant>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let waiter = std::thread::Builder::new()
        .name("bpfm-runq".into())
        .spawn(move || -> Result<(), String> {
            pin_to_cpu0()?;
            let _ = ready_tx.send(());
            let woken = wake_rx.recv().map_err(|e| e.to_string())?;
            match woken.elapsed() {
                d if d >= Duration::from_millis(25) => Ok(()),
                d => Err(format!(
                    "the woken thread ran after {d:?}, not after the 30 ms spin"
                )),
            }
        })
        .map_err(io("spawn"))?;
    if ready_rx.recv().is_err() {
        // The waiter ended before it was ready: its own error says why.
        return waiter
            .join()
            .map_err(|_| "the waiting thread panicked".to_string())
            .and_then(|r| r);
    }
    // Time for the waiter to block in recv() on CPU 0.
    std::thread::sleep(Duration::from_millis(20));
    let spinner = std::thread::Builder::new()
        .name("bpfm-spin".into())
        .spawn(move || -> Result<(), String> {
            pin_to_cpu0()?;
            let p = libc::sched_param { sched_priority: 1 };
            // SAFETY: this thread's own scheduling policy, with a param struct for the call.
            if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } != 0 {
                return Err(format!("SCHED_FIFO: {}", std::io::Error::last_os_error()));
            }
            let start = std::time::Instant::now();
            let _ = wake_tx.send(start);
            while start.elapsed() < Duration::from_millis(30) {
                std::hint::spin_loop();
            }
            Ok(())
        })
        .map_err(io("spawn"))?;
    let spun = spinner
        .join()
        .map_err(|_| "the spinning thread panicked".to_string())?;
    let waited = waiter
        .join()
        .map_err(|_| "the waiting thread panicked".to_string())?;
    spun.and(waited)
}

/// Short sleeps.
fn sleep() -> Result<(), String> {
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{NOT_ASKED, disk_btrfs, disk_xfs, figure, mount_scratch};

    /// A file system the host could not make (`Manifest::scratch_missing`): its step fails
    /// saying which package the host lacks; one not asked for does not run at all. No disk is
    /// given, so nothing is mounted on the host running the test. `mount_scratch` sets the
    /// process's scratch table once: the only test that may call it.
    #[test]
    fn a_scratch_file_system_the_host_could_not_make_names_its_package() {
        mount_scratch(&[], &["xfs".to_string()]);
        let e = disk_xfs().unwrap_err();
        assert!(
            e.contains("no xfs scratch disk") && e.contains("apt-get install xfsprogs"),
            "{e}"
        );
        assert_eq!(disk_btrfs().unwrap_err(), NOT_ASKED);
    }

    #[test]
    fn figures_of_meminfo_and_vmstat() {
        let meminfo = "MemTotal:         383412 kB\nMemFree:          301200 kB\nHugepagesize:       2048 kB\n";
        assert_eq!(figure(meminfo, "MemFree"), Some(301200));
        assert_eq!(figure(meminfo, "Hugepagesize"), Some(2048));
        assert_eq!(figure(meminfo, "Mem"), None);
        let vmstat = "allocstall_dma 0\nallocstall_dma32 7\nallocstall_normal 2\n";
        assert_eq!(figure(vmstat, "allocstall_dma32"), Some(7));
        assert_eq!(figure(vmstat, "allocstall_movable"), None);
    }
}
