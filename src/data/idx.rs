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
    #[error("{file}: holds more than the {expected} data bytes its header says")]
    TooLong { file: String, expected: usize },
    #[error("{file}: header promises {dims:?} items, more than runner reads (at most {MAX_DATA_BYTES} bytes)")]
    TooLarge { file: String, dims: Vec<usize> },
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

/// The most data bytes an IDX file may promise: 4 GiB, eight times
/// MNIST's training images. A header asking for more is refused before
/// anything is inflated.
pub const MAX_DATA_BYTES: usize = 1 << 32;

/// Reads an IDX file, gunzipping it when it starts with the gzip magic:
/// the header first, then exactly the bytes it promises (one more is
/// read only to tell a too-long file). A gzip bomb or a huge file is
/// never inflated beyond what its header says.
fn read_idx(path: &Path, dims: u8) -> Result<(Vec<usize>, Vec<u8>), IdxError> {
    let file = path.display().to_string();
    let io = |e: std::io::Error| IdxError::Io {
        file: file.clone(),
        reason: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(IdxError::Io {
            file: file.clone(),
            reason: "not a regular file".into(),
        });
    }
    let mut buffered = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    let gzipped = std::io::BufRead::fill_buf(&mut buffered)
        .map_err(io)?
        .starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let header_len = 4 + 4 * dims as usize;
    let mut header = Vec::with_capacity(header_len);
    reader
        .by_ref()
        .take(header_len as u64)
        .read_to_end(&mut header)
        .map_err(io)?;
    let (shape, _) = parse_header(&file, &header, dims, false)?;
    let expected = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_DATA_BYTES)
        .ok_or_else(|| IdxError::TooLarge {
            file: file.clone(),
            dims: shape.clone(),
        })?;
    let mut data = Vec::with_capacity(expected.min(64 << 20));
    reader
        .take(expected as u64 + 1)
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() > expected {
        return Err(IdxError::TooLong { file, expected });
    }
    if data.len() != expected {
        return Err(IdxError::WrongLength {
            file,
            expected,
            actual: data.len(),
        });
    }
    Ok((shape, data))
}

/// Checks the magic and returns the dimensions and the data that follows.
/// With `whole`, `bytes` is the whole file and its data length is checked.
fn parse_header<'a>(
    file: &str,
    bytes: &'a [u8],
    dims: u8,
    whole: bool,
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
    let expected = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .unwrap_or(usize::MAX);
    if whole && data.len() != expected {
        return Err(IdxError::WrongLength {
            file: file.into(),
            expected,
            actual: data.len(),
        });
    }
    Ok((shape, data))
}

pub fn parse_images(file: &str, bytes: &[u8]) -> Result<IdxImages, IdxError> {
    let (shape, data) = parse_header(file, bytes, 3, true)?;
    images_from(file, &shape, data)
}

fn images_from(file: &str, shape: &[usize], data: &[u8]) -> Result<IdxImages, IdxError> {
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
    let (_, data) = parse_header(file, bytes, 1, true)?;
    labels_from(file, data)
}

fn labels_from(file: &str, data: &[u8]) -> Result<Vec<u8>, IdxError> {
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
    let (shape, data) = read_idx(path, 3)?;
    images_from(&path.display().to_string(), &shape, &data)
}

pub fn read_labels(path: &Path) -> Result<Vec<u8>, IdxError> {
    let (_, data) = read_idx(path, 1)?;
    labels_from(&path.display().to_string(), &data)
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
    fn a_gzip_bomb_is_stopped_at_what_its_header_promises() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.gz");
        // A header promising one image, then 64 MB of zeros.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&encode_images(1, &[0; 784])).unwrap();
        enc.write_all(&vec![0u8; 64 << 20]).unwrap();
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        assert!(matches!(
            read_images(&path),
            Err(IdxError::TooLong { expected: 784, .. })
        ));
        // A header promising far more than runner reads is refused before inflating.
        let mut huge = vec![0, 0, 8, 3];
        for d in [u32::MAX, 28, 28] {
            huge.extend_from_slice(&d.to_be_bytes());
        }
        std::fs::write(&path, &huge).unwrap();
        assert!(matches!(read_images(&path), Err(IdxError::TooLarge { .. })));
        // A folder named like the file is no file.
        let folder = dir.path().join("folder.gz");
        std::fs::create_dir(&folder).unwrap();
        let err = read_images(&folder).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
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
