//! The Environment Abstraction Layer: initialised once per process (DPDK
//! cannot initialise it twice, nor again after `rte_eal_cleanup`), cleaned up
//! once at the end, after every port is closed.

use std::ffi::{CStr, CString, c_char, c_int};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::sys;

/// Why DPDK refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EalError(pub String);

impl std::fmt::Display for EalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EalError {}

/// DPDK's message for an errno value (`rte_strerror` knows its own codes).
pub fn strerror(errnum: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string, valid until the next call on this thread; it is
    // copied at once.
    unsafe {
        let p = sys::rte_strerror(errnum);
        if p.is_null() {
            return format!("error {errnum}");
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// The current thread's `rte_errno`.
pub fn errno() -> i32 {
    // SAFETY: reads the per-lcore (thread-local) rte_errno; no preconditions.
    unsafe { sys::lc_errno() }
}

enum State {
    Never,
    Up,
    Failed(String),
    Cleaned,
}

static STATE: Mutex<State> = Mutex::new(State::Never);
/// Ports open (a cleanup waits until this is zero).
pub(super) static PORTS_OPEN: AtomicUsize = AtomicUsize::new(0);

/// Proof that the EAL is up in this process.
#[derive(Debug, Clone, Copy)]
pub struct Eal {
    tsc_hz: u64,
}

impl Eal {
    /// Initialise the EAL with `args` (everything after the program name,
    /// e.g. `-l 0 --in-memory --no-pci --vdev net_null0`). Once per process:
    /// a second call returns the same handle if the first succeeded, and an
    /// error otherwise (DPDK cannot retry).
    pub fn init(args: &[String]) -> Result<Eal, EalError> {
        let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
        match &*st {
            State::Up => return Ok(Eal::current()),
            State::Failed(m) => {
                return Err(EalError(format!(
                    "the EAL failed earlier in this process ({m}); it cannot be initialised twice"
                )));
            }
            State::Cleaned => {
                return Err(EalError(
                    "the EAL was already cleaned up in this process; it cannot be initialised again"
                        .into(),
                ));
            }
            State::Never => {}
        }
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("linecap").expect("no NUL"));
        for a in args {
            owned.push(
                CString::new(a.as_bytes())
                    .map_err(|_| EalError(format!("EAL argument {a:?} contains a NUL byte")))?,
            );
        }
        // EAL pins the calling thread to its main lcore (`-l`); every thread
        // the caller starts later would inherit that one core. Keep the
        // thread's affinity as it was: workers pin themselves (`--cores`).
        let affinity = get_affinity();
        // rte_eal_init may permute argv; the strings themselves stay owned here.
        let mut argv: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        argv.push(std::ptr::null_mut());
        // SAFETY: argc/argv describe NUL-terminated strings that outlive the
        // call (and the process keeps no pointer to them past `owned`'s life:
        // EAL copies what it keeps); the EAL has not been initialised in this
        // process (STATE, held locked across the call).
        let rc = unsafe { sys::rte_eal_init(owned.len() as c_int, argv.as_mut_ptr()) };
        drop(owned);
        if let Some(set) = affinity {
            set_affinity(&set);
        }
        if rc < 0 {
            let e = errno();
            let hint = match e {
                libc::EACCES => " (permission denied: run as root)",
                libc::ENOMEM => {
                    " (no memory: reserve hugepages with `sysctl vm.nr_hugepages=512`, or run with --no-huge)"
                }
                libc::EALREADY => " (already initialised)",
                libc::EINVAL => {
                    " (a bad EAL argument or device string: see the EAL messages above)"
                }
                libc::ENODEV => " (no such device or driver: see the EAL messages above)",
                _ => "",
            };
            let m = format!("rte_eal_init failed: {}{hint}", strerror(e));
            *st = State::Failed(m.clone());
            return Err(EalError(m));
        }
        *st = State::Up;
        Ok(Eal::current())
    }

    fn current() -> Eal {
        // SAFETY: only called with the EAL up; rte_get_tsc_hz reads a value
        // EAL calibrated at init.
        let tsc_hz = unsafe { sys::rte_get_tsc_hz() };
        Eal { tsc_hz }
    }

    /// TSC ticks per second, as EAL calibrated it.
    pub fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// Whether the EAL is up in this process.
    pub fn is_up() -> bool {
        matches!(*STATE.lock().unwrap_or_else(|e| e.into_inner()), State::Up)
    }
}

fn get_affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the size passed is
    // its size; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
            .then_some(set)
    }
}

fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the
    // calling thread. A failure leaves EAL's pinning, which still works.
    unsafe {
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set);
    }
}

/// `rte_eal_cleanup`, once, when the EAL is up and every port is closed (call
/// it from the main thread at the end of the process). Returns whether it ran.
pub fn cleanup() -> Result<bool, EalError> {
    let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if !matches!(*st, State::Up) {
        return Ok(false);
    }
    let open = PORTS_OPEN.load(Ordering::Acquire);
    if open != 0 {
        return Err(EalError(format!(
            "rte_eal_cleanup skipped: {open} port(s) still open"
        )));
    }
    // SAFETY: the EAL is up, every port linecap opened is stopped and closed
    // (PORTS_OPEN is zero) and their mempools freed; no DPDK object is used
    // after this (STATE becomes Cleaned and refuses a new init).
    let rc = unsafe { sys::rte_eal_cleanup() };
    *st = State::Cleaned;
    if rc < 0 {
        return Err(EalError(format!(
            "rte_eal_cleanup failed: {}",
            strerror(-rc)
        )));
    }
    Ok(true)
}
