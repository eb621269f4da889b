//! Fetching missing dataset files from public mirrors, as torchvision does:
//! try each mirror in turn, verify the MD5, and only then put the file in
//! place (written to a temporary file in the same folder, then renamed).

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Result};
use md5::{Digest, Md5};

use crate::config::{DataConfig, Dataset};

/// One file of a dataset and the checksums that identify it.
#[derive(Debug, Clone, Copy)]
pub struct Resource {
    pub name: &'static str,
    /// MD5 of the original `.gz` as the mirrors serve it.
    pub gz_md5: &'static str,
    /// MD5 of the decompressed contents, where known: re-compressed copies
    /// of the same data have other gz bytes but these contents.
    pub raw_md5: Option<&'static str>,
}

const MNIST: [Resource; 4] = [
    Resource {
        name: "train-images-idx3-ubyte",
        gz_md5: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        raw_md5: Some("6bbc9ace898e44ae57da46a324031adb"),
    },
    Resource {
        name: "train-labels-idx1-ubyte",
        gz_md5: "d53e105ee54ea40749a09fcbcd1e9432",
        raw_md5: Some("a25bea736e30d166cdddb491f175f624"),
    },
    Resource {
        name: "t10k-images-idx3-ubyte",
        gz_md5: "9fb629c4189551a2d022fa330f9573f3",
        raw_md5: Some("2646ac647ad5339dbf082846283269ea"),
    },
    Resource {
        name: "t10k-labels-idx1-ubyte",
        gz_md5: "ec29112dd5afa0611ce80d1b7f02629c",
        raw_md5: Some("27ae3e4e09519cfbb04c329615203637"),
    },
];

const FASHION_MNIST: [Resource; 4] = [
    Resource {
        name: "train-images-idx3-ubyte",
        gz_md5: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        raw_md5: None,
    },
    Resource {
        name: "train-labels-idx1-ubyte",
        gz_md5: "25c81989df183df01b3e8a0aad5dffbe",
        raw_md5: None,
    },
    Resource {
        name: "t10k-images-idx3-ubyte",
        gz_md5: "bef4ecab320f06d8554ea6380940ec79",
        raw_md5: None,
    },
    Resource {
        name: "t10k-labels-idx1-ubyte",
        gz_md5: "bb300cfdad3c16e7a12a480ee83cd310",
        raw_md5: None,
    },
];

/// The four files, in the order train images, train labels, test images, test labels.
pub fn resources(dataset: Dataset) -> [Resource; 4] {
    match dataset {
        Dataset::Mnist => MNIST,
        Dataset::FashionMnist => FASHION_MNIST,
    }
}

/// The mirrors torchvision uses, tried in order.
pub fn default_mirrors(dataset: Dataset) -> Vec<String> {
    match dataset {
        Dataset::Mnist => vec![
            "https://ossci-datasets.s3.amazonaws.com/mnist/".into(),
            "http://yann.lecun.com/exdb/mnist/".into(),
        ],
        Dataset::FashionMnist => {
            vec!["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/".into()]
        }
    }
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Accepts a downloaded `.gz` when either its own MD5 or that of its
/// decompressed contents is the canonical one.
pub fn verify(resource: &Resource, gz_bytes: &[u8]) -> Result<()> {
    let gz = md5_hex(gz_bytes);
    if gz == resource.gz_md5 {
        return Ok(());
    }
    let mut raw = Vec::new();
    let decoded = flate2::read::GzDecoder::new(gz_bytes).read_to_end(&mut raw);
    if let (Ok(_), Some(expected)) = (decoded, resource.raw_md5) {
        if md5_hex(&raw) == expected {
            return Ok(());
        }
    }
    bail!(
        "checksum mismatch for {}.gz: MD5 {gz} is not the published {}{}",
        resource.name,
        resource.gz_md5,
        resource
            .raw_md5
            .map(|m| format!(" (nor do its contents have MD5 {m})"))
            .unwrap_or_default()
    )
}

/// The body at `url`, or why not, in words (the URL itself is not repeated).
fn fetch(url: &str) -> std::result::Result<Vec<u8>, String> {
    let response = ureq::get(url)
        .timeout(std::time::Duration::from_secs(120))
        .call()
        .map_err(|e| match e {
            ureq::Error::Status(code, response) => {
                format!("HTTP {code} {}", response.status_text())
            }
            ureq::Error::Transport(t) => {
                let mut words = t.kind().to_string();
                if let Some(message) = t.message() {
                    words = format!("{words}: {message}");
                }
                match std::error::Error::source(&t) {
                    Some(cause) => format!("{words} ({cause})"),
                    None => words,
                }
            }
        })?;
    let mut body = Vec::new();
    response
        .into_reader()
        .take(256 << 20)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading the response: {e}"))?;
    Ok(body)
}

/// The mirrors to try, in order: `data.base_url` alone when set.
fn mirrors(cfg: &DataConfig) -> Vec<String> {
    match &cfg.base_url {
        Some(url) if url.ends_with('/') => vec![url.clone()],
        Some(url) => vec![format!("{url}/")],
        None => default_mirrors(cfg.dataset),
    }
}

/// Downloads each of `missing` into `cfg.dir`, trying every mirror in turn.
/// Stops at the first file no mirror could give, with an error that lists
/// each mirror's reason once and says what to do instead. A folder this
/// call created is removed again if it stays empty.
pub fn download_all(cfg: &DataConfig, missing: &[Resource], needed: &[Resource]) -> Result<()> {
    let dir = &cfg.dir;
    let existed = dir.exists();
    let result = missing
        .iter()
        .try_for_each(|resource| download(resource, &mirrors(cfg), dir));
    if result.is_err() && !existed {
        // Only removes an empty folder: files that did arrive are kept.
        let _ = std::fs::remove_dir(dir);
    }
    result.map_err(|failures| {
        let all: Vec<String> = needed.iter().map(|r| format!("{}.gz", r.name)).collect();
        anyhow::anyhow!(
            "could not download {} into {}:\n{}\n\
             what to do instead, any one of:\n  \
             - put the files in {} (gzipped or raw IDX): {}\n  \
             - point data.dir at a folder that has them: --set data.dir=PATH\n  \
             - fetch from a mirror you can reach: --set data.base_url=http://HOST/PATH/",
            cfg.dataset,
            dir.display(),
            failures,
            dir.display(),
            all.join(", ")
        )
    })
}

/// Downloads one file into `dir` as `<name>.gz`, trying each mirror in
/// turn. On failure, the lines of the error: one per mirror with its reason.
fn download(
    resource: &Resource,
    mirrors: &[String],
    dir: &Path,
) -> std::result::Result<(), String> {
    let file_name = format!("{}.gz", resource.name);
    let mut failures = Vec::new();
    for mirror in mirrors {
        eprintln!("downloading {file_name} from {mirror}");
        let fetched = fetch(&format!("{mirror}{file_name}")).and_then(|bytes| {
            verify(resource, &bytes)
                .map_err(|e| e.to_string())
                .map(|_| bytes)
        });
        let failure = match fetched {
            Ok(bytes) => match std::fs::create_dir_all(dir)
                .map_err(anyhow::Error::from)
                .and_then(|_| crate::atomic::write_atomic(&dir.join(&file_name), &bytes))
            {
                Ok(()) => return Ok(()),
                Err(e) => format!("writing it into {}: {e:#}", dir.display()),
            },
            Err(reason) => reason,
        };
        failures.push(format!("  {file_name} from {mirror}: {failure}"));
    }
    Err(failures.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn accepts_recompressed_contents_and_rejects_others() {
        let resource = Resource {
            name: "x",
            gz_md5: "00000000000000000000000000000000",
            raw_md5: Some("5d41402abc4b2a76b9719d911017c592"),
        };
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"hello").unwrap();
        let gz = enc.finish().unwrap();
        verify(&resource, &gz).unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"hellO").unwrap();
        let err = verify(&resource, &enc.finish().unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("checksum mismatch for x.gz"),
            "{err}"
        );
    }
}
