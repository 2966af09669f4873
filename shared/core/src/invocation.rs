//! What the provisioner is invoked with, in any mode: a batch of SQS job
//! messages, a step of Secrets Manager's rotation protocol
//! (`{"Step": "createSecret", "SecretId": ..., "ClientRequestToken": ...}`),
//! or the schedule's reconcile pass (`{"Reconcile": {}}`), told apart by the
//! `Step` and `Reconcile` fields.
//!
//! A batch gets one tracing span per record, each body a versioned [`Job`],
//! and a response naming only the messages to deliver again (the queue's
//! redrive policy moves repeat failures to the dead-letter queue, so nothing
//! is lost). A rotation step that fails is an error, which tells Secrets
//! Manager the step failed.
//!
//! A batch stops taking records [`DEADLINE_MARGIN`] before the invocation's
//! deadline and names the rest as failures: they come back at once, instead
//! of Lambda ending the invocation in the middle of a job and SQS
//! delivering the whole batch again after its visibility timeout.

use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use serde_json::Value;
use tracing::{Instrument, error, info, info_span, warn};

use crate::ports::Job;
use crate::reconcile::Reconciler;
use crate::rotation::{RotationEvent, Rotator};
use crate::worker::Worker;

/// Why an invocation failed: the payload is neither kind of event, or a
/// rotation step did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error("not a Secrets Manager rotation event: {0}")]
    NotARotationEvent(#[source] serde_json::Error),
    #[error("not an SQS event: {0}")]
    NotAnSqsEvent(#[source] serde_json::Error),
    #[error(transparent)]
    Rotation(#[from] crate::rotation::RotationError),
    #[error("the batch response cannot be encoded: {0}")]
    Response(#[source] serde_json::Error),
    #[error("the reconcile pass could not read the store")]
    Reconcile(#[source] crate::ports::StoreError),
}

/// How long before the invocation's deadline a batch stops starting jobs:
/// more than one job takes, whose AWS calls the SDK's operation timeout
/// bounds (20 s each in AWS mode, a few per job).
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(30);

/// Handles one invocation of the provisioner, which Lambda ends at
/// `deadline`: a rotation step, or a batch of jobs (answered with the batch
/// response).
pub async fn handle(
    worker: &Worker,
    rotator: &Rotator,
    reconciler: &Reconciler,
    payload: Value,
    deadline: SystemTime,
) -> Result<Value, InvocationError> {
    if payload.get("Reconcile").is_some() {
        let report = reconciler
            .run(crate::domain::now())
            .instrument(info_span!("reconcile"))
            .await
            .map_err(InvocationError::Reconcile)?;
        return serde_json::to_value(report).map_err(InvocationError::Response);
    }
    if payload.get("Step").is_some() {
        let event: RotationEvent =
            serde_json::from_value(payload).map_err(InvocationError::NotARotationEvent)?;
        let span = info_span!("rotation", step = event.step.as_str(), token = %event.token);
        rotator.handle(&event).instrument(span).await?;
        return Ok(Value::Null);
    }
    let event: SqsEvent = serde_json::from_value(payload).map_err(InvocationError::NotAnSqsEvent)?;
    serde_json::to_value(handle_batch(worker, event, deadline).await).map_err(InvocationError::Response)
}

/// Runs the worker on every record of `event` that it can start more than
/// [`DEADLINE_MARGIN`] before `deadline`; the others are failures, to be
/// delivered again.
pub async fn handle_batch(worker: &Worker, event: SqsEvent, deadline: SystemTime) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let mut left_over = 0;
    for record in event.records {
        let message_id = record.message_id.clone().unwrap_or_default();
        let left = deadline.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        if left < DEADLINE_MARGIN {
            left_over += 1;
            response.add_failure(message_id);
            continue;
        }
        if let Some(age) = sent_age(&record.attributes) {
            worker.metrics().job_received(age);
        }
        let span = info_span!("job", message_id = %message_id);
        let failed = async {
            let job: Job = match record.body.as_deref().map(serde_json::from_str) {
                Some(Ok(job)) => job,
                Some(Err(e)) => {
                    error!(error = %e, "message body is not a job; leaving it to the dead-letter queue");
                    return true;
                }
                None => {
                    error!("message has no body; leaving it to the dead-letter queue");
                    return true;
                }
            };
            match worker.handle(&job).await {
                Ok(outcome) => {
                    info!(operation = %job.operation_id, ?outcome, "job handled");
                    false
                }
                Err(e) => {
                    error!(operation = %job.operation_id, error = %e, "job will be delivered again");
                    true
                }
            }
        }
        .instrument(span)
        .await;
        if failed {
            response.add_failure(message_id);
        }
    }
    if left_over > 0 {
        warn!(
            jobs = left_over,
            margin_secs = DEADLINE_MARGIN.as_secs(),
            "too close to the invocation's deadline to start these jobs; they will be delivered again"
        );
    }
    response
}

/// How long ago SQS says a message was sent (`SentTimestamp`, in ms since
/// the epoch), when it says.
fn sent_age(attributes: &std::collections::HashMap<String, String>) -> Option<Duration> {
    let sent: u64 = attributes.get("SentTimestamp")?.parse().ok()?;
    let now = SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(now.saturating_sub(Duration::from_millis(sent)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_job_age_is_read_from_sqs_sent_timestamp_and_nothing_else() {
        let now_ms = SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let sent = |value: &str| HashMap::from([("SentTimestamp".to_string(), value.to_string())]);
        let age = sent_age(&sent(&(now_ms - 1_500).to_string())).expect("an age");
        assert!(age >= Duration::from_millis(1_500) && age < Duration::from_secs(60), "{age:?}");
        assert_eq!(sent_age(&HashMap::new()), None, "no attribute, no age");
        assert_eq!(sent_age(&sent("yesterday")), None, "not a number, no age");
        let ahead = sent(&(now_ms + 60_000).to_string());
        assert_eq!(sent_age(&ahead), Some(Duration::ZERO), "a clock ahead of ours is no negative age");
    }
}
