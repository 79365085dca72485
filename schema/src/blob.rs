//! The EIP-4844 blob payload codec shared by everyone who posts or reads a blob (simulator,
//! worker), as LightChain encodes it (upstream.md §4, `blob/encode.go`): the payload is prefixed
//! with its 4-byte big-endian length, then packed 31 bytes per 32-byte field element with the
//! element's first byte 0x00 (which keeps every element below the BLS modulus).
//!
//! Also builds the KZG sidecar (commitments and proofs) and the versioned hashes a type-3
//! transaction carries.

use alloy::eips::eip4844::env_settings::EnvKzgSettings;
use alloy::eips::eip4844::{BYTES_PER_BLOB, Blob, BlobTransactionSidecar, kzg_to_versioned_hash};
use alloy::primitives::B256;

/// Field elements per blob.
pub const FIELD_ELEMENTS: usize = 4096;
/// Data bytes carried by one field element.
pub const BYTES_PER_ELEMENT: usize = 31;
/// The largest payload one blob carries: 4096 × 31 − 4 = 126,972 bytes.
pub const MAX_PAYLOAD: usize = FIELD_ELEMENTS * BYTES_PER_ELEMENT - 4;

/// Why a payload could not be encoded or a blob decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobError {
    /// The payload does not fit one blob.
    #[error("payload of {len} bytes does not fit a blob (at most {MAX_PAYLOAD} bytes)")]
    TooLarge {
        /// Payload length.
        len: usize,
    },
    /// The blob is not 131,072 bytes.
    #[error("blob is {len} bytes, not {BYTES_PER_BLOB}")]
    WrongSize {
        /// Blob length.
        len: usize,
    },
    /// A field element's first byte is not zero: not a payload in this encoding.
    #[error("field element {index} has a non-zero first byte: not an lcw/LightChain-encoded blob")]
    BadElement {
        /// Index of the offending element.
        index: usize,
    },
    /// The length prefix is larger than a blob can carry.
    #[error("length prefix {len} exceeds the {MAX_PAYLOAD}-byte maximum: not an lcw/LightChain-encoded blob")]
    BadLength {
        /// The decoded length prefix.
        len: usize,
    },
    /// Computing a KZG commitment or proof failed.
    #[error("kzg: {0}")]
    Kzg(String),
}

/// Encodes `payload` into one blob (boxed: a blob is 128 KiB, too big to move around the stack).
pub fn encode(payload: &[u8]) -> Result<Box<Blob>, BlobError> {
    let mut blob = Box::new(Blob::ZERO);
    encode_into(payload, &mut blob)?;
    Ok(blob)
}

/// Encodes `payload` into `blob`, which must be all zeros.
fn encode_into(payload: &[u8], blob: &mut Blob) -> Result<(), BlobError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(BlobError::TooLarge { len: payload.len() });
    }
    let mut stream = Vec::with_capacity(payload.len() + 4);
    // MAX_PAYLOAD < u32::MAX, checked above.
    stream.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    stream.extend_from_slice(payload);
    for (i, chunk) in stream.chunks(BYTES_PER_ELEMENT).enumerate() {
        let start = i * 32 + 1;
        blob[start..start + chunk.len()].copy_from_slice(chunk);
    }
    Ok(())
}

/// Decodes a blob back into its payload.
pub fn decode(blob: &[u8]) -> Result<Vec<u8>, BlobError> {
    if blob.len() != BYTES_PER_BLOB {
        return Err(BlobError::WrongSize { len: blob.len() });
    }
    let element = |i: usize| &blob[i * 32..(i + 1) * 32];
    let first = element(0);
    if first[0] != 0 {
        return Err(BlobError::BadElement { index: 0 });
    }
    let len = u32::from_be_bytes([first[1], first[2], first[3], first[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(BlobError::BadLength { len });
    }
    let mut stream = Vec::with_capacity(len + 4);
    let elements = (len + 4).div_ceil(BYTES_PER_ELEMENT);
    for i in 0..elements {
        let e = element(i);
        if e[0] != 0 {
            return Err(BlobError::BadElement { index: i });
        }
        stream.extend_from_slice(&e[1..]);
    }
    stream.truncate(len + 4);
    Ok(stream.split_off(4))
}

/// Stack for the KZG thread: c-kzg's commitment and proof routines need more than the 2 MiB a
/// test or tokio worker thread has.
const KZG_STACK_BYTES: usize = 16 * 1024 * 1024;

/// Encodes each payload into a blob and computes the KZG commitments and proofs (on a dedicated
/// thread with a large stack; the first call also loads the trusted setup).
pub fn sidecar(payloads: &[&[u8]]) -> Result<BlobTransactionSidecar, BlobError> {
    let mut blobs = vec![Blob::ZERO; payloads.len()];
    for (payload, blob) in payloads.iter().zip(blobs.iter_mut()) {
        encode_into(payload, blob)?;
    }
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("kzg".into())
            .stack_size(KZG_STACK_BYTES)
            .spawn_scoped(scope, move || {
                BlobTransactionSidecar::try_from_blobs_with_settings(blobs, EnvKzgSettings::Default.get())
                    .map_err(|e| BlobError::Kzg(e.to_string()))
            })
            .map_err(|e| BlobError::Kzg(format!("cannot start the kzg thread: {e}")))?
            .join()
            .map_err(|_| BlobError::Kzg("the kzg thread panicked".into()))?
    })
}

/// The versioned hashes (`0x01 ‖ sha256(commitment)[1..]`) of a sidecar's blobs, in order.
pub fn versioned_hashes(sidecar: &BlobTransactionSidecar) -> Vec<B256> {
    sidecar.commitments.iter().map(|c| kzg_to_versioned_hash(c.as_slice())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_small_empty_and_maximal_payloads() {
        for payload in [Vec::new(), b"hello".to_vec(), vec![0xff; 27], vec![7; MAX_PAYLOAD]] {
            let blob = encode(&payload).unwrap();
            assert_eq!(decode(blob.as_slice()).unwrap(), payload);
        }
    }

    #[test]
    fn layout_is_length_prefix_then_31_bytes_per_element() {
        let payload: Vec<u8> = (1..=40).collect();
        let blob = encode(&payload).unwrap();
        assert_eq!(&blob[0..5], &[0, 0, 0, 0, 40]);
        assert_eq!(&blob[5..32], &payload[..27]);
        assert_eq!(blob[32], 0);
        assert_eq!(&blob[33..46], &payload[27..]);
        assert!(blob[46..].iter().all(|b| *b == 0));
    }

    #[test]
    fn rejects_oversized_payload_and_foreign_blobs() {
        assert_eq!(encode(&vec![0; MAX_PAYLOAD + 1]).unwrap_err(), BlobError::TooLarge { len: MAX_PAYLOAD + 1 });
        let mut blob = encode(b"abc").unwrap();
        blob[0] = 1;
        assert_eq!(decode(blob.as_slice()).unwrap_err(), BlobError::BadElement { index: 0 });
        let mut blob = Box::new(Blob::ZERO);
        blob[1] = 0xff;
        assert!(matches!(decode(blob.as_slice()).unwrap_err(), BlobError::BadLength { .. }));
        assert_eq!(decode(&[0u8; 10]).unwrap_err(), BlobError::WrongSize { len: 10 });
    }

    #[test]
    fn sidecar_versioned_hashes_start_with_version_byte() {
        let sc = sidecar(&[b"one", b"two"]).unwrap();
        let hashes = versioned_hashes(&sc);
        assert_eq!(hashes.len(), 2);
        assert!(hashes.iter().all(|h| h[0] == 0x01));
        assert_ne!(hashes[0], hashes[1]);
        assert_eq!(decode(sc.blobs[1].as_slice()).unwrap(), b"two");
    }
}
