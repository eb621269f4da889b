//! IDX files (the MNIST container format), gzipped or raw.
//!
//! Layout: a 4-byte magic `0x00 0x00 <type> <ndims>`, then `ndims` big-endian
//! u32 dimensions, then the data. MNIST uses type 0x08 (unsigned byte):
//! images have 3 dims (count, rows, cols), labels 1 dim (count).

use std::io::Read;
use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum IdxError {
    #[error("{file}: cannot read: {reason}")]
    Io { file: String, reason: String },
    #[error("{file}: too short to be an IDX file ({len} bytes)")]
    TooShort { file: String, len: usize },
    #[error("{file}: bad magic number {found:02x?}: expected 00 00 08 {dims:02x} (unsigned bytes, {dims} dimensions)")]
    BadMagic {
        file: String,
        found: [u8; 4],
        dims: u8,
    },
    #[error("{file}: header says {expected} data bytes but the file holds {actual}")]
    WrongLength {
        file: String,
        expected: usize,
        actual: usize,
    },
    #[error("{file}: images are {rows}x{cols}, expected 28x28")]
    WrongImageSize {
        file: String,
        rows: usize,
        cols: usize,
    },
    #[error("{file}: label {label} at index {index} is not a class 0..9")]
    BadLabel {
        file: String,
        index: usize,
        label: u8,
    },
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        images: String,
        n_images: usize,
        labels: String,
        n_labels: usize,
    },
}

/// Images as stored: u8 pixels, row-major, `count * rows * cols` of them.
#[derive(Debug, Clone)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Reads a whole file, gunzipping it when it starts with the gzip magic.
pub fn read_maybe_gzipped(path: &Path) -> Result<Vec<u8>, IdxError> {
    let io = |e: std::io::Error| IdxError::Io {
        file: path.display().to_string(),
        reason: e.to_string(),
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Checks the magic and returns the dimensions and the data that follows.
fn parse_header<'a>(
    file: &str,
    bytes: &'a [u8],
    dims: u8,
) -> Result<(Vec<usize>, &'a [u8]), IdxError> {
    let header_len = 4 + 4 * dims as usize;
    if bytes.len() < header_len {
        return Err(IdxError::TooShort {
            file: file.into(),
            len: bytes.len(),
        });
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != [0, 0, 0x08, dims] {
        return Err(IdxError::BadMagic {
            file: file.into(),
            found: magic,
            dims,
        });
    }
    let shape: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let data = &bytes[header_len..];
    let expected = shape.iter().product::<usize>();
    if data.len() != expected {
        return Err(IdxError::WrongLength {
            file: file.into(),
            expected,
            actual: data.len(),
        });
    }
    Ok((shape, data))
}

pub fn parse_images(file: &str, bytes: &[u8]) -> Result<IdxImages, IdxError> {
    let (shape, data) = parse_header(file, bytes, 3)?;
    let (count, rows, cols) = (shape[0], shape[1], shape[2]);
    if rows != 28 || cols != 28 {
        return Err(IdxError::WrongImageSize {
            file: file.into(),
            rows,
            cols,
        });
    }
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: data.to_vec(),
    })
}

pub fn parse_labels(file: &str, bytes: &[u8]) -> Result<Vec<u8>, IdxError> {
    let (_, data) = parse_header(file, bytes, 1)?;
    if let Some((index, &label)) = data.iter().enumerate().find(|(_, &l)| l > 9) {
        return Err(IdxError::BadLabel {
            file: file.into(),
            index,
            label,
        });
    }
    Ok(data.to_vec())
}

pub fn read_images(path: &Path) -> Result<IdxImages, IdxError> {
    parse_images(&path.display().to_string(), &read_maybe_gzipped(path)?)
}

pub fn read_labels(path: &Path) -> Result<Vec<u8>, IdxError> {
    parse_labels(&path.display().to_string(), &read_maybe_gzipped(path)?)
}

/// Encodes images as IDX (used by tests and tools that write small sets).
pub fn encode_images(count: usize, pixels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, 3];
    for d in [count as u32, 28, 28] {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// Encodes labels as IDX.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, 1];
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let pixels: Vec<u8> = (0..2 * 784).map(|i| (i % 256) as u8).collect();
        let images = parse_images("x", &encode_images(2, &pixels)).unwrap();
        assert_eq!((images.count, images.rows, images.cols), (2, 28, 28));
        assert_eq!(images.pixels, pixels);
        assert_eq!(
            parse_labels("y", &encode_labels(&[3, 9])).unwrap(),
            vec![3, 9]
        );
    }

    #[test]
    fn each_malformation_is_its_own_error() {
        let good = encode_images(1, &[0; 784]);
        assert!(matches!(
            parse_images("f", &good[..10]),
            Err(IdxError::TooShort { .. })
        ));
        let mut bad_magic = good.clone();
        bad_magic[2] = 0x09;
        assert!(matches!(
            parse_images("f", &bad_magic),
            Err(IdxError::BadMagic { .. })
        ));
        // A labels file given where images are expected: wrong dimension count.
        assert!(matches!(
            parse_images("f", &encode_labels(&[1; 20])),
            Err(IdxError::BadMagic { .. })
        ));
        assert!(matches!(
            parse_images("f", &good[..good.len() - 1]),
            Err(IdxError::WrongLength {
                expected: 784,
                actual: 783,
                ..
            })
        ));
        let mut small = encode_images(1, &[0; 784]);
        small[11] = 27; // rows = 27
        assert!(matches!(
            parse_images("f", &small),
            Err(IdxError::WrongLength { .. }) | Err(IdxError::WrongImageSize { .. })
        ));
        let mut wide = vec![0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 14, 0, 0, 0, 56];
        wide.extend_from_slice(&[0; 784]);
        assert!(matches!(
            parse_images("f", &wide),
            Err(IdxError::WrongImageSize {
                rows: 14,
                cols: 56,
                ..
            })
        ));
        assert!(matches!(
            parse_labels("f", &encode_labels(&[1, 10])),
            Err(IdxError::BadLabel {
                index: 1,
                label: 10,
                ..
            })
        ));
    }

    #[test]
    fn error_names_the_file() {
        let err = parse_labels("data/t10k-labels-idx1-ubyte", &[1, 2]).unwrap_err();
        assert!(
            err.to_string().contains("data/t10k-labels-idx1-ubyte"),
            "{err}"
        );
    }
}
