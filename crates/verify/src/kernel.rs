//! The guest kernel: given (`--kernel`), named by `BPF_MIGRATE_KERNEL`, found in the cache, or
//! provisioned once into the cache from Debian's `linux-image-amd64` (downloaded with
//! `apt-get download` and unpacked with `dpkg-deb -x`, never installed). The cached kernel is
//! the uncompressed `vmlinux` taken out of the bzImage: qemu boots it by PVH, seconds faster
//! under emulation than the compressed image, and its `.BTF` section gives `vmlinux.h`.
//!
//! The cache is shared by every run: each file goes in under a unique temporary name and is
//! renamed into place, and whoever provisions something holds an exclusive lock (`flock` of
//! `.lock` in the directory being filled) and checks again once it has it, so that of two runs
//! on a cold cache the second waits for the first and takes its result.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use fs_err as fs;

pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BPF_MIGRATE_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("bpf-migrate");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache").join("bpf-migrate")
}

/// The kernel to boot, and where it came from (for messages).
pub fn find(given: Option<&Path>) -> Result<(PathBuf, String)> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("--kernel {}: no such file", p.display());
        }
        return Ok((p.to_path_buf(), "--kernel".into()));
    }
    if let Some(p) = std::env::var_os("BPF_MIGRATE_KERNEL") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("BPF_MIGRATE_KERNEL={}: no such file", p.display());
        }
        return Ok((p, "BPF_MIGRATE_KERNEL".into()));
    }
    cached_kernel(&cache_dir().join("kernel"))
}

/// `dir/vmlinux`, provisioned into `dir` unless it is there.
fn cached_kernel(dir: &Path) -> Result<(PathBuf, String)> {
    let vmlinux = dir.join("vmlinux");
    let made = make_once(dir, &vmlinux, "the guest kernel", || provision_locked(dir))?;
    Ok((vmlinux, if made { "provisioned" } else { "cache" }.into()))
}

/// Downloads and unpacks Debian's kernel image into `dir` (again, if it is there); returns
/// `dir/vmlinux`.
pub fn provision(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let _lock = CacheLock::exclusive(dir, "the guest kernel")?;
    provision_locked(dir)
}

/// [`provision`], with the lock of `dir` held.
fn provision_locked(dir: &Path) -> Result<PathBuf> {
    let work = tempfile::Builder::new()
        .prefix("provision-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a temporary directory in {}", dir.display()))?;
    let deps = Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()
        .context("apt-cache not found: pass --kernel PATH (a vmlinux or bzImage with BTF), or run on Debian")?;
    let text = String::from_utf8_lossy(&deps.stdout);
    let pkg = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .ok_or_else(|| {
            anyhow!(
                "apt-cache knows no linux-image-amd64: run `apt-get update`, or pass --kernel PATH"
            )
        })?
        .to_string();
    let x = download_extract(&[&pkg], work.path())?;
    let vmlinuz = fs::read_dir(x.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| anyhow!("{pkg} holds no boot/vmlinuz-*"))?;
    let bzimage = fs::read(&vmlinuz)?;
    let vmlinux = extract_vmlinux(&bzimage)?;
    // The modules the guest loads for the tool level, from the same package (a later
    // download might find the index moved past this kernel).
    let release = pkg.strip_prefix("linux-image-").unwrap_or(&pkg);
    keep_guest_modules(
        &x.join("lib/modules").join(release).join("kernel"),
        &dir.join("modules"),
    )?;
    // The compressed image too: the benchmark boots it as a baseline. `vmlinux` last: once it
    // is there, the cache is complete.
    write_atomic(&dir.join("vmlinuz"), &bzimage)?;
    write_atomic(&dir.join("version"), format!("{pkg}\n").as_bytes())?;
    write_atomic(&dir.join("vmlinux"), &vmlinux)?;
    Ok(dir.join("vmlinux"))
}

/// Modules of Debian's kernel the guest loads, in load order: virtio and 9p to mount the
/// host's root file system (tools on the host's own user space), overlay to write on it, tc's
/// ingress qdisc and BPF classifier for tools that attach there, and virtio-blk with ext4 for
/// the workload's scratch disk (tools of a file system or of block I/O trace it).
pub const GUEST_MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "fs/netfs/netfs.ko",
    "fs/fscache/fscache.ko",
    "net/9p/9pnet.ko",
    "net/9p/9pnet_virtio.ko",
    "fs/9p/9p.ko",
    "fs/overlayfs/overlay.ko",
    "net/sched/sch_ingress.ko",
    "net/sched/cls_bpf.ko",
    "drivers/block/virtio_blk.ko",
    "lib/crc16.ko",
    "crypto/crc32c_generic.ko",
    "fs/mbcache.ko",
    "fs/jbd2/jbd2.ko",
    "fs/ext4/ext4.ko",
    // The workload's `md-flush` step: a linear md array on an empty scratch disk.
    "drivers/md/md-mod.ko",
    "drivers/md/linear.ko",
    // The xfs and btrfs scratch disks.
    "lib/libcrc32c.ko",
    "fs/xfs/xfs.ko",
    "crypto/xor.ko",
    "lib/raid6/raid6_pq.ko",
    "lib/zstd/zstd_compress.ko",
    "fs/btrfs/btrfs.ko",
    // The workload's NFS server and client (`nfs::MODULES`), in the order they load.
    "net/sunrpc/sunrpc.ko",
    "fs/nfs_common/grace.ko",
    "fs/lockd/lockd.ko",
    "fs/nfs_common/nfs_acl.ko",
    "net/sunrpc/auth_gss/auth_rpcgss.ko",
    "fs/nfsd/nfsd.ko",
    "net/dns_resolver/dns_resolver.ko",
    "fs/nfs/nfs.ko",
    "fs/nfs/nfsv4.ko",
];

/// The file that says a kernel's `modules` directory holds `GUEST_MODULES` (those its package
/// has): named after the list, so that a cache filled with another list is filled again.
fn modules_complete(mods: &Path) -> PathBuf {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in GUEST_MODULES.join("\n").bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    mods.join(format!(".complete-{h:016x}"))
}

/// What a guest running the host's own user space (BCC tools) needs of its kernel besides
/// the kernel and its modules (`guest_modules`): its release and its
/// headers (BCC compiles against them: Debian's kernel has no `CONFIG_IKHEADERS`).
pub struct GuestKernel {
    pub release: String,
    /// `linux-headers-RELEASE` (for `/lib/modules/RELEASE/build`) and its `-common`
    /// (`source`).
    pub headers: PathBuf,
    pub headers_common: PathBuf,
}

/// The provisioned kernel `kernel`'s release (`dir/vmlinux` with its `version`) and its
/// `GUEST_MODULES` that its package has, in load order, fetched into the cache on first use.
pub fn guest_modules(kernel: &Path) -> Result<(String, Vec<PathBuf>)> {
    let dir = kernel.parent().unwrap_or(Path::new("."));
    let pkg = fs::read_to_string(dir.join("version"))
        .map_err(|_| {
            anyhow!(
                "the kernel {} was not provisioned by bpf-migrate, so its modules and headers are not at hand",
                kernel.display()
            )
        })?
        .trim()
        .to_string();
    let release = pkg
        .strip_prefix("linux-image-")
        .ok_or_else(|| {
            anyhow!(
                "{}: not a kernel package: {pkg}",
                dir.join("version").display()
            )
        })?
        .to_string();
    let mods = dir.join("modules");
    make_once(
        dir,
        &modules_complete(&mods),
        "the guest kernel's modules",
        || {
            let work = tempfile::Builder::new()
                .prefix("modules-")
                .tempdir_in(dir)
                .with_context(|| {
                    format!("cannot create a temporary directory in {}", dir.display())
                })?;
            let x = download_extract(&[&pkg], work.path())?;
            keep_guest_modules(&x.join("lib/modules").join(&release).join("kernel"), &mods)
        },
    )?;
    let modules = GUEST_MODULES
        .iter()
        .map(|m| mods.join(file_name(m)))
        .filter(|p| p.is_file())
        .collect();
    Ok((release, modules))
}

/// The modules and headers of the provisioned kernel `kernel`, fetched into the cache on first
/// use.
pub fn guest_kernel(kernel: &Path) -> Result<GuestKernel> {
    let dir = kernel.parent().unwrap_or(Path::new("."));
    let (release, _) = guest_modules(kernel)?;
    let hdr = dir.join("headers");
    let headers = hdr.join("usr/src").join(format!("linux-headers-{release}"));
    let common_name = release.replace("-amd64", "-common");
    let headers_common = hdr
        .join("usr/src")
        .join(format!("linux-headers-{common_name}"));
    make_once(
        dir,
        &hdr.join(".complete"),
        "the guest kernel's headers",
        || {
            let work = tempfile::Builder::new()
                .prefix("headers-")
                .tempdir_in(dir)
                .with_context(|| {
                    format!("cannot create a temporary directory in {}", dir.display())
                })?;
            let x = download_extract(
                &[
                    &format!("linux-headers-{release}"),
                    &format!("linux-headers-{common_name}"),
                ],
                work.path(),
            )?;
            let _ = fs::remove_dir_all(&hdr);
            fs::rename(&x, &hdr)?;
            write_atomic(&hdr.join(".complete"), b"")
        },
    )?;
    Ok(GuestKernel {
        release,
        headers,
        headers_common,
    })
}

/// Copies `GUEST_MODULES` from an unpacked kernel package's module tree `from` into `to`,
/// and marks `to` complete. A module the package lacks (built in, or compressed) is left out:
/// the guest then says which mount failed.
fn keep_guest_modules(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for m in GUEST_MODULES {
        let src = from.join(m);
        if src.is_file() {
            write_atomic(&to.join(file_name(m)), &fs::read(&src)?)?;
        }
    }
    write_atomic(&modules_complete(to), b"")
}

fn file_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Downloads Debian packages with `apt-get download` and unpacks them all into `work/x`.
fn download_extract(pkgs: &[&str], work: &Path) -> Result<PathBuf> {
    let dl = Command::new("apt-get")
        .args(["download", "-q"])
        .args(pkgs)
        .current_dir(work)
        .stdout(Stdio::null())
        .output()
        .context("apt-get not found")?;
    if !dl.status.success() {
        bail!(
            "apt-get download {} failed: {}",
            pkgs.join(" "),
            String::from_utf8_lossy(&dl.stderr).trim()
        );
    }
    let x = work.join("x");
    for e in fs::read_dir(work)? {
        let deb = e?.path();
        if deb.extension().is_none_or(|x| x != "deb") {
            continue;
        }
        let st = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&x)
            .status()
            .context("dpkg-deb not found")?;
        if !st.success() {
            bail!("dpkg-deb -x {} failed", deb.display());
        }
    }
    Ok(x)
}

/// Writes `path` under a unique temporary name in its directory, then renames it into place:
/// nobody sees it half written, and two writers do not take each other's file.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(data)
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
        })
        .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot rename a temporary file to {}", path.display()))?;
    Ok(())
}

/// An exclusive `flock` of `.lock` in a cache directory, released when dropped (or when the
/// process dies).
struct CacheLock(#[allow(dead_code)] fs::File);

impl CacheLock {
    /// Waits for the lock, saying so once on stderr if another process holds it (`what` is
    /// what it is making). Ctrl-C stops the wait.
    fn exclusive(dir: &Path, what: &str) -> Result<Self> {
        let path = dir.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let mut said = false;
        loop {
            if unsafe { libc::flock(file.file().as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(CacheLock(file));
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => {}
                Some(libc::EINTR) => continue,
                _ => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
            }
            if super::interrupted() {
                bail!("interrupted while waiting for {}", path.display());
            }
            if !said {
                eprintln!(
                    "bpf-migrate: waiting for another run to finish {what} ({})",
                    path.display()
                );
                said = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Makes `target` in `dir` with `make` unless it is there, under the lock of `dir`; true if
/// this call made it, false if it was there (maybe made meanwhile by another run).
pub(crate) fn make_once<T>(
    dir: &Path,
    target: &Path,
    what: &str,
    make: impl FnOnce() -> Result<T>,
) -> Result<bool> {
    if target.is_file() {
        return Ok(false);
    }
    fs::create_dir_all(dir)?;
    let _lock = CacheLock::exclusive(dir, what)?;
    if target.is_file() {
        return Ok(false);
    }
    make()?;
    Ok(true)
}

/// The ELF kernel inside a bzImage: the first XZ stream after the setup code, decompressed
/// with `xz` (as the kernel's own scripts/extract-vmlinux does).
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>> {
    const XZ: &[u8] = b"\xfd7zXZ\x00";
    let mut from = 0;
    while let Some(i) = find_bytes(&bzimage[from..], XZ) {
        let start = from + i;
        let mut child = Command::new("xz")
            .args(["-dc", "--single-stream"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("xz not found (apt-get install xz-utils)")?;
        let mut stdin = child.stdin.take().unwrap();
        let data = bzimage[start..].to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().context("running xz")?;
        let _ = writer.join();
        if out.stdout.starts_with(b"\x7fELF") {
            return Ok(out.stdout);
        }
        from = start + 1;
    }
    bail!(
        "no XZ-compressed ELF kernel found in the image (other compressions: pass --kernel with an uncompressed vmlinux)"
    )
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `vmlinux.h` generated from the kernel's BTF, cached beside it; returns its directory.
pub fn vmlinux_h(kernel: &Path) -> Result<PathBuf> {
    vmlinux_h_in(kernel, &cache_dir())
}

/// [`vmlinux_h`] with the cache in `cache`.
fn vmlinux_h_in(kernel: &Path, cache: &Path) -> Result<PathBuf> {
    let meta = fs::metadata(kernel)?;
    let key = format!(
        "{}-{}",
        meta.len(),
        meta.modified()
            .map(|t| t
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0))
            .unwrap_or(0)
    );
    let dir = cache.join("vmlinux-h").join(key);
    let header = dir.join("vmlinux.h");
    make_once(&dir, &header, "vmlinux.h", || {
        generate_vmlinux_h(kernel, &dir, &header)
    })?;
    Ok(dir)
}

fn generate_vmlinux_h(kernel: &Path, dir: &Path, header: &Path) -> Result<()> {
    // A bzImage carries its BTF inside the compressed kernel: extracted to a temporary file,
    // removed when dropped.
    let data = fs::read(kernel)?;
    let mut extracted = None;
    if !data.starts_with(b"\x7fELF") {
        let mut tmp = tempfile::Builder::new()
            .prefix(".vmlinux-")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
        tmp.write_all(&extract_vmlinux(&data)?)
            .with_context(|| format!("cannot write {}", tmp.path().display()))?;
        extracted = Some(tmp);
    }
    drop(data);
    let elf = extracted.as_ref().map_or(kernel, |t| t.path());
    let out = Command::new("bpftool")
        .args(["btf", "dump", "file"])
        .arg(elf)
        .args(["format", "c"])
        .output()
        .context("bpftool not found (apt-get install bpftool): it generates vmlinux.h from the guest kernel")?;
    if !out.status.success() {
        bail!(
            "bpftool btf dump {} failed: {}",
            kernel.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    write_atomic(header, &out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Two runs on a cold cache: the second waits for the first and takes its result, and no
    /// temporary file is left behind.
    #[test]
    fn what_is_made_once_is_made_once() {
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join("thing");
        let target = dir.join("thing");
        let made = AtomicUsize::new(0);
        let results: Vec<bool> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        make_once(&dir, &target, "a thing", || {
                            made.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200));
                            write_atomic(&target, b"made")
                        })
                        .unwrap()
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(made.load(Ordering::SeqCst), 1);
        assert_eq!(results.iter().filter(|m| **m).count(), 1, "{results:?}");
        assert_eq!(fs::read(&target).unwrap(), b"made");
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".lock", "thing"]);
    }

    /// A failure leaves nothing in place, and the next run tries again.
    #[test]
    fn a_failed_make_is_tried_again() {
        let cache = tempfile::tempdir().unwrap();
        let target = cache.path().join("t");
        assert!(make_once(cache.path(), &target, "t", || -> Result<()> { bail!("no") }).is_err());
        assert!(!target.exists());
        assert!(make_once(cache.path(), &target, "t", || write_atomic(&target, b"x")).unwrap());
        assert!(
            !make_once(cache.path(), &target, "t", || -> Result<()> {
                bail!("again?")
            })
            .unwrap()
        );
    }

    /// The race seen as `verify could not run: No such file or directory`: two verify runs
    /// generating vmlinux.h at once into an empty cache took each other's temporary files.
    /// Needs a kernel with BTF: $BPF_MIGRATE_KERNEL, the cached one, or one provisioned now
    /// (`apt-get download`, as the verify tests do).
    #[test]
    fn two_runs_on_a_cold_cache_make_one_vmlinux_h() {
        let kernel = match std::env::var_os("BPF_MIGRATE_KERNEL") {
            Some(k) => PathBuf::from(k),
            None => find(None).expect("a guest kernel").0,
        };
        // The bzImage too, when there is one: it goes through a temporary extracted ELF.
        let mut kernels = vec![kernel.clone()];
        let vmlinuz = kernel.with_file_name("vmlinuz");
        if vmlinuz.is_file() {
            kernels.push(vmlinuz);
        }
        for kernel in kernels {
            let cache = tempfile::tempdir().unwrap();
            let dirs: Vec<PathBuf> = std::thread::scope(|s| {
                let runs: Vec<_> = (0..2)
                    .map(|_| s.spawn(|| vmlinux_h_in(&kernel, cache.path())))
                    .collect();
                runs.into_iter()
                    .map(|r| r.join().unwrap().expect("vmlinux.h"))
                    .collect()
            });
            assert_eq!(dirs[0], dirs[1]);
            assert!(dirs[0].starts_with(cache.path()));
            let header = fs::read_to_string(dirs[0].join("vmlinux.h")).unwrap();
            assert!(
                header.contains("struct task_struct {"),
                "{}",
                kernel.display()
            );
            let mut left: Vec<String> = fs::read_dir(&dirs[0])
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            assert_eq!(left, [".lock", "vmlinux.h"], "{}", kernel.display());
        }
    }
}
