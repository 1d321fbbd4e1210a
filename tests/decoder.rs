//! Property tests of the request decoder on stable, in the normal test
//! run; `scripts/fuzz.sh` drives the same invariants under libFuzzer.

#[path = "decoder/invariants.rs"]
mod invariants;

use proptest::prelude::*;
use xm_ip_service::thrift::calls;
use xm_ip_service::thrift::codec::{self, Call};

use invariants::{check_stream, WIRES};

#[global_allocator]
static ALLOCATOR: invariants::Counting = invariants::Counting;

fn any_call() -> impl Strategy<Value = Call> {
    let ips = prop::collection::vec(any::<String>(), 0..40);
    prop_oneof![
        ips.clone().prop_map(|ips| Call::QueryGeoInfoByIp { ips: ips.into() }),
        ips.clone()
            .prop_map(|ips| Call::QueryI18nGeoInfoByIp { ips: ips.into() }),
        (ips, any::<String>()).prop_map(|(ips, lang)| Call::QueryGeoInfo { ips: ips.into(), lang }),
        Just(Call::Unknown),
    ]
}

/// An input for [`check_stream`]: the selector byte, then the stream.
fn input(wire: usize, piece: u8, stream: &[u8]) -> Vec<u8> {
    let mut data = vec![wire as u8 | piece << 2];
    data.extend_from_slice(stream);
    data
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_valid_call_decodes_to_what_was_encoded_however_it_arrives(
        call in any_call(), wire in 0..4usize, piece in any::<u8>(), seq in any::<i32>(),
    ) {
        let message = calls::encode_call(WIRES[wire], seq, &call);
        let request = check_stream(&input(wire, piece, &message)).expect("a valid call decodes");
        prop_assert_eq!(request.seq, seq);
        prop_assert_eq!(request.call, Ok(call));
    }

    #[test]
    fn random_bytes_never_panic_nor_hold_more_than_they_bring(
        bytes in prop::collection::vec(any::<u8>(), 0..4096), wire in 0..4usize, piece in any::<u8>(),
    ) {
        check_stream(&input(wire, piece, &bytes));
    }

    #[test]
    fn a_valid_call_mutated_never_panics_nor_holds_more_than_it_brings(
        call in any_call(), wire in 0..4usize, piece in any::<u8>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut message = calls::encode_call(WIRES[wire], 1, &call);
        for (at, byte) in flips {
            let at = at.index(message.len());
            message[at] = byte;
        }
        message.truncate(cut.index(message.len() + 1));
        check_stream(&input(wire, piece, &message));
    }
}

#[test]
fn a_list_of_a_million_empty_strings_holds_no_more_than_a_batch() {
    // Compact, unframed: one byte per element on the wire, 24 bytes per
    // `String` if it were built; over the batch limit nothing is.
    let mut message = calls::encode_call(
        WIRES[3],
        1,
        &Call::QueryGeoInfoByIp {
            ips: Default::default(),
        },
    );
    message.truncate(message.len() - 2); // the empty list's header and the end of the arguments
    message.extend_from_slice(&[0xf8, 0xc0, 0x84, 0x3d]); // a list of 1,000,000 strings
    message.extend(std::iter::repeat_n(0u8, 1_000_000));
    message.push(0);
    let request = check_stream(&input(3, 255, &message)).expect("the message walks and decodes");
    assert_eq!(
        request.call,
        Err(codec::BadArgs::BatchOverLimit {
            size: 1_000_000,
            limit: invariants::MAX_BATCH
        })
    );
}
