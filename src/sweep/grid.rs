//! A grid file and its expansion into points.
//!
//! ```toml
//! name = "grid"                    # default: the file's stem
//! base = "baseline.toml"           # a spec, relative to this file
//! [spec]                           # and/or settings inline, over the base
//!
//! [sweep]                          # the product of these lists is the grid
//! "model.activation" = ["sigmoid", "relu", "tanh"]
//! "train.seed" = { start = 0, stop = 2, step = 1 }          # 0, 1, 2
//! "train.lr" = { start = 1e-3, stop = 1e-1, num = 3, log = true }
//!
//! [[zip]]                          # keys that vary together: one axis
//! "train.lr" = [0.001, 0.01]
//! "train.batch_size" = [16, 64]
//!
//! [[exclude]]                      # drop the points that match every key
//! "model.activation" = "sigmoid"
//!
//! [[include]]                      # add single points
//! "train.lr" = 0.5
//! ```
//!
//! Expansion is deterministic: axes in the order written ([sweep] keys,
//! then each [[zip]]), the first axis slowest, values in the order given,
//! then excludes, then includes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::search::{self, Distribution, Halving, SearchTable, Tpe};
use crate::config::{self, line_of};

/// The grid file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    name: Option<String>,
    base: Option<PathBuf>,
    spec: Option<toml::Table>,
    // toml's tables keep the file's order (its `preserve_order` feature):
    // axes expand in the order they are written.
    #[serde(default)]
    sweep: toml::Table,
    #[serde(default)]
    zip: Vec<toml::Table>,
    #[serde(default)]
    exclude: Vec<toml::Table>,
    #[serde(default)]
    include: Vec<toml::Table>,
    search: Option<SearchTable>,
}

/// Top-level keys only a grid file has (`name` is a spec's key too).
pub fn grid_only_keys() -> impl Iterator<Item = &'static str> {
    serde_aux::serde_introspection::serde_introspect::<GridFile>()
        .iter()
        .copied()
        .filter(|k| !config::RunConfig::keys().any(|key| key.key == *k))
}

/// Fails when `spec`, given as a run spec, is a grid file.
pub fn refuse_grid_as_spec(spec: &Path) -> Result<()> {
    let table = std::fs::read_to_string(spec)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok());
    if let Some(key) = table.and_then(|t| grid_only_keys().find(|k| t.contains_key(*k))) {
        bail!(
            "{} is a grid file (it has `{key}`), not a run spec: run it with `runner sweep {}`",
            spec.display(),
            spec.display()
        );
    }
    Ok(())
}

/// One point of the grid: a value for each swept key, in the file's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub values: Vec<(String, toml::Value)>,
}

impl Point {
    /// `activation=relu,seed=1`: the swept values, readable, for run ids.
    pub fn slug(&self) -> String {
        let parts: Vec<String> = self
            .values
            .iter()
            .map(|(k, v)| format!("{}={}", k.rsplit('.').next().unwrap_or(k), plain(v)))
            .collect();
        let slug = parts.join(",");
        let safe: String = slug
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._=,+-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if safe.is_empty() {
            "base".into()
        } else {
            safe
        }
    }

    /// `model.activation=relu train.seed=1`, for listings.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .values
            .iter()
            .map(|(k, v)| format!("{k}={}", plain(v)))
            .collect();
        parts.join(" ")
    }
}

/// A value as text, strings without quotes.
pub fn plain(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => config::short_number(*f),
        other => other.to_string(),
    }
}

/// A parsed, checked grid.
#[derive(Debug, Clone)]
pub struct Grid {
    pub file: PathBuf,
    pub name: String,
    /// The base spec file, if any.
    pub base: Option<PathBuf>,
    /// The inline base spec, if any.
    pub spec: Option<toml::Table>,
    pub points: Vec<Point>,
    /// Successive halving over the points, when `[search]` asks for it.
    pub halving: Option<Halving>,
    /// A TPE search: each trial is every point with the trial's values.
    pub tpe: Option<Tpe>,
}

/// Every key a point can set: a sweep sets each run's name itself.
fn known_keys() -> Vec<String> {
    config::known_keys()
        .into_iter()
        .filter(|k| k != "name")
        .collect()
}

/// An error about `path` in the grid file, with its line when found.
fn at(file: &Path, path: &[&str], msg: String) -> anyhow::Error {
    let owned: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    match line_of(file, &owned) {
        Some(line) => anyhow::anyhow!("{}, line {line}: {msg}", file.display()),
        None => anyhow::anyhow!("{}: {msg}", file.display()),
    }
}

fn check_key(file: &Path, table: &str, key: &str, known: &[String]) -> Result<()> {
    if known.iter().any(|k| k == key) && key != "train.epochs" {
        return Ok(());
    }
    if key == "train.epochs" {
        return Err(at(
            file,
            &[table, key],
            format!(
                "[{table}] `train.epochs` cannot be swept: it is a run's budget, not part of its \
                 identity, so points differing only in epochs would be one run. Set it once (in \
                 the base spec or [spec]) to the most you want; metrics.csv has every epoch"
            ),
        ));
    }
    let hint = if key == "name" {
        "the sweep sets each run's name".to_string()
    } else if let Some(near) = config::nearest(key, known) {
        format!("did you mean `{near}`?")
    } else {
        format!("keys look like train.lr; known keys: {}", known.join(", "))
    };
    Err(at(
        file,
        &[table, key],
        format!("[{table}] `{key}` is not a config key ({hint})"),
    ))
}

/// Expands a list or a range into values.
fn values_of(file: &Path, table: &str, key: &str, value: &toml::Value) -> Result<Vec<toml::Value>> {
    let err = |msg: String| at(file, &[table, key], format!("[{table}] `{key}`: {msg}"));
    let values = match value {
        toml::Value::Array(list) => list.clone(),
        toml::Value::Table(range) => expand_range(range).map_err(|e| err(e.to_string()))?,
        other => {
            return Err(err(format!(
                "expected a list of values or a range table, found {}",
                other.type_str()
            )))
        }
    };
    if values.is_empty() {
        return Err(err("the list of values is empty".into()));
    }
    Ok(values)
}

/// The most values one range may expand to, and the most points a grid
/// may have: far beyond any grid a machine trains, small enough to plan.
pub const MAX_POINTS: usize = 100_000;

fn number(range: &toml::Table, key: &str) -> Result<Option<f64>> {
    let value = match range.get(key) {
        None => return Ok(None),
        Some(toml::Value::Integer(i)) => *i as f64,
        Some(toml::Value::Float(f)) => *f,
        Some(other) => bail!("range `{key}` must be a number, found {}", other.type_str()),
    };
    if !value.is_finite() {
        bail!("range `{key}` must be a finite number, got {value}");
    }
    Ok(Some(value))
}

/// `{ start, stop, num [, log] }` (inclusive, linear or log spaced) or
/// `{ start, stop, step }` (start, start+step, ... up to stop inclusive).
/// All-integer stepped ranges are computed in integers, exactly.
fn expand_range(range: &toml::Table) -> Result<Vec<toml::Value>> {
    for key in range.keys() {
        if !["start", "stop", "num", "step", "log"].contains(&key.as_str()) {
            bail!("unknown range key `{key}`; a range has start, stop and num (optionally log = true) or step");
        }
    }
    let (Some(start), Some(stop)) = (number(range, "start")?, number(range, "stop")?) else {
        bail!("a range needs start and stop");
    };
    let log = match range.get("log") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(other) => bail!(
            "range `log` must be true or false, found {}",
            other.type_str()
        ),
    };
    let int = |k: &str| range.get(k).and_then(toml::Value::as_integer);
    if let (Some(a), Some(b), Some(step), None) =
        (int("start"), int("stop"), int("step"), range.get("num"))
    {
        if log {
            bail!("log = true goes with num, not step");
        }
        return integer_steps(a, b, step);
    }
    let values: Vec<f64> = match (range.get("num"), number(range, "step")?) {
        (Some(_), Some(_)) => bail!("give either num or step, not both"),
        (Some(num), None) => spaced(start, stop, num, log)?,
        (None, Some(step)) => {
            if log {
                bail!("log = true goes with num, not step");
            }
            stepped(start, stop, step)?
        }
        (None, None) => bail!("a range needs num (how many values) or step"),
    };
    let integers = int("start").is_some() && int("stop").is_some() && range.get("step").is_none();
    Ok(values
        .into_iter()
        .map(|v| {
            if integers && !log && v.fract() == 0.0 && v.abs() < 9.0e15 {
                toml::Value::Integer(v as i64)
            } else {
                // Round away float noise such as 0.30000000000000004.
                toml::Value::Float(format!("{v:.12e}").parse().expect("formatted float parses"))
            }
        })
        .collect())
}

/// `num` values from start to stop inclusive, linear or log spaced.
fn spaced(start: f64, stop: f64, num: &toml::Value, log: bool) -> Result<Vec<f64>> {
    let Some(num) = num.as_integer().filter(|n| *n >= 1) else {
        bail!("range `num` must be a whole number >= 1");
    };
    if num as u64 > MAX_POINTS as u64 {
        bail!("range `num` = {num} is more than {MAX_POINTS} values");
    }
    let n = num as usize;
    if log && (start <= 0.0 || stop <= 0.0) {
        bail!("a log range needs start and stop > 0");
    }
    Ok((0..n)
        .map(|i| {
            let t = if n == 1 {
                0.0
            } else {
                i as f64 / (n - 1) as f64
            };
            if log {
                (start.ln() + t * (stop.ln() - start.ln())).exp()
            } else {
                start + t * (stop - start)
            }
        })
        .collect())
}

/// start, start+step, ... up to stop (inclusive, with float slack).
fn stepped(start: f64, stop: f64, step: f64) -> Result<Vec<f64>> {
    if step == 0.0 || (stop - start) * step < 0.0 {
        bail!("step {step} never gets from {start} to {stop}");
    }
    let count = ((stop - start) / step + 1e-9).floor() + 1.0;
    // NaN counts too: compared with partial_cmp, it is not Less or Equal.
    if count
        .partial_cmp(&(MAX_POINTS as f64))
        .is_none_or(|o| o.is_gt())
    {
        bail!("the range has {count:e} values, more than {MAX_POINTS}");
    }
    Ok((0..count as usize)
        .map(|i| start + i as f64 * step)
        .collect())
}

/// start, start+step, ... up to stop, in exact integer arithmetic.
fn integer_steps(start: i64, stop: i64, step: i64) -> Result<Vec<toml::Value>> {
    let (a, b, s) = (start as i128, stop as i128, step as i128);
    if s == 0 || (b - a) * s.signum() < 0 {
        bail!("step {step} never gets from {start} to {stop}");
    }
    let count = (b - a) / s + 1;
    if count > MAX_POINTS as i128 {
        bail!("the range has {count} values, more than {MAX_POINTS}");
    }
    Ok((0..count)
        .map(|i| toml::Value::Integer((a + i * s) as i64))
        .collect())
}

/// An axis of the grid: its keys, and rows of one value per key.
type Axis = (Vec<String>, Vec<Vec<toml::Value>>);

/// The axis of random samples: one row per sample, a value per sampled key.
fn sampled_axis(
    file: &Path,
    search: Option<&SearchTable>,
    sampled: &[(String, Distribution)],
) -> Result<Option<Axis>> {
    let method = search.and_then(|s| s.method.as_deref());
    match method {
        None | Some("random") => {}
        Some("tpe") => return Ok(None), // `tpe_of` takes the distributions
        Some(other) => {
            return Err(at(
                file,
                &["search", "method"],
                format!(
                    "[search] method {other:?} is not known; the methods are \"random\" and \"tpe\""
                ),
            ))
        }
    }
    if sampled.is_empty() {
        return Ok(None);
    }
    let Some(search) = search.filter(|_| method == Some("random")) else {
        return Err(at(
            file,
            &["sweep", &sampled[0].0],
            format!(
                "[sweep] `{}` is a distribution: add [search] with method = \"random\" and samples = N",
                sampled[0].0
            ),
        ));
    };
    let samples = match search.samples {
        Some(n) if (1..=MAX_POINTS).contains(&n) => n,
        other => {
            return Err(at(
                file,
                &["search", "samples"],
                match other {
                    Some(n) => format!("[search] samples must be from 1 to {MAX_POINTS}, got {n}"),
                    None => format!(
                        "[search] samples must be set: method = \"random\" draws samples = N \
                         (1 to {MAX_POINTS})"
                    ),
                },
            ))
        }
    };
    let keys = sampled.iter().map(|(k, _)| k.clone()).collect();
    Ok(Some((
        keys,
        search::sample_rows(sampled, samples, search.seed),
    )))
}

/// `method = "tpe"`: the distributions are learned, not an axis.
fn tpe_of(
    file: &Path,
    search: Option<&SearchTable>,
    sampled: Vec<(String, Distribution)>,
) -> Result<Option<Tpe>> {
    let Some(search) = search.filter(|s| s.method.as_deref() == Some("tpe")) else {
        return Ok(None);
    };
    if search.halving.is_some() {
        return Err(at(
            file,
            &["search", "halving"],
            "[search] halving with method = \"tpe\" is not supported yet: use one or the other"
                .into(),
        ));
    }
    Tpe::from_table(search, sampled)
        .map(Some)
        .map_err(|(key, problem)| at(file, &["search", key], format!("[search] {key}: {problem}")))
}

/// Equal as config values: 1 and 1.0 match.
fn same(a: &toml::Value, b: &toml::Value) -> bool {
    match (a, b) {
        (toml::Value::Integer(x), toml::Value::Float(y))
        | (toml::Value::Float(y), toml::Value::Integer(x)) => *x as f64 == *y,
        _ => a == b,
    }
}

impl Grid {
    /// The keys the grid sets per point, in the file's order, and `name`
    /// (which the grid sets for every run).
    pub fn swept_keys(&self) -> Vec<&String> {
        let mut keys: Vec<&String> = Vec::new();
        let learned = self.tpe.iter().flat_map(|t| t.keys.iter().map(|(k, _)| k));
        for k in self
            .points
            .iter()
            .flat_map(|p| p.values.iter().map(|(k, _)| k))
            .chain(learned)
        {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys
    }

    pub fn load(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading grid file {}", file.display()))?;
        refuse_spec_as_grid(file, &text)?;
        let parsed: GridFile = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.to_string().trim_end()))?;
        let known = known_keys();
        let base = base_of(file, parsed.base.as_deref())?;
        let (axes, tpe) = axes_of(file, &parsed, &known)?;
        for (what, entries) in [("exclude", &parsed.exclude), ("include", &parsed.include)] {
            for (n, entry) in entries.iter().enumerate() {
                if entry.is_empty() {
                    // An empty table matches every point: it would drop them all.
                    bail!("{}: [[{what}]] number {} is empty", file.display(), n + 1);
                }
                for key in entry.keys() {
                    check_key(file, what, key, &known)?;
                }
            }
        }
        let mut points = expand(file, &axes)?;
        points.retain(|p| {
            !parsed.exclude.iter().any(|ex| {
                ex.iter()
                    .all(|(k, v)| p.values.iter().any(|(pk, pv)| pk == k && same(pv, v)))
            })
        });
        for inc in &parsed.include {
            let point = Point {
                values: inc.clone().into_iter().collect(),
            };
            if !points.contains(&point) {
                points.push(point);
            }
        }
        Ok(Grid {
            file: file.to_path_buf(),
            name: name_of(file, parsed.name)?,
            base,
            spec: parsed.spec,
            points,
            halving: parsed.search.and_then(|s| s.halving),
            tpe,
        })
    }
}

/// Fails when the file given as a grid is a run spec.
fn refuse_spec_as_grid(file: &Path, text: &str) -> Result<()> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Ok(()); // the grid parser says what is wrong
    };
    let is_spec = config::RunConfig::keys()
        .any(|k| table.get(k.section()).is_some_and(toml::Value::is_table));
    if is_spec && !grid_only_keys().any(|k| table.contains_key(k)) {
        bail!(
            "{} is a run spec, not a grid: run it with `runner run {}`, or sweep it \
             from a grid file that says `base = \"{}\"` and has a [sweep] table",
            file.display(),
            file.display(),
            file.display()
        );
    }
    Ok(())
}

/// The base spec, relative to the grid file, checked to be a spec.
fn base_of(file: &Path, base: Option<&Path>) -> Result<Option<PathBuf>> {
    let Some(base) = base.map(|b| file.parent().unwrap_or(Path::new(".")).join(b)) else {
        return Ok(None);
    };
    if base.is_file() {
        refuse_grid_as_spec(&base)?;
        return Ok(Some(base));
    }
    Err(at(
        file,
        &["base"],
        if base.exists() {
            format!("base spec {} is not a file", base.display())
        } else {
            format!("base spec {} does not exist", base.display())
        },
    ))
}

/// The grid's axes: each [sweep] key alone, each [[zip]] group together,
/// then the random samples' axis.
fn axes_of(file: &Path, parsed: &GridFile, known: &[String]) -> Result<(Vec<Axis>, Option<Tpe>)> {
    let mut axes: Vec<Axis> = Vec::new();
    let mut sampled: Vec<(String, Distribution)> = Vec::new();
    for (key, value) in &parsed.sweep {
        check_key(file, "sweep", key, known)?;
        if let Some(dist) = value.as_table().and_then(Distribution::parse) {
            let dist =
                dist.map_err(|e| at(file, &["sweep", key], format!("[sweep] `{key}`: {e}")))?;
            sampled.push((key.clone(), dist));
            continue;
        }
        let values = values_of(file, "sweep", key, value)?;
        axes.push((
            vec![key.clone()],
            values.into_iter().map(|v| vec![v]).collect(),
        ));
    }
    for (g, group) in parsed.zip.iter().enumerate() {
        axes.push(zip_axis(file, parsed, g, group, known)?);
    }
    if let Some(axis) = sampled_axis(file, parsed.search.as_ref(), &sampled)? {
        axes.push(axis);
    }
    let tpe = tpe_of(file, parsed.search.as_ref(), sampled)?;
    Ok((axes, tpe))
}

/// [[zip]] number `g + 1`: keys that vary together, one axis.
fn zip_axis(
    file: &Path,
    parsed: &GridFile,
    g: usize,
    group: &toml::Table,
    known: &[String],
) -> Result<Axis> {
    let mut columns = Vec::new();
    for (key, value) in group {
        check_key(file, "zip", key, known)?;
        if parsed.sweep.contains_key(key) {
            bail!(
                "{}: `{key}` is both in [sweep] and in [[zip]] number {}",
                file.display(),
                g + 1
            );
        }
        columns.push((key.clone(), values_of(file, "zip", key, value)?));
    }
    if columns.is_empty() {
        bail!("{}: [[zip]] number {} is empty", file.display(), g + 1);
    }
    let len = columns[0].1.len();
    if let Some((key, values)) = columns.iter().find(|(_, v)| v.len() != len) {
        bail!(
            "{}: [[zip]] number {}: `{}` has {} values but `{key}` has {}; zipped lists must have equal lengths",
            file.display(),
            g + 1,
            columns[0].0,
            len,
            values.len()
        );
    }
    let keys = columns.iter().map(|(k, _)| k.clone()).collect();
    let rows = (0..len)
        .map(|i| columns.iter().map(|(_, v)| v[i].clone()).collect())
        .collect();
    Ok((keys, rows))
}

/// The product of the axes, the first axis slowest.
fn expand(file: &Path, axes: &[Axis]) -> Result<Vec<Point>> {
    let sizes: Vec<usize> = axes.iter().map(|(_, rows)| rows.len()).collect();
    let total = sizes.iter().try_fold(1usize, |n, &k| n.checked_mul(k));
    if total.is_none_or(|t| t > MAX_POINTS) {
        let sizes: Vec<String> = axes
            .iter()
            .map(|(keys, rows)| format!("{} ({})", keys.join("+"), rows.len()))
            .collect();
        bail!(
            "{}: the grid has more than {MAX_POINTS} points: {}",
            file.display(),
            sizes.join(" x ")
        );
    }
    let mut points = vec![Point { values: Vec::new() }];
    for (keys, rows) in axes {
        let mut next = Vec::with_capacity(points.len() * rows.len());
        for point in &points {
            for row in rows {
                let mut values = point.values.clone();
                values.extend(keys.iter().cloned().zip(row.iter().cloned()));
                next.push(Point { values });
            }
        }
        points = next;
    }
    Ok(points)
}

/// The sweep's name: as written, else the file's stem. It is a folder
/// under the results folder: one plain component.
fn name_of(file: &Path, name: Option<String>) -> Result<String> {
    let name = name
        .or_else(|| file.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "sweep".into());
    let probe = config::RunConfig {
        name: name.clone(),
        ..Default::default()
    };
    if let Some((_, problem)) = probe.problems().into_iter().find(|(k, _)| *k == "name") {
        return Err(at(file, &["name"], format!("`name` {problem}")));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(v: &[toml::Value]) -> Vec<f64> {
        v.iter()
            .map(|x| x.as_float().or(x.as_integer().map(|i| i as f64)).unwrap())
            .collect()
    }

    #[test]
    fn ranges_expand_linear_log_and_stepped() {
        let t: toml::Table = toml::from_str("start = 0\nstop = 1\nnum = 3").unwrap();
        assert_eq!(floats(&expand_range(&t).unwrap()), vec![0.0, 0.5, 1.0]);
        let t: toml::Table =
            toml::from_str("start = 1e-3\nstop = 1e-1\nnum = 3\nlog = true").unwrap();
        assert_eq!(floats(&expand_range(&t).unwrap()), vec![1e-3, 1e-2, 1e-1]);
        let t: toml::Table = toml::from_str("start = 0\nstop = 4\nstep = 2").unwrap();
        assert_eq!(
            expand_range(&t).unwrap(),
            vec![
                toml::Value::Integer(0),
                toml::Value::Integer(2),
                toml::Value::Integer(4)
            ]
        );
        let t: toml::Table = toml::from_str("start = 0.1\nstop = 0.3\nstep = 0.1").unwrap();
        assert_eq!(floats(&expand_range(&t).unwrap()), vec![0.1, 0.2, 0.3]);
        for bad in [
            "start = 0\nstop = 1",
            "start = 1\nstop = 0\nstep = 1",
            "start = 0\nstop = 1\nnum = 0",
            "start = 0\nstop = 1\nnum = 2\nlog = true",
            "stop = 1\nnum = 2",
        ] {
            let t: toml::Table = toml::from_str(bad).unwrap();
            assert!(expand_range(&t).is_err(), "{bad}");
        }
    }

    #[test]
    fn slug_is_readable_and_safe() {
        let values = vec![
            ("data.dir".to_string(), toml::Value::String("a/b c".into())),
            (
                "model.activation".to_string(),
                toml::Value::String("relu".into()),
            ),
            ("train.lr".to_string(), toml::Value::Float(0.01)),
        ];
        assert_eq!(Point { values }.slug(), "dir=a_b_c,activation=relu,lr=0.01");
    }
}
