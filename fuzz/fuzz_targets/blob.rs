//! The EIP-4844 blob payload codec (`lcw_schema::blob`). The first input byte picks the mode:
//!
//! - 0: the rest is a payload: it encodes into a blob whose every field element starts with a
//!   zero byte and that decodes back to it;
//! - 1: the rest is the start of a blob (zero-filled to 131,072 bytes): decoding never panics,
//!   and what it decodes is what the blob's length prefix and data bytes say (re-encoding puts
//!   the same bytes in the same places);
//! - 2: the rest, repeated, fills a payload near the 126,972-byte limit (the next two bytes pick
//!   how near, either side): at most the limit round-trips, one byte more is refused;
//! - other: the rest is passed to `decode` as it is: anything but a whole blob is refused.

#![no_main]

use alloy::eips::eip4844::BYTES_PER_BLOB;
use lcw_schema::blob::{BYTES_PER_ELEMENT, BlobError, MAX_PAYLOAD, decode, encode};
use libfuzzer_sys::fuzz_target;

/// Where byte `k` of the length-prefixed stream sits in a blob.
fn position(k: usize) -> usize {
    (k / BYTES_PER_ELEMENT) * 32 + 1 + k % BYTES_PER_ELEMENT
}

fn round_trip(payload: &[u8]) {
    let blob = encode(payload).unwrap_or_else(|e| panic!("a {}-byte payload: {e}", payload.len()));
    assert!(blob.chunks(32).all(|element| element[0] == 0), "every element stays below the BLS modulus");
    assert_eq!(decode(blob.as_slice()).as_deref(), Ok(payload), "decode(encode(p)) == p");
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else { return };
    match mode {
        0 => round_trip(rest),
        1 => {
            let mut blob = vec![0u8; BYTES_PER_BLOB];
            let n = rest.len().min(BYTES_PER_BLOB);
            blob[..n].copy_from_slice(&rest[..n]);
            let Ok(payload) = decode(&blob) else { return };
            let canonical = encode(&payload).expect("a decoded payload fits a blob");
            for k in 0..payload.len() + 4 {
                let at = position(k);
                assert_eq!(blob[at], canonical[at], "stream byte {k} (blob byte {at}) was read from elsewhere");
            }
        }
        2 => {
            let (Some(&side), Some(&distance)) = (rest.first(), rest.get(1)) else { return };
            let fill = if rest.len() > 2 { &rest[2..] } else { &[0xa5u8][..] };
            let len = if side & 1 == 0 {
                MAX_PAYLOAD - usize::from(distance)
            } else {
                MAX_PAYLOAD + 1 + usize::from(distance)
            };
            let payload: Vec<u8> = fill.iter().copied().cycle().take(len).collect();
            if len <= MAX_PAYLOAD {
                round_trip(&payload);
            } else {
                assert_eq!(encode(&payload).err(), Some(BlobError::TooLarge { len }));
            }
        }
        _ => {
            if rest.len() != BYTES_PER_BLOB {
                assert_eq!(decode(rest), Err(BlobError::WrongSize { len: rest.len() }));
            }
        }
    }
});
