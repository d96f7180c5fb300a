//! Dropping root after set-up.
//!
//! linecap needs root (or many capabilities) to attach the XDP program, create
//! AF_XDP sockets, lock UMEM and map hugepages. Once the sockets are bound and
//! the rings mapped, it runs as the profile's user (`host.user`) and keeps
//! only [`CAPTURE_KEEP`]:
//!
//! - `CAP_NET_ADMIN`: restore the interface's NAPI mode (`/sys/class/net/IF/threaded`)
//!   at exit;
//! - `CAP_BPF`: read the XDP program's per-queue counters at exit (every `bpf()`
//!   call needs it when unprivileged BPF is disabled, Debian's default);
//! - `CAP_IPC_LOCK`: locked memory beyond `RLIMIT_MEMLOCK` (rings, UMEM refills).
//!
//! Not kept: `CAP_SYS_ADMIN`, `CAP_NET_RAW` (the sockets exist already),
//! `CAP_SETUID`/`CAP_SETGID`, `CAP_DAC_OVERRIDE` (output directories must be
//! writable by the user). The XDP link is detached by the kernel when its file
//! descriptor closes, which needs no capability.
//!
//! Capabilities are per thread in Linux: call [`drop_privileges`] from the
//! main thread before the worker and writer threads start, or those threads
//! keep root's sets (glibc changes every thread's uid on `setuid`, and with it
//! their capabilities drop to none, but only the calling thread gets `keep` back).

use anyhow::{Context, bail};
pub use caps::Capability;
use caps::{CapSet, CapsHashSet};
use nix::unistd::{Gid, Uid, User, setgid, setgroups, setuid};

/// The capabilities a capture keeps after set-up (see the module docs).
pub const CAPTURE_KEEP: &[Capability] = &[
    Capability::CAP_NET_ADMIN,
    Capability::CAP_BPF,
    Capability::CAP_IPC_LOCK,
];

/// Who we would become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// User name.
    pub name: String,
    /// Its uid.
    pub uid: Uid,
    /// Its primary group.
    pub gid: Gid,
}

/// Look `user` up (NSS: `/etc/passwd`, LDAP…); a clear error when it does not exist.
pub fn resolve_user(user: &str) -> anyhow::Result<Target> {
    if user.is_empty() {
        bail!("host.user is empty");
    }
    let u = User::from_name(user)
        .with_context(|| format!("looking up user {user:?}"))?
        .with_context(|| {
            format!(
                "user {user:?} does not exist: create it (useradd --system --no-create-home \
                 --shell /usr/sbin/nologin {user}) or change host.user in the profile"
            )
        })?;
    Ok(Target {
        name: u.name,
        uid: u.uid,
        gid: u.gid,
    })
}

/// Become `user` (its uid, primary gid, no supplementary groups), keeping only
/// the capabilities in `keep` in the permitted and effective sets (none
/// inheritable or ambient). Fails, changing nothing, when the user does not
/// exist; fails when not root.
pub fn drop_privileges(user: &str, keep: &[Capability]) -> anyhow::Result<()> {
    let t = resolve_user(user)?;
    if !Uid::effective().is_root() {
        bail!(
            "cannot drop privileges to {}: not running as root (uid {})",
            t.name,
            Uid::effective()
        );
    }
    let keep: CapsHashSet = keep.iter().copied().collect();
    // Keep the permitted set across setuid; it is cut to `keep` right after.
    nix::sys::prctl::set_keepcaps(true).context("prctl(PR_SET_KEEPCAPS)")?;
    setgroups(&[t.gid]).context("setgroups")?;
    setgid(t.gid).with_context(|| format!("setgid({})", t.gid))?;
    setuid(t.uid).with_context(|| format!("setuid({})", t.uid))?;
    nix::sys::prctl::set_keepcaps(false).context("prctl(PR_SET_KEEPCAPS, 0)")?;
    caps::clear(None, CapSet::Ambient).context("clearing ambient capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clearing inheritable capabilities")?;
    caps::set(None, CapSet::Permitted, &keep).context("setting permitted capabilities")?;
    caps::set(None, CapSet::Effective, &keep).context("setting effective capabilities")?;
    // Prove it: no way back to root.
    if !t.uid.is_root() && setuid(Uid::from_raw(0)).is_ok() {
        bail!("privileges were not dropped: setuid(0) still works");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves() {
        let t = resolve_user("root").unwrap();
        assert!(t.uid.is_root());
        assert_eq!(t.gid, Gid::from_raw(0));
    }

    #[test]
    fn unknown_users_are_refused_before_anything_changes() {
        let uid = Uid::effective();
        let e = drop_privileges("no-such-user-linecap-test", CAPTURE_KEEP).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("does not exist"), "{msg}");
        assert!(msg.contains("no-such-user-linecap-test"), "{msg}");
        assert!(resolve_user("").is_err());
        assert_eq!(Uid::effective(), uid);
    }

    #[test]
    fn keep_set_names_what_the_docs_say() {
        let names: Vec<String> = CAPTURE_KEEP.iter().map(|c| c.to_string()).collect();
        assert_eq!(names, ["CAP_NET_ADMIN", "CAP_BPF", "CAP_IPC_LOCK"]);
    }
}
