//! Rollout planning: which nodes run in which batch.

use crate::taskbook::Batch;

/// Splits `total` nodes into batch sizes following the ramp; the last size repeats.
/// An empty ramp means one batch of everything.
pub fn plan_batches(total: usize, batch: &Batch) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut remaining = total;
    let mut step = 0;
    while remaining > 0 {
        let size = match batch.0.get(step).or(batch.0.last()) {
            Some(size) => size.of(total),
            None => total,
        };
        let size = size.clamp(1, remaining);
        sizes.push(size);
        remaining -= size;
        step += 1;
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taskbook::BatchSize::{Count, Percent};

    #[test]
    fn counts_percentages_and_ramps() {
        assert_eq!(plan_batches(5, &Batch(vec![Count(2)])), vec![2, 2, 1]);
        assert_eq!(
            plan_batches(10, &Batch(vec![Percent(25.0)])),
            vec![3, 3, 3, 1]
        );
        assert_eq!(
            plan_batches(20, &Batch(vec![Count(1), Count(5), Percent(50.0)])),
            vec![1, 5, 10, 4]
        );
        assert_eq!(plan_batches(4, &Batch::default()), vec![4]);
        assert_eq!(plan_batches(0, &Batch(vec![Count(2)])), Vec::<usize>::new());
    }
}
