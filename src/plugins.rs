//! Names every plugin crate so its typetag and registry entries are linked into the binary.
//! A crate listed only in Cargo.toml would be silently missing from `maxmin list`.

use maxmin_envs as _;
use maxmin_imdb as _;
use maxmin_lm as _;
use maxmin_text as _;
