//! maxmin-envs: Gymnasium-exact classic control environments (filled in by the foundation issue).
