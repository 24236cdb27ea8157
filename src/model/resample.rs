//! Antialiased bicubic (the reranker) and bilinear (the embedder) resizing of 8-bit RGB
//! images, computed the way the references resize: torchvision's
//! `resize(uint8 tensor, BICUBIC or BILINEAR, antialias=True)`, which runs
//! PyTorch's separable uint8 kernel (aten/src/ATen/native/cpu/UpSampleKernel.cpp,
//! `_compute_index_ranges_int16_weights`, and UpSampleKernelAVXAntialias.h). That kernel
//! follows PIL's resampler: the Keys cubic with a = -0.5 stretched by the scale when
//! shrinking, weights normalized in f64 then rounded to int16 at the largest precision
//! under which the axis's largest weight still fits, the horizontal pass first into an
//! 8-bit intermediate, then the vertical pass.

/// A packed RGB image, rows top to bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

impl Rgb8 {
    /// Wraps packed RGB bytes; `None` when the length does not match the size.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Option<Self> {
        (data.len() == width * height * 3).then_some(Rgb8 {
            width,
            height,
            data,
        })
    }
}

/// The interpolation filter of a resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Keys cubic, a = -0.5 (PIL's BICUBIC, resample = 3).
    Bicubic,
    /// Triangle (PIL's BILINEAR, resample = 2).
    Bilinear,
}

impl Filter {
    /// Half the filter's width in input pixels at scale 1.
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Bilinear => 1.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Bicubic => cubic(x),
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
        }
    }

    /// The filter a preprocessor_config.json `resample` value names (PIL's numbering).
    pub fn from_pil(resample: u64) -> Option<Self> {
        match resample {
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            _ => None,
        }
    }
}

/// The cubic convolution kernel with a = -0.5 (PIL's and PyTorch's antialias filter).
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// The taps of one axis: for each output index the first input index and its weights.
struct Taps {
    first: Vec<usize>,
    len: Vec<usize>,
    /// `stride` weights per output index, in fixed point.
    weights: Vec<i32>,
    stride: usize,
    precision: u32,
}

impl Taps {
    fn new(input: usize, output: usize, filter: Filter) -> Self {
        let scale = input as f64 / output as f64;
        // The filter's support, stretched by the scale when shrinking.
        let support = filter.support() * scale.max(1.0);
        let stride = support.ceil() as usize * 2 + 1;
        let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
        let mut first = Vec::with_capacity(output);
        let mut len = Vec::with_capacity(output);
        let mut real = vec![0.0f64; output * stride];
        let mut wt_max = 0.0f64;
        for i in 0..output {
            let center = scale * (i as f64 + 0.5);
            // `as i64` truncates toward zero, as the C++ casts do.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xsize = (((center + support + 0.5) as i64).min(input as i64) - xmin)
                .clamp(0, stride as i64) as usize;
            let row = &mut real[i * stride..i * stride + xsize];
            let mut total = 0.0f64;
            for (j, w) in row.iter_mut().enumerate() {
                *w = filter.weight((j as f64 + xmin as f64 - center + 0.5) * invscale);
                total += *w;
            }
            if total != 0.0 {
                for w in row.iter_mut() {
                    *w /= total;
                    wt_max = wt_max.max(*w);
                }
            }
            first.push(xmin as usize);
            len.push(xsize);
        }
        let mut precision = 0u32;
        while precision < 22 {
            let next = (0.5 + wt_max * (1u64 << (precision + 1)) as f64) as i64;
            if next >= 1 << 15 {
                break;
            }
            precision += 1;
        }
        let unit = (1u64 << precision) as f64;
        let weights = real
            .iter()
            .map(|&w| {
                let v = w * unit;
                if v < 0.0 {
                    (-0.5 + v) as i32
                } else {
                    (0.5 + v) as i32
                }
            })
            .collect();
        Taps {
            first,
            len,
            weights,
            stride,
            precision,
        }
    }

    /// One output sample from `len` inputs read through `at`.
    #[inline]
    fn apply(&self, i: usize, at: impl Fn(usize) -> u8) -> u8 {
        let w = &self.weights[i * self.stride..i * self.stride + self.len[i]];
        let mut acc: i32 = 1 << (self.precision - 1);
        for (j, &wj) in w.iter().enumerate() {
            acc += i32::from(at(self.first[i] + j)) * wj;
        }
        (acc >> self.precision).clamp(0, 255) as u8
    }
}

/// Resizes `src` to `width` x `height` with the antialiased bicubic filter.
pub fn resize_bicubic_aa(src: &Rgb8, width: usize, height: usize) -> Rgb8 {
    resize_aa(src, width, height, Filter::Bicubic)
}

/// Resizes `src` to `width` x `height` with `filter`, antialiased; an unchanged axis is
/// not resampled.
pub fn resize_aa(src: &Rgb8, width: usize, height: usize, filter: Filter) -> Rgb8 {
    let mut current = std::borrow::Cow::Borrowed(src);
    if width != src.width {
        let taps = Taps::new(src.width, width, filter);
        let mut out = vec![0u8; width * src.height * 3];
        for y in 0..src.height {
            let row_in = &src.data[y * src.width * 3..(y + 1) * src.width * 3];
            let row_out = &mut out[y * width * 3..(y + 1) * width * 3];
            for x in 0..width {
                for c in 0..3 {
                    row_out[x * 3 + c] = taps.apply(x, |i| row_in[i * 3 + c]);
                }
            }
        }
        current = std::borrow::Cow::Owned(Rgb8 {
            width,
            height: src.height,
            data: out,
        });
    }
    if height != current.height {
        let taps = Taps::new(current.height, height, filter);
        let stride = width * 3;
        let input = &current.data;
        let mut out = vec![0u8; stride * height];
        for y in 0..height {
            let row_out = &mut out[y * stride..(y + 1) * stride];
            for (k, v) in row_out.iter_mut().enumerate() {
                *v = taps.apply(y, |i| input[i * stride + k]);
            }
        }
        current = std::borrow::Cow::Owned(Rgb8 {
            width,
            height,
            data: out,
        });
    }
    current.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (input, output, filter) in [(1000, 100), (100, 1000), (37, 36), (36, 37), (5, 3)]
            .into_iter()
            .flat_map(|(i, o)| [(i, o, Filter::Bicubic), (i, o, Filter::Bilinear)])
        {
            let taps = Taps::new(input, output, filter);
            for i in 0..output {
                let sum: i32 = taps.weights[i * taps.stride..i * taps.stride + taps.len[i]]
                    .iter()
                    .sum();
                let unit = 1i32 << taps.precision;
                assert!(
                    (sum - unit).abs() <= taps.len[i] as i32,
                    "{input}->{output} at {i}: {sum} vs {unit}"
                );
            }
        }
    }

    #[test]
    fn flat_image_stays_flat_and_same_size_is_a_copy() {
        let src = Rgb8::new(50, 40, [10u8, 200, 77].repeat(50 * 40)).unwrap();
        let out = resize_bicubic_aa(&src, 23, 61);
        assert!(out.data.chunks(3).all(|p| p == [10, 200, 77]));
        assert_eq!(resize_bicubic_aa(&src, 50, 40), src);
    }
}
