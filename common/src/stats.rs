//! The one percentile definition every benchmark and report uses: nearest rank (the smallest
//! value with at least a fraction `p` of all values at or below it), so that a p99 here means
//! the same in every table, ours and the peers'.

/// The `p`-th percentile (`0.0..=1.0`) of `sorted` (ascending) by nearest rank; `None` if empty.
/// The median is `percentile(sorted, 0.5)` (the lower middle of an even count).
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() as f64 * p.clamp(0.0, 1.0)).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// [`percentile`] of a sample in `f64`, NaN when there is none (how the benchmarks print it).
pub fn percentile_f64(sorted: &[f64], p: f64) -> f64 {
    percentile(sorted, p).unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nearest_rank_on_known_sets() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&v, 1.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[1, 2, 3, 4], 0.5), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4, 5], 0.5), Some(3));
        assert_eq!(percentile::<u8>(&[], 0.5), None);
        assert!(percentile_f64(&[], 0.5).is_nan());
        assert_eq!(percentile_f64(&[1.0, 2.0], 0.99), 2.0);
    }

    proptest! {
        #[test]
        fn at_least_p_of_the_values_are_at_or_below_it(
            mut v in proptest::collection::vec(0u32..1000, 1..200),
            p in 0.0f64..=1.0,
        ) {
            v.sort_unstable();
            let x = percentile(&v, p).unwrap();
            let at_or_below = v.iter().filter(|y| **y <= x).count();
            prop_assert!(at_or_below as f64 >= p * v.len() as f64 - 1e-9);
            // ... and it is the smallest such value.
            let below = v.iter().filter(|y| **y < x).count();
            prop_assert!((below as f64) < p * v.len() as f64 || below == 0);
        }
    }
}
