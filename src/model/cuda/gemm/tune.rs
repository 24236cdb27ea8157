//! The measured choice of [`super::linear_residual_tuned`]: each candidate algorithm that
//! does not split the inner dimension and the unfused product-then-pass, timed on the
//! device the first time a product of a size class comes, the fastest kept per shape in
//! memory and per size class on disk ([`super::super::super::product_choices`]).

use candle_core::cuda::cudarc::cublaslt::sys;
use candle_core::{Result, Tensor};

use super::super::super::product_choices::Stored;
use super::algos::{runs, splits_k};
use super::{Described, Lt, Shape};

/// What a tuned product runs.
#[derive(Clone, Copy)]
pub(super) enum Choice {
    Algo(sys::cublasLtMatmulAlgo_t),
    /// The product, then the pass that adds the residual (and bias).
    Unfused,
}

/// The stored key of a shape's size class: the GPU, cuBLASLt's version, the sizes and
/// alignments, but the rows only by their power of two (a batch's photos vary in size: what
/// ran fastest for 31 968 rows is taken for 30 000 without measuring again).
fn class_key(lt: &Lt, (n, rows, k, bias, residual, aligns): Shape) -> String {
    format!(
        "{} | n {n} k {k} bias {bias} residual {residual} rows 2^{} align {aligns:?}",
        lt.device_key,
        rows.max(1).ilog2()
    )
}

/// What a tuned product of shape `key` runs: the choice made for the shape before in this
/// run, else [`choose`]'s (kept for the shape).
pub(super) fn choice(
    lt: &Lt,
    described: &Described,
    key: Shape,
    candidates: &[sys::cublasLtMatmulAlgo_t],
    launch: &dyn Fn(&sys::cublasLtMatmulAlgo_t) -> Result<()>,
    unfused: &dyn Fn() -> Result<Tensor>,
) -> Result<Choice> {
    let known = lt
        .chosen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .copied();
    if let Some(c) = known {
        return Ok(c);
    }
    let c = choose(lt, described, key, candidates, launch, unfused)?;
    lt.chosen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, c);
    Ok(c)
}

/// What a tuned product of shape `key` runs: the stored choice of its size class where
/// cuBLASLt says that algorithm runs this shape, else what [`measure`] finds (stored for the
/// class when it had none).
fn choose(
    lt: &Lt,
    described: &Described,
    key: Shape,
    candidates: &[sys::cublasLtMatmulAlgo_t],
    launch: &dyn Fn(&sys::cublasLtMatmulAlgo_t) -> Result<()>,
    unfused: &dyn Fn() -> Result<Tensor>,
) -> Result<Choice> {
    let class = class_key(lt, key);
    let stored = lt
        .stored
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&class);
    match stored {
        Some(Stored::Unfused) => return Ok(Choice::Unfused),
        Some(Stored::Algo(data)) => {
            let algo = sys::cublasLtMatmulAlgo_t { data };
            if runs(lt, described, &algo) {
                return Ok(Choice::Algo(algo));
            }
        }
        None => {}
    }
    let tuned: Vec<_> = candidates
        .iter()
        .copied()
        .filter(|a| splits_k(a) <= 1)
        .collect();
    let choice = measure(lt, &tuned, launch, unfused)?;
    if stored.is_none() {
        let keep = match choice {
            Choice::Algo(a) => Stored::Algo(a.data),
            Choice::Unfused => Stored::Unfused,
        };
        // A file that cannot be written only means measuring again in the next run.
        let _ = lt
            .stored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(class, keep);
    }
    Ok(choice)
}

/// The fastest of `candidates` (run through `launch`) and `unfused` on the device: after
/// about 20 ms of the first candidate (the clock rises from idle), each runs once per round,
/// in turn, for five rounds, and each is judged by its median. A candidate other than the
/// first (cuBLASLt's own guess) is taken only when it is at least 3 % faster: the GPU's
/// clock moves under its power limit by more than the smaller differences.
fn measure(
    lt: &Lt,
    candidates: &[sys::cublasLtMatmulAlgo_t],
    launch: &dyn Fn(&sys::cublasLtMatmulAlgo_t) -> Result<()>,
    unfused: &dyn Fn() -> Result<Tensor>,
) -> Result<Choice> {
    use candle_core::cuda::WrapErr;
    use candle_core::cuda::cudarc::driver::sys::CUevent_flags;
    const ROUNDS: usize = 5;
    const WARM_MS: f32 = 20.0;
    const MARGIN: f32 = 0.97;
    let stream = &lt.stream;
    let event = || {
        stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .w()
    };
    // Candidates that fail to start are left out.
    let contenders: Vec<Choice> = candidates
        .iter()
        .filter(|a| launch(a).is_ok())
        .map(|a| Choice::Algo(*a))
        .chain([Choice::Unfused])
        .collect();
    let run = |c: &Choice| -> Result<()> {
        match c {
            Choice::Algo(a) => launch(a),
            Choice::Unfused => unfused().map(drop),
        }
    };
    let start = event()?;
    run(&contenders[0])?;
    let end = event()?;
    let once = start.elapsed_ms(&end).w()?.max(0.001);
    for _ in 0..((WARM_MS / once).ceil() as usize).min(200) {
        run(&contenders[0])?;
    }
    let mut marks = Vec::with_capacity(ROUNDS * contenders.len());
    for _ in 0..ROUNDS {
        for c in &contenders {
            let start = event()?;
            run(c)?;
            marks.push((start, event()?));
        }
    }
    let mut medians = Vec::with_capacity(contenders.len());
    for (i, _) in contenders.iter().enumerate() {
        let mut times = (0..ROUNDS)
            .map(|r| {
                let (s, e) = &marks[r * contenders.len() + i];
                s.elapsed_ms(e).w()
            })
            .collect::<Result<Vec<f32>>>()?;
        times.sort_by(f32::total_cmp);
        medians.push(times[ROUNDS / 2]);
    }
    let fastest = (0..contenders.len())
        .min_by(|&a, &b| medians[a].total_cmp(&medians[b]))
        .unwrap_or(0);
    Ok(if medians[fastest] < MARGIN * medians[0] {
        contenders[fastest]
    } else {
        contenders[0]
    })
}
