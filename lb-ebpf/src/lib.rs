#![no_std]
// Empty on purpose: lb-userspace build-depends on this library target so cargo reruns
// its build script (which compiles the `lb` binary for BPF) whenever this crate changes.
