//! The provisioner's SQS handler: one tracing span per record, each body a
//! versioned [`Job`], and a batch response naming only the messages to
//! deliver again (the queue's redrive policy moves repeat failures to the
//! dead-letter queue, so nothing is lost).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use tracing::{Instrument, error, info, info_span};

use crate::ports::Job;
use crate::worker::Worker;

/// Runs the worker on every record of `event`.
pub async fn handle_batch(worker: &Worker, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let message_id = record.message_id.clone().unwrap_or_default();
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
    response
}
