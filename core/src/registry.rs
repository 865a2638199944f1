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

/// One registered plugin type.
#[derive(Debug, Clone, Copy)]
pub struct PluginInfo {
    /// The config trait it implements (`EnvConfig`, `PolicyConfig`, …).
    pub kind: &'static str,
    /// The `type = "…"` tag.
    pub name: &'static str,
    /// One-line description.
    pub doc: &'static str,
}

inventory::collect!(PluginInfo);

/// Register a plugin type for `maxmin list` and config suggestions.
#[macro_export]
macro_rules! register_plugin {
    ($kind:ident, $name:expr, $doc:expr) => {
        $crate::inventory::submit! {
            $crate::registry::PluginInfo { kind: stringify!($kind), name: $name, doc: $doc }
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

/// The name in `known` closest to `unknown` (by Jaro–Winkler similarity), if any is close.
pub fn nearest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(unknown, k), *k))
        .filter(|(s, _)| *s > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}
