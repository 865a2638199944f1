//! Checkpoints: tensors (model and optimiser state) in safetensors, everything else (step
//! counters, RNG streams, environment state, log offsets) in JSON, written as one folder that
//! appears atomically (written under a temporary name, fsynced, renamed), then named in
//! `latest.json`, itself written atomically. The two newest checkpoints are kept.

use crate::error::{Error, Result};
use crate::run::write_atomic;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const KEEP: usize = 2;

/// Save a checkpoint called `name` (e.g. `ppo-000012`) under `root`. Returns its folder.
pub fn save(
    root: &Path,
    name: &str,
    tensors: &HashMap<String, Tensor>,
    state: &serde_json::Value,
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let tmp = root.join(format!(".tmp-{name}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| Error::Internal(format!("cannot serialise checkpoint tensors: {e}")))?;
    write_atomic(&tmp.join("model.safetensors"), &bytes)?;
    let json = serde_json::to_vec_pretty(state)
        .map_err(|e| Error::Internal(format!("cannot serialise checkpoint state: {e}")))?;
    write_atomic(&tmp.join("state.json"), &json)?;
    let dir = root.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    write_atomic(
        &root.join("latest.json"),
        serde_json::json!({ "checkpoint": name })
            .to_string()
            .as_bytes(),
    )?;
    prune(root, name)?;
    Ok(dir)
}

fn prune(root: &Path, newest: &str) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let drop_n = names.len().saturating_sub(KEEP);
    for n in names.into_iter().take(drop_n).filter(|n| n != newest) {
        let p = root.join(n);
        std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
    }
    Ok(())
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// Its folder.
    pub dir: PathBuf,
    /// Named tensors.
    pub tensors: HashMap<String, Tensor>,
    /// The JSON state.
    pub state: serde_json::Value,
}

/// The checkpoint `latest.json` names under `root`, if any.
pub fn load_latest(root: &Path) -> Result<Option<Checkpoint>> {
    let latest = root.join("latest.json");
    if !latest.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&latest).map_err(|e| Error::io(&latest, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::data(&latest, None, e.to_string()))?;
    let name = v["checkpoint"]
        .as_str()
        .ok_or_else(|| Error::data(&latest, None, "expected {\"checkpoint\": NAME}"))?;
    let dir = root.join(name);
    let st = dir.join("model.safetensors");
    let bytes = std::fs::read(&st).map_err(|e| Error::io(&st, e))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| Error::data(&st, None, format!("not a valid safetensors file: {e}")))?;
    let sj = dir.join("state.json");
    let text = std::fs::read_to_string(&sj).map_err(|e| Error::io(&sj, e))?;
    let state = serde_json::from_str(&text).map_err(|e| Error::data(&sj, None, e.to_string()))?;
    Ok(Some(Checkpoint {
        dir,
        tensors,
        state,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_latest(dir.path()).unwrap().is_none());
        for i in 0..4 {
            let mut t = HashMap::new();
            t.insert(
                "w".to_string(),
                Tensor::new(&[i as f32, 2.0], &Device::Cpu).unwrap(),
            );
            save(
                dir.path(),
                &format!("c-{i:03}"),
                &t,
                &serde_json::json!({"i": i}),
            )
            .unwrap();
        }
        let c = load_latest(dir.path()).unwrap().unwrap();
        assert_eq!(c.state["i"], 3);
        assert_eq!(c.tensors["w"].to_vec1::<f32>().unwrap(), vec![3.0, 2.0]);
        let kept = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_dir())
            .count();
        assert_eq!(kept, 2);
    }
}
