//! The request decoder over all four transport/protocol combinations:
//! the invariants in `tests/decoder/invariants.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/decoder/invariants.rs"]
mod invariants;

#[global_allocator]
static ALLOCATOR: invariants::Counting = invariants::Counting;

fuzz_target!(|data: &[u8]| {
    invariants::check_stream(data);
});
