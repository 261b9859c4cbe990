//! The workload's NFS server and client (`Manifest::nfs`), set up before the tools (a tool
//! attaches to the NFS client's functions when it starts: its modules are loaded at boot):
//! the host's nfs-kernel-server in the host's root exports a directory in memory to the guest
//! itself over loopback, NFS version 4 only (no rpcbind, no lock daemon), and the client
//! mounts it at `MOUNT` in that root. The workload's `nfs` step does file I/O there.

use std::sync::OnceLock;

use bpf_migrate_protocol::{NFS_EXPORTFS, NFS_MOUNT_PROGRAM, NFS_MOUNTD, NFS_NFSD};

/// The exported directory (a tmpfs) and the client's mount of it, in the host's root.
const EXPORT: &str = "/tmp/bpf-migrate-nfs-export";
const MOUNT: &str = "/tmp/bpf-migrate-nfs";

/// The mount's path as the agent sees it, or why there is none.
static MOUNTED: OnceLock<Result<String, String>> = OnceLock::new();

/// Sets up the server and the mount in `root` (the host's root), unless the boot cannot have
/// them (`nfs`'s error). What went wrong is the `nfs` step's error.
pub fn start(nfs: Result<(), String>, root: &str) {
    let _ = MOUNTED.set(
        nfs.and_then(|()| setup(root))
            .map(|()| format!("{root}{MOUNT}")),
    );
}

/// The mounted directory (`None`: the boot has no NFS).
pub fn mounted() -> Option<Result<String, String>> {
    MOUNTED.get().cloned()
}

fn setup(root: &str) -> Result<(), String> {
    use crate::tools::{mount, run_in_root};
    let nfsd = format!("{root}/proc/fs/nfsd");
    mount("nfsd", &nfsd, "nfsd", 0, "").map_err(|e| {
        format!("{e} (the guest kernel needs nfsd and the NFS client: the modules of a kernel bpf-migrate provisioned)")
    })?;
    mount("tmpfs", &format!("{root}{EXPORT}"), "tmpfs", 0, "size=16m")?;
    std::fs::create_dir_all(format!("{root}{MOUNT}")).map_err(|e| format!("{root}{MOUNT}: {e}"))?;
    // The server's grace period after its start, during which it refuses new opens, at its
    // shortest; ended at once below.
    for f in ["nfsv4leasetime", "nfsv4gracetime"] {
        std::fs::write(format!("{nfsd}/{f}"), "10").map_err(|e| format!("{nfsd}/{f}: {e}"))?;
    }
    run_in_root(
        root,
        &[
            NFS_EXPORTFS,
            "-o",
            "rw,fsid=0,no_root_squash,insecure,no_subtree_check",
            &format!("127.0.0.1:{EXPORT}"),
        ],
    )?;
    run_in_root(root, &[NFS_MOUNTD, "-N", "2", "-N", "3", "--no-udp"])?;
    run_in_root(root, &[NFS_NFSD, "-N", "3", "-V", "4", "--no-udp", "2"])?;
    // Nothing to reclaim: a server started now has no clients from before.
    std::fs::write(format!("{nfsd}/v4_end_grace"), "Y")
        .map_err(|e| format!("{nfsd}/v4_end_grace: {e}"))?;
    run_in_root(
        root,
        &[NFS_MOUNT_PROGRAM, "127.0.0.1:/", MOUNT, "-o", "vers=4.2"],
    )
}
