//! `lychee-rerank bench --ops`: prints, one line each, the single operations the model
//! measures at its own shapes ([`crate::model::bench_ops`]): name and shape, microseconds
//! per call, and the rate it reached.

use candle_core::{DType, Device};

pub fn run(device: &Device, dtype: DType) -> candle_core::Result<()> {
    crate::model::bench_ops(device, dtype, |op| {
        println!("{:<40} {:>10.1} us  {}", op.name, op.micros, op.detail);
    })
}
