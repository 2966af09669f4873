//! The laptop broker's worker loop, its clean stop, and `broker-api status`.
//!
//! On Ctrl-C or SIGTERM laptop mode stops as a process manager does: the API
//! finishes the requests under way ([`Laptop::serve`]), the worker takes no
//! new job and waits a bounded time for the steps running ([`WorkerHandle`]),
//! and every cache process it started gets SIGTERM (Redis OSS and Valkey
//! write their append-only file first) and SIGKILL if it lingers. A job cut
//! short stays in the queue, and the next start enqueues every operation in
//! progress again, so nothing is lost. `--keep-caches` leaves the caches
//! running, to be adopted at the next start, as a crash does.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::{Adapters, Laptop, LaptopConfig, LaptopError};
use broker_core::domain::InstanceState;
use broker_core::ports::{CatalogStore, StateStore};

/// How long a stop waits for the steps that are running.
const JOB_WAIT: Duration = Duration::from_secs(10);

/// The running worker loop: [`WorkerHandle::stop`] ends it cleanly.
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<usize>,
}

impl WorkerHandle {
    /// Takes no new job, waits up to [`JOB_WAIT`] for the running ones and
    /// returns how many were still running (their jobs stay in the queue).
    pub async fn stop(self) -> usize {
        let _ = self.stop.send(true);
        match tokio::time::timeout(JOB_WAIT + Duration::from_secs(1), self.task).await {
            Ok(Ok(left)) => left,
            _ => 0,
        }
    }

    /// Ends the loop at once, as a crash would: nothing is waited for.
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Laptop {
    /// Runs the worker until stopped: waits for due jobs, handles each (jobs
    /// of different instances side by side), deletes it when handled. A job
    /// whose handling failed stays and comes back after its visibility
    /// timeout.
    pub fn spawn_worker(&self) -> WorkerHandle {
        let queue = self.queue.clone();
        let worker = self.worker.clone();
        let store = self.store.clone();
        let (stop, mut stopping) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut jobs = JoinSet::new();
            let mut last_purge = std::time::Instant::now();
            while !*stopping.borrow() {
                while jobs.try_join_next().is_some() {}
                match queue.receive(Duration::from_secs(120)).await {
                    Ok(Some(delivery)) => {
                        let waited =
                            broker_local::queue::now_ms().saturating_sub(delivery.enqueued_at_ms).max(0);
                        worker.metrics().job_received(Duration::from_millis(waited as u64));
                        let worker = worker.clone();
                        let queue = queue.clone();
                        jobs.spawn(async move {
                            match worker.handle(&delivery.job).await {
                                Ok(outcome) => {
                                    tracing::debug!(operation = %delivery.job.operation_id, ?outcome, "job handled");
                                    if let Err(e) = queue.ack(delivery.id).await {
                                        error!(error = %e, "could not delete a handled job");
                                    }
                                }
                                Err(e) => {
                                    warn!(operation = %delivery.job.operation_id, error = %e, "job failed; it will be delivered again")
                                }
                            }
                        });
                    }
                    Ok(None) => {
                        tokio::select! {
                            _ = queue.wait(Duration::from_secs(5)) => {}
                            _ = stopping.changed() => {}
                        }
                    }
                    Err(e) => {
                        error!(error = %e, "job queue unavailable; retrying in 5 s");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                            _ = stopping.changed() => {}
                        }
                    }
                }
                if last_purge.elapsed() > Duration::from_secs(3600) {
                    last_purge = std::time::Instant::now();
                    match store.purge_expired(broker_core::domain::now()).await {
                        Ok(n) if n > 0 => info!(purged = n, "expired records purged"),
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "purging expired records failed"),
                    }
                }
            }
            let running = jobs.len();
            if running > 0 {
                info!(running, "waiting for the steps under way");
            }
            let finished =
                tokio::time::timeout(JOB_WAIT, async { while jobs.join_next().await.is_some() {} }).await;
            let left = if finished.is_ok() { 0 } else { jobs.len() };
            if left > 0 {
                warn!(left, "steps still running were cut short; their jobs run again at the next start");
                jobs.abort_all();
            }
            left
        });
        WorkerHandle { stop, task }
    }

    /// The clean stop after [`Laptop::serve`] returns: the worker first, then
    /// (unless `keep_caches`) every cache process, one log line each and a
    /// summary. Ends with everything stopped; the caller exits 0.
    pub async fn shutdown(&self, worker: WorkerHandle, keep_caches: bool) {
        let cut_short = worker.stop().await;
        if keep_caches {
            info!(
                cut_short,
                "stopped; --keep-caches: the caches keep running and the next start adopts them"
            );
            eprintln!("broker stopped; the caches keep running (--keep-caches)");
            return;
        }
        let stopped = self.provider.stop_all().await;
        for s in &stopped {
            info!(
                instance = %s.instance_id,
                engine = s.engine.as_str(),
                port = s.port,
                pid = s.pid,
                forced = s.forced,
                "cache stopped"
            );
        }
        let forced = stopped.iter().filter(|s| s.forced).count();
        info!(caches = stopped.len(), forced, cut_short, "laptop mode stopped");
        eprintln!(
            "broker stopped: {} cache{} stopped{}; the next start brings {} back",
            stopped.len(),
            if stopped.len() == 1 { "" } else { "s" },
            if forced > 0 { format!(" ({forced} had to be killed)") } else { String::new() },
            if stopped.len() == 1 { "it" } else { "them" },
        );
    }
}

/// How often laptop mode runs a reconcile pass.
const RECONCILE_TICK: Duration = Duration::from_secs(60);

impl Laptop {
    /// Runs a reconcile pass every minute (the first a minute after the
    /// start, which already enqueued every operation in progress), as the
    /// EventBridge schedule does in AWS.
    pub fn spawn_reconcile_schedule(&self) -> tokio::task::JoinHandle<()> {
        let reconciler = self.reconciler.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RECONCILE_TICK).await;
                if let Err(e) = reconciler.run(broker_core::domain::now()).await {
                    warn!(error = %e, "reconcile pass failed; the next one tries again");
                }
            }
        })
    }
}

/// One line of `broker-api status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    pub instance_id: String,
    /// `service/plan`, by name.
    pub plan: String,
    pub state: &'static str,
    /// Where clients start (its primary, its cluster's configuration
    /// endpoint, its first Memcached node) listens, or will once started
    /// again.
    pub port: Option<u16>,
    /// That server's process; `None` when it is not running.
    pub pid: Option<u32>,
    /// How many of its servers run, and how many it has.
    pub running: usize,
    pub servers: usize,
}

impl InstanceStatus {
    /// Whether every one of its servers runs.
    pub fn up(&self) -> bool {
        self.servers > 0 && self.running == self.servers
    }

    /// `yes`, `no`, or how many of its servers run (`4/6`).
    fn up_column(&self) -> String {
        match (self.running, self.servers) {
            (_, 0) | (0, _) => "no".to_string(),
            (r, s) if r == s => "yes".to_string(),
            (r, s) => format!("{r}/{s}"),
        }
    }
}

/// `broker-api status`: every instance the state directory holds (deleted
/// ones left out), with its plan, state, port, process id and whether the
/// process is up. Reads only; a running broker is not disturbed.
pub async fn status(config: &LaptopConfig) -> Result<Vec<InstanceStatus>, LaptopError> {
    let adapters = Adapters::open(config)?;
    let services = adapters.store.services().await?;
    let plans = adapters.store.plans().await?;
    let servers = adapters.provider.servers();
    let mut lines = Vec::new();
    for instance in adapters.store.instances().await? {
        if instance.state == InstanceState::Deleted {
            continue;
        }
        let plan = plans.iter().find(|p| p.id == instance.plan_id);
        let service = services.iter().find(|s| s.id == instance.service_id);
        let server = servers.iter().find(|s| s.instance_id == instance.cache_key());
        lines.push(InstanceStatus {
            plan: format!(
                "{}/{}",
                service.map_or(instance.service_id.as_str(), |s| s.name.as_str()),
                plan.map_or(instance.plan_id.as_str(), |p| p.name.as_str())
            ),
            state: if instance.pooled && instance.state == InstanceState::Ready {
                "ready in the warm pool"
            } else {
                instance.state.as_str()
            },
            port: server.map(|s| s.port).or(instance.endpoint.as_ref().map(|e| e.port)),
            pid: server.and_then(|s| s.pid),
            running: server.map_or(0, |s| s.running()),
            servers: server.map_or(0, |s| s.nodes.len()),
            instance_id: instance.id,
        });
    }
    lines.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    Ok(lines)
}

/// The lines as a table, as the command prints it.
pub fn format_status(lines: &[InstanceStatus]) -> String {
    let mut out =
        format!("{:<38} {:<34} {:<16} {:>6} {:>8}  {}\n", "INSTANCE", "PLAN", "STATE", "PORT", "PID", "UP");
    for l in lines {
        out.push_str(&format!(
            "{:<38} {:<34} {:<16} {:>6} {:>8}  {}\n",
            l.instance_id,
            l.plan,
            l.state,
            l.port.map_or("-".to_string(), |p| p.to_string()),
            l.pid.map_or("-".to_string(), |p| p.to_string()),
            l.up_column()
        ));
    }
    if lines.is_empty() {
        out.push_str("(no instances)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_up_column_says_how_many_of_an_instances_servers_run() {
        let line = |running, servers| InstanceStatus {
            instance_id: "i-1".into(),
            plan: "elasticache-valkey/cluster-3x2".into(),
            state: "succeeded",
            port: Some(6390),
            pid: (running > 0).then_some(42),
            running,
            servers,
        };
        let up = |running, servers| {
            let text = format_status(&[line(running, servers)]);
            text.lines().nth(1).unwrap().split_whitespace().last().unwrap().to_string()
        };
        assert_eq!(up(6, 6), "yes");
        assert_eq!(up(4, 6), "4/6");
        assert_eq!(up(0, 6), "no");
        assert_eq!(up(0, 0), "no", "no server was ever made");
        assert!(line(6, 6).up() && !line(5, 6).up());
    }
}
