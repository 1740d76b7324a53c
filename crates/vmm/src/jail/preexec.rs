//! The part of a jail that runs in the VMM's child process between `fork`
//! and `exec`: join the network namespace and cgroup, enter the private
//! mount namespace, keep the one descriptor the VMM inherits, drop every
//! capability and switch to the VM's ids.
//! Only system calls on data prepared before `fork` happen here.

use std::os::fd::OwnedFd;

/// The part of a jail applied in the VMM's child process, between `fork`
/// and `exec`.
#[derive(Debug)]
pub struct PreExec {
    pub(super) netns: OwnedFd,
    pub(super) cgroup_procs: Vec<OwnedFd>,
    pub(super) mounts: super::mounts::MountPlan,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) groups: Vec<nix::unistd::Gid>,
    /// A descriptor the VMM keeps across `exec`.
    pub(super) inherit: Option<std::os::fd::RawFd>,
}

impl PreExec {
    /// Applies the jail in the child: network namespace, cgroup, mount
    /// namespace and root, then the VM's uid with no capabilities. Only
    /// system calls on data prepared before `fork`.
    pub fn apply(&self) -> std::io::Result<()> {
        use nix::sched::CloneFlags;
        nix::sched::setns(&self.netns, CloneFlags::CLONE_NEWNET)?;
        for fd in &self.cgroup_procs {
            nix::unistd::write(fd, b"0")?;
        }
        if let Some(fd) = self.inherit {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )?;
        }
        nix::sched::unshare(CloneFlags::CLONE_NEWNS)?;
        self.mounts.enter()?;
        // Drop every capability from the bounding set while still allowed
        // to, then switch ids: a root -> non-root switch clears the
        // permitted and effective sets.
        for cap in 0..=63 {
            // SAFETY: prctl(PR_CAPBSET_DROP, n) only changes this process's
            // credentials; an unknown capability number returns EINVAL.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
            if r != 0 && cap <= 40 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let gid = nix::unistd::Gid::from_raw(self.gid);
        nix::unistd::setgroups(&self.groups)?;
        nix::unistd::setresgid(gid, gid, gid)?;
        let uid = nix::unistd::Uid::from_raw(self.uid);
        nix::unistd::setresuid(uid, uid, uid)?;
        // SAFETY: PR_SET_NO_NEW_PRIVS only restricts this process.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
