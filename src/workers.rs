//! One single-threaded runtime per core, each serving the HTTP connections
//! handed to it in turn. A connection's reads, writes and timers then stay
//! on one thread with its own reactor and timer, and no task moves between
//! cores: with thousands of connections this cuts HTTP's p99 by more than
//! half against the work-stealing runtime. Thrift measured worse on them
//! (more CPU a call, a longer tail), so it stays on the main runtime
//! (BENCHMARKS.md). The listener, the connection cap and the body budget
//! stay where they are, shared by all.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The per-core runtimes, until dropped.
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Dropping these ends each runtime; what still runs there is dropped.
    _stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// A runtime on a thread of its own for each of the machine's cores.
    pub fn start() -> io::Result<Workers> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (mut handles, mut stops) = (Vec::new(), Vec::new());
        for i in 0..cores {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("xm-worker-{i}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                })?;
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            _stops: stops,
        })
    }

    /// The runtime that serves the next connection.
    pub fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }
}
