//! The zone signer thread: one job at a time, off the async workers.

/// The one thread that parses, builds and signs zones: off the async workers, one job at a
/// time (the single writer).
pub(super) struct SignerThread {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl SignerThread {
    pub(super) fn start() -> std::io::Result<SignerThread> {
        let (jobs, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name("zone-signer".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
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
