//! Compiles the XDP program (crate `lb-ebpf`) for bpfel-unknown-none with the nightly
//! toolchain and bpf-linker; `dataplane` embeds the object from OUT_DIR.

use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("lb-userspace has no parent directory"))?
        .join("lb-ebpf");
    let root = root.to_str().context("non-UTF-8 path to lb-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the XDP program; if a tool is missing, run `cargo xtask setup`")
}
