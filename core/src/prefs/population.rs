//! The population of users (`[population]`, docs/algorithms.md "EM for a mixture of reward models"): K
//! groups, each with a name, a share η(u) and a ground-truth reward; U users, each belonging to
//! exactly one group (users, not pairs, belong to groups, as in the paper), plus held-out users
//! drawn the same way and never seen by training (the held-out split is by user).

use super::group_reward::GroupRewardConfig;
use crate::error::{check, Error, Result};
use crate::rng::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// One group: `[[population.groups]]`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct GroupConfig {
    /// Name used in data files, metrics and reports.
    pub name: String,
    /// Share of users (normalised over all groups, so `4` and `1` mean 80/20).
    pub share: f64,
    /// The group's ground-truth reward (`type = "cart-position"`, … see `maxmin list`).
    pub reward: Box<dyn GroupRewardConfig>,
}

/// `[population]`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PopulationConfig {
    /// The groups (at least one).
    pub groups: Vec<GroupConfig>,
    /// Users whose comparisons train the reward models.
    #[serde(default = "d_users")]
    pub users: usize,
    /// Further users, drawn with the same shares, whose comparisons are only used for held-out
    /// accuracy and likelihood (0 = none: held-out metrics are then skipped).
    #[serde(default = "d_held_out")]
    pub held_out_users: usize,
    /// Comparisons each user labels.
    #[serde(default = "d_comparisons")]
    pub comparisons_per_user: usize,
}

fn d_users() -> usize {
    40
}
fn d_held_out() -> usize {
    20
}
fn d_comparisons() -> usize {
    75
}

impl PopulationConfig {
    /// Check values; keys relative to `[population]`.
    pub fn validate(&self) -> Result<()> {
        check_groups(self.groups.iter().map(|g| (g.name.as_str(), g.share)))?;
        for (i, g) in self.groups.iter().enumerate() {
            g.reward
                .validate()
                .map_err(|e| e.under(&format!("groups.{i}.reward")))?;
        }
        check::positive_usize("users", self.users)?;
        check::positive_usize("comparisons-per-user", self.comparisons_per_user)?;
        Ok(())
    }

    /// Normalised shares η(u).
    pub fn shares(&self) -> Vec<f64> {
        normalised(self.groups.iter().map(|g| g.share))
    }
}

/// The checks every population's `(name, share)` list gets, whatever its groups' reward type
/// (control or text): at least one group; names non-empty, without spaces or '/' (they become
/// metric keys `group/<name>/…` and folder names), each used once; shares finite and > 0. Keys
/// are `groups.<i>.…`, relative to `[population]`.
pub fn check_groups<'a>(groups: impl IntoIterator<Item = (&'a str, f64)>) -> Result<()> {
    let mut seen: Vec<&str> = Vec::new();
    for (i, (name, share)) in groups.into_iter().enumerate() {
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(Error::config(
                format!("groups.{i}.name"),
                format!("expected a non-empty name without spaces or '/', found {name:?}"),
            ));
        }
        if seen.contains(&name) {
            return Err(Error::config(
                format!("groups.{i}.name"),
                format!("group name {name:?} is used twice"),
            ));
        }
        seen.push(name);
        check::positive_f64(&format!("groups.{i}.share"), share)?;
    }
    if seen.is_empty() {
        return Err(Error::config("groups", "expected at least one group"));
    }
    Ok(())
}

/// Shares normalised to sum to 1.
pub fn normalised(shares: impl Iterator<Item = f64> + Clone) -> Vec<f64> {
    let total: f64 = shares.clone().sum();
    shares.map(|s| s / total).collect()
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Id in data files (`u007`, `h003` for held-out users).
    pub id: String,
    /// Index of the user's true group.
    pub group: usize,
}

/// Group sizes for `n` users with `shares` by largest remainder, so 40 users at 80/20 are
/// exactly 32 and 8 (a random draw would make the minority's size itself noisy).
pub fn allocate(n: usize, shares: &[f64]) -> Vec<usize> {
    let raw: Vec<f64> = shares.iter().map(|s| s * n as f64).collect();
    let mut counts: Vec<usize> = raw.iter().map(|r| r.floor() as usize).collect();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| {
        (raw[b] - raw[b].floor())
            .total_cmp(&(raw[a] - raw[a].floor()))
            .then(a.cmp(&b))
    });
    let mut left = n - counts.iter().sum::<usize>();
    for &i in order.iter().cycle().take(shares.len() * 2) {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    counts
}

/// `n` users with ids `<prefix>000…`, groups allocated by share and shuffled by `rng`.
pub fn sample_users(n: usize, shares: &[f64], prefix: &str, rng: &mut Rng) -> Vec<User> {
    let mut groups: Vec<usize> = allocate(n, shares)
        .iter()
        .enumerate()
        .flat_map(|(g, &c)| std::iter::repeat_n(g, c))
        .collect();
    groups.shuffle(rng);
    groups
        .into_iter()
        .enumerate()
        .map(|(i, group)| User {
            id: format!("{prefix}{i:03}"),
            group,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_exact() {
        assert_eq!(allocate(40, &[0.8, 0.2]), vec![32, 8]);
        assert_eq!(allocate(40, &[10.0 / 11.0, 1.0 / 11.0]), vec![36, 4]);
        assert_eq!(allocate(3, &[1.0 / 3.0; 3]), vec![1, 1, 1]);
        assert_eq!(allocate(7, &[0.5, 0.5]).iter().sum::<usize>(), 7);
        let mut rng = crate::rng::stream(1, "t");
        let u = sample_users(10, &[0.5, 0.5], "u", &mut rng);
        assert_eq!(u.iter().filter(|u| u.group == 1).count(), 5);
        assert_eq!(u[3].id, "u003");
    }

    #[test]
    fn group_checks_name_the_key() {
        assert!(check_groups([("a", 4.0), ("b", 1.0)]).is_ok());
        assert_eq!(normalised([4.0, 1.0].into_iter()), vec![0.8, 0.2]);
        for (groups, key) in [
            (vec![], "groups"),
            (vec![("a b", 1.0)], "groups.0.name"),
            (vec![("a", 1.0), ("x/y", 1.0)], "groups.1.name"),
            (vec![("a", 1.0), ("a", 1.0)], "groups.1.name"),
            (vec![("a", 0.0)], "groups.0.share"),
            (vec![("a", f64::NAN)], "groups.0.share"),
        ] {
            let e = check_groups(groups.clone()).unwrap_err().to_string();
            assert!(e.contains(key), "{groups:?}: {e}");
        }
    }
}
