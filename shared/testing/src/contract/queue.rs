//! The contract of [`JobQueue`]: a job comes back as it was sent, not
//! before its delay, and a delay beyond what SQS allows is taken (cut to
//! 15 minutes), not refused.
//!
//! The port only sends; the worker's side differs by adapter (SQS delivers
//! to Lambda, laptop mode polls SQLite). So `queue_contract!(open)` takes an
//! `open()` that returns `(queue, receiver, guard)`, where the receiver
//! takes what is visible now for the case to look at.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use broker_core::ports::{Job, JobQueue};

/// How a case sees what the queue would deliver to the worker.
#[async_trait]
pub trait Receiver: Send + Sync {
    /// Every job visible now, each taken off the queue.
    async fn take_visible(&self) -> Vec<Job>;
}

/// Generates one test per case of the job queue contract over `$open()`.
#[macro_export]
macro_rules! queue_contract {
    ($open:path) => {
        $crate::queue_contract!(@cases $open;
            a_job_is_received_as_it_was_sent,
            a_delayed_job_is_received_after_its_delay_and_not_before,
            a_delay_beyond_fifteen_minutes_is_taken_and_holds_the_job_back,
        );
    };
    (@cases $open:path; $($case:ident,)*) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (queue, receiver, _guard) = $open().await;
                $crate::contract::queue::$case(std::sync::Arc::new(queue), std::sync::Arc::new(receiver))
                    .await;
            }
        )*
    };
}

fn job(n: u32, binding: bool) -> Job {
    Job {
        v: Job::VERSION,
        operation_id: format!("op-{n}"),
        instance_id: format!("i-{n}"),
        binding_id: binding.then(|| format!("b-{n}")),
    }
}

fn sorted(mut jobs: Vec<Job>) -> Vec<Job> {
    jobs.sort_by(|a, b| a.operation_id.cmp(&b.operation_id));
    jobs
}

pub async fn a_job_is_received_as_it_was_sent(queue: Arc<dyn JobQueue>, receiver: Arc<dyn Receiver>) {
    queue.enqueue(&job(1, false), 0).await.unwrap();
    queue.enqueue(&job(2, true), 0).await.unwrap();
    assert_eq!(sorted(receiver.take_visible().await), vec![job(1, false), job(2, true)]);
    assert_eq!(receiver.take_visible().await, vec![], "a taken job is gone");
}

pub async fn a_delayed_job_is_received_after_its_delay_and_not_before(
    queue: Arc<dyn JobQueue>,
    receiver: Arc<dyn Receiver>,
) {
    let sent = Instant::now();
    queue.enqueue(&job(1, false), 2).await.unwrap();
    queue.enqueue(&job(2, false), 0).await.unwrap();
    assert_eq!(receiver.take_visible().await, vec![job(2, false)], "the delayed job waits");
    let mut received = Vec::new();
    while received.is_empty() {
        assert!(sent.elapsed() < Duration::from_secs(20), "the delayed job never came");
        tokio::time::sleep(Duration::from_millis(250)).await;
        received = receiver.take_visible().await;
    }
    assert!(sent.elapsed() >= Duration::from_secs(2), "received after {:?}", sent.elapsed());
    assert_eq!(received, vec![job(1, false)]);
}

pub async fn a_delay_beyond_fifteen_minutes_is_taken_and_holds_the_job_back(
    queue: Arc<dyn JobQueue>,
    receiver: Arc<dyn Receiver>,
) {
    queue.enqueue(&job(1, false), 3600).await.unwrap();
    queue.enqueue(&job(2, false), u32::MAX).await.unwrap();
    assert_eq!(receiver.take_visible().await, vec![]);
}
