//! The single-threaded executor every task of `picolet run` lives on.
//! Deciding code runs here; blocking work goes to `smol::unblock` or child
//! processes so the loop never stalls.

use smol::LocalExecutor;
use std::future::Future;

thread_local! {
    static EXECUTOR: LocalExecutor<'static> = const { LocalExecutor::new() };
}

/// Spawns a task on this thread's executor. Tasks need not be `Send`.
pub fn spawn<T: 'static>(fut: impl Future<Output = T> + 'static) -> smol::Task<T> {
    EXECUTOR.with(|ex| ex.spawn(fut))
}

/// Runs `fut` to completion, driving every spawned task meanwhile.
pub fn block_on<T>(fut: impl Future<Output = T>) -> T {
    EXECUTOR.with(|ex| async_io::block_on(ex.run(fut)))
}
