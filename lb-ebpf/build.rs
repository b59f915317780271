use which::which;

/// Rebuild when bpf-linker changes (a new LLVM can change the object).
fn main() {
    let linker = which("bpf-linker").unwrap_or_else(|e| {
        panic!("bpf-linker not found on PATH ({e}); run `cargo xtask setup` to install it")
    });
    println!("cargo:rerun-if-changed={}", linker.display());
}
