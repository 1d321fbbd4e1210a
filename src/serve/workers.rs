//! One single-threaded runtime per core, each serving the HTTP connections
//! handed to it in turn. A connection's reads, writes and timers then stay
//! on one thread with its own reactor and timer, and no task moves between
//! cores: with thousands of connections this cuts HTTP's p99 by more than
//! half against the work-stealing runtime. Thrift measured worse on them
//! (more CPU a call, a longer tail), so it stays on the main runtime
//! (BENCHMARKS.md). The listener, the connection cap and the body budget
//! stay where they are, shared by all.
//!
//! Beside them, a lane of lower CPU priority does the work of large
//! batches (parsing, looking up and encoding) while they come as a flood,
//! so that the flood cannot keep the connection threads from answering
//! small requests: the kernel gives those threads the CPU as soon as they
//! have work.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_util::task::AbortOnDropHandle;

/// The per-core runtimes and the batch lane, until dropped.
pub struct Workers {
    connections: Runtimes,
    batches: Arc<Runtimes>,
}

/// Single-threaded runtimes, each on a thread of its own, handed out in
/// turn; dropping one ends its runtime, and what still runs there is dropped.
struct Runtimes {
    handles: Vec<Handle>,
    next: AtomicUsize,
    _stops: Vec<oneshot::Sender<()>>,
}

impl Runtimes {
    /// One for each of the machine's cores, named `name-N`, at `nice`.
    fn start(name: &str, nice: libc::c_int) -> io::Result<Runtimes> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (mut handles, mut stops) = (Vec::new(), Vec::new());
        for i in 0..cores {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stops.push(stop);
            std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
                set_nice(nice);
                let _ = runtime.block_on(stopped);
            })?;
        }
        Ok(Runtimes {
            handles,
            next: AtomicUsize::new(0),
            _stops: stops,
        })
    }

    fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }
}

/// The batch lane's nice value: while both have work, its threads get
/// about a tenth of the CPU share of the connection threads (nice 0).
const BATCH_NICE: libc::c_int = 10;

/// Sets the calling thread's nice value; on Linux it is the thread's own.
fn set_nice(nice: libc::c_int) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only changes the calling thread's nice value.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, nice);
    }
}

impl Workers {
    /// The connection runtimes and the batch lane, a thread per core each.
    pub fn start() -> io::Result<Workers> {
        Ok(Workers {
            connections: Runtimes::start("xm-worker", 0)?,
            batches: Arc::new(Runtimes::start("xm-batch", BATCH_NICE)?),
        })
    }

    /// The runtime that serves the next connection.
    pub fn next(&self) -> &Handle {
        self.connections.next()
    }

    /// Where large batches do their work.
    pub fn batch_lane(&self) -> BatchLane {
        BatchLane(self.batches.clone())
    }
}

/// Threads at `BATCH_NICE` for the CPU work of large batches.
#[derive(Clone)]
pub struct BatchLane(Arc<Runtimes>);

impl BatchLane {
    /// Runs `work` on the lane, and `None` if the lane has shut down;
    /// dropping the returned future stops it.
    pub async fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> Option<T> {
        match AbortOnDropHandle::new(self.0.next().spawn(work)).await {
            Ok(done) => Some(done),
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(_) => None,
        }
    }
}
