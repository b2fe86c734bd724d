//! The heap of the static builds. They link zig's libc, whose `malloc` is
//! Zig's `SmpAllocator`: size-class slabs that are never given back, so
//! the peak of a 110-pod burst stayed resident for good. dlmalloc
//! coalesces free chunks, reuses them for any size and returns its top
//! to the system.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Mutex, MutexGuard};

/// `#[global_allocator]` of the musl builds (see `main.rs`).
pub struct Heap;

struct Dl(dlmalloc::Dlmalloc);
// SAFETY: the heap's raw pointers are only touched under the mutex.
unsafe impl Send for Dl {}

static DL: Mutex<Dl> = Mutex::new(Dl(dlmalloc::Dlmalloc::new()));

fn lock() -> MutexGuard<'static, Dl> {
    // A panic never happens inside dlmalloc (panic=abort in release);
    // a poisoned lock still guards a consistent heap.
    DL.lock().unwrap_or_else(|e| e.into_inner())
}

// SAFETY: dlmalloc upholds GlobalAlloc's contract for the size and
// alignment it is given; every call is serialized by the mutex.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        unsafe { lock().0.malloc(l.size(), l.align()) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        unsafe { lock().0.calloc(l.size(), l.align()) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { lock().0.free(p, l.size(), l.align()) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        unsafe { lock().0.realloc(p, l.size(), l.align(), new) }
    }
}

/// Gives the free top of the heap and unused segments back to the
/// system; true when something went back. (Nothing to give where `Heap`
/// is not the global allocator, as in the glibc development builds.)
pub fn trim() -> bool {
    unsafe { lock().0.trim(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_alignments_realloc_and_trim() {
        let mut held = Vec::new();
        for (i, align) in [1usize, 8, 16, 64, 4096]
            .into_iter()
            .cycle()
            .take(200)
            .enumerate()
        {
            let size = 1 + (i * 977) % 70_000;
            let l = Layout::from_size_align(size, align).unwrap();
            let p = unsafe { Heap.alloc(l) };
            assert!(!p.is_null() && p as usize % align == 0, "{size} @ {align}");
            unsafe { p.write_bytes(i as u8, size) };
            held.push((p, l, i as u8));
        }
        for (p, l, v) in held.iter_mut() {
            let grown = l.size() * 2 + 100;
            let q = unsafe { Heap.realloc(*p, *l, grown) };
            assert!(!q.is_null() && q as usize % l.align() == 0);
            // realloc keeps the old bytes
            assert!(unsafe { std::slice::from_raw_parts(q, l.size()) }
                .iter()
                .all(|b| b == v));
            *p = q;
            *l = Layout::from_size_align(grown, l.align()).unwrap();
        }
        let z = Layout::from_size_align(100_000, 16).unwrap();
        let zp = unsafe { Heap.alloc_zeroed(z) };
        assert!(unsafe { std::slice::from_raw_parts(zp, z.size()) }
            .iter()
            .all(|&b| b == 0));
        unsafe { Heap.dealloc(zp, z) };
        for (p, l, _) in held {
            unsafe { Heap.dealloc(p, l) };
        }
        // A free top below dlmalloc's own 2 MiB trim threshold stays
        // until trim() gives it back.
        let l = Layout::from_size_align(15_000, 8).unwrap();
        let small: Vec<_> = (0..100).map(|_| unsafe { Heap.alloc(l) }).collect();
        for p in small {
            unsafe { Heap.dealloc(p, l) };
        }
        assert!(trim());
        assert!(!trim(), "nothing left to give back");
    }
}
