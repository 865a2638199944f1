//! Clustering diagnostics for the EM mixture (docs/algorithms.md, "our additions"): purity and the
//! adjusted Rand index (Hubert & Arabie 1985) of the recovered user assignment against the true
//! groups, and the cluster → group matching used to compare each mixture model with its group.

/// Contingency table `[clusters][groups]` of two labelings of the same items.
pub fn contingency(pred: &[usize], truth: &[usize]) -> Vec<Vec<usize>> {
    let k = pred.iter().max().map_or(0, |m| m + 1);
    let g = truth.iter().max().map_or(0, |m| m + 1);
    let mut t = vec![vec![0usize; g]; k];
    for (&p, &y) in pred.iter().zip(truth) {
        t[p][y] += 1;
    }
    t
}

/// Purity: the fraction of items whose cluster's majority group is their own group.
pub fn purity(pred: &[usize], truth: &[usize]) -> f64 {
    if pred.is_empty() {
        return f64::NAN;
    }
    let t = contingency(pred, truth);
    t.iter()
        .map(|row| row.iter().copied().max().unwrap_or(0))
        .sum::<usize>() as f64
        / pred.len() as f64
}

fn choose2(n: usize) -> f64 {
    (n as f64) * (n as f64 - 1.0) / 2.0
}

/// Adjusted Rand index: 1 for identical partitions (up to relabelling), ≈ 0 for random ones.
/// When both labelings put everything in one cluster (or every item alone) the index is 0/0;
/// we return 1 if the partitions are identical and 0 otherwise.
pub fn ari(pred: &[usize], truth: &[usize]) -> f64 {
    let n = pred.len();
    if n < 2 {
        return 1.0;
    }
    let t = contingency(pred, truth);
    let index: f64 = t.iter().flatten().map(|&c| choose2(c)).sum();
    let a: f64 = t.iter().map(|r| choose2(r.iter().sum())).sum();
    let g = t.first().map_or(0, |r| r.len());
    let b: f64 = (0..g).map(|j| choose2(t.iter().map(|r| r[j]).sum())).sum();
    let expected = a * b / choose2(n);
    let max = 0.5 * (a + b);
    if (max - expected).abs() < 1e-12 {
        return if (index - expected).abs() < 1e-12 {
            1.0
        } else {
            0.0
        };
    }
    (index - expected) / (max - expected)
}

/// For each true group, the cluster that best represents it: the one-to-one matching that
/// maximises the number of agreeing items (exhaustive over permutations for up to 7 clusters,
/// greedy beyond). A group left without a cluster (more groups than clusters) gets `None`.
pub fn match_groups(
    pred: &[usize],
    truth: &[usize],
    k: usize,
    groups: usize,
) -> Vec<Option<usize>> {
    let mut t = vec![vec![0usize; groups]; k];
    for (&p, &y) in pred.iter().zip(truth) {
        t[p][y] += 1;
    }
    let mut best: (usize, Vec<Option<usize>>) = (0, vec![None; groups]);
    if k <= 7 && groups <= 7 {
        // Assign clusters to groups: try every injective map of groups into clusters.
        fn rec(
            g: usize,
            used: &mut Vec<bool>,
            cur: &mut Vec<Option<usize>>,
            score: usize,
            t: &[Vec<usize>],
            best: &mut (usize, Vec<Option<usize>>),
        ) {
            if g == cur.len() {
                if score > best.0 || best.1.iter().all(|x| x.is_none()) {
                    *best = (score, cur.clone());
                }
                return;
            }
            let mut any = false;
            for c in 0..used.len() {
                if !used[c] {
                    any = true;
                    used[c] = true;
                    cur[g] = Some(c);
                    rec(g + 1, used, cur, score + t[c][g], t, best);
                    used[c] = false;
                }
            }
            if !any {
                cur[g] = None;
                rec(g + 1, used, cur, score, t, best);
            }
        }
        rec(
            0,
            &mut vec![false; k],
            &mut vec![None; groups],
            0,
            &t,
            &mut best,
        );
        return best.1;
    }
    let mut used = vec![false; k];
    let mut out = vec![None; groups];
    let mut cells: Vec<(usize, usize, usize)> = (0..k)
        .flat_map(|c| (0..groups).map(move |g| (c, g, 0)))
        .map(|(c, g, _)| (c, g, t[c][g]))
        .collect();
    cells.sort_by_key(|c| std::cmp::Reverse(c.2));
    for (c, g, _) in cells {
        if !used[c] && out[g].is_none() {
            used[c] = true;
            out[g] = Some(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_partitions() {
        let truth = [0, 0, 0, 1, 1, 1];
        // Identical up to relabelling.
        assert!((ari(&[1, 1, 1, 0, 0, 0], &truth) - 1.0).abs() < 1e-12);
        assert!((purity(&[1, 1, 1, 0, 0, 0], &truth) - 1.0).abs() < 1e-12);
        // Hand-computed: pred {0,1,2} {3,4} {5} vs truth: index 3+1 = 4, a = 3+1 = 4, b = 6,
        // expected 4·6/15 = 1.6, max 5 → ARI = 2.4 / 3.4.
        let p = [0, 0, 0, 1, 1, 2];
        assert!((ari(&p, &truth) - 2.4 / 3.4).abs() < 1e-12);
        assert!((purity(&p, &truth) - 1.0).abs() < 1e-12);
        // Everyone in one cluster: ARI 0, purity = majority share.
        assert_eq!(ari(&[0; 6], &truth), 0.0);
        assert!((purity(&[0, 0, 0, 0, 0, 0], &[0, 0, 0, 0, 1, 1]) - 4.0 / 6.0).abs() < 1e-12);
        // A split that is orthogonal to the truth has a negative ARI.
        assert!(ari(&[0, 1, 0, 1, 0, 1], &truth) < 0.0);
    }

    #[test]
    fn matching_is_one_to_one() {
        let truth = [0, 0, 0, 1, 1];
        assert_eq!(
            match_groups(&[1, 1, 1, 0, 0], &truth, 2, 2),
            vec![Some(1), Some(0)]
        );
        // Three clusters for two groups: the two best clusters are used.
        assert_eq!(
            match_groups(&[2, 2, 0, 1, 1], &truth, 3, 2),
            vec![Some(2), Some(1)]
        );
        // One cluster for two groups: the majority gets it.
        assert_eq!(match_groups(&[0; 5], &truth, 1, 2), vec![Some(0), None]);
    }
}
