//! What a tool's own loader did with its programs, read from the running tool: which of its
//! programs it loaded, and where it attached each. A loader often decides at run time what
//! its sections cannot say: fentry or kprobe by which the kernel has
//! (`bpf_program__set_autoload`), the function a `fentry/dummy` program traces
//! (`bpf_program__set_attach_target`), the file and offset of a uprobe, a kprobe section
//! attached as a uprobe. Where the agent's own load or attach of a program by its section
//! fails, it does as the program's tool did (`main.rs`: `load_objects`, `attach_program`).
//!
//! Read from the tool's descriptors (`/proc/PID/fd`): its programs (`prog_id` in each BPF
//! descriptor's fdinfo), each one's kernel name (15 characters at most) and, for a tracing
//! program, the function it was loaded for (its BTF id, named in the kernel's or a
//! module's BTF); its perf events (`BPF_TASK_FD_QUERY`: the kprobe's function or the
//! uprobe's file and offset, and the program on it).

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, c_char};

use libbpf_rs::libbpf_sys as sys;

/// Where a tool attached one of its programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Kprobe {
        func: String,
        retprobe: bool,
    },
    Uprobe {
        path: String,
        offset: u64,
        retprobe: bool,
    },
    /// fentry, fexit, fmod_ret: the function the program was loaded for.
    Tracing {
        func: String,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Kprobe { func, retprobe } => {
                write!(
                    f,
                    "{} {func}",
                    if *retprobe { "kretprobe" } else { "kprobe" }
                )
            }
            Target::Uprobe {
                path,
                offset,
                retprobe,
            } => write!(
                f,
                "{} {path}+{offset:#x}",
                if *retprobe { "uretprobe" } else { "uprobe" }
            ),
            Target::Tracing { func } => write!(f, "tracing {func}"),
        }
    }
}

/// A tool's programs as its loader left them.
#[derive(Debug, Default)]
pub struct Learned {
    /// The kernel names of the programs it loaded.
    pub loaded: HashSet<String>,
    /// Where each (by kernel name) is attached.
    pub targets: HashMap<String, Vec<Target>>,
}

/// The length of a program's name in the kernel, less its NUL.
const KERNEL_NAME: usize = sys::BPF_OBJ_NAME_LEN as usize - 1;

/// A program's name as the kernel keeps it.
/// A number of a descriptor's fdinfo (`/proc/PID/fdinfo/FD`): `prog_id`, `map_type`...
pub fn fdinfo_field(info: &str, name: &str) -> Option<u64> {
    info.lines().find_map(|l| {
        let v = l.strip_prefix(name)?.strip_prefix(':')?;
        v.trim().parse().ok()
    })
}

pub fn kernel_name(name: &str) -> String {
    let mut end = name.len().min(KERNEL_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

impl Learned {
    /// Whether `learned` can stand for the object's program `name`: no other program of the
    /// object (`names`) has the same kernel name.
    pub fn unambiguous<'a>(name: &str, names: impl IntoIterator<Item = &'a str>) -> bool {
        let k = kernel_name(name);
        names.into_iter().filter(|n| kernel_name(n) == k).count() == 1
    }
}

/// What the process `pid` has loaded and attached; `btfs` keeps the kernel's BTF between
/// calls (each load of it is a thousand reads of sysfs, which tools tracing reads see).
pub fn learn(pid: u32, btfs: &mut Btfs) -> Learned {
    let mut learned = Learned::default();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return learned;
    };
    let mut prog_ids = HashSet::new();
    let mut perf_fds = Vec::new();
    for e in fds.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let link = std::fs::read_link(e.path()).unwrap_or_default();
        let link = link.to_string_lossy();
        if link.contains("perf_event") {
            perf_fds.push(fd);
        } else if link.contains("bpf")
            && let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
            && let Some(id) = fdinfo_field(&info, "prog_id")
        {
            prog_ids.insert(id as u32);
        }
    }
    let mut names = HashMap::new();
    for id in prog_ids {
        if let Some((name, tracing)) = prog_info(id, btfs) {
            learned.loaded.insert(name.clone());
            if let Some(func) = tracing {
                learned
                    .targets
                    .entry(name.clone())
                    .or_default()
                    .push(Target::Tracing { func });
            }
            names.insert(id, name);
        }
    }
    for fd in perf_fds {
        if let Some((prog_id, target)) = perf_target(pid, fd) {
            let name = match names.get(&prog_id) {
                Some(n) => n.clone(),
                None => match prog_info(prog_id, btfs) {
                    Some((n, _)) => {
                        learned.loaded.insert(n.clone());
                        n
                    }
                    None => continue,
                },
            };
            let t = learned.targets.entry(name).or_default();
            if !t.contains(&target) {
                t.push(target);
            }
        }
    }
    learned
}

/// The program `id`'s kernel name and, for a tracing program, the function it was loaded for.
fn prog_info(id: u32, btfs: &mut Btfs) -> Option<(String, Option<String>)> {
    // SAFETY: plain calls with an id, an info struct of the size given, and the fd closed
    // after.
    unsafe {
        let fd = sys::bpf_prog_get_fd_by_id(id);
        if fd < 0 {
            return None;
        }
        let mut info: sys::bpf_prog_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<sys::bpf_prog_info>() as u32;
        let rc = sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len);
        libc::close(fd);
        if rc != 0 {
            return None;
        }
        let name = CStr::from_ptr(info.name.as_ptr())
            .to_string_lossy()
            .into_owned();
        let func = (info.type_ == sys::BPF_PROG_TYPE_TRACING && info.attach_btf_id != 0)
            .then(|| btfs.name(info.attach_btf_obj_id, info.attach_btf_id))
            .flatten();
        Some((name, func))
    }
}

/// The program on the perf event `fd` of `pid`, and where that event is.
fn perf_target(pid: u32, fd: u32) -> Option<(u32, Target)> {
    let mut buf = vec![0 as c_char; 4096];
    let mut len = buf.len() as u32;
    let (mut prog_id, mut fd_type, mut offset, mut addr) = (0u32, 0u32, 0u64, 0u64);
    // SAFETY: out-pointers to locals and a buffer of the length given.
    let rc = unsafe {
        sys::bpf_task_fd_query(
            pid as i32,
            fd as i32,
            0,
            buf.as_mut_ptr(),
            &mut len,
            &mut prog_id,
            &mut fd_type,
            &mut offset,
            &mut addr,
        )
    };
    if rc != 0 || prog_id == 0 {
        return None;
    }
    // SAFETY: the kernel wrote a NUL-terminated string into the buffer.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let target = match fd_type {
        sys::BPF_FD_TYPE_KPROBE | sys::BPF_FD_TYPE_KRETPROBE if !name.is_empty() && offset == 0 => {
            Target::Kprobe {
                func: name,
                retprobe: fd_type == sys::BPF_FD_TYPE_KRETPROBE,
            }
        }
        sys::BPF_FD_TYPE_UPROBE | sys::BPF_FD_TYPE_URETPROBE if !name.is_empty() => {
            Target::Uprobe {
                path: name,
                offset,
                retprobe: fd_type == sys::BPF_FD_TYPE_URETPROBE,
            }
        }
        _ => return None,
    };
    Some((prog_id, target))
}

/// The kernel's BTF and its modules', loaded once each.
#[derive(Default)]
pub struct Btfs {
    vmlinux: Option<*mut sys::btf>,
    /// The kernel BTF object id of vmlinux's, once an object was found to be it.
    vmlinux_id: Option<u32>,
    by_id: HashMap<u32, *mut sys::btf>,
}

impl Btfs {
    /// The name of type `type_id` of the kernel BTF object `obj_id` (vmlinux's, or a module's
    /// on top of it).
    fn name(&mut self, obj_id: u32, type_id: u32) -> Option<String> {
        // SAFETY: BTF objects that libbpf made and this keeps until dropped; a type and a name
        // looked up in the object they belong to.
        unsafe {
            let vmlinux = *self
                .vmlinux
                .get_or_insert_with(|| sys::btf__load_vmlinux_btf());
            if vmlinux.is_null() {
                return None;
            }
            let btf = match self.by_id.get(&obj_id) {
                Some(b) => *b,
                // vmlinux's own object is the one already parsed; a module's splits off it.
                None if self.vmlinux_id == Some(obj_id) => vmlinux,
                None if btf_object_name(obj_id).as_deref() == Some("vmlinux") => {
                    self.vmlinux_id = Some(obj_id);
                    vmlinux
                }
                None => {
                    let btf = sys::btf__load_from_kernel_by_id_split(obj_id, vmlinux);
                    if btf.is_null() {
                        return None;
                    }
                    self.by_id.insert(obj_id, btf);
                    btf
                }
            };
            let t = sys::btf__type_by_id(btf, type_id);
            if t.is_null() {
                return None;
            }
            let n = sys::btf__name_by_offset(btf, (*t).name_off);
            (!n.is_null()).then(|| CStr::from_ptr(n).to_string_lossy().into_owned())
        }
    }
}

/// The name of the kernel's BTF object `id`: `vmlinux`, or a module's.
fn btf_object_name(id: u32) -> Option<String> {
    let mut name = [0 as c_char; 64];
    // SAFETY: an info struct of the size given whose name points to a buffer of the length
    // given; the fd closed after.
    unsafe {
        let fd = sys::bpf_btf_get_fd_by_id(id);
        if fd < 0 {
            return None;
        }
        let mut info: sys::bpf_btf_info = std::mem::zeroed();
        info.name = name.as_mut_ptr() as u64;
        info.name_len = name.len() as u32;
        let mut len = std::mem::size_of::<sys::bpf_btf_info>() as u32;
        let rc = sys::bpf_btf_get_info_by_fd(fd, &mut info, &mut len);
        libc::close(fd);
        (rc == 0).then(|| CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned())
    }
}

impl Drop for Btfs {
    fn drop(&mut self) {
        // SAFETY: each pointer is an object libbpf made, freed once.
        unsafe {
            for b in self.by_id.values() {
                sys::btf__free(*b);
            }
            if let Some(v) = self.vmlinux
                && !v.is_null()
            {
                sys::btf__free(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_as_the_kernel_cuts_them() {
        assert_eq!(kernel_name("file_read_fentry"), "file_read_fentr");
        assert_eq!(kernel_name("on_exec"), "on_exec");
        assert!(Learned::unambiguous(
            "file_read_fentry",
            ["file_read_fentry", "file_read_fexit"]
        ));
        assert!(!Learned::unambiguous(
            "tcp_v4_connect_entry",
            ["tcp_v4_connect_entry", "tcp_v4_connect_return"]
        ));
    }
}
