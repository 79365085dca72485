#!/usr/bin/env python3
"""Known-answer vectors for lcw's encryption suites, computed with an independent implementation
(pyca/cryptography) so the Rust suites are checked against something other than themselves.

p256-aesgcm follows LightChain's Go code (upstream.md section 5): the ECDH output is the raw X
coordinate (as Go's crypto/ecdh and pyca's ECDH both return), used directly as the AES-256-GCM key.

Run: python3 schema/kat/suite_vectors.py   (prints the vectors pasted into schema/src/suite/tests.rs)
"""
import hashlib

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()

NONCE = bytes(range(12))
CONTENT_NONCE = bytes(range(12, 24))
SESSION_KEY = bytes(range(32, 64))
PROMPT = b"Name three colours."

def p256_priv(seed: bytes):
    return ec.derive_private_key(int.from_bytes(seed, "big"), ec.SECP256R1())

def p256_pub(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)

worker = p256_priv(h("lcw kat p256 worker"))
eph = p256_priv(h("lcw kat p256 ephemeral"))
shared = eph.exchange(ec.ECDH(), worker.public_key())
wrap = p256_pub(eph) + NONCE + AESGCM(shared).encrypt(NONCE, SESSION_KEY, None)
assert len(wrap) == 125
print("P256_WORKER_SECRET =", h("lcw kat p256 worker").hex())
print("P256_EPHEMERAL_SECRET =", h("lcw kat p256 ephemeral").hex())
print("P256_WORKER_PUBLIC =", p256_pub(worker).hex())
print("P256_WRAP =", wrap.hex())

xw = x25519.X25519PrivateKey.from_private_bytes(h("lcw kat x25519 worker"))
xe = x25519.X25519PrivateKey.from_private_bytes(h("lcw kat x25519 ephemeral"))
raw = lambda k: k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
xshared = xe.exchange(xw.public_key())
info = b"lcw/x25519-aesgcm/v1/session-key-wrap" + raw(xe) + raw(xw)
kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(xshared)
xwrap = raw(xe) + NONCE + AESGCM(kek).encrypt(NONCE, SESSION_KEY, None)
assert len(xwrap) == 92
print("X25519_WORKER_SECRET =", h("lcw kat x25519 worker").hex())
print("X25519_EPHEMERAL_SECRET =", h("lcw kat x25519 ephemeral").hex())
print("X25519_WORKER_PUBLIC =", raw(xw).hex())
print("X25519_WRAP =", xwrap.hex())

print("SEALED_PROMPT =", (CONTENT_NONCE + AESGCM(SESSION_KEY).encrypt(CONTENT_NONCE, PROMPT, None)).hex())
