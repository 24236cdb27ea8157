//! The checkpoint's tensors read from its safetensors files by positioned reads on several
//! threads, straight into the memory they end in: a host vector, or (on a GPU) page-locked
//! buffers the device copies from while the next piece is read.
//!
//! A memory-mapped file faults its pages in one by one as it is read, and the copy to the
//! device from such memory goes through the driver's own staging, one copy at a time; read
//! this way, the 16 GB checkpoint reaches the GPU at about 4 GB/s. Here each file's header
//! is parsed once (every tensor's place checked against the file's length, so that a file
//! cut short is named before anything loads), and a tensor is read in pieces of
//! [`PIECE`] bytes on rayon's threads.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
#[cfg(feature = "cuda")]
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use rayon::prelude::*;

use super::files::file_name;
use super::{ModelError, Result};

/// Bytes one thread reads at a time.
const PIECE: usize = 1 << 20;

/// Largest header a safetensors file may have (as the format's own reader allows).
const MAX_HEADER: u64 = 100_000_000;

/// Where one tensor's values are.
#[derive(Debug, Clone)]
pub struct Stored {
    file: usize,
    /// From the start of the file.
    offset: u64,
    len: usize,
    pub dtype: DType,
    pub shape: Shape,
}

impl Stored {
    pub fn bytes(&self) -> usize {
        self.len
    }
}

struct StoredFile {
    path: PathBuf,
    file: File,
}

/// The tensors of a model's weight files, by name.
pub struct Checkpoint {
    files: Vec<StoredFile>,
    tensors: HashMap<String, Stored>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field(
                "files",
                &self.files.iter().map(|f| &f.path).collect::<Vec<_>>(),
            )
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Checkpoint {
    /// Opens `paths` and reads their headers. A file that cannot be read, whose header is
    /// not a safetensors header, or that is shorter than its header says is named in the
    /// error, with what to do.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut tensors: HashMap<String, Stored> = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let damaged = |why: String| ModelError::BadWeights {
                file: file_name(path),
                why: format!("{why}; download this file again"),
            };
            let file = File::open(path).map_err(|source| ModelError::Read {
                path: path.clone(),
                source,
            })?;
            let file_len = file
                .metadata()
                .map_err(|source| ModelError::Read {
                    path: path.clone(),
                    source,
                })?
                .len();
            for (name, stored) in read_header(&file, file_len, index).map_err(damaged)? {
                if let Some(earlier) = tensors.get(&name) {
                    return Err(ModelError::BadWeights {
                        file: file_name(path),
                        why: format!(
                            "it holds {name}, which {} holds too; the model folder mixes two checkpoints",
                            file_name(&paths[earlier.file])
                        ),
                    });
                }
                tensors.insert(name, stored);
            }
            files.push(StoredFile {
                path: path.clone(),
                file,
            });
        }
        Ok(Checkpoint { files, tensors })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&Stored> {
        self.tensors.get(name)
    }

    /// The weight files, for messages.
    pub fn file_names(&self) -> String {
        self.files
            .iter()
            .map(|f| file_name(&f.path))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Reads `dst.len()` bytes of `t` from byte `from` of its values, in pieces on several
    /// threads.
    pub fn read_into(&self, t: &Stored, from: usize, dst: &mut [u8]) -> candle_core::Result<()> {
        assert!(from + dst.len() <= t.len, "a read within the tensor");
        let stored = &self.files[t.file];
        let at = t.offset + from as u64;
        let result = if dst.len() <= PIECE {
            read_exact_at(&stored.file, dst, at)
        } else {
            dst.par_chunks_mut(PIECE)
                .enumerate()
                .try_for_each(|(i, part)| {
                    read_exact_at(&stored.file, part, at + (i * PIECE) as u64)
                })
        };
        result.map_err(|e| {
            candle_core::Error::Msg(format!(
                "could not read {} bytes at {at} of {}: {e}",
                dst.len(),
                stored.path.display()
            ))
        })
    }

    /// `t` as a tensor in host memory, read directly into its vector.
    fn host_tensor(&self, t: &Stored) -> candle_core::Result<Tensor> {
        macro_rules! read_as {
            ($zero:expr, $cast:expr) => {{
                let mut values = vec![$zero; t.shape.elem_count()];
                // SAFETY: the values are plain numbers of the stored type's size, every bit
                // pattern is one of them, and the byte view covers exactly the vector.
                let bytes = unsafe {
                    std::slice::from_raw_parts_mut(
                        values.as_mut_ptr().cast::<u8>(),
                        std::mem::size_of_val(values.as_slice()),
                    )
                };
                self.read_into(t, 0, bytes)?;
                Tensor::from_vec($cast(values), t.shape.clone(), &Device::Cpu)
            }};
        }
        match t.dtype {
            DType::BF16 => read_as!(0u16, |v: Vec<u16>| cast_vec::<half::bf16>(v)),
            DType::F16 => read_as!(0u16, |v: Vec<u16>| cast_vec::<half::f16>(v)),
            DType::F32 => read_as!(0f32, |v| v),
            DType::F64 => read_as!(0f64, |v| v),
            DType::U8 => read_as!(0u8, |v| v),
            DType::U32 => read_as!(0u32, |v| v),
            DType::I16 => read_as!(0i16, |v| v),
            DType::I32 => read_as!(0i32, |v| v),
            DType::I64 => read_as!(0i64, |v| v),
            d => candle_core::bail!("tensors of {d:?} are not read"),
        }
    }
}

/// A vector of 16-bit values as the half type of the same bits.
fn cast_vec<T: HalfBits>(v: Vec<u16>) -> Vec<T> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: `T` is `repr(transparent)` over `u16` (the `HalfBits` types), so the
    // allocation's layout, length and capacity are the same for both.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<T>(), v.len(), v.capacity()) }
}

/// The half-precision types, each a `u16` underneath.
trait HalfBits {}
impl HalfBits for half::bf16 {}
impl HalfBits for half::f16 {}

/// The tensors of one file's header, checked against the file's length.
fn read_header(
    file: &File,
    file_len: u64,
    index: usize,
) -> std::result::Result<Vec<(String, Stored)>, String> {
    let mut head = [0u8; 8];
    if file_len < 8 {
        return Err(format!(
            "it is {file_len} bytes long, shorter than any header"
        ));
    }
    read_exact_at(file, &mut head, 0).map_err(|e| e.to_string())?;
    let n = u64::from_le_bytes(head);
    if n > MAX_HEADER || 8 + n > file_len {
        return Err(format!(
            "its header says it is {n} bytes long, and the file is {file_len} bytes"
        ));
    }
    let mut text = vec![0u8; n as usize];
    read_exact_at(file, &mut text, 8).map_err(|e| e.to_string())?;
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&text).map_err(|e| format!("its header is not JSON ({e})"))?;
    let data_start = 8 + n;
    let mut out = Vec::with_capacity(header.len());
    for (name, entry) in header {
        if name == "__metadata__" {
            continue;
        }
        let entry: HeaderEntry = serde_json::from_value(entry)
            .map_err(|e| format!("its header's entry for {name} is not usable ({e})"))?;
        let dtype = dtype_of(&entry.dtype)
            .ok_or_else(|| format!("{name} is stored as {}, a type not read", entry.dtype))?;
        let shape = Shape::from(entry.shape);
        let [start, end] = entry.data_offsets;
        let len = shape.elem_count() * dtype.size_in_bytes();
        if end < start || end - start != len as u64 {
            return Err(format!(
                "its header gives {name} {} bytes for a {shape:?} tensor of {dtype:?}",
                end.saturating_sub(start)
            ));
        }
        if data_start + end > file_len {
            return Err(format!(
                "{name} ends at byte {} and the file is {file_len} bytes: it is cut short",
                data_start + end
            ));
        }
        out.push((
            name,
            Stored {
                file: index,
                offset: data_start + start,
                len,
                dtype,
                shape,
            },
        ));
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

fn dtype_of(name: &str) -> Option<DType> {
    Some(match name {
        "BF16" => DType::BF16,
        "F16" => DType::F16,
        "F32" => DType::F32,
        "F64" => DType::F64,
        "U8" => DType::U8,
        "U32" => DType::U32,
        "I16" => DType::I16,
        "I32" => DType::I32,
        "I64" => DType::I64,
        _ => return None,
    })
}

/// Fills `buf` from byte `at` of `file` without moving a shared cursor, so that several
/// threads read one file at once.
fn read_exact_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, at)
    }
    #[cfg(windows)]
    {
        let (mut buf, mut at) = (buf, at);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(file, buf, at) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    at += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The checkpoint as candle's weight source: each tensor read when the model asks for it,
/// into host memory or through the GPU's page-locked staging.
pub struct CheckpointWeights {
    checkpoint: Arc<Checkpoint>,
    /// Made at the first tensor for the GPU, freed with the weight source once the model
    /// is built.
    #[cfg(feature = "cuda")]
    staging: Mutex<Staging>,
}

#[cfg(feature = "cuda")]
enum Staging {
    NotYet,
    Ready(super::cuda::WeightStaging),
    /// The page-locked buffers could not be had: tensors go through host memory instead
    /// (slower, the same values).
    Unavailable,
}

impl CheckpointWeights {
    pub fn new(checkpoint: Arc<Checkpoint>) -> Self {
        CheckpointWeights {
            checkpoint,
            #[cfg(feature = "cuda")]
            staging: Mutex::new(Staging::NotYet),
        }
    }

    fn load(&self, name: &str, dev: &Device) -> candle_core::Result<Tensor> {
        let Some(t) = self.checkpoint.get(name) else {
            candle_core::bail!(
                "the weights lack tensor {name} (looked in {})",
                self.checkpoint.file_names()
            );
        };
        match dev {
            Device::Cpu => self.checkpoint.host_tensor(t),
            #[cfg(feature = "cuda")]
            Device::Cuda(cuda) => {
                let mut staging = self.staging.lock().unwrap_or_else(|e| e.into_inner());
                if matches!(*staging, Staging::NotYet) {
                    *staging = match super::cuda::WeightStaging::new(cuda) {
                        Ok(buffers) => Staging::Ready(buffers),
                        // The load goes on through ordinary memory: slower, the same
                        // tensors.
                        Err(_) => Staging::Unavailable,
                    };
                }
                match &mut *staging {
                    Staging::Ready(buffers) => {
                        buffers.upload(cuda, t.dtype, &t.shape, t.bytes(), &mut |from, dst| {
                            self.checkpoint.read_into(t, from, dst)
                        })
                    }
                    _ => self.checkpoint.host_tensor(t)?.to_device(dev),
                }
            }
            _ => self.checkpoint.host_tensor(t)?.to_device(dev),
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for CheckpointWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some(t) = self.checkpoint.get(name)
            && t.shape != s
        {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: t.shape.clone(),
            }
            .bt());
        }
        self.load(name, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.checkpoint.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn tiny_model_files() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-model");
        super::super::files::ModelFiles::locate(&dir)
            .expect("the tiny model's files")
            .weights
    }

    #[test]
    fn every_tensor_reads_as_candles_own_reader_reads_it() {
        let paths = tiny_model_files();
        let checkpoint = Checkpoint::open(&paths).unwrap();
        let mut seen = 0;
        for path in &paths {
            for (name, expected) in candle_core::safetensors::load(path, &Device::Cpu).unwrap() {
                let t = checkpoint.get(&name).expect("every tensor is indexed");
                let got = checkpoint.host_tensor(t).unwrap();
                assert_eq!(got.dtype(), expected.dtype(), "{name}");
                assert_eq!(got.shape(), expected.shape(), "{name}");
                let a = got.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
                let b = expected
                    .flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap();
                assert_eq!(
                    a.to_vec1::<f64>().unwrap(),
                    b.to_vec1::<f64>().unwrap(),
                    "{name}"
                );
                seen += 1;
            }
        }
        assert_eq!(seen, checkpoint.tensors.len());
        assert!(seen > 50, "the tiny model has its tensors ({seen})");
    }

    #[test]
    fn reads_in_pieces_on_several_threads_land_in_order() {
        // A tensor larger than several pieces, with values that tell each byte's place.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.safetensors");
        let n = (3 * PIECE + 12_345) / 4;
        let values: Vec<u32> = (0..n as u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let t = Tensor::from_vec(values.clone(), n, &Device::Cpu).unwrap();
        candle_core::safetensors::save(&HashMap::from([("big".to_owned(), t)]), &path).unwrap();
        let checkpoint = Checkpoint::open(std::slice::from_ref(&path)).unwrap();
        let got = checkpoint
            .host_tensor(checkpoint.get("big").unwrap())
            .unwrap();
        assert_eq!(got.to_vec1::<u32>().unwrap(), values);
        // A read from the middle, across piece boundaries.
        let stored = checkpoint.get("big").unwrap();
        let mut part = vec![0u8; 2 * PIECE + 8];
        checkpoint.read_into(stored, PIECE - 4, &mut part).unwrap();
        let expected: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(part, expected[PIECE - 4..3 * PIECE + 4]);
    }

    #[test]
    fn a_file_cut_short_or_not_safetensors_is_named_before_anything_loads() {
        let dir = tempfile::tempdir().unwrap();
        let source = &tiny_model_files()[0];
        let bytes = std::fs::read(source).unwrap();
        // The error of opening a file of these bytes, which must name it.
        let refused = |name: &str, contents: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            let msg = Checkpoint::open(&[path]).unwrap_err().to_string();
            assert!(msg.contains(name), "{msg}");
            msg
        };
        let msg = refused("cut.safetensors", &bytes[..bytes.len() - 1]);
        assert!(msg.contains("cut short"), "{msg}");
        let msg = refused("notes.safetensors", b"these are not weights at all");
        assert!(msg.contains("header"), "{msg}");
        refused("tiny.safetensors", b"abc");
    }

    #[test]
    fn a_tensor_in_two_files_is_refused() {
        let source = tiny_model_files()[0].clone();
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy.safetensors");
        std::fs::copy(&source, &copy).unwrap();
        let msg = Checkpoint::open(&[source, copy]).unwrap_err().to_string();
        assert!(
            msg.contains("copy.safetensors") && msg.contains("two checkpoints"),
            "{msg}"
        );
    }
}
