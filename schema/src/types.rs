//! Domain types shared by every service: job and session states in the contract's order, model
//! ids, and exact LCAI amounts (never floats).

use std::fmt;
use std::str::FromStr;

use alloy::primitives::{B256, U256, keccak256};
use serde::{Deserialize, Serialize};

/// The on-chain `JobState` enum, in the contract's order (the discriminant is the ABI value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum JobState {
    /// Submitted by the consumer, waiting for the worker's acknowledgement.
    Submitted = 0,
    /// Acknowledged by the worker, waiting for completion.
    Acknowledged = 1,
    /// Completed; releasable once the dispute window has passed.
    Completed = 2,
    /// Timed out (claimTimeout) or settled without fault (settleStuckJob); terminal.
    TimedOut = 3,
    /// Disputed inside the window, waiting for the disputer's verdict.
    Disputed = 4,
    /// The disputer ruled; releasable when not guilty and escrow is left.
    Resolved = 5,
    /// Released: the fee was split and the worker's share credited; terminal.
    Released = 6,
}

impl JobState {
    /// All states in contract order.
    pub const ALL: [JobState; 7] = [
        JobState::Submitted,
        JobState::Acknowledged,
        JobState::Completed,
        JobState::TimedOut,
        JobState::Disputed,
        JobState::Resolved,
        JobState::Released,
    ];

    /// The state for an ABI value, or `None` for a value the contract does not define.
    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.get(usize::from(value)).copied()
    }

    /// Parses the store's spelling (`as_str`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The name used in the store, the API and JSON output (`SUBMITTED`, `TIMED_OUT`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Submitted => "SUBMITTED",
            JobState::Acknowledged => "ACKNOWLEDGED",
            JobState::Completed => "COMPLETED",
            JobState::TimedOut => "TIMED_OUT",
            JobState::Disputed => "DISPUTED",
            JobState::Resolved => "RESOLVED",
            JobState::Released => "RELEASED",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The on-chain `SessionStatus` enum, in the contract's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum SessionStatus {
    /// Open for new jobs.
    Active = 0,
    /// Being moved to another worker.
    Reassigning = 1,
    /// Closed by its user.
    Closed = 2,
}

impl SessionStatus {
    /// All statuses in contract order.
    pub const ALL: [SessionStatus; 3] = [SessionStatus::Active, SessionStatus::Reassigning, SessionStatus::Closed];

    /// The status for an ABI value.
    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.get(usize::from(value)).copied()
    }

    /// Parses the store's spelling (`as_str`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The name used in the store, the API and JSON output (`ACTIVE`, `REASSIGNING`, `CLOSED`).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "ACTIVE",
            SessionStatus::Reassigning => "REASSIGNING",
            SessionStatus::Closed => "CLOSED",
        }
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model id: `bytes32` on chain, `keccak256(name)` for a named model (as upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelId(pub B256);

impl ModelId {
    /// The id of a model name: `keccak256(name)`.
    pub fn from_name(name: &str) -> Self {
        ModelId(keccak256(name.as_bytes()))
    }

    /// Parses `0x` + 64 hex digits as a raw id, anything else as a model name.
    pub fn parse(input: &str) -> Result<Self, ModelIdError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(ModelIdError::Empty);
        }
        if let Some(hex) = trimmed.strip_prefix("0x") {
            if hex.len() == 64 {
                return B256::from_str(trimmed).map(ModelId).map_err(|_| ModelIdError::BadHex(trimmed.to_owned()));
            }
            return Err(ModelIdError::BadHex(trimmed.to_owned()));
        }
        Ok(Self::from_name(trimmed))
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a model id could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelIdError {
    /// Nothing was given.
    #[error("empty model name; give a name such as gemma3-270m or a 0x-prefixed bytes32 id")]
    Empty,
    /// Started with 0x but is not 32 bytes of hex.
    #[error("`{0}` is not a bytes32 model id (0x followed by 64 hex digits); a model name has no 0x prefix")]
    BadHex(String),
}

/// Wei per LCAI (18 decimals, like ether).
pub const WEI_PER_LCAI: u128 = 1_000_000_000_000_000_000;

/// An exact amount of LCAI in wei.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Lcai(pub U256);

impl Lcai {
    /// Zero LCAI.
    pub const ZERO: Lcai = Lcai(U256::ZERO);

    /// The amount in wei.
    pub fn wei(self) -> U256 {
        self.0
    }

    /// Whole LCAI.
    pub fn from_lcai(lcai: u64) -> Self {
        Lcai(U256::from(lcai) * U256::from(WEI_PER_LCAI))
    }

    /// Parses a decimal LCAI amount with at most 18 decimals (`"5000"`, `"0.25"`). Rejects
    /// negative numbers, exponents, hex, units and empty input with an error that says why.
    pub fn parse(input: &str) -> Result<Self, AmountError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(AmountError::Empty);
        }
        if s.starts_with('-') {
            return Err(AmountError::Negative(s.to_owned()));
        }
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, f),
            None => (s, ""),
        };
        let digits_only = |p: &str| p.chars().all(|c| c.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !digits_only(whole) || !digits_only(frac) {
            return Err(AmountError::NotDecimal(s.to_owned()));
        }
        if frac.len() > 18 {
            return Err(AmountError::TooPrecise(s.to_owned()));
        }
        let whole = if whole.is_empty() { "0" } else { whole };
        let whole = U256::from_str_radix(whole, 10).map_err(|_| AmountError::TooLarge(s.to_owned()))?;
        let mut frac_padded = frac.to_owned();
        frac_padded.extend(std::iter::repeat_n('0', 18 - frac.len()));
        let frac = U256::from_str_radix(&frac_padded, 10).map_err(|_| AmountError::NotDecimal(s.to_owned()))?;
        whole
            .checked_mul(U256::from(WEI_PER_LCAI))
            .and_then(|w| w.checked_add(frac))
            .map(Lcai)
            .ok_or_else(|| AmountError::TooLarge(s.to_owned()))
    }
}

impl fmt::Display for Lcai {
    /// Exact decimal LCAI with trailing zeros trimmed (`5000`, `0.25`, `0.000000000000000001`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = U256::from(WEI_PER_LCAI);
        let whole = self.0 / unit;
        let frac = self.0 % unit;
        if frac.is_zero() {
            write!(f, "{whole}")
        } else {
            let frac = format!("{:0>18}", frac.to_string());
            write!(f, "{whole}.{}", frac.trim_end_matches('0'))
        }
    }
}

/// Why an LCAI amount could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AmountError {
    /// Nothing was given.
    #[error("empty amount; give a decimal LCAI amount such as 5000 or 0.25")]
    Empty,
    /// A minus sign.
    #[error("amount `{0}` is negative; give a positive decimal LCAI amount")]
    Negative(String),
    /// Not plain decimal digits (exponent, hex, units, spaces ...).
    #[error(
        "amount `{0}` is not a plain decimal LCAI amount (digits with an optional `.`, no units, exponents or hex)"
    )]
    NotDecimal(String),
    /// More than 18 decimals.
    #[error("amount `{0}` has more than 18 decimals; LCAI has 18")]
    TooPrecise(String),
    /// Does not fit 256 bits of wei.
    #[error("amount `{0}` is too large")]
    TooLarge(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_state_round_trips_contract_order() {
        for (i, s) in JobState::ALL.iter().enumerate() {
            assert_eq!(JobState::from_u8(i as u8), Some(*s));
            assert_eq!(*s as u8, i as u8);
        }
        assert_eq!(JobState::from_u8(7), None);
        assert_eq!(JobState::TimedOut.as_str(), "TIMED_OUT");
    }

    #[test]
    fn states_and_statuses_parse_only_their_own_spelling() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str(), "JSON and the store spell it alike");
        }
        for (i, s) in SessionStatus::ALL.into_iter().enumerate() {
            assert_eq!(SessionStatus::from_u8(i as u8), Some(s));
            assert_eq!(SessionStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str(), "JSON and the store spell it alike");
        }
        assert_eq!(SessionStatus::from_u8(3), None);
        assert_eq!(JobState::parse("released"), None);
        assert_eq!(SessionStatus::parse("Active"), None);
    }

    #[test]
    fn model_id_is_keccak_of_name_or_raw_hex() {
        let id = ModelId::parse("gemma3-270m").unwrap();
        assert_eq!(id.0, keccak256(b"gemma3-270m"));
        let raw = ModelId::parse(&id.to_string()).unwrap();
        assert_eq!(raw, id);
        assert!(matches!(ModelId::parse("0x1234"), Err(ModelIdError::BadHex(_))));
        assert_eq!(ModelId::parse("  "), Err(ModelIdError::Empty));
    }

    #[test]
    fn parses_decimal_lcai_exactly() {
        assert_eq!(Lcai::parse("5000").unwrap(), Lcai::from_lcai(5000));
        assert_eq!(Lcai::parse("0.25").unwrap().wei(), U256::from(250_000_000_000_000_000u128));
        assert_eq!(Lcai::parse(".5").unwrap().wei(), U256::from(500_000_000_000_000_000u128));
        assert_eq!(Lcai::parse("0.000000000000000001").unwrap().wei(), U256::from(1));
    }

    #[test]
    fn rejects_bad_amounts_with_reasons() {
        assert_eq!(Lcai::parse(""), Err(AmountError::Empty));
        assert!(matches!(Lcai::parse("-1"), Err(AmountError::Negative(_))));
        assert!(matches!(Lcai::parse("1e18"), Err(AmountError::NotDecimal(_))));
        assert!(matches!(Lcai::parse("0x10"), Err(AmountError::NotDecimal(_))));
        assert!(matches!(Lcai::parse("5 LCAI"), Err(AmountError::NotDecimal(_))));
        assert!(matches!(Lcai::parse("."), Err(AmountError::NotDecimal(_))));
        assert!(matches!(Lcai::parse("0.0000000000000000001"), Err(AmountError::TooPrecise(_))));
        let huge = "9".repeat(90);
        assert!(matches!(Lcai::parse(&huge), Err(AmountError::TooLarge(_))));
    }

    #[test]
    fn formats_lcai_trimmed_and_exact() {
        assert_eq!(Lcai::from_lcai(5000).to_string(), "5000");
        assert_eq!(Lcai::parse("0.25").unwrap().to_string(), "0.25");
        assert_eq!(Lcai(U256::from(1)).to_string(), "0.000000000000000001");
        assert_eq!(Lcai::ZERO.to_string(), "0");
    }
}
