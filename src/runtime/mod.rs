//! Executors, CPU placement and process-wide shutdown. Contains no broker or namesrv logic.
//!
//! Every server loop runs on a glommio `LocalExecutor` started here with its options spelled
//! out (STYLE habit 20). Shutdown is a [`Shutdown`] handle: a cross-thread, event-driven signal
//! that server loops await (never poll).

use std::io;
use std::time::Duration;

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

pub mod colocate;
pub mod mesh;
pub mod watch;
pub use watch::OffsetWatch;

/// Options for one executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Thread and executor name (shows in `top -H`).
    pub name: String,
    /// CPU to pin to, or `None` to let the kernel place it.
    pub cpu: Option<usize>,
    /// Bytes of io_uring registered buffer memory (locked memory).
    pub io_memory_bytes: usize,
    /// io_uring submission queue depth.
    pub ring_depth: usize,
    /// How long a task may run before the executor checks for preemption.
    pub preempt_timer: Duration,
    /// Run the thread under `SCHED_BATCH` (its wake-ups do not preempt the thread running on
    /// the CPU; `shardScheduling`).
    pub batch_scheduling: bool,
}

impl ExecutorOptions {
    /// Small settings for a control-plane executor such as the nameserver: it does network I/O
    /// only, so it needs little registered memory.
    pub fn control_plane(name: &str) -> ExecutorOptions {
        ExecutorOptions {
            name: name.to_string(),
            cpu: None,
            io_memory_bytes: 512 * 1024,
            ring_depth: 128,
            preempt_timer: Duration::from_millis(100),
            batch_scheduling: false,
        }
    }

    /// Locked memory this executor needs: registered buffers plus its three rings, estimated.
    pub fn locked_memory_bytes(&self) -> usize {
        self.io_memory_bytes + 3 * self.ring_depth * 128
    }
}

/// Starts `fut_gen()` on a new executor thread with `options`.
pub fn spawn_executor<G, F, T>(
    options: &ExecutorOptions,
    fut_gen: G,
) -> io::Result<ExecutorJoinHandle<T>>
where
    G: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    check_locked_memory(options.locked_memory_bytes())?;
    let placement = match options.cpu {
        Some(cpu) => Placement::Fixed(cpu),
        None => Placement::Unbound,
    };
    let batch = options.batch_scheduling;
    let name = options.name.clone();
    LocalExecutorBuilder::new(placement)
        .name(&options.name)
        .io_memory(options.io_memory_bytes)
        .ring_depth(options.ring_depth)
        .preempt_timer(options.preempt_timer)
        .spawn(move || {
            // Runs on the executor's own thread, before its first task.
            if batch {
                if let Err(e) = set_batch_scheduling() {
                    tracing::warn!(executor = %name, error = %e,
                        "SCHED_BATCH refused: this thread keeps the default policy");
                }
            }
            fut_gen()
        })
        .map_err(|e| {
            io::Error::other(format!(
                "cannot start executor {}: {e} (io_uring needs locked memory: \
                 check `ulimit -l`, see README)",
                options.name
            ))
        })
}

/// Puts the calling thread under `SCHED_BATCH` (any unprivileged thread may choose it).
pub fn set_batch_scheduling() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's scheduling policy (`libc::SCHED_*`).
pub fn scheduling_policy() -> io::Result<i32> {
    // SAFETY: pid 0 is the calling thread.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(policy)
    }
}

/// Refuses to start, with a message saying what to do, when `RLIMIT_MEMLOCK` is below what
/// io_uring will lock. Root (CAP_IPC_LOCK) is not limited.
pub fn check_locked_memory(need_bytes: usize) -> io::Result<()> {
    // SAFETY: geteuid and getrlimit only read process state; `limit` is a valid out-pointer.
    let (euid, limit) = unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let rc = libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit);
        (libc::geteuid(), (rc == 0).then_some(limit.rlim_cur))
    };
    match limit {
        Some(cur) if euid != 0 && cur != libc::RLIM_INFINITY && (cur as usize) < need_bytes => {
            Err(io::Error::other(format!(
                "locked memory limit is {} KiB but io_uring needs about {} KiB: \
                 raise it with `ulimit -l {}` (or unlimited) before starting ringmq",
                cur / 1024,
                need_bytes.div_ceil(1024),
                need_bytes.div_ceil(1024) * 2
            )))
        }
        _ => Ok(()),
    }
}

/// A process-wide stop signal that any number of executors can await. Cloneable and `Send`;
/// `trigger` wakes every waiter at once: it drops the only sender of a channel nobody sends on,
/// so every pending `recv` resolves with "disconnected". No timer, no polling.
#[derive(Clone)]
pub struct Shutdown {
    tx: std::sync::Arc<std::sync::Mutex<Option<flume::Sender<()>>>>,
    rx: flume::Receiver<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Shutdown {
        let (tx, rx) = flume::bounded(1);
        Shutdown {
            tx: std::sync::Arc::new(std::sync::Mutex::new(Some(tx))),
            rx,
        }
    }

    /// Triggers the signal. Idempotent.
    pub fn trigger(&self) {
        let sender = match self.tx.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(sender);
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        self.rx.is_disconnected()
    }

    /// Resolves once the signal is triggered.
    pub async fn wait(&self) {
        // Nothing is ever sent, so this returns only when the sender is dropped.
        let _ = self.rx.recv_async().await;
    }

    /// Blocks the calling thread until the signal is triggered (for threads outside the
    /// executors, e.g. the dashboard's main thread).
    pub fn wait_blocking(&self) {
        let _ = self.rx.recv();
    }

    /// Sleeps for `duration` (on the executor's timer); `false` when shutdown came first. For
    /// housekeeping loops (expiry scans, persistence, check passes), never request paths.
    pub async fn sleep(&self, duration: std::time::Duration) -> bool {
        let slept = async {
            glommio::timer::sleep(duration).await;
            true
        };
        let stopped = async {
            self.wait().await;
            false
        };
        futures_lite::future::or(slept, stopped).await
    }

    /// Triggers this signal when the process receives SIGINT or SIGTERM.
    pub fn on_signals(&self) -> io::Result<()> {
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])?;
        let this = self.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    tracing::info!(signal, "signal received, shutting down");
                    this.trigger();
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

    /// The lost-wake-up tests' watchdog: what `executor` sends on `done`, once it is joined, or
    /// a failure saying `hang` when nothing comes within 60 s (the hung executor thread is left
    /// behind; the test process ends with it).
    fn watchdog<T>(executor: ExecutorJoinHandle<()>, done: flume::Receiver<T>, hang: &str) -> T {
        match done.recv_timeout(Duration::from_secs(60)) {
            Ok(result) => {
                executor.join().expect("joined");
                result
            }
            Err(_) => panic!("{hang}"),
        }
    }

    /// An executor asleep on a long timer, woken from another thread (the cross-thread wake
    /// path vendor/glommio/PATCHES.md changes), must arm a shorter timer started then and
    /// not wait for the longer one.
    #[test]
    fn a_short_timer_started_while_asleep_on_a_long_one_is_not_held_back_by_it() {
        let (tx, rx) = flume::bounded::<()>(1);
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(128 * 1024)
            .spawn(move || async move {
                let fired = Rc::new(RefCell::new(Vec::new()));
                let long = {
                    let fired = Rc::clone(&fired);
                    glommio::spawn_local(async move {
                        glommio::timer::sleep(Duration::from_secs(30)).await;
                        fired.borrow_mut().push("long");
                    })
                };
                // The executor goes to sleep with the 30 s timer armed; another thread
                // wakes it, and a 10 ms timer starts.
                rx.recv_async().await.expect("sent");
                let started = Instant::now();
                glommio::timer::sleep(Duration::from_millis(10)).await;
                let waited = started.elapsed();
                fired.borrow_mut().push("short");
                drop(long);
                (fired.take(), waited)
            })
            .expect("executor");
        std::thread::sleep(Duration::from_millis(100));
        tx.send(()).expect("executor waits");
        let (fired, waited) = handle.join().expect("joined");
        assert_eq!(fired, vec!["short"]);
        // Held back by the long timer it would wait 30 s; allow for a loaded machine.
        assert!(
            waited < Duration::from_secs(15),
            "short timer waited {waited:?}"
        );
    }

    /// vendor/glommio/PATCHES.md: timers stay armed until they fire, so one can fire at any
    /// point of the executor's loop, including between the reactor's poll and the run of
    /// the task queues. A run that stops there (`need_preempt`) must not let the executor
    /// park with tasks ready. Two tasks of one executor bounce a byte over a socket pair, so
    /// the executor polls its rings thousands of times a second, with a 100 µs preempt
    /// timer firing among those polls; a task left ready in a park that nothing outside
    /// ends (the peer is the other task) hangs the executor, and the watchdog here fails
    /// the test. Without the fix in `run_task_queues` this hung within a second or two.
    #[test]
    fn a_timer_firing_between_poll_and_run_does_not_park_the_executor_with_tasks_ready() {
        use futures_lite::{AsyncReadExt, AsyncWriteExt};
        const ROUND_TRIPS: u32 = 40_000;
        let (done_tx, done_rx) = flume::bounded::<(u32, Duration)>(1);
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(128 * 1024)
            .preempt_timer(Duration::from_micros(100))
            .spawn(move || async move {
                let (mut a, mut b) = glommio::net::UnixStream::pair().expect("socket pair");
                let started = Instant::now();
                let echo = glommio::spawn_local(async move {
                    let mut byte = [0u8; 1];
                    for _ in 0..ROUND_TRIPS {
                        b.read_exact(&mut byte).await.expect("read");
                        b.write_all(&byte).await.expect("write");
                    }
                });
                let mut byte = [7u8; 1];
                let mut trips = 0;
                for _ in 0..ROUND_TRIPS {
                    a.write_all(&byte).await.expect("write");
                    a.read_exact(&mut byte).await.expect("read");
                    trips += 1;
                }
                echo.await;
                let _ = done_tx.send((trips, started.elapsed()));
            })
            .expect("executor");
        let (trips, took) = watchdog(
            executor,
            done_rx,
            "the executor parked with tasks ready and never woke",
        );
        assert_eq!(trips, ROUND_TRIPS);
        eprintln!("{ROUND_TRIPS} round trips in {took:?}");
    }

    /// vendor/glommio/PATCHES.md: the timer for the reactor's next `Timer` is armed before
    /// the reactor flushes its rings; one due within microseconds can fire during that flush,
    /// and the executor must not then sleep as if no timer were due. Tasks sleeping a few
    /// microseconds at a time, with nothing else going on: a lost timer is a sleep that
    /// nothing ends (the watchdog fails the test).
    #[test]
    fn a_timer_that_fires_while_the_reactor_flushes_still_wakes_its_task() {
        const SLEEPS: u32 = 20_000;
        let (done_tx, done_rx) = flume::bounded::<Duration>(1);
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(128 * 1024)
            .spawn(move || async move {
                let started = Instant::now();
                let sleepers: Vec<_> = (0..3u64)
                    .map(|i| {
                        glommio::spawn_local(async move {
                            for n in 0..SLEEPS {
                                let micros = 1 + (u64::from(n) * 7 + i * 3) % 20;
                                glommio::timer::sleep(Duration::from_micros(micros)).await;
                            }
                        })
                    })
                    .collect();
                for sleeper in sleepers {
                    sleeper.await;
                }
                let _ = done_tx.send(started.elapsed());
            })
            .expect("executor");
        let took = watchdog(
            executor,
            done_rx,
            "a timer fired and the executor slept on without it",
        );
        eprintln!("3 x {SLEEPS} short sleeps in {took:?}");
    }

    /// vendor/glommio/PATCHES.md item 6: the poll of the latency ring that ends a sleep is
    /// kept armed over sleeps and re-armed only after it completed, and a sleep submits the
    /// main ring's new requests in its own `io_uring_enter`. Each executor is woken from
    /// outside many thousand times (by another thread through the eventfd, and by a socket
    /// its peer executor writes to), while a timer task makes the latency ring complete at
    /// random points between the sleeps: a wake-up lost by either change is a sleep that
    /// nothing ends, and the watchdog fails the test.
    #[test]
    fn executors_woken_from_outside_between_timer_firings_never_miss_a_wake_up() {
        use futures_lite::{AsyncReadExt, AsyncWriteExt};
        const TRIPS: u32 = 10_000;
        let (to_exec, from_thread) = flume::bounded::<u32>(1);
        let (to_thread, from_exec) = flume::bounded::<u32>(1);
        let (done_tx, done_rx) = flume::bounded::<&'static str>(4);
        let (addr_tx, addr_rx) = flume::bounded::<std::net::SocketAddr>(1);
        let ticking = |stop: Rc<std::cell::Cell<bool>>| async move {
            let mut n = 0u64;
            while !stop.get() {
                n += 1;
                glommio::timer::sleep(Duration::from_micros(20 + (n * 37) % 300)).await;
            }
        };
        let serve_done = done_tx.clone();
        let server = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(128 * 1024)
            .spawn(move || async move {
                let stop = Rc::new(std::cell::Cell::new(false));
                let ticker = glommio::spawn_local(ticking(Rc::clone(&stop)));
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("client waits");
                let mut peer = listener.accept().await.expect("accept");
                let mut word = [0u8; 4];
                for _ in 0..TRIPS {
                    // A word from the other thread (eventfd wake-up), echoed to it ...
                    let n = from_thread.recv_async().await.expect("thread sends");
                    to_thread.send_async(n).await.expect("thread waits");
                    // ... and one from the socket (main-ring poll), echoed back.
                    peer.read_exact(&mut word).await.expect("read");
                    peer.write_all(&word).await.expect("write");
                }
                stop.set(true);
                ticker.await;
                let _ = serve_done.send("server");
            })
            .expect("server executor");
        let client = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(128 * 1024)
            .spawn(move || async move {
                let stop = Rc::new(std::cell::Cell::new(false));
                let ticker = glommio::spawn_local(ticking(Rc::clone(&stop)));
                let addr = addr_rx.recv_async().await.expect("server listens");
                let mut stream = glommio::net::TcpStream::connect(addr)
                    .await
                    .expect("connect");
                let mut word = [0u8; 4];
                for n in 0..TRIPS {
                    stream.write_all(&n.to_le_bytes()).await.expect("write");
                    stream.read_exact(&mut word).await.expect("read");
                    assert_eq!(u32::from_le_bytes(word), n);
                }
                stop.set(true);
                ticker.await;
                let _ = done_tx.send("client");
            })
            .expect("client executor");
        let thread = std::thread::spawn(move || {
            for n in 0..TRIPS {
                to_exec.send(n).expect("server receives");
                assert_eq!(from_exec.recv().expect("server answers"), n);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            match done_rx.recv_timeout(left) {
                Ok(who) => eprintln!("{who}: {TRIPS} wake-ups from outside served"),
                Err(_) => panic!("an executor slept through a wake-up and never woke"),
            }
        }
        thread.join().expect("thread");
        server.join().expect("server");
        client.join().expect("client");
    }

    /// vendor/glommio/PATCHES.md item 9: a file write submitted at once
    /// (`DmaFile::write_rc_at_now`, an `io_uring_enter` of its own in the middle of a task)
    /// while the same executor polls and sleeps for a socket ping-pong between two of its
    /// tasks and a timer task: a completion the executor never collects, or a sleep that
    /// misses one, hangs a writer or the ping-pong, and the watchdog fails the test.
    #[test]
    fn writes_submitted_at_once_complete_among_sleeps_sockets_and_timers() {
        use futures_lite::{AsyncReadExt, AsyncWriteExt};
        const WRITES: u64 = 2_000;
        let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
        let path = dir.path().join("f");
        let (done_tx, done_rx) = flume::bounded::<Duration>(1);
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(128 * 1024)
            .spawn(move || async move {
                let started = Instant::now();
                let file = Rc::new(glommio::io::DmaFile::create(&path).await.expect("create"));
                let (mut a, mut b) = glommio::net::UnixStream::pair().expect("socket pair");
                let stop = Rc::new(std::cell::Cell::new(false));
                let echo = glommio::spawn_local(async move {
                    let mut byte = [0u8; 1];
                    while b.read_exact(&mut byte).await.is_ok() && byte[0] != 0 {
                        b.write_all(&byte).await.expect("write");
                    }
                });
                let pinger = {
                    let stop = Rc::clone(&stop);
                    glommio::spawn_local(async move {
                        let mut byte = [1u8; 1];
                        while !stop.get() {
                            a.write_all(&byte).await.expect("write");
                            a.read_exact(&mut byte).await.expect("read");
                        }
                        a.write_all(&[0]).await.expect("write");
                    })
                };
                let ticker = {
                    let stop = Rc::clone(&stop);
                    glommio::spawn_local(async move {
                        let mut n = 0u64;
                        while !stop.get() {
                            n += 1;
                            glommio::timer::sleep(Duration::from_micros(10 + (n * 37) % 200)).await;
                        }
                    })
                };
                let align = file.alignment() as usize;
                let writers: Vec<_> = (0..2u64)
                    .map(|w| {
                        let file = Rc::clone(&file);
                        glommio::spawn_local(async move {
                            for n in 0..WRITES / 2 {
                                let mut buf = file.alloc_dma_buffer(align);
                                buf.as_bytes_mut().fill((n % 251) as u8);
                                let buf = Rc::new(buf);
                                let pos = (n * 2 + w) * align as u64;
                                let wrote = file.write_rc_at_now(buf, pos).await.expect("write");
                                assert_eq!(wrote, align);
                                if n % 3 == w {
                                    glommio::executor().yield_task_queue_now().await;
                                }
                            }
                        })
                    })
                    .collect();
                for writer in writers {
                    writer.await;
                }
                stop.set(true);
                pinger.await;
                echo.await;
                ticker.await;
                let _ = done_tx.send(started.elapsed());
            })
            .expect("executor");
        let took = watchdog(
            executor,
            done_rx,
            "a write submitted at once never completed, or a sleep missed it",
        );
        eprintln!("{WRITES} writes submitted at once in {took:?}");
    }

    /// `batch_scheduling` puts the executor's own thread under SCHED_BATCH; without it the
    /// thread keeps the default policy. The thread that spawned it is not touched.
    #[test]
    fn batch_scheduling_applies_to_the_executor_thread_only() {
        // A new thread inherits its spawner's policy: SCHED_OTHER unless the tests run under
        // `chrt`.
        let before = super::scheduling_policy().unwrap();
        for (batch, expected) in [(true, libc::SCHED_BATCH), (false, before)] {
            let mut options = super::ExecutorOptions::control_plane("sched-test");
            options.batch_scheduling = batch;
            let policy = super::spawn_executor(&options, || async { super::scheduling_policy() })
                .expect("executor")
                .join()
                .expect("joined")
                .expect("sched_getscheduler");
            assert_eq!(policy, expected, "batch_scheduling = {batch}");
        }
        assert_eq!(super::scheduling_policy().unwrap(), before);
    }
}
