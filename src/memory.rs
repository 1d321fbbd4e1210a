//! How the process holds memory: large blocks mapped apart from glibc's
//! heap, freed pages given back after a burst, and the range index's
//! arrays in mappings of their own, backed by huge pages.

use std::marker::PhantomData;

/// Blocks at least this large are mapped apart from the heap: larger than
/// any valid request of 10,000 addresses (about 200 KB); the largest
/// bodies, and replies of about a thousand addresses or more.
const MAPPED_APART: usize = 256 << 10;

/// The free memory glibc's heap keeps at its top before giving it back:
/// more than the heap part of a request of 10,000 addresses (about 5 MB;
/// its largest blocks are mapped apart). At 512 KiB the heap gave its top
/// back, and faulted it in again, every few batches of a thousand.
const KEPT_ON_TOP: usize = 8 << 20;

/// Has glibc map every block of `MAPPED_APART` or more apart from the
/// heap and unmap it when freed. By default it raises that threshold to
/// the largest block freed so far (up to 32 MiB): after the first burst of
/// 16 MB request buffers it carves them from the heap, and slow senders
/// that are closed and replaced leave their freed buffers resident. The
/// page faults of mapping a large reply afresh cost no measurable
/// throughput (BENCHMARKS.md, slow senders).
pub fn map_large_blocks_apart() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's own tunables.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MAPPED_APART as libc::c_int);
        // Setting one threshold stops glibc adjusting the other, which would
        // fall back to 128 KiB and give the heap's top back at nearly every
        // free. What a burst frees is still given back within seconds:
        // `serve::budget::return_freed_memory` trims regardless of it.
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEPT_ON_TOP as libc::c_int);
    }
}

/// Asks for the cache line at `at` to be loaded; a hint, never a fault.
#[inline(always)]
pub fn prefetch<T: ?Sized>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching reads nothing architecturally and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
}

/// Gives freed heap pages back to the operating system. Parsing files or
/// replacing an index frees hundreds of megabytes in many small pieces,
/// which glibc's allocator would otherwise keep.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A read-only array in a mapping of its own, which the kernel is asked
/// to back with 2 MB pages: lookups jump about tables of tens of megabytes,
/// and with 4 KB pages nearly every one would also miss the TLB (doubly so
/// in a VM). A fresh mapping, unlike a heap allocation, is not yet backed,
/// so the advice takes effect as the entries are first written.
pub struct HugePages<T> {
    map: Option<memmap2::Mmap>,
    len: usize,
    items: PhantomData<T>,
}

/// A growing array in a mapping of its own that becomes a [`HugePages`]
/// in place: an index is built without a second copy of its entries, and
/// each mapping it outgrows goes back to the kernel whole instead of
/// leaving a hole in the heap.
pub struct Growing<T> {
    map: Option<memmap2::MmapMut>,
    len: usize,
    items: PhantomData<T>,
}

impl<T> Default for Growing<T> {
    fn default() -> Growing<T> {
        Growing {
            map: None,
            len: 0,
            items: PhantomData,
        }
    }
}

impl<T: Copy> Growing<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn capacity(&self) -> usize {
        self.map.as_ref().map_or(0, |map| map.len() / std::mem::size_of::<T>())
    }

    /// Room for `additional` more, at least doubling when it grows.
    pub fn reserve(&mut self, additional: usize) {
        let needed = self.len + additional;
        if needed <= self.capacity() {
            return;
        }
        let items = needed.max(2 * self.capacity()).max(4096);
        // Failing to map is running out of memory, which a Vec would abort on too.
        let mut map = memmap2::MmapMut::map_anon(items * std::mem::size_of::<T>()).expect("out of memory for an index");
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        // SAFETY: both mappings are page-aligned, so aligned for `T`; the
        // new one holds at least `len` values; `T: Copy` values copy whole.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr(), map.as_mut_ptr().cast::<T>(), self.len) };
        self.map = Some(map);
    }

    pub fn push(&mut self, item: T) {
        self.reserve(1);
        let map = self.map.as_mut().expect("reserved");
        // SAFETY: `reserve` left room for one more `T` at `len`.
        unsafe { map.as_mut_ptr().cast::<T>().add(self.len).write(item) };
        self.len += 1;
    }

    fn as_ptr(&self) -> *const T {
        self.map
            .as_ref()
            .map_or(std::ptr::NonNull::dangling().as_ptr(), |map| map.as_ptr().cast::<T>())
    }

    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the first `len` values were written by `push`; an empty
        // array reads from a dangling, aligned pointer, as `&[]` does.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    /// The array, read-only from now on.
    pub fn finish(self) -> HugePages<T> {
        HugePages {
            map: self.map.map(|map| {
                map.make_read_only()
                    .expect("an anonymous mapping can be made read-only")
            }),
            len: self.len,
            items: PhantomData,
        }
    }
}

impl<T> std::ops::Deref for HugePages<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.map {
            // SAFETY: the mapping holds `len` values of `T`, written by
            // `Growing::push`, aligned, and never written again.
            Some(map) => unsafe { std::slice::from_raw_parts(map.as_ptr().cast::<T>(), self.len) },
            None => &[],
        }
    }
}
