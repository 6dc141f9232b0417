//! Which layers are compared: a layer's normalised depth and the layer pairs of `"matched"`
//! and `"all"` (pipelines and `repflow.compare` in Python use the same rules), and of
//! `"named"` (pipelines).

/// Normalised depth of layer `i` of `count`: 0 for the first, 1 for the last (0 for a single
/// layer).
pub fn normalised_depth(i: usize, count: usize) -> f64 {
    if count > 1 {
        i as f64 / (count - 1) as f64
    } else {
        0.0
    }
}

/// The layer pairs `(i, j)` between models of `a` and `b` layers: `all` pairs every layer of
/// A with every layer of B; otherwise each layer of A with the layer of B nearest in
/// normalised depth (the first of two equally near).
pub fn layer_pairs(a: usize, b: usize, all: bool) -> Vec<(usize, usize)> {
    if all {
        return (0..a).flat_map(|i| (0..b).map(move |j| (i, j))).collect();
    }
    (0..a)
        .map(|i| {
            let d = normalised_depth(i, a);
            let j = (0..b)
                .min_by(|&p, &q| {
                    (normalised_depth(p, b) - d)
                        .abs()
                        .total_cmp(&(normalised_depth(q, b) - d).abs())
                })
                .expect("models have layers");
            (i, j)
        })
        .collect()
}

/// The layer pairs `(i, j)` with the same name in both models, in A's order: networks of
/// one architecture whose heads differ (a classifier `fc` against MoCo's `fc.0`, `fc.2`).
pub fn named_pairs(a: &[&str], b: &[&str]) -> Vec<(usize, usize)> {
    a.iter()
        .enumerate()
        .filter_map(|(i, name)| b.iter().position(|n| n == name).map(|j| (i, j)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matched_pairs_follow_depth() {
        assert_eq!(layer_pairs(3, 3, false), vec![(0, 0), (1, 1), (2, 2)]);
        assert_eq!(layer_pairs(3, 5, false), vec![(0, 0), (1, 2), (2, 4)]);
        assert_eq!(layer_pairs(2, 3, true).len(), 6);
        assert_eq!(normalised_depth(0, 1), 0.0);
    }

    #[test]
    fn named_pairs_skip_layers_only_one_model_has() {
        let a = ["conv1", "layer1.0.conv1", "fc"];
        let b = ["conv1", "layer1.0.conv1", "fc.0", "fc.2"];
        assert_eq!(named_pairs(&a, &b), vec![(0, 0), (1, 1)]);
        assert!(named_pairs(&["x"], &["y"]).is_empty());
    }
}
