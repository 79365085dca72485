//! The API's scalars: `Address` (EIP-55 out, any case in), `BigInt` (decimal string),
//! `Bytes32` (0x hex) and `Timestamp` (unix seconds as an Int).

use alloy::primitives::{Address as EthAddress, B256, U256};
use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

/// An Ethereum address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address(pub EthAddress);

/// An Ethereum address: 0x and 40 hex digits. Any case on input; EIP-55 checksummed on output.
#[Scalar(name = "Address")]
impl ScalarType for Address {
    fn parse(value: Value) -> InputValueResult<Self> {
        let Value::String(s) = &value else {
            return Err(InputValueError::custom("an address is a string: 0x and 40 hex digits"));
        };
        let t = s.trim();
        let hex = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"));
        match hex {
            Some(h) if h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                // Any case: a wrong EIP-55 checksum is not an error on input.
                h.parse::<EthAddress>()
                    .map(Address)
                    .map_err(|e| InputValueError::custom(format!("bad address {t}: {e}")))
            }
            _ => Err(InputValueError::custom(format!("bad address {t:?}: expected 0x and 40 hex digits"))),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_checksum(None))
    }
}

/// An unsigned integer of up to 256 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BigInt(pub U256);

impl BigInt {
    /// From a u64.
    pub fn from_u64(v: u64) -> Self {
        BigInt(U256::from(v))
    }

    /// As a u64 (ids), or an error naming `what`.
    pub fn as_u64(&self, what: &str) -> async_graphql::Result<u64> {
        u64::try_from(self.0).map_err(|_| async_graphql::Error::new(format!("{what} {} is out of range", self.0)))
    }
}

/// An unsigned integer of up to 256 bits as a decimal string (wei amounts, job and session
/// ids). Input also accepts a JSON integer.
#[Scalar(name = "BigInt")]
impl ScalarType for BigInt {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => {
                let t = s.trim();
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(InputValueError::custom(format!("bad integer {t:?}: expected decimal digits")));
                }
                U256::from_str_radix(t, 10)
                    .map(BigInt)
                    .map_err(|_| InputValueError::custom(format!("integer {t} does not fit in 256 bits")))
            }
            Value::Number(n) => match n.as_u64() {
                Some(v) => Ok(BigInt(U256::from(v))),
                None => Err(InputValueError::custom(format!("bad integer {n}: expected a non-negative whole number"))),
            },
            _ => Err(InputValueError::custom("an integer is a decimal string or a number")),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

/// 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes32(pub B256);

/// 32 bytes as 0x and 64 lowercase hex digits (hashes, model ids).
#[Scalar(name = "Bytes32")]
impl ScalarType for Bytes32 {
    fn parse(value: Value) -> InputValueResult<Self> {
        let Value::String(s) = &value else {
            return Err(InputValueError::custom("32 bytes are a string: 0x and 64 hex digits"));
        };
        let t = s.trim();
        match t.strip_prefix("0x") {
            Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                h.parse::<B256>().map(Bytes32).map_err(|e| InputValueError::custom(format!("bad bytes32 {t}: {e}")))
            }
            _ => Err(InputValueError::custom(format!("bad bytes32 {t:?}: expected 0x and 64 hex digits"))),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(format!("{:#x}", self.0))
    }
}

/// Unix seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

/// Unix time in seconds (block timestamps), as an Int.
#[Scalar(name = "Timestamp")]
impl ScalarType for Timestamp {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::Number(n) => n
                .as_u64()
                .map(Timestamp)
                .ok_or_else(|| InputValueError::custom(format!("bad timestamp {n}: expected unix seconds"))),
            _ => Err(InputValueError::custom("a timestamp is an Int of unix seconds")),
        }
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.into())
    }
}

/// Optional wrappers used by the object types.
pub fn ts(v: Option<u64>) -> Option<Timestamp> {
    v.map(Timestamp)
}

/// Optional amount.
pub fn big(v: Option<U256>) -> Option<BigInt> {
    v.map(BigInt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_any_case_in_checksummed_out() {
        let lower = Address::parse(Value::String("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed".into())).unwrap();
        assert_eq!(lower.to_value(), Value::String("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into()));
        assert!(Address::parse(Value::String("0x5aae".into())).is_err());
        assert!(Address::parse(Value::String("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed".into())).is_err());
        assert!(Address::parse(Value::Number(5.into())).is_err());
    }

    #[test]
    fn bigints_from_strings_and_numbers() {
        assert_eq!(BigInt::parse(Value::String("42".into())).unwrap(), BigInt::from_u64(42));
        assert_eq!(BigInt::parse(Value::Number(42.into())).unwrap(), BigInt::from_u64(42));
        assert!(BigInt::parse(Value::String("-1".into())).is_err());
        assert!(BigInt::parse(Value::String("1e18".into())).is_err());
        assert!(BigInt::parse(Value::Number((-1).into())).is_err());
        let max = U256::MAX.to_string();
        assert_eq!(BigInt::parse(Value::String(max.clone())).unwrap().to_value(), Value::String(max));
    }
}
