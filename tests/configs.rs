//! Every experiment file shipped in `configs/` must pass `maxmin check`.

use crate::common::{root, run, text};

#[test]
fn every_config_checks() {
    let mut files: Vec<_> = std::fs::read_dir(root().join("configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected the shipped configs, found {files:?}"
    );
    for f in files {
        let o = run(&["check", f.to_str().unwrap()]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{}: {out}{err}", f.display());
    }
}
