//! The single-threaded executor every task of `picolet run` lives on.
//! Deciding code runs here; blocking work goes to [`unblock`] or child
//! processes so the loop never stalls.

use smol::LocalExecutor;
use std::future::Future;

thread_local! {
    static EXECUTOR: LocalExecutor<'static> = const { LocalExecutor::new() };
}

/// Spawns a task on this thread's executor. Tasks need not be `Send`.
pub fn spawn<T: 'static>(fut: impl Future<Output = T> + 'static) -> smol::Task<T> {
    EXECUTOR.with(|ex| ex.spawn(fut))
}

/// Runs `fut` to completion, driving every spawned task meanwhile.
pub fn block_on<T>(fut: impl Future<Output = T>) -> T {
    EXECUTOR.with(|ex| async_io::block_on(ex.run(fut)))
}

/// Runs blocking `f` on the blocking pool (`smol::unblock`), then gives
/// the pool thread's stack pages below the caller's frame back to the
/// system. Pool threads live on while work keeps coming (a 110-pod node
/// always has some), and each kept the deepest stack any job ever used
/// resident (manifest decodes and serde are deep).
pub fn unblock<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> smol::Task<T> {
    #[allow(clippy::disallowed_methods)] // the one place that may
    smol::unblock(move || {
        let r = f();
        release_unused_stack();
        r
    })
}

/// What stays resident below the current frame: room for the calls that
/// follow (the madvise itself, a signal handler).
const STACK_KEEP: usize = 32 << 10;

/// Drops the pages of this thread's stack below the current frame (they
/// hold only dead frames; the next use faults in zeroed pages). Not for
/// the main thread, whose stack the kernel grows on demand.
fn release_unused_stack() {
    thread_local! {
        static LOW: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    }
    let low = LOW.with(|l| {
        if l.get().is_none() {
            l.set(stack_low());
        }
        l.get()
    });
    let Some(low) = low else { return };
    let here = std::hint::black_box(0u8);
    let sp = std::ptr::addr_of!(here) as usize;
    let page = crate::util::page_size();
    let end = sp.saturating_sub(STACK_KEEP) & !(page - 1);
    if end <= low {
        return;
    }
    // SAFETY: [low, end) is this thread's own stack, below every live
    // frame: nothing points into it, and MADV_DONTNEED leaves it mapped.
    unsafe {
        libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED);
    }
}

/// The lowest usable address of this thread's stack.
fn stack_low() -> Option<usize> {
    // SAFETY: plain pthread calls on this thread's own attributes, which
    // are initialised by pthread_getattr_np and destroyed once.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (rc == 0 && !addr.is_null()).then_some(addr as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident KiB of the mapping that holds `addr` (from smaps).
    fn rss_of_mapping(addr: usize) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        inside = a <= addr && addr < b;
                        continue;
                    }
                }
            }
            if inside {
                if let Some(kb) = line.strip_prefix("Rss:") {
                    return kb.trim().trim_end_matches(" kB").trim().parse().unwrap();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[inline(never)]
    fn deep(n: usize) -> u8 {
        let mut buf = [0u8; 4096];
        buf[n % 4096] = n as u8;
        let buf = std::hint::black_box(buf);
        if n == 0 {
            buf[0]
        } else {
            deep(n - 1).wrapping_add(buf[7])
        }
    }

    #[test]
    fn a_deep_job_leaves_its_stack_pages_behind() {
        std::thread::Builder::new()
            .stack_size(16 << 20)
            .spawn(|| {
                let here = 0u8;
                let sp = std::ptr::addr_of!(here) as usize;
                std::hint::black_box(deep(256)); // at least 1 MiB of frames
                let before = rss_of_mapping(sp);
                release_unused_stack();
                let after = rss_of_mapping(sp);
                assert!(before >= 1024, "the deep call used {before} KiB");
                assert!(after < 256, "{after} KiB still resident");
                // The stack still works after the release.
                std::hint::black_box(deep(256));
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn unblock_returns_the_result() {
        assert_eq!(block_on(unblock(|| deep(64))), deep(64));
    }
}
