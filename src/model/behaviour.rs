//! Discrete batch-constrained Q-learning (BCQ, Fujimoto et al. 2019,
//! <https://arxiv.org/abs/1910.01708>): a behaviour-cloning head beside the Q head estimates how
//! likely the data's policy was to take each bin in this state (given the bins of the earlier
//! dimensions), and only bins it finds likely enough may win an argmax, in Bellman targets and at
//! inference alike. Q then ranks the actions the data actually took here, instead of trusting its
//! guesses about bins it has rarely seen taken in states like this one.

use candle_core::{Result, Tensor, D};

/// What a filtered-out bin's logit drops by: far below any trained Q logit, still finite.
pub const FILTERED_DROP: f64 = 1e4;

/// Q logits with the bins the behaviour policy rules out dropped by [`FILTERED_DROP`].
///
/// - `q`, `behaviour`: [B, T, bins] logits of the Q and behaviour heads;
/// - `supported`: [T, bins], 1 where the dimension of position t may take the bin (the behaviour
///   softmax runs over these only);
/// - a bin is kept where `p(bin) >= threshold * max p`, which keeps the most likely supported bin
///   of every row.
pub fn filter_q(q: &Tensor, behaviour: &Tensor, supported: &Tensor, threshold: f64) -> Result<Tensor> {
    let unsupported = supported.affine(FILTERED_DROP, -FILTERED_DROP)?; // 0 or -1e4
    let log_p = candle_nn::ops::log_softmax(&behaviour.broadcast_add(&unsupported)?, D::Minus1)?;
    // log p - max log p >= ln(threshold)
    let margin = log_p.broadcast_sub(&log_p.max_keepdim(D::Minus1)?)?;
    let keep = margin.ge(threshold.ln())?.to_dtype(q.dtype())?;
    q + keep.affine(FILTERED_DROP, -FILTERED_DROP)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn argmax(row: &[f32]) -> usize {
        row.iter().enumerate().fold(0, |best, (i, &x)| if x > row[best] { i } else { best })
    }

    #[test]
    fn the_best_q_among_likely_bins_wins() {
        let dev = Device::Cpu;
        // Bin 0 has the highest Q but the behaviour policy took it e^-2 = 0.14 times as often as
        // its favourite, bin 1; bin 3 is likely but unsupported.
        let q = Tensor::new(&[[[5.0f32, 1.0, 0.5, 9.0]]], &dev).unwrap();
        let behaviour = Tensor::new(&[[[0.0f32, 2.0, 1.9, 8.0]]], &dev).unwrap();
        let supported = Tensor::new(&[[1.0f32, 1.0, 1.0, 0.0]], &dev).unwrap();
        let strict = filter_q(&q, &behaviour, &supported, 0.3).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(argmax(&strict), 1, "{strict:?}");
        assert_eq!(&strict[1..3], &[1.0, 0.5], "kept bins keep their logits");
        assert!(strict[0] < -9000.0 && strict[3] < -9000.0, "{strict:?}");
        // A looser threshold lets bin 0 back in.
        let loose = filter_q(&q, &behaviour, &supported, 0.1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(argmax(&loose), 0, "{loose:?}");
    }

    #[test]
    fn every_row_keeps_its_likeliest_bin() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (3, 2, 8), &dev).unwrap();
        let behaviour = (Tensor::randn(0f32, 1.0, (3, 2, 8), &dev).unwrap() * 20.0).unwrap();
        let supported = Tensor::ones((2, 8), candle_core::DType::F32, &dev).unwrap();
        let kept = filter_q(&q, &behaviour, &supported, 1.0).unwrap().ge(-100.0).unwrap();
        let per_row = kept.to_dtype(candle_core::DType::F32).unwrap().sum(D::Minus1).unwrap();
        assert_eq!(per_row.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![1.0; 6]);
    }
}
