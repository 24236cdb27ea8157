//! Build steps that depend on the target:
//! - with the `cuda` feature, the kernels in src/kernels/*.cu are compiled to PTX, one module
//!   per file (nvcc from the CUDA toolkit, or the one ../shared/tools/cuda-build.sh provides);
//! - on Windows targets, the app icon and version resource are embedded in the .exe.
//!   Build scripts run on the host, so the target is read from CARGO_CFG_TARGET_OS.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        build_kernels();
    }
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("windows") {
        windows_resources();
    }
}

/// The .exe's icon and version information (from Cargo.toml).
fn windows_resources() {
    println!("cargo::rerun-if-changed=resources/lychee-rerank.ico");
    let mut res = winresource::WindowsResource::new();
    res.set_icon("resources/lychee-rerank.ico")
        .set("ProductName", "Lychee Rerank")
        .set(
            "FileDescription",
            "Lychee Rerank: rank photos by how well they match a description",
        )
        .set("CompanyName", "Lychee Rerank developers");
    if let Err(e) = res.compile() {
        // Without a resource compiler the program still builds, only without its icon.
        println!("cargo::warning=the Windows icon and version resource were not embedded: {e}");
    }
}

#[cfg(feature = "cuda")]
fn build_kernels() {
    println!("cargo::rerun-if-changed=src/kernels");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    // The .cu files include common.cuh: a change to it recompiles them all.
    let ptx = cudaforge::KernelBuilder::new()
        .source_dir("src/kernels")
        .watch(cudaforge::collect_headers(&["src/kernels"]))
        .arg("-std=c++17")
        .arg("-O3")
        .build_ptx()
        .expect("compiling src/kernels with nvcc");
    ptx.write(out.join("kernels_ptx.rs"))
        .expect("writing kernels_ptx.rs");
}

#[cfg(not(feature = "cuda"))]
fn build_kernels() {}
