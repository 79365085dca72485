//! Sortition: when a worker may claim a session request. The same rule as the devnet
//! SessionManager's `_claimDelay` (contracts/src/SessionManager.sol), computed from what the store
//! holds: the hash of the request's block (the seed), the request id, the worker's stake, the
//! minimum stake and AIConfig's claim window.
//!
//! A request made in block `r` can first be claimed in block `r + delay`, where `delay` is in
//! `[1, window]`: a fraction `draw` in `[0, 1)` taken from `keccak256(abi.encode(seed, reqId,
//! worker))` spreads workers over the window, and stake shrinks it (k times the minimum stake, k
//! times earlier). So the set of eligible workers widens block by block until, `window` blocks
//! after the request, it holds every eligible worker. On the real network the formula is not
//! published; there the worker asks `eligibleNow` instead of predicting.

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::sol_types::SolValue;

/// Draws are fractions of this scale.
pub const DRAW_SCALE: u64 = 1_000_000_000_000_000_000;

/// Blocks after the request's block at which `worker` may first claim request `req_id`.
///
/// `seed` is the hash of the request's block (zero when it is out of the EVM's 256-block reach:
/// then everyone may claim at once, as when the window is at most one block). A stake below the
/// minimum (not eligible at all) or a zero minimum weighs as the minimum.
pub fn claim_delay(seed: B256, req_id: U256, worker: Address, stake: U256, min_stake: U256, window: U256) -> u64 {
    if window <= U256::from(1) || seed == B256::ZERO {
        return 1;
    }
    let scale = U256::from(DRAW_SCALE);
    let draw = U256::from_be_bytes(keccak256((seed, req_id, worker).abi_encode()).0) % scale;
    let (min_stake, stake) =
        if min_stake.is_zero() || stake < min_stake { (U256::from(1), U256::from(1)) } else { (min_stake, stake) };
    // The contract computes in uint256 without overflow for any realistic window and stake; the
    // saturating forms keep a hostile AIConfig value from panicking here.
    let numerator = draw.saturating_mul(window - U256::from(1)).saturating_mul(min_stake);
    let delay = U256::from(1).saturating_add(numerator / scale.saturating_mul(stake));
    u64::try_from(delay).unwrap_or(u64::MAX)
}

/// The first block in which a claim by a worker with `delay` succeeds for a request made in
/// `request_block` (the seed exists from the next block on).
pub fn first_claim_block(request_block: u64, delay: u64) -> u64 {
    request_block.saturating_add(delay.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcai(n: u64) -> U256 {
        U256::from(n) * U256::from(DRAW_SCALE)
    }

    fn delays(stake: U256, window: u64) -> Vec<u64> {
        (0..2_000u64)
            .map(|i| {
                let seed = keccak256(i.to_be_bytes());
                claim_delay(seed, U256::from(i), Address::repeat_byte(7), stake, lcai(100), U256::from(window))
            })
            .collect()
    }

    #[test]
    fn a_worker_at_the_minimum_stake_spreads_over_the_whole_window() {
        let d = delays(lcai(100), 10);
        assert!(d.iter().all(|x| (1..=10).contains(x)), "{:?}", d.iter().max());
        for slot in 1..=9 {
            let n = d.iter().filter(|x| **x == slot).count();
            // 2,000 draws over 9 slots (the 10th is reached only by the last sliver): ~222 each.
            assert!((150..300).contains(&n), "slot {slot}: {n}");
        }
    }

    #[test]
    fn more_stake_means_an_earlier_turn() {
        let mean = |d: &[u64]| d.iter().sum::<u64>() as f64 / d.len() as f64;
        let single = mean(&delays(lcai(100), 21));
        let double = mean(&delays(lcai(200), 21));
        let tenfold = delays(lcai(1_000), 21);
        assert!(single > 10.0 && single < 12.0, "{single}");
        assert!(double > 5.0 && double < 7.0, "{double}");
        assert!(tenfold.iter().all(|d| *d <= 3), "{:?}", tenfold.iter().max());
    }

    #[test]
    fn a_missing_seed_or_a_short_window_lets_everyone_claim_in_the_next_block() {
        let w = Address::repeat_byte(1);
        assert_eq!(claim_delay(B256::ZERO, U256::from(1), w, lcai(100), lcai(100), U256::from(50)), 1);
        assert_eq!(claim_delay(B256::repeat_byte(3), U256::from(1), w, lcai(100), lcai(100), U256::from(1)), 1);
        assert_eq!(claim_delay(B256::repeat_byte(3), U256::from(1), w, lcai(100), lcai(100), U256::ZERO), 1);
        assert_eq!(first_claim_block(100, 1), 101);
        assert_eq!(first_claim_block(100, 0), 101);
    }

    #[test]
    fn hostile_parameters_do_not_panic() {
        let w = Address::repeat_byte(1);
        let d = claim_delay(B256::repeat_byte(9), U256::MAX, w, U256::MAX, U256::MAX, U256::MAX);
        assert!(d >= 1);
        let d = claim_delay(B256::repeat_byte(9), U256::from(1), w, U256::from(1), U256::ZERO, U256::MAX);
        assert!(d >= 1);
        assert_eq!(first_claim_block(u64::MAX, 5), u64::MAX);
    }
}
