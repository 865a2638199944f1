//! The plugin registry: which `type = "…"` names exist for each plugin trait, with a one-line doc.
//!
//! typetag registers the deserializers; this registry (also built on `inventory`) adds what
//! typetag does not expose: the list for `maxmin list` and the known names for "did you mean"
//! suggestions on an unknown `type`.
//!
//! Register a plugin next to its config struct:
//! ```text
//! maxmin_core::register_plugin!(EnvConfig, "cartpole", "CartPole-v1: balance a pole on a cart");
//! ```
//! A plugin that only makes sense for some environments (a group reward reads one environment's
//! observations) names their ids, and the pipeline refuses it on any other environment:
//! ```text
//! maxmin_core::register_plugin!(GroupRewardConfig, "cart-position", "…", envs = [ID]);
//! ```

/// One registered plugin type.
#[derive(Debug, Clone, Copy)]
pub struct PluginInfo {
    /// The config trait it implements (`EnvConfig`, `PolicyConfig`, …).
    pub kind: &'static str,
    /// The `type = "…"` tag.
    pub name: &'static str,
    /// One-line description.
    pub doc: &'static str,
    /// Ids of the environments it is for (`EnvSpec::id`); empty = any environment.
    pub envs: &'static [&'static str],
}

inventory::collect!(PluginInfo);

/// Register a plugin type for `maxmin list` and config suggestions; with `envs = [id, …]`, also
/// the environments it is restricted to (see [`check_env`]).
#[macro_export]
macro_rules! register_plugin {
    ($kind:ident, $name:expr, $doc:expr) => {
        $crate::register_plugin!($kind, $name, $doc, envs = []);
    };
    ($kind:ident, $name:expr, $doc:expr, envs = [$($env:expr),* $(,)?]) => {
        $crate::inventory::submit! {
            $crate::registry::PluginInfo {
                kind: stringify!($kind),
                name: $name,
                doc: $doc,
                envs: &[$($env),*],
            }
        }
    };
}

/// Every registered plugin, sorted by kind then name.
pub fn all() -> Vec<PluginInfo> {
    let mut v: Vec<PluginInfo> = inventory::iter::<PluginInfo>.into_iter().copied().collect();
    v.sort_by(|a, b| (a.kind, a.name).cmp(&(b.kind, b.name)));
    v
}

/// The registered names of one kind.
pub fn names(kind: &str) -> Vec<&'static str> {
    all()
        .into_iter()
        .filter(|p| p.kind == kind)
        .map(|p| p.name)
        .collect()
}

/// The registered plugin `name` of `kind`, if any.
pub fn find(kind: &str, name: &str) -> Option<PluginInfo> {
    all().into_iter().find(|p| p.kind == kind && p.name == name)
}

/// Refuse plugin `name` of `kind` on environment `env_id` when its registration restricts it to
/// other environments. The error's key is `type`, so callers prefix where the plugin sits.
pub fn check_env(kind: &str, name: &str, env_id: &str) -> crate::Result<()> {
    match find(kind, name) {
        Some(p) if !p.envs.is_empty() && !p.envs.contains(&env_id) => Err(crate::Error::config(
            "type",
            format!(
                "`{name}` is registered for {}, but the environment is {env_id}",
                p.envs.join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

/// The name in `known` closest to `unknown` (by Jaro–Winkler similarity), if any is close.
pub fn nearest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(unknown, k), *k))
        .filter(|(s, _)| *s > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::register_plugin!(
        TestOnlyConfig,
        "test-only",
        "registry test plugin",
        envs = ["Test-v0", "Test-v1"]
    );
    crate::register_plugin!(TestOnlyConfig, "test-any", "registry test plugin");

    #[test]
    fn env_restriction_is_checked() {
        assert_eq!(find("TestOnlyConfig", "test-only").unwrap().envs.len(), 2);
        assert!(check_env("TestOnlyConfig", "test-only", "Test-v1").is_ok());
        let e = check_env("TestOnlyConfig", "test-only", "CartPole-v1").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("test-only") && msg.contains("Test-v0, Test-v1"),
            "{msg}"
        );
        assert!(msg.contains("CartPole-v1"), "{msg}");
        assert!(check_env("TestOnlyConfig", "test-any", "CartPole-v1").is_ok());
        assert!(check_env("TestOnlyConfig", "unregistered", "CartPole-v1").is_ok());
    }
}
