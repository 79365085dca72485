//! The encryption key at rest (being written).
