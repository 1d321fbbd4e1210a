//! What must hold for any bytes a peer sends, shared by the property
//! tests (`tests/decoder.rs`) and the fuzz target (`fuzz/`): finding a
//! message's end never panics and gives the same answer whether the bytes
//! arrive whole or in pieces, and decoding never panics and never holds
//! more memory than the bytes given plus a constant.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use xm_ip_service::thrift::codec::{self, Framing, MessageCheck, MessageSpan, Request, Wire};

pub const WIRES: [Wire; 4] = Wire::EACH;

pub const LIMIT: usize = 1 << 20;
pub const MAX_BATCH: usize = 10_000;
/// A batch limit small enough for short inputs to go over it.
const EARLY_BATCH: usize = 4;

/// The most a decode may hold beyond three times its input (invalid UTF-8
/// grows threefold as replacement characters): a full batch's `String`
/// headers, and some slack.
pub const ALLOCATION_SLACK: usize = MAX_BATCH * std::mem::size_of::<String>() + (64 << 10);

/// The system allocator, counting the bytes live and their peak.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

/// The most bytes held at once while `f` ran, beyond what was live before.
/// Meaningful only with [`Counting`] as the global allocator and one
/// thread allocating.
pub fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - before)
}

/// Checks the invariants on one input: its first byte picks the wire (low
/// two bits) and the size of the pieces it arrives in (the rest); the
/// other bytes are the stream. Returns the first message, if it decodes.
pub fn check_stream(data: &[u8]) -> Option<Request> {
    let (&selector, bytes) = data.split_first()?;
    let wire = WIRES[usize::from(selector & 3)];
    let piece = 1 + usize::from(selector >> 2);
    let _ = codec::detect(bytes, LIMIT);

    let whole = MessageCheck::new(wire, LIMIT).check(bytes);
    let mut check = MessageCheck::new(wire, LIMIT);
    let mut in_pieces = check.check(&[]);
    let mut end = 0;
    while end < bytes.len() && in_pieces == Ok(None) {
        end = (end + piece).min(bytes.len());
        in_pieces = check.check(&bytes[..end]);
    }
    assert_eq!(whole, in_pieces, "{wire:?}, pieces of {piece}");
    if wire.framing == Framing::Buffered {
        assert_eq!(
            whole,
            walked_forgetting(bytes, wire, piece),
            "{wire:?}, pieces of {piece}"
        );
    }

    let found = whole.ok()??;
    assert!(found.body <= found.end && found.end <= bytes.len(), "{found:?}");
    let message = &bytes[found.body..found.end];
    let (request, peak) = peak_during(|| codec::decode(message, wire.protocol, MAX_BATCH));
    assert!(
        peak <= 3 * message.len() + ALLOCATION_SLACK,
        "decoding {} bytes held {peak} bytes",
        message.len()
    );
    check_early_refusal(message, wire, piece);
    request.ok()
}

/// Walks an unframed stream in pieces, dropping what the walk has passed
/// as it goes: where the message ends, counted from the stream's start.
fn walked_forgetting(bytes: &[u8], wire: Wire, piece: usize) -> Result<Option<MessageSpan>, codec::WireError> {
    let mut check = MessageCheck::new(wire, LIMIT);
    let (mut dropped, mut end) = (0, 0);
    loop {
        end = (end + piece).min(bytes.len());
        match check.check(&bytes[dropped..end])? {
            // The message began at the stream's start, before what was dropped.
            Some(found) => {
                return Ok(Some(MessageSpan {
                    body: found.body,
                    end: dropped + found.end,
                }))
            }
            None if end == bytes.len() => return Ok(None),
            None => dropped += check.forget(),
        }
    }
}

/// A request refused from a message's first bytes is one that decoding the
/// whole message refuses too, with the same header.
fn check_early_refusal(message: &[u8], wire: Wire, piece: usize) {
    let whole = codec::decode(message, wire.protocol, EARLY_BATCH);
    for end in (0..=message.len().min(4096)).step_by(piece) {
        let Some(early) = codec::refuse_early(&message[..end], wire.protocol, message.len(), EARLY_BATCH) else {
            continue;
        };
        let whole = whole
            .as_ref()
            .expect("a message refused early has a header that decodes");
        assert_eq!(
            (&early.name, early.message_type, early.seq),
            (&whole.name, whole.message_type, whole.seq)
        );
        assert!(whole.call.is_err(), "refused early, decoded whole: {:?}", whole.call);
    }
}
