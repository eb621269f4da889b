//! The dataset: the four IDX files of MNIST or Fashion-MNIST, held in memory
//! as bytes (pixels are converted to f32 in [0, 1] one batch at a time).

pub mod download;
pub mod idx;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::{DataConfig, Validation};

/// Pixels per image (28 x 28, one channel).
pub const PIXELS: usize = 28 * 28;
pub const CLASSES: usize = 10;

/// One split: `len()` images of 28x28 u8 pixels and their labels.
#[derive(Debug, Clone)]
pub struct Split {
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Keeps only the first `n` images.
    pub fn truncate(&mut self, n: usize) {
        self.labels.truncate(n);
        // Saturating: a limit far above the split's size keeps everything.
        self.pixels.truncate(n.saturating_mul(PIXELS));
    }

    /// Writes the images at `indices` as f32 in [0, 1] (ToTensor's scaling)
    /// into `out`, and their labels into `labels`.
    pub fn gather(&self, indices: &[usize], out: &mut Vec<f32>, labels: &mut Vec<usize>) {
        out.clear();
        labels.clear();
        // Callers hand `out` on to a tensor and pass an empty vector next
        // time: one allocation of the right size, not a series of regrowths.
        out.reserve_exact(indices.len() * PIXELS);
        for &i in indices {
            out.extend(
                self.pixels[i * PIXELS..(i + 1) * PIXELS]
                    .iter()
                    .map(|&p| p as f32 / 255.0),
            );
            labels.push(self.labels[i] as usize);
        }
    }

    /// One image as f32 in [0, 1].
    pub fn image(&self, i: usize) -> Vec<f32> {
        self.pixels[i * PIXELS..(i + 1) * PIXELS]
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct Data {
    /// The images SGD sees.
    pub train: Split,
    /// Held out of the training split (`data.validation = N`); None when
    /// the test split doubles as validation.
    pub held_out: Option<Split>,
    pub test: Split,
}

impl Data {
    /// The split that picks the best epoch.
    pub fn validation(&self) -> &Split {
        self.held_out.as_ref().unwrap_or(&self.test)
    }
}

impl Split {
    /// The images at `indices`, in that order.
    fn select(&self, indices: &[usize]) -> Split {
        let mut pixels = Vec::with_capacity(indices.len() * PIXELS);
        for &i in indices {
            pixels.extend_from_slice(&self.pixels[i * PIXELS..(i + 1) * PIXELS]);
        }
        Split {
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// Splits off `n` images chosen by `split_seed` (a function of the
    /// seed and the split's size only, so every `train.seed` gets the same
    /// split): (the rest, the held-out ones), each in its original order.
    pub fn hold_out(&self, n: usize, split_seed: u64) -> (Split, Split) {
        let mut rng = ChaCha8Rng::seed_from_u64(split_seed);
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut rng);
        let (held, kept) = order.split_at(n.min(self.len()));
        let (mut held, mut kept) = (held.to_vec(), kept.to_vec());
        held.sort_unstable();
        kept.sort_unstable();
        (self.select(&kept), self.select(&held))
    }
}

/// The order in which an epoch visits the training images. It depends only
/// on the seed and the epoch, so a resumed run sees the same order.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64 + 1);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// Finds `<name>.gz` or `<name>` in `dir`: whatever is there by that name
/// (reading it says so when it is a folder or a device, not a file).
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [format!("{name}.gz"), name.to_string()]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.symlink_metadata().is_ok())
}

/// Which splits a command needs: `eval` and `predict` need only the test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Both,
    TestOnly,
}

/// Makes sure the files for `need` are in `cfg.dir`, downloading the
/// missing ones when allowed; returns their paths in `resources` order
/// (None for a file not needed).
fn ensure_files(cfg: &DataConfig, need: Need) -> Result<[Option<PathBuf>; 4]> {
    let resources = download::resources(cfg.dataset);
    let first = if need == Need::TestOnly { 2 } else { 0 };
    let wanted = &resources[first..];
    if let Err(e) = std::fs::read_dir(&cfg.dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            bail!("cannot read the data folder {}: {e}", cfg.dir.display());
        }
    }
    let missing: Vec<_> = wanted
        .iter()
        .filter(|r| find_file(&cfg.dir, r.name).is_none())
        .copied()
        .collect();
    if !missing.is_empty() {
        if !cfg.download {
            let names: Vec<String> = missing.iter().map(|r| format!("{}.gz", r.name)).collect();
            bail!(
                "{} files missing in {}: {}\n  set data.download = true to fetch them, or put the files there \
                 (gzipped or raw IDX), or point data.dir at the folder that has them",
                cfg.dataset,
                cfg.dir.display(),
                names.join(", ")
            );
        }
        download::download_all(cfg, &missing, wanted)?;
    }
    Ok(std::array::from_fn(|i| {
        (i >= first).then(|| {
            find_file(&cfg.dir, resources[i].name).expect("present: checked or just downloaded")
        })
    }))
}

/// Loads both splits, downloading missing files first when allowed.
pub fn load(cfg: &DataConfig) -> Result<Data> {
    let [Some(train_x), Some(train_y), Some(test_x), Some(test_y)] = ensure_files(cfg, Need::Both)?
    else {
        unreachable!("ensure_files returns every path for Need::Both")
    };
    let mut train = read_split(&train_x, &train_y)?;
    let test = load_test_from(cfg, &test_x, &test_y)?;
    if let Some(n) = cfg.limit_train {
        train.truncate(n);
    }
    let held_out =
        match cfg.validation {
            Validation::TestSplit => None,
            Validation::HoldOut(n) => {
                if n >= train.len() {
                    bail!(
                    "data.validation holds out {n} images, but the training split has only {}{}: \
                     hold out fewer",
                    train.len(),
                    if cfg.limit_train.is_some() { " (data.limit_train)" } else { "" }
                );
                }
                let (rest, held) = train.hold_out(n, cfg.split_seed);
                train = rest;
                Some(held)
            }
        };
    Ok(Data {
        train,
        held_out,
        test,
    })
}

/// Loads the test split alone (downloading only its two files if missing).
pub fn load_test(cfg: &DataConfig) -> Result<Split> {
    let [_, _, Some(test_x), Some(test_y)] = ensure_files(cfg, Need::TestOnly)? else {
        unreachable!("ensure_files returns the test paths for Need::TestOnly")
    };
    load_test_from(cfg, &test_x, &test_y)
}

fn load_test_from(cfg: &DataConfig, images: &Path, labels: &Path) -> Result<Split> {
    let mut test = read_split(images, labels)?;
    if let Some(n) = cfg.limit_test {
        test.truncate(n);
    }
    Ok(test)
}

fn read_split(images: &Path, labels: &Path) -> Result<Split> {
    let imgs = idx::read_images(images)?;
    let lbls = idx::read_labels(labels)?;
    if imgs.count != lbls.len() {
        return Err(idx::IdxError::CountMismatch {
            images: images.display().to_string(),
            n_images: imgs.count,
            labels: labels.display().to_string(),
            n_labels: lbls.len(),
        }
        .into());
    }
    Ok(Split {
        pixels: imgs.pixels,
        labels: lbls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(100, 7, 0);
        assert_eq!(a, epoch_order(100, 7, 0));
        assert_ne!(a, epoch_order(100, 7, 1));
        assert_ne!(a, epoch_order(100, 8, 0));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn hold_out_is_a_seeded_partition_that_keeps_order() {
        let n = 100;
        let split = Split {
            pixels: (0..n * PIXELS).map(|i| (i / PIXELS) as u8).collect(),
            labels: (0..n).map(|i| i as u8).collect(),
        };
        let (rest, held) = split.hold_out(30, 7);
        assert_eq!((rest.len(), held.len()), (70, 30));
        let mut all: Vec<u8> = rest.labels.iter().chain(&held.labels).copied().collect();
        all.sort();
        assert_eq!(all, split.labels, "every image exactly once");
        assert!(
            held.labels.windows(2).all(|w| w[0] < w[1]),
            "original order"
        );
        assert!(
            rest.labels.windows(2).all(|w| w[0] < w[1]),
            "original order"
        );
        // Pixels travel with their labels.
        assert_eq!(held.pixels[PIXELS * 3], held.labels[3]);
        assert_eq!(split.hold_out(30, 7).1.labels, held.labels, "deterministic");
        assert_ne!(
            split.hold_out(30, 8).1.labels,
            held.labels,
            "the split seed decides"
        );
    }

    #[test]
    fn gather_scales_the_chosen_images_in_order() {
        let n = 200;
        let split = Split {
            pixels: (0..n * PIXELS).map(|i| (i * 31 % 256) as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
        };
        for count in [3, 150] {
            let indices: Vec<usize> = (0..count).map(|k| (k * 37 + 5) % n).collect();
            // Stale contents are replaced, not appended to.
            let (mut out, mut labels) = (vec![9.0; 7], vec![42]);
            split.gather(&indices, &mut out, &mut labels);
            assert_eq!((out.len(), labels.len()), (count * PIXELS, count));
            for (k, &i) in indices.iter().enumerate() {
                assert_eq!(labels[k], i % 10);
                for p in [0, 1, PIXELS - 1] {
                    let want = split.pixels[i * PIXELS + p] as f32 / 255.0;
                    assert_eq!(out[k * PIXELS + p], want, "image {i} pixel {p}");
                }
            }
        }
    }
}
