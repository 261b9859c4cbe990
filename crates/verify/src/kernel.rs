//! The guest kernel: given (`--kernel`), named by `BPF_MIGRATE_KERNEL`, found in the cache, or
//! provisioned once into the cache from Debian's `linux-image-amd64` (downloaded with
//! `apt-get download` and unpacked with `dpkg-deb -x`, never installed). The cached kernel is
//! the uncompressed `vmlinux` taken out of the bzImage: qemu boots it by PVH, seconds faster
//! under emulation than the compressed image, and its `.BTF` section gives `vmlinux.h`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};

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
    let cached = cache_dir().join("kernel").join("vmlinux");
    if cached.is_file() {
        return Ok((cached, "cache".into()));
    }
    let p = provision(&cache_dir().join("kernel"))?;
    Ok((p, "provisioned".into()))
}

/// Downloads and unpacks Debian's kernel image into `dir`; returns `dir/vmlinux`.
pub fn provision(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix("provision-")
        .tempdir_in(dir)?;
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
    let dl = Command::new("apt-get")
        .args(["download", "-q", &pkg])
        .current_dir(work.path())
        .stdout(Stdio::null())
        .output()
        .context("apt-get not found")?;
    if !dl.status.success() {
        bail!(
            "apt-get download {pkg} failed: {}",
            String::from_utf8_lossy(&dl.stderr).trim()
        );
    }
    let deb = fs::read_dir(work.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| anyhow!("apt-get download {pkg} left no .deb"))?;
    let x = work.path().join("x");
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&x)
        .status()
        .context("dpkg-deb not found")?;
    if !st.success() {
        bail!("dpkg-deb -x {} failed", deb.display());
    }
    let vmlinuz = fs::read_dir(x.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| anyhow!("{pkg} holds no boot/vmlinuz-*"))?;
    let bzimage = fs::read(&vmlinuz)?;
    let vmlinux = extract_vmlinux(&bzimage)?;
    // The compressed image too: the benchmark boots it as a baseline.
    fs::write(dir.join("vmlinuz"), &bzimage)?;
    let tmp = dir.join("vmlinux.tmp");
    fs::write(&tmp, vmlinux)?;
    fs::rename(&tmp, dir.join("vmlinux"))?;
    fs::write(dir.join("version"), format!("{pkg}\n"))?;
    Ok(dir.join("vmlinux"))
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
        let out = child.wait_with_output()?;
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

/// `vmlinux.h` generated from the kernel's BTF, cached beside it.
pub fn vmlinux_h(kernel: &Path) -> Result<PathBuf> {
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
    let dir = cache_dir().join("vmlinux-h").join(key);
    let header = dir.join("vmlinux.h");
    if header.is_file() {
        return Ok(dir);
    }
    fs::create_dir_all(&dir)?;
    // A bzImage carries its BTF inside the compressed kernel.
    let mut elf = kernel.to_path_buf();
    let data = fs::read(kernel)?;
    if !data.starts_with(b"\x7fELF") {
        elf = dir.join("vmlinux.tmp");
        fs::write(&elf, extract_vmlinux(&data)?)?;
    }
    let out = Command::new("bpftool")
        .args(["btf", "dump", "file"])
        .arg(&elf)
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
    if elf != kernel {
        let _ = fs::remove_file(&elf);
    }
    let tmp = dir.join("vmlinux.h.tmp");
    fs::write(&tmp, &out.stdout)?;
    fs::rename(&tmp, &header)?;
    Ok(dir)
}
