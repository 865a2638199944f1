//! Memory estimates checked before anything is allocated: a config whose model or buffers cannot
//! fit in this machine's memory is a config error (exit 2) naming the key and the estimate, not an
//! allocation abort or an hour of swapping.
//!
//! The estimates are lower bounds of what a run allocates (parameters with their gradients and
//! Adam moments, rollout buffers, logits of one forward pass), so a config refused here could
//! never have run; a config accepted here can still be too large for reasons the estimate leaves
//! out. The limit is the smaller of the memory the kernel reports as available
//! (`MemAvailable` in `/proc/meminfo`) and a cgroup limit (`/sys/fs/cgroup/memory.max`), or
//! `MAXMIN_MEMORY_LIMIT` (bytes) when set, which tests use to be independent of the machine.

use crate::{Error, Result};

/// Bytes this process may plan to allocate (see the module doc), or `None` where unknown.
pub fn memory_limit() -> Option<u128> {
    if let Some(v) = std::env::var("MAXMIN_MEMORY_LIMIT")
        .ok()
        .and_then(|s| s.trim().parse::<u128>().ok())
    {
        return Some(v);
    }
    let avail = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u128>().ok())
            .map(|kb| kb * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u128>().ok());
    match (avail, cgroup) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// `n` bytes in human units (`1.5 GiB`).
pub fn human(n: u128) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < units.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", units[u])
    }
}

/// Error (naming `key`) when `bytes`, described by `what`, exceed the memory limit.
pub fn check(key: &str, what: &str, bytes: u128) -> Result<()> {
    let Some(limit) = memory_limit() else {
        return Ok(());
    };
    if bytes <= limit {
        return Ok(());
    }
    Err(Error::config(
        key,
        format!(
            "{what} needs at least {} ({bytes} bytes), more than the {} this machine can give \
             (MemAvailable / cgroup limit); reduce it",
            human(bytes),
            human(limit)
        ),
    ))
}

/// Parameters of a fully connected network with layer sizes `sizes` (weights and biases),
/// saturating instead of overflowing.
pub fn mlp_params(sizes: &[usize]) -> u128 {
    sizes
        .windows(2)
        .map(|w| (w[0] as u128).saturating_mul(w[1] as u128) + w[1] as u128)
        .fold(0u128, u128::saturating_add)
}

/// Bytes to train `params` f32 parameters with Adam: the values, their gradients and two moments.
pub fn adam_training_bytes(params: u128) -> u128 {
    params.saturating_mul(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_saturate_and_name_the_key() {
        assert_eq!(mlp_params(&[4, 64, 2]), 4 * 64 + 64 + 64 * 2 + 2);
        assert_eq!(mlp_params(&[usize::MAX, usize::MAX, usize::MAX]), u128::MAX);
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(12), "12 B");
        if memory_limit().is_some() {
            let e = check("policy.hidden", "the policy", u128::MAX).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            let s = e.to_string();
            assert!(
                s.contains("policy.hidden") && s.contains("the policy"),
                "{s}"
            );
            check("policy.hidden", "the policy", 1).unwrap();
        }
    }
}
