//! `runner predict RUN_DIR`: labels and probabilities from a run's best
//! checkpoint, for the first test images or for PNG files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::checkpoint::Weights;
use crate::cli::PredictArgs;
use crate::config::{self, Sources};
use crate::data::{self, PIXELS};
use crate::inference;
use crate::report::figures::{self, Labelled};
use crate::results::{self, RunDir};

pub fn execute(args: &PredictArgs) -> Result<i32> {
    let run_dir = RunDir::open(&args.run_dir)?;
    let spec = run_dir.file(results::CONFIG_FILE);
    let config = config::load(&Sources::new(Some(&spec), &args.overrides.sets))?;
    if let Some(out) = &args.out {
        if out.is_dir() {
            bail!(
                "--out {} is a folder: give a file name, e.g. {}",
                out.display(),
                out.join("predictions.png").display()
            );
        }
    }
    let weights = Weights::load(&run_dir.file(results::BEST_FILE))?;
    let (names, images, labels): (Vec<String>, Vec<f32>, Vec<Option<usize>>) = match &args.images {
        Some(dir) => {
            let files = png_files(dir)?;
            let mut pixels = Vec::with_capacity(files.len() * PIXELS);
            for f in &files {
                pixels.extend(read_png(f)?);
            }
            let names = files.iter().map(|f| f.display().to_string()).collect();
            (names, pixels, vec![None; files.len()])
        }
        None => {
            let test = data::load_test(&config.data).context("loading the test images")?;
            let n = args.count.min(test.len());
            let pixels = (0..n).flat_map(|i| test.image(i)).collect();
            let names = (0..n).map(|i| format!("test image {i}")).collect();
            (
                names,
                pixels,
                (0..n).map(|i| Some(test.labels[i] as usize)).collect(),
            )
        }
    };
    let probs = inference::probabilities(&config, &weights, &images)?;
    let mut correct = 0;
    for ((name, p), label) in names.iter().zip(&probs).zip(&labels) {
        let top = inference::top_class(p);
        let shown: Vec<String> = p.iter().map(|v| format!("{v:.3}")).collect();
        let label_text = match label {
            Some(l) => {
                correct += usize::from(*l == top);
                format!("label {l}  ")
            }
            None => String::new(),
        };
        println!(
            "{name}: {label_text}predicted {top} (p {:.3})  [{}]",
            p[top],
            shown.join(" ")
        );
    }
    if labels.iter().all(Option::is_some) && !labels.is_empty() {
        println!("{correct}/{} correct", labels.len());
    }
    if let Some(out) = &args.out {
        let items: Vec<Labelled> = images
            .chunks_exact(PIXELS)
            .zip(&probs)
            .zip(&labels)
            .map(|((pixels, p), label)| Labelled {
                pixels,
                label: *label,
                predicted: inference::top_class(p),
            })
            .collect();
        let base = out.with_extension("");
        let written = figures::prediction_grid(&items, 10.min(items.len().max(1)), &base)?;
        let wanted = out.with_extension("png");
        if wanted != *out {
            std::fs::rename(&written[0], out)?;
        }
        eprintln!("wrote {} (and {})", out.display(), written[1].display());
    }
    Ok(crate::exit::SUCCESS)
}

fn png_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        // Regular files only (symlinks to them too): a FIFO or a device
        // named *.png would block or never end.
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .png files", dir.display());
    }
    Ok(files)
}

/// A PNG as 28x28 floats in [0, 1], white digit on black as in MNIST.
fn read_png(path: &Path) -> Result<Vec<f32>> {
    let img = image::open(path)
        .with_context(|| format!("{}: not a readable PNG", path.display()))?
        .into_luma8();
    let img = if img.dimensions() == (28, 28) {
        img
    } else {
        image::imageops::resize(&img, 28, 28, image::imageops::FilterType::Triangle)
    };
    let mut pixels: Vec<f32> = img.pixels().map(|p| p.0[0] as f32 / 255.0).collect();
    // MNIST digits are light on dark; a mostly light image is ink on paper.
    if pixels.iter().sum::<f32>() / pixels.len() as f32 > 0.5 {
        pixels.iter_mut().for_each(|p| *p = 1.0 - *p);
    }
    Ok(pixels)
}
