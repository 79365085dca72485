//! Fee ceilings: the most a transaction may pay per unit of gas and of blob gas.
//!
//! Every fee lcw signs is at or under a [`FeeCap`]. The operator sets one for the key
//! (`--max-fee-per-gas`, `--max-fee-per-blob-gas`); each transaction then gets the lower of that
//! and what the transaction is worth (a keeper's release never pays more gas than its bounty, an
//! ack never more than the stake it protects), see [`FeeCap::at_most_worth`].
//!
//! Worths, gas limits and caps come from chain state and the operator's flags: arithmetic here
//! saturates or is checked, never overflows (a panic in a debug build, a wrapped value in a release
//! one). Clippy holds the module to it (`arithmetic_side_effects`, `cast_possible_truncation`); the
//! lint is per module, for the modules that compute money and time from outside values, because
//! across the workspace it would mostly flag counters and lengths the process made itself.
#![warn(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]

use std::fmt;

/// One gwei in wei.
pub const GWEI: u128 = 1_000_000_000;
/// The default ceiling per gas: the official worker's `MAX_GAS_PRICE` default.
pub const DEFAULT_MAX_FEE_PER_GAS: u128 = 100 * GWEI;
/// The default ceiling per blob gas.
pub const DEFAULT_MAX_FEE_PER_BLOB_GAS: u128 = 100 * GWEI;

/// The most a transaction may pay: `maxFeePerGas` and `maxFeePerBlobGas` never exceed these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeCap {
    /// Ceiling of `maxFeePerGas` (wei per gas).
    pub per_gas: u128,
    /// Ceiling of `maxFeePerBlobGas` (wei per blob gas).
    pub per_blob_gas: u128,
}

impl Default for FeeCap {
    fn default() -> Self {
        FeeCap { per_gas: DEFAULT_MAX_FEE_PER_GAS, per_blob_gas: DEFAULT_MAX_FEE_PER_BLOB_GAS }
    }
}

impl FeeCap {
    /// No ceiling beyond the operator's: for transactions whose worth is not measured in wei.
    pub fn new(per_gas: u128, per_blob_gas: u128) -> Self {
        FeeCap { per_gas, per_blob_gas }
    }

    /// This cap lowered so that `gas_limit` gas (and `blob_gas` blob gas, spent first from the
    /// same budget at the blob ceiling) never costs more than `worth` wei in total.
    ///
    /// A blob transaction's budget goes to its blob first, at up to the blob ceiling, and the rest
    /// bounds the gas; when the blob alone would exceed `worth`, both are split in proportion.
    pub fn at_most_worth(self, worth: u128, gas_limit: u64, blob_gas: u64) -> FeeCap {
        // Neither divisor is zero (the gas limit counts as at least 1, a blob gas of 0 returns
        // first); `per` spells that out for the lint.
        let per = |wei: u128, gas: u128| wei.checked_div(gas).unwrap_or(wei);
        let gas = u128::from(gas_limit.max(1));
        if blob_gas == 0 {
            return FeeCap { per_gas: self.per_gas.min(per(worth, gas)), per_blob_gas: self.per_blob_gas };
        }
        let blob_gas = u128::from(blob_gas);
        let blob_cost = self.per_blob_gas.saturating_mul(blob_gas);
        let half = worth / 2;
        if blob_cost <= half {
            let rest = worth.saturating_sub(blob_cost);
            return FeeCap { per_gas: self.per_gas.min(per(rest, gas)), per_blob_gas: self.per_blob_gas };
        }
        // Half the worth for each: neither part can starve the other.
        FeeCap { per_gas: self.per_gas.min(per(half, gas)), per_blob_gas: self.per_blob_gas.min(per(half, blob_gas)) }
    }

    /// The most `gas_limit` gas and `blob_gas` blob gas can cost under this cap.
    pub fn max_cost(self, gas_limit: u64, blob_gas: u64) -> u128 {
        self.per_gas
            .saturating_mul(u128::from(gas_limit))
            .saturating_add(self.per_blob_gas.saturating_mul(u128::from(blob_gas)))
    }
}

impl fmt::Display for FeeCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} per gas, {} per blob gas", Wei(self.per_gas), Wei(self.per_blob_gas))
    }
}

/// A fee in wei, shown in gwei when it is a whole or simple number of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wei(pub u128);

impl fmt::Display for Wei {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / GWEI, self.0 % GWEI);
        if self.0 >= GWEI / 1000 && frac % 1_000_000 == 0 {
            if frac == 0 {
                return write!(f, "{whole} gwei");
            }
            let frac = format!("{:03}", frac / 1_000_000);
            return write!(f, "{whole}.{} gwei", frac.trim_end_matches('0'));
        }
        write!(f, "{} wei", self.0)
    }
}

/// Parses a fee per gas: decimal wei (`100000000000`, as the official worker's `MAX_GAS_PRICE`),
/// or a number with a unit (`100gwei`, `1.5 gwei`, `7wei`).
pub fn parse_fee(text: &str) -> Result<u128, String> {
    let t = text.trim().to_ascii_lowercase().replace('_', "");
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (t[..i].trim(), t[i..].trim()),
        None => (t.as_str(), "wei"),
    };
    let scale: u128 = match unit {
        "wei" => 1,
        "gwei" => GWEI,
        _ => return Err(format!("`{text}`: unknown unit `{unit}`; write wei (`100000000000`) or gwei (`100gwei`)")),
    };
    let bad = || format!("`{text}` is not a fee; write wei (`100000000000`) or gwei (`100gwei`, `0.5gwei`)");
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let digits = scale.ilog10() as usize;
    if frac.len() > digits {
        return Err(format!("`{text}` is finer than one wei"));
    }
    let too_large = || format!("`{text}` is too large");
    // Digits only from here: a failed parse is an overflow.
    let int: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| too_large())? };
    let frac: u128 = if frac.is_empty() { 0 } else { format!("{frac:0<digits$}").parse().map_err(|_| too_large())? };
    int.checked_mul(scale).and_then(|v| v.checked_add(frac)).ok_or_else(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fees_parse_in_wei_or_gwei() {
        assert_eq!(parse_fee("100000000000"), Ok(100 * GWEI));
        assert_eq!(parse_fee("100gwei"), Ok(100 * GWEI));
        assert_eq!(parse_fee(" 1.5 GWEI "), Ok(1_500_000_000));
        assert_eq!(parse_fee("0.000000001gwei"), Ok(1));
        assert_eq!(parse_fee("7wei"), Ok(7));
        assert!(parse_fee("1.5").unwrap_err().contains("finer than one wei"));
        assert!(parse_fee("100 eth").unwrap_err().contains("unknown unit"));
        assert!(parse_fee("gwei").unwrap_err().contains("not a fee"));
        assert!(parse_fee("-1gwei").unwrap_err().contains("not a fee"));
        assert!(parse_fee("999999999999999999999999999999999999999999gwei").unwrap_err().contains("too large"));
    }

    #[test]
    fn fees_show_in_gwei_when_they_can() {
        assert_eq!(Wei(100 * GWEI).to_string(), "100 gwei");
        assert_eq!(Wei(1_500_000_000).to_string(), "1.5 gwei");
        assert_eq!(Wei(7).to_string(), "7 wei");
        assert_eq!(FeeCap::default().to_string(), "100 gwei per gas, 100 gwei per blob gas");
    }

    #[test]
    fn a_cap_never_lets_a_transaction_cost_more_than_it_is_worth() {
        let cap = FeeCap::new(100 * GWEI, 100 * GWEI);
        // A release of 0.006 LCAI of bounties with 150,000 gas: 40 gwei per gas at most.
        let c = cap.at_most_worth(6_000_000_000_000_000, 150_000, 0);
        assert_eq!(c.per_gas, 40 * GWEI);
        assert!(c.max_cost(150_000, 0) <= 6_000_000_000_000_000);
        // Worth more than the operator's cap allows: the operator's cap binds.
        assert_eq!(cap.at_most_worth(u128::MAX, 150_000, 0), cap);
        // A blob transaction: the blob's full cost fits in half, the rest bounds the gas.
        let c = cap.at_most_worth(10u128.pow(18), 100_000, 131_072);
        assert_eq!(c.per_blob_gas, 100 * GWEI);
        assert!(c.max_cost(100_000, 131_072) <= 10u128.pow(18));
        // A blob that alone would exceed the worth: both halves bounded.
        let c = cap.at_most_worth(10u128.pow(15), 100_000, 131_072);
        assert!(c.max_cost(100_000, 131_072) <= 10u128.pow(15));
        assert!(c.per_gas > 0 && c.per_blob_gas > 0);
        // Nothing to protect: nothing may be paid.
        assert_eq!(cap.at_most_worth(0, 21_000, 0).per_gas, 0);
    }

    #[test]
    fn caps_at_the_ends_of_the_ranges_neither_panic_nor_overpay() {
        let top = FeeCap::new(u128::MAX, u128::MAX);
        for (worth, gas, blob_gas) in [
            (u128::MAX, u64::MAX, u64::MAX),
            (u128::MAX, 0, 0),
            (u128::MAX, 0, u64::MAX),
            (0, 0, u64::MAX),
            (0, u64::MAX, 0),
            (1, 1, 1),
        ] {
            let c = top.at_most_worth(worth, gas, blob_gas);
            assert!(c.max_cost(gas, blob_gas) <= worth, "worth {worth}, gas {gas}, blob gas {blob_gas}: {c:?}");
        }
        // A zero gas limit counts as one gas: the worth is the most per gas.
        assert_eq!(top.at_most_worth(7, 0, 0).per_gas, 7);
        assert_eq!(top.max_cost(u64::MAX, u64::MAX), u128::MAX, "saturates");
    }
}
