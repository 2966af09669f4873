//! A stand-in for the CloudWatch alarm calls: moto 5.2 answers only the
//! query protocol, and the SDK speaks CloudWatch's CBOR protocol. Built from
//! aws-smithy-mocks rules over shared state, like [`crate::aws::FakeRbac`]:
//! PutMetricAlarm, DescribeAlarms (by name prefix, paged), DeleteAlarms,
//! ListTagsForResource and GetMetricData (datapoints a test sets, paged),
//! with the shapes of the CloudWatch API reference and an ordered call log.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::error::ErrorMetadata;
use aws_sdk_cloudwatch::operation::delete_alarms::DeleteAlarmsOutput;
use aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsOutput;
use aws_sdk_cloudwatch::operation::get_metric_data::{GetMetricDataInput, GetMetricDataOutput};
use aws_sdk_cloudwatch::operation::list_tags_for_resource::{
    ListTagsForResourceError, ListTagsForResourceOutput,
};
use aws_sdk_cloudwatch::operation::put_metric_alarm::{
    PutMetricAlarmError, PutMetricAlarmInput, PutMetricAlarmOutput,
};
use aws_sdk_cloudwatch::types::error::ResourceNotFoundException;
use aws_sdk_cloudwatch::types::{MetricAlarm, MetricDataResult, StateValue, StatusCode, Tag};
use aws_smithy_mocks::{MockResponse, RuleMode, mock, mock_client};

/// What the stand-in holds and has seen.
#[derive(Debug, Default)]
pub struct CloudWatchState {
    /// Alarm name → what PutMetricAlarm last asked for, and its state.
    pub alarms: BTreeMap<String, (PutMetricAlarmInput, StateValue)>,
    /// Alarm name → its tags (set when it is created, as CloudWatch does:
    /// PutMetricAlarm on an existing alarm ignores its tags).
    pub tags: BTreeMap<String, Vec<(String, String)>>,
    /// Every call in order: `PutMetricAlarm {name}`, `DescribeAlarms
    /// {prefix}`, `DeleteAlarms {names}`, `ListTagsForResource {name}`.
    pub calls: Vec<String>,
    /// Errors the next PutMetricAlarm calls answer with: (code, message).
    pub put_failures: VecDeque<(String, String)>,
    /// [`metric_key`] → the datapoints GetMetricData answers with.
    pub datapoints: BTreeMap<String, Vec<(i64, f64)>>,
    /// Every GetMetricData request, in order.
    pub metric_requests: Vec<GetMetricDataInput>,
    /// How many query results one GetMetricData page holds (CloudWatch
    /// pages by datapoints; this pages by query, which a caller must
    /// handle the same way).
    pub results_per_page: Option<usize>,
}

/// How the stand-in files the datapoints of `metric` with `dimensions`.
pub fn metric_key(metric: &str, dimensions: &[(&str, &str)]) -> String {
    let dims: Vec<String> = dimensions.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{metric}|{}", dims.join(","))
}

pub struct FakeCloudWatch {
    pub client: Client,
    pub state: Arc<Mutex<CloudWatchState>>,
}

/// The ARN CloudWatch gives alarm `name` in the test account.
pub fn alarm_arn(name: &str) -> String {
    format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}")
}

impl FakeCloudWatch {
    pub fn new() -> FakeCloudWatch {
        let state = Arc::new(Mutex::new(CloudWatchState::default()));

        let s = state.clone();
        let put = mock!(Client::put_metric_alarm).then_compute_response(move |req| {
            let name = req.alarm_name().unwrap_or_default().to_string();
            let mut st = s.lock().unwrap();
            st.calls.push(format!("PutMetricAlarm {name}"));
            if let Some((code, message)) = st.put_failures.pop_front() {
                let meta = ErrorMetadata::builder().code(&code).message(&message).build();
                return MockResponse::Error(PutMetricAlarmError::generic(meta));
            }
            let state_value =
                st.alarms.get(&name).map(|(_, v)| v.clone()).unwrap_or(StateValue::InsufficientData);
            if !st.alarms.contains_key(&name) {
                let tags = req
                    .tags()
                    .iter()
                    .map(|t| {
                        (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string())
                    })
                    .collect();
                st.tags.insert(name.clone(), tags);
            }
            st.alarms.insert(name, (req.clone(), state_value));
            MockResponse::Output(PutMetricAlarmOutput::builder().build())
        });

        let s = state.clone();
        let describe = mock!(Client::describe_alarms).then_compute_output(move |req| {
            let prefix = req.alarm_name_prefix().unwrap_or_default().to_string();
            let mut st = s.lock().unwrap();
            st.calls.push(format!("DescribeAlarms {prefix}"));
            let matching: Vec<MetricAlarm> = st
                .alarms
                .iter()
                .filter(|(n, _)| n.starts_with(&prefix))
                .map(|(_, (input, state))| described(input, state.clone()))
                .collect();
            let page = usize::try_from(req.max_records().unwrap_or(50)).unwrap_or(50);
            let from: usize = req.next_token().and_then(|t| t.parse().ok()).unwrap_or(0);
            let to = (from + page).min(matching.len());
            let next = (to < matching.len()).then(|| to.to_string());
            DescribeAlarmsOutput::builder()
                .set_metric_alarms(Some(matching[from.min(to)..to].to_vec()))
                .set_next_token(next)
                .build()
        });

        let s = state.clone();
        let delete = mock!(Client::delete_alarms).then_compute_output(move |req| {
            let mut st = s.lock().unwrap();
            st.calls.push(format!("DeleteAlarms {}", req.alarm_names().join(",")));
            for name in req.alarm_names() {
                st.alarms.remove(name);
                st.tags.remove(name);
            }
            DeleteAlarmsOutput::builder().build()
        });

        let s = state.clone();
        let tags = mock!(Client::list_tags_for_resource).then_compute_response(move |req| {
            let arn = req.resource_arn().unwrap_or_default();
            let name = arn.split_once(":alarm:").map(|(_, n)| n).unwrap_or_default().to_string();
            let mut st = s.lock().unwrap();
            st.calls.push(format!("ListTagsForResource {name}"));
            match st.tags.get(&name) {
                Some(tags) => MockResponse::Output(
                    ListTagsForResourceOutput::builder()
                        .set_tags(Some(
                            tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect(),
                        ))
                        .build(),
                ),
                None => MockResponse::Error(ListTagsForResourceError::ResourceNotFoundException(
                    ResourceNotFoundException::builder()
                        .message("The specified resource does not exist.")
                        .meta(ErrorMetadata::builder().code("ResourceNotFoundException").build())
                        .build(),
                )),
            }
        });

        let s = state.clone();
        let data = mock!(Client::get_metric_data).then_compute_output(move |req| {
            let mut st = s.lock().unwrap();
            st.calls.push(format!("GetMetricData {}", req.metric_data_queries().len()));
            st.metric_requests.push(req.clone());
            let start = req.start_time().map(|t| t.secs()).unwrap_or(i64::MIN);
            let end = req.end_time().map(|t| t.secs()).unwrap_or(i64::MAX);
            let from: usize = req.next_token().and_then(|t| t.parse().ok()).unwrap_or(0);
            let queries = req.metric_data_queries();
            let to = from.saturating_add(st.results_per_page.unwrap_or(usize::MAX)).min(queries.len());
            let results = queries[from.min(to)..to]
                .iter()
                .map(|q| {
                    let metric = q.metric_stat().and_then(|m| m.metric());
                    let dims: Vec<(&str, &str)> = metric
                        .map(|m| m.dimensions())
                        .unwrap_or_default()
                        .iter()
                        .map(|d| (d.name().unwrap_or_default(), d.value().unwrap_or_default()))
                        .collect();
                    let key = metric_key(metric.and_then(|m| m.metric_name()).unwrap_or_default(), &dims);
                    let points: Vec<(i64, f64)> = st
                        .datapoints
                        .get(&key)
                        .map(|p| p.iter().copied().filter(|(t, _)| *t >= start && *t < end).collect())
                        .unwrap_or_default();
                    MetricDataResult::builder()
                        .set_id(q.id().map(str::to_string))
                        .set_label(metric.and_then(|m| m.metric_name()).map(str::to_string))
                        .set_timestamps(Some(
                            points.iter().map(|p| aws_smithy_types::DateTime::from_secs(p.0)).collect(),
                        ))
                        .set_values(Some(points.iter().map(|p| p.1).collect()))
                        .status_code(StatusCode::Complete)
                        .build()
                })
                .collect();
            GetMetricDataOutput::builder()
                .set_metric_data_results(Some(results))
                .set_next_token((to < queries.len()).then(|| to.to_string()))
                .build()
        });

        let client = mock_client!(
            aws_sdk_cloudwatch,
            RuleMode::MatchAny,
            [&put, &describe, &delete, &tags, &data],
            |c| c.retry_config(aws_sdk_cloudwatch::config::retry::RetryConfig::disabled())
        );
        FakeCloudWatch { client, state }
    }

    /// The names of the alarms it holds, in order.
    pub fn names(&self) -> Vec<String> {
        self.state.lock().unwrap().alarms.keys().cloned().collect()
    }

    pub fn alarm(&self, name: &str) -> Option<MetricAlarm> {
        self.state.lock().unwrap().alarms.get(name).map(|(input, state)| described(input, state.clone()))
    }

    pub fn tags(&self, name: &str) -> Vec<(String, String)> {
        self.state.lock().unwrap().tags.get(name).cloned().unwrap_or_default()
    }

    /// The call log so far.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// How many calls of `action` the log holds.
    pub fn count(&self, action: &str) -> usize {
        self.calls().iter().filter(|c| c.split(' ').next() == Some(action)).count()
    }

    /// Puts alarm `name` in `state`, as CloudWatch does when its metric
    /// crosses the threshold.
    pub fn set_state(&self, name: &str, state: StateValue) {
        if let Some((_, current)) = self.state.lock().unwrap().alarms.get_mut(name) {
            *current = state;
        }
    }

    /// Adds an alarm as if someone else (or an earlier broker) made it,
    /// with `tags`.
    pub fn add(&self, name: &str, tags: &[(&str, &str)]) {
        let mut st = self.state.lock().unwrap();
        let input = PutMetricAlarmInput::builder()
            .alarm_name(name)
            .metric_name("CurrConnections")
            .build()
            .expect("an alarm input");
        st.alarms.insert(name.to_string(), (input, StateValue::Ok));
        st.tags.insert(name.to_string(), tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    }

    /// GetMetricData answers with `points` for `metric` of the node with
    /// `dimensions`.
    pub fn set_datapoints(&self, metric: &str, dimensions: &[(&str, &str)], points: &[(i64, f64)]) {
        self.state.lock().unwrap().datapoints.insert(metric_key(metric, dimensions), points.to_vec());
    }

    /// The next `n` PutMetricAlarm calls fail with `code` and `message`.
    pub fn fail_puts(&self, n: usize, code: &str, message: &str) {
        let mut st = self.state.lock().unwrap();
        for _ in 0..n {
            st.put_failures.push_back((code.to_string(), message.to_string()));
        }
    }
}

impl Default for FakeCloudWatch {
    fn default() -> Self {
        FakeCloudWatch::new()
    }
}

/// Alarm `input` in `state`, as DescribeAlarms returns it.
fn described(input: &PutMetricAlarmInput, state: StateValue) -> MetricAlarm {
    let name = input.alarm_name().unwrap_or_default();
    MetricAlarm::builder()
        .alarm_name(name)
        .alarm_arn(alarm_arn(name))
        .set_alarm_description(input.alarm_description().map(str::to_string))
        .set_namespace(input.namespace().map(str::to_string))
        .set_metric_name(input.metric_name().map(str::to_string))
        .set_statistic(input.statistic().cloned())
        .set_unit(input.unit().cloned())
        .set_dimensions(Some(input.dimensions().to_vec()))
        .set_period(input.period())
        .set_evaluation_periods(input.evaluation_periods())
        .set_datapoints_to_alarm(input.datapoints_to_alarm())
        .set_threshold(input.threshold())
        .set_comparison_operator(input.comparison_operator().cloned())
        .set_treat_missing_data(input.treat_missing_data().map(str::to_string))
        .set_alarm_actions(Some(input.alarm_actions().to_vec()))
        .set_ok_actions(Some(input.ok_actions().to_vec()))
        .state_value(state)
        .state_updated_timestamp(aws_smithy_types::DateTime::from_secs(1_780_000_000))
        .build()
}
