//! One file per subcommand; each takes its parsed arguments and returns
//! the process exit code.

pub mod bench;
pub mod eval;
pub mod export;
pub mod jobs;
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
    // The calling (main) thread is one of the pool's threads: the training
    // loop then starts each parallel op itself instead of handing it to
    // another thread and sleeping until it is done, a context switch per op
    // that cost ~10 % at batch 16.
    // Fails only if the pool was built already (by an earlier call): keep that one.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .use_current_thread()
        .build_global();
    rayon::current_num_threads()
}
