//! One file per subcommand; each takes its parsed arguments and returns
//! the process exit code.

pub mod bench;
pub mod eval;
pub mod predict;
pub mod report;
pub mod run;
pub mod sweep;

/// Sizes rayon's global pool: `threads = 0` means one thread per core.
pub fn init_threads(threads: usize) -> usize {
    let n = if threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        threads
    };
    // Fails only if the pool was built already (by an earlier call): keep that one.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    rayon::current_num_threads()
}
