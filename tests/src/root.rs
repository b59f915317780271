//! Kernel tests need root. Skipping them silently would let a green run hide that nothing
//! was tested, so a skip is loud, and in CI it is a failure.

use std::io::Write as _;

/// Returns `true` when the process runs as root. Otherwise panics under CI (env `CI` set),
/// or prints a loud warning and returns `false` so the caller can return early.
pub fn require_root(test_name: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test_name}: CI must run as root; kernel tests may not skip");
    }
    let bar = "!".repeat(72);
    // Straight to the stderr handle, not eprintln!: the test harness captures the macro's
    // output of passing tests, and a skipped test passes.
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\n\
         !! SKIPPED: {test_name} needs root (BPF, network namespaces).\n\
         !! Nothing was tested. Run as root, e.g.: sudo -E cargo xtask test\n\
         !! (with CI set, this skip is a failure)\n\
         {bar}\n"
    );
    false
}
