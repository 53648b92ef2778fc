//! The zone signer thread: one job at a time, off the async workers, one heap arena for all
//! zone memory.

/// How long the signer thread waits idle after work before returning free heap pages.
const TRIM_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// Returns the heap's free pages to the system (glibc keeps them in its arenas: after signing
/// 1,000 zones at start, about a fifth of the daemon's memory was free heap). Every arena is
/// trimmed, not only the signer thread's. A no-op where the allocator has no such call.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases the allocator's own free chunks; it takes
    // the arena locks itself and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The one thread that parses, builds and signs zones: off the async workers, one job at a
/// time (the single writer), and one heap arena for all zone memory (zones built on many
/// threads and freed on others fragment the allocator's arenas).
pub(super) struct SignerThread {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl SignerThread {
    pub(super) fn start() -> std::io::Result<SignerThread> {
        let (jobs, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name("zone-signer".into())
            .spawn(move || {
                // After a burst of work (start-up signs every zone), the temporaries are freed
                // but the allocator keeps their pages: once the thread has been idle for
                // `TRIM_AFTER`, they go back to the system.
                let mut worked = false;
                loop {
                    let next = if worked {
                        rx.recv_timeout(TRIM_AFTER)
                    } else {
                        rx.recv()
                            .map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected)
                    };
                    match next {
                        Ok(job) => {
                            job();
                            worked = true;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            release_free_heap();
                            worked = false;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            })?;
        Ok(SignerThread { jobs })
    }

    /// Runs `f` on the signer thread; a panic in `f` becomes an error, the thread goes on.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(r.map_err(|_| "zone signing panicked".to_string()));
        };
        self.jobs
            .send(Box::new(job))
            .map_err(|_| "the zone signer thread has stopped".to_string())?;
        rx.await
            .map_err(|_| "the zone signer thread has stopped".to_string())?
    }
}
