//! Fetching missing dataset files from public mirrors, as torchvision does:
//! try each mirror in turn, verify the MD5, and only then put the file in
//! place (written to a temporary file in the same folder, then renamed).

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use md5::{Digest, Md5};

use crate::config::Dataset;

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

fn fetch(url: &str) -> Result<Vec<u8>> {
    let response = ureq::get(url)
        .timeout(std::time::Duration::from_secs(120))
        .call()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut body = Vec::new();
    response
        .into_reader()
        .take(256 << 20)
        .read_to_end(&mut body)
        .context("reading the response")?;
    Ok(body)
}

/// Downloads one file into `dir` as `<name>.gz`, trying each mirror in turn.
pub fn download(resource: &Resource, mirrors: &[String], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data folder {}", dir.display()))?;
    let file_name = format!("{}.gz", resource.name);
    let mut failures = Vec::new();
    for mirror in mirrors {
        let url = format!("{}{}", mirror, file_name);
        eprintln!("downloading {url}");
        match fetch(&url).and_then(|bytes| verify(resource, &bytes).map(|_| bytes)) {
            Ok(bytes) => return crate::atomic::write_atomic(&dir.join(&file_name), &bytes),
            Err(e) => failures.push(format!("{url}: {e:#}")),
        }
    }
    bail!(
        "could not download {file_name}:\n    {}",
        failures.join("\n    ")
    )
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
