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
/// system; true when something went back.
pub fn trim() -> bool {
    unsafe { lock().0.trim(0) }
}
