//! The few GGUF metadata values that size a model's KV cache, read from the model file's header
//! (llama-server names the file in `/props`) or from Ollama's `/api/show` `model_info`, which
//! carries the same keys.

use std::io::{BufReader, Read};
use std::path::Path;

/// Longest metadata string accepted (the longest in real files is a chat template, a few KiB).
const MAX_STRING: u64 = 1 << 24;
/// Most metadata entries or array items accepted (a vocabulary has a few hundred thousand).
const MAX_ITEMS: u64 = 1 << 24;

/// What sizes the KV cache: per layer, `head_count_kv` heads of `key_length` + `value_length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Layers (`{arch}.block_count`).
    pub layers: u64,
    /// Key/value heads (`{arch}.attention.head_count_kv`, else `head_count`).
    pub kv_heads: u64,
    /// Key width per head (`{arch}.attention.key_length`, else embedding / heads).
    pub key_length: u64,
    /// Value width per head (`{arch}.attention.value_length`, else the key width).
    pub value_length: u64,
}

impl Shape {
    /// The shape from `{arch}.*` values looked up by key.
    pub fn from_lookup(arch: &str, get: impl Fn(&str) -> Option<u64>) -> Option<Shape> {
        let key = |k: &str| get(&format!("{arch}.{k}"));
        let layers = key("block_count")?;
        let heads = key("attention.head_count");
        let kv_heads = key("attention.head_count_kv").or(heads)?;
        let key_length = key("attention.key_length").or_else(|| Some(key("embedding_length")? / heads?.max(1)))?;
        let value_length = key("attention.value_length").unwrap_or(key_length);
        Some(Shape { layers, kv_heads, key_length, value_length })
    }

    /// Bytes of an f16 KV cache (llama.cpp's and Ollama's default type) holding `context`
    /// tokens in every layer. Sliding-window layers hold less, so this is an upper bound.
    pub fn kv_bytes(&self, context: u64) -> u64 {
        let per_token = self.layers * self.kv_heads * (self.key_length + self.value_length) * 2;
        per_token.saturating_mul(context)
    }
}

/// Reads the header of the GGUF file at `path` and returns its KV-cache shape.
pub(super) fn read_shape(path: &Path) -> std::io::Result<Option<Shape>> {
    let file = std::fs::File::open(path)?;
    let values = read_metadata(BufReader::with_capacity(1 << 16, file))?;
    let arch = values.iter().find(|(k, _)| k == "general.architecture").and_then(|(_, v)| v.text());
    Ok(arch.and_then(|arch| {
        Shape::from_lookup(arch, |key| values.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.number()))
    }))
}

/// A metadata value: the scalars and strings kept, arrays skipped.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Number(u64),
    Text(String),
    Other,
}

impl Value {
    fn number(&self) -> Option<u64> {
        if let Value::Number(n) = self { Some(*n) } else { None }
    }
    fn text(&self) -> Option<&str> {
        if let Value::Text(s) = self { Some(s) } else { None }
    }
}

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// The metadata key/value pairs of a GGUF (v2 or v3) stream, up to the tensor infos.
fn read_metadata(mut r: impl Read) -> std::io::Result<Vec<(String, Value)>> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if &magic != b"GGUF" {
        return Err(invalid("not a GGUF file".into()));
    }
    let version = u32_le(&mut r)?;
    if !(2..=3).contains(&version) {
        return Err(invalid(format!("GGUF version {version} is not supported")));
    }
    let _tensors = u64_le(&mut r)?;
    let count = u64_le(&mut r)?;
    if count > MAX_ITEMS {
        return Err(invalid(format!("{count} metadata entries")));
    }
    let mut values = Vec::new();
    for _ in 0..count {
        let key = string(&mut r)?;
        let kind = u32_le(&mut r)?;
        values.push((key, value(&mut r, kind)?));
    }
    Ok(values)
}

fn value(r: &mut impl Read, kind: u32) -> std::io::Result<Value> {
    Ok(match kind {
        0 | 1 | 7 => Value::Number(u64::from(fixed::<1>(r)?[0])),
        2 | 3 => Value::Number(u64::from(u16::from_le_bytes(fixed(r)?))),
        4 => Value::Number(u64::from(u32_le(r)?)),
        5 => Value::Number(u64::try_from(i32::from_le_bytes(fixed(r)?)).unwrap_or(0)),
        6 => {
            fixed::<4>(r)?;
            Value::Other
        }
        8 => Value::Text(string(r)?),
        9 => {
            let item = u32_le(r)?;
            let n = u64_le(r)?;
            if n > MAX_ITEMS || item == 9 {
                return Err(invalid(format!("an array of {n} items of type {item}")));
            }
            for _ in 0..n {
                value(r, item)?;
            }
            Value::Other
        }
        10 => Value::Number(u64_le(r)?),
        11 => Value::Number(u64::try_from(i64::from_le_bytes(fixed(r)?)).unwrap_or(0)),
        12 => {
            fixed::<8>(r)?;
            Value::Other
        }
        other => return Err(invalid(format!("unknown metadata type {other}"))),
    })
}

fn fixed<const N: usize>(r: &mut impl Read) -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

fn u32_le(r: &mut impl Read) -> std::io::Result<u32> {
    Ok(u32::from_le_bytes(fixed(r)?))
}

fn u64_le(r: &mut impl Read) -> std::io::Result<u64> {
    Ok(u64::from_le_bytes(fixed(r)?))
}

fn string(r: &mut impl Read) -> std::io::Result<String> {
    let len = u64_le(r)?;
    if len > MAX_STRING {
        return Err(invalid(format!("a metadata string of {len} bytes")));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF v3 header with `entries` (key, type, payload bytes).
    fn header(entries: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend((entries.len() as u64).to_le_bytes());
        for (k, t, payload) in entries {
            b.extend((k.len() as u64).to_le_bytes());
            b.extend(k.as_bytes());
            b.extend(t.to_le_bytes());
            b.extend(payload);
        }
        b
    }

    fn text(s: &str) -> Vec<u8> {
        let mut b = (s.len() as u64).to_le_bytes().to_vec();
        b.extend(s.as_bytes());
        b
    }

    #[test]
    fn the_shape_is_read_past_arrays() {
        let mut vocab = 8u32.to_le_bytes().to_vec();
        vocab.extend(2u64.to_le_bytes());
        vocab.extend(text("<bos>"));
        vocab.extend(text("<eos>"));
        let bytes = header(&[
            ("general.architecture", 8, text("gemma3")),
            ("tokenizer.ggml.tokens", 9, vocab),
            ("gemma3.block_count", 4, 18u32.to_le_bytes().to_vec()),
            ("gemma3.attention.head_count", 4, 4u32.to_le_bytes().to_vec()),
            ("gemma3.attention.head_count_kv", 4, 1u32.to_le_bytes().to_vec()),
            ("gemma3.attention.key_length", 4, 256u32.to_le_bytes().to_vec()),
            ("gemma3.rope.freq_base", 6, 1e6f32.to_le_bytes().to_vec()),
        ]);
        let values = read_metadata(bytes.as_slice()).unwrap();
        let get = |key: &str| values.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.number());
        let shape = Shape::from_lookup("gemma3", get).unwrap();
        assert_eq!(shape, Shape { layers: 18, kv_heads: 1, key_length: 256, value_length: 256 });
        assert_eq!(shape.kv_bytes(2048), 18 * 512 * 2 * 2048);
    }

    #[test]
    fn the_real_test_model_has_a_shape() {
        // The model the tests serve (tests/scripts/llm-server.sh); skipped where it is not installed.
        let cache = std::env::var("LLM_CACHE")
            .unwrap_or_else(|_| format!("{}/.cache/lcw-llm", std::env::var("HOME").unwrap_or_default()));
        let path = Path::new(&cache).join("gemma-3-270m-q4_k_m.gguf");
        if !path.exists() {
            return;
        }
        let shape = read_shape(&path).unwrap().unwrap();
        assert_eq!(shape, Shape { layers: 18, kv_heads: 1, key_length: 256, value_length: 256 });
    }

    #[test]
    fn other_files_are_refused() {
        assert!(read_metadata(&b"PK\x03\x04rest"[..]).unwrap_err().to_string().contains("not a GGUF"));
        let mut huge = header(&[]);
        huge[16..24].copy_from_slice(&(u64::MAX).to_le_bytes());
        assert!(read_metadata(huge.as_slice()).is_err());
    }
}
