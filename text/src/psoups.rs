//! P-Soups preference files (Jang et al. 2023, "Personalized Soups", repository
//! `joeljang/RLPHF`, `data/rm_training/P1A.json` …) turned into users for docs/algorithms.md
//! "Experiments to reproduce" item 2 (Tulu2-7B, P-Soups).
//!
//! A file is a JSON array of objects or JSON lines; each record has `user_input` (the prompt),
//! `completion_a` (the preferred completion) and `completion_b` (the other) — the fields and the
//! a-is-preferred convention of RLPHF's `training_reward_model.py`, which the MaxMin-RLHF
//! authors' scripts reuse. Other fields are ignored. Each file is one preference (P1A "an
//! elementary school student could understand", P1B "only a PhD student in the field would",
//! …), so a file's group is its true group; two files may name the same group.
//!
//! Users, following the authors' EM script (`test_data_multiple.py`, run by `EM_TULU.slurm`
//! with `--train_subset 3000 --cluster1_user 40 --cluster2_user 40`): a group's comparisons are
//! shuffled (seeded) and cut into users of `comparisons-per-user` (3000 / 40 = 75) comparisons;
//! at most `users-per-group` users are kept. Two readings of the paper's "40 per group, 20 for
//! EM training, 20 held out" are both expressible (see `docs/tulu2-psoups.md`):
//! - per comparison (the default): every user gives their first `train-per-user` comparisons
//!   to EM training and the next `held-out-per-user` to held-out evaluation;
//! - per user (the released script): the last `held-out-users` users of each group are held
//!   out whole (`held-out-users = 20`, `train-per-user = 75`, `held-out-per-user = 0`).
//!
//! `minority-fraction = 1/k` keeps only the first ⌊users/k⌋ (at least one) training users of
//! the minority group in `train`, for the single reward model's k:1 ratio sweep; their held-out
//! comparisons stay in `held_out` so minority accuracy is measured on the same data at every k.
//! The authors' `training_reward_model_single.py` cuts comparisons (`len // k`) instead of
//! users; with equal-sized users the two agree up to rounding.
//!
//! Every bad input is an [`Error`] naming the file and the line, array element or field.

use maxmin_core::error::{check, Error, Result};
use maxmin_core::prefs::data::{json_kind as kind, Comparison, Segment};
use maxmin_core::rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Where to look when a P-Soups file is missing.
const DOC_HINT: &str = "docs/tulu2-psoups.md says how to get the P-Soups files \
(RLPHF's data.zip, data/rm_training/P1A.json …)";

/// The preference instructions of P-Soups (P1A … P3B). The authors' scripts remove any of them
/// found in `user_input` before scoring, so a reward model cannot read the group off the prompt.
pub const PREFERENCE_PROMPTS: [&str; 8] = [
    "Generate a response that can be easily understood by an elementary school student.",
    "Generate a response that only a PhD Student in that specific field could understand.",
    "Generate a response that is concise and to the point, without being verbose.",
    "Generate a response that is very informative, without missing any background information.",
    "Generate a response that is friendly, witty, funny, and humorous, like a close friend.",
    "Generate a response in an unfriendly manner.",
    "Generate a response in a sassy manner.",
    "Generate a response in a sarcastic manner.",
];

/// One P-Soups comparison as stored: `completion_a` is preferred over `completion_b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The prompt (`user_input`).
    pub user_input: String,
    /// The preferred completion (`completion_a`).
    pub completion_a: String,
    /// The other completion (`completion_b`).
    pub completion_b: String,
}

/// `[[preferences.files]]`: one P-Soups file and the group whose preference it records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PsoupsFile {
    /// True group name (`P1A`); files with the same name are concatenated in listed order.
    pub group: String,
    /// The JSON array or JSON lines file.
    pub path: PathBuf,
}

/// How files become users and splits (keys of `[preferences]` next to `files`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PsoupsSplit {
    /// Comparisons per user; the remainder of a group that does not fill a user is unused.
    #[serde(default = "d_per_user")]
    pub comparisons_per_user: usize,
    /// Per user, the first this many comparisons go to EM / reward-model training.
    #[serde(default = "d_twenty")]
    pub train_per_user: usize,
    /// Per user, the next this many go to held-out evaluation (0 = none).
    #[serde(default = "d_twenty")]
    pub held_out_per_user: usize,
    /// Cap on users per group (the paper: 40); set it high to use every user a file fills.
    #[serde(default = "d_users")]
    pub users_per_group: Option<usize>,
    /// The last this many users of each group are held out whole: all their comparisons go to
    /// `held_out` and none to `train` (the released script's reading: 20).
    #[serde(default)]
    pub held_out_users: usize,
    /// Keep only this fraction (1/k, in (0, 1]) of the minority group's training users in
    /// `train`; absent = keep all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minority_fraction: Option<f64>,
    /// The minority group for `minority-fraction`; absent = the last group listed (the
    /// authors' single-model script subsamples its second file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minority_group: Option<String>,
    /// Keep the P-Soups preference instructions ([`PREFERENCE_PROMPTS`]) in the prompt
    /// (default: removed, as the authors' scripts do).
    #[serde(default)]
    pub keep_preference_prompt: bool,
    /// Seed of the shuffles (each group draws from its own named stream).
    #[serde(default)]
    pub seed: u64,
}

fn d_per_user() -> usize {
    75
}
fn d_twenty() -> usize {
    20
}
fn d_users() -> Option<usize> {
    Some(40)
}

impl Default for PsoupsSplit {
    fn default() -> Self {
        Self {
            comparisons_per_user: d_per_user(),
            train_per_user: d_twenty(),
            held_out_per_user: d_twenty(),
            users_per_group: d_users(),
            held_out_users: 0,
            minority_fraction: None,
            minority_group: None,
            keep_preference_prompt: false,
            seed: 0,
        }
    }
}

impl PsoupsSplit {
    /// Check values; config errors name the key (relative to the table).
    pub fn validate(&self) -> Result<()> {
        check::positive_usize("comparisons-per-user", self.comparisons_per_user)?;
        check::positive_usize("train-per-user", self.train_per_user)?;
        if self.train_per_user + self.held_out_per_user > self.comparisons_per_user {
            return Err(Error::config(
                "train-per-user",
                format!(
                    "train-per-user ({}) + held-out-per-user ({}) exceed comparisons-per-user ({})",
                    self.train_per_user, self.held_out_per_user, self.comparisons_per_user
                ),
            ));
        }
        if let Some(u) = self.users_per_group {
            check::positive_usize("users-per-group", u)?;
            if self.held_out_users >= u {
                return Err(Error::config(
                    "held-out-users",
                    format!(
                        "expected fewer held-out users than users-per-group ({u}), found {}",
                        self.held_out_users
                    ),
                ));
            }
        }
        if let Some(f) = self.minority_fraction {
            if !(f.is_finite() && f > 0.0 && f <= 1.0) {
                return Err(Error::config(
                    "minority-fraction",
                    format!("expected a number in (0, 1] (1/k for a k:1 ratio), found {f}"),
                ));
            }
        }
        Ok(())
    }
}

/// What the split did to one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupStats {
    /// The group.
    pub group: String,
    /// Its files, in listed order.
    pub files: Vec<PathBuf>,
    /// Comparisons read from them.
    pub records: usize,
    /// Users formed (after `users-per-group`).
    pub users: usize,
    /// Users held out whole (`held-out-users`).
    pub held_out_users: usize,
    /// Training users whose training comparisons were dropped by `minority-fraction`.
    pub dropped_users: usize,
    /// Comparisons in `train`.
    pub train: usize,
    /// Comparisons in `held_out`.
    pub held_out: usize,
    /// Comparisons read but in neither split.
    pub unused: usize,
}

/// Users and splits of a set of P-Soups files.
#[derive(Debug, Clone)]
pub struct PsoupsData {
    /// EM / reward-model training comparisons (group, then user, then comparison order).
    pub train: Vec<Comparison>,
    /// Held-out evaluation comparisons, same order.
    pub held_out: Vec<Comparison>,
    /// Group names in order of first appearance in the file list.
    pub groups: Vec<String>,
    /// Users held out whole (no comparison in `train`).
    pub held_out_users: Vec<String>,
    /// Minority users whose training comparisons `minority-fraction` dropped.
    pub dropped_users: Vec<String>,
    /// Per group, in `groups` order.
    pub stats: Vec<GroupStats>,
}

/// Read one P-Soups file, JSON array or JSON lines (told apart by the first non-blank byte).
pub fn load_file(path: &Path) -> Result<Vec<Record>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::input(
                format!("P-Soups file {} not found", path.display()),
                Some(DOC_HINT.into()),
            ))
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let body = text.trim_start_matches('\u{feff}');
    match body.trim_start().chars().next() {
        None => Err(Error::data(
            path,
            None,
            "empty file: expected a JSON array of records or JSON lines",
        )),
        Some('[') => load_array(path, body),
        Some('{') => load_lines(path, body),
        Some(c) => {
            let line = 1 + body[..body.len() - body.trim_start().len()]
                .matches('\n')
                .count();
            Err(Error::data(
                path,
                Some(line),
                format!("expected a JSON array (`[`) or JSON lines (`{{`), found `{c}`"),
            ))
        }
    }
}

fn load_array(path: &Path, body: &str) -> Result<Vec<Record>> {
    let v: Value = serde_json::from_str(body).map_err(|e| {
        Error::data(
            path,
            Some(e.line()),
            format!("not valid JSON (column {}): {e}", e.column()),
        )
    })?;
    let Value::Array(items) = v else {
        return Err(Error::data(path, None, "expected a JSON array of records"));
    };
    if items.is_empty() {
        return Err(Error::data(path, None, "empty JSON array: no records"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            record(v).map_err(|m| Error::data(path, None, format!("record {i} (array index): {m}")))
        })
        .collect()
}

fn load_lines(path: &Path, body: &str) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for (i, line) in body.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let n = out.len();
        let r = serde_json::from_str::<Value>(line)
            .map_err(|e| format!("not valid JSON: {e}"))
            .and_then(record)
            .map_err(|m| Error::data(path, Some(i + 1), format!("record {n}: {m}")))?;
        out.push(r);
    }
    Ok(out)
}

fn record(v: Value) -> std::result::Result<Record, String> {
    let Value::Object(m) = v else {
        return Err(format!("expected a JSON object, found {}", kind(&v)));
    };
    let field = |name: &str| match m.get(name) {
        None => Err(format!("missing field `{name}`")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(format!("field `{name}` is empty")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "field `{name}`: expected a string, found {}",
            kind(other)
        )),
    };
    Ok(Record {
        user_input: field("user_input")?,
        completion_a: field("completion_a")?,
        completion_b: field("completion_b")?,
    })
}

/// The prompt without P-Soups preference instructions.
fn strip_preference_prompt(prompt: &str) -> String {
    let mut p = prompt.to_string();
    for inst in PREFERENCE_PROMPTS {
        p = p.replace(inst, "");
    }
    p.trim().to_string()
}

/// Group names in order of first appearance in `files`; an empty name is a config error.
fn group_names(files: &[PsoupsFile]) -> Result<Vec<String>> {
    let mut groups: Vec<String> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if f.group.trim().is_empty() {
            return Err(Error::config(
                format!("files[{i}].group"),
                "expected a group name, found an empty string",
            ));
        }
        if !groups.contains(&f.group) {
            groups.push(f.group.clone());
        }
    }
    Ok(groups)
}

/// The group `minority-fraction` cuts (`minority-group`, else the last group); `None` without
/// `minority-fraction`.
fn minority_of(split: &PsoupsSplit, groups: &[String]) -> Result<Option<String>> {
    Ok(match (&split.minority_fraction, &split.minority_group) {
        (None, _) => None,
        (Some(_), Some(g)) if !groups.contains(g) => {
            return Err(Error::config(
                "minority-group",
                format!("unknown group `{g}`; the files name {}", groups.join(", ")),
            ))
        }
        (Some(_), Some(g)) => Some(g.clone()),
        (Some(_), None) => groups.last().cloned(),
    })
}

/// The records of group `g` (its files in listed order, each holding at least one user's
/// worth) and those files' paths.
fn read_group(
    files: &[PsoupsFile],
    g: &str,
    split: &PsoupsSplit,
) -> Result<(Vec<Record>, Vec<PathBuf>)> {
    let mut records = Vec::new();
    let mut paths = Vec::new();
    for f in files.iter().filter(|f| f.group == g) {
        let rs = load_file(&f.path)?;
        if rs.len() < split.comparisons_per_user {
            return Err(Error::data(
                &f.path,
                None,
                format!(
                    "{} comparisons, fewer than one user needs (comparisons-per-user = {})",
                    rs.len(),
                    split.comparisons_per_user
                ),
            ));
        }
        records.extend(rs);
        paths.push(f.path.clone());
    }
    Ok((records, paths))
}

/// How one group's records become users.
struct GroupPlan {
    /// Record indices in the group's seeded shuffle; user `u` gets the `u`-th run of
    /// `comparisons-per-user` of them.
    order: Vec<usize>,
    /// Users formed.
    users: usize,
    /// Users not held out whole (the first ones).
    train_users: usize,
    /// Training users that keep their training comparisons (`minority-fraction`).
    kept_train_users: usize,
}

/// Shuffle group `g`'s `records` and count its users; too few users for `held-out-users` is an
/// input error naming the group's `paths`.
fn plan_group(
    g: &str,
    records: usize,
    paths: &[PathBuf],
    split: &PsoupsSplit,
    minority: Option<&String>,
) -> Result<GroupPlan> {
    let mut order: Vec<usize> = (0..records).collect();
    order.shuffle(&mut rng::stream(split.seed, &format!("psoups/{g}")));

    let available = records / split.comparisons_per_user;
    let users = split
        .users_per_group
        .map_or(available, |u| u.min(available));
    if split.held_out_users >= users {
        return Err(Error::input(
            format!(
                "group `{g}` ({}) fills {users} user(s) of {} comparisons, not more than \
                 held-out-users = {}",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                split.comparisons_per_user,
                split.held_out_users
            ),
            Some("lower held-out-users or comparisons-per-user, or add data".into()),
        ));
    }
    let train_users = users - split.held_out_users;
    let kept_train_users = match (minority, split.minority_fraction) {
        (Some(m), Some(f)) if m == g => ((train_users as f64 * f).floor() as usize).max(1),
        _ => train_users,
    };
    Ok(GroupPlan {
        order,
        users,
        train_users,
        kept_train_users,
    })
}

/// Form group `g`'s users as `plan` says and append their comparisons to `data`'s splits,
/// counting them in `st`.
fn assign_users(
    data: &mut PsoupsData,
    g: &str,
    records: &[Record],
    plan: &GroupPlan,
    split: &PsoupsSplit,
    st: &mut GroupStats,
) {
    let context_of = |r: &Record| {
        Value::String(if split.keep_preference_prompt {
            r.user_input.clone()
        } else {
            strip_preference_prompt(&r.user_input)
        })
    };
    for u in 0..plan.users {
        let user = format!("{g}/u{u:03}");
        let mine =
            &plan.order[u * split.comparisons_per_user..(u + 1) * split.comparisons_per_user];
        let (to_train, to_held): (&[usize], &[usize]) = if u >= plan.train_users {
            data.held_out_users.push(user.clone());
            (&[], mine)
        } else {
            let (t, rest) = mine.split_at(split.train_per_user);
            let t: &[usize] = if u < plan.kept_train_users {
                t
            } else {
                data.dropped_users.push(user.clone());
                &[]
            };
            (t, &rest[..split.held_out_per_user])
        };
        for (idx, dest) in [(to_train, &mut data.train), (to_held, &mut data.held_out)] {
            for &i in idx {
                let r = &records[i];
                dest.push(Comparison {
                    user: user.clone(),
                    context: context_of(r),
                    chosen: Segment::Text(r.completion_a.clone()),
                    rejected: Segment::Text(r.completion_b.clone()),
                    group: Some(g.to_string()),
                });
            }
        }
        st.train += to_train.len();
        st.held_out += to_held.len();
    }
}

/// Load `files`, form users per group and split them as `split` says.
pub fn load(files: &[PsoupsFile], split: &PsoupsSplit) -> Result<PsoupsData> {
    split.validate()?;
    if files.is_empty() {
        return Err(Error::config(
            "files",
            "expected at least one P-Soups file ([[preferences.files]] group = \"P1A\", path = \"…\")",
        ));
    }
    let groups = group_names(files)?;
    let minority = minority_of(split, &groups)?;
    let mut data = PsoupsData {
        train: Vec::new(),
        held_out: Vec::new(),
        groups: groups.clone(),
        held_out_users: Vec::new(),
        dropped_users: Vec::new(),
        stats: Vec::new(),
    };
    for g in &groups {
        let (records, paths) = read_group(files, g, split)?;
        let plan = plan_group(g, records.len(), &paths, split, minority.as_ref())?;
        let mut st = GroupStats {
            group: g.clone(),
            files: paths,
            records: records.len(),
            users: plan.users,
            held_out_users: split.held_out_users,
            dropped_users: plan.train_users - plan.kept_train_users,
            train: 0,
            held_out: 0,
            unused: 0,
        };
        assign_users(&mut data, g, &records, &plan, split, &mut st);
        st.unused = st.records - st.train - st.held_out;
        data.stats.push(st);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn sample(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/psoups")
            .join(name)
    }

    fn sample_files() -> Vec<PsoupsFile> {
        vec![
            PsoupsFile {
                group: "P1A".into(),
                path: sample("P1A.jsonl"),
            },
            PsoupsFile {
                group: "P1B".into(),
                path: sample("P1B.json"),
            },
        ]
    }

    fn small() -> PsoupsSplit {
        PsoupsSplit {
            comparisons_per_user: 10,
            train_per_user: 4,
            held_out_per_user: 3,
            users_per_group: Some(12),
            seed: 7,
            ..PsoupsSplit::default()
        }
    }

    fn err_of(text: &str, name: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        load_file(&p).unwrap_err().to_string()
    }

    fn pair(i: usize) -> String {
        format!(
            "{{\"user_input\": \"q{i}\", \"completion_a\": \"a{i}\", \"completion_b\": \"b{i}\"}}"
        )
    }

    #[test]
    fn both_formats_load() {
        let a = load_file(&sample("P1A.jsonl")).unwrap();
        let b = load_file(&sample("P1B.json")).unwrap();
        assert!(a.len() >= 120 && b.len() >= 120, "{} {}", a.len(), b.len());
        assert!(a.iter().chain(&b).all(|r| !r.user_input.is_empty()
            && !r.completion_a.is_empty()
            && r.completion_a != r.completion_b));
        // The two formats agree on the same records; extra fields are ignored.
        let dir = tempfile::tempdir().unwrap();
        let (j, l) = (dir.path().join("x.json"), dir.path().join("x.jsonl"));
        let extra = "{\"user_input\": \"q\", \"completion_a\": \"a\", \"completion_b\": \"b\", \
                     \"labels\": [1], \"annotator\": \"gpt4\"}";
        std::fs::write(&j, format!("[\n  {extra},\n  {}\n]\n", pair(1))).unwrap();
        std::fs::write(&l, format!("{extra}\n\n{}\n", pair(1))).unwrap();
        let (rj, rl) = (load_file(&j).unwrap(), load_file(&l).unwrap());
        assert_eq!(rj, rl);
        assert_eq!(rj[0].completion_a, "a");
        assert_eq!(rj[1].user_input, "q1");
    }

    #[test]
    fn split_sizes_groups_and_disjointness() {
        let d = load(&sample_files(), &small()).unwrap();
        assert_eq!(d.groups, ["P1A", "P1B"]);
        assert_eq!(d.train.len(), 2 * 12 * 4);
        assert_eq!(d.held_out.len(), 2 * 12 * 3);
        let mut per_user: BTreeMap<&str, (usize, usize, BTreeSet<&str>)> = BTreeMap::new();
        for c in &d.train {
            let e = per_user.entry(&c.user).or_default();
            e.0 += 1;
            e.2.insert(c.group.as_deref().unwrap());
        }
        for c in &d.held_out {
            let e = per_user.entry(&c.user).or_default();
            e.1 += 1;
            e.2.insert(c.group.as_deref().unwrap());
        }
        assert_eq!(per_user.len(), 24);
        for (u, (t, h, gs)) in &per_user {
            assert_eq!((*t, *h), (4, 3), "{u}");
            assert_eq!(gs.len(), 1, "{u} mixes groups {gs:?}");
            assert!(u.starts_with(gs.iter().next().unwrap()), "{u}");
        }
        // Each record lands in at most one split (records are distinct in the sample).
        let key = |c: &Comparison| format!("{:?}{:?}{:?}", c.context, c.chosen, c.rejected);
        let train: BTreeSet<String> = d.train.iter().map(key).collect();
        let held: BTreeSet<String> = d.held_out.iter().map(key).collect();
        assert_eq!(train.len(), d.train.len());
        assert!(train.is_disjoint(&held));
        for s in &d.stats {
            assert_eq!((s.users, s.train, s.held_out), (12, 48, 36));
            assert_eq!(s.unused, s.records - 84);
        }
        // The preferred completion is `completion_a`.
        let raw = load_file(&sample("P1A.jsonl")).unwrap();
        let c = &d.train[0];
        assert!(raw
            .iter()
            .any(|r| Segment::Text(r.completion_a.clone()) == c.chosen
                && Segment::Text(r.completion_b.clone()) == c.rejected));
    }

    #[test]
    fn default_split_on_sample() {
        // 160 comparisons per file fill 2 users of 75 under the paper's defaults.
        let d = load(&sample_files(), &PsoupsSplit::default()).unwrap();
        for s in &d.stats {
            assert_eq!((s.records, s.users, s.train, s.held_out), (160, 2, 40, 40));
            assert_eq!(s.unused, 160 - 80);
        }
        let users: BTreeSet<&str> = d.train.iter().map(|c| c.user.as_str()).collect();
        assert_eq!(
            users.into_iter().collect::<Vec<_>>(),
            ["P1A/u000", "P1A/u001", "P1B/u000", "P1B/u001"]
        );
    }

    #[test]
    fn seeded_determinism() {
        let a = load(&sample_files(), &small()).unwrap();
        let b = load(&sample_files(), &small()).unwrap();
        assert_eq!(a.train, b.train);
        assert_eq!(a.held_out, b.held_out);
        let c = load(&sample_files(), &PsoupsSplit { seed: 8, ..small() }).unwrap();
        assert_ne!(a.train, c.train);
    }

    #[test]
    fn users_capped_and_held_out_whole_users() {
        let split = PsoupsSplit {
            comparisons_per_user: 10,
            train_per_user: 10,
            held_out_per_user: 0,
            users_per_group: Some(1000),
            held_out_users: 5,
            ..small()
        };
        let d = load(&sample_files(), &split).unwrap();
        for s in &d.stats {
            assert_eq!(s.users, s.records / 10);
            assert_eq!(s.held_out, 50);
            assert_eq!(s.train, (s.users - 5) * 10);
        }
        assert_eq!(d.held_out_users.len(), 10);
        let train_users: BTreeSet<&str> = d.train.iter().map(|c| c.user.as_str()).collect();
        for u in &d.held_out_users {
            assert!(!train_users.contains(u.as_str()), "{u}");
        }
        let too_many = PsoupsSplit {
            held_out_users: 999,
            ..split
        };
        let e = load(&sample_files(), &too_many).unwrap_err().to_string();
        assert!(e.contains("P1A") && e.contains("held-out-users"), "{e}");
    }

    #[test]
    fn minority_fraction_keeps_a_fraction_of_minority_users() {
        let full = load(&sample_files(), &small()).unwrap();
        let split = PsoupsSplit {
            minority_fraction: Some(0.25),
            ..small()
        };
        let d = load(&sample_files(), &split).unwrap();
        let users = |cs: &[Comparison], g: &str| {
            cs.iter()
                .filter(|c| c.group.as_deref() == Some(g))
                .map(|c| c.user.clone())
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(users(&d.train, "P1A").len(), 12);
        assert_eq!(users(&d.train, "P1B").len(), 3);
        assert_eq!(d.dropped_users.len(), 9);
        assert_eq!(d.stats[1].dropped_users, 9);
        assert_eq!(
            d.held_out, full.held_out,
            "held-out data must not depend on k"
        );
        // Explicit minority group, and 1/k too small still keeps one user.
        let split = PsoupsSplit {
            minority_fraction: Some(0.01),
            minority_group: Some("P1A".into()),
            ..small()
        };
        let d = load(&sample_files(), &split).unwrap();
        assert_eq!(users(&d.train, "P1A").len(), 1);
        assert_eq!(users(&d.train, "P1B").len(), 12);
        let bad = PsoupsSplit {
            minority_fraction: Some(0.5),
            minority_group: Some("P9Z".into()),
            ..small()
        };
        let e = load(&sample_files(), &bad).unwrap_err().to_string();
        assert!(e.contains("minority-group") && e.contains("P9Z"), "{e}");
    }

    #[test]
    fn same_group_in_two_files_concatenates() {
        let files = vec![
            PsoupsFile {
                group: "G".into(),
                path: sample("P1A.jsonl"),
            },
            PsoupsFile {
                group: "G".into(),
                path: sample("P1B.json"),
            },
        ];
        let split = PsoupsSplit {
            users_per_group: Some(1000),
            ..small()
        };
        let d = load(&files, &split).unwrap();
        let n = load_file(&sample("P1A.jsonl")).unwrap().len()
            + load_file(&sample("P1B.json")).unwrap().len();
        assert_eq!(d.groups, ["G"]);
        assert_eq!(d.stats[0].records, n);
        assert_eq!(d.stats[0].users, n / 10);
    }

    #[test]
    fn preference_prompt_stripped_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.jsonl");
        let inst = PREFERENCE_PROMPTS[0];
        let line = format!(
            "{{\"user_input\": \"Why is the sky blue? {inst}\", \"completion_a\": \"a\", \
             \"completion_b\": \"b\"}}\n"
        );
        std::fs::write(&p, line.repeat(3)).unwrap();
        let files = [PsoupsFile {
            group: "P1A".into(),
            path: p,
        }];
        let split = PsoupsSplit {
            comparisons_per_user: 3,
            train_per_user: 3,
            held_out_per_user: 0,
            users_per_group: Some(1),
            ..PsoupsSplit::default()
        };
        let d = load(&files, &split).unwrap();
        assert_eq!(d.train[0].context, Value::from("Why is the sky blue?"));
        let kept = PsoupsSplit {
            keep_preference_prompt: true,
            ..split
        };
        let d = load(&files, &kept).unwrap();
        assert!(d.train[0].context.as_str().unwrap().contains(inst));
    }

    #[test]
    fn missing_file_names_path_and_hints_at_doc() {
        let e = load_file(Path::new("/nonexistent/P1A.json")).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("/nonexistent/P1A.json") && s.contains("docs/tulu2-psoups.md"),
            "{s}"
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn empty_files_are_errors() {
        for (text, want) in [
            ("", "empty file"),
            ("  \n\n", "empty file"),
            ("[ ]", "empty JSON array"),
        ] {
            let s = err_of(text, "e.json");
            assert!(s.contains("e.json") && s.contains(want), "{text:?}: {s}");
        }
        let s = err_of("hello", "e.json");
        assert!(
            s.contains("e.json:1") && s.contains("expected a JSON array"),
            "{s}"
        );
    }

    #[test]
    fn malformed_json_names_file_and_line_or_element() {
        let s = err_of(
            &format!("{}\n{}\n{{\"user_input\": \n", pair(0), pair(1)),
            "m.jsonl",
        );
        assert!(
            s.contains("m.jsonl:3") && s.contains("not valid JSON"),
            "{s}"
        );
        let s = err_of(&format!("[\n{},\n{}\n", pair(0), pair(1)), "m.json");
        assert!(s.contains("m.json:") && s.contains("not valid JSON"), "{s}");
        let s = err_of(&format!("[{}, 3]", pair(0)), "m.json");
        assert!(
            s.contains("m.json") && s.contains("record 1") && s.contains("a number"),
            "{s}"
        );
    }

    #[test]
    fn missing_or_empty_field_names_file_record_and_field() {
        let no_b = "{\"user_input\": \"q\", \"completion_a\": \"a\"}";
        let s = err_of(&format!("{}\n{no_b}\n", pair(0)), "f.jsonl");
        assert!(
            s.contains("f.jsonl:2") && s.contains("record 1") && s.contains("`completion_b`"),
            "{s}"
        );
        let s = err_of(&format!("[{}, {}, {no_b}]", pair(0), pair(1)), "f.json");
        assert!(
            s.contains("f.json") && s.contains("record 2") && s.contains("`completion_b`"),
            "{s}"
        );
        let empty = "{\"user_input\": \" \", \"completion_a\": \"a\", \"completion_b\": \"b\"}";
        let s = err_of(&format!("[{empty}]"), "f.json");
        assert!(
            s.contains("record 0") && s.contains("`user_input` is empty"),
            "{s}"
        );
        let wrong = "{\"user_input\": \"q\", \"completion_a\": [\"a\"], \"completion_b\": \"b\"}";
        let s = err_of(&format!("{wrong}\n"), "f.jsonl");
        assert!(
            s.contains("f.jsonl:1") && s.contains("`completion_a`: expected a string"),
            "{s}"
        );
    }

    #[test]
    fn file_too_small_for_one_user() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tiny.jsonl");
        std::fs::write(&p, (0..5).map(pair).collect::<Vec<_>>().join("\n")).unwrap();
        let files = [PsoupsFile {
            group: "P2A".into(),
            path: p,
        }];
        let s = load(&files, &small()).unwrap_err().to_string();
        assert!(
            s.contains("tiny.jsonl") && s.contains("5 comparisons") && s.contains("10"),
            "{s}"
        );
    }

    #[test]
    fn validate_names_keys() {
        let cases = [
            (
                PsoupsSplit {
                    comparisons_per_user: 0,
                    ..small()
                },
                "comparisons-per-user",
            ),
            (
                PsoupsSplit {
                    train_per_user: 0,
                    ..small()
                },
                "train-per-user",
            ),
            (
                PsoupsSplit {
                    train_per_user: 8,
                    ..small()
                },
                "train-per-user",
            ),
            (
                PsoupsSplit {
                    users_per_group: Some(0),
                    ..small()
                },
                "users-per-group",
            ),
            (
                PsoupsSplit {
                    held_out_users: 12,
                    ..small()
                },
                "held-out-users",
            ),
            (
                PsoupsSplit {
                    minority_fraction: Some(0.0),
                    ..small()
                },
                "minority-fraction",
            ),
            (
                PsoupsSplit {
                    minority_fraction: Some(1.5),
                    ..small()
                },
                "minority-fraction",
            ),
        ];
        for (split, key) in cases {
            let s = split.validate().unwrap_err().to_string();
            assert!(s.contains(key), "{key}: {s}");
        }
        let s = load(&[], &small()).unwrap_err().to_string();
        assert!(s.contains("files"), "{s}");
        // Config keys are kebab-case and unknown keys are rejected.
        let t: PsoupsSplit =
            toml::from_str("comparisons-per-user = 75\nminority-fraction = 0.1").unwrap();
        assert_eq!((t.train_per_user, t.users_per_group), (20, Some(40)));
        assert!(toml::from_str::<PsoupsSplit>("users = 3").is_err());
        let f: PsoupsFile = toml::from_str("group = \"P1A\"\npath = \"x.json\"").unwrap();
        assert_eq!(f.group, "P1A");
    }
}
