//! Resolve `model = "…"`: a local model directory, or a Hugging Face hub id found in the local
//! HF cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, laid out as
//! `models--org--name/{refs/main, snapshots/<rev>/}` exactly as `huggingface_hub` writes it).
//!
//! Downloading is deliberately not built in: the project's machines have no route to the hub, and
//! the `hf-hub` crate would pull an HTTP + TLS stack into every build. A hub id that is not cached
//! is a clear input error with a hint on how to fetch it elsewhere.

use maxmin_core::{Error, Result};
use std::path::{Path, PathBuf};

/// The HF hub cache directory this process would use.
pub fn hf_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(d).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// Resolve a model directory or hub id (`gpt2`, `allenai/tulu-2-7b`) to a local directory that
/// holds `config.json`.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        return Err(Error::input(
            format!("model `{spec}` is a file, expected a model directory"),
            Some("pass the folder holding config.json and *.safetensors".into()),
        ));
    }
    let looks_like_path = spec.starts_with('.')
        || spec.starts_with('/')
        || spec.contains('\\')
        || spec.ends_with('/');
    let valid_id = !spec.is_empty()
        && spec.split('/').count() <= 2
        && spec.split('/').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    if looks_like_path || !valid_id {
        return Err(Error::input(
            format!("model directory `{spec}` does not exist"),
            None,
        ));
    }
    let cache = hf_cache_dir();
    if let Some(cache) = &cache {
        if let Some(dir) = find_in_cache(cache, spec) {
            return Ok(dir);
        }
    }
    let where_ = cache
        .map(|c| {
            c.join(format!("models--{}", spec.replace('/', "--")))
                .display()
                .to_string()
        })
        .unwrap_or_else(|| "<no HOME, HF_HOME or HF_HUB_CACHE set>".into());
    Err(Error::input(
        format!(
            "model `{spec}` is neither a local directory nor in the Hugging Face cache ({where_})"
        ),
        Some(format!(
            "maxmin does not download models; on a machine with internet run \
             `huggingface-cli download {spec}` and copy the cache (or the snapshot folder) here, \
             then pass the hub id or the folder"
        )),
    ))
}

/// `cache/models--org--name/snapshots/<rev>` for `refs/main`, else the newest snapshot that holds
/// a `config.json`.
fn find_in_cache(cache: &Path, id: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs/main")) {
        let dir = snapshots.join(rev.trim());
        if dir.join("config.json").is_file() {
            return Some(dir);
        }
    }
    let mut candidates: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("config.json").is_file())
        .map(|p| {
            let t = p
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, p)
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_is_returned_and_unknown_id_is_an_input_error_with_hint() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            resolve_model(dir.path().to_str().unwrap()).unwrap(),
            dir.path()
        );
        let e = resolve_model("no-such-org/no-such-model-xyz").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("no-such-org/no-such-model-xyz") && msg.contains("hint:"),
            "{msg}"
        );
        let e = resolve_model("./missing-dir").unwrap_err();
        assert!(e.to_string().contains("does not exist"));
    }

    #[test]
    fn cached_snapshot_is_found() {
        let cache = tempfile::tempdir().unwrap();
        let snap = cache.path().join("models--org--tiny/snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        std::fs::create_dir_all(cache.path().join("models--org--tiny/refs")).unwrap();
        std::fs::write(cache.path().join("models--org--tiny/refs/main"), "abc123\n").unwrap();
        assert_eq!(find_in_cache(cache.path(), "org/tiny"), Some(snap));
        assert_eq!(find_in_cache(cache.path(), "org/other"), None);
    }
}
