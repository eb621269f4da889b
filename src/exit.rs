//! Every exit code runner returns, in one place. Commands return one of
//! these; `main` turns an error into `FAILURE` after printing it.

/// Done: everything asked for was done (or was done already).
pub const SUCCESS: i32 = 0;
/// An error was printed, or a sweep had runs that failed.
pub const FAILURE: i32 = 1;
/// `sweep --no-wait`: a halving rung waits for runs that other processes
/// are training (EX_TEMPFAIL): run it again later.
pub const WAIT: i32 = 75;
/// Stopped by Ctrl-C (128 + SIGINT): run the same command to resume.
pub const INTERRUPTED: i32 = 130;
