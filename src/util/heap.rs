//! The heap of the static builds. They link zig's libc, whose `malloc` is
//! Zig's `SmpAllocator`: size-class slabs that are never given back, so
//! the peak of a 110-pod burst stayed resident for good. dlmalloc
//! coalesces free chunks, reuses them for any size and returns its top
//! to the system; blocks of 128 KiB and more are mappings of their own.

use super::page_size;
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

/// Blocks this large get a mapping of their own, as C dlmalloc and glibc
/// give them (the Rust port has no such path): a burst's big transient
/// buffers (`/pods` bodies, JSON being built) would otherwise leave holes
/// in the heap that small long-lived objects then keep resident.
const MAP_THRESHOLD: usize = 128 << 10;

/// Whether a block of this layout lives in a mapping of its own.
fn mapped(size: usize, align: usize) -> bool {
    size >= MAP_THRESHOLD && align <= page_size()
}

fn pages(size: usize) -> usize {
    let p = page_size();
    size.div_ceil(p) * p
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: a fresh private anonymous mapping, zero-filled.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            pages(size),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: dlmalloc upholds GlobalAlloc's contract for the size and
// alignment it is given, every call to it serialized by the mutex; a
// mapped block is page-aligned (its alignment is at most a page) and
// known again by its layout's size, which dealloc and realloc are given.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if mapped(l.size(), l.align()) {
            return unsafe { map(l.size()) };
        }
        unsafe { lock().0.malloc(l.size(), l.align()) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if mapped(l.size(), l.align()) {
            return unsafe { map(l.size()) };
        }
        unsafe { lock().0.calloc(l.size(), l.align()) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if mapped(l.size(), l.align()) {
            unsafe { libc::munmap(p.cast(), pages(l.size())) };
            return;
        }
        unsafe { lock().0.free(p, l.size(), l.align()) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        match (mapped(l.size(), l.align()), mapped(new, l.align())) {
            (false, false) => unsafe { lock().0.realloc(p, l.size(), l.align(), new) },
            (true, true) => {
                // SAFETY: p is a mapping of pages(l.size()) bytes.
                let q = unsafe {
                    libc::mremap(p.cast(), pages(l.size()), pages(new), libc::MREMAP_MAYMOVE)
                };
                if q == libc::MAP_FAILED {
                    std::ptr::null_mut()
                } else {
                    q.cast()
                }
            }
            // Across the threshold: a new block, the bytes, the old one freed.
            _ => {
                // SAFETY: the alignment came from a valid layout.
                let nl = unsafe { Layout::from_size_align_unchecked(new, l.align()) };
                let q = unsafe { self.alloc(nl) };
                if !q.is_null() {
                    unsafe {
                        std::ptr::copy_nonoverlapping(p, q, l.size().min(new));
                        self.dealloc(p, l);
                    }
                }
                q
            }
        }
    }
}

/// Gives the free top of the heap and unused segments back to the
/// system; true when something went back. (Nothing to give where `Heap`
/// is not the global allocator, as in the glibc development builds.)
pub fn trim() -> bool {
    // SAFETY: under the mutex, like every other call into the heap.
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
        // Across the mapping threshold and back, growing and shrinking.
        let l = Layout::from_size_align(1000, 16).unwrap();
        let mut p = unsafe { Heap.alloc(l) };
        let mut size = 1000;
        unsafe { p.write_bytes(0x5a, size) };
        for new in [
            MAP_THRESHOLD - 1,
            MAP_THRESHOLD,
            3 << 20,
            5 << 20,
            200 << 10,
            4000,
            300 << 10,
            10,
        ] {
            p = unsafe { Heap.realloc(p, Layout::from_size_align(size, 16).unwrap(), new) };
            assert!(!p.is_null() && p as usize % 16 == 0, "{size} -> {new}");
            let kept = size.min(new);
            assert!(
                unsafe { std::slice::from_raw_parts(p, kept) }
                    .iter()
                    .all(|&b| b == 0x5a),
                "{size} -> {new}"
            );
            unsafe { p.write_bytes(0x5a, new) };
            size = new;
        }
        unsafe { Heap.dealloc(p, Layout::from_size_align(size, 16).unwrap()) };
        // A big alignment stays in the heap.
        let big = Layout::from_size_align(1 << 20, 2 * page_size()).unwrap();
        assert!(!mapped(big.size(), big.align()));
        let p = unsafe { Heap.alloc(big) };
        assert!(!p.is_null() && p as usize % big.align() == 0);
        unsafe { Heap.dealloc(p, big) };
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
