//! Exact integer splitting: an amount of microjoules shared by weights, so that the parts
//! add up to the whole, to the microjoule.

use crate::units::MicroJoules;

/// Splits `total` in proportion to `weights` into `out` (cleared first, one part per
/// weight). The parts add up to `total` exactly: each gets the floor of its proportional
/// share, and the microjoules left over go one each to the largest remainders, ties to
/// the lower index (so the result is deterministic for a given order of weights).
///
/// With no weight at all (empty, or all zero) every part is zero and `false` is
/// returned: the caller decides where `total` goes.
pub fn split_exact(total: MicroJoules, weights: &[u64], out: &mut Vec<MicroJoules>) -> bool {
    let mut parts = Vec::with_capacity(weights.len());
    let shared = split_amount(total.0, weights, &mut parts);
    out.clear();
    out.extend(parts.into_iter().map(MicroJoules));
    shared
}

/// [`split_exact`] for any integer amount (micrograms of CO2e, for instance).
pub fn split_amount(total: u64, weights: &[u64], out: &mut Vec<u64>) -> bool {
    out.clear();
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if sum == 0 {
        out.resize(weights.len(), 0);
        return false;
    }
    let t = u128::from(total);
    let mut given: u128 = 0;
    // Remainders, to hand out the leftover.
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(weights.len());
    for (i, &w) in weights.iter().enumerate() {
        let num = t * u128::from(w);
        let part = num / sum;
        given += part;
        // part <= total, so it fits in u64.
        out.push(u64::try_from(part).unwrap_or(u64::MAX));
        if w > 0 {
            remainders.push((num % sum, i));
        }
    }
    let mut left = t - given; // < number of non-zero weights
    if left > 0 {
        remainders.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in &remainders {
            if left == 0 {
                break;
            }
            out[i] += 1;
            left -= 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn thirds_add_up_and_the_leftover_goes_to_the_largest_remainders() {
        let mut out = Vec::new();
        assert!(split_exact(MicroJoules(100), &[1, 1, 1], &mut out));
        assert_eq!(out, [MicroJoules(34), MicroJoules(33), MicroJoules(33)]);
        split_exact(MicroJoules(10), &[1, 2, 0, 7], &mut out);
        assert_eq!(
            out,
            [
                MicroJoules(1),
                MicroJoules(2),
                MicroJoules(0),
                MicroJoules(7)
            ]
        );
        split_exact(MicroJoules(5), &[3, 3], &mut out);
        assert_eq!(out, [MicroJoules(3), MicroJoules(2)]);
    }

    #[test]
    fn no_weight_gives_nothing_and_says_so() {
        let mut out = Vec::new();
        assert!(!split_exact(MicroJoules(100), &[0, 0], &mut out));
        assert_eq!(out, [MicroJoules::ZERO, MicroJoules::ZERO]);
        assert!(!split_exact(MicroJoules(100), &[], &mut out));
    }

    proptest! {
        #[test]
        fn parts_always_add_up_exactly(total in any::<u64>(), weights in proptest::collection::vec(any::<u64>(), 1..40)) {
            let mut out = Vec::new();
            if split_exact(MicroJoules(total), &weights, &mut out) {
                let sum: u128 = out.iter().map(|p| u128::from(p.0)).sum();
                prop_assert_eq!(sum, u128::from(total));
                // Each part is within one microjoule of its exact share.
                let wsum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
                for (p, &w) in out.iter().zip(&weights) {
                    let exact = u128::from(total) * u128::from(w);
                    let part = u128::from(p.0) * wsum;
                    prop_assert!(part + wsum > exact && part < exact + wsum);
                }
            } else {
                prop_assert!(weights.iter().all(|&w| w == 0));
            }
        }
    }
}
